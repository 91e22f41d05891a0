//! `--metrics PORT` against the real binary and an in-process fake upstream:
//! the Go ociregistry's series keep their names and count what Go counts,
//! bytes and objects on disk follow the store through pulls and a prune, the
//! per-upstream series (latency, errors by kind, rate limit, coalescing,
//! downloads in flight) move as the upstream behaves, made-up `ns` values
//! never become labels, every scrape is a valid exposition, and the Grafana
//! dashboard queries only what the binary exposes; without `--host` the
//! metrics port listens on every interface, as in Go.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::fake_upstream::{FakeUpstream, Fault, Gate};
use common::{free_port, http_request, metric, plain_registry, random_bytes, wait_until, Server};

/// A server with `--metrics` on a free port.
struct Scraped {
    server: Server,
    port: u16,
}

impl Scraped {
    fn start(config: &str) -> Scraped {
        let port = free_port();
        let server = Server::start(config, &["--metrics", &port.to_string()]);
        Scraped { server, port }
    }

    /// A scrape, checked to be a valid exposition.
    fn scrape(&self) -> (String, Exposition) {
        let r = http_request("GET", &format!("http://127.0.0.1:{}/metrics", self.port), &[]).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
        let page = r.text();
        let parsed = parse_exposition(&page);
        (page, parsed)
    }
}

/// What a scrape declares and holds.
struct Exposition {
    /// Sample name → label sets (in order).
    samples: BTreeMap<String, Vec<BTreeMap<String, String>>>,
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// Parses `{k="v",...}` with the format's escapes (`\\`, `\"`, `\n`); returns the labels and the rest.
fn parse_labels(mut s: &str, line: &str) -> (BTreeMap<String, String>, String) {
    let mut labels = BTreeMap::new();
    s = s.strip_prefix('{').unwrap();
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return (labels, rest.to_string());
        }
        let (key, rest) = s.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line:?}"));
        assert!(valid_name(key) && !key.contains(':'), "bad label name {key:?} in {line:?}");
        let mut value = String::new();
        let mut chars = rest.chars();
        loop {
            match chars.next().unwrap_or_else(|| panic!("unterminated label value in {line:?}")) {
                '"' => break,
                '\\' => match chars.next() {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                c => value.push(c),
            }
        }
        assert!(labels.insert(key.to_string(), value).is_none(), "label {key} twice in {line:?}");
        s = chars.as_str();
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

/// Checks the Prometheus text format 0.0.4: each sample belongs to a family
/// declared by an earlier `# TYPE` (histograms through `_bucket` with `le`,
/// `_sum`, `_count`), names and label names are valid, label values are
/// escaped, values are numbers, no series appears twice.
fn parse_exposition(page: &str) -> Exposition {
    let mut families = BTreeMap::new();
    let mut samples: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(valid_name(name), "bad family name {name:?}");
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{line}");
            assert!(families.insert(name.to_string(), kind.to_string()).is_none(), "{name} typed twice");
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value in {line:?}"));
        let name = &line[..name_end];
        assert!(valid_name(name), "bad sample name {name:?}");
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..], line)
        } else {
            (BTreeMap::new(), line[name_end..].to_string())
        };
        let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value {value:?} in {line:?}"
        );
        let family = if families.contains_key(name) {
            name
        } else {
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s));
            let base = base.filter(|b| families.get(*b).is_some_and(|k| k == "histogram"));
            base.unwrap_or_else(|| panic!("sample {name} has no # TYPE before it"))
        };
        if families[family] == "histogram" {
            assert_ne!(name, family, "a histogram's samples are _bucket, _sum and _count");
            assert_eq!(name.ends_with("_bucket"), labels.contains_key("le"), "{line}");
        }
        assert!(seen.insert(format!("{name}{labels:?}")), "series twice: {line}");
        samples.entry(name.to_string()).or_default().push(labels);
    }
    Exposition { samples }
}

fn manifest_path(up: &FakeUpstream, repo: &str, reference: &str) -> String {
    format!("/v2/{}/{repo}/manifests/{reference}", up.host())
}

fn blob_path(up: &FakeUpstream, repo: &str, digest: &str) -> String {
    format!("/v2/{}/{repo}/blobs/{digest}", up.host())
}

fn committed(server: &Server, digest: &str) -> bool {
    let file = server.image_path.join("blobs/sha256").join(&digest[7..9]).join(&digest[7..]);
    let exists = wait_until(Duration::from_secs(10), || file.exists());
    // The record is journaled right after the rename.
    std::thread::sleep(Duration::from_millis(100));
    exists
}

/// Bytes of every file under `dir`, walked (at most 4 levels, as the layout has 2).
fn bytes_under(dir: &Path, depth: usize) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() && depth < 4 => bytes_under(&e.path(), depth + 1),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

#[test]
fn go_series_count_pulls_by_namespace_and_disk_follows_the_store_through_a_prune() {
    let up = FakeUpstream::start();
    let s = Scraped::start(&plain_registry(&up.host()));
    let (ns, server) = (up.host(), &s.server);
    let layer = random_bytes(7, 300_000);
    let img = up.add_image("team/app", "v1", std::slice::from_ref(&layer));
    let tag = manifest_path(&up, "team/app", "v1");
    for _ in 0..2 {
        let r = server.get(&tag, &[("Accept", common::fake_upstream::OCI_MANIFEST)]);
        assert_eq!(r.status, 200);
    }
    let blob = blob_path(&up, "team/app", &img.layer_digests[0]);
    assert!(server.get(&blob, &[]).body == layer);
    assert!(committed(server, &img.layer_digests[0]));
    assert!(server.get(&blob, &[]).body == layer);
    assert_eq!(server.get(&blob_path(&up, "team/app", &common::fake_upstream::sha256_digest(b"no")), &[]).status, 404);

    // The download's task counts itself out just after its commit is visible: wait for it (bounded).
    let in_flight = format!("ociregistry_upstream_downloads_in_flight{{registry=\"{ns}\"}}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let page = loop {
        let (page, _) = s.scrape();
        if metric(&page, &in_flight) == 0 || std::time::Instant::now() > deadline {
            break page;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let m = |series: &str| metric(&page, series);
    // The standard process series Go's client exports, unprefixed, read from the server's /proc.
    let f = |series: &str| -> f64 {
        let v = page.lines().find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')));
        v.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{series} is not in the page:\n{page}"))
    };
    for (name, kind) in [
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_start_time_seconds", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
    ] {
        assert!(page.contains(&format!("# TYPE {name} {kind}\n")), "{name} {kind}:\n{page}");
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let started = f("process_start_time_seconds");
    assert!(started > now - 300.0 && started <= now + 1.0, "the server started just now: {started} vs {now}");
    assert!(f("process_open_fds") >= 3.0 && f("process_open_fds") <= f("process_max_fds"), "{page}");
    assert!(f("process_resident_memory_bytes") > 1e6 && f("process_cpu_seconds_total") >= 0.0, "{page}");
    // Go: a manifest pulled twice, first from upstream, then from the cache.
    assert_eq!(m("ociregistry_manifest_pulls_total"), 2);
    assert_eq!(m(&format!("ociregistry_upstream_pulls_by_ns{{ns=\"{ns}\"}}")), 1);
    assert_eq!(m(&format!("ociregistry_cached_pulls_by_ns_total{{ns=\"{ns}\"}}")), 1);
    assert_eq!(m("ociregistry_blob_pulls_total"), 2);
    assert_eq!(m("ociregistry_v2_api_endpoint_hits_total"), 5);
    assert_eq!(m("ociregistry_api_errors_total"), 1);
    assert!(page.contains("# TYPE ociregistry_upstream_pulls_by_ns untyped\n"), "{page}");
    assert!(page.contains("# TYPE ociregistry_cached_manifest_count gauge\n"), "{page}");
    // Ours, per upstream.
    assert_eq!(m(&format!("ociregistry_upstream_hits_total{{registry=\"{ns}\",kind=\"manifest\"}}")), 1);
    assert_eq!(m(&format!("ociregistry_upstream_misses_total{{registry=\"{ns}\",kind=\"manifest\"}}")), 1);
    assert_eq!(m(&format!("ociregistry_upstream_hits_total{{registry=\"{ns}\",kind=\"blob\"}}")), 1);
    assert_eq!(m(&format!("ociregistry_upstream_misses_total{{registry=\"{ns}\",kind=\"blob\"}}")), 1);
    let served = 2 * img.manifest_bytes.len() as u64 + 2 * layer.len() as u64;
    assert_eq!(m(&format!("ociregistry_upstream_bytes_served_total{{registry=\"{ns}\"}}")), served);
    assert_eq!(m(&format!("ociregistry_upstream_bytes_fetched_total{{registry=\"{ns}\"}}")), layer.len() as u64);
    let requests = up.requests().len() as u64;
    assert_eq!(m(&format!("ociregistry_upstream_request_duration_seconds_count{{registry=\"{ns}\"}}")), requests);
    assert_eq!(m(&format!("ociregistry_upstream_downloads_in_flight{{registry=\"{ns}\"}}")), 0);
    // On disk: the manifest and the pulled layer, by the store's totals and by a walk.
    let blobs_dir = server.image_path.join("blobs");
    assert_eq!(m("ociregistry_manifest_bytes_on_disk_total"), img.manifest_bytes.len() as u64);
    assert_eq!(m("ociregistry_blob_bytes_on_disk_total"), layer.len() as u64);
    // As Go counts it: the manifest by its tag and by its digest.
    assert_eq!((m("ociregistry_cached_manifest_count"), m("ociregistry_cached_blob_count")), (2, 1));
    assert_eq!(bytes_under(&blobs_dir, 0), (img.manifest_bytes.len() + layer.len()) as u64);
    // A second tag for the same manifest is one more reference (its digest is one already).
    up.set_tag("team/app", "v1-again", &img.manifest_digest);
    let again = manifest_path(&up, "team/app", "v1-again");
    assert_eq!(server.get(&again, &[("Accept", common::fake_upstream::OCI_MANIFEST)]).status, 200);
    let (page, _) = s.scrape();
    assert_eq!(metric(&page, "ociregistry_cached_manifest_count"), 3);
    assert_eq!(metric(&page, "ociregistry_manifest_bytes_on_disk_total"), img.manifest_bytes.len() as u64);

    let prune = http_request("DELETE", &server.url("/cmd/prune?type=pattern&expr=team/app&dryRun=false"), &[]).unwrap();
    assert_eq!(prune.status, 200, "{}", prune.text());
    let (page, _) = s.scrape();
    let m = |series: &str| metric(&page, series);
    assert_eq!(bytes_under(&blobs_dir, 0), 0, "the prune removed the image");
    assert_eq!(m("ociregistry_manifest_bytes_on_disk_total") + m("ociregistry_blob_bytes_on_disk_total"), 0);
    assert_eq!((m("ociregistry_cached_manifest_count"), m("ociregistry_cached_blob_count")), (0, 0));

    // Pulled again: counted again, from upstream.
    assert_eq!(server.get(&tag, &[]).status, 200);
    let (page, _) = s.scrape();
    assert_eq!(metric(&page, &format!("ociregistry_upstream_pulls_by_ns{{ns=\"{ns}\"}}")), 3);
    assert_eq!(metric(&page, "ociregistry_cached_manifest_count"), 2);
    assert_eq!(metric(&page, "ociregistry_manifest_bytes_on_disk_total"), img.manifest_bytes.len() as u64);
}

#[test]
fn upstream_series_follow_rate_limits_errors_coalescing_and_downloads_in_flight() {
    let up = FakeUpstream::start();
    let s = Scraped::start(&plain_registry(&up.host()));
    let (ns, server) = (up.host(), &s.server);
    let series = |family: &str| format!("ociregistry_{family}{{registry=\"{ns}\"}}");
    let errors = |kind: &str| format!("ociregistry_upstream_errors_total{{registry=\"{ns}\",kind=\"{kind}\"}}");
    up.add_image("hub/a", "v1", &[b"a".to_vec()]);
    up.add_image("hub/a", "v2", &[b"b".to_vec()]);
    up.add_image("hub/a", "v3", &[b"c".to_vec()]);

    // Docker Hub's header, parsed strictly: a malformed value leaves the last one standing.
    let (page, _) = s.scrape();
    assert!(!page.contains(&series("upstream_ratelimit_remaining")), "nothing announced yet");
    let hub = |v: &str| Fault::Headers(vec![("ratelimit-remaining".into(), v.into())]);
    up.set_fault("/manifests/v1", hub("76;w=21600"), None);
    assert_eq!(server.get(&manifest_path(&up, "hub/a", "v1"), &[]).status, 200);
    assert_eq!(metric(&s.scrape().0, &series("upstream_ratelimit_remaining")), 76);
    up.clear_faults();
    up.set_fault("/manifests/v2", hub("75;w=21600;evil=1"), None);
    assert_eq!(server.get(&manifest_path(&up, "hub/a", "v2"), &[]).status, 200);
    assert_eq!(metric(&s.scrape().0, &series("upstream_ratelimit_remaining")), 76);
    up.clear_faults();

    // Errors by kind, one per upstream answer.
    up.set_fault("/manifests/e500", Fault::status(500), None);
    assert!(server.get(&manifest_path(&up, "hub/a", "e500"), &[]).status >= 500);
    up.set_fault("/manifests/e429", Fault::status(429), None);
    assert_eq!(server.get(&manifest_path(&up, "hub/a", "e429"), &[]).status, 429);
    up.clear_faults();
    let (page, _) = s.scrape();
    assert_eq!(metric(&page, &errors("server_error")), up.count("GET", "/manifests/e500") as u64);
    assert_eq!(metric(&page, &errors("rate_limited")), up.count("GET", "/manifests/e429") as u64);
    assert!(metric(&page, &errors("rate_limited")) >= 1);
    assert_eq!(metric(&page, &errors("timeout")), 0);

    // Two clients of one blob: one download, the second joins it; in flight until it ends.
    let layer = random_bytes(3, 200_000);
    let digest = up.add_blob("hub/a", layer.clone());
    let gate = Gate::new();
    up.set_fault(&digest, Fault::GateAfter(1000, gate.clone()), Some(1));
    let url = server.url(&blob_path(&up, "hub/a", &digest));
    let clients: Vec<_> = (0..2)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300 * i));
                http_request("GET", &url, &[]).map(|r| r.body)
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(10), || {
        let page = s.scrape().0;
        metric(&page, &series("upstream_coalesced_waiters_total")) == 1
            && metric(&page, &series("upstream_downloads_in_flight")) == 1
    }));
    gate.open();
    for c in clients {
        assert!(c.join().unwrap().unwrap() == layer);
    }
    assert!(committed(server, &digest));
    assert!(wait_until(Duration::from_secs(5), || metric(&s.scrape().0, &series("upstream_downloads_in_flight")) == 0));
    assert_eq!(metric(&s.scrape().0, &series("upstream_coalesced_waiters_total")), 1);
}

#[test]
fn made_up_namespaces_never_become_labels() {
    let up = FakeUpstream::start();
    let s = Scraped::start(&plain_registry(&up.host()));
    let (ns, server) = (up.host(), &s.server);
    let img = up.add_image("team/app", "v1", &[b"layer".to_vec()]);
    assert_eq!(server.get(&manifest_path(&up, "team/app", &img.manifest_digest), &[]).status, 200);
    let blob = format!("/v2/team/app/blobs/{}", img.layer_digests[0]);
    assert_eq!(server.get(&format!("{blob}?ns={ns}"), &[]).status, 200);
    assert!(committed(server, &img.layer_digests[0]));
    // Cached content asked for under 40 made-up upstreams, and names that are no host at all.
    let manifest = format!("/v2/team/app/manifests/{}", img.manifest_digest);
    for i in 0..40 {
        assert_eq!(server.get(&format!("{blob}?ns=evil{i}.example"), &[]).status, 200);
        assert_eq!(server.get(&format!("{manifest}?ns=evil{i}.example"), &[]).status, 200);
    }
    for hostile in ["a%22b", "a%0Ab", "a%5Cb", "%7B%7D", &"x".repeat(300)] {
        assert_ne!(server.get(&format!("{blob}?ns={hostile}"), &[]).status, 200, "{hostile}");
    }
    // Uncached content from unlisted upstreams (refused: loopback is not public): the fetcher
    // builds a client for each, whose series are summed into `other`.
    for i in 2..22 {
        let r = server.get(&format!("/v2/team/app/manifests/v9?ns=127.0.0.{i}:9"), &[]);
        assert_ne!(r.status, 200);
    }
    let (page, parsed) = s.scrape();
    assert!(!page.contains("evil") && !page.contains("127.0.0.2:9") && !page.contains("127.0.0.21:9"), "{page}");
    assert_eq!(metric(&page, "ociregistry_cached_pulls_by_ns_total{ns=\"other\"}"), 40);
    assert_eq!(metric(&page, &format!("ociregistry_upstream_pulls_by_ns{{ns=\"{ns}\"}}")), 1);
    assert_eq!(metric(&page, "ociregistry_upstream_hits_total{registry=\"other\",kind=\"blob\"}"), 40);
    assert_eq!(
        metric(&page, "ociregistry_upstream_bytes_served_total{registry=\"other\"}"),
        40 * (5 + img.manifest_bytes.len() as u64)
    );
    let labels: BTreeSet<&str> =
        parsed.samples["ociregistry_cached_pulls_by_ns_total"].iter().map(|l| l["ns"].as_str()).collect();
    assert_eq!(labels, BTreeSet::from([ns.as_str(), "other"]));
}

/// Metric names in a PromQL expression: identifiers starting `ociregistry_`.
fn names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("ociregistry_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| exprs(i, out)),
        _ => {}
    }
}

#[test]
fn the_grafana_dashboard_queries_only_what_the_binary_exposes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/ociregistry-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let titles: Vec<&str> =
        dashboard["panels"].as_array().unwrap().iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in ["Cache hit ratio", "Upstream latency", "Circuit state", "Rate limit remaining", "Blob bytes on disk"]
    {
        assert!(titles.contains(&wanted), "no panel {wanted:?} in {titles:?}");
    }
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    let used: BTreeSet<String> = all.iter().flat_map(|e| names_in(e)).collect();
    assert!(used.len() >= 20, "{used:?}");

    // A scrape with every kind of series present: a pull, and an upstream announcing its rate limit.
    let up = FakeUpstream::start();
    let s = Scraped::start(&plain_registry(&up.host()));
    up.add_image("team/app", "v1", &[b"layer".to_vec()]);
    up.set_fault("/manifests/", Fault::Headers(vec![("ratelimit-remaining".into(), "9".into())]), None);
    assert_eq!(s.server.get(&manifest_path(&up, "team/app", "v1"), &[]).status, 200);
    let (_, parsed) = s.scrape();
    for name in &used {
        assert!(parsed.samples.contains_key(name), "the dashboard queries {name}, which a scrape does not hold");
    }
}

#[test]
fn the_exposition_check_refuses_invalid_pages() {
    let good = "# TYPE a_total counter\na_total{x=\"q\\\"\\\\\\n\"} 1\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n";
    parse_exposition(good);
    for bad in [
        "a_total 1\n",                                    // no # TYPE
        "# TYPE a counter\na{x=\"\\q\"} 1\n",             // unknown escape
        "# TYPE a counter\na{x=\"1\"} 1\na{x=\"1\"} 2\n", // a series twice
        "# TYPE 1a counter\n1a 1\n",                      // bad name
        "# TYPE a counter\na{x-y=\"1\"} 1\n",             // bad label name
        "# TYPE a counter\na one\n",                      // not a number
        "# TYPE h histogram\nh 1\n",                      // a histogram's bare name
        "# TYPE h histogram\nh_bucket 1\n",               // a bucket without le
        "# TYPE a counter\n# TYPE a counter\na 1\n",      // typed twice
    ] {
        assert!(std::panic::catch_unwind(|| parse_exposition(bad)).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn the_metrics_listener_binds_the_host_address_only() {
    let up = FakeUpstream::start();
    let port = free_port();
    let _server = Server::start(&plain_registry(&up.host()), &["--host", "::1", "--metrics", &port.to_string()]);
    let page = http_request("GET", &format!("http://[::1]:{port}/metrics"), &[]).unwrap();
    assert_eq!(page.status, 200);
    parse_exposition(&page.text());
    let v4 = http_request("GET", &format!("http://127.0.0.1:{port}/metrics"), &[]);
    assert!(v4.is_err(), "--host ::1 limits the metrics listener to ::1");
}

#[test]
fn clients_that_wait_for_another_clients_manifest_fetch_count_as_cached_pulls_as_in_go() {
    let up = FakeUpstream::start();
    let s = Scraped::start(&plain_registry(&up.host()));
    let ns = up.host();
    up.add_image("team/app", "v1", &[b"layer".to_vec()]);
    let gate = Gate::new();
    up.set_fault("/manifests/v1", Fault::Gate(gate.clone()), Some(1));
    let url = s.server.url(&manifest_path(&up, "team/app", "v1"));
    let clients: Vec<_> = (0..3)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200 * i));
                http_request("GET", &url, &[]).map(|r| r.status)
            })
        })
        .collect();
    let coalesced = format!("ociregistry_upstream_coalesced_waiters_total{{registry=\"{ns}\"}}");
    assert!(wait_until(Duration::from_secs(10), || gate.held() == 1 && metric(&s.scrape().0, &coalesced) == 2));
    gate.open();
    for c in clients {
        assert_eq!(c.join().unwrap().unwrap(), 200);
    }
    assert_eq!(up.count("GET", "/manifests/v1"), 1);
    let (page, _) = s.scrape();
    assert_eq!(metric(&page, &format!("ociregistry_upstream_pulls_by_ns{{ns=\"{ns}\"}}")), 1);
    assert_eq!(metric(&page, &format!("ociregistry_cached_pulls_by_ns_total{{ns=\"{ns}\"}}")), 2);
    assert_eq!(metric(&page, &format!("ociregistry_upstream_misses_total{{registry=\"{ns}\",kind=\"manifest\"}}")), 3);
    assert_eq!(metric(&page, "ociregistry_manifest_pulls_total"), 3);
}

/// The local addresses (`/proc/net/tcp` and `tcp6` hex form) listening on `port`.
fn listening_on(port: u16) -> Vec<String> {
    let port = format!("{port:04X}");
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ...; st 0A is LISTEN.
            if let (Some(local), Some("0A")) = (fields.get(1), fields.get(3).copied()) {
                if local.rsplit(':').next() == Some(port.as_str()) {
                    out.push(local.to_string());
                }
            }
        }
    }
    out
}

#[test]
fn without_host_the_metrics_port_listens_on_every_interface() {
    let port = free_port();
    let server = Server::start_on_default_host("", &["--metrics", &port.to_string()]);
    let listening = listening_on(port);
    assert_eq!(listening, vec![format!("00000000:{port:04X}")], "metrics must listen on 0.0.0.0: {}", server.log());
    let r = http_request("GET", &format!("http://127.0.0.1:{port}/metrics"), &[]).unwrap();
    assert_eq!(r.status, 200);
}
