//! `ociregistry verify [--repair]` on a real image path filled by the real
//! server from the fake upstream: damage made on disk by hand (a flipped bit,
//! a truncated file, a deleted file, a stray file) is reported, removed with
//! `--repair`, and fetched again by the next server on the next pull.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::fake_upstream::{sha256_digest, FakeImage, FakeUpstream};
use common::{plain_registry, random_bytes, Server};

struct Verified {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Verified {
    fn summary(&self) -> &str {
        self.stdout.lines().last().unwrap_or_default()
    }
}

/// Runs `ociregistry <global...> verify <args...>`.
fn verify(global: &[&str], args: &[&str]) -> Verified {
    let o = Command::new(env!("CARGO_BIN_EXE_ociregistry"))
        .args(global)
        .arg("verify")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run ociregistry verify");
    Verified {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn verify_at(images: &Path, args: &[&str]) -> Verified {
    verify(&["--image-path", images.to_str().unwrap()], args)
}

fn blob_file(images: &Path, digest: &str) -> PathBuf {
    images.join("blobs/sha256").join(&digest[7..9]).join(&digest[7..])
}

fn tag_file(images: &Path, up: &FakeUpstream, repo: &str, tag: &str) -> PathBuf {
    images.join("tags").join(up.host()).join(repo).join("_tags").join(tag)
}

/// Waits (bounded) until `digest` is journaled: commits are reported before their record lands.
fn wait_recorded(images: &Path, digest: &str) {
    let journal = images.join("index/records.jsonl");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&journal).unwrap_or_default().contains(&format!("\"digest\":\"{digest}\"")) {
        assert!(Instant::now() < deadline, "{digest} was not journaled within 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn manifest_path(up: &FakeUpstream, repo: &str, reference: &str) -> String {
    format!("/v2/{}/{repo}/manifests/{reference}", up.host())
}

fn blob_path(up: &FakeUpstream, repo: &str, digest: &str) -> String {
    format!("/v2/{}/{repo}/blobs/{digest}", up.host())
}

/// Pulls the manifest (by tag) and every layer of `img`, and waits until all are journaled.
fn pull(server: &Server, up: &FakeUpstream, repo: &str, img: &FakeImage, layers: &[Vec<u8>]) {
    let r = server.get(&manifest_path(up, repo, "v1"), &[]);
    assert_eq!((r.status, &r.body), (200, &img.manifest_bytes), "{}", r.text());
    for (digest, layer) in img.layer_digests.iter().zip(layers) {
        let r = server.get(&blob_path(up, repo, digest), &[]);
        assert!(r.status == 200 && r.body == *layer, "layer {digest}: {}", r.status);
    }
    for digest in img.layer_digests.iter().chain([&img.manifest_digest]) {
        wait_recorded(&server.image_path, digest);
    }
}

fn flip_a_bit(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x08;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_flipped_bit_is_found_removed_and_fetched_again_on_the_next_pull() {
    let up = FakeUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let config = plain_registry(&up.host());
    let layers = vec![random_bytes(1, 256 * 1024 + 3), random_bytes(2, 128 * 1024)];
    let img = up.add_image("team/app", "v1", &layers);
    let mut server = Server::start_in(&images, &config, &[]);
    pull(&server, &up, "team/app", &img, &layers);
    assert!(server.stop().success());

    let (bad, good) = (&img.layer_digests[0], &img.layer_digests[1]);
    flip_a_bit(&blob_file(&images, bad));
    let all_bytes = img.manifest_bytes.len() + layers[0].len() + layers[1].len();

    let v = verify_at(&images, &[]);
    assert_eq!(v.code, Some(1), "damage found, not repaired:\n{}{}", v.stdout, v.stderr);
    assert!(v.stdout.contains(&format!("corrupt {bad} (hashes to sha256:")), "{}", v.stdout);
    assert_eq!(
        v.summary(),
        format!("verified 3 objects ({all_bytes} bytes): 2 ok, 1 damaged, 0 missing, 0 orphan files; removed 0")
    );
    assert!(blob_file(&images, bad).exists(), "without --repair nothing is removed");

    let v = verify_at(&images, &["--repair"]);
    assert_eq!(v.code, Some(0), "all damage repaired:\n{}{}", v.stdout, v.stderr);
    assert!(v.stdout.contains(&format!("corrupt {bad}")), "{}", v.stdout);
    assert!(v.summary().ends_with("2 ok, 1 damaged, 0 missing, 0 orphan files; removed 1"), "{}", v.stdout);
    assert!(!blob_file(&images, bad).exists(), "the damaged file is gone");
    assert!(blob_file(&images, good).exists());

    let v = verify_at(&images, &[]);
    assert_eq!(v.code, Some(0), "{}{}", v.stdout, v.stderr);
    assert_eq!(
        v.stdout.trim(),
        format!(
            "verified 2 objects ({} bytes): 2 ok, 0 damaged, 0 missing, 0 orphan files; removed 0",
            all_bytes - layers[0].len()
        )
    );

    let server = Server::start_in(&images, &config, &[]);
    let r = server.get(&blob_path(&up, "team/app", bad), &[]);
    assert!(r.status == 200 && r.body == layers[0], "the removed layer comes back whole: {}", r.status);
    assert_ne!(r.header("x-cache"), Some("HIT"));
    assert_eq!(up.count("GET", bad), 2, "a miss: fetched a second time");
    let r = server.get(&blob_path(&up, "team/app", good), &[]);
    assert!(r.status == 200 && r.body == layers[1]);
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(up.count("GET", good), 1, "the intact layer was not fetched again");
    let r = server.get(&manifest_path(&up, "team/app", "v1"), &[]);
    assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
}

#[test]
fn truncated_missing_and_orphan_files_are_reported_and_repaired() {
    let up = FakeUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let layers = vec![random_bytes(3, 100_000), random_bytes(4, 90_000), random_bytes(5, 80_000)];
    let img = up.add_image("r", "v1", &layers);
    let mut server = Server::start_in(&images, &plain_registry(&up.host()), &[]);
    pull(&server, &up, "r", &img, &layers);
    assert!(server.stop().success());

    let (truncated, missing) = (&img.layer_digests[0], &img.layer_digests[1]);
    std::fs::OpenOptions::new().write(true).open(blob_file(&images, truncated)).unwrap().set_len(1000).unwrap();
    std::fs::remove_file(blob_file(&images, missing)).unwrap();
    // What a crash between a removal's journal line and its unlink leaves behind.
    let stray = sha256_digest(b"no record names me");
    let orphan = blob_file(&images, &stray);
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"no record names me").unwrap();
    // The image path comes from the config file's imagePath when no flag names one.
    let config = dir.path().join("verify.yaml");
    std::fs::write(&config, format!("{}imagePath: {}\n", plain_registry(&up.host()), images.display())).unwrap();
    let global = ["--config-file", config.to_str().unwrap()];
    let hashed = img.manifest_bytes.len() + layers[2].len();

    let v = verify(&global, &["--jobs", "2"]);
    assert_eq!(v.code, Some(1), "{}{}", v.stdout, v.stderr);
    for line in [
        format!("damaged {truncated} (size 1000, expected 100000)"),
        format!("missing {missing}"),
        format!("orphan blobs/sha256/{}/{} (18 bytes)", &stray[7..9], &stray[7..]),
    ] {
        assert!(v.stdout.lines().any(|l| l == line), "no line {line:?} in:\n{}", v.stdout);
    }
    assert_eq!(
        v.summary(),
        format!("verified 4 objects ({hashed} bytes): 2 ok, 1 damaged, 1 missing, 1 orphan files; removed 0")
    );

    let v = verify(&global, &["--repair", "--jobs", "1"]);
    assert_eq!(v.code, Some(0), "{}{}", v.stdout, v.stderr);
    assert_eq!(
        v.summary(),
        format!("verified 4 objects ({hashed} bytes): 2 ok, 1 damaged, 1 missing, 1 orphan files; removed 3")
    );
    assert!(!blob_file(&images, truncated).exists() && !orphan.exists());
    let journal = std::fs::read_to_string(images.join("index/records.jsonl")).unwrap();
    for digest in [truncated, missing] {
        let line = format!("{{\"digest\":\"{digest}\"");
        assert!(journal.lines().any(|l| l.starts_with(&line) && l.contains("\"removed\":true")), "{journal}");
    }

    let v = verify(&global, &[]);
    assert_eq!(v.code, Some(0), "{}{}", v.stdout, v.stderr);
    assert_eq!(v.stdout.lines().count(), 1, "no problem left:\n{}", v.stdout);
    assert!(v.summary().starts_with("verified 2 objects"), "{}", v.stdout);
}

#[test]
fn a_removed_manifest_takes_its_tag_and_the_next_pull_by_tag_fetches_it_again() {
    let up = FakeUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let config = plain_registry(&up.host());
    let img = up.add_image("a/b", "v1", &[random_bytes(6, 1000)]);
    let mut server = Server::start_in(&images, &config, &[]);
    let r = server.get(&manifest_path(&up, "a/b", "v1"), &[]);
    assert_eq!(r.status, 200);
    wait_recorded(&images, &img.manifest_digest);
    let tag = tag_file(&images, &up, "a/b", "v1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tag.exists() {
        assert!(Instant::now() < deadline, "the tag was not written");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(server.stop().success());
    flip_a_bit(&blob_file(&images, &img.manifest_digest));

    let v = verify_at(&images, &["--repair"]);
    assert_eq!(v.code, Some(0), "{}{}", v.stdout, v.stderr);
    assert!(v.stdout.contains(&format!("corrupt {}", img.manifest_digest)), "{}", v.stdout);
    assert!(v.stdout.contains(&format!("untagged {}/a/b:v1", up.host())), "{}", v.stdout);
    assert!(!tag.exists(), "the tag of a removed manifest is removed with it");

    let server = Server::start_in(&images, &config, &[]);
    let r = server.get(&manifest_path(&up, "a/b", "v1"), &[]);
    assert_eq!((r.status, &r.body), (200, &img.manifest_bytes));
    assert_eq!(r.header("x-cache"), Some("MISS"));
    assert_eq!(up.count("GET", "/manifests/v1"), 2, "fetched again by tag");
}

#[test]
fn verify_refuses_while_a_server_owns_the_image_path() {
    let up = FakeUpstream::start();
    let img = up.add_image("r", "v1", &[b"layer".to_vec()]);
    let server = Server::start(&plain_registry(&up.host()), &[]);
    assert_eq!(server.get(&manifest_path(&up, "r", "v1"), &[]).status, 200);

    let v = verify_at(&server.image_path, &["--repair"]);
    assert_eq!(v.code, Some(2), "{}{}", v.stdout, v.stderr);
    let lock = server.image_path.join(".lock");
    for needle in [format!("pid {}", server.pid()), format!("lock {}", lock.display()), "stop it".to_string()] {
        assert!(v.stderr.contains(&needle), "no {needle:?} in: {}", v.stderr);
    }
    assert!(v.stdout.is_empty(), "{}", v.stdout);

    let r = server.get(&manifest_path(&up, "r", "v1"), &[]);
    assert_eq!((r.status, &r.body, r.header("x-cache")), (200, &img.manifest_bytes, Some("HIT")));
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), server.pid().to_string(), "the lock is untouched");
}

#[test]
fn verify_is_documented_in_help() {
    let o = Command::new(env!("CARGO_BIN_EXE_ociregistry")).args(["verify", "--help"]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    for needle in ["--repair", "--jobs", "--image-path", "Exit status"] {
        assert!(out.contains(needle), "verify --help lacks {needle}:\n{out}");
    }
    let v = verify(&["--image-path", "/nonexistent/ociregistry"], &[]);
    assert_eq!(v.code, Some(2));
    assert!(v.stderr.contains("not an image path"), "{}", v.stderr);
}
