//! The real binary against an in-process fake upstream: caching, single-flight
//! streaming, integrity under faults, resume, status mapping, restarts, and the
//! API surface. Upstream request counts are read from the fake's log.

mod common;

use std::time::{Duration, Instant};

use common::fake_upstream::{sha256_digest, Auth, FakeUpstream, Fault, Gate, Options, OCI_MANIFEST};
use common::{concurrently, http_request, metric, plain_registry, random_bytes, split_responses, wait_until, Server};

fn setup(serve_args: &[&str]) -> (FakeUpstream, Server) {
    let up = FakeUpstream::start();
    let server = Server::start(&plain_registry(&up.host()), serve_args);
    (up, server)
}

fn manifest_path(up: &FakeUpstream, repo: &str, reference: &str) -> String {
    format!("/v2/{}/{repo}/manifests/{reference}", up.host())
}

fn blob_path(up: &FakeUpstream, repo: &str, digest: &str) -> String {
    format!("/v2/{}/{repo}/blobs/{digest}", up.host())
}

/// The last byte goes out on verification; fsync and rename follow. Waits (bounded) for the commit.
fn wait_committed(server: &Server, digest: &str) -> bool {
    wait_committed_within(server, digest, Duration::from_secs(5))
}

fn wait_committed_within(server: &Server, digest: &str, limit: Duration) -> bool {
    let file = server.image_path.join("blobs/sha256").join(&digest[7..9]).join(&digest[7..]);
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if file.exists() {
            // The record is journaled right after the rename.
            std::thread::sleep(Duration::from_millis(20));
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn manifest_and_blobs_are_cached_after_the_first_pull() {
    for driver in ["uring", "epoll"] {
        let (up, server) = setup(&["--io-driver", driver]);
        let layer = random_bytes(1, 3 * 1024 * 1024 + 17);
        let img = up.add_image("team/app", "v1", std::slice::from_ref(&layer));

        let r = server.get(&manifest_path(&up, "team/app", "v1"), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.body, img.manifest_bytes);
        assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(r.header("docker-content-digest"), Some(img.manifest_digest.as_str()));
        assert_eq!(r.header("docker-distribution-api-version"), Some("registry/2.0"));
        assert_eq!(r.header("x-cache"), Some("MISS"));

        let r = server.get(&blob_path(&up, "team/app", &img.layer_digests[0]), &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some(layer.len().to_string().as_str()));
        assert!(r.body == layer, "blob body differs ({driver})");
        assert!(wait_committed(&server, &img.layer_digests[0]));

        up.clear_log();
        let r = server.get(&manifest_path(&up, "team/app", "v1"), &[]);
        assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
        let r = server.get(&manifest_path(&up, "team/app", &img.manifest_digest), &[]);
        assert_eq!((r.status, r.body.clone()), (200, img.manifest_bytes.clone()));
        let r = server.get(&blob_path(&up, "team/app", &img.layer_digests[0]), &[]);
        assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
        assert!(r.body == layer);
        let r = server.head(&blob_path(&up, "team/app", &img.layer_digests[0]), &[]);
        assert_eq!(r.header("content-length"), Some(layer.len().to_string().as_str()));
        assert!(up.requests().is_empty(), "second pull went upstream ({driver}): {:?}", up.requests());
        assert!(server.log().contains(&format!("driver=\"{}\"", if driver == "uring" { "io_uring" } else { "epoll" })));
    }
}

#[test]
fn concurrent_pulls_of_an_uncached_blob_share_one_upstream_download() {
    let (up, server) = setup(&[]);
    let layer = random_bytes(2, 8 * 1024 * 1024);
    let digest = up.add_blob("r", layer.clone());
    up.set_fault(&digest, Fault::Slow { bytes_per_sec: 16 * 1024 * 1024 }, None);
    let url = server.url(&blob_path(&up, "r", &digest));
    let layer = std::sync::Arc::new(layer);
    let expected = layer.clone();
    let results = concurrently(20, move |_| http_request("GET", &url, &[]).map(|r| (r.status, r.body == *expected)));
    for r in &results {
        assert_eq!(r.as_ref().unwrap(), &(200, true));
    }
    assert_eq!(up.count("GET", &digest), 1, "{:?}", up.requests());
    let statuses = server.log().matches("cache=\"STREAM\"").count() + server.log().matches("cache=STREAM").count();
    assert!(statuses >= 1, "at least one client streamed the in-flight download");
}

#[test]
fn head_by_tag_that_misses_fetches_and_caches_the_manifest() {
    let (up, server) = setup(&[]);
    let img = up.add_image("a", "v1", &[b"layer".to_vec()]);
    let r = server.head(&manifest_path(&up, "a", "v1"), &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("docker-content-digest"), Some(img.manifest_digest.as_str()));
    assert_eq!(r.header("content-length"), Some(img.manifest_bytes.len().to_string().as_str()));
    up.clear_log();
    let r = server.get(&manifest_path(&up, "a", "v1"), &[]);
    assert_eq!(r.body, img.manifest_bytes);
    assert_eq!(up.requests().len(), 0);
}

#[test]
fn tags_are_case_sensitive() {
    let (up, server) = setup(&[]);
    let lower = up.add_image("a", "v1", &[b"one".to_vec()]);
    let upper = up.add_image("a", "V1", &[b"two".to_vec()]);
    assert_eq!(server.get(&manifest_path(&up, "a", "v1"), &[]).body, lower.manifest_bytes);
    assert_eq!(server.get(&manifest_path(&up, "a", "V1"), &[]).body, upper.manifest_bytes);
}

#[test]
fn ranges_on_cached_and_in_flight_blobs() {
    let (up, server) = setup(&[]);
    let layer = random_bytes(3, 1024 * 1024);
    let digest = up.add_blob("r", layer.clone());
    let path = blob_path(&up, "r", &digest);
    // In flight: the upstream is slow, the range is answered as its bytes land.
    up.set_fault(&digest, Fault::Slow { bytes_per_sec: 2 * 1024 * 1024 }, Some(1));
    let r = server.get(&path, &[("Range", "bytes=100-199")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 100-199/1048576"));
    assert_eq!(r.body, &layer[100..200]);
    assert!(wait_committed(&server, &digest));
    // Cached.
    let r = server.get(&path, &[("Range", "bytes=1048000-")]);
    assert_eq!((r.status, r.header("x-cache")), (206, Some("HIT")));
    assert_eq!(r.body, &layer[1048000..]);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let r = server.get(&path, &[("Range", "bytes=-10")]);
    assert_eq!(r.body, &layer[layer.len() - 10..]);
    let r = server.get(&path, &[("Range", "bytes=2000000-")]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */1048576"));
    let r = server.get(&path, &[("Range", "bytes=0-1,5-6")]);
    assert_eq!((r.status, r.body.len()), (200, layer.len()));
    assert_eq!(up.count("GET", &digest), 1);
}

#[test]
fn a_corrupt_blob_is_never_delivered_whole_nor_committed() {
    let (up, server) = setup(&[]);
    let layer = random_bytes(4, 2 * 1024 * 1024);
    let digest = up.add_blob("r", layer.clone());
    up.set_fault(&digest, Fault::CorruptBody, Some(1));
    let url = server.url(&blob_path(&up, "r", &digest));
    let results = concurrently(4, move |_| http_request("GET", &url, &[]));
    // Each client is either cut off mid-body or, arriving after the failure, told so with an error status.
    for resp in results.into_iter().flatten() {
        assert!(resp.status >= 500, "a client got a whole response ({}) for a corrupt blob", resp.status);
    }
    let blob_file = server.image_path.join("blobs/sha256").join(&digest[7..9]).join(&digest[7..]);
    assert!(!blob_file.exists(), "corrupt blob was committed");
    // The next request goes upstream again (after the short per-digest back-off) and succeeds.
    std::thread::sleep(Duration::from_millis(1200));
    let r = server.get(&blob_path(&up, "r", &digest), &[]);
    assert_eq!(r.status, 200);
    assert!(r.body == layer);
    assert!(wait_committed(&server, &digest));
    assert_eq!(std::fs::read_dir(server.image_path.join("tmp")).unwrap().count(), 0);
}

#[test]
fn a_dropped_transfer_resumes_with_range() {
    let (up, server) = setup(&[]);
    let layer = random_bytes(5, 3 * 1024 * 1024);
    let digest = up.add_blob("r", layer.clone());
    up.set_fault(&digest, Fault::DropAfter(1_000_000), Some(1));
    let r = server.get(&blob_path(&up, "r", &digest), &[]);
    assert_eq!(r.status, 200);
    assert!(r.body == layer, "resumed body differs");
    let gets: Vec<_> = up.requests().into_iter().filter(|r| r.method == "GET" && r.path.contains(&digest)).collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[1].header("range"), Some("bytes=1000000-"));
}

#[test]
fn chunked_upstream_bodies_are_accepted() {
    let (up, server) = setup(&[]);
    let layer = random_bytes(6, 700_000);
    let digest = up.add_blob("r", layer.clone());
    up.set_fault(&digest, Fault::Chunked, Some(1));
    let r = server.get(&blob_path(&up, "r", &digest), &[]);
    assert_eq!(r.status, 200);
    assert!(r.body == layer);
    assert!(wait_committed(&server, &digest));
    let r = server.get(&blob_path(&up, "r", &digest), &[]);
    assert_eq!((r.header("x-cache"), r.header("content-length")), (Some("HIT"), Some("700000")));

    // An HTTP/1.0 client cannot take chunked framing: it waits for the blob and gets a length.
    use std::io::{Read, Write};
    let other = up.add_blob("r", random_bytes(16, 300_000));
    up.set_fault(&other, Fault::Chunked, Some(1));
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    write!(s, "GET {} HTTP/1.0\r\n\r\n", blob_path(&up, "r", &other)).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let head_end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let text = String::from_utf8_lossy(&all[..head_end]).to_string();
    assert_eq!(all.len() - head_end - 4, 300_000);
    assert!(text.contains("Content-Length: 300000") && !text.contains("chunked"), "{text}");
}

#[test]
fn upstream_statuses_map_to_oci_errors() {
    let (up, server) = setup(&[]);
    up.add_image("a", "v1", &[b"x".to_vec()]);

    let r = server.get(&manifest_path(&up, "a", "nope"), &[]);
    assert_eq!(r.status, 404);
    assert!(r.text().contains("MANIFEST_UNKNOWN"), "{}", r.text());
    // Remembered: the second ask does not reach the upstream.
    up.clear_log();
    assert_eq!(server.get(&manifest_path(&up, "a", "nope"), &[]).status, 404);
    assert_eq!(up.count("GET", "manifests/nope"), 0);

    let missing = sha256_digest(b"missing");
    let r = server.get(&blob_path(&up, "a", &missing), &[]);
    assert_eq!(r.status, 404);
    assert!(r.text().contains("BLOB_UNKNOWN"));

    up.set_fault("manifests/broken", Fault::status(500), None);
    let r = server.get(&manifest_path(&up, "a", "broken"), &[]);
    assert_eq!(r.status, 502);

    up.set_fault("manifests/denied", Fault::status(403), None);
    let r = server.get(&manifest_path(&up, "a", "denied"), &[]);
    assert_eq!(r.status, 404);
    assert!(r.header("www-authenticate").is_none());

    // Last: a 429 with Retry-After also opens the upstream's circuit breaker for that long.
    up.set_fault("manifests/limited", Fault::Status(429, vec![("Retry-After".into(), "7".into())]), None);
    let r = server.get(&manifest_path(&up, "a", "limited"), &[]);
    assert_eq!((r.status, r.header("retry-after")), (429, Some("7")));
    assert!(r.text().contains("TOOMANYREQUESTS"));
}

#[test]
fn an_unreachable_upstream_with_nothing_cached_is_a_gateway_error() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = dead.local_addr().unwrap().to_string();
    drop(dead);
    let server = Server::start(&plain_registry(&host), &[]);
    let r = server.get(&format!("/v2/{host}/a/manifests/v1"), &[]);
    assert_eq!(r.status, 502, "{}", r.text());
}

#[test]
fn a_slow_upstream_times_out_with_504() {
    let (up, server) = setup(&["--pull-timeout", "500"]);
    up.add_image("a", "v1", &[b"x".to_vec()]);
    up.set_fault("manifests/v1", Fault::Hang, None);
    let r = server.get(&manifest_path(&up, "a", "v1"), &[]);
    assert_eq!(r.status, 504, "{}", r.text());
}

#[test]
fn the_cache_survives_a_restart_without_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let up = FakeUpstream::start();
    let host = up.host();
    let layer = random_bytes(7, 100_000);
    let img = up.add_image("a", "v1", std::slice::from_ref(&layer));
    let mut server = Server::start_in(&images, &plain_registry(&host), &[]);
    assert_eq!(server.get(&format!("/v2/{host}/a/manifests/v1"), &[]).status, 200);
    assert_eq!(server.get(&format!("/v2/{host}/a/blobs/{}", img.layer_digests[0]), &[]).status, 200);
    assert!(server.stop().success());
    drop(server);
    drop(up);

    let server = Server::start_in(&images, &plain_registry(&host), &[]);
    let r = server.get(&format!("/v2/{host}/a/manifests/v1"), &[]);
    assert_eq!((r.status, r.header("content-type")), (200, Some(OCI_MANIFEST)));
    assert_eq!(r.body, img.manifest_bytes);
    let r = server.get(&format!("/v2/{host}/a/blobs/{}", img.layer_digests[0]), &[]);
    assert!(r.status == 200 && r.body == layer);
    // A blob is never served as a manifest, even after a restart.
    let r = server.get(&format!("/v2/{host}/a/manifests/{}", img.layer_digests[0]), &[]);
    assert_ne!(r.status, 200);
}

#[test]
fn a_second_server_on_the_same_image_path_is_refused() {
    let (_up, server) = setup(&[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ociregistry"))
        .arg("--image-path")
        .arg(&server.image_path)
        .args(["serve", "--host", "127.0.0.1", "--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another ociregistry process"), "{err}");
}

#[test]
fn air_gapped_serves_the_cache_and_never_calls_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let up = FakeUpstream::start();
    let host = up.host();
    let img = up.add_image("a", "v1", &[b"x".to_vec()]);
    up.add_image("a", "v2", &[b"y".to_vec()]);
    let mut server = Server::start_in(&images, &plain_registry(&host), &[]);
    assert_eq!(server.get(&format!("/v2/{host}/a/manifests/v1"), &[]).status, 200);
    server.stop();
    drop(server);
    up.clear_log();
    let server = Server::start_in(&images, &plain_registry(&host), &["--air-gapped"]);
    let r = server.get(&format!("/v2/{host}/a/manifests/v1"), &[]);
    assert_eq!((r.status, r.body.clone()), (200, img.manifest_bytes.clone()));
    let r = server.get(&format!("/v2/{host}/a/manifests/v2"), &[]);
    assert_eq!(r.status, 404);
    let r = server.get(&format!("/v2/{host}/a/tags/list"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["tags"], serde_json::json!(["v1"]));
    assert!(up.requests().is_empty(), "{:?}", up.requests());
}

#[test]
fn always_pull_latest_re_resolves_latest_only() {
    let (up, server) = setup(&["--always-pull-latest"]);
    let first = up.add_image("a", "latest", &[b"1".to_vec()]);
    up.add_image("a", "v1", &[b"v".to_vec()]);
    assert_eq!(server.get(&manifest_path(&up, "a", "latest"), &[]).body, first.manifest_bytes);
    assert_eq!(server.get(&manifest_path(&up, "a", "v1"), &[]).status, 200);
    let second = up.add_image("a", "latest", &[b"2".to_vec()]);
    up.clear_log();
    assert_eq!(server.get(&manifest_path(&up, "a", "latest"), &[]).body, second.manifest_bytes);
    assert_eq!(server.get(&manifest_path(&up, "a", "v1"), &[]).status, 200);
    assert_eq!(up.count("GET", "manifests/latest"), 1);
    assert_eq!(up.count("GET", "manifests/v1"), 0);
}

#[test]
fn accept_excluding_the_stored_type_is_manifest_unknown() {
    let (up, server) = setup(&[]);
    up.add_image("a", "v1", &[b"x".to_vec()]);
    let docker_only = "application/vnd.docker.distribution.manifest.v2+json";
    let r = server.get(&manifest_path(&up, "a", "v1"), &[("Accept", docker_only)]);
    assert_eq!(r.status, 404);
    assert!(r.text().contains("MANIFEST_UNKNOWN") && r.text().contains(OCI_MANIFEST), "{}", r.text());
    // Several Accept lines all count.
    let r = server.get(&manifest_path(&up, "a", "v1"), &[("Accept", docker_only), ("Accept", OCI_MANIFEST)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("vary"), Some("Accept"));
    let r = server.get(&manifest_path(&up, "a", "v1"), &[("Accept", "*/*")]);
    assert_eq!(r.status, 200);
    // The upstream was asked with the fixed Accept list, not the client's.
    let asked = up.requests().into_iter().find(|r| r.path.ends_with("manifests/v1")).unwrap();
    let accept = asked.header("accept").unwrap();
    assert!(accept.contains("application/vnd.oci.image.index.v1+json") && accept.contains(docker_only), "{accept}");
}

#[test]
fn upstream_is_chosen_by_ns_by_host_segment_or_default() {
    let up = FakeUpstream::start();
    let img = up.add_image("library/nginx", "1", &[b"x".to_vec()]);
    let encoded = up.host().replace(':', "%3A");
    let server = Server::start(&plain_registry(&up.host()), &["--default-ns", &up.host()]);
    let by_ns = server.get(&format!("/v2/library/nginx/manifests/1?ns={encoded}"), &[]);
    assert_eq!((by_ns.status, by_ns.body.clone()), (200, img.manifest_bytes.clone()));
    let by_default = server.get("/v2/library/nginx/manifests/1", &[]);
    assert_eq!(by_default.status, 200);
    let server = Server::start(&plain_registry(&up.host()), &[]);
    let r = server.get("/v2/library/nginx/manifests/1", &[]);
    assert_eq!(r.status, 404);
    assert!(r.text().contains("NAME_UNKNOWN"));
}

#[test]
fn api_surface_and_bad_input() {
    let (up, server) = setup(&[]);
    let r = server.get("/v2/", &[]);
    assert_eq!((r.status, r.header("docker-distribution-api-version")), (200, Some("registry/2.0")));
    let r = http_request("POST", &server.url(&format!("/v2/{}/a/blobs/uploads/", up.host())), &[]).unwrap();
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    assert!(r.text().contains("UNSUPPORTED"));
    let r = http_request("DELETE", &server.url(&manifest_path(&up, "a", "v1")), &[]).unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(server.get("/v2/_catalog", &[]).status, 405);
    let r = server.get(&format!("/v2/{}/Upper/manifests/v1", up.host()), &[]);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("NAME_INVALID"));
    let long = "a".repeat(300);
    assert_eq!(server.get(&format!("/v2/{}/{long}/manifests/v1", up.host()), &[]).status, 400);
    let r = server.get(&blob_path(&up, "a", "md5:d41d8cd98f00b204e9800998ecf8427e"), &[]);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("DIGEST_INVALID"));
    let r = server.get(&format!("/v2/{}/a/referrers/{}", up.host(), sha256_digest(b"x")), &[]);
    assert_eq!(r.status, 404);
    assert!(!r.text().contains("NAME_UNKNOWN"), "{}", r.text());
    // A push with a body gets its 405 intact, although the body is never read.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = format!(
            "PUT /v2/{}/a/blobs/uploads/1?digest=x HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n",
            up.host()
        );
        s.write_all(head.as_bytes()).unwrap();
        let _ = s.write_all(&vec![0u8; 256 * 1024]);
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 405"), "{}", String::from_utf8_lossy(&all));
    }
    let r = server.get("/nothing", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("docker-distribution-api-version"), Some("registry/2.0"));
}

#[test]
fn tag_lists_are_proxied_with_a_rewritten_link() {
    let (up, server) = setup(&[]);
    for t in ["a", "b", "c"] {
        up.add_image("r", t, &[t.as_bytes().to_vec()]);
    }
    let r = server.get(&format!("/v2/{}/r/tags/list?n=2", up.host()), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["a", "b"]));
    let link = r.header("link").unwrap();
    assert!(link.starts_with(&format!("</v2/{}/r/tags/list?", up.host())), "{link}");
    assert!(link.contains("last=b") && link.ends_with("rel=\"next\""), "{link}");
}

#[test]
fn basic_and_bearer_upstream_auth() {
    let basic = FakeUpstream::start_with(Options {
        auth: Auth::Basic { user: "u".into(), pass: "p".into() },
        ..Default::default()
    });
    basic.add_image("a", "v1", &[b"x".to_vec()]);
    let config = format!(
        "prefetch: false\nregistries:\n  - name: \"{}\"\n    scheme: http\n    auth: {{user: u, password: p}}\n",
        basic.host()
    );
    let server = Server::start(&config, &[]);
    assert_eq!(server.get(&format!("/v2/{}/a/manifests/v1", basic.host()), &[]).status, 200);

    let bearer = FakeUpstream::start_with(Options {
        auth: Auth::Bearer { token_ttl_secs: 300, user_pass: Some(("u".into(), "p".into())) },
        ..Default::default()
    });
    let img = bearer.add_image("a", "v1", &[b"x".to_vec(), b"y".to_vec()]);
    let config = format!(
        "prefetch: false\nregistries:\n  - name: \"{}\"\n    scheme: http\n    auth: {{user: u, password: p}}\n",
        bearer.host()
    );
    let server = Server::start(&config, &[]);
    let h = bearer.host();
    assert_eq!(server.get(&format!("/v2/{h}/a/manifests/v1"), &[]).status, 200);
    for d in &img.layer_digests {
        assert_eq!(server.get(&format!("/v2/{h}/a/blobs/{d}"), &[]).status, 200);
    }
    assert_eq!(bearer.token_requests(), 1, "the token is cached per scope");
    let token_req = bearer.requests().into_iter().find(|r| r.path == "/token").unwrap();
    assert!(token_req.header("authorization").unwrap().starts_with("Basic "));
    assert!(token_req.query_params().contains(&("scope".into(), "repository:a:pull".into())));
    // An expired token is replaced once, transparently.
    bearer.expire_tokens();
    assert_eq!(server.get(&format!("/v2/{h}/a/blobs/{}", img.config_digest), &[]).status, 200);
    assert_eq!(bearer.token_requests(), 2);

    let server = Server::start(&plain_registry(&bearer.host()), &[]);
    let r = server.get(&format!("/v2/{h}/a/manifests/v1"), &[]);
    assert_eq!(r.status, 404, "no credentials: the upstream keeps refusing, reported as not found");
    assert!(r.header("www-authenticate").is_none());
}

#[test]
fn docker_hub_through_an_endpoint_with_cdn_redirects() {
    let hub = FakeUpstream::start_with(Options {
        auth: Auth::Bearer { token_ttl_secs: 300, user_pass: None },
        docker_hub: true,
        redirect_blobs_to_cdn: true,
    });
    let layer = random_bytes(8, 500_000);
    let img = hub.add_image("library/alpine", "3.20", std::slice::from_ref(&layer));
    let config = format!("prefetch: false\nregistries:\n  - name: docker.io\n    endpoint: {}/\n", hub.base_url());
    let server = Server::start(&config, &["--default-ns", "docker.io"]);
    for path in [
        "/v2/alpine/manifests/3.20",
        "/v2/library/alpine/manifests/3.20?ns=docker.io",
        "/v2/docker.io/alpine/manifests/3.20",
    ] {
        let r = server.get(path, &[]);
        assert_eq!((r.status, r.body.clone()), (200, img.manifest_bytes.clone()), "{path}: {}", r.text());
    }
    let asked = hub.requests().into_iter().find(|r| r.path.contains("/manifests/")).unwrap();
    assert_eq!(asked.path, "/v2/library/alpine/manifests/3.20");
    assert!(asked.query_params().contains(&("ns".into(), "docker.io".into())), "{asked:?}");

    let r = server.get(&format!("/v2/alpine/blobs/{}", img.layer_digests[0]), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == layer);
    let cdn = hub.cdn().requests();
    assert_eq!(cdn.len(), 1, "{cdn:?}");
    assert!(cdn[0].header("authorization").is_none());

    let r = server.get("/v2/nosuchuser/nosuchrepo/manifests/v1", &[]);
    assert_eq!(r.status, 404, "Docker Hub's insufficient_scope for unknown repos is not found");
}

/// SIGTERM: a response in progress finishes whole; a download nobody reads any more is stopped at
/// once, and its temp file goes with it. The test holds the response in progress at the upstream
/// (after part of its body) until it has seen the rest, so the server is still running when it
/// looks: neither the runtime's shutdown (which would cut the orphan anyway) nor the sweep of
/// `tmp/` at exit (which would remove its temp file anyway) has happened yet.
#[test]
fn sigterm_lets_a_response_in_progress_finish_and_stops_orphans_leaving_no_temp_files() {
    let (up, mut server) = setup(&[]);
    let layer = random_bytes(9, 2 * 1024 * 1024);
    let streamed = up.add_blob("r", layer.clone());
    let orphan = up.add_blob("r", random_bytes(19, 8 * 1024 * 1024));
    let gate = Gate::new();
    up.set_fault(&streamed, Fault::GateAfter(512 * 1024, gate.clone()), Some(1));
    // 32 s for the whole orphan: it cannot finish by itself within the shutdown grace period.
    up.set_fault(&orphan, Fault::Slow { bytes_per_sec: 256 * 1024 }, None);
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
        write!(s, "GET {} HTTP/1.1\r\nHost: x\r\n\r\n", blob_path(&up, "r", &orphan)).unwrap();
        let _ = s.read(&mut [0u8; 512]).unwrap();
    }
    // The server has let go of the orphan's client once it logs that request: nobody reads it now.
    let orphan_path = blob_path(&up, "r", &orphan);
    let logged = || server.log().lines().any(|l| l.contains(" access: ") && l.contains(&orphan_path));
    assert!(wait_until(Duration::from_secs(10), logged), "the orphan's client is still being served");
    let url = server.url(&blob_path(&up, "r", &streamed));
    let client = std::thread::spawn(move || http_request("GET", &url, &[]));
    assert!(wait_until(Duration::from_secs(10), || gate.held() == 1), "the streamed blob never reached the gate");
    assert_eq!(server.temp_files().len(), 2, "one temp file per download in progress");

    server.terminate();
    // Seen while the response in progress is still held, so before the server can exit: within a
    // limit shorter than the grace period (10 s) the held response keeps the server running for.
    let limit = Duration::from_secs(6);
    let deadline = Instant::now() + limit;
    let orphan_stopped = wait_until(limit, || up.cut_short(&orphan) == 1);
    let rest = deadline.saturating_duration_since(Instant::now());
    let cleaned = wait_until(rest, || server.temp_files().len() == 1);
    let left = server.temp_files();
    let still_serving = server.is_running() && gate.held() == 1;

    gate.open();
    let got = client.join().unwrap().expect("the response in progress finishes within the grace period");
    assert_eq!(got.status, 200);
    assert!(got.body == layer, "the response in progress differs from the blob");
    assert!(still_serving, "the server exited before the response in progress was let go:\n{}", server.log());
    assert!(orphan_stopped, "the orphaned download still ran {limit:?} after SIGTERM:\n{}", server.log());
    assert!(cleaned, "the stopped download's temp file was not removed: {left:?}");
    let status = server.wait_stopped();
    assert!(status.success(), "{status}");
    assert_eq!(up.cut_short(&streamed), 0);
    assert_eq!(up.count("GET", &orphan), 1, "the orphan is not resumed at shutdown");
}

#[test]
fn concurrent_manifest_requests_share_one_upstream_request() {
    let (up, server) = setup(&[]);
    let img = up.add_image("a", "v1", &[b"x".to_vec()]);
    up.set_fault("manifests/v1", Fault::Delay(Duration::from_millis(300)), None);
    let url = server.url(&manifest_path(&up, "a", "v1"));
    let bodies = concurrently(10, move |_| http_request("GET", &url, &[]).unwrap().body);
    assert!(bodies.iter().all(|b| *b == img.manifest_bytes));
    assert_eq!(up.count("GET", "manifests/v1"), 1);
}

#[test]
fn a_download_finishes_after_its_only_client_leaves() {
    let (up, server) = setup(&[]);
    let layer = random_bytes(10, 2 * 1024 * 1024);
    let digest = up.add_blob("r", layer.clone());
    up.set_fault(&digest, Fault::Slow { bytes_per_sec: 4 * 1024 * 1024 }, Some(1));
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
        write!(s, "GET {} HTTP/1.1\r\nHost: x\r\n\r\n", blob_path(&up, "r", &digest)).unwrap();
        let mut first = [0u8; 1024];
        let _ = s.read(&mut first).unwrap();
    }
    assert!(wait_committed(&server, &digest), "the orphaned download was not committed");
    up.clear_log();
    let r = server.get(&blob_path(&up, "r", &digest), &[]);
    assert!(r.status == 200 && r.body == layer);
    assert!(up.requests().is_empty());
}

/// A second client that joined a download from another repository gets the blob from its own
/// when that repository turns out not to have it; the first client still gets its 404.
#[test]
fn a_failure_of_one_requesters_source_does_not_fail_another_source() {
    let (up, server) = setup(&[]);
    let layer = random_bytes(11, 300_000);
    let digest = up.add_blob("has-it", layer.clone());
    // Repository "lacks-it" answers 404 for the blob, once the gate opens: until then its
    // download is in flight, and the second client joins it.
    let gate = Gate::new();
    up.set_fault(&format!("lacks-it/blobs/{digest}"), Fault::Gate(gate.clone()), Some(1));
    let lacking = server.url(&blob_path(&up, "lacks-it", &digest));
    let having = server.url(&blob_path(&up, "has-it", &digest));
    let first = std::thread::spawn(move || http_request("GET", &lacking, &[]).unwrap());
    assert!(wait_until(Duration::from_secs(10), || gate.held() == 1), "the first download never reached upstream");
    let second = std::thread::spawn(move || http_request("GET", &having, &[]).unwrap());
    let joined = wait_until(Duration::from_secs(10), || server.log().contains("joined the download in flight"));
    assert!(joined, "the second client did not join the first one's download:\n{}", server.log());
    assert_eq!(up.count("GET", "has-it/"), 0);
    gate.open();
    assert_eq!(first.join().unwrap().status, 404);
    let second = second.join().unwrap();
    assert_eq!(second.status, 200, "{}", second.text());
    assert!(second.body == layer);
    assert_eq!(up.count("GET", &format!("has-it/blobs/{digest}")), 1);
}

#[test]
fn unusable_upstream_manifests_are_refused() {
    let (up, server) = setup(&[]);
    let schema1 = br#"{"schemaVersion":1,"name":"a","tag":"old","fsLayers":[]}"#.to_vec();
    up.add_manifest("a", Some("old"), "application/vnd.docker.distribution.manifest.v1+prettyjws", schema1);
    let r = server.get(&manifest_path(&up, "a", "old"), &[]);
    assert_eq!(r.status, 502);
    assert!(r.text().contains("schema 1"), "{}", r.text());

    let mut huge =
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"x":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 5 * 1024 * 1024));
    huge.extend(br#""}}"#);
    up.add_manifest("a", Some("huge"), OCI_MANIFEST, huge);
    let r = server.get(&manifest_path(&up, "a", "huge"), &[]);
    assert_eq!(r.status, 502);
    assert!(r.text().contains("larger than"), "{}", r.text());
}

#[test]
fn a_blob_whose_upstream_size_disagrees_with_its_descriptor_is_refused() {
    let (up, server) = setup(&[]);
    let layer = b"twelve bytes".to_vec();
    let digest = up.add_blob("a", layer);
    let config = up.add_blob("a", b"{}".to_vec());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{digest}","size":999}}]}}"#
    );
    up.add_manifest("a", Some("v1"), OCI_MANIFEST, manifest.into_bytes());
    assert_eq!(server.get(&manifest_path(&up, "a", "v1"), &[]).status, 200);
    let r = server.get(&blob_path(&up, "a", &digest), &[]);
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("999"), "{}", r.text());
}

#[test]
fn unlisted_private_upstreams_are_refused() {
    let up = FakeUpstream::start();
    up.add_image("a", "v1", &[b"x".to_vec()]);
    let server = Server::start("", &[]);
    let r = server.get(&format!("/v2/{}/a/manifests/v1", up.host()), &[]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("not a public address") && r.text().contains("DENIED"), "{}", r.text());
    // A name that resolves to a private address is refused when it is resolved.
    let r = server.get(&format!("/v2/localhost:{}/a/manifests/v1", up.port()), &[]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("no public address"), "{}", r.text());
    assert!(up.requests().is_empty());

    let server = Server::start("denyUnlisted: true\n", &[]);
    let r = server.get("/v2/quay.io/calico/node/manifests/v3.28.0", &[]);
    assert_eq!(r.status, 403);
    assert!(r.text().contains("not listed"), "{}", r.text());
}

#[test]
fn listening_on_ipv6_any_serves_ipv4_and_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(&dir.path().join("images"), "", &["--host", "::"]);
    let port = server.addr.rsplit(':').next().unwrap();
    for host in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        let r = http_request("GET", &format!("http://{host}/v2/"), &[]).unwrap();
        assert_eq!(r.status, 200, "{host}");
    }
}

#[test]
fn upstream_traffic_goes_through_http_proxy() {
    let proxy = FakeUpstream::start();
    let config = "registries:\n  - name: upstream.test\n    scheme: http\n";
    let server = Server::start_with_env(config, &[], &[("HTTP_PROXY", &proxy.base_url()), ("NO_PROXY", "")]);
    let r = server.get("/v2/upstream.test/a/manifests/v1", &[]);
    assert_ne!(r.status, 200);
    let seen = proxy.requests();
    assert!(!seen.is_empty(), "the proxy saw no request");
    assert!(seen[0].path.contains("upstream.test/v2/a/manifests/v1"), "{:?}", seen[0]);
}

#[test]
fn head_of_an_uncached_blob_asks_upstream_without_downloading() {
    let (up, server) = setup(&[]);
    let layer = random_bytes(12, 200_000);
    let digest = up.add_blob("r", layer);
    let r = server.head(&blob_path(&up, "r", &digest), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("200000"));
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!((up.count("HEAD", &digest), up.count("GET", &digest)), (1, 0));
    assert!(!wait_committed_within(&server, &digest, Duration::from_millis(200)));
    let r = server.head(&blob_path(&up, "r", &sha256_digest(b"absent")), &[]);
    assert_eq!(r.status, 404);
    // A registry whose blob store refuses HEAD (presigned URLs): one byte is fetched instead.
    up.set_fault(&format!("r/blobs/{digest}"), Fault::status(403), Some(1));
    let r = server.head(&format!("/v2/{}/r/blobs/{digest}?x=1", up.host()), &[]);
    assert_eq!((r.status, r.header("content-length")), (200, Some("200000")));
    let ranged = up.requests().into_iter().rfind(|r| r.method == "GET" && r.path.contains(&digest)).unwrap();
    assert_eq!(ranged.header("range"), Some("bytes=0-0"));
}

#[test]
fn the_first_blob_of_an_image_prefetches_the_rest() {
    let up = FakeUpstream::start();
    let layers: Vec<Vec<u8>> = (0..3).map(|i| random_bytes(20 + i, 300_000)).collect();
    let img = up.add_image("a", "v1", &layers);
    let config = format!("registries:\n  - name: \"{}\"\n    scheme: http\n", up.host());
    let server = Server::start(&config, &[]);
    assert_eq!(server.get(&manifest_path(&up, "a", "v1"), &[]).status, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(up.count("GET", "/blobs/"), 0, "reading a manifest prefetches nothing");

    assert_eq!(server.get(&blob_path(&up, "a", &img.layer_digests[0]), &[]).status, 200);
    for d in img.layer_digests.iter().chain([&img.config_digest]) {
        assert!(wait_committed(&server, d), "{d} was not prefetched");
        assert_eq!(up.count("GET", d), 1, "{d}");
    }
    up.clear_log();
    for (d, layer) in img.layer_digests.iter().zip(&layers) {
        let r = server.get(&blob_path(&up, "a", d), &[]);
        assert!(r.status == 200 && r.body == *layer);
    }
    assert!(up.requests().is_empty());
}

#[test]
fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    use std::io::{Read, Write};
    let (up, server) = setup(&[]);
    let img = up.add_image("a", "v1", &[b"layer-bytes".to_vec()]);
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let manifest = manifest_path(&up, "a", "v1");
    let blob = blob_path(&up, "a", &img.layer_digests[0]);
    // Three requests in one write; the last one closes the connection.
    write!(
        s,
        "GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\nHEAD {manifest} HTTP/1.1\r\nHost: x\r\n\r\nGET {blob} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let text = String::from_utf8_lossy(&all);
    let starts: Vec<_> = text.match_indices("HTTP/1.1 200 OK").map(|(i, _)| i).collect();
    assert_eq!(starts.len(), 3, "{text}");
    assert!(text[starts[1]..starts[2]].contains(&img.manifest_digest));
    assert!(text.ends_with("layer-bytes"), "{text}");
    assert!(text[starts[2]..].contains("Connection: close"));

    // HTTP/1.0 without keep-alive gets one answer and a close.
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /v2/ HTTP/1.0\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200 OK"));

    // A malformed head gets 400 and a close.
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nBad Header\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 400"), "{}", String::from_utf8_lossy(&all));
}

fn two_listed(a: &FakeUpstream, b: &FakeUpstream) -> String {
    format!(
        "prefetch: false\nregistries:\n  - name: \"{}\"\n    scheme: http\n  - name: \"{}\"\n    scheme: http\n",
        a.host(),
        b.host()
    )
}

#[test]
fn one_upstreams_manifest_cannot_poison_another_upstreams_blob_size() {
    let (victim, attacker) = (FakeUpstream::start(), FakeUpstream::start());
    let server = Server::start(&two_listed(&victim, &attacker), &[]);
    let layer = random_bytes(30, 100_000);
    let digest = victim.add_blob("lib/app", layer.clone());
    let config = attacker.add_blob("evil", b"{}".to_vec());
    let lying = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"x","digest":"{digest}","size":1}}]}}"#
    );
    attacker.add_manifest("evil", Some("v1"), OCI_MANIFEST, lying.into_bytes());
    assert_eq!(server.get(&format!("/v2/{}/evil/manifests/v1", attacker.host()), &[]).status, 200);
    let r = server.get(&format!("/v2/{}/lib/app/blobs/{digest}", victim.host()), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == layer);
}

#[test]
fn one_upstreams_content_type_cannot_change_a_manifests_media_type_for_others() {
    let (victim, attacker) = (FakeUpstream::start(), FakeUpstream::start());
    let server = Server::start(&two_listed(&victim, &attacker), &[]);
    let img = victim.add_image("lib/app", "v1", &[b"layer".to_vec()]);
    let d = attacker.add_manifest("evil", None, "application/x-evil", img.manifest_bytes.clone());
    assert_eq!(d, img.manifest_digest);
    let r = server.get(&format!("/v2/{}/evil/manifests/{d}", attacker.host()), &[]);
    assert_eq!((r.status, r.header("content-type")), (200, Some(OCI_MANIFEST)), "the body's own mediaType wins");
    for _ in 0..2 {
        let r = server.get(&format!("/v2/{}/lib/app/manifests/v1", victim.host()), &[("Accept", OCI_MANIFEST)]);
        assert_eq!((r.status, r.header("content-type")), (200, Some(OCI_MANIFEST)));
    }
    // A Content-Type naming another manifest type than the body's is refused.
    let other = victim.add_image("lib/other", "v1", &[b"l2".to_vec()]);
    attacker.add_manifest(
        "evil2",
        Some("x"),
        "application/vnd.docker.distribution.manifest.v2+json",
        other.manifest_bytes.clone(),
    );
    assert_eq!(server.get(&format!("/v2/{}/evil2/manifests/x", attacker.host()), &[]).status, 502);
}

#[test]
fn a_manifest_first_fetched_as_a_blob_is_still_cached_as_a_manifest() {
    let (up, server) = setup(&[]);
    let img = up.add_image("a", "v1", &[b"layer".to_vec()]);
    up.add_blob("other", img.manifest_bytes.clone());
    assert_eq!(server.get(&blob_path(&up, "other", &img.manifest_digest), &[]).status, 200);
    assert!(wait_committed(&server, &img.manifest_digest));
    for _ in 0..3 {
        let r = server.get(&manifest_path(&up, "a", &img.manifest_digest), &[]);
        assert_eq!((r.status, r.header("content-type")), (200, Some(OCI_MANIFEST)));
    }
    assert_eq!(up.count("GET", "/manifests/"), 1);
}

#[test]
fn large_cached_blobs_go_to_same_host_clients_from_a_mapping_and_everything_is_counted() {
    for driver in ["uring", "epoll"] {
        let up = FakeUpstream::start();
        let port = common::free_port().to_string();
        let mut server = Server::start(&plain_registry(&up.host()), &["--io-driver", driver, "--metrics", &port]);
        let scrape = || http_request("GET", &format!("http://127.0.0.1:{port}/metrics"), &[]).unwrap().text();
        let layer = random_bytes(41, 6 * 1024 * 1024 + 1234);
        let digest = up.add_blob("big", layer.clone());
        let path = blob_path(&up, "big", &digest);

        let r = server.get(&path, &[]);
        assert_eq!((r.status, r.header("x-cache")), (200, Some("STREAM")));
        assert!(r.body == layer, "streamed body differs");
        assert!(wait_committed(&server, &digest));
        // Cached, and the client is on this host: sent from a mapping of the file.
        let r = server.get(&path, &[]);
        assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
        assert!(r.body == layer, "{driver}: mapped body differs");
        let r = server.get(&path, &[("Range", "bytes=1000000-5999999")]);
        assert_eq!(r.status, 206);
        assert!(r.body == layer[1_000_000..6_000_000], "{driver}: mapped range differs");
        // Small bodies keep to sendfile.
        let r = server.get(&path, &[("Range", "bytes=7-1006")]);
        assert_eq!((r.status, &r.body[..]), (206, &layer[7..1007]));
        let head = server.head(&path, &[]);
        assert_eq!(head.header("content-length"), Some(layer.len().to_string().as_str()));

        let page = scrape();
        let size = layer.len() as u64;
        assert_eq!(metric(&page, "ociregistry_body_bytes_sent_total{path=\"mapped\"}"), size + 5_000_000);
        assert_eq!(metric(&page, "ociregistry_body_bytes_sent_total{path=\"download\"}"), size);
        assert_eq!(metric(&page, "ociregistry_body_bytes_sent_total{path=\"sendfile\"}"), 1000);
        assert_eq!(metric(&page, "ociregistry_upstream_requests_total{kind=\"blob\"}"), 1);
        assert_eq!(metric(&page, "ociregistry_upstream_blob_bytes_total"), size);
        assert_eq!(metric(&page, "ociregistry_blob_downloads_total{outcome=\"committed\"}"), 1);
        assert_eq!(metric(&page, "ociregistry_responses_total{kind=\"blob\",cache=\"hit\"}"), 4);
        assert_eq!(metric(&page, "ociregistry_responses_total{kind=\"blob\",cache=\"miss\"}"), 1);
        assert_eq!(metric(&page, "ociregistry_blob_pulls_total"), 5);
        assert_eq!(metric(&page, "ociregistry_v2_api_endpoint_hits_total"), 5);
        assert_eq!(metric(&page, "ociregistry_api_errors_total"), 0);
        let missing = server.get(&blob_path(&up, "big", &sha256_digest(b"nothing")), &[]);
        assert_eq!(missing.status, 404);
        assert_eq!(metric(&scrape(), "ociregistry_api_errors_total"), 1);
        let other = http_request("GET", &format!("http://127.0.0.1:{port}/other"), &[]).unwrap();
        assert_eq!(other.status, 404);

        // `blobSend: sendfile`: the same blob from the same cache goes out with sendfile.
        server.stop();
        let config = format!("{}blobSend: sendfile\n", plain_registry(&up.host()));
        let port = common::free_port().to_string();
        let again = Server::start_in(&server.image_path, &config, &["--io-driver", driver, "--metrics", &port]);
        let r = again.get(&path, &[]);
        assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
        assert!(r.body == layer, "{driver}: sendfile body differs");
        let page = http_request("GET", &format!("http://127.0.0.1:{port}/metrics"), &[]).unwrap().text();
        assert_eq!(metric(&page, "ociregistry_body_bytes_sent_total{path=\"sendfile\"}"), size);
        assert_eq!(metric(&page, "ociregistry_body_bytes_sent_total{path=\"mapped\"}"), 0);
        assert_eq!(up.count("GET", &digest), 1);
    }
}

#[test]
fn repeated_requests_are_answered_from_the_serving_threads_kept_answers() {
    use std::io::{Read, Write};
    let up = FakeUpstream::start();
    let port = common::free_port().to_string();
    let server = Server::start(&plain_registry(&up.host()), &["--threads", "1", "--metrics", &port]);
    let layer = b"small layer bytes".to_vec();
    let img = up.add_image("kept", "v1", std::slice::from_ref(&layer));
    let (tag, digest) = (manifest_path(&up, "kept", "v1"), manifest_path(&up, "kept", &img.manifest_digest));
    let blob = blob_path(&up, "kept", &img.layer_digests[0]);
    assert_eq!(server.get(&blob, &[]).status, 200);
    assert!(wait_committed(&server, &img.layer_digests[0]));
    let oci = format!("Accept: {OCI_MANIFEST}\r\n");
    let requests = [
        ("GET", &tag, oci.as_str()),                      // miss: fetched
        ("GET", &tag, &oci),                              // hit through the handler, kept
        ("GET", &tag, &oci),                              // the kept answer
        ("HEAD", &tag, &oci),                             // the kept answer's head
        ("GET", &tag, "Accept: application/x-other\r\n"), // another Accept: not the kept answer
        ("GET", &digest, &oci),
        ("GET", &digest, &oci),
        ("GET", &blob, ""),
        ("GET", &blob, ""),
        ("GET", &blob, "Range: bytes=2-6\r\n"),
    ];
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut wire = String::new();
    for (method, path, extra) in &requests {
        wire.push_str(&format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n"));
    }
    wire.push_str("GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(wire.as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let mut heads: Vec<bool> = requests.iter().map(|(m, _, _)| *m == "HEAD").collect();
    heads.push(false);
    let r = split_responses(&all, &heads);

    assert!(r[0].0.contains("X-Cache: MISS"), "{}", r[0].0);
    assert_eq!(r[1], r[2], "the kept answer is the handler's answer, byte for byte");
    assert!(r[2].0.starts_with("HTTP/1.1 200 OK") && r[2].0.contains("X-Cache: HIT"));
    assert_eq!(r[2].1, img.manifest_bytes);
    assert_eq!((r[3].0.as_str(), r[3].1.len()), (r[2].0.as_str(), 0), "HEAD: the same head, no body");
    assert!(r[4].0.starts_with("HTTP/1.1 404"), "{}", r[4].0);
    assert_eq!(r[5], r[6]);
    assert_eq!(r[6].1, img.manifest_bytes);
    assert_eq!(r[7], r[8]);
    assert_eq!(r[8].1, layer);
    assert!(r[9].0.starts_with("HTTP/1.1 206"), "{}", r[9].0);
    assert_eq!(r[9].1, &layer[2..7]);

    let page = http_request("GET", &format!("http://127.0.0.1:{port}/metrics"), &[]).unwrap().text();
    assert_eq!(metric(&page, "ociregistry_responses_total{kind=\"manifest\",cache=\"hit\"}"), 5);
    assert_eq!(metric(&page, "ociregistry_responses_total{kind=\"manifest\",cache=\"miss\"}"), 1);
    assert_eq!(metric(&page, "ociregistry_responses_total{kind=\"blob\",cache=\"hit\"}"), 3);
    assert_eq!(metric(&page, "ociregistry_responses_total{kind=\"blob\",cache=\"miss\"}"), 1);
    assert_eq!(metric(&page, "ociregistry_api_errors_total"), 1);
    assert_eq!(metric(&page, "ociregistry_upstream_requests_total{kind=\"manifest\"}"), 1);
    assert_eq!(metric(&page, "ociregistry_kept_answers_total"), 4, "tag GET and HEAD, digest GET, blob GET");
}

/// Drops a committed blob's pages from the page cache; false where the file system keeps them (tmpfs).
fn evict(server: &Server, digest: &str) -> bool {
    use std::os::unix::io::AsRawFd;
    let path = server.image_path.join("blobs/sha256").join(&digest[7..9]).join(&digest[7..]);
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    // SAFETY: advisory call on a valid fd.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    !ociregistry::store::pagecache::resident(f.as_raw_fd(), 0, len)
}

#[test]
fn cold_blob_files_are_read_in_off_the_serving_threads() {
    for (extra, path) in [("blobSend: sendfile\n", "sendfile"), ("", "mapped")] {
        let up = FakeUpstream::start();
        let config = format!("{}{extra}", plain_registry(&up.host()));
        let mut first = Server::start(&config, &[]);
        let big = random_bytes(51, 12 * 1024 * 1024 + 5);
        let small = random_bytes(52, 10 * 1024);
        let (big_d, small_d) = (up.add_blob("cold", big.clone()), up.add_blob("cold", small.clone()));
        for (d, bytes) in [(&big_d, &big), (&small_d, &small)] {
            assert!(first.get(&blob_path(&up, "cold", d), &[]).body == *bytes);
            assert!(wait_committed(&first, d));
        }
        first.stop();
        if !(evict(&first, &big_d) && evict(&first, &small_d)) {
            let why = "the image path's file system (tmpfs?) keeps its pages cached; no cold read to observe";
            common::skipped("cold_blob_files_are_read_in_off_the_serving_threads", why);
            return;
        }
        let port = common::free_port().to_string();
        let server = Server::start_in(&first.image_path, &config, &["--metrics", &port]);
        let scrape = || http_request("GET", &format!("http://127.0.0.1:{port}/metrics"), &[]).unwrap().text();
        let r = server.get(&blob_path(&up, "cold", &big_d), &[]);
        assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
        assert!(r.body == big, "{path}: cold body differs");
        // At least the first 8 MiB chunk was read in elsewhere (the kernel's read-ahead may bring the rest).
        let cold_big = metric(&scrape(), "ociregistry_cold_reads_total");
        assert!((1..=2).contains(&cold_big), "{path}: {cold_big} cold reads");
        // A small blob not in memory is read in whole on a blocking thread, then served from memory.
        let r = server.get(&blob_path(&up, "cold", &small_d), &[]);
        assert!(r.body == small, "{path}: cold small body differs");
        let page = scrape();
        let sent = |p: &str| metric(&page, &format!("ociregistry_body_bytes_sent_total{{path=\"{p}\"}}"));
        assert_eq!(sent(path), big.len() as u64, "{path}: only the large blob went out from its file");
        assert_eq!(sent("memory"), small.len() as u64, "{path}: the small blob went out from memory");
        assert_eq!(metric(&page, "ociregistry_cold_reads_total"), cold_big, "the warmer read no chunk for it");
        assert!(server.get(&blob_path(&up, "cold", &small_d), &[]).body == small);
        let page = scrape();
        assert_eq!(metric(&page, "ociregistry_body_bytes_sent_total{path=\"memory\"}"), 2 * small.len() as u64);
        assert_eq!(up.count("GET", &big_d), 1);
    }
}
