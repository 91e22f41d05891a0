//! TLS set-up: rustls with the ring provider, installed once per process
//! before any client is built, the serving port's certificates (`server`),
//! and the kernel's TLS (`kernel`, its interface; `offload`, whether and for
//! which sessions it is used).

pub mod kernel;
pub mod offload;
pub mod server;

pub use offload::KernelTls;
pub use server::ServerCertificates;

/// Installs ring as the process-wide rustls provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
