//! Whether this kernel offers TLS offload (kTLS, the `tls` TCP upper-layer
//! protocol), probed once at startup when HTTPS is configured, and the
//! process's switch for using it ([`Offload`]).
//!
//! The probe asks the kernel the way an offload would: it sets `TCP_ULP tls`
//! on a throwaway connected loopback socket (the option needs an established
//! connection; with CAP_NET_ADMIN the kernel loads the module on demand), then
//! gives throwaway sockets zero keys of each kind of session to learn which
//! the kernel carries. `/proc/sys/net/ipv4/tcp_available_ulp` is read for the
//! account of why.
//!
//! When the kernel carries any kind (and `serverTlsConfig.kernelTls` is not
//! `off`), each HTTPS connection whose session is of such a kind is handed to
//! the kernel after rustls's handshake (`crate::serve::tls`, through
//! `super::kernel`): from then on the socket reads and writes plaintext, and
//! `sendfile` sends file bodies encrypted by the kernel.
//!
//! [`Offload`] is turned off for good (with one WARN) if installing keys ever
//! fails after a connection gave its keys up, so one kernel quirk costs one
//! connection.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::{ProtocolVersion, SupportedCipherSuite};

use super::kernel::{self, Kind, Kinds};

/// Where the kernel lists the TCP upper-layer protocols it offers.
pub const AVAILABLE_ULP: &str = "/proc/sys/net/ipv4/tcp_available_ulp";

/// Longest `tcp_available_ulp` text shown in the log (it is a short list).
const SHOWN: usize = 200;

/// The probe's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelTls {
    /// `TCP_ULP tls` was accepted on a connected socket, and some kind of session's keys.
    pub available: bool,
    /// The kinds of session the kernel took keys for.
    pub carries: Kinds,
    /// Why, in words for the log.
    pub reason: String,
}

impl KernelTls {
    /// Probes this kernel (a few loopback connections and one file read).
    pub fn probe() -> KernelTls {
        let listed = std::fs::read_to_string(AVAILABLE_ULP);
        let shown = match &listed {
            Ok(text) => format!("tcp_available_ulp: {}", clip(text.trim())),
            Err(e) => format!("{AVAILABLE_ULP}: {e}"),
        };
        let unavailable = |reason| KernelTls { available: false, carries: Kinds::default(), reason };
        match kernel::loopback_pair().map(|(client, _server)| kernel::set_ulp(std::os::fd::AsRawFd::as_raw_fd(&client)))
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOENT) => {
                return unavailable(format!("the tls module is not loaded ({shown})"))
            }
            Ok(Err(e)) => return unavailable(format!("TCP_ULP tls was refused: {e} ({shown})")),
            Err(e) => return unavailable(format!("the probe's loopback connection failed: {e} ({shown})")),
        }
        let mut carries = Kinds::default();
        let mut refused = Vec::new();
        for kind in Kind::ALL {
            match kernel::accepts(kind) {
                Ok(()) => carries.insert(kind),
                Err(e) => refused.push(format!("{kind}: {e}")),
            }
        }
        if carries.is_empty() {
            return unavailable(format!(
                "the tls module refused every session's keys ({}) ({shown})",
                refused.join("; ")
            ));
        }
        let mut reason = format!("the tls module is loaded ({shown}) and carries {carries}");
        if !refused.is_empty() {
            reason += &format!("; refused {}", refused.join("; "));
        }
        KernelTls { available: true, carries, reason }
    }

    /// Logs once which path HTTPS bodies take, and why.
    pub fn log(&self, wanted: bool) {
        if self.available && wanted {
            tracing::info!(
                "kernel TLS available: {}; HTTPS records of those sessions are encrypted by the kernel after each \
                 handshake, and file bodies go out with sendfile",
                self.reason
            );
        } else if self.available {
            tracing::info!(
                "kernel TLS available but serverTlsConfig.kernelTls is off: HTTPS bodies are encrypted by rustls in user space"
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

/// The process's switch for the offload (see the module's note).
#[derive(Debug, Default)]
pub struct Offload {
    on: AtomicBool,
    carries: Kinds,
}

impl Offload {
    /// Off: every connection stays with rustls.
    pub fn off() -> Offload {
        Offload::default()
    }

    /// On for the sessions of the kinds the kernel `carries`.
    pub fn new(carries: Kinds) -> Offload {
        Offload { on: AtomicBool::new(!carries.is_empty()), carries }
    }

    /// Whether a connection whose handshake just ended should try the offload.
    pub fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// The kind of a negotiated session, when the kernel carries it.
    pub fn carries(&self, version: Option<ProtocolVersion>, suite: Option<SupportedCipherSuite>) -> Option<Kind> {
        Kind::of(version, suite).filter(|k| self.carries.contains(*k))
    }

    /// Turns the offload off for the rest of the process, logging why once.
    pub fn turn_off(&self, why: &io::Error) {
        if self.on.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                error = %why,
                "the kernel refused a TLS session's keys; kernel TLS is off until restart, rustls encrypts HTTPS in user space"
            );
        }
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
        assert_eq!(probe.available, !probe.carries.is_empty(), "{probe}");
        assert!(probe.reason.contains(&format!("tcp_available_ulp: {}", listed.trim())), "{probe}");
    }

    #[test]
    fn the_switch_offers_only_the_kinds_carried_and_turns_off_once() {
        use rustls::crypto::ring::cipher_suite as cs;
        let mut some = Kinds::default();
        some.insert(Kind::ALL[0]); // TLS 1.3 AES-128-GCM
        let offload = Offload::new(some);
        assert!(offload.on());
        let v13 = Some(ProtocolVersion::TLSv1_3);
        assert_eq!(offload.carries(v13, Some(cs::TLS13_AES_128_GCM_SHA256)), Some(Kind::ALL[0]));
        assert_eq!(offload.carries(v13, Some(cs::TLS13_AES_256_GCM_SHA384)), None, "not carried");
        offload.turn_off(&io::Error::other("refused"));
        assert!(!offload.on());
        assert!(!Offload::off().on() && !Offload::new(Kinds::default()).on());
    }

    #[test]
    fn the_shown_list_is_clipped_and_printable() {
        assert_eq!(clip("mptcp\u{1b}[31m tls"), "mptcp?[31m tls");
        assert_eq!(clip(&"a".repeat(500)).len(), SHOWN);
    }
}
