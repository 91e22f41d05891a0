//! Upstream authentication against the fake registry's token flow: a 403 to a
//! token the cache fetched (revoked, or issued for less than the pull) is
//! tried once more with a fresh token, and a 403 that persists is "not found".

mod common;

use common::fake_upstream::{Auth, FakeUpstream, Fault, Options};
use common::{plain_registry, Server};

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
