//! The real binary against an upstream that sends hostile values: nothing an
//! upstream sends reaches a header of ours, a record on disk, or a kept answer
//! unless it is valid, and records already on disk with such values are
//! dropped when the cache is loaded.

mod common;

use std::time::Duration;

use common::fake_upstream::{sha256_digest, FakeUpstream, OCI_MANIFEST};
use common::{plain_registry, Server};

const INJECTED: &str = "application/vnd.oci.image.manifest.v1+json\r\nX-Injected: yes";

fn manifest_path(up: &FakeUpstream, repo: &str, reference: &str) -> String {
    format!("/v2/{}/{repo}/manifests/{reference}", up.host())
}

/// An image manifest whose `mediaType` is `media_type`, with no layers.
fn manifest_with_media_type(media_type: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256_digest(b"{}"),
            "size": 2
        },
        "layers": []
    }))
    .unwrap()
}

#[test]
fn a_media_type_with_a_header_injection_is_refused_and_never_written_as_a_header() {
    let up = FakeUpstream::start();
    let server = Server::start(&plain_registry(&up.host()), &[]);
    let body = manifest_with_media_type(INJECTED);
    let digest = up.add_manifest("evil/app", Some("v1"), "application/json", body);

    for path in [manifest_path(&up, "evil/app", "v1"), manifest_path(&up, "evil/app", &digest)] {
        for round in 0..2 {
            let r = server.get(&path, &[]);
            assert_eq!(r.status, 502, "GET {path} (round {round}): {}", r.text());
            assert_eq!(r.header("x-injected"), None, "GET {path}");
            assert!(r.text().contains("invalid media type"), "{}", r.text());
            let r = server.head(&path, &[]);
            assert_eq!((r.status, r.header("x-injected")), (502, None), "HEAD {path}");
        }
    }
    let journal = std::fs::read_to_string(server.image_path.join("index/records.jsonl")).unwrap_or_default();
    assert!(!journal.contains("X-Injected"), "nothing refused is journaled: {journal}");
    assert!(!server.image_path.join("tags").join(up.host()).join("evil").exists(), "no tag record was written");

    // A valid manifest from the same upstream is served as usual afterwards.
    let good = up.add_manifest("evil/app", Some("v2"), OCI_MANIFEST, manifest_with_media_type(OCI_MANIFEST));
    let r = server.get(&manifest_path(&up, "evil/app", "v2"), &[]);
    assert_eq!((r.status, r.header("docker-content-digest")), (200, Some(good.as_str())), "{}", r.text());
}

#[test]
fn records_on_disk_with_an_invalid_media_type_are_dropped_at_load() {
    let up = FakeUpstream::start();
    let config = plain_registry(&up.host());
    let dir = tempfile::tempdir().unwrap();
    let image_path = dir.path().join("images");
    let good = up.add_manifest("app", Some("good"), OCI_MANIFEST, manifest_with_media_type(OCI_MANIFEST));
    let docker_type = "application/vnd.docker.distribution.manifest.v2+json";
    let bad = up.add_manifest("app", Some("bad"), docker_type, manifest_with_media_type(docker_type));
    let tag_file = image_path.join("tags").join(up.host()).join("app/_tags/bad");
    {
        let mut server = Server::start_in(&image_path, &config, &[]);
        for tag in ["good", "bad"] {
            assert_eq!(server.get(&manifest_path(&up, "app", tag), &[]).status, 200, "{tag}");
        }
        let journaled = || std::fs::read_to_string(image_path.join("index/records.jsonl")).unwrap_or_default();
        let done = || journaled().lines().count() >= 2 && tag_file.exists();
        assert!(common::wait_until(Duration::from_secs(10), done), "records and tag written within 10 s");
        server.stop();
    }
    // What an older release (or a hand edit) could have left on disk: the same
    // records with a header injection in their media type.
    let journal = image_path.join("index/records.jsonl");
    let text = std::fs::read_to_string(&journal).unwrap();
    let injected = text
        .lines()
        .map(|l| {
            if l.contains(&bad) {
                l.replace(docker_type, "application/x\\r\\nX-Injected: yes")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    assert_ne!(text, injected, "the journal names the bad manifest's media type:\n{text}");
    std::fs::write(&journal, injected).unwrap();
    let tag = std::fs::read_to_string(&tag_file).unwrap();
    std::fs::write(&tag_file, tag.replace(docker_type, "application/x\\r\\nX-Injected: yes")).unwrap();

    let server = Server::start_in(&image_path, &config, &["--air-gapped"]);
    for reference in ["bad", bad.as_str()] {
        let r = server.get(&manifest_path(&up, "app", reference), &[]);
        assert_eq!((r.status, r.header("x-injected")), (404, None), "{reference}: {}", r.text());
    }
    let r = server.get(&manifest_path(&up, "app", "good"), &[]);
    assert_eq!((r.status, r.header("docker-content-digest")), (200, Some(good.as_str())), "{}", r.text());
    assert!(server.log().contains("skipped unreadable lines in the records journal"), "{}", server.log());
}
