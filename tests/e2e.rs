//! End to end: real clients (containerd 1.6 through `ctr`, skopeo 1.9) pull through the real
//! `ociregistry` binary from a real upstream (`docker-registry`, CNCF distribution 2.8), all on loopback.
//!
//! containerd reaches the mirror through a hosts.toml whose only other server is a dead push-only one, so a
//! pull that succeeds went through ociregistry; skopeo names a portless upstream in the path or through a
//! `registries.conf` mirror whose registry location is dead. Upstream traffic is counted from
//! distribution's access log.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::certs::{make_pki, path_str, TestPki};
use common::containerd::{
    skopeo_copy_through, skopeo_copy_via_registries_conf, skopeo_inspect_raw, write_hosts_dir, write_tls_hosts_dir,
    Containerd, PullOpts,
};
use common::distribution::{Distribution, Mode};
use common::images::{
    blob_path, host_arch, other_arch, sha256_digest, write_image, write_image_as, write_index, write_index_as, Format,
    ImageInfo, IndexInfo, LayerSpec, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST,
};
use common::{plain_registry, Server};
use serde_json::json;

/// The portless name the skopeo tests give the upstream: skopeo cannot parse `MIRROR/HOST:PORT/repo`.
const UPSTREAM_NAME: &str = "upstream.test";
/// An endpoint nothing listens on.
const DEAD_ENDPOINT: &str = "http://127.0.0.1:9";
/// Lines of a daemon's log to show when a client fails.
const LOG_TAIL_LINES: usize = 60;

/// A plain-HTTP distribution upstream, ociregistry in front of it, and a directory for the OCI layout
/// the test pushes from and for client configuration.
struct Env {
    upstream: Distribution,
    mirror: Server,
    dir: tempfile::TempDir,
}

impl Env {
    /// Starts the upstream, then the mirror with the YAML config that `config` writes for it.
    fn start(config: fn(&Distribution) -> String) -> Env {
        let upstream = Distribution::start(Mode::Plain);
        let mirror = Server::start(&config(&upstream), &[]);
        Env { upstream, mirror, dir: tempfile::tempdir().unwrap() }
    }

    fn layout(&self) -> PathBuf {
        self.dir.path().join("layout")
    }

    /// Pushes the layout's `ref_name` upstream as `repo_tag` with its digests unchanged; returns the
    /// reference containerd pulls (`127.0.0.1:PORT/repo:tag`).
    fn push(&self, ref_name: &str, repo_tag: &str) -> String {
        self.upstream.push(&self.layout(), ref_name, repo_tag, &[]);
        self.upstream.reference(repo_tag)
    }

    /// A `--hosts-dir` that sends containerd's pulls of the upstream's host to the mirror only.
    fn hosts_dir(&self) -> PathBuf {
        write_hosts_dir(&self.dir.path().join("hosts"), &self.upstream.host, &format!("http://{}", self.mirror.addr))
    }

    /// Unwraps a client's result, panicking with its error and the tails of the daemons' logs.
    fn expect(&self, ctrd: &Containerd, result: Result<String, String>) -> String {
        result.unwrap_or_else(|e| {
            panic!(
                "{e}\n--- containerd log:\n{}\n--- ociregistry log:\n{}",
                tail(&ctrd.log()),
                tail(&self.mirror.log())
            )
        })
    }

    /// Upstream GETs of (blobs, manifests by digest): what a warm cache never repeats.
    fn upstream_content_gets(&self) -> (usize, usize) {
        (self.upstream.request_count("GET", "/blobs/"), self.upstream.request_count("GET", "/manifests/sha256:"))
    }
}

/// Lists the upstream under its own `127.0.0.1:PORT`, the registry host containerd sends as `ns`.
fn by_host(upstream: &Distribution) -> String {
    plain_registry(&upstream.host)
}

/// Lists the upstream as [`UPSTREAM_NAME`], served from its URL.
fn by_name(upstream: &Distribution) -> String {
    format!("registries:\n  - name: {UPSTREAM_NAME}\n    endpoint: {}\n", upstream.base_url)
}

/// Lists the upstream's host but sends its requests to a dead endpoint: a broken mirror.
fn dead_upstream(upstream: &Distribution) -> String {
    format!("registries:\n  - name: \"{}\"\n    endpoint: {DEAD_ENDPOINT}\n", upstream.host)
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// linux/amd64 and linux/arm64 with the host's first, so index 0 is what a plain pull selects.
fn host_first_platforms() -> [(&'static str, &'static str); 2] {
    [("linux", host_arch()), ("linux", other_arch())]
}

/// The manifest, config and layer digests of `image`.
fn image_blobs(image: &ImageInfo) -> Vec<String> {
    [&image.manifest_digest, &image.config_digest]
        .into_iter()
        .cloned()
        .chain(image.layers.iter().map(|(digest, _)| digest.clone()))
        .collect()
}

/// The index digest and the blobs of `images` of it.
fn index_blobs<'a>(index: &IndexInfo, images: impl IntoIterator<Item = &'a ImageInfo>) -> Vec<String> {
    let mut blobs = vec![index.index_digest.clone()];
    blobs.extend(images.into_iter().flat_map(image_blobs));
    blobs
}

/// One small text layer and one of incompressible bytes, different per `seed`.
fn layers(seed: u64) -> Vec<LayerSpec> {
    vec![
        LayerSpec::text(&format!("etc/seed-{seed}"), &format!("seed {seed}\n")),
        LayerSpec::random(seed, 512 * 1024 + seed as usize),
    ]
}

/// Asserts that `namespace` records `reference` at `digest` and stores every blob in `blobs`.
fn assert_pulled(ctrd: &Containerd, namespace: &str, reference: &str, digest: &str, blobs: &[String]) {
    assert_eq!(ctrd.image_digest(namespace, reference).unwrap(), digest, "image digest of {reference} in {namespace}");
    let content = ctrd.list_content(namespace).unwrap();
    let missing: Vec<&String> = blobs.iter().filter(|d| !content.contains(d)).collect();
    assert!(missing.is_empty(), "namespace {namespace} lacks {missing:?}; it holds {content:?}");
}

/// Asserts that skopeo's `dir:` copy in `dest` holds `image`'s manifest, and its config and layers as
/// files whose content hashes to the digest that names them.
fn assert_dir_copy(dest: &Path, image: &ImageInfo) {
    let manifest = fs::read(dest.join("manifest.json")).unwrap();
    assert!(
        manifest == image.manifest_bytes,
        "manifest.json in {} differs: {}",
        dest.display(),
        String::from_utf8_lossy(&manifest)
    );
    let blobs = std::iter::once(&image.config_digest).chain(image.layers.iter().map(|(d, _)| d));
    for digest in blobs {
        let copied = fs::read(dest.join(&digest["sha256:".len()..])).unwrap();
        assert_eq!(sha256_digest(&copied), *digest, "in {}", dest.display());
    }
}

/// Writes an OCI image for the host platform, tagged `ref_name` in `layout` (written whole: give it its
/// own layout), whose one layer holds this machine's dash as /bin/sh, the libraries it loads, and
/// /hello.txt. images.rs writes only mode-0644 files, so this layer is archived by the system `tar`.
fn write_runnable_image(layout: &Path, ref_name: &str) -> ImageInfo {
    let scratch = tempfile::tempdir().unwrap();
    let rootfs = scratch.path().join("rootfs");
    let ldd = Command::new("ldd").arg("/bin/dash").output().unwrap();
    assert!(ldd.status.success(), "ldd /bin/dash failed");
    let libraries = String::from_utf8(ldd.stdout).unwrap();
    let mut files = vec![("/bin/dash", "bin/sh".to_string())];
    files.extend(
        libraries.split_whitespace().filter(|word| word.starts_with('/')).map(|path| (path, path[1..].to_string())),
    );
    for (from, to) in &files {
        let to = rootfs.join(to);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(from, to).unwrap();
    }
    fs::write(rootfs.join("hello.txt"), "hello from the mirror\n").unwrap();
    let tar = Command::new("tar")
        .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "-cf", "-", "-C"])
        .arg(&rootfs)
        .arg(".")
        .output()
        .unwrap();
    assert!(tar.status.success(), "tar failed: {}", String::from_utf8_lossy(&tar.stderr));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar.stdout).unwrap();
    let layer = gz.finish().unwrap();

    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |bytes: &[u8]| {
        let digest = sha256_digest(bytes);
        fs::write(blob_path(layout, &digest), bytes).unwrap();
        digest
    };
    let layer_digest = put(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": host_arch(),
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&tar.stdout)]},
    }))
    .unwrap();
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_MANIFEST,
        "digest": manifest_digest,
        "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": ref_name},
    }]});
    fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    ImageInfo {
        manifest_digest,
        manifest_bytes: manifest,
        media_type: OCI_MANIFEST.to_string(),
        config_digest,
        total_size: (config.len() + layer.len()) as u64,
        layers: vec![(layer_digest, layer.len() as u64)],
        platform: ("linux".to_string(), host_arch().to_string()),
    }
}

#[test]
fn containerd_pulls_and_runs_an_image_and_a_second_pull_is_served_from_the_cache() {
    let env = Env::start(by_host);
    let image = write_runnable_image(&env.layout(), "runnable");
    let reference = env.push("runnable", "e2e/runnable:v1");
    let ctrd = Containerd::start();
    let hosts = env.hosts_dir();
    let blobs = image_blobs(&image);

    env.expect(&ctrd, ctrd.pull("first", &reference, &hosts, &PullOpts::default()));
    assert_pulled(&ctrd, "first", &reference, &image.manifest_digest, &blobs);
    let (blob_gets, digest_gets) = env.upstream_content_gets();
    assert!(
        blob_gets > image.layers.len(),
        "the first pull did not fetch the config and every layer upstream: {:?}",
        env.upstream.requests()
    );

    env.expect(&ctrd, ctrd.pull("second", &reference, &hosts, &PullOpts::default()));
    assert_pulled(&ctrd, "second", &reference, &image.manifest_digest, &blobs);
    assert_eq!(
        env.upstream_content_gets(),
        (blob_gets, digest_gets),
        "the second pull fetched blobs or manifests by digest upstream: {:?}",
        env.upstream.requests()
    );

    let script = r#"read line < /hello.txt && echo "$line""#;
    let out = env.expect(&ctrd, ctrd.run("second", &reference, "e2e-run", &["/bin/sh", "-c", script]));
    assert_eq!(out.trim(), "hello from the mirror");
}

#[test]
fn containerd_pulls_each_platform_of_a_multi_arch_oci_index() {
    let env = Env::start(by_host);
    let platforms = host_first_platforms();
    let index = write_index(&env.layout(), "multi", &platforms, &[layers(1), layers(2)]);
    let reference = env.push("multi", "e2e/multi:v1");
    let ctrd = Containerd::start();
    let hosts = env.hosts_dir();
    let (host, other) = (&index.manifests[0], &index.manifests[1]);

    env.expect(&ctrd, ctrd.pull("host", &reference, &hosts, &PullOpts::default()));
    assert_pulled(&ctrd, "host", &reference, &index.index_digest, &index_blobs(&index, [host]));

    let other_platform = PullOpts {
        platform: Some(format!("{}/{}", other.platform.0, other.platform.1)),
        all_metadata: true,
        ..PullOpts::default()
    };
    env.expect(&ctrd, ctrd.pull("other", &reference, &hosts, &other_platform));
    assert_pulled(&ctrd, "other", &reference, &index.index_digest, &index_blobs(&index, [other]));

    let all_platforms = PullOpts { all_platforms: true, ..PullOpts::default() };
    env.expect(&ctrd, ctrd.content_fetch("all", &reference, &hosts, &all_platforms));
    assert_pulled(&ctrd, "all", &reference, &index.index_digest, &index_blobs(&index, &index.manifests));
}

#[test]
fn containerd_pulls_a_docker_manifest_list() {
    let env = Env::start(by_host);
    let list = write_index_as(Format::Docker, &env.layout(), "list", &host_first_platforms(), &[layers(3), layers(4)]);
    let reference = env.push("list", "e2e/docker-list:v1");
    let ctrd = Containerd::start();

    env.expect(&ctrd, ctrd.pull("docker-list", &reference, &env.hosts_dir(), &PullOpts::default()));
    assert_pulled(&ctrd, "docker-list", &reference, &list.index_digest, &index_blobs(&list, [&list.manifests[0]]));
}

#[test]
fn containerd_fails_when_the_mirror_cannot_reach_the_upstream() {
    let env = Env::start(dead_upstream);
    write_image(&env.layout(), "app", ("linux", host_arch()), &layers(5));
    let reference = env.push("app", "e2e/unreachable:v1");
    let pushed = env.upstream.requests().len();
    let ctrd = Containerd::start();
    let opts = PullOpts { timeout: Duration::from_secs(60), ..PullOpts::default() };

    let started = Instant::now();
    let result = ctrd.pull("broken", &reference, &env.hosts_dir(), &opts);
    assert!(result.is_err(), "the pull succeeded through a broken mirror: {result:?}");
    assert!(started.elapsed() < opts.timeout, "ctr hung until its deadline instead of failing: {result:?}");
    let since_push = &env.upstream.requests()[pushed..];
    assert!(since_push.is_empty(), "containerd bypassed the mirror: {since_push:?}");
    assert!(ctrd.list_content("broken").unwrap().is_empty(), "a failed pull stored content");
}

#[test]
fn skopeo_copies_through_the_mirror_by_path_and_by_registries_conf() {
    let env = Env::start(by_name);
    let image = write_image(&env.layout(), "app", ("linux", host_arch()), &layers(6));
    env.push("app", "e2e/skopeo:v1");

    let by_path = env.dir.path().join("by-path");
    skopeo_copy_through(&env.mirror.addr, &format!("{UPSTREAM_NAME}/e2e/skopeo:v1"), &by_path)
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&env.mirror.log())));
    assert_dir_copy(&by_path, &image);

    let by_conf = env.dir.path().join("by-registries-conf");
    let mirror_location = format!("{}/{UPSTREAM_NAME}", env.mirror.addr);
    skopeo_copy_via_registries_conf(UPSTREAM_NAME, &mirror_location, "e2e/skopeo:v1", &by_conf)
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&env.mirror.log())));
    assert_dir_copy(&by_conf, &image);
}

#[test]
fn skopeo_gets_a_docker_manifest_asked_for_on_one_of_several_accept_lines() {
    let env = Env::start(by_name);
    let image = write_image_as(Format::Docker, &env.layout(), "app", ("linux", host_arch()), &layers(7));
    env.push("app", "e2e/docker:v1");
    let reference = format!("{UPSTREAM_NAME}/e2e/docker:v1");

    // skopeo 1.9 sends six `Accept:` lines, the Docker v2s2 type on the second: a server that kept only the
    // first or the last line would answer 404. The first inspect fills the cache, the second hits it.
    for attempt in ["miss", "hit"] {
        let raw = skopeo_inspect_raw(&env.mirror.addr, &reference)
            .unwrap_or_else(|e| panic!("{attempt}: {e}\n{}", tail(&env.mirror.log())));
        assert!(raw.as_bytes() == image.manifest_bytes, "{attempt}: inspect --raw gave {raw}");
    }
}

/// The upstream, and ociregistry in front of it serving HTTPS with a test PKI's server certificate;
/// `client_auth` is `serverTlsConfig.clientAuth`.
fn tls_env(client_auth: &str) -> (Env, TestPki) {
    let upstream = Distribution::start(Mode::Plain);
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(&dir.path().join("pki"));
    let config = format!(
        "{}serverTlsConfig:\n  cert: {}\n  key: {}\n  ca: {}\n  clientAuth: {client_auth}\n",
        by_host(&upstream),
        path_str(&pki.server_cert),
        path_str(&pki.server_key),
        path_str(&pki.ca_cert)
    );
    let mirror = Server::start(&config, &[]);
    (Env { upstream, mirror, dir }, pki)
}

#[test]
fn containerd_pulls_over_https_trusting_the_ca_from_hosts_toml() {
    let (env, pki) = tls_env("none");
    let image = write_image(&env.layout(), "tls", (host_arch_os(), host_arch()), &layers(21));
    let reference = env.push("tls", "e2e/tls:v1");
    let ctrd = Containerd::start();
    let mirror = format!("https://{}", env.mirror.addr);
    let hosts = write_tls_hosts_dir(&env.dir.path().join("tls-hosts"), &env.upstream.host, &mirror, &pki.ca_cert, None);
    env.expect(&ctrd, ctrd.pull("tls", &reference, &hosts, &PullOpts::default()));
    assert_pulled(&ctrd, "tls", &reference, &image.manifest_digest, &image_blobs(&image));
    // Without the CA containerd does not trust the mirror, and there is nowhere else to pull from.
    let untrusted = write_hosts_dir(&env.dir.path().join("no-ca"), &env.upstream.host, &mirror);
    assert!(ctrd.pull("no-ca", &reference, &untrusted, &PullOpts::default()).is_err());
}

#[test]
fn containerd_pulls_over_mutual_tls_with_the_client_certificate_from_hosts_toml() {
    let (env, pki) = tls_env("verify");
    let image = write_image(&env.layout(), "mtls", (host_arch_os(), host_arch()), &layers(22));
    let reference = env.push("mtls", "e2e/mtls:v1");
    let ctrd = Containerd::start();
    let mirror = format!("https://{}", env.mirror.addr);
    let without = write_tls_hosts_dir(&env.dir.path().join("ca-only"), &env.upstream.host, &mirror, &pki.ca_cert, None);
    assert!(
        ctrd.pull("refused", &reference, &without, &PullOpts::default()).is_err(),
        "a pull without a client certificate succeeded"
    );
    let client = Some((pki.client_cert.as_path(), pki.client_key.as_path()));
    let with = write_tls_hosts_dir(&env.dir.path().join("client"), &env.upstream.host, &mirror, &pki.ca_cert, client);
    env.expect(&ctrd, ctrd.pull("mtls", &reference, &with, &PullOpts::default()));
    assert_pulled(&ctrd, "mtls", &reference, &image.manifest_digest, &image_blobs(&image));
}

fn host_arch_os() -> &'static str {
    "linux"
}
