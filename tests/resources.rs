//! Limits with clear answers: a connection past `maxConnections` is answered
//! 503 at once; file descriptors do not leak across repeated workloads; a
//! full disk fails the download that does not fit, cleanly (no partial file,
//! cached content still served), refuses early below `minFreeBytes`, and the
//! server recovers when space returns.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::fake_upstream::{sha256_digest, FakeUpstream, Fault};
use common::{http_request, plain_registry, random_bytes, wait_until, Server};

fn blob_path(up: &FakeUpstream, repo: &str, digest: &str) -> String {
    format!("/v2/{}/{repo}/blobs/{digest}", up.host())
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn connections_past_the_cap_are_answered_503_at_once() {
    let up = FakeUpstream::start();
    let config = format!("{}maxConnections: 4\n", plain_registry(&up.host()));
    let server = Server::start(&config, &["--threads", "1"]);
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&server.addr).unwrap()).collect();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let r = http_request("GET", &server.url("/v2/"), &[]);
            r.is_ok_and(|r| r.status == 503)
        }),
        "the fifth connection is refused\n{}",
        server.log()
    );
    let r = http_request("GET", &server.url("/v2/"), &[]).unwrap();
    assert_eq!((r.status, r.header("retry-after")), (503, Some("1")), "{}", r.text());
    assert!(r.text().contains("UNAVAILABLE"));
    drop(idle);
    assert!(
        wait_until(Duration::from_secs(10), || http_request("GET", &server.url("/v2/"), &[])
            .is_ok_and(|r| r.status == 200)),
        "served again once connections closed"
    );
}

/// A workload that opens and ends every kind of connection and file: cold and
/// warm pulls, ranges, a client that leaves mid-body, errors.
fn workload(server: &Server, up: &FakeUpstream, round: u64) {
    let layer = random_bytes(500 + round, 5 * 1024 * 1024);
    let image = up.add_image(&format!("fd/app{round}"), "v1", &[layer.clone(), random_bytes(600 + round, 3000)]);
    for _ in 0..2 {
        assert_eq!(server.get(&format!("/v2/{}/fd/app{round}/manifests/v1", up.host()), &[]).status, 200);
        for d in &image.layer_digests {
            let r = server.get(&blob_path(up, &format!("fd/app{round}"), d), &[]);
            assert_eq!(sha256_digest(&r.body), *d);
        }
    }
    let path = blob_path(up, &format!("fd/app{round}"), &image.layer_digests[0]);
    assert_eq!(server.get(&path, &[("Range", "bytes=10-20")]).status, 206);
    let mut s = TcpStream::connect(&server.addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let _ = s.read(&mut [0u8; 4096]);
    drop(s);
    assert_eq!(server.get(&format!("/v2/{}/fd/nothing/manifests/v1", up.host()), &[]).status, 404);
    assert_eq!(server.get(&format!("/v2/{}/x/blobs/sha256:bad", up.host()), &[]).status, 400);
}

#[test]
fn file_descriptors_do_not_leak() {
    let up = FakeUpstream::start();
    // sendfile: no mappings kept for 30 s to blur the count.
    let server = Server::start(&format!("{}blobSend: sendfile\n", plain_registry(&up.host())), &[]);
    workload(&server, &up, 0);
    std::thread::sleep(Duration::from_millis(500));
    let after_first = open_fds(server.pid());
    for round in 1..4 {
        workload(&server, &up, round);
    }
    // Connections and files of finished requests are closed (an upstream connection pool keeps a
    // few sockets): the count does not grow with the work.
    let settled = wait_until(Duration::from_secs(10), || open_fds(server.pid()) <= after_first + 4);
    assert!(settled, "{after_first} fds after one round, {} after four", open_fds(server.pid()));
}

/// A tmpfs of `mib` MiB mounted at `dir`, unmounted on drop; `None` where mounting is not allowed.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, mib: u64) {
        let ok = Command::new("mount").args(["-o", &format!("remount,size={mib}m")]).arg(&self.0).status().unwrap();
        assert!(ok.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_download_cleanly_and_the_server_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("disk"), 12) else {
        common::skipped(
            "a_full_disk_fails_the_download_cleanly_and_the_server_recovers",
            "cannot mount a tmpfs here (not root?)",
        );
        return;
    };
    let image_path = disk.0.join("images");
    let up = FakeUpstream::start();
    let config = format!("{}minFreeBytes: 1048576\n", plain_registry(&up.host()));
    let server = Server::start_in(&image_path, &config, &[]);
    let cached = random_bytes(1, 3 * 1024 * 1024);
    let cached_d = up.add_blob("disk", cached.clone());
    assert_eq!(server.get(&blob_path(&up, "disk", &cached_d), &[]).body, cached);
    assert!(wait_until(Duration::from_secs(5), || server.temp_files().is_empty()));

    // Announced too large for what is free above the floor: refused before anything is written.
    let huge_d = up.add_blob("disk", random_bytes(2, 20 * 1024 * 1024));
    let r = server.get(&blob_path(&up, "disk", &huge_d), &[]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("disk space"), "{}", r.text());
    // Size unknown (chunked): it runs into the full disk mid-way and fails without a trace.
    let big = random_bytes(3, 10 * 1024 * 1024);
    let big_d = up.add_blob("disk", big.clone());
    up.set_fault(&big_d, Fault::Chunked, None);
    let r = http_request("GET", &server.url(&blob_path(&up, "disk", &big_d)), &[]);
    assert!(
        r.as_ref().map_or(true, |r| r.status != 200 || r.body != big),
        "never a complete 200 of a blob that did not fit"
    );
    assert!(
        wait_until(Duration::from_secs(10), || server.temp_files().is_empty()),
        "no partial file: {:?}",
        server.temp_files()
    );
    for d in [&huge_d, &big_d] {
        assert!(!image_path.join("blobs/sha256").join(&d[7..9]).join(&d[7..]).exists(), "nothing committed for {d}");
    }
    // What is cached keeps being served.
    let r = server.get(&blob_path(&up, "disk", &cached_d), &[]);
    assert_eq!((r.status, r.body == cached), (200, true));

    // Space returns: the same blob now pulls and is committed.
    disk.resize(64);
    let r = server.get(&blob_path(&up, "disk", &big_d), &[]);
    assert_eq!((r.status, r.body == big), (200, true), "{}", server.log());
    assert!(server.log().contains("short of disk space"), "the failure named its cause:\n{}", server.log());
}
