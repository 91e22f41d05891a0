//! Whether this kernel offers TLS offload (kTLS, the `tls` TCP upper-layer
//! protocol), probed once at startup when HTTPS is configured.
//!
//! The probe asks the kernel the way an offload would: it sets `TCP_ULP tls`
//! on a throwaway connected loopback socket (the option needs an established
//! connection; with CAP_NET_ADMIN the kernel loads the module on demand).
//! `/proc/sys/net/ipv4/tcp_available_ulp` is read for the account of why.
//!
//! Only the answer is used today: HTTPS bodies are encrypted by rustls in user
//! space whatever it says. The offload itself (rustls secret extraction, then
//! `TLS_TX`/`TLS_RX` and sendfile) is not built: see README, HTTPS.

use std::fmt;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

/// Where the kernel lists the TCP upper-layer protocols it offers.
pub const AVAILABLE_ULP: &str = "/proc/sys/net/ipv4/tcp_available_ulp";

/// Longest `tcp_available_ulp` text shown in the log (it is a short list).
const SHOWN: usize = 200;

/// The probe's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelTls {
    /// `TCP_ULP tls` was accepted on a connected socket.
    pub available: bool,
    /// Why, in words for the log.
    pub reason: String,
}

impl KernelTls {
    /// Probes this kernel (a loopback connection and one file read).
    pub fn probe() -> KernelTls {
        let listed = std::fs::read_to_string(AVAILABLE_ULP);
        let shown = match &listed {
            Ok(text) => format!("tcp_available_ulp: {}", clip(text.trim())),
            Err(e) => format!("{AVAILABLE_ULP}: {e}"),
        };
        let reason = match loopback_pair().map(|(client, _server)| set_tls_ulp(&client)) {
            Ok(Ok(())) => return KernelTls { available: true, reason: format!("the tls module is loaded ({shown})") },
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOENT) => format!("the tls module is not loaded ({shown})"),
            Ok(Err(e)) => format!("TCP_ULP tls was refused: {e} ({shown})"),
            Err(e) => format!("the probe's loopback connection failed: {e} ({shown})"),
        };
        KernelTls { available: false, reason }
    }

    /// Logs once which path HTTPS bodies take, and why.
    pub fn log(&self) {
        if self.available {
            tracing::info!(
                "kernel TLS available: {}; the offload is not built yet, HTTPS bodies are encrypted by rustls in user space",
                self.reason
            );
        } else {
            tracing::info!(
                "kernel TLS unavailable: {}; HTTPS bodies are encrypted by rustls in user space",
                self.reason
            );
        }
    }
}

impl fmt::Display for KernelTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = if self.available { "available" } else { "unavailable" };
        write!(f, "kernel TLS {word}: {}", self.reason)
    }
}

/// The file's text, cut short and kept to printable characters.
fn clip(text: &str) -> String {
    text.chars().take(SHOWN).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

/// A connected loopback pair (client, server): `TCP_ULP` needs an established socket.
fn loopback_pair() -> std::io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    Ok((client, server))
}

/// Sets `TCP_ULP tls` on `client` (which then belongs to the kernel's TLS layer; it is dropped unused).
fn set_tls_ulp(client: &TcpStream) -> std::io::Result<()> {
    let name = b"tls";
    // SAFETY: a valid socket descriptor owned by `client`, and a buffer of the given length.
    let rc = unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_agrees_with_the_kernels_list() {
        let probe = KernelTls::probe();
        // Read after the probe: with CAP_NET_ADMIN the probe may have loaded the module.
        let listed = std::fs::read_to_string(AVAILABLE_ULP).unwrap_or_default();
        let has_tls = listed.split_whitespace().any(|u| u == "tls");
        assert_eq!(probe.available, has_tls, "{probe} / {listed:?}");
        assert!(probe.reason.contains(&format!("tcp_available_ulp: {}", listed.trim())), "{probe}");
    }

    #[test]
    fn the_shown_list_is_clipped_and_printable() {
        assert_eq!(clip("mptcp\u{1b}[31m tls"), "mptcp?[31m tls");
        assert_eq!(clip(&"a".repeat(500)).len(), SHOWN);
    }
}
