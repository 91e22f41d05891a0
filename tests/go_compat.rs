//! Compatibility with the Go ociregistry's configuration and small endpoints,
//! against the in-process fake upstream: Go's `auth.token.static` (sent as
//! Go sends it), `passwordFile`, SIGHUP reload of `registries`, the
//! `X-Registry` header, `GET /v2/auth` and `GET /`.

mod common;

use common::fake_upstream::{basic_auth, Auth, FakeUpstream, Options};
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
