//! What clients and upstreams send cannot grow the server's memory or its
//! upstream traffic without bound: the tag list cache is keyed on the
//! normalised page, so junk query parameters neither defeat it nor start
//! more upstream requests, and concurrent requests for one page share one
//! upstream request. (The bounds of each map are unit-tested where it lives:
//! fetch::flights, fetch::tags, store::descriptors.)

mod common;

use std::time::Duration;

use common::fake_upstream::{FakeUpstream, Fault};
use common::{concurrently, plain_registry, Server};

#[test]
fn junk_query_parameters_do_not_defeat_the_tag_list_cache() {
    let up = FakeUpstream::start();
    up.add_image("r", "v1", &[b"a".to_vec()]);
    up.add_image("r", "v2", &[b"b".to_vec()]);
    let server = Server::start(&plain_registry(&up.host()), &[]);
    for i in 0..20 {
        let r = server.get(&format!("/v2/{}/r/tags/list?junk={i}&n=5", up.host()), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("v2"), "{}", r.text());
    }
    assert_eq!(up.count("GET", "/tags/list"), 1, "one upstream request for one page");
    let r = server.get(&format!("/v2/{}/r/tags/list?n=1", up.host()), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(up.count("GET", "/tags/list"), 2, "another page is another request");
}

#[test]
fn concurrent_requests_for_one_tag_page_share_one_upstream_request() {
    let up = FakeUpstream::start();
    up.add_image("r", "v1", &[b"a".to_vec()]);
    up.set_fault("/tags/list", Fault::Delay(Duration::from_millis(500)), None);
    let server = Server::start(&plain_registry(&up.host()), &[]);
    let url = server.url(&format!("/v2/{}/r/tags/list", up.host()));
    let statuses = concurrently(16, move |i| common::http_get(&format!("{url}?junk={i}"), &[]).status);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(up.count("GET", "/tags/list"), 1);
}
