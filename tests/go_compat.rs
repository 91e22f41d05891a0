//! Compatibility with the Go ociregistry's configuration and small endpoints,
//! against the in-process fake upstream: Go's `auth.token.static` (sent as
//! Go sends it), `passwordFile`, SIGHUP reload of `registries`, the
//! `X-Registry` header, `GET /v2/auth` and `GET /`.

mod common;

use common::fake_upstream::{basic_auth, Auth, FakeUpstream, Options, OCI_MANIFEST};
use common::Server;

fn basic_upstream(user: &str, pass: &str) -> FakeUpstream {
    let up = FakeUpstream::start_with(Options {
        auth: Auth::Basic { user: user.into(), pass: pass.into() },
        ..Options::default()
    });
    up.add_image("team/app", "v1", &[b"layer".to_vec()]);
    up
}

#[test]
fn a_go_static_token_is_sent_on_every_request_as_go_sends_it() {
    let up = basic_upstream("robot", "s3cret");
    // Go sends `token.static` as `Authorization: Basic <static>` (an encoded credential, as ECR issues).
    let token = basic_auth("robot", "s3cret").strip_prefix("Basic ").unwrap().to_string();
    let config = format!(
        "prefetch: false\nregistries:\n  - name: \"{}\"\n    scheme: http\n    auth:\n      token:\n        static: {token}\n",
        up.host()
    );
    let server = Server::start(&config, &[]);
    let r = server.get(&format!("/v2/{}/team/app/manifests/v1", up.host()), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let presented: Vec<_> = up.requests().iter().map(|q| q.header("authorization").map(str::to_string)).collect();
    assert!(!presented.is_empty());
    assert!(
        presented.iter().all(|a| a.as_deref() == Some(&*format!("Basic {token}"))),
        "every request carries the static token, none goes without: {presented:?}"
    );
}

#[test]
fn a_password_file_is_read_at_startup() {
    let up = basic_upstream("robot", "from-a-secret");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("password");
    std::fs::write(&secret, "from-a-secret\n").unwrap();
    let config = format!(
        "prefetch: false\nregistries:\n  - name: \"{}\"\n    scheme: http\n    auth: {{user: robot, password: wrong, passwordFile: {}}}\n",
        up.host(),
        secret.display()
    );
    let server = Server::start(&config, &[]);
    let r = server.get(&format!("/v2/{}/team/app/manifests/v1", up.host()), &[]);
    assert_eq!(r.status, 200, "passwordFile wins over password: {}", r.text());
}

fn wait_for_log(server: &Server, needle: &str, times: usize) -> bool {
    common::wait_until(std::time::Duration::from_secs(10), || server.log().matches(needle).count() >= times)
}

#[test]
fn sighup_reloads_the_registries_and_keeps_them_when_the_file_is_invalid() {
    let up = basic_upstream("robot", "right");
    let config = |password: &str| {
        format!(
            "prefetch: false\nregistries:\n  - name: \"{}\"\n    scheme: http\n    auth: {{user: robot, password: {password}}}\n",
            up.host()
        )
    };
    let server = Server::start(&config("wrong"), &[]);
    let path = format!("/v2/{}/team/app/manifests/v1", up.host());
    let r = server.get(&path, &[]);
    assert_ne!(r.status, 200, "the wrong password: {}", r.text());

    std::fs::write(&server.config, config("right")).unwrap();
    server.signal(libc::SIGHUP);
    assert!(wait_for_log(&server, "SIGHUP: reloaded", 1), "{}", server.log());
    let r = server.get(&path, &[]);
    assert_eq!(r.status, 200, "the right password after SIGHUP: {}\n{}", r.text(), server.log());

    // An invalid file changes nothing: the registry keeps its password.
    std::fs::write(&server.config, config("wrong").replace("scheme", "shceme")).unwrap();
    server.signal(libc::SIGHUP);
    assert!(wait_for_log(&server, "the running configuration is kept", 1), "{}", server.log());
    assert!(server.log().contains("ERROR"), "{}", server.log());
    up.add_image("team/app", "v2", &[b"two".to_vec()]);
    let r = server.get(&format!("/v2/{}/team/app/manifests/v2", up.host()), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn x_registry_names_the_upstream_first_and_is_validated_strictly() {
    let up = basic_upstream("robot", "pw");
    let host = up.host();
    let config = format!(
        "prefetch: false\nregistries:\n  - name: \"{host}\"\n    scheme: http\n    auth: {{user: robot, password: pw}}\n"
    );
    let server = Server::start(&config, &[]);
    let path = "/v2/team/app/manifests/v1";
    assert_eq!(server.get(path, &[]).status, 404, "no upstream named");
    let r = server.get(path, &[("X-Registry", &host)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = server.get(&format!("{path}?ns=elsewhere.invalid"), &[("X-Registry", &host)]);
    assert_eq!(r.status, 200, "the header beats ?ns=: {}", r.text());
    let r = server.get(
        "/v2/team/app/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
        &[("X-Registry", &host)],
    );
    assert_eq!(r.status, 404, "blobs too: {}", r.text());

    up.clear_log();
    let long = format!("{}.example", "a".repeat(300));
    for bad in [
        format!("{host}/team"),
        format!("user@{host}"),
        format!("http://{host}"),
        format!("{host}?x=1"),
        "a b".to_string(),
        long,
    ] {
        let r = server.get(path, &[("X-Registry", &bad)]);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.text().contains("NAME_INVALID") && r.text().contains("X-Registry"), "{bad}: {}", r.text());
    }
    let r = server.get(path, &[("X-Registry", &host), ("X-Registry", &host)]);
    assert_eq!(r.status, 400, "twice: {}", r.text());
    assert_eq!(up.requests().len(), 0, "nothing invalid reached the upstream");
    assert_eq!(server.get("/v2/", &[("X-Registry", "not a host")]).status, 200, "/v2/ ignores it, as Go");
}

/// Two upstreams named by `X-Registry` hold different images under the same
/// repository and tag: each request gets its own upstream's manifest, as a
/// miss, as a hit, and from the serving thread's kept answers (one thread,
/// one keep-alive connection, so the repeats meet the kept answers).
#[test]
fn x_registry_upstreams_never_share_an_answer_cached_or_not() {
    use std::io::{Read, Write};
    let (a, b) = (FakeUpstream::start(), FakeUpstream::start());
    let image_a = a.add_image("team/app", "v1", &[b"from a".to_vec()]);
    let image_b = b.add_image("team/app", "v1", &[b"from b".to_vec()]);
    assert_ne!(image_a.manifest_bytes, image_b.manifest_bytes);
    let config = format!(
        "prefetch: false\nregistries:\n  - name: \"{}\"\n    scheme: http\n  - name: \"{}\"\n    scheme: http\n",
        a.host(),
        b.host()
    );
    let port = common::free_port().to_string();
    let server = Server::start(&config, &["--threads", "1", "--metrics", &port]);

    // Each round asks A, B, and A again with `?ns=` naming B (the header wins).
    let path = "/v2/team/app/manifests/v1";
    let asks = [(a.host(), ""), (b.host(), ""), (a.host(), "?ns=")];
    let rounds = 4;
    let mut wire = String::new();
    for _ in 0..rounds {
        for (host, ns) in &asks {
            let query = if ns.is_empty() { String::new() } else { format!("{ns}{}", b.host()) };
            wire += &format!(
                "GET {path}{query} HTTP/1.1\r\nHost: x\r\nAccept: {OCI_MANIFEST}\r\nX-Registry: {host}\r\n\r\n"
            );
        }
    }
    wire += "GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    s.write_all(wire.as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let responses = common::split_responses(&all, &vec![false; rounds * asks.len() + 1]);

    let wanted = [&image_a, &image_b, &image_a];
    for (i, (head, body)) in responses.iter().take(rounds * asks.len()).enumerate() {
        let image = wanted[i % asks.len()];
        assert!(head.starts_with("HTTP/1.1 200"), "request {i}: {head}");
        assert!(*body == image.manifest_bytes, "request {i} got another upstream's manifest: {head}");
        assert!(head.contains(&format!("Docker-Content-Digest: {}", image.manifest_digest)), "request {i}: {head}");
    }
    let page = common::http_request("GET", &format!("http://127.0.0.1:{port}/metrics"), &[]).unwrap().text();
    // Round 1 fetches A and B, round 2 keeps their answers; the third ask is a
    // hit (A's tag is cached by then) kept in round 1.
    assert_eq!(
        common::metric(&page, "ociregistry_kept_answers_total"),
        ((rounds - 2) * 2 + (rounds - 1)) as u64,
        "the repeats come from the kept answers"
    );
    assert_eq!((a.count("GET", "/manifests/v1"), b.count("GET", "/manifests/v1")), (1, 1));
}

#[test]
fn x_registry_meets_the_same_guard_as_any_upstream_name() {
    let up = basic_upstream("robot", "pw");
    // Unlisted: a loopback upstream is not a public address.
    let server = Server::start("prefetch: false\n", &[]);
    let r = server.get("/v2/team/app/manifests/v1", &[("X-Registry", &up.host())]);
    assert_ne!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("not a public address"), "{}", r.text());
    // denyUnlisted: only listed names.
    let config = "prefetch: false\ndenyUnlisted: true\nregistries:\n  - name: quay.io\n";
    let server = Server::start(config, &[]);
    let r = server.get("/v2/team/app/manifests/v1", &[("X-Registry", &up.host())]);
    assert!(r.text().contains("denyUnlisted"), "{}", r.text());
    assert_eq!(up.requests().len(), 0);
}

#[test]
fn root_and_v2_auth_answer_as_go_does() {
    let server = Server::start("prefetch: false\n", &[]);
    let r = server.get("/", &[]);
    assert_eq!((r.status, r.text().as_str()), (200, "null\n"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = server.get("/v2/auth?scope=repository:a/b:pull&service=x", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body, serde_json::json!({"token": "FROBOZZ"}), "Go's placeholder token");
    assert_eq!(r.header("cache-control"), Some("no-cache, no-store, must-revalidate"));
    assert_eq!(r.header("vary"), Some("Cookie"));
    assert_eq!(server.get("/v2/auth/manifests/v1", &[]).status, 404, "a repository named auth is still one");
}
