//! HTTPS on the serving port: the rustls `ServerConfig` built from
//! `serverTlsConfig`'s files, held where each new handshake on any serving
//! thread takes it ([`ServerCertificates::current`]), and rebuilt on SIGHUP or
//! when the files change ([`watch`]). Every stat of the files and every rebuild
//! runs on a blocking thread, never on the fetcher's runtime: a slow disk or a
//! hung mount delays the next check, not a download. Connections already open keep the
//! configuration they were accepted with; a rebuild that fails (a file half
//! written, a key that does not match its certificate) keeps the old one and
//! logs an ERROR naming the file.
//!
//! TLS 1.2 and 1.3 with the ring provider, ALPN `http/1.1`; with
//! `clientAuth: verify` a client certificate chaining to `ca` (or to the
//! system's trusted CAs when `ca` is not given, as in Go) is required.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::sync::watch as signal_watch;

use crate::config::server_tls::{ClientAuth, ServerTls};

/// How often the files are checked for changes.
pub const POLL_EVERY: Duration = Duration::from_secs(5);

/// A file of `serverTlsConfig` that could not be used, and why.
#[derive(Debug)]
pub struct LoadError {
    /// The key naming the file: `cert`, `key` or `ca`.
    pub key: &'static str,
    pub file: PathBuf,
    pub reason: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "serverTlsConfig.{} {}: {}", self.key, self.file.display(), self.reason)
    }
}

impl std::error::Error for LoadError {}

/// What a file looked like when it was last read: a change of any of these
/// (a rewrite, a rename over it, a Kubernetes secret's symlink swap) is a change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp { modified: m.modified().ok(), len: m.len(), inode: m.ino() })
}

/// The serving port's TLS configuration, swapped whole on reload.
pub struct ServerCertificates {
    settings: ServerTls,
    current: RwLock<Arc<ServerConfig>>,
    /// The files' stamps when last read, in [`files`] order.
    seen: Mutex<Vec<Option<Stamp>>>,
}

impl ServerCertificates {
    /// Reads the files; an error names the one that could not be used.
    pub fn load(settings: ServerTls) -> Result<ServerCertificates, LoadError> {
        let seen = files(&settings).map(|(_, p)| stamp(p)).collect();
        let config = build(&settings)?;
        Ok(ServerCertificates { settings, current: RwLock::new(Arc::new(config)), seen: Mutex::new(seen) })
    }

    /// The configuration a handshake starting now uses.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().clone()
    }

    pub fn settings(&self) -> &ServerTls {
        &self.settings
    }

    /// Rebuilds from the files and swaps the result in; on error the
    /// configuration in use stays and the error is returned.
    pub fn reload(&self) -> Result<(), LoadError> {
        *self.seen.lock() = files(&self.settings).map(|(_, p)| stamp(p)).collect();
        let config = build(&self.settings)?;
        *self.current.write() = Arc::new(config);
        Ok(())
    }

    /// Whether a file changed since it was last read. Blocks on the file system.
    pub fn changed(&self) -> bool {
        if let Some(stalled) = crate::faults::stall("tls-check") {
            std::thread::sleep(stalled);
        }
        let now: Vec<_> = files(&self.settings).map(|(_, p)| stamp(p)).collect();
        *self.seen.lock() != now
    }

    /// Reloads and logs the outcome; `why` says what asked for it.
    pub fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(
                cert = %self.settings.cert.display(),
                reason = why,
                "serverTlsConfig reloaded: new connections use the new certificates"
            ),
            Err(e) => tracing::error!(
                file = %e.file.display(),
                key = e.key,
                error = %e.reason,
                reason = why,
                "serverTlsConfig reload failed; still serving with the certificates loaded before"
            ),
        }
    }
}

/// The files `settings` reads, with their keys.
fn files(settings: &ServerTls) -> impl Iterator<Item = (&'static str, &Path)> {
    [("cert", Some(settings.cert.as_path())), ("key", Some(settings.key.as_path())), ("ca", settings.ca.as_deref())]
        .into_iter()
        .filter_map(|(k, p)| p.map(|p| (k, p)))
}

/// Builds the rustls configuration from the files `settings` names.
pub fn build(settings: &ServerTls) -> Result<ServerConfig, LoadError> {
    let cert_pem = read("cert", &settings.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail("cert", &settings.cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(fail("cert", &settings.cert, "no certificate in the file".into()));
    }
    let key_pem = read("key", &settings.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| fail("key", &settings.key, format!("not a PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("cert", &settings.cert, e.to_string()))?;
    let builder = match settings.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Verify => {
            let (roots, from) = client_roots(settings.ca.as_deref())?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| fail("ca", from.as_deref().unwrap_or(Path::new("<system CAs>")), e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| fail("key", &settings.key, format!("{e} (with the certificate {})", settings.cert.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Kernel TLS takes the session's keys from rustls after the handshake (`offload`).
    config.enable_secret_extraction = settings.kernel_tls == crate::config::server_tls::KernelTlsMode::Auto;
    Ok(config)
}

/// The CAs client certificates must chain to: `ca`'s, or the system's.
fn client_roots(ca: Option<&Path>) -> Result<(RootCertStore, Option<PathBuf>), LoadError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(ca) => {
            let pem = read("ca", ca)?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| fail("ca", ca, format!("not a PEM certificate bundle: {e}")))?;
                roots.add(cert).map_err(|e| fail("ca", ca, format!("not a usable CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(fail("ca", ca, "no certificate in the file".into()));
            }
            Ok((roots, Some(ca.to_path_buf())))
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                let none = Path::new("<system CAs>");
                return Err(fail("ca", none, "not given, and no system CA certificate found".into()));
            }
            Ok((roots, None))
        }
    }
}

fn fail(key: &'static str, file: &Path, reason: String) -> LoadError {
    LoadError { key, file: file.to_path_buf(), reason }
}

fn read(key: &'static str, file: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(file).map_err(|e| fail(key, file, format!("cannot read: {e}")))
}

/// Reloads `certs` when its files change (checked every [`POLL_EVERY`]),
/// until shutdown; SIGHUP reaches it through a `reload` hook. Runs on the
/// fetch runtime; each check (stats, and a rebuild when a file changed) runs
/// on a blocking thread, one at a time.
pub async fn watch(certs: Arc<ServerCertificates>, mut shutdown: signal_watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let certs = certs.clone();
        let check = tokio::task::spawn_blocking(move || {
            if certs.changed() {
                certs.reload_logged("a file changed");
            }
        });
        tokio::select! {
            _ = check => {}
            _ = shutdown.changed() => return,
        }
    }
}
