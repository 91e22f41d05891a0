//! HTTPS on the serving port (`serverTlsConfig`) against the real binary, with
//! certificates made by the openssl CLI (`common::certs`): manifests and blobs
//! (small, past one TLS chunk, and past the mapping threshold) over TLS with the
//! CA verified, by a rustls client and by curl; a plain HTTP client answered
//! 400 as Go does; mutual TLS refusing a client without a certificate from
//! `ca`; and reloading on SIGHUP and on file change, keeping open connections
//! and keeping the old certificates when the new files do not parse.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::certs::{make_pki, make_server_pair, path_str, TestPki};
use common::fake_upstream::{sha256_digest, FakeImage, FakeUpstream};
use common::https::{client_config, Https};
use common::{random_bytes, wait_until, Server};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// A TLS server in front of the fake upstream, with one image of three layers
/// (small, a few TLS chunks, and past the size blobs are mapped from) pulled
/// through once over HTTPS.
struct Setup {
    _up: FakeUpstream,
    _dir: tempfile::TempDir,
    pki: TestPki,
    server: Server,
    host: String,
    image: FakeImage,
    layers: Vec<Vec<u8>>,
}

const LAYER_SIZES: [usize; 3] = [3000, 700 * 1024, 5 * 1024 * 1024];

fn setup(client_auth: &str) -> Setup {
    setup_with(client_auth, &[])
}

/// [`setup`] with extra `serve` flags.
fn setup_with(client_auth: &str, serve_args: &[&str]) -> Setup {
    setup_env(client_auth, "off", serve_args, &[])
}

/// [`setup_with`] with `serverTlsConfig.kernelTls` (`off` keeps every connection with rustls,
/// whatever the kernel running the tests offers) and environment variables for the server.
fn setup_env(client_auth: &str, kernel_tls: &str, serve_args: &[&str], env: &[(&str, &str)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(&dir.path().join("pki"));
    // The server reads copies, so a test can replace them.
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    for (from, to) in [(&pki.server_cert, "server.crt"), (&pki.server_key, "server.key"), (&pki.ca_cert, "ca.crt")] {
        std::fs::copy(from, live.join(to)).unwrap();
    }
    let up = FakeUpstream::start();
    let layers: Vec<Vec<u8>> = LAYER_SIZES.iter().enumerate().map(|(i, &n)| random_bytes(i as u64 + 7, n)).collect();
    let image = up.add_image("team/app", "v1", &layers);
    let config = format!(
        "prefetch: false\nregistries:\n  - name: \"{}\"\n    scheme: http\nserverTlsConfig:\n  cert: {}\n  key: {}\n  ca: {}\n  clientAuth: {client_auth}\n  kernelTls: {kernel_tls}\n",
        up.host(),
        path_str(&live.join("server.crt")),
        path_str(&live.join("server.key")),
        path_str(&live.join("ca.crt")),
    );
    let server = Server::start_with_env(&config, serve_args, env);
    let host = up.host();
    Setup { _up: up, _dir: dir, pki, server, host, image, layers }
}

impl Setup {
    fn live(&self, name: &str) -> PathBuf {
        self._dir.path().join("live").join(name)
    }

    fn client(&self) -> Arc<rustls::ClientConfig> {
        client_config(&self.pki.ca_cert, Some((&self.pki.client_cert, &self.pki.client_key)))
    }

    /// Pulls the manifest and every layer on `conn`, checking each body.
    fn pull(&self, conn: &mut Https) {
        let a = conn.get(&format!("/v2/{}/team/app/manifests/v1", self.host), "*/*").unwrap();
        assert_eq!(a.status, 200, "{}", a.head);
        assert_eq!(a.body, self.image.manifest_bytes);
        for (digest, bytes) in self.image.layer_digests.iter().zip(&self.layers) {
            let a = conn.get(&format!("/v2/{}/team/app/blobs/{digest}", self.host), "*/*").unwrap();
            assert_eq!(a.status, 200, "{}", a.head);
            assert_eq!(a.body.len(), bytes.len());
            assert_eq!(&sha256_digest(&a.body), digest);
        }
    }
}

#[test]
fn manifests_and_blobs_over_https_with_the_ca_verified() {
    let s = setup("none");
    let config = client_config(&s.pki.ca_cert, None);
    let mut conn = Https::connect(&s.server.addr, config.clone()).unwrap();
    assert_eq!(conn.alpn().as_deref(), Some(&b"http/1.1"[..]));
    // First through the fetch (misses), then from the cache: both on one keep-alive connection.
    s.pull(&mut conn);
    s.pull(&mut conn);
    let mut again = Https::connect(&s.server.addr, config).unwrap();
    s.pull(&mut again);
    // A client that does not trust the CA refuses the server.
    let stranger = tempfile::tempdir().unwrap();
    let other = make_pki(stranger.path());
    assert!(Https::connect(&s.server.addr, client_config(&other.ca_cert, None)).is_err());
    let log = s.server.log();
    assert!(log.contains("tls=\"cert="), "the startup line names the certificates: {log}");
    assert!(
        log.contains("WARN") && log.contains("serverTlsConfig.ca is only used with clientAuth: verify"),
        "a ca given with clientAuth: none is warned about: {log}"
    );
}

#[test]
fn curl_pulls_a_blob_verifying_the_ca() {
    let s = setup("none");
    let digest = &s.image.layer_digests[2];
    let out_file = s._dir.path().join("blob");
    let url = format!("https://localhost:{}/v2/{}/team/app/blobs/{digest}", port(&s.server.addr), s.host);
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "60", "--resolve"])
        .arg(format!("localhost:{}:127.0.0.1", port(&s.server.addr)))
        .arg("--cacert")
        .arg(&s.pki.ca_cert)
        .arg("-o")
        .arg(&out_file)
        .arg(&url)
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(&sha256_digest(&std::fs::read(&out_file).unwrap()), digest);
}

fn port(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}

#[test]
fn plain_http_on_the_https_port_is_answered_400_and_closed() {
    let s = setup("none");
    let mut tcp = TcpStream::connect(&s.server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.0 400 Bad Request\r\n"), "{answer:?}");
    assert!(answer.contains("Client sent an HTTP request to an HTTPS server."), "{answer:?}");
    // The server still serves HTTPS afterwards.
    let mut conn = Https::connect(&s.server.addr, client_config(&s.pki.ca_cert, None)).unwrap();
    assert_eq!(conn.get("/v2/", "*/*").unwrap().status, 200);
}

#[test]
fn a_stalled_handshake_does_not_hold_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let config = format!(
        "headerTimeout: 1\nserverTlsConfig:\n  cert: {}\n  key: {}\n",
        path_str(&pki.server_cert),
        path_str(&pki.server_key)
    );
    let server = Server::start(&config, &[]);
    let mut tcp = TcpStream::connect(&server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // Half a record header, then nothing: the server gives up after headerTimeout.
    tcp.write_all(&[0x16, 0x03]).unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest);
    assert!(started.elapsed() < Duration::from_secs(15), "the stalled handshake was not cut");
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn mutual_tls_refuses_clients_without_a_certificate_from_the_ca() {
    let metrics_port = common::free_port().to_string();
    let s = setup_with("verify", &["--metrics", &metrics_port]);
    let mut conn = Https::connect(&s.server.addr, s.client()).unwrap();
    s.pull(&mut conn);
    // Without a certificate: TLS 1.3 clients learn it at their first read.
    let refused = Https::connect(&s.server.addr, client_config(&s.pki.ca_cert, None))
        .and_then(|mut c| c.get("/v2/", "*/*").map(|a| a.status));
    assert!(refused.is_err(), "a client without a certificate was served: {refused:?}");
    // With a certificate from another CA.
    let stranger = tempfile::tempdir().unwrap();
    let other = make_pki(stranger.path());
    let foreign = client_config(&s.pki.ca_cert, Some((&other.client_cert, &other.client_key)));
    let refused = Https::connect(&s.server.addr, foreign).and_then(|mut c| c.get("/v2/", "*/*").map(|a| a.status));
    assert!(refused.is_err(), "a client with a foreign certificate was served: {refused:?}");
    assert!(s.server.log().contains("TLS handshake failed"), "{}", s.server.log());
    // The refused clients may hear the alert before the server has counted its failure.
    let page = || common::http_get(&format!("http://127.0.0.1:{metrics_port}/metrics"), &[]).text();
    let failures = || common::metric(&page(), "ociregistry_tls_handshake_failures_total");
    assert!(wait_until(Duration::from_secs(5), || failures() >= 2), "{}", page());
    // Committed file bodies (the second pull's) go out through rustls.
    s.pull(&mut conn);
    assert!(common::metric(&page(), "ociregistry_body_bytes_sent_total{path=\"tls\"}") > 0, "{}", page());
}

impl Setup {
    /// Makes a new CA-signed server pair and puts it in place of the live one,
    /// each file renamed over the old (as a secret update does); returns the new certificate's DER.
    fn replace_pair(&self, serial: u32) -> Vec<u8> {
        let (key, cert) =
            (self._dir.path().join(format!("new-{serial}.key")), self._dir.path().join(format!("new-{serial}.crt")));
        make_server_pair(&self.pki, &key, &cert, serial);
        std::fs::rename(&key, self.live("server.key")).unwrap();
        std::fs::rename(&cert, self.live("server.crt")).unwrap();
        CertificateDer::pem_file_iter(self.live("server.crt")).unwrap().next().unwrap().unwrap().to_vec()
    }

    fn sighup(&self) {
        self.server.signal(libc::SIGHUP);
    }

    /// Whether a new connection is now shown `der`.
    fn new_connections_see(&self, der: &[u8]) -> bool {
        Https::connect(&self.server.addr, self.client()).is_ok_and(|c| c.server_cert() == der)
    }
}

#[test]
fn sighup_reloads_for_new_connections_and_open_ones_keep_working() {
    let s = setup("verify");
    let mut open = Https::connect(&s.server.addr, s.client()).unwrap();
    s.pull(&mut open);
    let old = open.server_cert();
    let new = s.replace_pair(9);
    assert_ne!(old, new);
    s.sighup();
    assert!(wait_until(Duration::from_secs(10), || s.new_connections_see(&new)), "{}", s.server.log());
    // The connection opened before the reload is still served, on its own session.
    s.pull(&mut open);
    assert_eq!(open.server_cert(), old);
    assert!(s.server.log().contains("serverTlsConfig reloaded"), "{}", s.server.log());
    assert!(!s.server.log().contains("serverTlsConfig.ca is only used"), "ca is used with verify: {}", s.server.log());
}

#[test]
fn a_reload_that_fails_keeps_the_certificates_in_use_and_file_changes_reload_without_a_signal() {
    let s = setup("none");
    let first = Https::connect(&s.server.addr, s.client()).unwrap().server_cert();
    // A certificate file that is not PEM: the ERROR names it, and the old pair stays.
    std::fs::write(s.live("server.crt"), b"not a certificate").unwrap();
    s.sighup();
    let live_cert = s.live("server.crt");
    let failed = || {
        s.server
            .log()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("reload failed") && l.contains(path_str(&live_cert)))
    };
    assert!(wait_until(Duration::from_secs(10), failed), "{}", s.server.log());
    let mut conn = Https::connect(&s.server.addr, s.client()).unwrap();
    assert_eq!(conn.server_cert(), first, "still the certificate loaded before");
    s.pull(&mut conn);
    // A good pair written in place is picked up by the periodic check, with no signal.
    let new = s.replace_pair(10);
    assert!(wait_until(Duration::from_secs(20), || s.new_connections_see(&new)), "{}", s.server.log());
    s.pull(&mut conn);
}

/// Every periodic check of the files stalls for a minute (a hung disk): pulls
/// through the fetcher (misses) still complete within the client's 20 s read
/// timeout, because the checks wait on a blocking thread, not on the fetcher's.
#[test]
fn a_stalled_check_of_the_certificate_files_does_not_stall_the_fetcher() {
    let s = setup_env("none", "off", &[], &[("OCIREGISTRY_FAULTS", "tls-check=60000")]);
    let mut conn = Https::connect(&s.server.addr, s.client()).unwrap();
    s.pull(&mut conn);
    s.pull(&mut conn);
}

#[test]
fn unusable_files_at_startup_stop_the_server_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(&dir.path().join("pki"));
    let bad_key = dir.path().join("bad.key");
    std::fs::write(&bad_key, b"-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n").unwrap();
    let other_key = pki.client_key.clone();
    for (key, needle) in [
        (bad_key.clone(), format!("serverTlsConfig.key {}", bad_key.display())),
        // A key that is not the certificate's.
        (other_key.clone(), format!("serverTlsConfig.key {}", other_key.display())),
        (dir.path().join("missing.key"), "cannot read".to_string()),
    ] {
        let config = dir.path().join("config.yaml");
        let yaml = format!("serverTlsConfig:\n  cert: {}\n  key: {}\n", path_str(&pki.server_cert), path_str(&key));
        std::fs::write(&config, yaml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ociregistry"))
            .arg("--image-path")
            .arg(dir.path().join("images"))
            .arg("--config-file")
            .arg(&config)
            .args(["serve", "--host", "127.0.0.1", "--port", "0"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(&needle), "{needle}: {stderr}");
    }
}

#[test]
fn ranges_heads_and_pipelined_requests_over_https_on_both_drivers() {
    // `auto` is io_uring wherever the kernel allows it.
    for driver in ["auto", "epoll"] {
        let s = setup_with("none", &["--io-driver", driver]);
        let mut conn = Https::connect(&s.server.addr, s.client()).unwrap();
        s.pull(&mut conn);
        let (digest, bytes) = (&s.image.layer_digests[1], &s.layers[1]);
        let path = format!("/v2/{}/team/app/blobs/{digest}", s.host);
        // A range, a HEAD and a whole blob in one write: three answers, in order.
        conn.send(&format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=100000-100999\r\n\r\n\
             HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n\
             GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"
        ))
        .unwrap();
        let range = conn.answer(false).unwrap();
        assert_eq!(range.status, 206, "{driver}: {}", range.head);
        assert_eq!(&range.body[..], &bytes[100_000..101_000], "{driver}");
        let head = conn.answer(true).unwrap();
        assert_eq!(head.status, 200, "{driver}: {}", head.head);
        assert!(head.head.contains(&format!("Content-Length: {}", bytes.len())), "{driver}: {}", head.head);
        let whole = conn.answer(false).unwrap();
        assert_eq!(&sha256_digest(&whole.body), digest, "{driver}");
    }
}

#[test]
fn https_connections_past_the_cap_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let config = format!(
        "maxConnections: 2\nserverTlsConfig:\n  cert: {}\n  key: {}\n",
        path_str(&pki.server_cert),
        path_str(&pki.server_key)
    );
    let server = Server::start(&config, &["--threads", "1"]);
    let client = client_config(&pki.ca_cert, None);
    let held: Vec<Https> = (0..2).map(|_| Https::connect(&server.addr, client.clone()).unwrap()).collect();
    // The third is closed before any TLS: its handshake fails instead of waiting for a slot.
    let third = Https::connect(&server.addr, client.clone()).and_then(|mut c| c.get("/v2/", "*/*").map(|a| a.status));
    assert!(third.is_err(), "a connection past the cap was served: {third:?}");
    drop(held);
    let served_again = || {
        Https::connect(&server.addr, client.clone())
            .and_then(|mut c| c.get("/v2/", "*/*"))
            .is_ok_and(|a| a.status == 200)
    };
    assert!(wait_until(Duration::from_secs(10), served_again), "served again once connections closed");
}

/// What this kernel lists in `tcp_available_ulp`, read after the server's probe
/// (which, with CAP_NET_ADMIN, may have loaded the module).
fn kernel_lists_tls() -> (bool, String) {
    let listed = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp").unwrap_or_default();
    (listed.split_whitespace().any(|u| u == "tls"), listed.trim().to_string())
}

#[test]
fn the_kernel_tls_probe_is_logged_and_exposed_as_the_kernel_lists_it() {
    let metrics_port = common::free_port().to_string();
    let s = setup_env("none", "auto", &["--metrics", &metrics_port], &[]);
    let mut conn = Https::connect(&s.server.addr, client_config(&s.pki.ca_cert, None)).unwrap();
    s.pull(&mut conn); // through the fetch
    s.pull(&mut conn); // from the cache's files
    let page = common::http_get(&format!("http://127.0.0.1:{metrics_port}/metrics"), &[]).text();
    let (has_tls, listed) = kernel_lists_tls();
    let log = s.server.log();
    let line = if has_tls {
        format!("kernel TLS available: the tls module is loaded (tcp_available_ulp: {listed}) and carries TLS 1.3 AES-128-GCM")
    } else {
        format!("kernel TLS unavailable: the tls module is not loaded (tcp_available_ulp: {listed}); HTTPS bodies are encrypted by rustls in user space")
    };
    assert!(log.contains(&line), "expected {line:?} in {log}");
    assert_eq!(log.matches("kernel TLS").count(), 1, "logged once: {log}");
    assert_eq!(common::metric(&page, "ociregistry_tls_kernel_offload_available"), u64::from(has_tls), "{page}");
    assert!(page.contains("# TYPE ociregistry_tls_kernel_offload_available gauge\n"), "{page}");
    // Where the kernel lacks the module no connection is offered to it: the
    // fallback (rustls) carries every one, and the counters say so.
    if !has_tls {
        assert!(common::metric(&page, "ociregistry_body_bytes_sent_total{path=\"tls\"}") > 0, "{page}");
        for series in
            ["tls_kernel_offloads_total", "tls_kernel_offload_declined_total", "tls_kernel_offload_failures_total"]
        {
            assert_eq!(common::metric(&page, &format!("ociregistry_{series}")), 0, "{series}: {page}");
        }
    }
    // Without HTTPS there is nothing to probe, and no availability series.
    let plain_metrics = common::free_port().to_string();
    let plain = Server::start("prefetch: false\n", &["--metrics", &plain_metrics]);
    let page = common::http_get(&format!("http://127.0.0.1:{plain_metrics}/metrics"), &[]).text();
    assert!(!page.contains("tls_kernel_offload_available"), "{page}");
    assert!(!plain.log().contains("kernel TLS"), "{}", plain.log());
}

#[test]
fn where_the_kernel_refuses_its_tls_each_connection_stays_with_rustls() {
    // Asked as the server asks (which, as root, loads the module where the kernel has one).
    if ociregistry::tls::KernelTls::probe().available {
        return; // this kernel takes the hand-over: tests/kernel_tls.rs checks that side
    }
    // Every connection tries the hand-over (the probe would have said no), is
    // refused TCP_ULP, and carries on with rustls: after the handshake's
    // records were fed one by one, nothing of the first request is lost.
    let metrics_port = common::free_port().to_string();
    let s = setup_env("verify", "auto", &["--metrics", &metrics_port], &[("OCIREGISTRY_FAULTS", "kernel-tls=attempt")]);
    let mut first = Https::connect(&s.server.addr, s.client()).unwrap();
    s.pull(&mut first);
    s.pull(&mut first);
    let mut second = Https::connect(&s.server.addr, s.client()).unwrap();
    s.pull(&mut second);
    let page = common::http_get(&format!("http://127.0.0.1:{metrics_port}/metrics"), &[]).text();
    assert_eq!(common::metric(&page, "ociregistry_tls_kernel_offload_declined_total"), 2, "{page}");
    assert_eq!(common::metric(&page, "ociregistry_tls_kernel_offloads_total"), 0, "{page}");
    assert_eq!(common::metric(&page, "ociregistry_tls_kernel_offload_failures_total"), 0, "{page}");
    assert!(common::metric(&page, "ociregistry_body_bytes_sent_total{path=\"tls\"}") > 0, "{page}");
}

/// Runs `openssl s_client` once against `addr`, sending `sni` as the server name.
fn openssl_hello(addr: &str, sni: &str, ca: &std::path::Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", sni, "-CAfile", path_str(ca)])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_client_sending_an_ip_address_as_server_name_is_not_logged_per_connection_at_info() {
    // At debug, rustls's warning about it shows (so the check below could see it)...
    let s = setup("none");
    let hello = openssl_hello(&s.server.addr, "127.0.0.1", &s.pki.ca_cert);
    assert!(hello.contains("Verify return code: 0"), "{hello}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !s.server.log().contains("Illegal SNI") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(s.server.log().contains("Illegal SNI"), "{}", s.server.log());
    // ...and at info, as deployed, three such clients leave no line.
    let quiet = setup_with("none", &["--log-level", "info"]);
    for _ in 0..3 {
        let hello = openssl_hello(&quiet.server.addr, "127.0.0.1", &quiet.pki.ca_cert);
        assert!(hello.contains("Verify return code: 0"), "{hello}");
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(!quiet.server.log().contains("SNI"), "{}", quiet.server.log());
}
