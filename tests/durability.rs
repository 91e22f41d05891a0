//! What the image path holds survives crashes: the records journal, torn by a
//! crash in the middle of an append, loses no committed record, and later
//! appends start on a line boundary.

mod common;

use std::time::Duration;

use common::fake_upstream::FakeUpstream;
use common::{plain_registry, random_bytes, Server};

fn blob_path(up: &FakeUpstream, repo: &str, digest: &str) -> String {
    format!("/v2/{}/{repo}/blobs/{digest}", up.host())
}

/// Waits (bounded) until the journal holds a line naming `digest`.
fn wait_journaled(image_path: &std::path::Path, digest: &str) {
    let journal = image_path.join("index/records.jsonl");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&journal).unwrap_or_default().contains(digest) {
        assert!(std::time::Instant::now() < deadline, "{digest} was not journaled within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_torn_journal_line_costs_no_committed_record() {
    let up = FakeUpstream::start();
    let config = plain_registry(&up.host());
    let dir = tempfile::tempdir().unwrap();
    let image_path = dir.path().join("images");
    let first = up.add_blob("app", random_bytes(1, 10_000));
    let second = up.add_blob("app", random_bytes(2, 10_000));

    let mut server = Server::start_in(&image_path, &config, &[]);
    assert_eq!(server.get(&blob_path(&up, "app", &first), &[]).status, 200);
    wait_journaled(&image_path, &first);
    server.stop();
    // A crash in the middle of the next append leaves half a line.
    let journal = image_path.join("index/records.jsonl");
    let mut text = std::fs::read(&journal).unwrap();
    text.extend_from_slice(br#"{"digest":"sha256:0123"#);
    std::fs::write(&journal, text).unwrap();

    let mut server = Server::start_in(&image_path, &config, &[]);
    assert!(server.log().contains("torn line"), "the cut is reported:\n{}", server.log());
    assert_eq!(server.get(&blob_path(&up, "app", &second), &[]).status, 200);
    wait_journaled(&image_path, &second);
    server.stop();

    let server = Server::start_in(&image_path, &config, &["--air-gapped"]);
    for digest in [&first, &second] {
        let r = server.get(&blob_path(&up, "app", digest), &[]);
        assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")), "{digest}: {}", r.text());
    }
    assert!(!server.log().contains("skipped unreadable lines"), "no line was lost:\n{}", server.log());
    let lines = std::fs::read_to_string(&journal).unwrap();
    assert!(lines.ends_with('\n') && lines.lines().all(|l| l.starts_with('{') && l.ends_with('}')), "{lines}");
}
