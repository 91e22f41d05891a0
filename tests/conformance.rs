//! Answers the OCI distribution-spec conformance suite (pull workflow) checks:
//! what is unknown is 404 with the right OCI error code, by GET and by HEAD,
//! whether the reference is a tag or digest nobody has, or no valid reference
//! at all; an invalid digest in a blob path is a bad request.

mod common;

use common::fake_upstream::FakeUpstream;
use common::{plain_registry, Server};

fn error_code(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    v["errors"][0]["code"].as_str().unwrap_or_default().to_string()
}

#[test]
fn unknown_and_invalid_manifest_references_are_404_manifest_unknown() {
    let up = FakeUpstream::start();
    let server = Server::start(&plain_registry(&up.host()), &[]);
    up.add_image("conformance/app", "v1", &[b"layer".to_vec()]);
    let random_digest = format!("sha256:{}", "ab".repeat(32));
    for reference in ["no-such-tag-4f1c", random_digest.as_str(), ".INVALID_MANIFEST_NAME", "sha256:totallywrong"] {
        let path = format!("/v2/{}/conformance/app/manifests/{reference}", up.host());
        let r = server.get(&path, &[]);
        assert_eq!(r.status, 404, "GET {reference}: {}", r.text());
        assert_eq!(error_code(&r.body), "MANIFEST_UNKNOWN", "GET {reference}");
        assert_eq!(r.header("content-type"), Some("application/json"), "GET {reference}");
        let r = server.head(&path, &[]);
        assert_eq!(r.status, 404, "HEAD {reference}");
        assert!(r.body.is_empty(), "HEAD {reference} has no body");
    }
    let known = format!("/v2/{}/conformance/app/manifests/v1", up.host());
    assert_eq!(server.get(&known, &[]).status, 200, "a known tag is still served");
}

#[test]
fn blob_paths_tell_an_unknown_digest_from_an_invalid_one() {
    let up = FakeUpstream::start();
    let server = Server::start(&plain_registry(&up.host()), &[]);
    let unknown = format!("/v2/{}/conformance/app/blobs/sha256:{}", up.host(), "cd".repeat(32));
    let r = server.get(&unknown, &[]);
    assert_eq!((r.status, error_code(&r.body).as_str()), (404, "BLOB_UNKNOWN"), "{}", r.text());
    assert_eq!(server.head(&unknown, &[]).status, 404);
    let invalid = format!("/v2/{}/conformance/app/blobs/sha256:totallywrong", up.host());
    let r = server.get(&invalid, &[]);
    assert_eq!((r.status, error_code(&r.body).as_str()), (400, "DIGEST_INVALID"), "{}", r.text());
    assert_eq!(server.head(&invalid, &[]).status, 400);
}

#[test]
fn a_404_for_a_manifest_digest_asked_as_a_blob_does_not_hide_the_manifest() {
    let up = FakeUpstream::start();
    let server = Server::start(&plain_registry(&up.host()), &[]);
    let image = up.add_image("conformance/app", "v1", &[b"layer".to_vec()]);
    up.set_fault(&format!("/blobs/{}", image.manifest_digest), common::fake_upstream::Fault::status(404), None);
    let as_blob = format!("/v2/{}/conformance/app/blobs/{}", up.host(), image.manifest_digest);
    assert_eq!(server.get(&as_blob, &[]).status, 404, "the upstream has no blob of that digest");
    let as_manifest = format!("/v2/{}/conformance/app/manifests/{}", up.host(), image.manifest_digest);
    let r = server.get(&as_manifest, &[]);
    assert_eq!((r.status, &r.body), (200, &image.manifest_bytes), "{}", r.text());
}

#[test]
fn malformed_registry_names_are_400_name_invalid() {
    let up = FakeUpstream::start();
    let server = Server::start(&plain_registry(&up.host()), &[]);
    for path in [
        "/v2/app/manifests/v1?ns=a:b:c",
        "/v2/app/manifests/v1?ns=%5B",
        "/v2/app/manifests/v1?ns=..",
        "/v2/../app/manifests/v1",
        "/v2/a..b/app/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let r = server.get(path, &[]);
        assert_eq!((r.status, error_code(&r.body).as_str()), (400, "NAME_INVALID"), "{path}: {}", r.text());
    }
    assert!(!server.log().contains("ERROR"), "a bad name is the client's error, not ours:\n{}", server.log());
}
