//! The admin API under `/cmd/` against the real binary: the Go ociregistry's
//! list commands over content pulled from the fake upstream, who may ask
//! (loopback, `admin.allow`, the bearer token; a non-loopback peer is
//! refused), `/cmd/stop`, the `.admin` file local commands find the server
//! by, and jobs (the built-in `verify`, and the test-only `test-hold`,
//! `test-hold-start` and `test-release` kinds of the `fault-injection` build
//! for the bounds).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::fake_upstream::{FakeImage, FakeUpstream, OCI_MANIFEST};
use common::token_server::rfc3339;
use common::{plain_registry, random_bytes, wait_until, Server};
use ociregistry::admin::client::{self, AdminClient};

const TOKEN: &str = "test-admin-token-0123456789";

/// One raw request on a fresh connection; returns the status, the head and the body.
fn raw(addr: &str, request: &[u8]) -> (u16, String, String) {
    raw_within(addr, request, Duration::from_secs(30))
}

/// [`raw`], waiting up to `timeout` for each read of the answer.
fn raw_within(addr: &str, request: &[u8], timeout: Duration) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no response head: {text:?}"));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

fn get(addr: &str, path: &str, headers: &str) -> (u16, String, String) {
    raw(addr, format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n").as_bytes())
}

fn post(addr: &str, path: &str, body: &str) -> (u16, String, String) {
    let head =
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    raw(addr, format!("{head}{body}").as_bytes())
}

/// The item lines of a list (the header line and `- blob` lines left out).
fn items(text: &str) -> Vec<String> {
    text.lines().skip(1).filter(|l| !l.starts_with("- ")).map(str::to_string).collect()
}

fn blob_file(images: &Path, digest: &str) -> PathBuf {
    images.join("blobs/sha256").join(&digest[7..9]).join(&digest[7..])
}

/// Waits (bounded) until `digest` is journaled: commits are reported before their record lands.
fn wait_recorded(images: &Path, digest: &str) {
    let journal = images.join("index/records.jsonl");
    let recorded =
        || std::fs::read_to_string(&journal).unwrap_or_default().contains(&format!("\"digest\":\"{digest}\""));
    assert!(wait_until(Duration::from_secs(10), recorded), "{digest} was not journaled within 10 s");
}

/// Pulls `repo:tag` (manifest and every blob) through the server.
fn pull(server: &Server, up: &FakeUpstream, repo: &str, tag: &str, img: &FakeImage) {
    let host = up.host();
    let r = server.get(&format!("/v2/{host}/{repo}/manifests/{tag}"), &[("Accept", "*/*")]);
    assert_eq!(r.status, 200, "{}", r.text());
    for digest in img.layer_digests.iter().chain([&img.config_digest]) {
        assert_eq!(server.get(&format!("/v2/{host}/{repo}/blobs/{digest}"), &[]).status, 200);
    }
    for digest in img.layer_digests.iter().chain([&img.config_digest, &img.manifest_digest]) {
        wait_recorded(&server.image_path, digest);
    }
}

/// Two tagged images and one manifest fetched by digest only, all pulled.
struct Pulled {
    up: FakeUpstream,
    server: Server,
    app: FakeImage,
    tools: FakeImage,
    by_digest: String,
}

fn pulled() -> Pulled {
    pulled_with_env(&[])
}

/// [`pulled`], the server started with extra environment variables.
fn pulled_with_env(env: &[(&str, &str)]) -> Pulled {
    let up = FakeUpstream::start();
    let app = up.add_image("team/app", "v1", &[random_bytes(1, 3000), random_bytes(2, 5000)]);
    let tools = up.add_image("team/tools", "2.0", &[random_bytes(3, 4000)]);
    let loose = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
    let by_digest = up.add_manifest("team/loose", None, OCI_MANIFEST, loose.to_vec());
    let server = Server::start_with_env(&plain_registry(&up.host()), &[], env);
    pull(&server, &up, "team/app", "v1", &app);
    pull(&server, &up, "team/tools", "2.0", &tools);
    let r = server.get(&format!("/v2/{}/team/loose/manifests/{by_digest}", up.host()), &[("Accept", "*/*")]);
    assert_eq!(r.status, 200, "{}", r.text());
    wait_recorded(&server.image_path, &by_digest);
    Pulled { up, server, app, tools, by_digest }
}

#[test]
fn manifest_list_shows_every_image_and_filters_by_pattern_and_count() {
    let p = pulled();
    let (addr, host) = (p.server.addr.as_str(), p.up.host());
    let (status, head, body) = get(addr, "/cmd/manifest/list", "");
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("Content-Type: text/plain"), "{head}");
    assert_eq!(body.lines().next(), Some("URL DIGEST CREATED PULLED"), "{body}");
    let lines = items(&body);
    assert_eq!(lines.len(), 3, "{body}");
    assert!(lines[0].starts_with(&format!("{host}/team/app:v1 {} ", p.app.manifest_digest)), "{body}");
    let short = &p.by_digest[..17];
    assert!(lines[1].starts_with(&format!("{host}/team/loose@{short} {} ", p.by_digest)), "{body}");
    assert!(lines[2].starts_with(&format!("{host}/team/tools:2.0 {} ", p.tools.manifest_digest)), "{body}");
    let (_, _, body) = get(addr, "/cmd/manifest/list?pattern=tools%2Cnothing", "");
    assert_eq!(items(&body).len(), 1, "{body}");
    assert!(items(&body)[0].contains("team/tools:2.0"), "{body}");
    let (_, _, body) = get(addr, "/cmd/manifest/list?pattern=team/(app|tools):&count=1", "");
    assert_eq!(items(&body).len(), 1, "{body}");
    let (_, _, body) = get(addr, "/cmd/manifest/list?count=-1", "");
    assert_eq!(items(&body).len(), 3, "{body}");
    let (_, _, body) = get(addr, "/cmd/manifest/list?pattern=nomatch", "");
    assert_eq!(body, "no manifests found\n");
    let (status, _, body) = get(addr, "/cmd/manifest/list?pattern=(", "");
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("invalid parameters"), "{body}");
    let (status, _, body) = get(addr, "/cmd/manifest/list?count=many", "");
    assert_eq!(status, 400, "{body}");
}

/// The PULLED field (the last one) of each item line.
fn pulled_fields(text: &str) -> Vec<String> {
    items(text).iter().map(|l| l.rsplit(' ').next().unwrap().to_string()).collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A POSIX zone 5 h 30 min east of UTC (no zone files needed), and the local time it gives, as Go
/// prints times: `2025-02-28T12:59:59`, no zone.
const SERVER_TZ: &str = "OCI-05:30";
fn server_local(unix: u64) -> String {
    rfc3339(unix + 5 * 3600 + 30 * 60).trim_end_matches('Z').to_string()
}

#[test]
fn pulled_shows_when_each_image_was_last_pulled_in_local_time_and_a_dash_when_never() {
    let before = server_local(unix_now());
    let mut p = pulled_with_env(&[("TZ", SERVER_TZ)]);
    let addr = p.server.addr.clone();
    let all_pulled = || pulled_fields(&get(&addr, "/cmd/manifest/list", "").2).iter().all(|f| f != "-");
    assert!(wait_until(Duration::from_secs(10), all_pulled), "{}", get(&addr, "/cmd/manifest/list", "").2);
    let after = server_local(unix_now() + 1);
    for path in ["/cmd/manifest/list", "/cmd/image/list"] {
        let body = get(&addr, path, "").2;
        for line in items(&body) {
            // URL DIGEST  CREATED PULLED: both times in the server's zone.
            let times: Vec<&str> = line.split_whitespace().skip(2).collect();
            let [created, pulled] = times[..] else { panic!("{line}") };
            assert!(created == "-" || (created >= before.as_str() && created <= after.as_str()), "{line}");
            assert!(
                pulled.len() == 19 && pulled >= before.as_str() && pulled <= after.as_str(),
                "{pulled} not in {before}..{after} ({SERVER_TZ}): {body}"
            );
        }
        assert_eq!(items(&body).len(), 3, "{body}");
    }

    // The same cache with no pull recorded: every image shows `-` until it is pulled again.
    p.server.stop();
    std::fs::remove_file(p.server.image_path.join("index/pulled")).unwrap();
    let server = Server::start_in(&p.server.image_path, &plain_registry(&p.up.host()), &[]);
    let body = get(&server.addr, "/cmd/manifest/list", "").2;
    assert_eq!(pulled_fields(&body), vec!["-", "-", "-"], "{body}");
    let r = server.get(&format!("/v2/{}/team/app/manifests/v1", p.up.host()), &[("Accept", "*/*")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let app_pulled = || {
        let fields = pulled_fields(&get(&server.addr, "/cmd/image/list", "").2);
        fields[0] != "-" && fields[1..] == ["-", "-"]
    };
    assert!(wait_until(Duration::from_secs(10), app_pulled), "{}", get(&server.addr, "/cmd/image/list", "").2);
}

#[test]
fn image_and_blob_lists_show_blobs_and_reference_counts() {
    let p = pulled();
    let addr = p.server.addr.as_str();
    let layer = &p.app.layer_digests[1];
    let (status, _, body) = get(addr, &format!("/cmd/image/list?digest={}", &layer[7..20]), "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(items(&body).len(), 1, "{body}");
    assert!(items(&body)[0].contains("team/app:v1"), "{body}");
    for blob in p.app.layer_digests.iter().chain([&p.app.config_digest]) {
        assert!(body.contains(&format!("\n- {blob}\n")), "{blob} missing from\n{body}");
    }
    let (_, _, body) = get(addr, "/cmd/image/list", "");
    assert_eq!(items(&body).len(), 3, "{body}");
    assert_eq!(body.lines().filter(|l| l.starts_with("- ")).count(), 2 + 1 + 1 + 1 + 1, "{body}");
    let (_, _, body) = get(addr, "/cmd/image/list?digest=ffffffffffffffffffff", "");
    assert_eq!(body, "no manifests found\n");

    let (status, _, body) = get(addr, "/cmd/blob/list", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.lines().next(), Some("URL REFCNT"), "{body}");
    assert_eq!(items(&body).len(), 5, "three layers and two configs: {body}");
    assert!(items(&body).contains(&format!("{layer} 1")), "{body}");
    let (_, _, body) = get(addr, &format!("/cmd/blob/list?substr={}", &layer[7..19]), "");
    assert_eq!(items(&body), vec![format!("{layer} 1")], "{body}");
    let (_, _, body) = get(addr, "/cmd/blob/list?count=2", "");
    assert_eq!(items(&body).len(), 2, "{body}");
    let (_, _, body) = get(addr, "/cmd/blob/list?substr=zzzz", "");
    assert_eq!(body, "no blobs found\n");
}

#[test]
fn a_manifest_file_that_does_not_match_its_digest_is_not_trusted_by_the_lists() {
    let mut p = pulled();
    p.server.stop();
    // The same size, still a manifest: one layer's digest changed to one no cached blob has.
    let path = blob_file(&p.server.image_path, &p.app.manifest_digest);
    let layer = &p.app.layer_digests[1];
    let forged = format!("sha256:{}", "f".repeat(64));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(layer.as_str()), "{text}");
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::write(&path, text.replace(layer.as_str(), &forged)).unwrap();
    // A fresh server: nothing of the cache in memory, so the lists read the files.
    let server = Server::start_in(&p.server.image_path, &plain_registry(&p.up.host()), &[]);
    let addr = server.addr.as_str();

    let (status, _, body) = get(addr, "/cmd/image/list", "");
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains(&forged), "the forged manifest's blobs are listed:\n{body}");
    assert_eq!(items(&body).len(), 3, "its image is still listed, without blobs: {body}");
    assert!(body.contains(&format!("\n- {}\n", p.tools.layer_digests[0])), "{body}");
    let (_, _, body) = get(addr, &format!("/cmd/image/list?digest={}", &forged[7..30]), "");
    assert_eq!(body, "no manifests found\n");
    let (_, _, body) = get(addr, &format!("/cmd/image/list?digest={}", &p.app.layer_digests[0][7..30]), "");
    assert_eq!(body, "no manifests found\n", "not selected by a blob it names either");
    let (_, _, body) = get(addr, "/cmd/blob/list", "");
    assert!(items(&body).contains(&format!("{layer} 0")), "no manifest counts for it: {body}");
    assert!(items(&body).contains(&format!("{} 1", p.tools.layer_digests[0])), "{body}");
    assert!(
        wait_until(Duration::from_secs(5), || server.log().contains("does not match its digest")),
        "the mismatch is logged:\n{}",
        server.log()
    );
}

#[test]
fn an_empty_cache_lists_nothing() {
    let server = Server::start("", &[]);
    for path in ["/cmd/manifest/list", "/cmd/image/list"] {
        let (status, _, body) = get(&server.addr, path, "");
        assert_eq!((status, body.as_str()), (200, "no manifests found\n"), "{path}");
    }
    let (status, _, body) = get(&server.addr, "/cmd/nothing/here", "");
    assert_eq!(status, 404, "{body}");
    let (status, head, _) = get(&server.addr, "/cmd/verify", "");
    assert_eq!(status, 405);
    assert!(head.contains("Allow: POST, DELETE"), "{head}");
}

/// An IPv4 address of this machine that is not loopback, if it has one.
fn non_loopback_ipv4() -> Option<String> {
    let out = std::process::Command::new("ip").args(["-o", "-4", "addr", "show", "scope", "global"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace().skip_while(|w| *w != "inet").nth(1).and_then(|a| a.split('/').next()).map(str::to_string)
}

/// The address a network namespace of the test's own gets on its loopback device: not a loopback
/// address (127.0.0.0/8), so a peer connecting from it is "off loopback" to the server.
const NETNS_ADDRESS: &str = "10.213.0.1";

/// Runs `test` on a thread of its own in a new network namespace (root only), where the server it
/// starts also runs (a child inherits its thread's namespace) and [`NETNS_ADDRESS`] is a local,
/// non-loopback address; why not when the namespace cannot be made. Nothing outside changes: the
/// namespace goes with the thread and the server.
fn in_private_netns(test: impl FnOnce(&str) + Send) -> Result<(), String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unshare only changes this thread's namespace; no memory is involved.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(format!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error()));
                }
                let ip = |args: &[&str]| match std::process::Command::new("ip").args(args).output() {
                    Ok(out) if out.status.success() => Ok(()),
                    Ok(out) => {
                        Err(format!("ip {}: {}: {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr)))
                    }
                    Err(e) => Err(format!("ip {}: {e}", args.join(" "))),
                };
                ip(&["link", "set", "lo", "up"])?;
                ip(&["addr", "add", &format!("{NETNS_ADDRESS}/32"), "dev", "lo"])?;
                test(NETNS_ADDRESS);
                Ok(())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs `test` with a local address that is not loopback: in a network namespace of its own
/// first (as CI runs, as root), the same on every machine; as root that must work (a failure is
/// the test's, never a reason to fall back or skip). Otherwise this machine's own address, if it
/// has one; else `name` is reported skipped.
fn off_loopback(name: &str, test: impl Fn(&str) + Send + Sync) {
    let why_not = match in_private_netns(&test) {
        Ok(()) => return,
        Err(why_not) => why_not,
    };
    // SAFETY: geteuid only reads the process's effective user id.
    if unsafe { libc::geteuid() } == 0 {
        panic!("running as root, yet no network namespace of its own: {why_not}");
    }
    let Some(ip) = non_loopback_ipv4() else {
        common::skipped(
            name,
            "not root (no network namespace of its own) and no non-loopback IPv4 address to connect from",
        );
        return;
    };
    test(&ip);
}

#[test]
fn peers_off_loopback_are_refused_unless_allowed_or_holding_the_token() {
    off_loopback("peers_off_loopback_are_refused_unless_allowed_or_holding_the_token", refused_off_loopback);
}

#[test]
fn load_hands_its_work_to_a_server_off_loopback_with_the_admin_token() {
    off_loopback("load_hands_its_work_to_a_server_off_loopback_with_the_admin_token", load_with_the_token);
}

/// A server listening only on `ip` (not loopback): its `.admin` file names that address, so a
/// `load` on this host reaches it from `ip`, a peer the admin API opens to the token only.
fn load_with_the_token(ip: &str) {
    let up = FakeUpstream::start();
    up.add_image("team/app", "v1", &[random_bytes(21, 3000)]);
    let server = Server::start(&format!("{}admin:\n  token: {TOKEN}\n", plain_registry(&up.host())), &["--host", ip]);
    let work = server.image_path.parent().unwrap();
    let list = work.join("list.txt");
    std::fs::write(&list, format!("{}/team/app:v1\n", up.host())).unwrap();
    let load = |config: &Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ociregistry"))
            .arg("--image-path")
            .arg(&server.image_path)
            .arg("--config-file")
            .arg(config)
            .arg("load")
            .arg("--image-file")
            .arg(&list)
            .env("NO_PROXY", "*")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };

    let untokened = work.join("no-token.yaml");
    std::fs::write(&untokened, plain_registry(&up.host())).unwrap();
    let (code, output) = load(&untokened);
    assert_ne!(code, Some(0), "{output}");
    assert!(output.contains("refused the load (403)"), "a peer off loopback needs the token:\n{output}");

    let (code, output) = load(&server.config);
    assert_eq!(code, Some(0), "{output}\n{}", server.log());
    assert!(output.contains(&format!("pid {}", server.pid())) && output.contains("admin job"), "{output}");
    let r = server.get(&format!("/v2/{}/team/app/manifests/v1", up.host()), &[("Accept", "*/*")]);
    assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")), "loaded by the server");
}

fn refused_off_loopback(ip: &str) {
    let server = Server::start(&format!("admin:\n  token: {TOKEN}\n"), &["--host", "0.0.0.0"]);
    let port = server.addr.rsplit(':').next().unwrap();
    let outside = format!("{ip}:{port}");
    let (status, head, body) = get(&outside, "/cmd/manifest/list", "");
    assert_eq!(status, 403, "{head}\n{body}");
    assert!(body.contains("\"DENIED\"") && body.contains(ip), "{body}");
    assert!(
        wait_until(Duration::from_secs(5), || server.log().contains("admin request refused")),
        "the refusal is logged at debug:\n{}",
        server.log()
    );
    let (status, _, body) = post(&outside, "/cmd/verify", "{}");
    assert_eq!(status, 403, "{body}");
    assert_eq!(get(&outside, "/v2/", "").0, 200, "the registry itself stays open");
    assert_eq!(get(&outside, "/cmd/manifest/list", "Authorization: Bearer wrong-token-0123456789\r\n").0, 403);
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    let (status, _, body) = get(&outside, "/cmd/manifest/list", &bearer);
    assert_eq!((status, body.as_str()), (200, "no manifests found\n"));
    let client = AdminClient::new(&format!("http://{outside}"), 0).unwrap();
    assert!(matches!(client.get_text("/cmd/jobs"), Err(client::ClientError::Refused { status: 403, .. })));
    assert!(client.with_token(TOKEN).get_text("/cmd/jobs").is_ok());
    assert_eq!(get(&format!("127.0.0.1:{port}"), "/cmd/manifest/list", "").0, 200, "loopback needs no token");

    let allowed = Server::start(&format!("admin:\n  allow: [\"{ip}/32\", \"fd00::/8\"]\n"), &["--host", "0.0.0.0"]);
    let port = allowed.addr.rsplit(':').next().unwrap();
    let (status, _, body) = get(&format!("{ip}:{port}"), "/cmd/manifest/list", "");
    assert_eq!((status, body.as_str()), (200, "no manifests found\n"));
}

#[test]
fn the_admin_token_is_not_sent_to_an_address_of_another_host() {
    let server = Server::start(&format!("admin:\n  token: {TOKEN}\n"), &[]);
    let admin_file = ociregistry::store::Layout::new(&server.image_path).admin_file();
    let found: serde_json::Value = serde_json::from_slice(&std::fs::read(&admin_file).unwrap()).unwrap();
    let port = server.addr.rsplit(':').next().unwrap();
    // TEST-NET-1: no host's address; the server's pid still holds the lock, so the file is trusted.
    let elsewhere = serde_json::json!({"url": format!("http://192.0.2.1:{port}"), "pid": found["pid"]});
    std::fs::write(&admin_file, serde_json::to_vec(&elsewhere).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ociregistry"))
        .arg("--image-path")
        .arg(&server.image_path)
        .arg("--config-file")
        .arg(&server.config)
        .args(["prune", "--dry-run", "--pattern", "nothing"])
        .output()
        .unwrap();
    let output = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{output}");
    assert!(
        output.contains(&format!("names 192.0.2.1:{port}, which is not an address of this host")),
        "refused, naming the address:\n{output}"
    );
}

#[test]
fn a_bad_admin_config_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "admin:\n  allow: [10.0.0.0/8, 10.0.0.0/99]\n  token: short\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ociregistry"))
        .args(["--image-path", dir.path().join("images").to_str().unwrap()])
        .args(["--config-file", config.to_str().unwrap(), "serve", "--port", "0", "--host", "127.0.0.1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("admin.allow[1]") && stderr.contains("admin.token"), "{stderr}");
}

#[test]
fn stop_answers_then_the_server_stops_cleanly_and_its_admin_file_goes() {
    let mut server = Server::start("", &[]);
    let admin_file = server.image_path.join(".admin");
    let published = std::fs::read_to_string(&admin_file).expect(".admin is written once the server listens");
    let port = server.addr.rsplit(':').next().unwrap();
    assert!(published.contains(&format!("\"url\":\"http://127.0.0.1:{port}\"")), "{published}");
    assert!(published.contains(&format!("\"pid\":{}", server.pid())), "{published}");
    let found = client::find(&server.image_path).expect("the running server is found");
    assert_eq!(found.pid(), server.pid());
    assert_eq!(found.get_text("/cmd/jobs").unwrap().trim(), r#"{"jobs":[]}"#);

    assert_eq!(server.head("/cmd/stop", &[]).status, 405, "HEAD must not stop the server");
    assert_eq!(server.get("/v2/", &[]).status, 200);
    let (status, _, body) = get(&server.addr, "/cmd/stop", "");
    assert_eq!((status, body.as_str()), (200, "stopping\n"));
    let exit = server.wait_stopped();
    assert!(exit.success(), "{exit}\n{}", server.log());
    assert!(server.log().contains("shutdown asked for through /cmd/stop"), "{}", server.log());
    assert!(!admin_file.exists(), ".admin is removed at shutdown");
    assert!(server.temp_files().is_empty());

    // A file left behind (a crash) with no process holding the lock is stale.
    std::fs::write(&admin_file, &published).unwrap();
    assert!(client::find(&server.image_path).is_none(), "a stale .admin is ignored");
}

#[test]
fn sigterm_removes_the_admin_file_too() {
    let mut server = Server::start("", &[]);
    let admin_file = server.image_path.join(".admin");
    assert!(admin_file.exists());
    assert!(server.stop().success());
    assert!(!admin_file.exists());
}

#[test]
fn verify_job_checks_the_live_store_and_names_the_damage() {
    let p = pulled();
    let admin = client::find(&p.server.image_path).expect("the server is found through .admin");
    let id = admin.start_job("verify", b"").unwrap();
    let done = admin.wait(&id, Duration::from_millis(20), |_| {}).unwrap();
    assert_eq!(done.state, "done", "{done:?}");
    let report = done.report.clone().unwrap();
    assert_eq!((report["objects"].as_u64(), report["ok"].as_u64()), (Some(8), Some(8)), "{done:?}");
    assert_eq!(done.counters.get("checked"), Some(&8), "{done:?}");

    let layer = &p.app.layer_digests[0];
    let path = blob_file(&p.server.image_path, layer);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    let id = admin.start_job("verify", b"{}").unwrap();
    let done = admin.wait(&id, Duration::from_millis(20), |_| {}).unwrap();
    let report = done.report.clone().unwrap();
    assert_eq!((report["damaged"].as_u64(), report["ok"].as_u64()), (Some(1), Some(7)), "{done:?}");
    assert!(done.lines.iter().any(|l| l.starts_with(&format!("corrupt {layer} (hashes to sha256:"))), "{done:?}");
    assert!(path.exists(), "the job only reads: nothing is removed");
    assert!(report["summary"].as_str().unwrap().starts_with("verified 8 objects"), "{done:?}");

    let (status, _, body) = post(&p.server.addr, "/cmd/verify", r#"{"repair": true}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid parameters"), "{body}");
}

#[test]
fn jobs_are_bounded_and_kept_for_a_while() {
    let server = Server::start("", &[]);
    let addr = server.addr.as_str();
    let admin = client::find(&server.image_path).unwrap();
    let holds: Vec<String> = (0..4).map(|_| admin.start_job("test-hold", b"").unwrap()).collect();
    let (status, head, body) = post(addr, "/cmd/test-hold", "");
    assert_eq!(status, 429, "{body}");
    assert!(head.contains("Retry-After: 5"), "{head}");
    assert_eq!(post(addr, "/cmd/verify", "").0, 429, "every slot is taken");
    let listed = admin.get_text("/cmd/jobs").unwrap();
    assert_eq!(listed.matches("\"running\"").count(), 4, "{listed}");
    let running = admin.poll(&holds[0]).unwrap();
    assert_eq!((running.state.as_str(), running.lines.as_slice()), ("running", &["holding".to_string()][..]));

    // Every slot is taken, the release's too: cancel one hold to free one.
    assert!(matches!(admin.start_job("test-release", b""), Err(client::ClientError::Refused { status: 429, .. })));
    let cancel = format!("DELETE /cmd/jobs/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", holds[0]);
    let (status, _, body) = raw(addr, cancel.as_bytes());
    assert_eq!((status, body.as_str()), (200, format!("job {} cancelled\n", holds[0]).as_str()));
    let cancelled = admin.poll(&holds[0]).unwrap();
    assert_eq!((cancelled.state.as_str(), cancelled.error.as_deref()), ("failed", Some("cancelled")));
    assert_eq!(raw(addr, cancel.as_bytes()).0, 409, "it has finished");
    admin.start_job("test-release", b"").unwrap();
    let released = || holds[1..].iter().all(|id| admin.poll(id).is_ok_and(|s| s.state == "done"));
    assert!(wait_until(Duration::from_secs(10), released), "the holds end when released");

    let one = admin.start_job("test-hold-one", b"").unwrap();
    let (status, head, body) = post(addr, "/cmd/test-hold-one", "");
    assert_eq!(status, 409, "{body}");
    assert!(head.contains(&format!("Location: /cmd/jobs/{one}")), "{head}");
    admin.start_job("test-release", b"").unwrap();
    assert!(wait_until(Duration::from_secs(10), || admin.poll(&one).is_ok_and(|s| s.finished())));

    for _ in 0..70 {
        admin.start_job("test-release", b"").unwrap();
    }
    let (status, _, _) = get(addr, &format!("/cmd/jobs/{}", holds[0]), "");
    assert_eq!(status, 404, "the oldest finished jobs are dropped past 64");
    let listed = admin.get_text("/cmd/jobs").unwrap();
    assert!(listed.matches("\"id\"").count() <= 64 + 4, "{listed}");
    assert_eq!(get(addr, "/cmd/jobs/99999", "").0, 404);
    assert_eq!(post(addr, "/cmd/no-such-kind", "").0, 404);
}

#[test]
fn a_kind_checking_its_body_holds_neither_the_jobs_nor_the_runtime_while_its_slot_counts() {
    let server = Server::start("", &[]);
    let admin = client::find(&server.image_path).unwrap();
    let holds: Vec<String> = (0..2).map(|_| admin.start_job("test-hold", b"").unwrap()).collect();
    std::thread::scope(|scope| {
        // Test-only kind: its start (where a kind checks its body) blocks until a release. Its
        // answer may come only after the four waits below, each up to 10 s: a longer timeout.
        let held = scope.spawn(|| {
            let start =
                "POST /cmd/test-hold-start HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            raw_within(&server.addr, start.as_bytes(), Duration::from_secs(120))
        });
        assert!(
            wait_until(Duration::from_secs(10), || server.log().contains("test-hold-start: holding its start")),
            "{}",
            server.log()
        );
        // The rest of the admin API goes on meanwhile (each request times out after 10 s).
        let listed = admin.get_text("/cmd/jobs").expect("the jobs are listed while a start is held");
        assert_eq!(listed.matches("\"running\"").count(), 2, "a job still starting is not listed: {listed}");
        assert_eq!(admin.poll(&holds[0]).unwrap().state, "running");
        let last = admin.start_job("test-hold", b"").expect("a fourth slot is free");
        assert!(
            matches!(admin.start_job("test-hold", b""), Err(client::ClientError::Refused { status: 429, .. })),
            "the starting job's slot counts"
        );
        let cancel = format!("DELETE /cmd/jobs/{last} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(raw(&server.addr, cancel.as_bytes()).0, 200);
        admin.start_job("test-release", b"").expect("another job starts while a start is held");
        let (status, _, body) = held.join().unwrap();
        assert_eq!(status, 202, "the held start ends with the release: {body}");
        let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"].as_str().unwrap().to_string();
        let done = || admin.poll(&id).is_ok_and(|s| s.state == "done");
        assert!(wait_until(Duration::from_secs(10), done), "{:?}", admin.poll(&id));
    });
    let released = || holds.iter().all(|id| admin.poll(id).is_ok_and(|s| s.state == "done"));
    assert!(wait_until(Duration::from_secs(10), released));
}

#[test]
fn request_bodies_are_capped_and_need_a_length() {
    let server = Server::start("", &[]);
    let addr = server.addr.as_str();
    let big = format!(
        "POST /cmd/verify HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        2 * 1024 * 1024
    );
    let (status, _, body) = raw(addr, big.as_bytes());
    assert_eq!(status, 413, "{body}");
    let chunked = "POST /cmd/verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    assert_eq!(raw(addr, chunked.as_bytes()).0, 411);
    let get_with_body = "GET /cmd/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    assert_eq!(raw(addr, get_with_body.as_bytes()).0, 400);
    // A body sent in pieces is read whole; the connection serves the next request after it.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(b"POST /cmd/verify HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    stream.write_all(b"}").unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 202 "), "{answer}");
    assert_eq!(server.get("/v2/", &[]).status, 200);
    assert_eq!(server.head("/cmd/jobs", &[]).status, 200);
}

#[test]
fn go_delete_cmd_prune_by_pattern_dry_and_for_real() {
    let Pulled { up, server, app, tools, .. } = pulled();
    let addr = server.addr.clone();
    let host = up.host();
    let delete = |query: &str| {
        raw(&addr, format!("DELETE /cmd/prune?{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
    };
    // Go's default is a dry run.
    let (status, _, body) = delete("type=pattern&expr=team/app");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("would remove image {host}/team/app:v1")), "{body}");
    assert!(body.lines().last().unwrap().starts_with("dry run: 1 images"), "{body}");
    assert!(blob_file(&server.image_path, &app.manifest_digest).exists(), "a dry run removes nothing");
    let (status, _, body) = delete("type=pattern&expr=team%2Fapp&dryRun=false");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("removed image {host}/team/app:v1")), "{body}");
    assert!(body.lines().last().unwrap().starts_with("pruned 1 images"), "{body}");
    assert!(!blob_file(&server.image_path, &app.manifest_digest).exists(), "the manifest went");
    assert!(blob_file(&server.image_path, &tools.manifest_digest).exists(), "the other image stays");
    for bad in ["type=nope", "type=pattern", "type=accessed", "type=pattern&expr=a&dryRun=maybe"] {
        assert_eq!(delete(bad).0, 400, "{bad}");
    }
    pull(&server, &up, "team/app", "v1", &app);
    assert!(up.count("GET", "team/app/manifests/v1") >= 2, "fetched again after the prune");
}

#[test]
fn go_delete_cmd_prune_still_running_after_its_wait_is_answered_202_with_the_job() {
    let up = FakeUpstream::start();
    let images: Vec<FakeImage> =
        (0..8).map(|i| up.add_image(&format!("team/i{i}"), "v1", &[random_bytes(10 + i, 2000)])).collect();
    // Test-only (fault-injection builds): wait 0 ms instead of 5 minutes before the 202.
    let server = Server::start_with_env(&plain_registry(&up.host()), &[], &[("OCIREGISTRY_FAULTS", "go-prune-wait=0")]);
    for (i, img) in images.iter().enumerate() {
        pull(&server, &up, &format!("team/i{i}"), "v1", img);
    }
    let request = "DELETE /cmd/prune?type=pattern&expr=team/&dryRun=false&count=-1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (status, head, body) = raw(&server.addr, request.as_bytes());
    assert_eq!(status, 202, "{body}");
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("Location: ").or_else(|| l.strip_prefix("location: ")))
        .unwrap_or_else(|| panic!("no Location in {head}"))
        .trim()
        .to_string();
    assert!(location.starts_with("/cmd/jobs/") && body.contains(&location), "{head}\n{body}");
    let mut done = String::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            done = get(&server.addr, &location, "").2;
            !done.contains("\"running\"")
        }),
        "the job did not finish: {done}"
    );
    assert!(done.contains("\"done\"") && done.contains("pruned 8 images"), "{done}");
    assert!(!blob_file(&server.image_path, &images[0].manifest_digest).exists());
}
