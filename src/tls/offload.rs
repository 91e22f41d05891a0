//! Whether this kernel offers TLS offload (kTLS, the `tls` TCP upper-layer
//! protocol), probed once at startup when HTTPS is configured.
//!
//! The probe asks the kernel the way an offload would: it sets `TCP_ULP tls`
//! on a throwaway connected loopback socket (the option needs an established
//! connection; with CAP_NET_ADMIN the kernel loads the module on demand).
//! `/proc/sys/net/ipv4/tcp_available_ulp` is read for the account of why.
//!
//! When it answers yes (and `serverTlsConfig.kernelTls` is not `off`), each
//! HTTPS connection's records are handed to the kernel after rustls's
//! handshake: [`set_ulp`] on the socket, then the session's keys and sequence
//! numbers ([`install`], `TLS_TX` and `TLS_RX`). From then on the socket reads
//! and writes plaintext, and `sendfile` sends file bodies encrypted by the
//! kernel. The connection side of this is `crate::serve::tls`.
//!
//! [`Offload`] is the process's switch: on when the probe found the module,
//! turned off for good (with one WARN) if installing keys ever fails after a
//! connection gave its keys up, so one kernel quirk costs one connection.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion, SupportedCipherSuite};

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
    pub fn log(&self, wanted: bool) {
        if self.available && wanted {
            tracing::info!(
                "kernel TLS available: {}; HTTPS records are encrypted by the kernel after each handshake, \
                 and file bodies go out with sendfile",
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

/// A connected loopback pair (client, server): `TCP_ULP` needs an established socket.
fn loopback_pair() -> std::io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    Ok((client, server))
}

/// Sets `TCP_ULP tls` on `client` (which then belongs to the kernel's TLS layer; it is dropped unused).
fn set_tls_ulp(client: &TcpStream) -> std::io::Result<()> {
    set_ulp(client.as_raw_fd())
}

/// The process's switch for the offload (see the module's note).
#[derive(Debug, Default)]
pub struct Offload {
    on: AtomicBool,
}

impl Offload {
    /// On when the kernel offers the module and the configuration wants it.
    pub fn new(on: bool) -> Offload {
        Offload { on: AtomicBool::new(on) }
    }

    /// Whether a connection whose handshake just ended should try the offload.
    pub fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
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

// The kernel's interface (include/uapi/linux/tls.h): libc does not carry it.
const TLS_TX: libc::c_int = 1;
const TLS_RX: libc::c_int = 2;
/// The control message type that sets (on send) a record's content type.
const TLS_SET_RECORD_TYPE: libc::c_int = 1;
const TLS_1_2_VERSION: u16 = 0x0303;
const TLS_1_3_VERSION: u16 = 0x0304;
const TLS_CIPHER_AES_GCM_128: u16 = 51;
const TLS_CIPHER_AES_GCM_256: u16 = 52;
const TLS_CIPHER_CHACHA20_POLY1305: u16 = 54;
/// The TLS content type of an alert record, and a warning-level `close_notify`.
const ALERT: u8 = 21;
const CLOSE_NOTIFY: [u8; 2] = [1, 0];

/// `struct tls12_crypto_info_aes_gcm_{128,256}` (`K` = key length), used for TLS 1.2 and 1.3.
#[repr(C)]
struct AesGcm<const K: usize> {
    version: u16,
    cipher_type: u16,
    iv: [u8; 8],
    key: [u8; K],
    salt: [u8; 4],
    rec_seq: [u8; 8],
}

/// `struct tls12_crypto_info_chacha20_poly1305`.
#[repr(C)]
struct Chacha20Poly1305 {
    version: u16,
    cipher_type: u16,
    iv: [u8; 12],
    key: [u8; 32],
    rec_seq: [u8; 8],
}

/// Whether the kernel's TLS can carry a session of this version and suite:
/// AES-GCM (128 and 256) and ChaCha20-Poly1305, TLS 1.2 and 1.3.
pub fn supports(version: Option<ProtocolVersion>, suite: Option<SupportedCipherSuite>) -> bool {
    let version_ok = matches!(version, Some(ProtocolVersion::TLSv1_2 | ProtocolVersion::TLSv1_3));
    let suite_ok = suite.is_some_and(|s| {
        let name = s.suite().as_str().unwrap_or("");
        name.contains("AES_128_GCM") || name.contains("AES_256_GCM") || name.contains("CHACHA20_POLY1305")
    });
    version_ok && suite_ok
}

/// Puts `fd` (a connected TCP socket) under the kernel's TLS layer. Until keys
/// are installed the socket carries bytes as before, so a refusal here leaves
/// the connection as it was.
pub fn set_ulp(fd: RawFd) -> io::Result<()> {
    let name = b"tls";
    // SAFETY: a socket descriptor the caller owns, and a buffer of the given length.
    let rc = unsafe { libc::setsockopt(fd, libc::SOL_TCP, libc::TCP_ULP, name.as_ptr().cast(), name.len() as _) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Gives the kernel a session's transmit and receive keys and sequence numbers:
/// from then on `fd` reads and writes plaintext. `fd` must be under the TLS
/// layer ([`set_ulp`]) and every record rustls read or wrote must be behind it.
pub fn install(fd: RawFd, version: ProtocolVersion, secrets: ExtractedSecrets) -> io::Result<()> {
    let version = match version {
        ProtocolVersion::TLSv1_2 => TLS_1_2_VERSION,
        ProtocolVersion::TLSv1_3 => TLS_1_3_VERSION,
        other => return Err(io::Error::other(format!("no kernel TLS for {other:?}"))),
    };
    let (tx_seq, tx) = secrets.tx;
    let (rx_seq, rx) = secrets.rx;
    set_keys(fd, TLS_TX, version, tx_seq, &tx)?;
    set_keys(fd, TLS_RX, version, rx_seq, &rx)
}

/// One direction's `setsockopt(SOL_TLS, TLS_TX|TLS_RX)`.
fn set_keys(
    fd: RawFd,
    direction: libc::c_int,
    version: u16,
    seq: u64,
    secrets: &ConnectionTrafficSecrets,
) -> io::Result<()> {
    let rec_seq = seq.to_be_bytes();
    // The 12-byte nonce base splits into the kernel's 4-byte salt and 8-byte iv.
    fn split(iv: &[u8]) -> io::Result<([u8; 4], [u8; 8])> {
        let iv: &[u8; 12] = iv.try_into().map_err(|_| io::Error::other("an AES-GCM nonce base is not 12 bytes"))?;
        let (salt, rest) = iv.split_at(4);
        Ok((salt.try_into().expect("4 bytes"), rest.try_into().expect("8 bytes")))
    }
    fn key<const K: usize>(key: &[u8]) -> io::Result<[u8; K]> {
        key.try_into().map_err(|_| io::Error::other(format!("a key is {} bytes, not {K}", key.len())))
    }
    match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key: k, iv } => {
            let (salt, iv) = split(iv.as_ref())?;
            let info =
                AesGcm::<16> { version, cipher_type: TLS_CIPHER_AES_GCM_128, iv, key: key(k.as_ref())?, salt, rec_seq };
            setsockopt_tls(fd, direction, &info)
        }
        ConnectionTrafficSecrets::Aes256Gcm { key: k, iv } => {
            let (salt, iv) = split(iv.as_ref())?;
            let info =
                AesGcm::<32> { version, cipher_type: TLS_CIPHER_AES_GCM_256, iv, key: key(k.as_ref())?, salt, rec_seq };
            setsockopt_tls(fd, direction, &info)
        }
        ConnectionTrafficSecrets::Chacha20Poly1305 { key: k, iv } => {
            let iv: [u8; 12] =
                iv.as_ref().try_into().map_err(|_| io::Error::other("a ChaCha20 nonce is not 12 bytes"))?;
            let info = Chacha20Poly1305 {
                version,
                cipher_type: TLS_CIPHER_CHACHA20_POLY1305,
                iv,
                key: key(k.as_ref())?,
                rec_seq,
            };
            setsockopt_tls(fd, direction, &info)
        }
        _ => Err(io::Error::other("a cipher suite the kernel's TLS does not carry")),
    }
}

fn setsockopt_tls<T>(fd: RawFd, direction: libc::c_int, info: &T) -> io::Result<()> {
    // SAFETY: `info` is a #[repr(C)] struct of the layout the kernel expects, valid for its size.
    let rc = unsafe {
        libc::setsockopt(fd, libc::SOL_TLS, direction, (info as *const T).cast(), std::mem::size_of::<T>() as _)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends a `close_notify` alert on a socket whose records the kernel encrypts
/// (a control message sets the record's content type). Best effort: a full
/// socket buffer drops it, as a close would.
pub fn send_close_notify(fd: RawFd) -> io::Result<()> {
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(1) } as usize;
    let mut control = vec![0u8; space];
    let mut body = CLOSE_NOTIFY;
    let mut iov = libc::iovec { iov_base: body.as_mut_ptr().cast(), iov_len: body.len() };
    // SAFETY: msghdr is plain data; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` describes a control buffer of CMSG_SPACE(1) bytes, so the
    // first header fits, and CMSG_DATA points inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_TLS;
        (*cmsg).cmsg_type = TLS_SET_RECORD_TYPE;
        (*cmsg).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(cmsg) = ALERT;
    }
    // SAFETY: a socket the caller owns and the message built above.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
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
    fn the_kernels_structs_have_its_sizes() {
        // include/uapi/linux/tls.h: 4 + 8 + 16 + 4 + 8, 4 + 8 + 32 + 4 + 8, 4 + 12 + 32 + 8.
        assert_eq!(std::mem::size_of::<AesGcm<16>>(), 40);
        assert_eq!(std::mem::size_of::<AesGcm<32>>(), 56);
        assert_eq!(std::mem::size_of::<Chacha20Poly1305>(), 56);
    }

    #[test]
    fn supported_sessions_are_aead_on_tls_1_2_and_1_3() {
        use rustls::crypto::ring::cipher_suite as cs;
        let v13 = Some(ProtocolVersion::TLSv1_3);
        assert!(supports(v13, Some(cs::TLS13_AES_128_GCM_SHA256)));
        assert!(supports(v13, Some(cs::TLS13_AES_256_GCM_SHA384)));
        assert!(supports(v13, Some(cs::TLS13_CHACHA20_POLY1305_SHA256)));
        assert!(supports(Some(ProtocolVersion::TLSv1_2), Some(cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)));
        assert!(!supports(None, Some(cs::TLS13_AES_128_GCM_SHA256)), "no session yet");
        assert!(!supports(Some(ProtocolVersion::TLSv1_1), Some(cs::TLS13_AES_128_GCM_SHA256)));
        assert!(!supports(v13, None));
    }

    #[test]
    fn without_the_module_the_ulp_is_refused_and_the_socket_is_unchanged() {
        let listed = std::fs::read_to_string(AVAILABLE_ULP).unwrap_or_default();
        if listed.split_whitespace().any(|u| u == "tls") {
            return; // the kernel has it: the guest test (tests/kernel_tls.rs) covers that side
        }
        use std::io::{Read, Write};
        let (mut client, mut server) = loopback_pair().unwrap();
        assert!(set_ulp(server.as_raw_fd()).is_err());
        server.write_all(b"still plain").unwrap();
        let mut got = [0u8; 11];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"still plain");
    }

    #[test]
    fn the_shown_list_is_clipped_and_printable() {
        assert_eq!(clip("mptcp\u{1b}[31m tls"), "mptcp?[31m tls");
        assert_eq!(clip(&"a".repeat(500)).len(), SHOWN);
    }
}
