//! Upstream authentication against the fake registry's token flow: a 403 to a
//! token the cache fetched (revoked, or issued for less than the pull) is
//! tried once more with a fresh token, and a 403 that persists is "not found";
//! a SIGHUP reload drops the cached tokens of the registries whose settings
//! changed, and only theirs.

mod common;

use common::fake_upstream::{Auth, FakeUpstream, Fault, Options};
use common::{plain_registry, Server};

use std::time::Duration;

#[test]
fn a_403_to_a_cached_token_is_retried_once_with_a_fresh_one() {
    let up = FakeUpstream::start_with(Options {
        auth: Auth::Bearer { token_ttl_secs: 300, user_pass: None },
        ..Options::default()
    });
    up.add_image("team/app", "v1", &[b"one".to_vec()]);
    up.add_image("team/app", "v2", &[b"two".to_vec()]);
    up.add_image("team/app", "v3", &[b"three".to_vec()]);
    let server = Server::start(&plain_registry(&up.host()), &[]);
    let path = |tag: &str| format!("/v2/{}/team/app/manifests/{tag}", up.host());
    assert_eq!(server.get(&path("v1"), &[]).status, 200);
    let tokens = up.token_requests();

    // The cached token is refused once: a fresh token is fetched and the pull succeeds.
    up.set_fault("/manifests/v2", Fault::status(403), Some(1));
    let r = server.get(&path("v2"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.token_requests(), tokens + 1, "one fresh token");
    assert_eq!(up.count("GET", "/manifests/v2"), 2, "the refused request and its retry");

    // A 403 that persists after a fresh token: not found, after exactly one retry.
    up.set_fault("/manifests/v3", Fault::status(403), None);
    let r = server.get(&path("v3"), &[]);
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(up.token_requests(), tokens + 2);
    assert_eq!(up.count("GET", "/manifests/v3"), 2);
}

#[test]
fn a_reload_drops_the_tokens_of_the_changed_registries_only() {
    let up = FakeUpstream::start_with(Options {
        auth: Auth::Bearer { token_ttl_secs: 300, user_pass: None },
        ..Options::default()
    });
    for tag in ["v1", "v2", "v3"] {
        up.add_image("team/app", tag, &[tag.as_bytes().to_vec()]);
    }
    let other = FakeUpstream::start();
    let config = |password: &str, other_password: &str| {
        format!(
            "prefetch: false\nregistries:\n  - name: \"{}\"\n    scheme: http\n    auth: {{user: robot, password: {password}}}\n  - name: \"{}\"\n    scheme: http\n    auth: {{user: robot, password: {other_password}}}\n",
            up.host(),
            other.host()
        )
    };
    let server = Server::start(&config("one", "one"), &[]);
    let path = |tag: &str| format!("/v2/{}/team/app/manifests/{tag}", up.host());
    let reload = |yaml: String, times: usize| {
        std::fs::write(&server.config, yaml).unwrap();
        server.signal(libc::SIGHUP);
        let reloaded = || server.log().matches("SIGHUP: reloaded").count() >= times;
        assert!(common::wait_until(Duration::from_secs(10), reloaded), "{}", server.log());
    };
    assert_eq!(server.get(&path("v1"), &[]).status, 200, "{}", server.log());
    let tokens = up.token_requests();
    assert!(tokens >= 1, "the pull fetched a token");

    // Another registry's password changes: this one's token is kept.
    reload(config("one", "two"), 1);
    assert!(server.log().contains("tokens dropped for 1"), "{}", server.log());
    assert_eq!(server.get(&path("v2"), &[]).status, 200, "{}", server.log());
    assert_eq!(up.token_requests(), tokens, "an unrelated change dropped this registry's token");

    // Its own password changes: its token goes, and the next pull fetches one with the new password.
    reload(config("two", "two"), 2);
    assert_eq!(server.get(&path("v3"), &[]).status, 200, "{}", server.log());
    assert_eq!(up.token_requests(), tokens + 1, "a token fetched with the old password outlived it");
    let asked = up.requests().into_iter().rev().find(|r| r.path == "/token").unwrap();
    assert_eq!(asked.header("authorization"), Some(common::fake_upstream::basic_auth("robot", "two").as_str()));
}
