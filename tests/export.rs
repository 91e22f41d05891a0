//! `ociregistry export`: images pushed to a real upstream (CNCF distribution, `docker-registry`) and
//! pulled through a running server, a multi-platform index among them, are exported by pattern while
//! that server runs; the tarball is loaded into a fresh image path, which a server started
//! `--air-gapped` serves to containerd (`ctr`) with the upstream stopped. A cosign-style
//! `sha256-<hex>.sig` tag cached beside an image goes with it; an incomplete image is refused by
//! name (exit 1, no file written) unless `--allow-incomplete`. containerd's own `ctr images import`
//! reads the tarball and lists every image in it, each complete.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::containerd::{write_hosts_dir, Containerd, PullOpts};
use common::distribution::{Distribution, Mode};
use common::images::{host_arch, other_arch, write_image, write_index, ImageInfo, LayerSpec};
use common::{wait_until, Server};

const UPSTREAM: &str = "upstream.test";
const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn show(&self) -> String {
        format!("exit {:?}\n--- stdout:\n{}\n--- stderr:\n{}", self.code, self.stdout, self.stderr)
    }
}

fn ociregistry(images: &Path, config: &Path, args: &[&str]) -> Ran {
    let o = Command::new(env!("CARGO_BIN_EXE_ociregistry"))
        .arg("--image-path")
        .arg(images)
        .arg("--config-file")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_PROXY", "*")
        .output()
        .expect("run ociregistry");
    Ran {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// The upstream listed as [`UPSTREAM`]; no prefetch, so a manifest pulled alone stays incomplete.
fn config_yaml(upstream: &Distribution) -> String {
    format!("prefetch: false\nregistries:\n  - name: {UPSTREAM}\n    endpoint: {}\n", upstream.base_url)
}

fn layers(seed: u64) -> Vec<LayerSpec> {
    vec![
        LayerSpec::text(&format!("etc/seed-{seed}"), &format!("seed {seed}\n")),
        LayerSpec::random(seed, 200 * 1024 + seed as usize),
    ]
}

/// GETs a manifest through the server and, with `image`, its config and layers.
fn pull(server: &Server, repo: &str, reference: &str, image: Option<&ImageInfo>) {
    let r = server.get(&format!("/v2/{UPSTREAM}/{repo}/manifests/{reference}"), &[("Accept", ACCEPT_ALL)]);
    assert_eq!(r.status, 200, "{repo}:{reference}: {}\n{}", r.text(), server.log());
    if let Some(image) = image {
        let blobs = std::iter::once(image.config_digest.clone()).chain(image.layers.iter().map(|(d, _)| d.clone()));
        for digest in blobs {
            let r = server.get(&format!("/v2/{UPSTREAM}/{repo}/blobs/{digest}"), &[]);
            assert_eq!(r.status, 200, "{repo} blob {digest}");
        }
    }
}

fn blob_file(images: &Path, digest: &str) -> PathBuf {
    images.join("blobs/sha256").join(&digest[7..9]).join(&digest[7..])
}

#[test]
fn exported_images_load_into_a_fresh_cache_that_serves_them_air_gapped_to_containerd() {
    let mut up = Distribution::start(Mode::Plain);
    let layout = tempfile::tempdir().unwrap();
    let index = write_index(
        layout.path(),
        "multi",
        &[("linux", host_arch()), ("linux", other_arch())],
        &[layers(1), layers(2)],
    );
    up.push(layout.path(), "multi", "export/multi:v1", &[]);
    let one = write_image(layout.path(), "one", ("linux", host_arch()), &layers(3));
    up.push(layout.path(), "one", "export/one:v1", &[]);
    // A cosign-style signature: a small artifact under the referrers tag of one's manifest.
    let sig = write_image(layout.path(), "sig", ("linux", host_arch()), &[LayerSpec::text("sig", "signed\n")]);
    let sig_tag = format!("sha256-{}.sig", &one.manifest_digest[7..]);
    up.push(layout.path(), "sig", &format!("export/one:{sig_tag}"), &[]);
    let partial = write_image(layout.path(), "partial", ("linux", host_arch()), &layers(4));
    up.push(layout.path(), "partial", "export/partial:v1", &[]);

    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config.yaml");
    std::fs::write(&config, config_yaml(&up)).unwrap();
    let cache = work.path().join("cache");
    let server = Server::start_in(&cache, &config_yaml(&up), &[]);
    pull(&server, "export/multi", "v1", None);
    for platform in &index.manifests {
        pull(&server, "export/multi", &platform.manifest_digest, Some(platform));
    }
    pull(&server, "export/one", "v1", Some(&one));
    pull(&server, "export/one", &sig_tag, Some(&sig));
    pull(&server, "export/partial", "v1", None);
    // Manifests reach their files just after they are served: wait until list sees them all.
    let mut rows = Vec::new();
    let cached = wait_until(Duration::from_secs(10), || {
        let listed = ociregistry(&cache, &config, &["list", "--output", "json"]);
        rows = serde_json::from_str::<serde_json::Value>(&listed.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        rows.len() == 4 && rows.iter().filter(|r| r["complete"] == true).count() == 3
    });
    assert!(cached, "the pulled images are not all listed: {rows:?}");

    // Beside the running server: the incomplete image is refused by name, and nothing is written.
    let tar = work.path().join("images.tar");
    let tar_arg = tar.display().to_string();
    let refused = ociregistry(&cache, &config, &["export", "--pattern", "export/partial", "--output", &tar_arg]);
    assert_eq!(refused.code, Some(1), "{}", refused.show());
    assert!(
        refused.stderr.contains(&format!("{UPSTREAM}/export/partial:v1: incomplete"))
            && refused.stderr.contains(&partial.config_digest),
        "{}",
        refused.show()
    );
    assert!(!tar.exists(), "a refused export wrote {}", tar.display());
    let allowed = ociregistry(
        &cache,
        &config,
        &["export", "--pattern", "export/partial", "--allow-incomplete", "--output", &tar_arg],
    );
    assert_eq!(allowed.code, Some(0), "{}", allowed.show());
    assert!(allowed.stdout.contains("INCOMPLETE"), "{}", allowed.show());

    let run =
        ociregistry(&cache, &config, &["export", "--pattern", "export/multi:,export/one:v1", "--output", &tar_arg]);
    assert_eq!(run.code, Some(0), "{}", run.show());
    let summary = run.stdout.lines().last().unwrap_or_default();
    assert!(summary.starts_with("exported 3 images (0 incomplete), 0 refused"), "{}", run.show());
    assert!(
        run.stdout.contains(&format!("exported {UPSTREAM}/export/one:{sig_tag}: 1 manifests, 2 blobs")),
        "{}",
        run.show()
    );

    // To standard output, with the lines on standard error: the same images make the same tarball.
    let streamed = Command::new(env!("CARGO_BIN_EXE_ociregistry"))
        .arg("--image-path")
        .arg(&cache)
        .args(["export", "--pattern", "export/multi:,export/one:v1", "--output", "-"])
        .output()
        .unwrap();
    assert_eq!(streamed.status.code(), Some(0), "{}", String::from_utf8_lossy(&streamed.stderr));
    assert!(String::from_utf8_lossy(&streamed.stderr).contains("exported 3 images"));
    assert!(streamed.stdout == std::fs::read(&tar).unwrap(), "the streamed tarball differs from the file");

    // Gzipped by name (.tar.gz) or by --gzip: the same tarball inside, deterministic, and load reads it.
    let gz_path = work.path().join("images.tar.gz");
    let gz_arg = gz_path.display().to_string();
    let gzipped =
        ociregistry(&cache, &config, &["export", "--pattern", "export/multi:,export/one:v1", "--output", &gz_arg]);
    assert_eq!(gzipped.code, Some(0), "{}", gzipped.show());
    let gz_bytes = std::fs::read(&gz_path).unwrap();
    assert_eq!(&gz_bytes[..2], &[0x1f, 0x8b], "gzip magic");
    let mut inside = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz_bytes[..]), &mut inside).unwrap();
    assert!(inside == std::fs::read(&tar).unwrap(), "the gzipped tarball holds the same tarball");
    let streamed_gz = Command::new(env!("CARGO_BIN_EXE_ociregistry"))
        .arg("--image-path")
        .arg(&cache)
        .args(["export", "--pattern", "export/multi:,export/one:v1", "--gzip", "--output", "-"])
        .output()
        .unwrap();
    assert_eq!(streamed_gz.status.code(), Some(0), "{}", String::from_utf8_lossy(&streamed_gz.stderr));
    assert!(streamed_gz.stdout == gz_bytes, "--gzip to standard output makes the same bytes");
    // Loads `tarball` into a fresh image path: all three images, every blob of each.
    let load_fresh = |fresh: &Path, tarball: &str| {
        let loaded = ociregistry(fresh, &config, &["load", "--image-file", tarball, "--all-platforms"]);
        assert_eq!(loaded.code, Some(0), "{}", loaded.show());
        assert!(
            loaded.stdout.lines().last().unwrap_or_default().starts_with("loaded 3 images, 0 failed"),
            "{}",
            loaded.show()
        );
        for image in index.manifests.iter().chain([&one, &sig]) {
            let blobs = std::iter::once(&image.config_digest).chain(image.layers.iter().map(|(d, _)| d));
            for digest in blobs.chain([&image.manifest_digest]) {
                assert!(blob_file(fresh, digest).is_file(), "{digest} not loaded from {tarball}\n{}", loaded.show());
            }
        }
    };
    let fresh_gz = work.path().join("fresh-gz");
    load_fresh(&fresh_gz, &gz_arg);

    // An image list: a reference by digest is exported under it; one naming nothing cached is refused.
    let list = work.path().join("images.txt");
    let by_digest = format!("{UPSTREAM}/export/one@{}", one.manifest_digest);
    std::fs::write(&list, format!("# carried away\n{by_digest}\n{UPSTREAM}/export/absent:v1 # gone\n")).unwrap();
    let listed_tar = work.path().join("listed.tar").display().to_string();
    let listed =
        ociregistry(&cache, &config, &["export", "--image-file", &list.display().to_string(), "--output", &listed_tar]);
    assert_eq!(listed.code, Some(1), "{}", listed.show());
    assert!(listed.stdout.contains(&format!("exported {by_digest}: 1 manifests, 3 blobs")), "{}", listed.show());
    assert!(listed.stderr.contains(&format!("{UPSTREAM}/export/absent:v1 (")), "{}", listed.show());
    assert!(Path::new(&listed_tar).is_file());
    drop(server);

    let fresh = work.path().join("fresh");
    load_fresh(&fresh, &tar_arg);

    up.stop();
    let mirror = Server::start_in(&fresh, &config_yaml(&up), &["--air-gapped"]);
    let ctrd = Containerd::start();
    let hosts = write_hosts_dir(&work.path().join("hosts"), UPSTREAM, &format!("http://{}", mirror.addr));
    for (ns, reference, image) in [
        ("multi", format!("{UPSTREAM}/export/multi:v1"), &index.manifests[0]),
        ("one", format!("{UPSTREAM}/export/one:v1"), &one),
        ("sig", format!("{UPSTREAM}/export/one:{sig_tag}"), &sig),
    ] {
        ctrd.pull(ns, &reference, &hosts, &PullOpts::default()).unwrap_or_else(|e| {
            panic!("ctr pull {reference}: {e}\n--- containerd:\n{}\n--- ociregistry:\n{}", ctrd.log(), mirror.log())
        });
        let content = ctrd.list_content(ns).unwrap();
        let blobs = std::iter::once(&image.config_digest).chain(image.layers.iter().map(|(d, _)| d));
        for digest in blobs {
            assert!(content.contains(digest), "containerd lacks {digest} of {reference}: {content:?}");
        }
    }

    // containerd reads the tarball itself: `ctr images import` lists every image it names.
    let ctr = |args: &[&str]| ctrd.ctr("imported", args, Duration::from_secs(120));
    ctr(&["images", "import", "--all-platforms", "--snapshotter", "overlayfs", &tar_arg])
        .unwrap_or_else(|e| panic!("ctr images import: {e}\n--- containerd:\n{}", ctrd.log()));
    let names = ctr(&["images", "list", "--quiet"]).unwrap();
    let mut names: Vec<&str> = names.lines().collect();
    names.sort_unstable();
    let mut want = [
        format!("{UPSTREAM}/export/multi:v1"),
        format!("{UPSTREAM}/export/one:v1"),
        format!("{UPSTREAM}/export/one:{sig_tag}"),
    ];
    want.sort_unstable();
    assert_eq!(names, want.iter().map(String::as_str).collect::<Vec<_>>(), "imported from {tar_arg}");
    let checked = ctr(&["images", "check"]).unwrap();
    assert!(
        checked.lines().filter(|l| l.contains("complete (")).count() == 3,
        "every imported image has all its content: {checked}"
    );
}
