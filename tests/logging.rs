//! Log formats and request ids: with `--log-format json` every line the server writes is one JSON
//! object, and the lines a request causes on its serving thread (an upstream failure's warning and
//! its access line) share one `span.id`; a client's plain `X-Request-Id` becomes that id, a hostile
//! one is ignored. Text lines carry the id as `request{id=…}`. The fetcher's lines for a fetch carry
//! the id of the request that started it, also when other requests joined it.

mod common;

use std::time::Duration;

use common::fake_upstream::{FakeUpstream, Fault, Gate};
use common::{free_port, http_request, metric, plain_registry, wait_until, Server};
use serde_json::Value;

/// Every line of the server's log, each of which must be a JSON object.
fn json_lines(server: &Server) -> Vec<Value> {
    let log = server.log();
    let parse = |l: &str| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"));
    let lines: Vec<Value> = log.lines().map(parse).collect();
    assert!(lines.iter().all(Value::is_object), "{log}");
    lines
}

/// The access line of the request for `path` that got `status`, once it is written.
fn access_line(server: &Server, path: &str, status: u16) -> Value {
    let find = || {
        json_lines(server).into_iter().find(|l| l["target"] == "access" && l["path"] == path && l["status"] == status)
    };
    assert!(wait_until(Duration::from_secs(10), || find().is_some()), "no access line for {path}:\n{}", server.log());
    find().unwrap()
}

fn span_id(line: &Value) -> &str {
    assert_eq!(line["span"]["name"], "request", "{line}");
    line["span"]["id"].as_str().unwrap_or_else(|| panic!("no span.id: {line}"))
}

#[test]
fn json_lines_share_the_request_id_and_take_a_plain_client_id() {
    let up = FakeUpstream::start();
    up.set_fault("/manifests/", Fault::status(500), None);
    let server = Server::start(&plain_registry(&up.host()), &["--log-format", "json"]);
    let path = format!("/v2/{}/logs/app/manifests/v1", up.host());
    let accept = ("Accept", "application/vnd.oci.image.manifest.v1+json");

    assert_eq!(server.get(&path, &[accept]).status, 502);
    let access = access_line(&server, &path, 502);
    let id = span_id(&access).to_string();
    assert!(id.split_once('-').is_some_and(|(t, n)| t.parse::<u32>().is_ok() && n.parse::<u64>().is_ok()), "{id}");
    let request_lines: Vec<Value> =
        json_lines(&server).into_iter().filter(|l| l["span"]["id"].as_str() == Some(id.as_str())).collect();
    assert!(
        request_lines.iter().any(|l| l["message"] == "upstream failure" && l["level"] == "WARN"),
        "the upstream failure is not logged under the request's id {id}:\n{}",
        server.log()
    );
    assert_eq!(request_lines.iter().filter(|l| l["target"] == "access").count(), 1, "{}", server.log());

    // A client's plain id is used; a hostile one is not.
    let (plain, hostile) = (format!("{path}-plain"), format!("{path}-hostile"));
    assert_eq!(server.get(&plain, &[accept, ("X-Request-Id", "edge-7.a_B")]).status, 502);
    assert_eq!(span_id(&access_line(&server, &plain, 502)), "edge-7.a_B");
    assert_eq!(server.get(&hostile, &[accept, ("X-Request-Id", "x\"}, \"level\": \"ERROR")]).status, 502);
    let other = access_line(&server, &hostile, 502);
    assert!(span_id(&other) != id && !span_id(&other).contains('"'), "{other}");
    let long = "a".repeat(65);
    assert_eq!(server.get(&format!("{path}-long"), &[accept, ("X-Request-Id", &long)]).status, 502);
    assert_ne!(span_id(&access_line(&server, &format!("{path}-long"), 502)), long);
}

#[test]
fn text_lines_name_the_request_id() {
    let server = Server::start("", &["--log-format", "TEXT", "--air-gapped"]);
    assert_eq!(server.get("/v2/", &[("X-Request-Id", "text-id-1")]).status, 200);
    let logged = || server.log().lines().any(|l| l.contains("request{id=text-id-1}: access: ") && l.contains("/v2/"));
    assert!(wait_until(Duration::from_secs(10), logged), "{}", server.log());
    assert!(server.log().lines().all(|l| !l.starts_with('{')), "text format wrote JSON");
}

/// The first line logged with `message`, once it is written.
fn line_with_message(server: &Server, message: &str) -> Value {
    let find = || json_lines(server).into_iter().find(|l| l["message"] == message);
    assert!(wait_until(Duration::from_secs(10), || find().is_some()), "no {message:?} line:\n{}", server.log());
    find().unwrap()
}

#[test]
fn the_fetchers_lines_carry_the_id_of_the_request_that_led_the_fetch() {
    let up = FakeUpstream::start();
    let image = up.add_image("logs/app", "v1", &[b"a layer to log".to_vec()]);
    let gate = Gate::new();
    up.set_fault("/manifests/v1", Fault::Gate(gate.clone()), Some(1));
    let metrics = free_port();
    let server =
        Server::start(&plain_registry(&up.host()), &["--log-format", "json", "--metrics", &metrics.to_string()]);
    let url = server.url(&format!("/v2/{}/logs/app/manifests/v1", up.host()));
    let get = |id: &'static str| {
        let url = url.clone();
        std::thread::spawn(move || http_request("GET", &url, &[("X-Request-Id", id)]).map(|r| r.status))
    };

    // The leader's fetch is held upstream while a second request joins it.
    let leader = get("lead-1");
    assert!(wait_until(Duration::from_secs(10), || gate.held() == 1), "{}", server.log());
    let joiner = get("join-2");
    let coalesced = format!("ociregistry_upstream_coalesced_waiters_total{{registry=\"{}\"}}", up.host());
    let scrape = || http_request("GET", &format!("http://127.0.0.1:{metrics}/metrics"), &[]).unwrap().text();
    assert!(wait_until(Duration::from_secs(10), || metric(&scrape(), &coalesced) == 1), "{}", server.log());
    gate.open();
    assert_eq!(leader.join().unwrap().unwrap(), 200);
    assert_eq!(joiner.join().unwrap().unwrap(), 200);

    let cached = line_with_message(&server, "manifest cached");
    assert_eq!(cached["target"], "ociregistry::fetch::manifest", "{cached}");
    assert_eq!(span_id(&cached), "lead-1", "the fetch is logged under its leader's id: {cached}");
    let fetch_lines = |id: &str| {
        json_lines(&server)
            .into_iter()
            .filter(|l| l["target"].as_str().is_some_and(|t| t.starts_with("ociregistry::fetch")))
            .filter(|l| l["span"]["id"].as_str() == Some(id))
            .count()
    };
    assert_eq!(fetch_lines("join-2"), 0, "the joiner led no fetch:\n{}", server.log());

    // A blob miss: its download's lines carry the id of the request that started it.
    let blob = format!("/v2/{}/logs/app/blobs/{}", up.host(), image.layer_digests[0]);
    assert_eq!(server.get(&blob, &[("X-Request-Id", "blob-3")]).status, 200);
    let cached = line_with_message(&server, "blob cached");
    assert_eq!(span_id(&cached), "blob-3", "{cached}");
    assert_eq!(span_id(&access_line(&server, &blob, 200)), "blob-3");
}

#[test]
fn text_lines_of_the_fetcher_name_the_request_id() {
    let up = FakeUpstream::start();
    up.add_image("logs/app", "v1", &[b"text layer".to_vec()]);
    let server = Server::start(&plain_registry(&up.host()), &["--log-format", "text"]);
    let path = format!("/v2/{}/logs/app/manifests/v1", up.host());
    assert_eq!(server.get(&path, &[("X-Request-Id", "text-miss-1")]).status, 200);
    let logged = || {
        server.log().lines().any(|l| {
            l.contains("request{id=text-miss-1}: ociregistry::fetch::manifest: ") && l.contains("manifest cached")
        })
    };
    assert!(wait_until(Duration::from_secs(10), logged), "{}", server.log());
}
