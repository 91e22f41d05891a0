//! `ociregistry list` against the real binary: images pulled through a
//! running server from the fake upstream are listed (table and JSON) while
//! the server runs, without its lock; last-pulled times appear once the
//! server writes them out, and survive a stop and a restart (a pull after the restart
//! moves only its own row).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::fake_upstream::{FakeImage, FakeUpstream, OCI_INDEX};
use common::{plain_registry, random_bytes, wait_until, Server};
use serde_json::Value;

const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn list(images: &Path, args: &[&str]) -> Ran {
    let o = Command::new(env!("CARGO_BIN_EXE_ociregistry"))
        .args(["--image-path", images.to_str().unwrap(), "list"])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run ociregistry list");
    Ran {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn json_rows(images: &Path) -> Vec<Value> {
    let r = list(images, &["--output", "json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    serde_json::from_str::<Value>(&r.stdout).unwrap().as_array().unwrap().clone()
}

fn row<'a>(rows: &'a [Value], reference: &str) -> &'a Value {
    rows.iter().find(|r| r["reference"] == reference).unwrap_or_else(|| panic!("no {reference} in {rows:?}"))
}

/// GETs a manifest (by tag or digest) and, with `blobs`, its config and layers; returns the bytes pulled.
fn pull(server: &Server, up: &FakeUpstream, repo: &str, reference: &str, img: Option<&FakeImage>) -> usize {
    let r = server.get(&format!("/v2/{}/{repo}/manifests/{reference}", up.host()), &[("Accept", ACCEPT_ALL)]);
    assert_eq!(r.status, 200, "{repo}:{reference}: {}", r.text());
    let mut size = r.body.len();
    for digest in img.iter().flat_map(|i| std::iter::once(&i.config_digest).chain(&i.layer_digests)) {
        let r = server.get(&format!("/v2/{}/{repo}/blobs/{digest}", up.host()), &[]);
        assert_eq!(r.status, 200, "{digest}");
        size += r.body.len();
    }
    size
}

/// An index in `repo` tagged `tag`, listing `children` (amd64, arm64, ...).
fn add_index(up: &FakeUpstream, repo: &str, tag: &str, children: &[&FakeImage]) -> String {
    let manifests: Vec<Value> = children
        .iter()
        .zip(["amd64", "arm64", "s390x"])
        .map(|(c, arch)| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": c.manifest_digest,
                "size": c.manifest_bytes.len(),
                "platform": {"os": "linux", "architecture": arch},
            })
        })
        .collect();
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    up.add_manifest(repo, Some(tag), OCI_INDEX, serde_json::to_vec(&index).unwrap())
}

#[test]
fn images_are_listed_beside_a_running_server_and_pull_times_survive_a_restart() {
    let up = FakeUpstream::start();
    let host = up.host();
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let config = plain_registry(&host);
    let shared = random_bytes(1, 3000);
    let a = up.add_image("team/a", "v1", &[shared.clone(), random_bytes(2, 5000)]);
    up.add_image("team/b", "v1", &[shared, random_bytes(3, 7000)]);
    let amd = up.add_image("team/c", "amd", &[random_bytes(4, 4000)]);
    let arm = up.add_image("team/c", "arm", &[random_bytes(5, 4000)]);
    let index = add_index(&up, "team/c", "v1", &[&amd, &arm]);
    let d = up.add_image("team/d", "x", &[random_bytes(6, 1000)]);

    let mut server = Server::start_in(&images, &config, &[]);
    let a_size = pull(&server, &up, "team/a", "v1", Some(&a));
    let b_manifest = pull(&server, &up, "team/b", "v1", None);
    let c_size =
        pull(&server, &up, "team/c", "v1", None) + pull(&server, &up, "team/c", &amd.manifest_digest, Some(&amd));
    let d_size = pull(&server, &up, "team/d", &d.manifest_digest, Some(&d));

    // While the server runs: every image, each with its created time, size and completeness.
    let rows = wait_for_rows(&images, 4);
    let a_row = row(&rows, &format!("{host}/team/a:v1"));
    assert_eq!(a_row["type"], "image");
    assert_eq!(a_row["size"], a_size as u64, "manifest, config and layers");
    assert_eq!((a_row["complete"].as_bool(), a_row["missingBlobs"].as_u64()), (Some(true), Some(0)));
    assert!(a_row["created"].as_u64().is_some());
    let b_row = row(&rows, &format!("{host}/team/b:v1"));
    assert_eq!(
        (b_row["complete"].as_bool(), b_row["missingBlobs"].as_u64()),
        (Some(false), Some(2)),
        "config and one layer"
    );
    assert_eq!(b_row["size"], (b_manifest + 3000) as u64, "its manifest and the layer a brought in");
    let c_row = row(&rows, &format!("{host}/team/c:v1"));
    assert_eq!((c_row["type"].as_str(), c_row["digest"].as_str()), (Some("list"), Some(index.as_str())));
    assert_eq!((c_row["platforms"].as_u64(), c_row["complete"].as_bool()), (Some(1), Some(true)));
    assert_eq!(c_row["size"], c_size as u64, "the index, its one cached platform and that platform's blobs");
    let d_row = row(&rows, &format!("{host}/team/d@{}", d.manifest_digest));
    assert_eq!((d_row["size"].as_u64(), d_row["tag"].is_null()), (Some(d_size as u64), true));
    assert_eq!(rows.len(), 4, "the index's platform manifest is part of its image: {rows:?}");

    let table = list(&images, &["--header", "--short-digest"]);
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    let lines: Vec<Vec<&str>> = table.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["IMAGE", "TAG/DIGEST", "TYPE", "CREATED", "PULLED", "SIZE(MB)", "COMPLETE"]);
    let find = |image: &str| lines.iter().find(|l| l[0] == format!("{host}/{image}")).unwrap().clone();
    assert_eq!(find("team/b")[6], "missing:2");
    assert_eq!((find("team/c")[1], find("team/c")[2], find("team/c")[6]), ("v1", "list", "complete"));
    assert_eq!(find("team/d")[1], &d.manifest_digest[7..17], "a digest, short");
    assert_eq!(find("team/a")[5], format!("{:.1}", a_size as f64 / 1e6));
    let long = list(&images, &["--pattern", "team/d@"]);
    assert_eq!(long.stdout.split_whitespace().nth(1), Some(&d.manifest_digest[7..]), "Go's bare hex");
    let only_b = list(&images, &["--pattern", "team/b:,nothing-else"]);
    assert_eq!(only_b.stdout.lines().count(), 1, "{}", only_b.stdout);
    // Go's listConfig gives the flags' defaults.
    let list_config = dir.path().join("list-config.yaml");
    std::fs::write(&list_config, "listConfig: {header: true, expr: 'team/b:', shortDigest: true}\n").unwrap();
    let configured = list(&images, &["--config-file", list_config.to_str().unwrap()]);
    let lines: Vec<&str> = configured.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "a header and team/b: {}{}", configured.stdout, configured.stderr);
    assert!(lines[0].starts_with("IMAGE") && lines[1].contains("team/b"), "{}", configured.stdout);

    // Pulled times are written every 30 s: they show up beside the running server.
    assert!(
        wait_until(Duration::from_secs(45), || {
            let rows = json_rows(&images);
            rows.iter().all(|r| r["pulled"].as_u64().is_some())
        }),
        "pulled times did not appear: {}",
        list(&images, &[]).stdout
    );
    let before = json_rows(&images);
    assert!(server.stop().success());
    assert_eq!(json_rows(&images), before, "stopped: the same times");
    // Restarted, one image is pulled again and the server stopped: it writes its whole map out, so
    // the other rows keep their times only if the server read them back at startup.
    let mut server = Server::start_in(&images, &config, &[]);
    std::thread::sleep(Duration::from_millis(1100));
    pull(&server, &up, "team/a", "v1", None);
    assert!(server.stop().success());
    let after = json_rows(&images);
    let a_ref = format!("{host}/team/a:v1");
    for old in &before {
        let new = row(&after, old["reference"].as_str().unwrap());
        if old["reference"] == a_ref.as_str() {
            assert!(new["pulled"].as_u64() > old["pulled"].as_u64(), "pulled again: {old} {new}");
        } else {
            assert_eq!(new["pulled"], old["pulled"], "restarted: the times survived: {after:?}");
        }
    }
    assert_eq!(after.len(), before.len());

    let bad = list(&dir.path().join("nothing-here"), &[]);
    assert_eq!(bad.code, Some(2));
    assert!(bad.stderr.contains("is not an image path"), "{}", bad.stderr);
    let bad = list(&images, &["--pattern", "("]);
    assert_eq!(bad.code, Some(2));
    assert!(bad.stderr.contains("--pattern"), "{}", bad.stderr);
}

/// The rows once `n` images are listed: a commit is answered before its record is journaled.
fn wait_for_rows(images: &Path, n: usize) -> Vec<Value> {
    let mut rows = Vec::new();
    let complete = wait_until(Duration::from_secs(10), || {
        rows = json_rows(images);
        rows.len() == n && rows.iter().all(|r| r["complete"].as_bool() == Some(true) || r["missingBlobs"] == 2)
    });
    assert!(complete, "{rows:?}");
    rows
}
