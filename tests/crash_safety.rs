//! Crashes lose nothing and serve nothing wrong: a `kill -9` in the middle of
//! many concurrent cold pulls leaves an image path from which every image
//! pulls correctly after a restart (the dead process's temp files gone, every
//! committed file matching its digest); and a second process on a live image
//! path is refused without touching the owner's downloads in progress.

mod common;

use std::time::Duration;

use common::fake_upstream::{sha256_digest, FakeImage, FakeUpstream, Fault};
use common::{http_request, plain_registry, random_bytes, wait_until, Server};

fn manifest_path(up: &FakeUpstream, repo: &str, reference: &str) -> String {
    format!("/v2/{}/{repo}/manifests/{reference}", up.host())
}

fn blob_path(up: &FakeUpstream, repo: &str, digest: &str) -> String {
    format!("/v2/{}/{repo}/blobs/{digest}", up.host())
}

/// Every blob of `image` that came back whole is the right one; returns how many did.
fn pull_checked(base: &str, up_host: &str, repo: &str, image: &FakeImage) -> usize {
    let mut whole = 0;
    let manifest = http_request("GET", &format!("{base}/v2/{up_host}/{repo}/manifests/v1"), &[]);
    if let Ok(r) = &manifest {
        if r.status == 200 {
            assert_eq!(r.body, image.manifest_bytes, "{repo}: a manifest served is the right one");
        }
    }
    for digest in image.layer_digests.iter().chain([&image.config_digest]) {
        if let Ok(r) = http_request("GET", &format!("{base}/v2/{up_host}/{repo}/blobs/{digest}"), &[]) {
            if r.status == 200 {
                assert_eq!(&sha256_digest(&r.body), digest, "{repo}: a blob served whole matches its digest");
                whole += 1;
            }
        }
    }
    whole
}

/// Every committed file under `blobs/` hashes to its own name.
fn committed_files_match_their_names(image_path: &std::path::Path) -> usize {
    let mut n = 0;
    for shard in std::fs::read_dir(image_path.join("blobs/sha256")).into_iter().flatten() {
        for file in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let file = file.unwrap();
            let name = file.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(file.path()).unwrap();
            assert_eq!(sha256_digest(&bytes), format!("sha256:{name}"), "committed file {name}");
            n += 1;
        }
    }
    n
}

#[test]
fn kill_9_during_concurrent_cold_pulls_then_restart_serves_every_image_correctly() {
    let up = FakeUpstream::start();
    let config = plain_registry(&up.host());
    let dir = tempfile::tempdir().unwrap();
    let image_path = dir.path().join("images");
    let images: Vec<(String, FakeImage)> = (0..4u64)
        .map(|i| {
            let repo = format!("team/app{i}");
            let layers = [random_bytes(100 + i, 1_500_000), random_bytes(200 + i, 700_000)];
            let image = up.add_image(&repo, "v1", &layers);
            for d in &image.layer_digests {
                up.set_fault(d, Fault::Slow { bytes_per_sec: 400_000 }, None);
            }
            (repo, image)
        })
        .collect();

    let mut server = Server::start_in(&image_path, &config, &[]);
    let base = format!("http://{}", server.addr);
    let pullers: Vec<_> = (0..20)
        .map(|i| {
            let (repo, image) = images[i % images.len()].clone();
            let (base, host) = (base.clone(), up.host());
            std::thread::spawn(move || pull_checked(&base, &host, &repo, &image))
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(20), || server.temp_files().len() >= 3),
        "downloads in flight: {:?}\n{}",
        server.temp_files(),
        server.log()
    );
    server.kill9();
    let left = std::fs::read_dir(image_path.join("tmp")).unwrap().count();
    assert!(left >= 3, "the crash left the downloads' temp files behind ({left})");
    for p in pullers {
        p.join().expect("nothing wrong was served before the crash");
    }
    committed_files_match_their_names(&image_path);

    up.clear_faults();
    let server = Server::start_in(&image_path, &config, &[]);
    assert!(server.log().contains("removed temp files of an earlier process"), "{}", server.log());
    for (repo, image) in &images {
        for round in 0..2 {
            let r = server.get(&manifest_path(&up, repo, "v1"), &[]);
            assert_eq!((r.status, &r.body), (200, &image.manifest_bytes), "{repo} round {round}: {}", r.text());
            for digest in image.layer_digests.iter().chain([&image.config_digest]) {
                let r = server.get(&blob_path(&up, repo, digest), &[]);
                assert_eq!((r.status, sha256_digest(&r.body)), (200, digest.clone()), "{repo} {digest}");
            }
        }
    }
    assert!(committed_files_match_their_names(&image_path) >= 12, "every image is committed");
}

#[test]
fn a_second_process_on_a_live_image_path_is_refused_and_leaves_the_owners_downloads_alone() {
    let up = FakeUpstream::start();
    let config = plain_registry(&up.host());
    let dir = tempfile::tempdir().unwrap();
    let image_path = dir.path().join("images");
    let layer = random_bytes(7, 2_000_000);
    let digest = up.add_blob("app", layer.clone());
    up.set_fault(&digest, Fault::Slow { bytes_per_sec: 500_000 }, None);
    let owner = Server::start_in(&image_path, &config, &[]);
    let url = owner.url(&blob_path(&up, "app", &digest));
    let pull = std::thread::spawn(move || http_request("GET", &url, &[]));
    assert!(wait_until(Duration::from_secs(10), || !owner.temp_files().is_empty()), "{}", owner.log());
    let in_flight = owner.temp_files();

    let newcomer = std::process::Command::new(env!("CARGO_BIN_EXE_ociregistry"))
        .arg("--image-path")
        .arg(&image_path)
        .args(["serve", "--host", "127.0.0.1", "--port", "0"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&newcomer.stderr);
    assert!(!newcomer.status.success(), "the newcomer must not start: {said}");
    assert!(
        said.contains("in use by another ociregistry process") && said.contains(&owner.pid().to_string()),
        "{said}"
    );
    let still = owner.temp_files();
    assert!(in_flight.iter().all(|f| still.contains(f)), "the owner's temp files stay: {in_flight:?} -> {still:?}");

    let r = pull.join().unwrap().expect("the owner's download completes");
    assert_eq!((r.status, r.body == layer), (200, true));
}
