//! Tag freshness (`tagPolicy`): a cached tag is re-checked upstream with a `HEAD` no more often than its
//! policy says (`never`, the default, not at all; a duration at most that often; `always` on every
//! pull; concurrent due pulls share one), a tag moved upstream is picked up once due and not before,
//! a re-check that fails (upstream stopped, hanging, 429) serves the cached manifest and counts it,
//! and the time of the last check survives a restart. Against Debian's docker-registry where a real upstream is needed (tags moved by
//! pushing another image to them with skopeo), and the in-process fake upstream where faults are.
//! Upstream traffic is counted in the upstream's own request log; nothing waits on a clock.

mod common;

use std::path::Path;
use std::time::Duration;

use common::distribution::{Distribution, Mode};
use common::fake_upstream::{FakeUpstream, Fault, Gate};
use common::images::{write_image, ImageInfo, LayerSpec};
use common::{concurrently, free_port, metric, random_bytes, wait_until, Server};
use tempfile::TempDir;

/// A config listing `host` over plain HTTP with `tagPolicy: policy`.
fn config(host: &str, policy: &str) -> String {
    format!("prefetch: false\nregistries:\n  - name: \"{host}\"\n    scheme: http\n    tagPolicy: {policy}\n")
}

fn manifest_path(host: &str, repo: &str, reference: &str) -> String {
    format!("/v2/{host}/{repo}/manifests/{reference}")
}

/// Pushes a one-layer image (distinct per `seed`) to `up` as `repo_tag`.
fn push(up: &Distribution, repo_tag: &str, seed: u64) -> (TempDir, ImageInfo) {
    let layout = tempfile::tempdir().unwrap();
    let image = write_image(layout.path(), "img", ("linux", "amd64"), &[LayerSpec::random(seed, 2000)]);
    up.push(layout.path(), "img", repo_tag, &[]);
    (layout, image)
}

fn pull(server: &Server, host: &str, tag: &str) -> Vec<u8> {
    let r = server.get(&manifest_path(host, "team/app", tag), &[("Accept", "*/*")]);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), server.log());
    r.body
}

fn stale_serves(metrics_port: u16, registry: &str) -> u64 {
    let page = common::http_get(&format!("http://127.0.0.1:{metrics_port}/metrics"), &[]).text();
    metric(&page, &format!("ociregistry_stale_serves_total{{registry=\"{registry}\"}}"))
}

/// The tag's record as the server wrote it.
fn tag_file(image_path: &Path, registry: &str, repo: &str, tag: &str) -> serde_json::Value {
    let path = image_path.join("tags").join(registry).join(repo).join("_tags").join(tag);
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_default()).unwrap_or_default()
}

#[test]
fn a_tag_moved_upstream_is_picked_up_once_its_ttl_is_over_and_never_before() {
    let up = Distribution::start(Mode::Plain);
    let (_a_layout, a) = push(&up, "team/app:v1", 1);
    let host = up.host.clone();
    let hourly = Server::start(&config(&host, "1h"), &[]);
    let never = Server::start(&config(&host, "never"), &[]);
    let every_second = Server::start(&config(&host, "1s"), &[]);
    for server in [&hourly, &never, &every_second] {
        assert_eq!(pull(server, &host, "v1"), a.manifest_bytes);
    }
    let (_b_layout, b) = push(&up, "team/app:v1", 2);
    let heads = up.request_count("HEAD", "/manifests/v1");
    let gets = up.request_count("GET", "/manifests/v1");
    // Not due (1h), or never: the cached manifest, and nothing asked upstream.
    for _ in 0..3 {
        assert_eq!(pull(&hourly, &host, "v1"), a.manifest_bytes);
        assert_eq!(pull(&never, &host, "v1"), a.manifest_bytes);
    }
    assert_eq!(up.request_count("HEAD", "/manifests/v1"), heads, "{:?}", up.requests());
    assert_eq!(up.request_count("GET", "/manifests/v1"), gets, "{:?}", up.requests());
    // Due after a second: re-checked with a HEAD, and the moved tag fetched once.
    let moved = wait_until(Duration::from_secs(20), || pull(&every_second, &host, "v1") == b.manifest_bytes);
    assert!(moved, "{}", every_second.log());
    assert!(up.request_count("HEAD", "/manifests/v1") > heads, "{:?}", up.requests());
    assert_eq!(up.request_count("GET", "/manifests/v1"), gets + 1, "{:?}", up.requests());
    assert_eq!(pull(&every_second, &host, "v1"), b.manifest_bytes);
    let r = every_second.get(&manifest_path(&host, "team/app", &b.manifest_digest), &[("Accept", "*/*")]);
    assert_eq!(r.status, 200, "the new manifest is cached by digest too");
    assert_eq!(pull(&hourly, &host, "v1"), a.manifest_bytes, "still not due");
}

#[test]
fn always_re_checks_with_a_head_on_every_pull_and_latest_follows_always_pull_latest() {
    let up = FakeUpstream::start();
    let first = up.add_image("team/app", "v1", &[random_bytes(1, 3000)]);
    up.add_image("team/app", "latest", &[random_bytes(2, 3000)]);
    let host = up.host();
    let server = Server::start(&config(&host, "always"), &[]);
    for _ in 0..3 {
        assert_eq!(pull(&server, &host, "v1"), first.manifest_bytes);
    }
    assert_eq!(up.count("GET", "/manifests/v1"), 1);
    assert_eq!(up.count("HEAD", "/manifests/v1"), 2, "one HEAD per pull after the first");
    let head = up.requests().into_iter().find(|r| r.method == "HEAD").unwrap();
    let accept = head.header("accept").unwrap_or_default().to_string();
    assert!(accept.contains("application/vnd.oci.image.index.v1+json"), "the fixed Accept: {accept}");
    let second = up.add_image("team/app", "v1", &[random_bytes(3, 3000)]);
    assert_eq!(pull(&server, &host, "v1"), second.manifest_bytes);
    assert_eq!((up.count("HEAD", "/manifests/v1"), up.count("GET", "/manifests/v1")), (3, 2));
    // The default policy (never) with --always-pull-latest: latest is re-checked, other tags are not.
    let server = Server::start(&config(&host, "never"), &["--always-pull-latest"]);
    up.clear_log();
    for _ in 0..3 {
        pull(&server, &host, "latest");
        pull(&server, &host, "v1");
    }
    assert_eq!((up.count("GET", "/manifests/latest"), up.count("HEAD", "/manifests/latest")), (1, 2));
    assert_eq!((up.count("GET", "/manifests/v1"), up.count("HEAD", "/manifests/v1")), (1, 0));
}

#[test]
fn a_stopped_upstream_serves_the_stale_tag_and_counts_it() {
    let mut up = Distribution::start(Mode::Plain);
    let (_layout, a) = push(&up, "team/app:v1", 3);
    let host = up.host.clone();
    let metrics_port = free_port();
    let server = Server::start(&config(&host, "always"), &["--metrics", &metrics_port.to_string()]);
    assert_eq!(pull(&server, &host, "v1"), a.manifest_bytes);
    assert_eq!(stale_serves(metrics_port, &host), 0);
    up.stop();
    // Refused, then (after 5 refusals) the open circuit: the cached manifest every time.
    for _ in 0..8 {
        assert_eq!(pull(&server, &host, "v1"), a.manifest_bytes);
    }
    assert_eq!(stale_serves(metrics_port, &host), 8);
    let logged = |s: &Server| s.log().matches("tag re-check failed").count();
    assert!(wait_until(Duration::from_secs(5), || logged(&server) >= 1), "{}", server.log());
    assert!(logged(&server) < 8, "rate-limited: {}", logged(&server));
}

#[test]
fn a_hanging_or_rate_limiting_upstream_serves_the_stale_tag() {
    let up = FakeUpstream::start();
    let img = up.add_image("team/app", "v1", &[random_bytes(4, 3000)]);
    let host = up.host();
    let metrics_port = free_port();
    let server = Server::start(&config(&host, "always"), &["--metrics", &metrics_port.to_string()]);
    assert_eq!(pull(&server, &host, "v1"), img.manifest_bytes);
    up.set_fault("/manifests/v1", Fault::Hang, Some(1));
    assert_eq!(pull(&server, &host, "v1"), img.manifest_bytes, "a re-check is bounded well under the pull timeout");
    up.set_fault("/manifests/v1", Fault::Status(429, vec![("Retry-After".into(), "30".into())]), Some(1));
    assert_eq!(pull(&server, &host, "v1"), img.manifest_bytes);
    // The 429 opened the circuit for 30 s: re-checks fail fast, still served.
    assert_eq!(pull(&server, &host, "v1"), img.manifest_bytes);
    assert_eq!(stale_serves(metrics_port, &host), 3);
    assert_eq!(up.count("HEAD", "/manifests/v1"), 2, "nothing sent while the circuit is open");
}

#[test]
fn the_time_of_the_last_check_survives_a_restart() {
    let up = FakeUpstream::start();
    let img = up.add_image("team/app", "v1", &[random_bytes(5, 3000)]);
    let host = up.host();
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let mut server = Server::start_in(&images, &config(&host, "1h"), &[]);
    assert_eq!(pull(&server, &host, "v1"), img.manifest_bytes);
    assert!(wait_until(Duration::from_secs(10), || tag_file(&images, &host, "team/app", "v1")["fetchedAt"].is_u64()));
    server.stop();
    // Make the tag two hours old, as if fetched and last checked then.
    let mut record = tag_file(&images, &host, "team/app", "v1");
    let old = record["fetchedAt"].as_u64().unwrap() - 7200;
    record["fetchedAt"] = old.into();
    record["lastCheckedAt"] = old.into();
    let path = images.join("tags").join(&host).join("team/app/_tags/v1");
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
    // Due: one HEAD, same digest; the check time is written (in a batch), the fetch time kept.
    up.clear_log();
    let mut server = Server::start_in(&images, &config(&host, "1h"), &[]);
    assert_eq!(pull(&server, &host, "v1"), img.manifest_bytes);
    assert_eq!((up.count("HEAD", "/manifests/v1"), up.count("GET", "/manifests/v1")), (1, 0));
    let written = wait_until(Duration::from_secs(10), || {
        tag_file(&images, &host, "team/app", "v1")["lastCheckedAt"].as_u64().is_some_and(|t| t > old)
    });
    assert!(written, "{:?}\n{}", tag_file(&images, &host, "team/app", "v1"), server.log());
    assert_eq!(tag_file(&images, &host, "team/app", "v1")["fetchedAt"].as_u64(), Some(old));
    server.stop();
    // After a restart the tag is known to be fresh: not asked again.
    let server = Server::start_in(&images, &config(&host, "1h"), &[]);
    for _ in 0..3 {
        assert_eq!(pull(&server, &host, "v1"), img.manifest_bytes);
    }
    assert_eq!(up.count("HEAD", "/manifests/v1"), 1, "{:?}", up.requests());
}

#[test]
fn concurrent_due_pulls_share_one_re_check() {
    let up = FakeUpstream::start();
    let img = up.add_image("team/app", "v1", &[random_bytes(6, 3000)]);
    let host = up.host();
    let server = std::sync::Arc::new(Server::start(&config(&host, "always"), &[]));
    assert_eq!(pull(&server, &host, "v1"), img.manifest_bytes);
    // Every re-check is held upstream until it times out: the pulls that arrive meanwhile join it.
    let gate = Gate::new();
    up.set_fault("/manifests/v1", Fault::Gate(gate.clone()), None);
    let (s, h) = (server.clone(), host.clone());
    let bodies = concurrently(8, move |_| pull(&s, &h, "v1"));
    assert!(bodies.iter().all(|b| b == &img.manifest_bytes), "each served the cached manifest");
    assert_eq!(up.count("HEAD", "/manifests/v1"), 1, "one re-check for 8 pulls");
    gate.open();
}
