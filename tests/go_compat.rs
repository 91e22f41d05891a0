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
