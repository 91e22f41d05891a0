//! The kernel's TLS interface (`include/uapi/linux/tls.h`, which libc does
//! not carry): putting a socket under the `tls` upper-layer protocol
//! ([`set_ulp`]), giving it a session's keys and sequence numbers in each
//! direction ([`install`]), and sending an alert record ([`send_close_notify`]).
//!
//! The kernel carries AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305 sessions
//! of TLS 1.2 and 1.3 ([`Kind`]), but an older kernel may refuse some of them
//! (TLS 1.3 receive came in 5.2, ChaCha20 in 5.11): [`accepts`] asks it with
//! throwaway keys on a throwaway loopback connection.
//!
//! TLS 1.2 AES-GCM nonces need care. Each record's nonce is the 4-byte salt
//! and an 8-byte explicit part sent with the record. rustls makes the
//! explicit part `E xor seq` (E from the key block); the kernel takes an
//! explicit part to start from and adds one per record. Starting the kernel
//! at `E` would repeat the nonce of rustls's first record (its Finished), and
//! a repeated AES-GCM nonce gives away the authentication key. So the kernel
//! starts at `E + seq` (see [`tls12_explicit_start`]): rustls used `E xor s`
//! for `s < seq`, which lies within `s` of `E`, so below `E + seq`.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion, SupportedCipherSuite};

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

/// `struct tls12_crypto_info_chacha20_poly1305` (its salt is empty).
#[repr(C)]
struct Chacha20Poly1305 {
    version: u16,
    cipher_type: u16,
    iv: [u8; 12],
    key: [u8; 32],
    rec_seq: [u8; 8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

/// A kind of session the kernel may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub version: Version,
    pub cipher: Cipher,
}

impl Kind {
    pub const ALL: [Kind; 6] = {
        use Cipher::*;
        use Version::*;
        [
            Kind { version: Tls13, cipher: Aes128Gcm },
            Kind { version: Tls13, cipher: Aes256Gcm },
            Kind { version: Tls13, cipher: Chacha20Poly1305 },
            Kind { version: Tls12, cipher: Aes128Gcm },
            Kind { version: Tls12, cipher: Aes256Gcm },
            Kind { version: Tls12, cipher: Chacha20Poly1305 },
        ]
    };

    /// The kind of a negotiated session; `None` for one the kernel never carries.
    pub fn of(version: Option<ProtocolVersion>, suite: Option<SupportedCipherSuite>) -> Option<Kind> {
        let version = match version? {
            ProtocolVersion::TLSv1_2 => Version::Tls12,
            ProtocolVersion::TLSv1_3 => Version::Tls13,
            _ => return None,
        };
        let name = suite?.suite().as_str()?;
        let cipher = if name.contains("AES_128_GCM") {
            Cipher::Aes128Gcm
        } else if name.contains("AES_256_GCM") {
            Cipher::Aes256Gcm
        } else if name.contains("CHACHA20_POLY1305") {
            Cipher::Chacha20Poly1305
        } else {
            return None;
        };
        Some(Kind { version, cipher })
    }

    fn bit(self) -> u8 {
        1 << Kind::ALL.iter().position(|k| *k == self).expect("every kind is listed")
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = match self.version {
            Version::Tls12 => "TLS 1.2",
            Version::Tls13 => "TLS 1.3",
        };
        let cipher = match self.cipher {
            Cipher::Aes128Gcm => "AES-128-GCM",
            Cipher::Aes256Gcm => "AES-256-GCM",
            Cipher::Chacha20Poly1305 => "ChaCha20-Poly1305",
        };
        write!(f, "{version} {cipher}")
    }
}

/// A set of kinds: the ones a kernel carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    pub const ALL: Kinds = Kinds(0b11_1111);

    pub fn contains(self, kind: Kind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub fn insert(&mut self, kind: Kind) {
        self.0 |= kind.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Kinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = Kind::ALL.iter().filter(|k| self.contains(**k)).map(Kind::to_string).collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(", "))
        }
    }
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

/// One direction's keys, whatever the suite.
struct Keys<'a> {
    cipher: Cipher,
    key: &'a [u8],
    /// The 12-byte nonce base (for TLS 1.2 AES-GCM: the salt, then `E`).
    iv: &'a [u8],
    /// The next record's sequence number.
    seq: u64,
}

impl<'a> Keys<'a> {
    fn from_rustls(seq: u64, secrets: &'a ConnectionTrafficSecrets) -> io::Result<Keys<'a>> {
        let (cipher, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Cipher::Aes128Gcm, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Cipher::Aes256Gcm, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (Cipher::Chacha20Poly1305, key, iv),
            _ => return Err(io::Error::other("a cipher suite the kernel's TLS does not carry")),
        };
        Ok(Keys { cipher, key: key.as_ref(), iv: iv.as_ref(), seq })
    }
}

/// Gives the kernel a session's transmit and receive keys and sequence
/// numbers: from then on `fd` reads and writes plaintext. `fd` must be under
/// the TLS layer ([`set_ulp`]), and every record rustls read or wrote must be
/// behind it.
pub fn install(fd: RawFd, version: Version, secrets: ExtractedSecrets) -> io::Result<()> {
    let (tx_seq, tx) = &secrets.tx;
    let (rx_seq, rx) = &secrets.rx;
    set_keys(fd, TLS_TX, version, Keys::from_rustls(*tx_seq, tx)?)?;
    set_keys(fd, TLS_RX, version, Keys::from_rustls(*rx_seq, rx)?)
}

/// One direction's `setsockopt(SOL_TLS, TLS_TX|TLS_RX)`.
fn set_keys(fd: RawFd, direction: libc::c_int, version: Version, keys: Keys<'_>) -> io::Result<()> {
    let rec_seq = keys.seq.to_be_bytes();
    let version_code = match version {
        Version::Tls12 => TLS_1_2_VERSION,
        Version::Tls13 => TLS_1_3_VERSION,
    };
    let nonce: &[u8; 12] = keys.iv.try_into().map_err(|_| io::Error::other("a nonce base is not 12 bytes"))?;
    // AES-GCM: the 12-byte nonce base splits into the kernel's 4-byte salt and 8-byte iv.
    let salt: [u8; 4] = nonce[..4].try_into().expect("4 bytes");
    let mut iv: [u8; 8] = nonce[4..].try_into().expect("8 bytes");
    if version == Version::Tls12 {
        iv = tls12_explicit_start(iv, keys.seq);
    }
    fn key<const K: usize>(key: &[u8]) -> io::Result<[u8; K]> {
        key.try_into().map_err(|_| io::Error::other(format!("a key is {} bytes, not {K}", key.len())))
    }
    match keys.cipher {
        Cipher::Aes128Gcm => {
            let key = key(keys.key)?;
            let info =
                AesGcm::<16> { version: version_code, cipher_type: TLS_CIPHER_AES_GCM_128, iv, key, salt, rec_seq };
            setsockopt_tls(fd, direction, &info)
        }
        Cipher::Aes256Gcm => {
            let key = key(keys.key)?;
            let info =
                AesGcm::<32> { version: version_code, cipher_type: TLS_CIPHER_AES_GCM_256, iv, key, salt, rec_seq };
            setsockopt_tls(fd, direction, &info)
        }
        Cipher::Chacha20Poly1305 => {
            // The kernel xors the sequence number into the whole 12-byte nonce, as rustls does.
            let key = key(keys.key)?;
            let cipher_type = TLS_CIPHER_CHACHA20_POLY1305;
            let info = Chacha20Poly1305 { version: version_code, cipher_type, iv: *nonce, key, rec_seq };
            setsockopt_tls(fd, direction, &info)
        }
    }
}

/// Where the kernel's TLS 1.2 AES-GCM explicit nonces start for a session
/// rustls has sent `seq` records on, its explicit parts being `e xor s`
/// (see the module's note): `e + seq`, never one rustls used.
fn tls12_explicit_start(e: [u8; 8], seq: u64) -> [u8; 8] {
    u64::from_be_bytes(e).wrapping_add(seq).to_be_bytes()
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

/// Whether this kernel takes keys of `kind` in both directions, asked on a
/// throwaway loopback connection with zero keys (nothing is ever sent on it).
pub fn accepts(kind: Kind) -> io::Result<()> {
    let (client, _server) = loopback_pair()?;
    let fd = client.as_raw_fd();
    set_ulp(fd)?;
    let zeros = [0u8; 32];
    let key = match kind.cipher {
        Cipher::Aes128Gcm => &zeros[..16],
        Cipher::Aes256Gcm | Cipher::Chacha20Poly1305 => &zeros[..],
    };
    let keys = || Keys { cipher: kind.cipher, key, iv: &zeros[..12], seq: 0 };
    set_keys(fd, TLS_TX, kind.version, keys())?;
    set_keys(fd, TLS_RX, kind.version, keys())
}

/// A connected loopback pair (client, server): `TCP_ULP` needs an established socket.
pub fn loopback_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    Ok((client, server))
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
    fn the_kernels_structs_have_its_sizes() {
        // include/uapi/linux/tls.h: 4 + 8 + 16 + 4 + 8, 4 + 8 + 32 + 4 + 8, 4 + 12 + 32 + 8.
        assert_eq!(std::mem::size_of::<AesGcm<16>>(), 40);
        assert_eq!(std::mem::size_of::<AesGcm<32>>(), 56);
        assert_eq!(std::mem::size_of::<Chacha20Poly1305>(), 56);
    }

    #[test]
    fn sessions_are_told_by_version_and_suite() {
        use rustls::crypto::ring::cipher_suite as cs;
        let v13 = Some(ProtocolVersion::TLSv1_3);
        let kind = |v, s| Kind::of(v, Some(s)).map(|k| k.to_string());
        assert_eq!(kind(v13, cs::TLS13_AES_128_GCM_SHA256).as_deref(), Some("TLS 1.3 AES-128-GCM"));
        assert_eq!(kind(v13, cs::TLS13_AES_256_GCM_SHA384).as_deref(), Some("TLS 1.3 AES-256-GCM"));
        assert_eq!(kind(v13, cs::TLS13_CHACHA20_POLY1305_SHA256).as_deref(), Some("TLS 1.3 ChaCha20-Poly1305"));
        let v12 = Some(ProtocolVersion::TLSv1_2);
        assert_eq!(kind(v12, cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256).as_deref(), Some("TLS 1.2 AES-128-GCM"));
        assert_eq!(Kind::of(None, Some(cs::TLS13_AES_128_GCM_SHA256)), None, "no session yet");
        assert_eq!(Kind::of(Some(ProtocolVersion::TLSv1_1), Some(cs::TLS13_AES_128_GCM_SHA256)), None);
        assert_eq!(Kind::of(v13, None), None);
    }

    #[test]
    fn kinds_are_a_set_of_six() {
        let mut some = Kinds::default();
        assert!(some.is_empty());
        some.insert(Kind::ALL[2]);
        some.insert(Kind::ALL[3]);
        assert!(some.contains(Kind::ALL[2]) && some.contains(Kind::ALL[3]) && !some.contains(Kind::ALL[0]));
        assert_eq!(some.to_string(), "TLS 1.3 ChaCha20-Poly1305, TLS 1.2 AES-128-GCM");
        assert!(Kind::ALL.iter().all(|k| Kinds::ALL.contains(*k)));
        assert_eq!(Kinds::default().to_string(), "none");
    }

    #[test]
    fn tls12_kernel_nonces_never_repeat_one_rustls_used() {
        // rustls sent records 0..seq with explicit parts e ^ s; the kernel sends
        // e + seq, e + seq + 1, ... Check every seq up to 64 for explicit parts
        // around carries and wrap-around.
        for e in [0u64, 1, 2, 3, 0xff, 0x100, 0x7fff_ffff_ffff_ffff, u64::MAX - 3, u64::MAX, 0x1234_5678_9abc_def0] {
            for seq in 1..64u64 {
                let used: Vec<u64> = (0..seq).map(|s| e ^ s).collect();
                let start = u64::from_be_bytes(tls12_explicit_start(e.to_be_bytes(), seq));
                for k in 0..1024u64 {
                    let kernel = start.wrapping_add(k);
                    assert!(!used.contains(&kernel), "e={e:#x} seq={seq}: kernel record {k} repeats {kernel:#x}");
                }
            }
        }
        // Starting at e itself (a plain split of the nonce base) would repeat record 0's nonce.
        assert_ne!(tls12_explicit_start([9; 8], 1), [9; 8]);
    }

    #[test]
    fn without_the_module_the_ulp_is_refused_and_the_socket_is_unchanged() {
        let listed = std::fs::read_to_string(super::super::offload::AVAILABLE_ULP).unwrap_or_default();
        if listed.split_whitespace().any(|u| u == "tls") {
            return; // the kernel has it: the guest test (tests/kernel_tls.rs) covers that side
        }
        use std::io::{Read, Write};
        let (mut client, mut server) = loopback_pair().unwrap();
        assert!(set_ulp(server.as_raw_fd()).is_err());
        assert!(Kind::ALL.iter().all(|k| accepts(*k).is_err()), "no kind is accepted without the module");
        server.write_all(b"still plain").unwrap();
        let mut got = [0u8; 11];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"still plain");
    }
}
