//! A real upstream registry for tests: `docker-registry serve` (CNCF distribution 2.8) on a free
//! loopback port with filesystem storage in a temporary directory and deletes enabled, in one of the
//! modes a pull-through cache meets: plain HTTP, HTTPS, HTTPS + Basic auth, HTTPS + token auth (with the
//! token realm over HTTP or over HTTPS under the registry's CA), mTLS.
//!
//! It also drives skopeo against that registry with the TLS and credential flags of its mode, and counts
//! the requests the registry logged, so tests can tell how often a cache went upstream.

use std::fs::{self, File};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::certs::{make_pki, path_str, TestPki};
use super::images::{ref_descriptor, sha256_digest, write_skopeo_dir};
use super::token_server::{TokenServer, TokenServerConfig};

const START_ATTEMPTS: usize = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const POLL_INTERVAL: Duration = Duration::from_millis(20);
const LOG_SETTLE: Duration = Duration::from_millis(60);
const LOG_SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// HTTP, no auth.
    Plain,
    /// HTTPS with a certificate from the test CA, no auth.
    Tls,
    /// HTTPS, htpasswd (bcrypt) Basic auth.
    TlsBasic { user: String, pass: String },
    /// HTTPS, bearer tokens from a [`TokenServer`] that requires these Basic credentials, serving its
    /// realm over HTTPS with a certificate of the test CA when `https_realm` is set, else over HTTP.
    TlsToken { user: String, pass: String, ttl_secs: u64, https_realm: bool },
    /// HTTPS that requires a client certificate signed by the test CA.
    Mtls,
}

impl Mode {
    pub fn basic(user: &str, pass: &str) -> Mode {
        Mode::TlsBasic { user: user.to_string(), pass: pass.to_string() }
    }

    pub fn token(user: &str, pass: &str, ttl_secs: u64) -> Mode {
        Mode::TlsToken { user: user.to_string(), pass: pass.to_string(), ttl_secs, https_realm: false }
    }

    /// [`Mode::token`] with the realm at `https://127.0.0.1:<its own port>/token`, certified by the test CA.
    pub fn token_with_https_realm(user: &str, pass: &str, ttl_secs: u64) -> Mode {
        Mode::TlsToken { user: user.to_string(), pass: pass.to_string(), ttl_secs, https_realm: true }
    }

    fn is_tls(&self) -> bool {
        *self != Mode::Plain
    }

    fn credentials(&self) -> Option<(&str, &str)> {
        match self {
            Mode::TlsBasic { user, pass } | Mode::TlsToken { user, pass, .. } => Some((user, pass)),
            _ => None,
        }
    }
}

pub struct Distribution {
    pub port: u16,
    /// `127.0.0.1:PORT`, the registry host in image references.
    pub host: String,
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub base_url: String,
    pub mode: Mode,
    /// The CA, server and client certificates, in every mode but `Plain`.
    pub pki: Option<TestPki>,
    /// The token server, in `TlsToken` mode.
    pub token_server: Option<TokenServer>,
    pub storage_dir: PathBuf,
    /// The registry's stdout and stderr.
    pub log_path: PathBuf,
    child: Child,
    _dir: TempDir,
}

impl Distribution {
    /// Starts a registry in `mode` and returns once it listens.
    pub fn start(mode: Mode) -> Distribution {
        let dir = tempfile::tempdir().unwrap();
        let storage_dir = dir.path().join("storage");
        fs::create_dir_all(&storage_dir).unwrap();
        let pki = mode.is_tls().then(|| make_pki(&dir.path().join("pki")));
        let token_server = match &mode {
            Mode::TlsToken { user, pass, ttl_secs, https_realm } => {
                let config = TokenServerConfig::new(Some((user, pass)), *ttl_secs);
                let config = match (https_realm, &pki) {
                    (true, Some(pki)) => config.with_https(pki),
                    _ => config,
                };
                Some(TokenServer::start(&dir.path().join("token"), config))
            }
            _ => None,
        };
        let auth = auth_config(&mode, dir.path(), token_server.as_ref());
        let log_path = dir.path().join("registry.log");
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let config = config_yaml(port, &storage_dir, pki.as_ref(), &mode, &auth);
            let config_path = dir.path().join("config.yml");
            fs::write(&config_path, config).unwrap();
            let mut child = spawn_registry(&config_path, &log_path);
            if wait_ready(&mut child, port, &log_path) {
                let scheme = if mode.is_tls() { "https" } else { "http" };
                return Distribution {
                    port,
                    host: format!("127.0.0.1:{port}"),
                    base_url: format!("{scheme}://127.0.0.1:{port}"),
                    mode,
                    pki,
                    token_server,
                    storage_dir,
                    log_path,
                    child,
                    _dir: dir,
                };
            }
        }
        panic!("docker-registry did not start:\n{}", fs::read_to_string(&log_path).unwrap_or_default());
    }

    /// `127.0.0.1:PORT/REPO:TAG` (or `@DIGEST`) for `repo_ref`.
    pub fn reference(&self, repo_ref: &str) -> String {
        format!("{}/{repo_ref}", self.host)
    }

    /// `user:pass` in the auth modes.
    pub fn creds(&self) -> Option<String> {
        self.mode.credentials().map(|(user, pass)| format!("{user}:{pass}"))
    }

    /// skopeo's TLS flags for this registry, without credentials. `prefix` is `"dest-"` or `"src-"` for
    /// `skopeo copy`, `""` for `inspect` and `delete`.
    pub fn tls_flags(&self, prefix: &str) -> Vec<String> {
        match (&self.mode, &self.pki) {
            (Mode::Mtls, Some(pki)) => vec![format!("--{prefix}cert-dir"), path_str(&pki.skopeo_client_dir).into()],
            (_, Some(pki)) => vec![format!("--{prefix}cert-dir"), path_str(&pki.skopeo_ca_dir).into()],
            (_, None) => vec![format!("--{prefix}tls-verify=false")],
        }
    }

    /// [`Self::tls_flags`] plus `--{prefix}creds` in the auth modes.
    pub fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        let mut flags = self.tls_flags(prefix);
        if let Some(creds) = self.creds() {
            flags.extend([format!("--{prefix}creds"), creds]);
        }
        flags
    }

    /// `skopeo copy --all oci:LAYOUT:REF docker://HOST/REPO_TAG`, panicking on failure; a ref with
    /// Docker media types goes through a `dir:` copy, since the `oci:` transport cannot see it. `extra`
    /// goes before the image names, e.g. `["--format", "v2s2"]`, which converts to Docker media types and
    /// so changes manifest and config digests.
    pub fn push(&self, layout_dir: &Path, ref_name: &str, repo_tag: &str, extra: &[&str]) {
        let descriptor = ref_descriptor(layout_dir, ref_name).unwrap_or_else(|| panic!("no ref {ref_name}"));
        let dir_copy = tempfile::tempdir().unwrap();
        let source = if descriptor["mediaType"].as_str().unwrap_or("").starts_with("application/vnd.docker.") {
            write_skopeo_dir(layout_dir, ref_name, dir_copy.path());
            format!("dir:{}", dir_copy.path().display())
        } else {
            format!("oci:{}:{ref_name}", layout_dir.display())
        };
        let mut args = vec!["copy".to_string(), "--all".to_string()];
        args.extend(self.skopeo_flags("dest-"));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(source);
        args.push(format!("docker://{}", self.reference(repo_tag)));
        expect_success(skopeo(&args), "skopeo copy");
    }

    /// The manifest bytes the registry serves for `repo_ref` (`skopeo inspect --raw`, with credentials).
    pub fn inspect_raw(&self, repo_ref: &str) -> Result<Vec<u8>, String> {
        let mut args = vec!["inspect".to_string(), "--raw".to_string()];
        args.extend(self.skopeo_flags(""));
        args.push(format!("docker://{}", self.reference(repo_ref)));
        let out = skopeo(&args);
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The digest of the manifest the registry serves for `repo_ref`, e.g. after a converting push.
    pub fn manifest_digest(&self, repo_ref: &str) -> String {
        sha256_digest(&self.inspect_raw(repo_ref).unwrap_or_else(|e| panic!("inspect {repo_ref}: {e}")))
    }

    /// Deletes the manifest `repo_ref` points to (`skopeo delete`): every tag on that manifest goes too.
    pub fn delete(&self, repo_ref: &str) {
        let mut args = vec!["delete".to_string()];
        args.extend(self.skopeo_flags(""));
        args.push(format!("docker://{}", self.reference(repo_ref)));
        expect_success(skopeo(&args), "skopeo delete");
    }

    /// (method, request URI) of every request in the registry's access log so far, waiting briefly
    /// for the log to settle since distribution writes each line after its response.
    pub fn requests(&self) -> Vec<(String, String)> {
        settle(&self.log_path);
        fs::read_to_string(&self.log_path).unwrap_or_default().lines().filter_map(access_log_request).collect()
    }

    /// How many logged requests had `method` and a URI containing `path_substring`.
    pub fn request_count(&self, method: &str, path_substring: &str) -> usize {
        self.requests().iter().filter(|(m, uri)| m == method && uri.contains(path_substring)).count()
    }

    /// Kills the registry now, e.g. to test behaviour while the upstream is down.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        self.stop();
    }
}

fn auth_config(mode: &Mode, dir: &Path, token_server: Option<&TokenServer>) -> String {
    match (mode, token_server) {
        (Mode::TlsBasic { user, pass }, _) => {
            let htpasswd = dir.join("htpasswd");
            let out = Command::new("htpasswd").args(["-Bbn", user, pass]).output().expect("run htpasswd");
            expect_success(out.clone(), "htpasswd");
            fs::write(&htpasswd, out.stdout).unwrap();
            format!("auth:\n  htpasswd:\n    realm: ociregistry-test\n    path: {}\n", htpasswd.display())
        }
        (Mode::TlsToken { .. }, Some(ts)) => format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            ts.realm,
            ts.service(),
            ts.issuer(),
            ts.cert_bundle.display()
        ),
        _ => String::new(),
    }
}

fn config_yaml(port: u16, storage: &Path, pki: Option<&TestPki>, mode: &Mode, auth: &str) -> String {
    let mut yaml = format!(
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: ociregistry-test-secret\n",
        storage.display()
    );
    if let Some(pki) = pki {
        yaml.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            pki.server_cert.display(),
            pki.server_key.display()
        ));
        if *mode == Mode::Mtls {
            yaml.push_str(&format!("    clientcas:\n      - {}\n", pki.ca_cert.display()));
        }
    }
    yaml.push_str(auth);
    yaml
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `docker-registry serve CONFIG` with an empty environment but PATH: it reads `REGISTRY_*` variables
/// as configuration overrides.
fn spawn_registry(config: &Path, log_path: &Path) -> Child {
    let log = File::create(log_path).unwrap();
    Command::new("docker-registry")
        .arg("serve")
        .arg(config)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("run docker-registry")
}

/// True once the registry says it listens on `port` and accepts a connection there; false (child reaped)
/// if it exits first, e.g. because another process took the port.
fn wait_ready(child: &mut Child, port: u16, log_path: &Path) -> bool {
    let listening = format!("listening on 127.0.0.1:{port}");
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        let logged = fs::read_to_string(log_path).unwrap_or_default().contains(&listening);
        if logged && TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Waits until the file stops growing for [`LOG_SETTLE`], at most [`LOG_SETTLE_TIMEOUT`].
fn settle(path: &Path) {
    let deadline = Instant::now() + LOG_SETTLE_TIMEOUT;
    let mut size = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    while Instant::now() < deadline {
        std::thread::sleep(LOG_SETTLE);
        let now = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if now == size {
            return;
        }
        size = now;
    }
}

/// (method, URI) from a combined-log-format line: `IP - - [date] "GET /v2/x HTTP/1.1" 200 ...`.
fn access_log_request(line: &str) -> Option<(String, String)> {
    let (_, rest) = line.split_once("] \"")?;
    let mut parts = rest.split(' ');
    let (method, uri, protocol) = (parts.next()?, parts.next()?, parts.next()?);
    protocol.starts_with("HTTP/").then(|| (method.to_string(), uri.to_string()))
}

fn skopeo(args: &[String]) -> Output {
    Command::new("skopeo").arg("--insecure-policy").args(args).output().expect("run skopeo")
}

fn expect_success(out: Output, what: &str) {
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
}
