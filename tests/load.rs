//! `ociregistry load`: images named in lists are pulled from a real upstream (CNCF distribution,
//! `docker-registry`), and images in tarballs skopeo made from it (a docker save archive, a gzipped
//! OCI layout archive) are read, into an image path, which a server started `--air-gapped` on it then
//! serves to containerd (`ctr`) and skopeo with the upstream stopped. A second load asks the upstream
//! nothing; a bad line or an unreachable image fails the run (exit 1, each named) while the others
//! load; a tarball with a wrong digest commits nothing, and its images without a usable name are
//! refused alone; a docker save with gzipped layers loads; a tarball of more blobs than the process
//! may open files loads. With a server running on the image path, load hands the list to it (the
//! admin job `load`), which serves the images at once (upstream stopped, no restart); a failed image
//! is exit 1, named; a tarball is handed over staged in the image path's tmp/ and served at once. A
//! stale `.admin` is ignored with a note; a lock holder whose admin API does not answer refuses the
//! load by pid. `--pin` writes `index/pins`, locally and through the server. A server preloads its
//! list before it listens; the built-in hello-world image is pulled and run by containerd.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::containerd::{skopeo_copy_through, write_hosts_dir, Containerd, PullOpts};
use common::distribution::{Distribution, Mode};
use common::images::{
    host_arch, other_arch, sha256_digest, write_image, write_image_as, write_index, Format, ImageInfo, LayerSpec,
};
use common::Server;

/// The portless name the upstream is listed under: skopeo cannot parse `MIRROR/HOST:PORT/repo`.
const UPSTREAM: &str = "upstream.test";

struct Loaded {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Loaded {
    fn summary(&self) -> &str {
        self.stdout.lines().last().unwrap_or_default()
    }

    fn show(&self) -> String {
        format!("exit {:?}\n--- stdout:\n{}\n--- stderr:\n{}", self.code, self.stdout, self.stderr)
    }
}

/// A working directory with the config listing the upstream as [`UPSTREAM`] and an image path.
struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
    images: PathBuf,
}

impl Site {
    fn new(upstream: &Distribution) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, config_yaml(upstream)).unwrap();
        let images = dir.path().join("images");
        Site { dir, config, images }
    }

    /// A site with no upstream (for tarballs).
    fn offline() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, "registries: []\n").unwrap();
        let images = dir.path().join("images");
        Site { dir, config, images }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `ociregistry --image-path … --config-file … load <args>`.
    fn load(&self, args: &[&str]) -> Loaded {
        self.load_with(Command::new(env!("CARGO_BIN_EXE_ociregistry")), args)
    }

    /// [`Site::load`] with at most `files` open file descriptors (prlimit).
    fn load_limited(&self, files: u32, args: &[&str]) -> Loaded {
        let mut command = Command::new("prlimit");
        command.arg(format!("--nofile={files}:{files}")).arg("--").arg(env!("CARGO_BIN_EXE_ociregistry"));
        self.load_with(command, args)
    }

    fn load_with(&self, mut command: Command, args: &[&str]) -> Loaded {
        let o = command
            .arg("--image-path")
            .arg(&self.images)
            .arg("--config-file")
            .arg(&self.config)
            .arg("load")
            .args(args)
            .env_remove("RUST_LOG")
            .env("NO_PROXY", "*")
            .output()
            .expect("run ociregistry load");
        Loaded {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn write_list(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

fn config_yaml(upstream: &Distribution) -> String {
    format!("registries:\n  - name: {UPSTREAM}\n    endpoint: {}\n", upstream.base_url)
}

fn layers(seed: u64) -> Vec<LayerSpec> {
    vec![
        LayerSpec::text(&format!("etc/seed-{seed}"), &format!("seed {seed}\n")),
        LayerSpec::random(seed, 300 * 1024 + seed as usize),
    ]
}

/// The config and layer digests of `image`.
fn blobs_of(image: &ImageInfo) -> Vec<String> {
    std::iter::once(image.config_digest.clone()).chain(image.layers.iter().map(|(d, _)| d.clone())).collect()
}

fn blob_file(images: &Path, digest: &str) -> PathBuf {
    images.join("blobs/sha256").join(&digest[7..9]).join(&digest[7..])
}

/// Pushes an image, an index (host and other architecture) and a Docker-typed image to the upstream.
struct Pushed {
    one: ImageInfo,
    multi_host: ImageInfo,
    multi_other: ImageInfo,
    docker: ImageInfo,
    _layout: tempfile::TempDir,
}

fn push_images(up: &Distribution) -> Pushed {
    let layout = tempfile::tempdir().unwrap();
    let one = write_image(layout.path(), "one", ("linux", host_arch()), &layers(1));
    up.push(layout.path(), "one", "load/one:v1", &[]);
    let index = write_index(
        layout.path(),
        "multi",
        &[("linux", host_arch()), ("linux", other_arch())],
        &[layers(2), layers(3)],
    );
    up.push(layout.path(), "multi", "load/multi:v2", &[]);
    let docker = write_image_as(Format::Docker, layout.path(), "docker", ("linux", host_arch()), &layers(4));
    up.push(layout.path(), "docker", "load/docker:v3", &[]);
    let mut manifests = index.manifests.into_iter();
    Pushed {
        one,
        multi_host: manifests.next().unwrap(),
        multi_other: manifests.next().unwrap(),
        docker,
        _layout: layout,
    }
}

/// `skopeo copy docker://UPSTREAM/REPO_TAG DEST` (a `docker-archive:` or `oci-archive:` destination).
fn skopeo_save(up: &Distribution, repo_tag: &str, dest: &str) {
    let out = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}", up.reference(repo_tag)))
        .arg(dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy to {dest}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Writes `path` gzipped next to it, as `path.gz`.
fn gzip_file(path: &Path) -> PathBuf {
    let gz = PathBuf::from(format!("{}.gz", path.display()));
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    std::io::copy(&mut std::fs::File::open(path).unwrap(), &mut enc).unwrap();
    enc.finish().unwrap();
    gz
}

/// Packs a directory into a tarball with the system `tar` (entries named `./…`).
fn tar_dir(dir: &Path, out: &Path) {
    let st = Command::new("tar").arg("-cf").arg(out).arg("-C").arg(dir).arg(".").status().unwrap();
    assert!(st.success());
}

fn ctr_pull(ctrd: &Containerd, mirror: &Server, namespace: &str, reference: &str, hosts: &Path) {
    ctrd.pull(namespace, reference, hosts, &PullOpts::default()).unwrap_or_else(|e| {
        panic!("ctr pull {reference}: {e}\n--- containerd:\n{}\n--- ociregistry:\n{}", ctrd.log(), mirror.log())
    });
    let content = ctrd.list_content(namespace).unwrap();
    assert!(content.len() >= 3, "{namespace} holds {content:?}");
}

#[test]
fn a_list_loads_from_the_upstream_and_an_air_gapped_server_serves_it_to_containerd_and_skopeo() {
    let mut up = Distribution::start(Mode::Plain);
    let pushed = push_images(&up);
    let site = Site::new(&up);
    let list = site.write_list(
        "images.txt",
        &format!(
            "# images for the edge site\n\n{UPSTREAM}/load/one:v1\n  {UPSTREAM}/load/multi:v2   # index: host platform\n\
             {UPSTREAM}/load/docker@{}\n",
            pushed.docker.manifest_digest
        ),
    );

    // Tarballs of two more images, made by skopeo from the upstream: a docker save archive and a
    // gzipped OCI layout archive (of the host platform's image of the index).
    let docker_tar = site.path("dtar.tar");
    skopeo_save(&up, "load/one:v1", &format!("docker-archive:{}:{UPSTREAM}/load/dtar:v1", docker_tar.display()));
    let oci_tar = site.path("otar.tar");
    skopeo_save(&up, "load/multi:v2", &format!("oci-archive:{}:{UPSTREAM}/load/otar:v1", oci_tar.display()));
    let oci_gz = gzip_file(&oci_tar);
    let spec = format!("{list},{},{}", docker_tar.display(), oci_gz.display());

    let first = site.load(&["--image-file", &spec]);
    assert_eq!(first.code, Some(0), "{}", first.show());
    assert!(first.summary().starts_with("loaded 5 images, 0 failed"), "{}", first.show());
    for image in [&pushed.one, &pushed.multi_host, &pushed.docker] {
        for digest in blobs_of(image).iter().chain([&image.manifest_digest]) {
            assert!(blob_file(&site.images, digest).is_file(), "{digest} not loaded\n{}", first.show());
        }
    }
    for digest in blobs_of(&pushed.multi_other) {
        assert!(!blob_file(&site.images, &digest).exists(), "the other platform's {digest} was loaded");
    }
    let tag = site.images.join("tags").join(UPSTREAM).join("load/one/_tags/v1");
    assert!(std::fs::read_to_string(&tag).unwrap().contains(&pushed.one.manifest_digest));

    let before = up.requests().len();
    let second = site.load(&["--image-file", &spec]);
    assert_eq!(second.code, Some(0), "{}", second.show());
    assert!(second.summary().contains("fetched 0 manifests and 0 blobs (0 bytes)"), "{}", second.show());
    assert_eq!(up.requests().len(), before, "the second load asked the upstream: {:?}", &up.requests()[before..]);

    up.stop();
    let mirror = Server::start_in(&site.images, &config_yaml(&up), &["--air-gapped"]);
    let ctrd = Containerd::start();
    let hosts = write_hosts_dir(&site.path("hosts"), UPSTREAM, &format!("http://{}", mirror.addr));
    for (ns, reference, image) in [
        ("one", format!("{UPSTREAM}/load/one:v1"), &pushed.one),
        ("multi", format!("{UPSTREAM}/load/multi:v2"), &pushed.multi_host),
        ("docker", format!("{UPSTREAM}/load/docker@{}", pushed.docker.manifest_digest), &pushed.docker),
        ("dtar", format!("{UPSTREAM}/load/dtar:v1"), &pushed.one),
        ("otar", format!("{UPSTREAM}/load/otar:v1"), &pushed.multi_host),
    ] {
        ctr_pull(&ctrd, &mirror, ns, &reference, &hosts);
        if ns == "dtar" {
            // A docker save archive holds uncompressed layers: containerd has the config, and the
            // manifest built for them, not the pushed gzipped layers.
            let content = ctrd.list_content(ns).unwrap();
            assert!(content.contains(&image.config_digest), "{content:?}");
            continue;
        }
        if ns == "otar" {
            assert_eq!(ctrd.image_digest(ns, &reference).unwrap(), image.manifest_digest);
        }
        let content = ctrd.list_content(ns).unwrap();
        for digest in blobs_of(image) {
            assert!(content.contains(&digest), "containerd lacks {digest} of {reference}: {content:?}");
        }
    }
    let copy = site.path("skopeo-copy");
    skopeo_copy_through(&mirror.addr, &format!("{UPSTREAM}/load/one:v1"), &copy)
        .unwrap_or_else(|e| panic!("skopeo: {e}\n{}", mirror.log()));
    let manifest = std::fs::read(copy.join("manifest.json")).unwrap();
    assert_eq!(sha256_digest(&manifest), pushed.one.manifest_digest);
}

#[test]
fn every_platform_loads_with_all_platforms_and_one_named_with_os_and_arch() {
    let up = Distribution::start(Mode::Plain);
    let pushed = push_images(&up);
    let site = Site::new(&up);
    let list = site.write_list("multi.txt", &format!("{UPSTREAM}/load/multi:v2\n"));
    let other = site.load(&["--image-file", &list, "--os", "linux", "--arch", other_arch()]);
    assert_eq!(other.code, Some(0), "{}", other.show());
    assert!(blob_file(&site.images, &pushed.multi_other.config_digest).is_file());
    assert!(!blob_file(&site.images, &pushed.multi_host.config_digest).exists());
    let missing = site.load(&["--image-file", &list, "--arch", "s390x"]);
    assert_eq!(missing.code, Some(1), "{}", missing.show());
    assert!(missing.stderr.contains("no linux/s390x image"), "{}", missing.show());
    let all = site.load(&["--image-file", &list, "--all-platforms"]);
    assert_eq!(all.code, Some(0), "{}", all.show());
    assert!(blob_file(&site.images, &pushed.multi_host.config_digest).is_file());
}

#[test]
fn bad_lines_and_unreachable_images_fail_the_run_by_name_while_the_others_load() {
    let up = Distribution::start(Mode::Plain);
    let pushed = push_images(&up);
    let site = Site::new(&up);
    let list = site.write_list(
        "mixed.txt",
        &format!(
            "{UPSTREAM}/load/one:v1\nnot-a-full-reference:1\n{UPSTREAM}/load/absent:v9\n127.0.0.1:9/dead/repo:v1\n"
        ),
    );
    let run = site.load(&["--image-file", &list, "--pull-timeout", "5000"]);
    assert_eq!(run.code, Some(1), "{}", run.show());
    assert!(run.summary().starts_with("loaded 1 images, 3 failed"), "{}", run.show());
    for named in ["not-a-full-reference:1 (", "mixed.txt:2", "upstream.test/load/absent:v9", "127.0.0.1:9/dead/repo:v1"]
    {
        assert!(run.stderr.contains(named), "{named} is not named\n{}", run.show());
    }
    assert!(blob_file(&site.images, &pushed.one.config_digest).is_file(), "{}", run.show());
}

#[test]
fn bad_specs_are_named() {
    let up = Distribution::start(Mode::Plain);
    let site = Site::new(&up);
    let nothing = site.load(&["--image-file", &format!("{}/*.none", site.dir.path().display())]);
    assert_eq!(nothing.code, Some(2), "{}", nothing.show());
    assert!(nothing.stderr.contains("no file matches"), "{}", nothing.show());
    let no_spec = site.load(&[]);
    assert_eq!(no_spec.code, Some(2), "{}", no_spec.show());
    assert!(no_spec.stderr.contains("--image-file"), "{}", no_spec.show());
}

fn pins(images: &Path) -> String {
    std::fs::read_to_string(images.join("index").join("pins")).unwrap_or_default()
}

#[test]
fn load_hands_a_list_to_the_server_running_on_the_image_path_which_serves_it_at_once() {
    let mut up = Distribution::start(Mode::Plain);
    let pushed = push_images(&up);
    let site = Site::new(&up);
    let server = Server::start_in(&site.images, &config_yaml(&up), &[]);
    let through = format!("pid {}", server.pid());

    let list = site.write_list("one.txt", &format!("{UPSTREAM}/load/one:v1\n"));
    let run = site.load(&["--image-file", &list, "--pin"]);
    assert_eq!(run.code, Some(0), "{}", run.show());
    assert!(run.stderr.contains(&through) && run.stderr.contains("admin job"), "not handed over\n{}", run.show());
    assert!(run.summary().starts_with("loaded 1 images, 0 failed"), "{}", run.show());
    assert!(run.stdout.contains(&format!("loaded {UPSTREAM}/load/one:v1")), "no progress line\n{}", run.show());
    assert!(pins(&site.images).lines().any(|l| l == format!("{UPSTREAM}/load/one:v1")), "{}", run.show());

    let mixed =
        site.write_list("mixed.txt", &format!("{UPSTREAM}/load/multi:v2\n{UPSTREAM}/load/absent:v9\nnot-full:1\n"));
    let failed = site.load(&["--image-file", &mixed]);
    assert_eq!(failed.code, Some(1), "{}", failed.show());
    assert!(failed.summary().starts_with("loaded 1 images, 2 failed"), "{}", failed.show());
    for named in ["upstream.test/load/absent:v9", "not-full:1 (", "mixed.txt:3"] {
        assert!(failed.stderr.contains(named), "{named} is not named\n{}", failed.show());
    }
    assert!(!pins(&site.images).contains("load/multi"), "pinned without --pin");

    // A tarball is handed over staged in the image path's tmp/, which the job leaves empty.
    let layout = site.path("layout");
    let packed = write_image(&layout, &format!("{UPSTREAM}/load/packed:v1"), ("linux", host_arch()), &layers(12));
    let tarball = site.path("packed.tar");
    tar_dir(&layout, &tarball);
    let handed = site.load(&["--image-file", &tarball.display().to_string()]);
    assert_eq!(handed.code, Some(0), "{}", handed.show());
    assert!(handed.stderr.contains(&through) && handed.stderr.contains("admin job"), "{}", handed.show());
    assert!(handed.summary().starts_with("loaded 1 images, 0 failed"), "{}", handed.show());
    let staged: Vec<_> = std::fs::read_dir(site.images.join("tmp"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("load-"))
        .collect();
    assert!(staged.is_empty(), "staged tarballs left behind: {staged:?}");
    let broken = site.path("broken.tar.gz");
    std::fs::write(&broken, [0x1f, 0x8b, 8, 0]).unwrap();
    let failed = site.load(&["--image-file", &broken.display().to_string()]);
    assert_eq!(failed.code, Some(1), "{}", failed.show());
    assert!(failed.stderr.contains("broken.tar.gz"), "named by the path given\n{}", failed.show());

    // Served by the same server, no restart, with the upstream gone.
    up.stop();
    for (repo, tag, blob) in [
        ("one", "v1", &pushed.one.layers[1].0),
        ("multi", "v2", &pushed.multi_host.config_digest),
        ("packed", "v1", &packed.layers[1].0),
    ] {
        let manifest = server.get(
            &format!("/v2/{UPSTREAM}/load/{repo}/manifests/{tag}"),
            &[("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json")],
        );
        assert_eq!(manifest.status, 200, "{repo}\n{}", server.log());
        assert_eq!(manifest.header("x-cache"), Some("HIT"), "{repo}");
        assert_eq!(server.get(&format!("/v2/{UPSTREAM}/load/{repo}/blobs/{blob}"), &[]).status, 200, "{repo}");
    }
}

#[test]
fn pin_without_a_server_writes_the_pins_file() {
    let up = Distribution::start(Mode::Plain);
    let _pushed = push_images(&up);
    let site = Site::new(&up);
    let list = site.write_list("l.txt", &format!("{UPSTREAM}/load/one:v1\n{UPSTREAM}/load/docker:v3\n"));
    let unpinned = site.load(&["--image-file", &list]);
    assert_eq!(unpinned.code, Some(0), "{}", unpinned.show());
    assert!(pins(&site.images).is_empty(), "pinned without --pin");
    let run = site.load(&["--image-file", &list, "--pin"]);
    assert_eq!(run.code, Some(0), "{}", run.show());
    assert!(!run.stderr.contains("admin job"), "{}", run.show());
    assert!(run.summary().ends_with("; pinned 2"), "{}", run.show());
    let pinned: Vec<String> = pins(&site.images).lines().map(str::to_string).collect();
    assert_eq!(pinned, vec![format!("{UPSTREAM}/load/docker:v3"), format!("{UPSTREAM}/load/one:v1")], "{}", run.show());
}

#[test]
fn an_oci_tarball_with_a_wrong_digest_commits_nothing_and_unnamed_images_are_refused_alone() {
    let up = Distribution::start(Mode::Plain);
    let site = Site::new(&up);

    // A layout with a named image and one whose only name is a bare tag.
    let good = site.path("good");
    let named = write_image(&good, &format!("{UPSTREAM}/load/named:v1"), ("linux", host_arch()), &layers(7));
    let unnamed = write_image(&good, "v1", ("linux", host_arch()), &layers(8));
    let good_tar = site.path("good.tar");
    tar_dir(&good, &good_tar);
    let run = site.load(&["--image-file", &good_tar.display().to_string()]);
    assert_eq!(run.code, Some(1), "{}", run.show());
    assert!(run.summary().starts_with("loaded 1 images, 1 failed"), "{}", run.show());
    assert!(run.stderr.contains(&unnamed.manifest_digest) && run.stderr.contains("no usable name"), "{}", run.show());
    assert!(blob_file(&site.images, &named.manifest_digest).is_file());
    assert!(!blob_file(&site.images, &unnamed.config_digest).exists());

    // A layout whose second layer's bytes do not match the digest that names them.
    let bad = site.path("bad");
    let image = write_image(&bad, &format!("{UPSTREAM}/load/bad:v1"), ("linux", host_arch()), &layers(9));
    let layer = bad.join("blobs/sha256").join(&image.layers[1].0[7..]);
    let mut bytes = std::fs::read(&layer).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&layer, bytes).unwrap();
    let bad_tar = site.path("bad.tar");
    tar_dir(&bad, &bad_tar);
    let run = site.load(&["--image-file", &bad_tar.display().to_string()]);
    assert_eq!(run.code, Some(1), "{}", run.show());
    assert!(
        run.stderr.contains("nothing of it was loaded") && run.stderr.contains("digest mismatch"),
        "{}",
        run.show()
    );
    for digest in blobs_of(&image).iter().chain([&image.manifest_digest]) {
        assert!(!blob_file(&site.images, digest).exists(), "{digest} was committed\n{}", run.show());
    }
    assert!(!site.images.join("tags").join(UPSTREAM).join("load/bad").exists());
    assert_eq!(std::fs::read_dir(site.images.join("tmp")).unwrap().count(), 0, "temp files left behind");
}

#[test]
fn a_tarball_with_more_blobs_than_the_process_may_open_files_loads() {
    let site = Site::offline();
    let layout = site.path("many");
    let images: Vec<ImageInfo> = (0..80)
        .map(|i| {
            let layers = [LayerSpec::text(&format!("etc/many-{i}"), &format!("many {i}\n"))];
            write_image(&layout, &format!("{UPSTREAM}/load/many-{i}:v1"), ("linux", host_arch()), &layers)
        })
        .collect();
    let tar = site.path("many.tar");
    tar_dir(&layout, &tar);
    // 160 blobs verified before any is committed, with 64 descriptors.
    let run = site.load_limited(64, &["--image-file", &tar.display().to_string()]);
    assert_eq!(run.code, Some(0), "{}", run.show());
    assert!(run.summary().starts_with("loaded 80 images, 0 failed"), "{}", run.show());
    for image in &images {
        for digest in blobs_of(image).iter().chain([&image.manifest_digest]) {
            assert!(blob_file(&site.images, digest).is_file(), "{digest} is not committed\n{}", run.show());
        }
    }
}

#[test]
fn a_server_preloads_its_list_before_it_listens_and_starts_despite_failures() {
    let mut up = Distribution::start(Mode::Plain);
    let pushed = push_images(&up);
    let site = Site::new(&up);
    let list = site.write_list("preload.txt", &format!("{UPSTREAM}/load/one:v1\n{UPSTREAM}/load/absent:v9\n"));

    // By flag; a second server on a fresh image path by the config key (with --os/--arch as keys too).
    let by_flag = Server::start_in(&site.images, &config_yaml(&up), &["--preload-images", &list]);
    let yaml = format!("{}preloadImages: {list}\nos: linux\narch: {}\n", config_yaml(&up), other_arch());
    let multi_list = site.write_list("multi.txt", &format!("{UPSTREAM}/load/multi:v2\n"));
    let yaml = yaml.replace(&list, &format!("{list},{multi_list}"));
    let by_key = Server::start_in(&site.path("images-by-key"), &yaml, &[]);
    up.stop();

    for server in [&by_flag, &by_key] {
        let log = server.log();
        let done = log.find("preloading done").unwrap_or_else(|| panic!("no preload summary:\n{log}"));
        assert!(done < log.find(" listening ").unwrap(), "listened before preloading was done:\n{log}");
        assert!(log.contains("load/absent:v9"), "the failed image is not named:\n{log}");
        let manifest = server.get(
            &format!("/v2/{UPSTREAM}/load/one/manifests/v1"),
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        );
        assert_eq!(manifest.status, 200, "{}", server.log());
        assert_eq!(manifest.header("x-cache"), Some("HIT"));
        let layer = &pushed.one.layers[1].0;
        assert_eq!(server.get(&format!("/v2/{UPSTREAM}/load/one/blobs/{layer}"), &[]).status, 200);
    }
    let other = &pushed.multi_other.config_digest;
    assert_eq!(by_key.get(&format!("/v2/{UPSTREAM}/load/multi/blobs/{other}"), &[]).status, 200, "{}", by_key.log());
}

#[test]
fn the_built_in_hello_world_is_served_air_gapped_and_containerd_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let server = Server::start_in(&images, "", &["--hello-world", "--air-gapped"]);
    let ctrd = Containerd::start();
    let hosts = write_hosts_dir(&dir.path().join("hosts"), "docker.io", &format!("http://{}", server.addr));
    let reference = "docker.io/library/hello-world:latest";
    let pulled = ctrd.pull("hello", reference, &hosts, &PullOpts::default());
    pulled.unwrap_or_else(|e| {
        panic!("ctr pull: {e}\n--- containerd:\n{}\n--- ociregistry:\n{}", ctrd.log(), server.log())
    });
    if host_arch() == "amd64" {
        let out = ctrd.run("hello", reference, "hello-run", &["/hello"]).unwrap_or_else(|e| panic!("ctr run: {e}"));
        assert!(out.contains("Hello from ociregistry!"), "ctr run printed {out:?}");
    } else {
        common::skipped("hello-world run", "the built-in image is linux/amd64 only");
    }
    // Installing again at the next start changes nothing.
    let journal = std::fs::read_to_string(images.join("index/records.jsonl")).unwrap();
    drop(server);
    let again = Server::start_in(&images, "", &["--hello-world"]);
    assert_eq!(std::fs::read_to_string(images.join("index/records.jsonl")).unwrap(), journal, "{}", again.log());
}

#[test]
fn resolve_ref_names_the_one_image_of_an_unnamed_tarball_and_is_refused_for_more() {
    let up = Distribution::start(Mode::Plain);
    let site = Site::new(&up);
    // crane writes `…:i-was-a-digest`-style names; an OCI layout may carry only a bare tag.
    let one = site.path("one");
    let image = write_image(&one, "i-was-a-digest", ("linux", host_arch()), &layers(11));
    let one_tar = site.path("one.tar");
    tar_dir(&one, &one_tar);
    let resolved = format!("{UPSTREAM}/load/resolved:v1");
    let run = site.load(&["--image-file", &one_tar.display().to_string(), "--resolve-ref", &resolved]);
    assert_eq!(run.code, Some(0), "{}", run.show());
    assert!(run.stdout.contains(&format!("loaded {resolved} from")), "{}", run.show());
    assert!(blob_file(&site.images, &image.manifest_digest).is_file());
    assert!(site.images.join("tags").join(UPSTREAM).join("load/resolved").exists(), "{}", run.show());

    // Two images: one name cannot be both (Go's rule); nothing is loaded.
    let two = site.path("two");
    write_image(&two, &format!("{UPSTREAM}/load/a:v1"), ("linux", host_arch()), &layers(12));
    let other = write_image(&two, &format!("{UPSTREAM}/load/b:v1"), ("linux", host_arch()), &layers(13));
    let two_tar = site.path("two.tar");
    tar_dir(&two, &two_tar);
    let run = site.load(&["--image-file", &two_tar.display().to_string(), "--resolve-ref", &resolved]);
    assert_eq!(run.code, Some(1), "{}", run.show());
    assert!(run.stderr.contains("holds 2 images"), "{}", run.show());
    assert!(!blob_file(&site.images, &other.manifest_digest).exists());

    let run = site.load(&["--image-file", &one_tar.display().to_string(), "--resolve-ref", "resolved:v1"]);
    assert_eq!(run.code, Some(2), "not a full reference: {}", run.show());
    assert!(run.stderr.contains("--resolve-ref"), "{}", run.show());
}

#[test]
fn a_stale_admin_file_is_ignored_with_a_note_and_a_deaf_server_refuses_the_load_by_pid() {
    let site = Site::offline();
    let layout = site.path("one");
    let image = write_image(&layout, &format!("{UPSTREAM}/load/stale:v1"), ("linux", host_arch()), &layers(11));
    let tar = site.path("one.tar");
    tar_dir(&layout, &tar);
    let tar = tar.display().to_string();

    // A live process holds the lock and its admin API does not answer: refused, naming it.
    let deaf = common::DeafServer::hold(&site.images);
    let list = site.write_list("list.txt", &format!("{UPSTREAM}/load/stale:v1\n"));
    let run = site.load(&["--image-file", &list]);
    assert_eq!(run.code, Some(2), "{}", run.show());
    assert!(run.stderr.contains(&format!("pid {}", std::process::id())), "{}", run.show());
    assert!(run.stderr.contains("no running server could be reached"), "{}", run.show());
    assert!(!blob_file(&site.images, &image.manifest_digest).exists());
    drop(deaf);

    // The same .admin once its process no longer holds the lock (it died): a note, and the load runs.
    let run = site.load(&["--image-file", &tar]);
    assert_eq!(run.code, Some(0), "{}", run.show());
    assert!(run.stderr.contains("no longer holds the image path's lock"), "{}", run.show());
    assert!(blob_file(&site.images, &image.manifest_digest).is_file());
}

#[test]
fn a_docker_save_tarball_with_gzipped_layers_loads_under_the_compressed_digests() {
    use std::io::Write;
    let site = Site::offline();
    let dir = site.path("saved");
    std::fs::create_dir_all(dir.join("l1")).unwrap();
    std::fs::create_dir_all(dir.join("l2")).unwrap();
    // One gzipped layer, one plain, as some tools write a docker-archive.
    let plain = [common::random_bytes(90, 20_000), common::random_bytes(91, 10_000)];
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain[0]).unwrap();
    let gz = gz.finish().unwrap();
    std::fs::write(dir.join("l1/layer.tar"), &gz).unwrap();
    std::fs::write(dir.join("l2/layer.tar"), &plain[1]).unwrap();
    let write_save = |diff_id0: &str, name: &str| {
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id0}","{}"]}}}}"#,
            sha256_digest(&plain[1])
        );
        std::fs::write(dir.join("config.json"), &config).unwrap();
        let manifest = format!(
            r#"[{{"Config":"config.json","RepoTags":["{UPSTREAM}/load/{name}:v1"],"Layers":["l1/layer.tar","l2/layer.tar"]}}]"#
        );
        std::fs::write(dir.join("manifest.json"), manifest).unwrap();
        let tar = site.path(&format!("{name}.tar"));
        tar_dir(&dir, &tar);
        tar.display().to_string()
    };

    let good = write_save(&sha256_digest(&plain[0]), "gz");
    let run = site.load(&["--image-file", &good]);
    assert_eq!(run.code, Some(0), "{}", run.show());
    assert!(blob_file(&site.images, &sha256_digest(&gz)).is_file(), "stored under its compressed digest");
    assert!(blob_file(&site.images, &sha256_digest(&plain[1])).is_file());
    assert!(!blob_file(&site.images, &sha256_digest(&plain[0])).exists());
    let server = Server::start_in(&site.images, "registries: []\n", &["--air-gapped"]);
    let r = server.get(&format!("/v2/{UPSTREAM}/load/gz/manifests/v1"), &[("Accept", "*/*")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let manifest: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(manifest["layers"][0]["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip");
    assert_eq!(manifest["layers"][0]["digest"], sha256_digest(&gz));
    assert_eq!(manifest["layers"][1]["mediaType"], "application/vnd.docker.image.rootfs.diff.tar");
    let r = server.get(&format!("/v2/{UPSTREAM}/load/gz/blobs/{}", sha256_digest(&gz)), &[]);
    assert_eq!((r.status, r.body.len()), (200, gz.len()));
    drop(server);

    // A gzipped layer that does not decompress to its diff_ids entry is refused.
    let bad = write_save(&sha256_digest(b"something else"), "bad");
    let run = site.load(&["--image-file", &bad]);
    assert_eq!(run.code, Some(1), "{}", run.show());
    assert!(run.stderr.contains("decompresses to"), "{}", run.show());
}
