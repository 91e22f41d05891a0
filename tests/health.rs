//! Liveness and readiness on the health port (`--health PORT`, the `health` config key): liveness
//! answers 200 from the start; readiness is 503, naming the reason, while `--preload-images` is
//! still loading (held by the fake upstream's gate), 200 once the server listens, and 503 again
//! while a graceful stop finishes a response in progress. Both are answered on the health port
//! only, not on the registry's port.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::fake_upstream::{FakeUpstream, Fault, Gate};
use common::{free_port, http_request, plain_registry, random_bytes, wait_until, Server};

fn probe(port: u16, path: &str) -> Option<(u16, String)> {
    let r = http_request("GET", &format!("http://127.0.0.1:{port}{path}"), &[]).ok()?;
    Some((r.status, r.text()))
}

#[test]
fn readiness_waits_for_preloading_while_liveness_answers() {
    let up = FakeUpstream::start();
    let image = up.add_image("health/app", "v1", &[random_bytes(7, 64 * 1024)]);
    let gate = Gate::new();
    up.set_fault(&image.layer_digests[0], Fault::Gate(gate.clone()), None);
    let lists = tempfile::tempdir().unwrap();
    let list = lists.path().join("preload.txt");
    std::fs::write(&list, format!("{}/health/app:v1\n", up.host())).unwrap();
    let port = free_port();
    let args = ["--preload-images", list.to_str().unwrap(), "--health", &port.to_string()];
    let mut server = Server::spawn(&plain_registry(&up.host()), &args, &[]);

    let live = wait_until(Duration::from_secs(20), || probe(port, "/health").is_some_and(|(s, _)| s == 200));
    assert!(live, "no liveness on the health port:\n{}", server.log());
    assert!(wait_until(Duration::from_secs(20), || gate.held() > 0), "preloading never reached the layer");
    let (status, reason) = probe(port, "/ready").expect("readiness answers");
    assert_eq!((status, reason.trim()), (503, "preloading images"), "{}", server.log());
    assert_eq!(probe(port, "/health").map(|(s, _)| s), Some(200), "liveness while preloading");
    assert!(!server.log().contains(" listening "), "listened before preloading was done");

    gate.open();
    server.wait_started();
    let ready = wait_until(Duration::from_secs(10), || probe(port, "/ready").is_some_and(|(s, _)| s == 200));
    assert!(ready, "not ready after preloading: {:?}\n{}", probe(port, "/ready"), server.log());
    // The preloaded layer is served from the cache.
    let layer = server.get(&format!("/v2/{}/health/app/blobs/{}", up.host(), image.layer_digests[0]), &[]);
    assert_eq!(layer.status, 200);

    // The probes are on the health port only, and the health port answers nothing else.
    assert_eq!(server.get("/health", &[]).status, 404);
    assert_eq!(server.get("/ready", &[]).status, 404);
    assert_eq!(probe(port, "/v2/").map(|(s, _)| s), Some(404));
}

#[test]
fn the_go_health_key_opens_the_port_until_the_server_stops() {
    let port = free_port();
    let mut server = Server::start(&format!("health: {port}\n"), &[]);
    assert_eq!(probe(port, "/health"), Some((200, String::new())), "{}", server.log());
    // Clients that connect and say nothing (held 5 s by the server) delay no probe.
    let silent: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    let mut quick = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    quick.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    quick.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    let read = quick.read_to_string(&mut answer);
    assert!(read.is_ok() && answer.starts_with("HTTP/1.1 200 "), "a probe waited behind silent clients: {read:?}");
    drop(silent);
    assert_eq!(probe(port, "/ready"), Some((200, "ready\n".to_string())));
    let head = http_request("HEAD", &format!("http://127.0.0.1:{port}/healthz"), &[]).unwrap();
    assert_eq!(head.status, 200);
    assert!(server.stop().success());
    assert!(probe(port, "/health").is_none(), "the health port outlived the server");
}

#[test]
fn readiness_turns_503_while_a_graceful_stop_finishes_a_response() {
    let up = FakeUpstream::start();
    let image = up.add_image("health/slow", "v1", &[random_bytes(9, 256 * 1024)]);
    let gate = Gate::new();
    let layer = image.layer_digests[0].clone();
    up.set_fault(&layer, Fault::GateAfter(64 * 1024, gate.clone()), None);
    let port = free_port();
    let mut server = Server::start(&plain_registry(&up.host()), &["--health", &port.to_string()]);
    let url = server.url(&format!("/v2/{}/health/slow/blobs/{layer}", up.host()));
    let pull = std::thread::spawn(move || http_request("GET", &url, &[]).map(|r| (r.status, r.body.len())));
    assert!(wait_until(Duration::from_secs(20), || gate.held() > 0), "the download never started");
    assert_eq!(probe(port, "/ready").map(|(s, _)| s), Some(200));

    server.terminate();
    let draining = wait_until(Duration::from_secs(8), || {
        probe(port, "/ready").is_some_and(|(s, why)| s == 503 && why.trim() == "shutting down")
    });
    assert!(draining, "readiness while stopping: {:?}\n{}", probe(port, "/ready"), server.log());
    assert_eq!(probe(port, "/health").map(|(s, _)| s), Some(200), "liveness while stopping");
    gate.open();
    assert_eq!(pull.join().unwrap().unwrap(), (200, 256 * 1024), "the response in progress was not finished");
    assert!(server.wait_stopped().success(), "{}", server.log());
}
