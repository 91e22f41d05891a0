//! A Docker-style token server for distribution's `auth: token:` mode.
//!
//! It answers `GET /token?service=..&scope=..` on 127.0.0.1, over plain HTTP or, given a [`TestPki`], over
//! HTTPS with that PKI's server certificate (a realm on its own port under the registry's private CA, as
//! GitLab's `/jwt/auth` is), with RS256 JWTs whose header
//! `kid` is the libtrust key ID of the signing key; distribution finds that key in `rootcertbundle`
//! (`cert_bundle` here). Every requested scope is granted in full to a client presenting the configured
//! Basic credentials; without credentials configured, to anyone. Missing or wrong credentials get 401,
//! and anything but `GET /token` gets 404 (containerd then falls back from its OAuth POST to GET).
//! Signing uses `openssl dgst -sign`. distribution accepts a token until 60 s after its `exp`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::certs::{openssl, path_str, TestPki};

const MAX_REQUEST_HEAD: usize = 16 * 1024;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct TokenServerConfig {
    /// The `aud` of every token; must equal distribution's `auth.token.service`.
    pub service: String,
    /// The `iss` of every token; must equal distribution's `auth.token.issuer`.
    pub issuer: String,
    /// Basic credentials a client must present; `None` serves everyone.
    pub credentials: Option<(String, String)>,
    pub ttl_secs: u64,
    /// Serve HTTPS with this PKI's server certificate instead of plain HTTP.
    pub https: Option<TestPki>,
}

impl TokenServerConfig {
    pub fn new(credentials: Option<(&str, &str)>, ttl_secs: u64) -> Self {
        TokenServerConfig {
            service: "ociregistry-test-upstream".to_string(),
            issuer: "ociregistry-test-token-issuer".to_string(),
            credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
            ttl_secs,
            https: None,
        }
    }

    /// The same, served over HTTPS with the server certificate of `pki`.
    pub fn with_https(self, pki: &TestPki) -> Self {
        TokenServerConfig { https: Some(pki.clone()), ..self }
    }
}

/// Signs tokens with one RSA key; shared by the server thread and [`TokenServer::issue`].
struct Signer {
    config: TokenServerConfig,
    key: PathBuf,
    key_id: String,
    issued: AtomicUsize,
}

pub struct TokenServer {
    pub port: u16,
    /// `http://127.0.0.1:PORT/token` (`https://` when serving HTTPS), for distribution's `auth.token.realm`.
    pub realm: String,
    /// PEM certificate of the signing key, for distribution's `auth.token.rootcertbundle`.
    pub cert_bundle: PathBuf,
    signer: Arc<Signer>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TokenServer {
    /// Makes a signing key and certificate in `dir` and starts serving on a free loopback port.
    pub fn start(dir: &Path, config: TokenServerConfig) -> TokenServer {
        std::fs::create_dir_all(dir).unwrap();
        let key = dir.join("token-signer.key");
        let cert_bundle = dir.join("token-signer.crt");
        openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path_str(&key)]);
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            path_str(&key),
            "-subj",
            "/CN=ociregistry-test-token-signer",
            "-days",
            "3650",
            "-out",
            path_str(&cert_bundle),
        ]);
        let spki_der = openssl(&["pkey", "-in", path_str(&key), "-pubout", "-outform", "DER"]);
        let tls = config.https.as_ref().map(server_tls);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let signer = Arc::new(Signer { config, key, key_id: libtrust_key_id(&spki_der), issued: AtomicUsize::new(0) });

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (signer, requests, stop) = (signer.clone(), requests.clone(), stop.clone());
            std::thread::spawn(move || accept_loop(listener, tls, signer, requests, stop))
        };
        TokenServer {
            port,
            realm: format!("{scheme}://127.0.0.1:{port}/token"),
            cert_bundle,
            signer,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// Requests received on `/token`, refused ones included.
    pub fn request_count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn service(&self) -> &str {
        &self.signer.config.service
    }

    pub fn issuer(&self) -> &str {
        &self.signer.config.issuer
    }

    /// The libtrust key ID put in every token's `kid`.
    pub fn key_id(&self) -> &str {
        &self.signer.key_id
    }

    /// A token for `subject` granting the scopes, each like `repository:NAME:pull,push`.
    pub fn issue(&self, subject: &str, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        self.signer.sign(subject, &scopes, &self.signer.config.service)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A rustls server config (ring provider, no client authentication) presenting `pki`'s server certificate,
/// which covers 127.0.0.1 and localhost.
fn server_tls(pki: &TestPki) -> Arc<ServerConfig> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&pki.server_cert).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(&pki.server_key).unwrap();
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    signer: Arc<Signer>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let (tls, signer, requests) = (tls.clone(), signer.clone(), requests.clone());
        std::thread::spawn(move || {
            let _ = handle(stream, tls, &signer, &requests);
        });
    }
}

/// Serves one request on `stream`, inside TLS when `tls` is given.
fn handle(
    stream: TcpStream,
    tls: Option<Arc<ServerConfig>>,
    signer: &Signer,
    requests: &AtomicUsize,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let Some(tls) = tls else {
        return exchange(stream, signer, requests);
    };
    let conn = ServerConnection::new(tls).map_err(std::io::Error::other)?;
    let mut stream = StreamOwned::new(conn, stream);
    exchange(&mut stream, signer, requests)?;
    stream.conn.send_close_notify();
    stream.flush()
}

/// Reads one request head from `stream` and writes the whole response.
fn exchange(mut stream: impl Read + Write, signer: &Signer, requests: &AtomicUsize) -> std::io::Result<()> {
    let head = read_head(&mut stream)?;
    let (status, body) = respond(&head, signer, requests);
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 401 {
        response.push_str("WWW-Authenticate: Basic realm=\"ociregistry-test-token\"\r\n");
    }
    response.push_str("\r\n");
    stream.write_all(response.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

fn read_head(stream: &mut impl Read) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() + n > MAX_REQUEST_HEAD {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The status and JSON body answering one request head.
fn respond(head: &str, signer: &Signer, requests: &AtomicUsize) -> (u16, String) {
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let (method, target) = (request_line.next().unwrap_or(""), request_line.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if method != "GET" || path != "/token" {
        return (404, r#"{"error":"not found"}"#.to_string());
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let authorization = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value.trim().to_string());
    let Some(subject) = authenticate(&signer.config, authorization.as_deref()) else {
        return (401, r#"{"error":"unauthorized"}"#.to_string());
    };
    let params = parse_query(query);
    let scopes: Vec<String> = params.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.clone()).collect();
    let service = params.iter().find(|(k, _)| k == "service").map_or(signer.config.service.as_str(), |(_, v)| v);
    let token = signer.sign(&subject, &scopes, service);
    let body = json!({
        "token": token,
        "access_token": token,
        "expires_in": signer.config.ttl_secs,
        "issued_at": rfc3339(unix_now()),
    });
    (200, body.to_string())
}

/// The token subject for a request, or `None` when it must be refused.
fn authenticate(config: &TokenServerConfig, authorization: Option<&str>) -> Option<String> {
    let Some((user, pass)) = &config.credentials else {
        return Some(String::new());
    };
    let encoded = authorization?.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(base64_decode(encoded.trim())?).ok()?;
    (decoded == format!("{user}:{pass}")).then(|| user.clone())
}

impl Signer {
    fn sign(&self, subject: &str, scopes: &[String], audience: &str) -> String {
        let now = unix_now();
        let serial = self.issued.fetch_add(1, Ordering::SeqCst);
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": self.key_id});
        let claims = json!({
            "iss": self.config.issuer,
            "sub": subject,
            "aud": audience,
            "exp": now + self.config.ttl_secs,
            "nbf": now.saturating_sub(1),
            "iat": now,
            "jti": format!("{}-{now}-{serial}", std::process::id()),
            "access": scopes.iter().filter_map(|s| access_entry(s)).collect::<Vec<Value>>(),
        });
        let signing_input = format!(
            "{}.{}",
            base64_encode(header.to_string().as_bytes(), URL_SAFE),
            base64_encode(claims.to_string().as_bytes(), URL_SAFE)
        );
        let signature = rsa_sha256_sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", base64_encode(&signature, URL_SAFE))
    }
}

/// `repository:NAME:pull,push` as a JWT access entry; the name may itself contain colons.
fn access_entry(scope: &str) -> Option<Value> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
    Some(json!({"type": kind, "name": name, "actions": actions}))
}

fn rsa_sha256_sign(key: &Path, data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign", path_str(key)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl dgst");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst -sign: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// libtrust's key ID: the first 240 bits of SHA-256 over the DER SubjectPublicKeyInfo, in unpadded
/// base32, as twelve groups of four characters joined by ':'.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    let encoded = base32(&digest[..30]);
    let groups: Vec<&str> = (0..encoded.len()).step_by(4).map(|i| &encoded[i..i + 4]).collect();
    groups.join(":")
}

fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in data {
        buffer = (buffer << 8) | byte as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 without padding over `alphabet`.
fn base64_encode(data: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Decodes standard base64, padded or not.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        let value = STANDARD.iter().position(|&a| a == c)? as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (Howard Hinnant's civil-from-days).
pub fn rfc3339(unix: u64) -> String {
    let (days, secs) = ((unix / 86_400) as i64, unix % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}
