//! A panic costs the request it happened in, never the server: with the
//! test-only fault hooks (`--features fault-injection`, see src/faults.rs) a
//! panic is injected on each plane (a serving thread, a manifest fetch inside
//! the store's tag lock, a blob download task), and every waiter of the failed
//! work gets an answer while other requests go on being served. A read that
//! waits on a slow disk (the `cold-read` delay hook) costs the request that
//! needs the bytes, never the other connections of its serving thread.

mod common;

use common::fake_upstream::FakeUpstream;
use std::time::{Duration, Instant};

use common::{concurrently, free_port, http_request, metric, plain_registry, random_bytes, wait_until, Server};

fn manifest_path(up: &FakeUpstream, repo: &str, reference: &str) -> String {
    format!("/v2/{}/{repo}/manifests/{reference}", up.host())
}

fn blob_path(up: &FakeUpstream, repo: &str, digest: &str) -> String {
    format!("/v2/{}/{repo}/blobs/{digest}", up.host())
}

fn start(up: &FakeUpstream, faults: &str) -> Server {
    Server::start_with_env(&plain_registry(&up.host()), &[], &[("OCIREGISTRY_FAULTS", faults)])
}

/// Everything this upstream holds for `repo:tag` pulls whole through `server`.
fn pulls(server: &Server, up: &FakeUpstream, repo: &str, tag: &str, layers: &[Vec<u8>]) {
    let r = server.get(&manifest_path(up, repo, tag), &[]);
    assert_eq!(r.status, 200, "{repo}:{tag}: {}\n{}", r.text(), server.log());
    for layer in layers {
        let digest = common::fake_upstream::sha256_digest(layer);
        let r = server.get(&blob_path(up, repo, &digest), &[]);
        assert_eq!((r.status, &r.body), (200, layer), "{repo} {digest}");
    }
}

#[test]
fn a_panic_on_a_serving_thread_closes_that_connection_only() {
    let up = FakeUpstream::start();
    let layers = vec![random_bytes(1, 70_000)];
    up.add_image("app", "v1", &layers);
    let server = start(&up, "serve=/boom/");
    for _ in 0..4 {
        let r = http_request("GET", &server.url(&manifest_path(&up, "boom/app", "v1")), &[]);
        assert!(r.is_err() || r.as_ref().unwrap().status == 0, "the panicking request gets no answer: {r:?}");
    }
    pulls(&server, &up, "app", "v1", &layers);
    assert!(server.log().contains("a request handler panicked"), "{}", server.log());
}

#[test]
fn a_panic_in_a_manifest_fetch_under_the_tag_lock_answers_every_waiter_and_poisons_nothing() {
    let up = FakeUpstream::start();
    let layers = vec![random_bytes(2, 50_000)];
    up.add_image("app", "poisoned", &layers);
    up.add_image("app", "v1", &layers);
    let server = start(&up, "manifest=poisoned");
    let path = manifest_path(&up, "app", "poisoned");
    let url = server.url(&path);
    // Twelve clients wait on the same fetch; each gets an answer (the client's read timeout bounds the wait).
    let statuses = concurrently(12, move |_| http_request("GET", &url, &[]).map(|r| r.status));
    for s in statuses {
        assert_eq!(s.as_ref().ok(), Some(&500), "{s:?}\n{}", server.log());
    }
    // The tag lock the panic happened under still works for every other tag, and for this one.
    pulls(&server, &up, "app", "v1", &layers);
    let r = server.get(&path, &[]);
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(server.log().contains("ended without an answer"), "{}", server.log());
}

#[test]
fn a_panic_in_a_download_task_fails_its_readers_and_the_next_request_starts_afresh() {
    let up = FakeUpstream::start();
    let poisoned = random_bytes(3, 300_000);
    let good = random_bytes(4, 300_000);
    up.add_image("app", "v1", &[poisoned.clone(), good.clone()]);
    let poisoned_digest = common::fake_upstream::sha256_digest(&poisoned);
    let server = start(&up, &format!("download={poisoned_digest}"));
    assert_eq!(server.get(&manifest_path(&up, "app", "v1"), &[]).status, 200);
    let url = server.url(&blob_path(&up, "app", &poisoned_digest));
    let outcomes = concurrently(6, move |_| http_request("GET", &url, &[]).map(|r| r.status));
    for o in &outcomes {
        assert!(matches!(o, Ok(500)), "every reader is answered with an error: {o:?}\n{}", server.log());
    }
    let r = server.get(&blob_path(&up, "app", &poisoned_digest), &[]);
    assert_eq!(r.status, 500, "a fresh download (which fails again): {}", r.text());
    assert!(server.log().matches("blob download task ended without an outcome").count() >= 2, "{}", server.log());
    pulls(&server, &up, "app", "v1", &[good]);
}

/// On the epoll driver a `sendfile` or a page fault of a mapping blocks the
/// whole serving thread while the disk works, so cold chunks are read in on a
/// blocking thread first (`serve::warm`). With one serving thread and every
/// read of one blob slowed to two seconds, `/v2/` keeps answering at once on
/// other connections while that blob goes out, and the blob arrives whole.
#[test]
fn a_slow_cold_read_on_the_epoll_driver_never_stalls_its_serving_thread() {
    for blob_send in ["sendfile", "mmap"] {
        let up = FakeUpstream::start();
        let layer = random_bytes(5, 12 << 20);
        up.add_image("app", "v1", std::slice::from_ref(&layer));
        let digest = common::fake_upstream::sha256_digest(&layer);
        let hex = digest.trim_start_matches("sha256:").to_string();
        let port = free_port().to_string();
        let config = format!("{}blobSend: {blob_send}\n", plain_registry(&up.host()));
        let server = Server::start_with_env(
            &config,
            &["--io-driver", "epoll", "--threads", "1", "--metrics", &port],
            &[("OCIREGISTRY_FAULTS", &format!("cold-read={hex}"))],
        );
        let path = blob_path(&up, "app", &digest);
        assert_eq!(server.get(&manifest_path(&up, "app", "v1"), &[]).status, 200);
        assert_eq!(server.get(&path, &[]).status, 200, "the first pull streams the download");
        let committed =
            wait_until(Duration::from_secs(10), || server.head(&path, &[]).header("x-cache") == Some("HIT"));
        assert!(committed, "{}", server.log());

        let url = server.url(&path);
        let pull = std::thread::spawn(move || {
            let started = Instant::now();
            (http_request("GET", &url, &[]), started.elapsed())
        });
        let metrics = format!("http://127.0.0.1:{port}/metrics");
        let cold = || {
            let page = http_request("GET", &metrics, &[]).unwrap().text();
            metric(&page, "ociregistry_cold_reads_total") >= 1
        };
        assert!(wait_until(Duration::from_secs(10), cold), "the slowed read began: {}", server.log());
        // Probe the serving thread while the blob's first chunk is being read in.
        let mut slowest = Duration::ZERO;
        for _ in 0..10 {
            let started = Instant::now();
            let r = server.get("/v2/", &[]);
            assert_eq!(r.status, 200);
            slowest = slowest.max(started.elapsed());
            std::thread::sleep(Duration::from_millis(50));
        }
        let (pulled, took) = pull.join().unwrap();
        let pulled = pulled.unwrap();
        assert_eq!(pulled.header("x-cache"), Some("HIT"), "{blob_send}");
        assert!(pulled.body == layer, "{blob_send}: the blob arrives whole and exact");
        // The ordering that makes the probes meaningful: they ran while the read was slowed.
        assert!(took >= Duration::from_secs(2), "{blob_send}: the read was slowed ({took:?})");
        assert!(
            slowest < Duration::from_secs(1),
            "{blob_send}: the serving thread answered /v2/ within {slowest:?} while the cold read waited"
        );
    }
}
