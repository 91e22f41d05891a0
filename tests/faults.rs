//! A panic costs the request it happened in, never the server: with the
//! test-only fault hooks (`--features fault-injection`, see src/faults.rs) a
//! panic is injected on each plane (a serving thread, a manifest fetch inside
//! the store's tag lock, a blob download task), and every waiter of the failed
//! work gets an answer while other requests go on being served.

mod common;

use common::fake_upstream::FakeUpstream;
use common::{concurrently, http_request, plain_registry, random_bytes, Server};

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
