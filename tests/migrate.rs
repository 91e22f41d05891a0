//! Switching from the Go ociregistry on an existing image path: the test
//! writes a cache exactly as the Go version lays it out (img/, lts/,
//! blobs/<hex>, imgpull's ManifestHolder JSON), then the real binary, started
//! `--air-gapped` on it, imports it at startup and serves every good image to
//! a plain HTTP client and to containerd's `ctr`; a corrupt blob and a manifest
//! whose bytes do not match their digest are refused, named in WARN lines, and
//! never served. A second start imports nothing; `list` shows the images (the
//! one missing its corrupt layer as incomplete); `migrate --dry-run` changes nothing.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use common::containerd::{write_hosts_dir, Containerd, PullOpts};
use common::images::{
    self, blob_path, host_arch, other_arch, sha256_digest, write_image_as, write_index, Format, ImageInfo, LayerSpec,
    DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST,
};
use common::Server;
use serde_json::{json, Value};

const REGISTRY: &str = "go.registry.test";
const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// A Go ociregistry image path, written as the Go version writes it:
/// - manifests: aceeric/ociregistry `impl/serialize/serialize.go` `MhToFilesystem` writes
///   `json.Marshal(mh)` to `<lts|img>/<mh.Digest>` (`globals.LtsPath`/`ImgPath`), `lts` when
///   `mh.IsLatest()` (the imageUrl's tag is `latest`);
/// - `mh` is aceeric/imgpull `pkg/imgpull/manifest_holder.go` `ManifestHolder`: `type` is its
///   `ManifestType` (iota: 0 Docker list, 1 Docker manifest, 2 OCI index, 3 OCI manifest),
///   `digest` the bare hex (`util.DigestFrom`), `imageUrl` `ImageRef.Url()` or
///   `UrlWithDigest(d)` (platform manifests of an index), `bytes` the upstream's bytes
///   (`[]byte`, so standard base64), the manifest decoded into the field of its type (the other
///   three zero-valued), `created`/`pulled` in `globals.DateFormat` (`2006-01-02T15:04:05`);
/// - blobs: imgpull's `PullBlobs` writes each config and layer to `blobs/<hex>`.
///
/// Go releases 1.6.0 to 1.8.3 (`impl/serialize/serialize.go` at tag 1.8.3) wrote the same files to
/// `subDirs[mh.IsImageManifest()]`: `img` for image manifests, `fat` for lists and indexes.
struct GoCache {
    root: PathBuf,
    /// Lay manifests out as Go 1.6.0 to 1.8.3 did.
    fat: bool,
}

impl GoCache {
    fn new(root: &Path) -> GoCache {
        for dir in ["img", "lts", "blobs"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        GoCache { root: root.to_path_buf(), fat: false }
    }

    fn new_1_8(root: &Path) -> GoCache {
        for dir in ["img", "fat", "blobs"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        GoCache { root: root.to_path_buf(), fat: true }
    }

    /// Writes a manifest file for `bytes`, pulled as `image_url`; returns its digest.
    fn manifest(&self, image_url: &str, media_type: &str, bytes: &[u8]) -> String {
        let hex = hex_of(bytes);
        self.manifest_named(&hex, image_url, media_type, bytes);
        format!("sha256:{hex}")
    }

    fn manifest_named(&self, hex: &str, image_url: &str, media_type: &str, bytes: &[u8]) {
        let kind = match media_type {
            images::DOCKER_MANIFEST_LIST => 0,
            DOCKER_MANIFEST => 1,
            OCI_INDEX => 2,
            OCI_MANIFEST => 3,
            other => panic!("imgpull has no ManifestType for {other}"),
        };
        let decoded: Value = serde_json::from_slice(bytes).unwrap();
        let mut typed = [
            json!({"schemaVersion": 0, "mediaType": "", "manifests": null}),
            json!({"schemaVersion": 0, "config": {}, "layers": null}),
            json!({"schemaVersion": 0, "manifests": null}),
            json!({"schemaVersion": 0, "config": {"mediaType": "", "digest": "", "size": 0}, "layers": null}),
        ];
        typed[kind] = decoded;
        let [docker_list, docker_manifest, oci_index, oci_manifest] = typed;
        let holder = json!({
            "type": kind,
            "digest": hex,
            "imageUrl": image_url,
            "bytes": base64::engine::general_purpose::STANDARD.encode(bytes),
            "v1.oci.index": oci_index,
            "v1.oci.manifest": oci_manifest,
            "v2.docker.manifestList": docker_list,
            "v2.docker.manifest": docker_manifest,
            "created": "2025-02-28T12:59:59",
            "pulled": "2025-03-01T08:30:00",
        });
        let latest = image_url.rsplit_once(':').is_some_and(|(_, tag)| tag.eq_ignore_ascii_case("latest"));
        let dir = match (self.fat, latest) {
            (true, _) if kind == 0 || kind == 2 => "fat",
            (true, _) => "img",
            (false, true) => "lts",
            (false, false) => "img",
        };
        std::fs::write(self.root.join(dir).join(hex), serde_json::to_vec(&holder).unwrap()).unwrap();
    }

    fn blob(&self, bytes: &[u8]) {
        std::fs::write(self.root.join("blobs").join(hex_of(bytes)), bytes).unwrap();
    }
}

fn hex_of(bytes: &[u8]) -> String {
    sha256_digest(bytes).trim_start_matches("sha256:").to_string()
}

/// What a client should get: (manifest path, bytes, media type) and (blob path, bytes).
#[derive(Default)]
struct Expected {
    manifests: Vec<(String, Vec<u8>, String)>,
    blobs: Vec<(String, Vec<u8>)>,
    /// Paths that must answer 404: the refused manifest and the corrupt blob.
    absent: Vec<String>,
    /// Go file names of the refused manifest and blob.
    refused: Vec<String>,
}

/// The blobs of an image, as the layout holds them.
fn image_blobs(layout: &Path, image: &ImageInfo) -> Vec<(String, Vec<u8>)> {
    std::iter::once(image.config_digest.clone())
        .chain(image.layers.iter().map(|(d, _)| d.clone()))
        .map(|d| {
            let bytes = std::fs::read(blob_path(layout, &d)).unwrap();
            (d, bytes)
        })
        .collect()
}

/// Writes the Go cache: an index (two platforms) by tag with its platform manifests by
/// digest, a single Docker manifest by the tag latest (in lts/, named as Go names Docker
/// Hub images), an image whose layer file is corrupt, a manifest file whose bytes do not
/// match its digest, and a stray file.
fn write_go_cache(root: &Path, layout: &Path) -> Expected {
    let go = GoCache::new(root);
    let mut want = Expected::default();
    let repo = format!("{REGISTRY}/team/app");
    let layers = vec![vec![LayerSpec::text("host.txt", "for this host\n")], vec![LayerSpec::text("o.txt", "other\n")]];
    let index = write_index(layout, "app", &[("linux", host_arch()), ("linux", other_arch())], &layers);
    let d = go.manifest(&format!("{repo}:v1"), OCI_INDEX, &index.index_bytes);
    want.manifests.push((format!("/v2/{repo}/manifests/v1"), index.index_bytes.clone(), OCI_INDEX.into()));
    want.manifests.push((format!("/v2/{repo}/manifests/{d}"), index.index_bytes.clone(), OCI_INDEX.into()));
    for m in &index.manifests {
        let d = go.manifest(&format!("{repo}@{}", m.manifest_digest), OCI_MANIFEST, &m.manifest_bytes);
        want.manifests.push((format!("/v2/{repo}/manifests/{d}"), m.manifest_bytes.clone(), OCI_MANIFEST.into()));
        for (digest, bytes) in image_blobs(layout, m) {
            go.blob(&bytes);
            want.blobs.push((format!("/v2/{repo}/blobs/{digest}"), bytes));
        }
    }

    let single =
        write_image_as(Format::Docker, layout, "single", ("linux", host_arch()), &[LayerSpec::text("s", "1\n")]);
    go.manifest("docker.io/busybox:latest", DOCKER_MANIFEST, &single.manifest_bytes);
    let path = "/v2/docker.io/library/busybox/manifests/latest".to_string();
    want.manifests.push((path, single.manifest_bytes.clone(), DOCKER_MANIFEST.into()));
    for (digest, bytes) in image_blobs(layout, &single) {
        go.blob(&bytes);
        want.blobs.push((format!("/v2/docker.io/library/busybox/blobs/{digest}"), bytes));
    }

    let broken_repo = format!("{REGISTRY}/team/broken");
    let broken = write_image_as(Format::Oci, layout, "broken", ("linux", host_arch()), &[LayerSpec::text("b", "b\n")]);
    go.manifest(&format!("{broken_repo}:v2"), OCI_MANIFEST, &broken.manifest_bytes);
    let path = format!("/v2/{broken_repo}/manifests/v2");
    want.manifests.push((path, broken.manifest_bytes.clone(), OCI_MANIFEST.into()));
    let [(config, config_bytes), (layer, _)] = <[_; 2]>::try_from(image_blobs(layout, &broken)).unwrap();
    go.blob(&config_bytes);
    want.blobs.push((format!("/v2/{broken_repo}/blobs/{config}"), config_bytes));
    let layer_hex = layer.trim_start_matches("sha256:").to_string();
    std::fs::write(root.join("blobs").join(&layer_hex), b"bit rot").unwrap();
    want.absent.push(format!("/v2/{broken_repo}/blobs/{layer}"));
    want.refused.push(layer_hex);

    let bad_bytes = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#;
    let claimed = hex_of(b"what the file claims to be");
    go.manifest_named(&claimed, &format!("{REGISTRY}/team/bad:v1"), OCI_MANIFEST, bad_bytes);
    want.absent.push(format!("/v2/{REGISTRY}/team/bad/manifests/v1"));
    want.absent.push(format!("/v2/{REGISTRY}/team/bad/manifests/sha256:{claimed}"));
    want.refused.push(claimed);

    std::fs::write(root.join("img").join("notes.txt"), b"left by an operator").unwrap();
    std::fs::write(root.join("blobs").join("evil\x1b[2J\nWARN forged"), b"?").unwrap();
    want
}

/// Every file under `root` with its content.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn ociregistry(images: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    ociregistry_with(images, args, &[])
}

fn ociregistry_with(images: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ociregistry"))
        .arg("--image-path")
        .arg(images)
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .expect("run ociregistry");
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn assert_serves(server: &Server, want: &Expected) {
    for (path, bytes, media_type) in &want.manifests {
        let r = server.get(path, &[("Accept", ACCEPT_ALL)]);
        assert_eq!(r.status, 200, "{path}: {}\n{}", r.text(), server.log());
        assert_eq!(&r.body, bytes, "{path}");
        assert_eq!(r.header("content-type"), Some(media_type.as_str()), "{path}");
        assert_eq!(r.header("docker-content-digest"), Some(sha256_digest(bytes).as_str()), "{path}");
    }
    for (path, bytes) in &want.blobs {
        let r = server.get(path, &[]);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(&r.body, bytes, "{path}");
    }
    for path in &want.absent {
        let r = server.get(path, &[("Accept", ACCEPT_ALL)]);
        assert_eq!(r.status, 404, "{path} was refused at import, yet: {}", r.text());
    }
}

#[test]
fn a_go_cache_is_imported_at_startup_and_served_air_gapped() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let want = write_go_cache(&images, &dir.path().join("layout"));

    let before = snapshot(&images);
    let (code, stdout, stderr) = ociregistry(&images, &["migrate", "--dry-run"]);
    assert_eq!(code, Some(1), "refusals make the exit status 1: {stdout}{stderr}");
    assert!(
        stdout.contains(
            "would import: 5 manifests, 7 blobs imported, 2 refused, 1 incomplete, 2 unknown entries, 0 blobs already cached"
        ),
        "{stdout}{stderr}"
    );
    assert_eq!(snapshot(&images), before, "--dry-run changed the image path");
    assert!(!images.join("index").exists() && !images.join(".lock").exists());
    let (code, stdout, stderr) = ociregistry(&images, &["list"]);
    assert_eq!((code, stdout.as_str()), (Some(0), ""), "{stderr}");
    assert!(stderr.contains("holds a Go ociregistry cache not imported yet"), "{stderr}");
    assert_eq!(snapshot(&images), before, "list changed the image path");

    let mut server = Server::start_in(&images, "", &["--air-gapped"]);
    let log = server.log();
    let summary = log.lines().find(|l| l.contains("Go cache imported")).unwrap_or_else(|| panic!("{log}"));
    for field in ["manifests=5", "blobs=7", "refused=2", "incomplete=1", "unknown=2"] {
        assert!(summary.contains(field), "{field} in {summary}");
    }
    for name in &want.refused {
        assert!(log.lines().any(|l| l.contains(" WARN ") && l.contains(name.as_str())), "no WARN naming {name}: {log}");
    }
    assert!(log.lines().any(|l| l.contains(" WARN ") && l.contains("img/notes.txt")), "{log}");
    // A hostile file name reaches the log made printable, on its own line.
    assert!(log.contains("file=blobs/evil??2J?WARN?forged"), "{log}");
    assert!(!log.contains("evil\x1b") && !log.lines().any(|l| l.starts_with("WARN forged")), "{log}");
    assert!(!images.join("img").exists() && !images.join("lts").exists());
    assert!(std::fs::read_dir(images.join("blobs")).unwrap().all(|e| e.unwrap().path().is_dir()));
    assert_serves(&server, &want);

    // containerd pulls the index's host platform through the mirror, as a node would.
    let ctrd = Containerd::start();
    let hosts = write_hosts_dir(&dir.path().join("hosts"), REGISTRY, &format!("http://{}", server.addr));
    let reference = format!("{REGISTRY}/team/app:v1");
    if let Err(e) = ctrd.pull("migrated", &reference, &hosts, &PullOpts::default()) {
        panic!("ctr pull {reference}: {e}\n{}\n{}", server.log(), ctrd.log());
    }

    let (code, stdout, stderr) = ociregistry(&images, &["list", "--output", "json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let rows: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    let row = |reference: &str| {
        rows.iter()
            .find(|r| r["reference"] == reference)
            .unwrap_or_else(|| panic!("no {reference} in {stdout}"))
            .clone()
    };
    assert_eq!(rows.len(), 3, "{stdout}");
    let app = row(&format!("{REGISTRY}/team/app:v1"));
    assert_eq!(
        (app["type"].as_str(), app["complete"].as_bool(), app["platforms"].as_u64()),
        (Some("list"), Some(true), Some(2))
    );
    // Go's created time (2025-02-28T12:59:59 local, whatever the zone) is kept, not the import's.
    let created = app["created"].as_u64().unwrap();
    assert!((1_740_690_000..1_740_800_000).contains(&created), "created {created}: {stdout}");
    assert_eq!(row("docker.io/library/busybox:latest")["complete"], true);
    let broken = row(&format!("{REGISTRY}/team/broken:v2"));
    assert_eq!((broken["complete"].as_bool(), broken["missingBlobs"].as_u64()), (Some(false), Some(1)), "{stdout}");

    server.stop();
    let journal = std::fs::read(images.join("index/records.jsonl")).unwrap();
    let server = Server::start_in(&images, "", &["--air-gapped"]);
    assert!(!server.log().contains("Go ociregistry cache"), "a second start imported again: {}", server.log());
    assert_eq!(std::fs::read(images.join("index/records.jsonl")).unwrap(), journal);
    assert_serves(&server, &want);
    let (code, stdout, _) = ociregistry(&images, &["migrate", "--dry-run"]);
    assert_eq!(
        (code, stdout.trim()),
        (Some(0), format!("nothing to migrate: {} holds no Go ociregistry cache", images.display()).as_str())
    );
}

/// (digest, source) of every line of the records journal.
fn journal_lines(images: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(images.join("index/records.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["digest"].as_str().unwrap().to_string(), v["source"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

#[test]
fn an_import_interrupted_twice_finishes_on_the_next_start_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let want = write_go_cache(&images, &dir.path().join("layout"));
    let index_hex = std::fs::read_dir(images.join("img"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|name| std::fs::read_to_string(images.join("img").join(name)).unwrap().contains("\"type\":2"))
        .unwrap();
    // The third blob (in name order) crashes between its rename into the store and its journal line.
    let mut go_blobs: Vec<String> = want.blobs.iter().map(|(_, b)| hex_of(b)).collect();
    go_blobs.sort();
    go_blobs.dedup();
    for fault in [format!("migrate=blobs/{}", go_blobs[2]), format!("migrate=img/{index_hex}")] {
        let (code, stdout, stderr) = ociregistry_with(&images, &["migrate"], &[("OCIREGISTRY_FAULTS", &fault)]);
        assert_eq!(code, Some(101), "{fault} did not crash the import: {stdout}{stderr}");
        assert!(stderr.contains("injected fault at migrate"), "{stderr}");
    }
    assert!(images.join("img").join(&index_hex).is_file(), "the index was committed, not yet moved aside");

    let server = Server::start_in(&images, "", &["--air-gapped"]);
    let log = server.log();
    let summary = log.lines().find(|l| l.contains("Go cache imported")).unwrap_or_else(|| panic!("{log}"));
    assert!(summary.contains("refused=2"), "the refused files are set aside at the end: {summary}");
    assert_serves(&server, &want);
    assert!(!images.join("img").exists() && !images.join("lts").exists(), "{log}");
    let lines = journal_lines(&images);
    let mut unique = lines.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(lines.len(), unique.len(), "a digest journaled twice for one source: {lines:?}");
    for (_, bytes) in &want.blobs {
        let digest = sha256_digest(bytes);
        assert!(lines.iter().any(|(d, _)| *d == digest), "{digest} never journaled: {lines:?}");
    }
}

#[test]
fn a_cache_of_go_1_8_with_fat_and_img_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let layout = dir.path().join("layout");
    let go = GoCache::new_1_8(&images);
    let repo = format!("{REGISTRY}/old/app");
    let layers = vec![vec![LayerSpec::text("a", "a\n")]];
    let index = write_index(&layout, "old", &[("linux", host_arch())], &layers);
    go.manifest(&format!("{repo}:latest"), OCI_INDEX, &index.index_bytes);
    let m = &index.manifests[0];
    go.manifest(&format!("{repo}@{}", m.manifest_digest), OCI_MANIFEST, &m.manifest_bytes);
    let blobs = image_blobs(&layout, m);
    for (_, bytes) in &blobs {
        go.blob(bytes);
    }
    assert!(images.join("fat").read_dir().unwrap().count() == 1, "the index is in fat/");
    let server = Server::start_in(&images, "", &["--air-gapped"]);
    let want = Expected {
        manifests: vec![
            (format!("/v2/{repo}/manifests/latest"), index.index_bytes.clone(), OCI_INDEX.into()),
            (format!("/v2/{repo}/manifests/{}", m.manifest_digest), m.manifest_bytes.clone(), OCI_MANIFEST.into()),
        ],
        blobs: blobs.into_iter().map(|(d, b)| (format!("/v2/{repo}/blobs/{d}"), b)).collect(),
        ..Expected::default()
    };
    assert_serves(&server, &want);
    assert!(server.log().contains("manifests=2 blobs=2 refused=0"), "{}", server.log());
    assert!(!images.join("fat").exists() && images.join("go-migrated/fat").is_dir());
}
