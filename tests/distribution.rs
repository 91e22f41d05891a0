//! The real binary against a real upstream, CNCF distribution 2.8 (`docker-registry`), with images
//! pushed by skopeo: OCI and Docker images and indexes pulled through the cache byte-exact with their
//! media types, a warm second pull that sends nothing upstream for blobs and digests (io_uring and epoll
//! drivers), one upstream download for 20 concurrent pulls of a blob, and the upstream security modes:
//! HTTPS with a custom CA or `insecureSkipVerify`, Basic auth, token auth with cached tokens (its realm
//! also over HTTPS on another port under the registry's CA), and mutual TLS, each with the status a
//! client gets when the configuration does not fit. Also: a config naming a missing TLS file stops the
//! binary with a message naming the key. Upstream traffic is counted from the registry's access log and
//! the token server's counter.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::distribution::{Distribution, Mode};
use common::images::{
    self, sha256_digest, write_image_as, write_index_as, Format, ImageInfo, IndexInfo, LayerSpec, DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
};
use common::{concurrently, http_get, http_request, HttpResponse, Server};
use tempfile::TempDir;

const MIB: usize = 1024 * 1024;
/// Every manifest type, as a client that accepts them all sends it.
const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// A YAML config with one `registries:` entry for `up` (scheme from its URL) plus `lines` under it.
fn config(up: &Distribution, lines: &[String]) -> String {
    let scheme = up.base_url.split("://").next().unwrap();
    let mut yaml = format!("registries:\n  - name: \"{}\"\n    scheme: {scheme}\n", up.host);
    for line in lines {
        yaml += &format!("    {line}\n");
    }
    yaml
}

/// `tls:` trusting the test CA of `up`, with `extra` keys (e.g. the client certificate) appended.
fn tls_with_ca(up: &Distribution, extra: &str) -> String {
    let pki = up.pki.as_ref().expect("a TLS mode");
    format!("tls: {{ca: \"{}\"{extra}}}", pki.ca_cert.display())
}

/// `, cert: …, key: …` for [`tls_with_ca`]: the test client certificate of `up`.
fn client_cert(up: &Distribution) -> String {
    let pki = up.pki.as_ref().expect("a TLS mode");
    format!(", cert: \"{}\", key: \"{}\"", pki.client_cert.display(), pki.client_key.display())
}

fn auth(user: &str, pass: &str) -> String {
    format!("auth: {{user: \"{user}\", password: \"{pass}\"}}")
}

fn manifest_path(up: &Distribution, repo: &str, reference: &str) -> String {
    format!("/v2/{}/{repo}/manifests/{reference}", up.host)
}

fn blob_path(up: &Distribution, repo: &str, digest: &str) -> String {
    format!("/v2/{}/{repo}/blobs/{digest}", up.host)
}

/// Requests the upstream logged (GET and HEAD) whose URI contains `needle`.
fn upstream_count(up: &Distribution, needle: &str) -> usize {
    up.request_count("GET", needle) + up.request_count("HEAD", needle)
}

/// Writes one image of `layers` in `format` into a fresh layout and pushes it to `up` as `repo_tag`.
fn push_image(up: &Distribution, repo_tag: &str, format: Format, layers: &[LayerSpec]) -> (TempDir, ImageInfo) {
    let layout = tempfile::tempdir().unwrap();
    let image = write_image_as(format, layout.path(), "img", ("linux", "amd64"), layers);
    up.push(layout.path(), "img", repo_tag, &[]);
    (layout, image)
}

/// Like [`push_image`] for a linux/amd64 + linux/arm64 index (a manifest list for `Format::Docker`).
fn push_index(up: &Distribution, repo_tag: &str, format: Format) -> (TempDir, IndexInfo) {
    let layout = tempfile::tempdir().unwrap();
    let index = write_index_as(
        format,
        layout.path(),
        "idx",
        &[("linux", "amd64"), ("linux", "arm64")],
        &[
            vec![LayerSpec::text("amd64.txt", "amd64"), LayerSpec::random(11, 64 * 1024)],
            vec![LayerSpec::text("arm64.txt", "arm64"), LayerSpec::random(12, 64 * 1024)],
        ],
    );
    up.push(layout.path(), "idx", repo_tag, &[]);
    (layout, index)
}

/// Two layers, one of them ≥ 4 MiB of incompressible bytes.
fn two_layers(seed: u64) -> Vec<LayerSpec> {
    vec![LayerSpec::text("etc/motd", &format!("image {seed}\n")), LayerSpec::random(seed, 4 * MIB + 123)]
}

/// GETs `path` through the cache: 200, body exactly `expected`, `Docker-Content-Digest` its digest.
fn get_exact(server: &Server, path: &str, expected: &[u8]) -> HttpResponse {
    let r = server.get(path, &[("Accept", ACCEPT_ALL)]);
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    assert!(
        r.body == expected,
        "GET {path}: body of {} bytes differs from the {} bytes pushed",
        r.body.len(),
        expected.len()
    );
    assert_eq!(r.header("docker-content-digest"), Some(sha256_digest(expected).as_str()), "GET {path}");
    r
}

/// Pulls `image` from `repo` through the cache: the manifest at `reference` (tag or digest) with its
/// media type, then config and layers, all byte-exact with the layout. Returns (path, X-Cache) of the
/// config and layers, and of the manifest when `reference` is its digest.
fn pull_image(
    server: &Server,
    up: &Distribution,
    layout: &Path,
    repo: &str,
    reference: &str,
    image: &ImageInfo,
) -> Vec<(String, String)> {
    let path = manifest_path(up, repo, reference);
    let r = get_exact(server, &path, &image.manifest_bytes);
    assert_eq!(r.header("content-type"), Some(image.media_type.as_str()));
    let mut cache = Vec::new();
    if reference == image.manifest_digest {
        cache.push((path, x_cache(&r)));
    }
    let blobs = std::iter::once(&image.config_digest).chain(image.layers.iter().map(|(d, _)| d));
    for digest in blobs {
        let path = blob_path(up, repo, digest);
        let bytes = std::fs::read(images::blob_path(layout, digest)).unwrap();
        let r = get_exact(server, &path, &bytes);
        cache.push((path, x_cache(&r)));
    }
    cache
}

/// Pulls `index` by `tag` through the cache, then every platform image by digest ([`pull_image`]).
fn pull_index(
    server: &Server,
    up: &Distribution,
    layout: &Path,
    repo: &str,
    tag: &str,
    index: &IndexInfo,
) -> Vec<(String, String)> {
    let r = get_exact(server, &manifest_path(up, repo, tag), &index.index_bytes);
    assert_eq!(r.header("content-type"), Some(index.media_type.as_str()));
    index
        .manifests
        .iter()
        .flat_map(|image| pull_image(server, up, layout, repo, &image.manifest_digest, image))
        .collect()
}

fn x_cache(r: &HttpResponse) -> String {
    r.header("x-cache").unwrap_or("none").to_string()
}

/// Every blob of `image` was fetched from the upstream exactly once.
fn assert_each_blob_fetched_once(up: &Distribution, image: &ImageInfo) {
    let blobs = std::iter::once(&image.config_digest).chain(image.layers.iter().map(|(d, _)| d));
    for digest in blobs {
        assert_eq!(up.request_count("GET", digest), 1, "upstream GETs of {digest}");
    }
}

/// Pushes an OCI image and an OCI index to a plain-HTTP registry, pulls both through a server started
/// with `serve_args`, then pulls everything again and checks that the second pull is all hits and sent
/// nothing upstream for blobs or manifests by digest.
fn oci_pull_then_warm_pull(serve_args: &[&str]) -> Server {
    let up = Distribution::start(Mode::Plain);
    let (image_layout, image) = push_image(&up, "team/app:v1", Format::Oci, &two_layers(1));
    let (index_layout, index) = push_index(&up, "team/multi:v1", Format::Oci);
    let server = Server::start(&config(&up, &[]), serve_args);
    let pull = || {
        let mut cache = pull_image(&server, &up, image_layout.path(), "team/app", "v1", &image);
        cache.extend(pull_index(&server, &up, index_layout.path(), "team/multi", "v1", &index));
        cache
    };

    pull();
    assert_each_blob_fetched_once(&up, &image);
    index.manifests.iter().for_each(|m| assert_each_blob_fetched_once(&up, m));
    let blobs = upstream_count(&up, "/blobs/");
    let digests = upstream_count(&up, "/manifests/sha256:");

    let cache = pull();
    let misses: Vec<_> = cache.iter().filter(|(_, c)| c != "HIT").collect();
    assert!(misses.is_empty(), "not served from the cache: {misses:?}");
    assert_eq!(upstream_count(&up, "/blobs/"), blobs, "{:?}", up.requests());
    assert_eq!(upstream_count(&up, "/manifests/sha256:"), digests, "{:?}", up.requests());
    server
}

#[test]
fn oci_image_and_index_pull_through_byte_exact_and_the_second_pull_stays_local() {
    oci_pull_then_warm_pull(&[]);
}

#[test]
fn the_warm_pull_works_with_the_epoll_driver() {
    let server = oci_pull_then_warm_pull(&["--io-driver", "epoll"]);
    assert!(server.log().contains("driver=\"epoll\""), "{}", server.log());
}

#[test]
fn docker_manifests_and_lists_keep_the_media_type_distribution_serves() {
    let up = Distribution::start(Mode::Plain);
    let (image_layout, image) = push_image(&up, "docker/app:v1", Format::Docker, &two_layers(2));
    let (index_layout, list) = push_index(&up, "docker/multi:v1", Format::Docker);
    let server = Server::start(&config(&up, &[]), &[]);

    pull_image(&server, &up, image_layout.path(), "docker/app", "v1", &image);
    pull_index(&server, &up, index_layout.path(), "docker/multi", "v1", &list);

    let manifests = [
        ("docker/app", "v1".to_string(), DOCKER_MANIFEST),
        ("docker/multi", "v1".to_string(), DOCKER_MANIFEST_LIST),
        ("docker/multi", list.manifests[0].manifest_digest.clone(), DOCKER_MANIFEST),
        ("docker/multi", list.manifests[1].manifest_digest.clone(), DOCKER_MANIFEST),
    ];
    for (repo, reference, media_type) in manifests {
        let direct = http_get(&format!("{}/v2/{repo}/manifests/{reference}", up.base_url), &[("Accept", ACCEPT_ALL)]);
        assert_eq!(direct.header("content-type"), Some(media_type), "{repo}:{reference} upstream");
        let cached = server.get(&manifest_path(&up, repo, &reference), &[("Accept", ACCEPT_ALL)]);
        assert_eq!(cached.header("x-cache"), Some("HIT"), "{repo}:{reference}");
        assert_eq!(cached.header("content-type"), Some(media_type), "{repo}:{reference}");
        assert!(cached.body == direct.body, "{repo}:{reference} bytes differ from upstream");
    }
}

#[test]
fn twenty_concurrent_pulls_of_an_uncached_blob_make_one_upstream_get() {
    let up = Distribution::start(Mode::Plain);
    let (layout, image) = push_image(&up, "big/blob:v1", Format::Oci, &[LayerSpec::random(3, 8 * MIB + 4321)]);
    let digest = image.layers[0].0.clone();
    let bytes = Arc::new(std::fs::read(images::blob_path(layout.path(), &digest)).unwrap());
    let server = Server::start(&config(&up, &[]), &[]);

    let url = server.url(&blob_path(&up, "big/blob", &digest));
    let expected = bytes.clone();
    let results = concurrently(20, move |_| http_request("GET", &url, &[]).map(|r| (r.status, r.body == *expected)));
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.as_ref().ok(), Some(&(200, true)), "client {i}: {r:?}");
    }
    assert_eq!(up.request_count("GET", &digest), 1, "{:?}", up.requests());
}

/// The repository of [`push_small_image`].
const SMALL_REPO: &str = "secure/app";

/// Pushes a small two-layer image to `up` as `secure/app:v1`.
fn push_small_image(up: &Distribution) -> (TempDir, ImageInfo) {
    push_image(
        up,
        &format!("{SMALL_REPO}:v1"),
        Format::Oci,
        &[LayerSpec::text("a.txt", "a"), LayerSpec::random(4, 256 * 1024)],
    )
}

/// Pulls the [`push_small_image`] image byte-exact through a new server whose config has `lines` for `up`.
fn pull_small_image_with(up: &Distribution, lines: &[String], (layout, image): &(TempDir, ImageInfo)) {
    let server = Server::start(&config(up, lines), &[]);
    pull_image(&server, up, layout.path(), SMALL_REPO, "v1", image);
}

/// A new server whose config has `lines` for `up` answers `status` with an OCI error for the manifest
/// and a blob of the [`push_small_image`] image, never passing the upstream's `WWW-Authenticate` on.
fn assert_pull_fails_with(up: &Distribution, lines: &[String], image: &ImageInfo, status: u16) {
    let server = Server::start(&config(up, lines), &[]);
    let paths = [manifest_path(up, SMALL_REPO, "v1"), blob_path(up, SMALL_REPO, &image.config_digest)];
    for path in paths {
        let r = server.get(&path, &[]);
        assert_eq!(r.status, status, "GET {path}: {}\n{}", r.text(), server.log());
        assert!(r.text().contains("\"errors\""), "GET {path}: {}", r.text());
        assert_eq!(r.header("www-authenticate"), None, "GET {path}");
    }
}

#[test]
fn https_with_basic_auth_and_a_custom_ca() {
    let up = Distribution::start(Mode::basic("alice", "s3cret"));
    let pushed = push_small_image(&up);
    pull_small_image_with(&up, &[auth("alice", "s3cret"), tls_with_ca(&up, "")], &pushed);
    assert_pull_fails_with(&up, &[tls_with_ca(&up, "")], &pushed.1, 404);
}

#[test]
fn https_with_token_auth_caches_the_token() {
    let up = Distribution::start(Mode::token("bob", "t0ken", 300));
    let token_requests = || up.token_server.as_ref().unwrap().request_count();
    let pushed = push_small_image(&up);
    let before = token_requests();
    pull_small_image_with(&up, &[auth("bob", "t0ken"), tls_with_ca(&up, "")], &pushed);
    let tokens = token_requests() - before;
    assert!((1..=2).contains(&tokens), "{tokens} token requests for one manifest and three blobs of one repository");
    assert_pull_fails_with(&up, &[auth("bob", "wrong"), tls_with_ca(&up, "")], &pushed.1, 404);
}

/// A realm on another origin under the registry's private CA (GitLab's `/jwt/auth`) is reached with the
/// registry's `tls.ca`, not with the system roots only.
#[test]
fn an_https_token_realm_on_another_port_is_trusted_through_the_registry_ca() {
    let up = Distribution::start(Mode::token_with_https_realm("carol", "r3alm", 300));
    let token_server = up.token_server.as_ref().unwrap();
    assert!(token_server.realm.starts_with("https://") && token_server.port != up.port, "{}", token_server.realm);
    let pushed = push_small_image(&up);
    let before = token_server.request_count();
    pull_small_image_with(&up, &[auth("carol", "r3alm"), tls_with_ca(&up, "")], &pushed);
    assert!(token_server.request_count() > before, "the pull asked the token realm for nothing");
}

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let up = Distribution::start(Mode::Mtls);
    let pushed = push_small_image(&up);
    pull_small_image_with(&up, &[tls_with_ca(&up, &client_cert(&up))], &pushed);
    assert_pull_fails_with(&up, &[tls_with_ca(&up, "")], &pushed.1, 502);
}

#[test]
fn an_untrusted_certificate_is_refused_unless_verification_is_off() {
    let up = Distribution::start(Mode::Tls);
    let pushed = push_small_image(&up);
    assert_pull_fails_with(&up, &[], &pushed.1, 502);
    pull_small_image_with(&up, &["tls: {insecureSkipVerify: true}".to_string()], &pushed);
}

#[test]
fn a_missing_tls_file_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let missing = missing.display();
    let cases = [
        (format!("tls: {{ca: \"{missing}\"}}"), vec!["tls.ca"]),
        (format!("tls: {{cert: \"{missing}\", key: \"{missing}\"}}"), vec!["tls.cert", "tls.key"]),
    ];
    for (tls, keys) in cases {
        let yaml = format!("registries:\n  - name: \"127.0.0.1:5999\"\n    scheme: https\n    {tls}\n");
        let config = dir.path().join("bad.yaml");
        std::fs::write(&config, yaml).unwrap();
        let (success, stderr) = run_serve(dir.path(), &config);
        assert!(!success, "started with {tls}:\n{stderr}");
        for key in keys {
            assert!(
                stderr.contains(key) && stderr.contains("missing.pem"),
                "stderr does not name {key} and the file:\n{stderr}"
            );
        }
    }
}

/// Runs `ociregistry --config-file CONFIG serve` (killed if still running after 20 s) and returns
/// whether it exited successfully, and its stderr.
fn run_serve(dir: &Path, config: &Path) -> (bool, String) {
    let stderr_path = dir.join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ociregistry"))
        .arg("--image-path")
        .arg(dir.join("images"))
        .arg("--config-file")
        .arg(config)
        .args(["serve", "--host", "127.0.0.1", "--port", "0"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("start ociregistry");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    (status.is_some_and(|s| s.success()), stderr)
}
