//! TLS set-up shared by every client: rustls with the ring provider, installed
//! once per process before any client is built.

/// Installs ring as the process-wide rustls provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
