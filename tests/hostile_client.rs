//! The real binary against a hostile client: path traversal in every position
//! of a request (repository name, registry segment, `?ns=`, tag, digest), as
//! `..`, `%2e%2e` in any case, encoded slashes, backslashes, absolute paths,
//! NUL and overlong names, is answered with a 4xx OCI error (never 200 or
//! 500), reaches no file outside the image path (canary files next to it and
//! at its root keep their content and mtime, and no new file appears outside
//! it), never reaches the upstream with such a path, and logs no ERROR.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::fake_upstream::FakeUpstream;
use common::{plain_registry, Server};

/// What a request may be answered with: a 4xx status and one of these OCI codes.
type Allowed = &'static [(u16, &'static str)];

const NAME: &[(u16, &str)] = &[(400, "NAME_INVALID"), (404, "NAME_UNKNOWN")];
const TAG: &[(u16, &str)] = &[(404, "MANIFEST_UNKNOWN"), (404, "NAME_UNKNOWN")];
const DIGEST: &[(u16, &str)] = &[(400, "DIGEST_INVALID"), (404, "MANIFEST_UNKNOWN"), (404, "NAME_UNKNOWN")];
/// A head the HTTP layer refuses before routing (bad bytes, too large).
const HEAD: &[(u16, &str)] = &[(400, "UNSUPPORTED"), (431, "UNSUPPORTED"), (414, "UNSUPPORTED")];

/// Ways of spelling "go up a directory", alone and with a separator after them.
const DOTDOTS: &[&str] = &[
    "..",
    "%2e%2e",
    "%2E%2e",
    "%2E%2E",
    ".%2e",
    "..%2f..%2f..%2fcanary",
    "..%2F..%2F..%2Fcanary",
    "..\\..\\..\\canary",
    "%2e%2e%5c%2e%2e%5ccanary",
    "..%00",
    "%00",
    "canary%00",
    "..%252f..%252fcanary",
];

/// Repositories (in the name position) that would escape if joined naïvely.
fn hostile_repos() -> Vec<String> {
    let mut repos: Vec<String> = DOTDOTS.iter().map(|d| d.to_string()).collect();
    repos.extend(
        [
            "../../../../canary",
            "a/../../../../../canary",
            "a/%2e%2e/%2e%2e/%2e%2e/%2e%2e/canary",
            "/etc/passwd",
            "%2fetc%2fpasswd",
            "%2Fetc%2Fpasswd",
            "a\\..\\..\\canary",
            "_tags/../../canary",
            "a/_tags",
            ".",
            "a/./b",
            "~",
            "a%20b",
        ]
        .map(String::from),
    );
    repos.push("a".repeat(300));
    repos.push(format!("{}/b", "a/".repeat(200)));
    repos
}

/// Tags (in the reference position) that would escape if joined naïvely.
fn hostile_tags() -> Vec<String> {
    let mut tags: Vec<String> = DOTDOTS.iter().map(|d| d.to_string()).collect();
    tags.extend(
        [
            ".",
            "..%2f..%2f..%2f..%2fcanary",
            "..%2F..%2F..%2F..%2F..%2Fcanary",
            "%2fetc%2fpasswd",
            "..\\canary",
            "-canary",
            ".canary",
            "v1%2f..",
            "v1\\..",
            "sha256:..%2f..%2fcanary",
        ]
        .map(String::from),
    );
    tags.push("t".repeat(129));
    tags.push("t".repeat(5000));
    tags
}

/// Digests (blob and manifest-by-digest positions) that would escape if joined naïvely.
fn hostile_digests() -> Vec<String> {
    let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let mut digests: Vec<String> = DOTDOTS.iter().map(|d| format!("sha256:{d}")).collect();
    digests.extend(
        [
            format!("sha256:../{}", &hex[3..]),
            format!("sha256:..%2f{}", &hex[5..]),
            format!("sha256:{}%00", &hex[..61]),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha256:{hex}/../../canary"),
            format!("..:{hex}"),
            format!("%2e%2e:{hex}"),
            format!("sha256%2f..%2f..:{hex}"),
            format!("sha256:{}", "a".repeat(5000)),
            "sha256:".to_string(),
            "sha256".to_string(),
        ]
        .map(String::from),
    );
    digests
}

/// Registry segments and `?ns=` values that would escape if joined naïvely.
fn hostile_registries() -> Vec<String> {
    let mut regs: Vec<String> = DOTDOTS.iter().map(|d| d.to_string()).collect();
    regs.extend(
        [
            "..%2f..%2fcanary",
            "127.0.0.1:1%2f..%2f..",
            "127.0.0.1%00",
            "a..b",
            "..:5000",
            ".:5000",
            "%2fetc",
            "localhost\\..\\..",
            "[::1]%2f..",
        ]
        .map(String::from),
    );
    regs.push(format!("{}.io", "a".repeat(300)));
    regs
}

struct Answer {
    status: u16,
    code: String,
    raw_head: String,
}

/// Sends `GET <target>` exactly as given (no normalisation) on a fresh connection.
fn raw_get(addr: &str, target: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = b"GET ".to_vec();
    head.extend_from_slice(target);
    head.extend_from_slice(b" HTTP/1.1\r\nHost: cache\r\nConnection: close\r\n\r\n");
    stream.write_all(&head).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let code = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(String::from))
        .unwrap_or_default();
    Answer { status, code, raw_head: head.to_string() }
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

struct Canary {
    path: PathBuf,
    content: Vec<u8>,
    mtime: SystemTime,
}

impl Canary {
    fn plant(path: PathBuf) -> Canary {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let content = format!("canary at {}\n", path.display()).into_bytes();
        std::fs::write(&path, &content).unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        Canary { path, content, mtime }
    }

    fn assert_untouched(&self) {
        let meta = std::fs::metadata(&self.path).unwrap_or_else(|e| panic!("canary {:?} gone: {e}", self.path));
        assert_eq!(meta.modified().unwrap(), self.mtime, "canary {:?} was written", self.path);
        assert_eq!(std::fs::read(&self.path).unwrap(), self.content, "canary {:?} changed", self.path);
    }
}

#[test]
fn path_traversal_in_any_position_is_a_4xx_and_touches_nothing_outside_the_image_path() {
    let up = FakeUpstream::start();
    let image = up.add_image("a", "v1", &[b"layer".to_vec()]);
    let host = up.host();

    let work = tempfile::tempdir().unwrap();
    let image_path = work.path().join("images");
    // Where `..` would lead from the tag and blob directories: next to the image
    // path, at its root, and the usual system targets (read-only, so only reads matter).
    let canaries = [
        Canary::plant(work.path().join("canary")),
        Canary::plant(image_path.join("canary")),
        Canary::plant(work.path().join("_tags").join("canary")),
    ];
    let before: Vec<PathBuf> = files_under(work.path());

    // One server with and one without --default-ns: bare names go different ways.
    let config = plain_registry(&host);
    let mut server = Server::start_in(&image_path, &config, &["--default-ns", &host]);
    assert_eq!(server.get(&format!("/v2/{host}/a/manifests/v1"), &[]).status, 200, "the real image is served");

    let mut cases: Vec<(Vec<u8>, Allowed)> = Vec::new();
    let mut add = |target: String, allowed: Allowed| cases.push((target.into_bytes(), allowed));
    for repo in hostile_repos() {
        for prefix in [format!("/v2/{host}/"), "/v2/".to_string()] {
            add(format!("{prefix}{repo}/manifests/v1"), NAME);
            add(format!("{prefix}{repo}/blobs/{}", image.layer_digests[0]), NAME);
            add(format!("{prefix}{repo}/tags/list"), NAME);
            add(format!("{prefix}{repo}/referrers/{}", image.manifest_digest), NAME);
        }
        add(format!("/v2/{repo}/manifests/v1?ns={host}"), NAME);
    }
    for reg in hostile_registries() {
        add(format!("/v2/{reg}/a/manifests/v1"), NAME);
        add(format!("/v2/{reg}/a/blobs/{}", image.layer_digests[0]), NAME);
        add(format!("/v2/{reg}/a/tags/list"), NAME);
        add(format!("/v2/a/manifests/v1?ns={reg}"), NAME);
        add(format!("/v2/a/blobs/{}?ns={reg}", image.layer_digests[0]), NAME);
        add(format!("/v2/a/tags/list?x=1&ns={reg}"), NAME);
    }
    for tag in hostile_tags() {
        add(format!("/v2/{host}/a/manifests/{tag}"), TAG);
        add(format!("/v2/a/manifests/{tag}?ns={host}"), TAG);
    }
    for digest in hostile_digests() {
        add(format!("/v2/{host}/a/blobs/{digest}"), DIGEST);
        add(format!("/v2/{host}/a/manifests/{digest}"), DIGEST);
        add(format!("/v2/a/blobs/{digest}?ns={host}"), DIGEST);
    }
    // Traversal of the route itself, absolute-form and other odd request targets.
    for target in [
        "/v2/../../../../etc/passwd".to_string(),
        "/v2/%2e%2e/%2e%2e/etc/passwd".to_string(),
        format!("/v2/{host}/a/manifests/../../../../canary"),
        format!("/v2/{host}/a/blobs/../../../../canary"),
        format!("/v2/{host}/a/manifests/v1/../../../../canary"),
        "/v2/..".to_string(),
        "/v2/./".to_string(),
        "/../../canary".to_string(),
        "/v2%2f..%2f..%2fcanary".to_string(),
        "//etc/passwd".to_string(),
        "\\v2\\..\\canary".to_string(),
        format!("http://{host}/v2/../../canary"),
        "*".to_string(),
    ] {
        add(target, NAME);
    }
    let mut nul = format!("/v2/{host}/a/manifests/v1").into_bytes();
    nul.insert(nul.len() - 2, 0);
    cases.push((nul, HEAD));
    cases.push((format!("/v2/{host}/a\\/manifests/v1").into_bytes(), NAME));
    cases.push((format!("/v2/{}/a/manifests/v1", "a".repeat(70 * 1024)).into_bytes(), HEAD));

    let mut wrong = Vec::new();
    for (target, allowed) in &cases {
        let answer = raw_get(&server.addr, target);
        let ok = allowed.iter().any(|&(s, c)| s == answer.status && c == answer.code);
        if !ok {
            wrong.push(format!(
                "GET {} -> {} {:?}\n    {}",
                String::from_utf8_lossy(target).chars().take(200).collect::<String>(),
                answer.status,
                answer.code,
                answer.raw_head.lines().next().unwrap_or("")
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} hostile requests answered wrongly:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );

    // The server is still well and serves the real image.
    let r = server.get(&format!("/v2/{host}/a/blobs/{}", image.layer_digests[0]), &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"layer"[..]));

    for c in &canaries {
        c.assert_untouched();
    }
    let outside: Vec<PathBuf> = files_under(work.path())
        .into_iter()
        .filter(|p| !p.starts_with(&image_path) && !before.contains(p))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !(name.starts_with("config-") || name.starts_with("server-"))
        })
        .collect();
    assert!(outside.is_empty(), "files created outside the image path: {outside:?}");
    let inside: Vec<PathBuf> = files_under(&image_path)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("canary") && *p != canaries[1].path)
        .collect();
    assert!(inside.is_empty(), "a hostile name became a file: {inside:?}");

    for req in up.requests() {
        let whole = format!("{}?{}", req.path, req.query).to_ascii_lowercase();
        for bad in ["..", "%2e", "%2f", "%5c", "\\", "%00", "canary", "passwd"] {
            assert!(!whole.contains(bad), "the upstream was asked for {whole:?}");
        }
    }
    let log = server.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "ERROR lines in the server log:\n{}", errors.join("\n"));
    server.stop();

    // Restarted on the same image path, the cache loads only what is valid and still serves.
    let server = Server::start_in(&image_path, &config, &["--air-gapped"]);
    let r = server.get(&format!("/v2/{host}/a/manifests/v1"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    for c in &canaries {
        c.assert_untouched();
    }
}

#[test]
fn a_stray_file_in_the_tags_directory_does_not_stop_the_cache_from_loading() {
    let up = FakeUpstream::start();
    up.add_image("a", "v1", &[b"layer".to_vec()]);
    let host = up.host();
    let work = tempfile::tempdir().unwrap();
    let image_path = work.path().join("images");
    let config = plain_registry(&host);
    {
        let mut server = Server::start_in(&image_path, &config, &[]);
        assert_eq!(server.get(&format!("/v2/{host}/a/manifests/v1"), &[]).status, 200);
        let tag = image_path.join("tags").join(&host).join("a/_tags/v1");
        assert!(common::wait_until(Duration::from_secs(10), || tag.exists()), "the tag record is written");
        server.stop();
    }
    // Files whose names parse as a registry or a repository component, where directories are expected.
    std::fs::write(image_path.join("tags/readme"), "notes").unwrap();
    std::fs::write(image_path.join("tags").join(&host).join("notes"), "notes").unwrap();
    std::fs::write(image_path.join("tags").join(&host).join("a/_tags/.hidden"), "x").unwrap();
    let server = Server::start_in(&image_path, &config, &["--air-gapped"]);
    let r = server.get(&format!("/v2/{host}/a/manifests/v1"), &[]);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), server.log());
}
