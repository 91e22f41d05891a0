//! The upstream fault matrix: connection refused, a blob cut mid-body, wrong
//! bytes, a trickle, 5xx, 429 with `Retry-After`, a redirect loop, a token
//! endpoint down, a TLS handshake failure, a DNS failure, and an upstream gone
//! for good. For each: what the client sees (an OCI error with a defined
//! status, or a cut connection once a blob body has started), that nothing
//! wrong is cached, and that other pulls go on; plus the per-upstream circuit
//! breaker that stops hammering an upstream that keeps failing.

mod common;

use std::time::Duration;

use common::fake_upstream::{sha256_digest, Auth, FakeUpstream, Fault, Options};
use common::{free_port, http_request, metric, random_bytes, wait_until, HttpResponse, Server};

fn manifest_path(host: &str, repo: &str, reference: &str) -> String {
    format!("/v2/{host}/{repo}/manifests/{reference}")
}

fn blob_path(host: &str, repo: &str, digest: &str) -> String {
    format!("/v2/{host}/{repo}/blobs/{digest}")
}

/// A listed plain-HTTP registry entry of the config file.
fn listed(host: &str) -> String {
    format!("  - name: \"{host}\"\n    scheme: http\n")
}

fn config(entries: &[String]) -> String {
    format!("prefetch: false\nregistries:\n{}", entries.concat())
}

/// The server with these registries and its metrics on a port of its own.
fn start(entries: &[String], args: &[&str]) -> (Server, u16) {
    let port = free_port();
    let port_arg = port.to_string();
    let mut all = vec!["--metrics", port_arg.as_str()];
    all.extend_from_slice(args);
    (Server::start(&config(entries), &all), port)
}

fn metrics(port: u16) -> String {
    common::http_get(&format!("http://127.0.0.1:{port}/metrics"), &[]).text()
}

fn circuit(port: u16, family: &str, registry: &str) -> u64 {
    metric(&metrics(port), &format!("ociregistry_{family}{{registry=\"{registry}\"}}"))
}

/// The OCI error code of an error answer.
fn code(r: &HttpResponse) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    v["errors"][0]["code"].as_str().unwrap_or_default().to_string()
}

fn assert_error(r: &HttpResponse, status: u16, oci_code: &str, server: &Server) {
    assert_eq!((r.status, code(r).as_str()), (status, oci_code), "{}\n{}", r.text(), server.log());
}

/// Every committed file in the image path hashes to its name: nothing wrong was cached.
fn assert_store_sound(server: &Server) {
    let root = server.image_path.join("blobs/sha256");
    let Ok(dirs) = std::fs::read_dir(&root) else { return };
    for dir in dirs {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(sha256_digest(&bytes), format!("sha256:{name}"), "{} does not hash to its name", path.display());
        }
    }
}

fn committed(server: &Server, digest: &str) -> bool {
    server.image_path.join("blobs/sha256").join(&digest[7..9]).join(&digest[7..]).exists()
}

/// A blob answer that must not be a whole, successful body: the connection is
/// cut once the body has started, or (for a client that came late) an error status.
fn assert_not_served(r: std::io::Result<HttpResponse>, server: &Server) {
    if let Ok(r) = r {
        assert!(r.status >= 500, "a client got a whole answer ({}) from a failed download\n{}", r.status, server.log());
    }
}

/// Pulls `repo:tag` whole and checks the bytes.
fn pulls(server: &Server, up: &FakeUpstream, repo: &str, tag: &str, layers: &[Vec<u8>]) {
    let r = server.get(&manifest_path(&up.host(), repo, tag), &[]);
    assert_eq!(r.status, 200, "{repo}:{tag}: {}\n{}", r.text(), server.log());
    for layer in layers {
        let r = server.get(&blob_path(&up.host(), repo, &sha256_digest(layer)), &[]);
        assert!(r.status == 200 && &r.body == layer, "{repo}: blob {}\n{}", r.status, server.log());
    }
}

#[test]
fn connection_refused_is_502_until_the_breaker_opens_then_503_at_once_while_others_go_on() {
    let dead = format!("127.0.0.1:{}", free_port());
    let up = FakeUpstream::start();
    let layers = vec![random_bytes(1, 40_000)];
    up.add_image("app", "v1", &layers);
    let (server, port) = start(&[listed(&dead), listed(&up.host())], &[]);
    for i in 0..5 {
        let r = server.get(&manifest_path(&dead, "app", &format!("v{i}")), &[]);
        assert_error(&r, 502, "UNAVAILABLE", &server);
    }
    assert_eq!(circuit(port, "upstream_circuit_state", &dead), 1, "open after 5 refusals");
    let r = server.get(&blob_path(&dead, "app", &sha256_digest(b"x")), &[]);
    assert_error(&r, 503, "UNAVAILABLE", &server);
    assert_eq!(r.header("retry-after"), Some("1"), "seconds until half-open");
    assert_eq!(circuit(port, "upstream_circuit_opened_total", &dead), 1);
    assert!(circuit(port, "upstream_fast_failures_total", &dead) >= 1);
    pulls(&server, &up, "app", "v1", &layers);
    assert_eq!(circuit(port, "upstream_circuit_state", &up.host()), 0);
    let logged = wait_until(Duration::from_secs(5), || server.log().contains("upstream circuit opened"));
    assert!(logged, "{}", server.log());
    assert_store_sound(&server);
}

#[test]
fn a_per_registry_breaker_with_failures_2_opens_after_two_refusals() {
    let (dead, also_dead) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let strict = format!("{}    circuitBreaker: {{failures: 2, coolDown: 30s}}\n", listed(&dead));
    let (server, port) = start(&[strict, listed(&also_dead)], &[]);
    for i in 0..2 {
        assert_eq!(circuit(port, "upstream_circuit_state", &dead), 0, "closed before refusal {}", i + 1);
        assert_error(&server.get(&manifest_path(&dead, "app", &format!("v{i}")), &[]), 502, "UNAVAILABLE", &server);
    }
    assert_eq!(circuit(port, "upstream_circuit_state", &dead), 1, "open after 2 refusals");
    let r = server.get(&manifest_path(&dead, "app", "v9"), &[]);
    assert_error(&r, 503, "UNAVAILABLE", &server);
    assert_eq!(r.header("retry-after"), Some("30"), "the configured cool-down");
    // The other upstream keeps the default threshold (5).
    for i in 0..4 {
        assert_error(
            &server.get(&manifest_path(&also_dead, "app", &format!("v{i}")), &[]),
            502,
            "UNAVAILABLE",
            &server,
        );
    }
    assert_eq!(circuit(port, "upstream_circuit_state", &also_dead), 0);
}

#[test]
fn five_5xx_open_the_breaker_which_answers_without_upstream_requests_until_a_trial_closes_it() {
    let up = FakeUpstream::start();
    let other = FakeUpstream::start();
    let layers = vec![random_bytes(2, 30_000)];
    let img = up.add_image("app", "v1", &layers);
    other.add_image("app", "v1", &layers);
    let (server, port) = start(&[listed(&up.host()), listed(&other.host())], &[]);
    let host = up.host();
    let tag = manifest_path(&host, "app", "v1");
    up.set_fault("/manifests/", Fault::status(503), None);
    for _ in 0..5 {
        assert_error(&server.get(&tag, &[]), 502, "UNAVAILABLE", &server);
    }
    assert_eq!(up.count("GET", "/manifests/"), 5);
    let sent = up.requests().len();
    // Open: manifests, blobs, blob HEADs and tags are all answered at once, with no upstream request.
    for path in [tag.clone(), blob_path(&host, "app", &img.layer_digests[0]), format!("/v2/{host}/app/tags/list")] {
        let r = server.get(&path, &[]);
        assert_error(&r, 503, "UNAVAILABLE", &server);
        assert!(r.header("retry-after").is_some(), "{path}");
    }
    assert_eq!(server.head(&blob_path(&host, "app", &img.layer_digests[0]), &[]).status, 503);
    assert_eq!(up.requests().len(), sent, "no upstream request while open");
    assert_eq!(circuit(port, "upstream_circuit_state", &host), 1);
    assert_eq!(circuit(port, "upstream_circuit_opened_total", &host), 1);
    assert!(circuit(port, "upstream_fast_failures_total", &host) >= 4);
    // Another upstream is not affected.
    pulls(&server, &other, "app", "v1", &layers);
    // Fault gone, cool-down (1 s) over: the one trial goes through and closes the breaker.
    up.clear_faults();
    assert!(wait_until(Duration::from_secs(10), || server.get(&tag, &[]).status == 200), "{}", server.log());
    assert_eq!(up.count("GET", "/manifests/"), 6, "exactly one trial request");
    let r = server.get(&tag, &[]);
    assert_eq!(r.body, img.manifest_bytes, "the right manifest is cached");
    assert_eq!(circuit(port, "upstream_circuit_state", &host), 0);
    // Log lines are written by a background thread.
    let logged = |what: &str| wait_until(Duration::from_secs(5), || server.log().contains(what));
    for line in ["upstream circuit opened", "upstream circuit half-open", "upstream circuit closed"] {
        assert!(logged(line), "{line}\n{}", server.log());
    }
    pulls(&server, &up, "app", "v1", &layers);
    assert_store_sound(&server);
}

#[test]
fn an_object_answering_500_is_left_alone_for_a_while_and_fetched_again_once_the_upstream_recovers() {
    let up = FakeUpstream::start();
    let layers = vec![random_bytes(15, 20_000)];
    let img = up.add_image("app", "v1", &layers);
    let broken_blob = up.add_blob("app", random_bytes(16, 10_000));
    let (server, port) = start(&[listed(&up.host())], &[]);
    let host = up.host();
    let tag = manifest_path(&host, "app", "v1");
    up.set_fault("/manifests/v1", Fault::status(500), None);
    up.set_fault(&broken_blob, Fault::status(500), None);
    let first = server.get(&tag, &[]);
    assert_error(&first, 502, "UNAVAILABLE", &server);
    for _ in 0..20 {
        let r = server.get(&tag, &[]);
        assert_error(&r, 502, "UNAVAILABLE", &server);
        let wait: u64 = r.header("retry-after").expect("Retry-After while left alone").parse().unwrap();
        assert!((1..=30).contains(&wait), "{wait}");
        assert_error(&server.get(&blob_path(&host, "app", &broken_blob), &[]), 502, "UNAVAILABLE", &server);
    }
    // 21 pulls of each: a few upstream requests at most (one per wait: 2 s, then 4 s, ...).
    let asked = up.count("GET", "/manifests/v1");
    assert!((1..=3).contains(&asked), "the failing manifest was asked {asked} times");
    let asked = up.count("GET", &broken_blob);
    assert!((1..=3).contains(&asked), "the failing blob was asked {asked} times");
    // Other objects of the same upstream go on, and the breaker stays closed.
    let by_digest = server.get(&manifest_path(&host, "app", &img.manifest_digest), &[]);
    assert_eq!((by_digest.status, &by_digest.body), (200, &img.manifest_bytes), "{}", server.log());
    let r = server.get(&blob_path(&host, "app", &img.layer_digests[0]), &[]);
    assert_eq!((r.status, &r.body), (200, &layers[0]));
    assert_eq!(circuit(port, "upstream_circuit_state", &host), 0);
    // Recovered: fetched again once the wait is over, and served from the cache after that.
    up.clear_faults();
    let ok = wait_until(Duration::from_secs(40), || server.get(&tag, &[]).status == 200);
    assert!(ok, "{}", server.log());
    assert_eq!(server.get(&tag, &[]).body, img.manifest_bytes);
    assert!(
        wait_until(Duration::from_secs(40), || server.get(&blob_path(&host, "app", &broken_blob), &[]).status == 200)
    );
    let asked = up.count("GET", "/manifests/v1");
    assert!(asked <= 4, "{asked}");
    assert_store_sound(&server);
}

#[test]
fn not_found_and_denied_answers_never_open_the_breaker() {
    let up = FakeUpstream::start();
    let layers = vec![random_bytes(14, 5_000)];
    up.add_image("app", "v1", &layers);
    let (server, port) = start(&[listed(&up.host())], &[]);
    up.set_fault("/manifests/denied", Fault::status(403), None);
    for i in 0..6 {
        let r = server.get(&manifest_path(&up.host(), "app", &format!("missing{i}")), &[]);
        assert_error(&r, 404, "MANIFEST_UNKNOWN", &server);
        let r = server.get(&manifest_path(&up.host(), "app", &format!("denied{i}")), &[]);
        assert_eq!(r.status, 404);
    }
    assert_eq!(circuit(port, "upstream_circuit_state", &up.host()), 0);
    assert_eq!(circuit(port, "upstream_circuit_opened_total", &up.host()), 0);
    pulls(&server, &up, "app", "v1", &layers);
}

#[test]
fn a_429_passes_its_retry_after_on_and_the_upstream_is_left_alone_that_long() {
    let up = FakeUpstream::start();
    let img = up.add_image("app", "v1", &[random_bytes(3, 1000)]);
    let (server, port) = start(&[listed(&up.host())], &[]);
    let tag = manifest_path(&up.host(), "app", "v1");
    up.set_fault("/manifests/", Fault::Status(429, vec![("Retry-After".into(), "2".into())]), Some(1));
    let r = server.get(&tag, &[]);
    assert_error(&r, 429, "TOOMANYREQUESTS", &server);
    assert_eq!(r.header("retry-after"), Some("2"));
    let r = server.get(&tag, &[]);
    assert_error(&r, 503, "UNAVAILABLE", &server);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(up.count("GET", "/manifests/"), 1, "left alone while rate limited");
    assert_eq!(circuit(port, "upstream_circuit_state", &up.host()), 1);
    assert!(wait_until(Duration::from_secs(10), || server.get(&tag, &[]).status == 200), "{}", server.log());
    assert_eq!(up.count("GET", "/manifests/"), 2);
    assert_eq!(server.get(&tag, &[]).body, img.manifest_bytes);
}

#[test]
fn wrong_bytes_are_refused_and_never_cached() {
    let up = FakeUpstream::start();
    let layer = random_bytes(4, 200_000);
    let img = up.add_image("app", "v1", std::slice::from_ref(&layer));
    let (server, _) = start(&[listed(&up.host())], &[]);
    let host = up.host();
    // A manifest whose bytes do not match its digest: 502, nothing stored.
    up.set_fault(&format!("/manifests/{}", img.manifest_digest), Fault::CorruptBody, Some(1));
    let by_digest = manifest_path(&host, "app", &img.manifest_digest);
    assert_error(&server.get(&by_digest, &[]), 502, "UNAVAILABLE", &server);
    let r = server.get(&by_digest, &[]);
    assert_eq!((r.status, &r.body), (200, &img.manifest_bytes));
    // A blob: the client streaming it is cut off; nothing is committed.
    let digest = &img.layer_digests[0];
    up.set_fault(digest, Fault::CorruptBody, Some(1));
    assert_not_served(http_request("GET", &server.url(&blob_path(&host, "app", digest)), &[]), &server);
    assert!(!committed(&server, digest), "a corrupt blob was committed");
    assert_store_sound(&server);
    // Once the short per-digest back-off is over, the right bytes.
    let ok = wait_until(Duration::from_secs(10), || {
        let r = server.get(&blob_path(&host, "app", digest), &[]);
        r.status == 200 && r.body == layer
    });
    assert!(ok, "{}", server.log());
    assert_store_sound(&server);
}

#[test]
fn a_blob_cut_mid_body_resumes_and_one_that_keeps_breaking_fails_cleanly() {
    let up = FakeUpstream::start();
    let (a, b) = (random_bytes(5, 300_000), random_bytes(6, 300_000));
    up.add_image("app", "v1", &[a.clone(), b.clone()]);
    let (server, port) = start(&[listed(&up.host())], &[]);
    let host = up.host();
    let (da, db) = (sha256_digest(&a), sha256_digest(&b));
    up.set_fault(&da, Fault::DropAfter(50_000), Some(2));
    let r = server.get(&blob_path(&host, "app", &da), &[]);
    assert!(r.status == 200 && r.body == a, "resumed twice: {}", r.status);
    assert_eq!(up.count("GET", &da), 3);
    up.set_fault(&db, Fault::DropAfter(50_000), None);
    assert_not_served(http_request("GET", &server.url(&blob_path(&host, "app", &db)), &[]), &server);
    assert_eq!(up.count("GET", &db), 5, "the first request and four resumptions, no more");
    assert!(!committed(&server, &db));
    // Breaks after the upstream answered do not open the breaker.
    assert_eq!(circuit(port, "upstream_circuit_state", &host), 0);
    up.clear_faults();
    let r = server.get(&blob_path(&host, "app", &db), &[]);
    assert!(r.status == 200 && r.body == b, "{}", r.status);
    assert_store_sound(&server);
}

#[test]
fn a_trickling_upstream_times_out_while_other_pulls_go_on() {
    let up = FakeUpstream::start();
    let other = FakeUpstream::start();
    let layer = random_bytes(7, 100_000);
    let img = up.add_image("app", "v1", std::slice::from_ref(&layer));
    let other_layers = vec![random_bytes(8, 50_000)];
    other.add_image("app", "v1", &other_layers);
    let (server, _) = start(&[listed(&up.host()), listed(&other.host())], &["--pull-timeout", "500"]);
    let host = up.host();
    up.set_fault("/manifests/", Fault::Slow { bytes_per_sec: 1 }, Some(1));
    assert_error(&server.get(&manifest_path(&host, "app", "v1"), &[]), 504, "UNAVAILABLE", &server);
    let digest = img.layer_digests[0].clone();
    up.set_fault(&digest, Fault::Slow { bytes_per_sec: 1 }, None);
    let url = server.url(&blob_path(&host, "app", &digest));
    let slow = std::thread::spawn(move || http_request("GET", &url, &[]));
    // While that blob trickles, another upstream's image is pulled.
    pulls(&server, &other, "app", "v1", &other_layers);
    assert_not_served(slow.join().unwrap(), &server);
    assert!(up.count("GET", &digest) <= 5, "bounded: {}", up.count("GET", &digest));
    assert!(!committed(&server, &digest));
    up.clear_faults();
    pulls(&server, &up, "app", "v1", &[layer]);
    assert_store_sound(&server);
}

#[test]
fn a_redirect_loop_is_followed_five_hops_then_502() {
    let up = FakeUpstream::start();
    let img = up.add_image("app", "v1", &[random_bytes(9, 1000)]);
    let (server, _) = start(&[listed(&up.host())], &[]);
    let tag = manifest_path(&up.host(), "app", "v1");
    up.set_fault("/manifests/", Fault::Redirect(up.base_url()), None);
    assert_error(&server.get(&tag, &[]), 502, "UNAVAILABLE", &server);
    assert_eq!(up.count("GET", "/manifests/"), 6, "the request and five redirects");
    up.clear_faults();
    assert_eq!(server.get(&tag, &[]).body, img.manifest_bytes);
}

#[test]
fn a_token_endpoint_down_is_502_and_nothing_is_cached() {
    let up = FakeUpstream::start_with(Options {
        auth: Auth::Bearer { token_ttl_secs: 300, user_pass: None },
        ..Default::default()
    });
    let layers = vec![random_bytes(10, 20_000)];
    let img = up.add_image("app", "v1", &layers);
    let (server, _) = start(&[listed(&up.host())], &[]);
    up.set_fault("/token", Fault::status(503), None);
    let tag = manifest_path(&up.host(), "app", "v1");
    assert_error(&server.get(&tag, &[]), 502, "UNAVAILABLE", &server);
    assert!(up.token_requests() >= 1);
    up.clear_faults();
    let r = server.get(&tag, &[]);
    assert_eq!((r.status, &r.body), (200, &img.manifest_bytes), "{}", server.log());
    pulls(&server, &up, "app", "v1", &layers);
}

#[test]
fn a_tls_handshake_failure_and_a_dns_failure_are_defined_errors() {
    let plain = FakeUpstream::start();
    let ok = FakeUpstream::start();
    let layers = vec![random_bytes(11, 10_000)];
    ok.add_image("app", "v1", &layers);
    let tls = format!("  - name: tls.test\n    endpoint: https://{}/\n", plain.host());
    let (server, _) = start(&[tls, listed("registry.invalid"), listed(&ok.host())], &["--pull-timeout", "5000"]);
    // Whatever the plain server makes of a ClientHello, the handshake fails (or times out): never a hang.
    let r = server.get(&manifest_path("tls.test", "app", "v1"), &[]);
    assert!(r.status == 502 || r.status == 504, "{}\n{}", r.text(), server.log());
    assert_eq!(code(&r), "UNAVAILABLE");
    // RFC 6761: `.invalid` never resolves, so it is refused in-process, as a failed lookup.
    let r = server.get(&manifest_path("registry.invalid", "app", "v1"), &[]);
    assert_error(&r, 502, "UNAVAILABLE", &server);
    assert!(r.text().contains("RFC 6761"), "refused without asking the resolver: {}", r.text());
    pulls(&server, &ok, "app", "v1", &layers);
}

#[test]
fn an_upstream_down_for_good_leaves_everything_cached_served_tags_included() {
    let up = FakeUpstream::start();
    let layers = vec![random_bytes(12, 60_000), random_bytes(13, 5_000)];
    let v1 = up.add_image("app", "v1", &layers);
    let v2 = up.add_image("app", "v2", &layers[1..]);
    let (server, _) = start(&[listed(&up.host())], &[]);
    let host = up.host();
    pulls(&server, &up, "app", "v1", &layers);
    pulls(&server, &up, "app", "v2", &layers[1..]);
    assert!(wait_until(Duration::from_secs(5), || layers.iter().all(|l| committed(&server, &sha256_digest(l)))));
    drop(up);
    // Not cached: refused, and after a few the breaker answers at once.
    for i in 0..6 {
        let r = server.get(&manifest_path(&host, "app", &format!("gone{i}")), &[]);
        assert!(r.status == 502 || r.status == 503, "{}", r.status);
    }
    for _ in 0..2 {
        for (tag, img) in [("v1", &v1), ("v2", &v2)] {
            let r = server.get(&manifest_path(&host, "app", tag), &[]);
            assert_eq!((r.status, &r.body), (200, &img.manifest_bytes), "{tag}\n{}", server.log());
            let r = server.get(&manifest_path(&host, "app", &img.manifest_digest), &[]);
            assert_eq!((r.status, &r.body), (200, &img.manifest_bytes), "{tag} by digest");
        }
        for layer in &layers {
            let path = blob_path(&host, "app", &sha256_digest(layer));
            let r = server.get(&path, &[]);
            assert!(r.status == 200 && &r.body == layer, "blob {}", r.status);
            assert_eq!(server.head(&path, &[]).status, 200);
        }
        let r = server.get(&format!("/v2/{host}/app/tags/list"), &[]);
        assert_eq!(r.status, 200, "{}\n{}", r.text(), server.log());
        let tags: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(tags["tags"], serde_json::json!(["v1", "v2"]), "{}", r.text());
        let r = server.get(&format!("/v2/{host}/app/tags/list?n=1"), &[]);
        assert_eq!(r.status, 200);
        assert!(r.header("link").is_some_and(|l| l.contains("last=v1")), "{:?}", r.headers);
    }
    let logged = wait_until(Duration::from_secs(5), || server.log().contains("serving the cached tags"));
    assert!(logged, "{}", server.log());
    assert_store_sound(&server);
}
