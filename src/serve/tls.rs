//! One HTTPS connection on a serving thread: rustls's `ServerConnection`
//! state machine driven by hand between monoio's owned-buffer reads and writes
//! of the raw socket (the choice over monoio-rustls is argued in README,
//! "TLS"). Plaintext goes in and out through [`TlsConn::read`] and
//! [`TlsConn::write_all`]; file bodies are read or taken from their mapping
//! in chunks of at most [`CHUNK`] bytes and encrypted on this thread.
//!
//! The handshake is bounded by the caller (the request head timeout), and a
//! client that speaks plain HTTP to the HTTPS port gets Go's answer, a 400
//! saying so, instead of a TLS alert it cannot read.
//!
//! During the handshake rustls is given whole records, one at a time, so that
//! when it ends rustls holds no part of a record: what the client sent after
//! it (its first request, often) is still ciphertext in `input`, starting at a
//! record boundary. That is what lets [`TlsConn::into_kernel`] hand the
//! session to the kernel's TLS (see `crate::tls::offload`) with every record
//! accounted for: records already here are decrypted by rustls and kept as
//! plaintext for the first read; the kernel takes every later one.

use std::io::{self, Read, Write};
use std::os::unix::io::RawFd;
use std::sync::Arc;
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::{ServerConfig, ServerConnection};

use super::http::write_stall_timeout;
use super::ktls::KernelTlsConn;
use crate::tls::kernel;
use crate::tls::offload::Offload;

/// The most plaintext encrypted and written in one go (a file body is sent
/// in chunks of this size).
pub const CHUNK: usize = 128 * 1024;
/// Ciphertext read from the socket at once: a whole TLS record and its header.
const READ_SIZE: usize = 16 * 1024 + 512;
/// An output buffer larger than this is not kept between writes: an idle
/// keep-alive connection holds no more than this for it.
const KEEP_OUTPUT: usize = 64 * 1024;
/// Go's answer to a plain HTTP request on an HTTPS port.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("handshake not done within {0:?}")]
    TimedOut(Duration),
    #[error("plain HTTP on the HTTPS port (answered 400)")]
    PlainHttp,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What became of a connection offered to the kernel's TLS.
pub enum Offloaded {
    /// The kernel encrypts and decrypts its records from now on.
    Kernel(KernelTlsConn),
    /// Kept with rustls in user space, and why.
    Declined(Box<TlsConn>, String),
    /// Lost: the session's keys were given up and the kernel did not take them.
    Lost(io::Error),
}

/// A TLS connection whose handshake is done.
pub struct TlsConn {
    tcp: TcpStream,
    tls: ServerConnection,
    /// Ciphertext read from the socket; `input[fed..]` is not yet given to rustls.
    input: Vec<u8>,
    fed: usize,
    /// Ciphertext on its way to the socket, kept for its capacity.
    output: Vec<u8>,
}

impl TlsConn {
    /// Runs the server side of a handshake on `tcp` with `config`, for at most `limit`.
    pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>, limit: Duration) -> Result<TlsConn, HandshakeError> {
        let mut tls = ServerConnection::new(config).map_err(io::Error::other)?;
        // Room for a whole chunk's records, so one chunk goes out in one write.
        tls.set_buffer_limit(Some(CHUNK + CHUNK / 4));
        let mut conn = TlsConn { tcp, tls, input: Vec::with_capacity(READ_SIZE), fed: 0, output: Vec::new() };
        match monoio::time::timeout(limit, conn.handshake()).await {
            Ok(Ok(())) => Ok(conn),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(HandshakeError::TimedOut(limit)),
        }
    }

    async fn handshake(&mut self) -> Result<(), HandshakeError> {
        let mut first = true;
        while self.tls.is_handshaking() {
            if self.tls.wants_write() {
                self.flush().await?;
                continue;
            }
            if self.feed_record().await? {
                continue;
            }
            if !self.fill().await? {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the handshake").into());
            }
            if std::mem::take(&mut first) && looks_like_http(&self.input) {
                let _ = monoio::time::timeout(write_stall_timeout(), self.tcp.write_all(PLAIN_HTTP_ANSWER)).await;
                let _ = self.tcp.shutdown().await;
                return Err(HandshakeError::PlainHttp);
            }
        }
        self.flush().await?;
        Ok(())
    }

    /// The raw socket (for its address and options).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Reads decrypted bytes into `buf`, as a socket read would: `Ok(0)` when
    /// the client closed (with or without `close_notify`).
    pub async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        let room = buf.bytes_total();
        if room == 0 {
            return (Ok(0), buf);
        }
        // SAFETY: `write_ptr` is valid for `bytes_total` bytes; zeroed once here,
        // they stay initialised across the loop's passes (rustls only writes).
        unsafe { buf.write_ptr().write_bytes(0, room) };
        loop {
            // SAFETY: the `room` bytes were zeroed above; `set_init` below covers
            // only what rustls wrote.
            let plaintext = unsafe { self.tls.reader().read(std::slice::from_raw_parts_mut(buf.write_ptr(), room)) };
            match plaintext {
                Ok(n) => {
                    // SAFETY: the first n bytes were written above.
                    unsafe { buf.set_init(n) };
                    return (Ok(n), buf);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return (Err(e), buf),
            }
            match self.feed().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => return (Err(e), buf),
            }
            match self.fill().await {
                Ok(true) => {}
                Ok(false) => return (Ok(0), buf),
                Err(e) => return (Err(e), buf),
            }
        }
    }

    /// Encrypts and sends all of `data`; a client that takes nothing for
    /// the write stall timeout is an error.
    pub async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.tls.writer().write(&data[..data.len().min(CHUNK)])?;
            if n == 0 && !self.tls.wants_write() {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "TLS connection takes no more data"));
            }
            data = &data[n..];
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends `len` bytes of the file `fd` from `offset`, read chunk by chunk
    /// into one of the thread's spare buffers (the caller has read cold ranges
    /// in first, as for `sendfile`).
    pub async fn send_file(&mut self, fd: RawFd, mut offset: u64, len: u64) -> io::Result<u64> {
        let end = offset + len;
        let mut chunk = spare::take((len as usize).min(CHUNK));
        let sent = async {
            while offset < end {
                let want = ((end - offset) as usize).min(chunk.len());
                // SAFETY: `chunk` is valid for `want` bytes; `fd` is open for reading.
                let n = unsafe { libc::pread(fd, chunk.as_mut_ptr().cast(), want, offset as libc::off_t) };
                match n {
                    n if n < 0 => {
                        let e = io::Error::last_os_error();
                        if e.kind() != io::ErrorKind::Interrupted {
                            return Err(e);
                        }
                    }
                    0 => {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file ended before its recorded size"))
                    }
                    n => {
                        self.write_all(&chunk[..n as usize]).await?;
                        offset += n as u64;
                    }
                }
            }
            Ok(len)
        }
        .await;
        spare::give_back(chunk);
        sent
    }

    /// The raw socket, the TLS session left behind.
    pub fn into_tcp(self) -> TcpStream {
        self.tcp
    }

    /// Hands the session to the kernel's TLS: `TCP_ULP tls` on the socket,
    /// then the records already read are decrypted here (kept for the first
    /// reads) and the session's keys and sequence numbers are installed. A
    /// session the kernel cannot carry, or a refused `TCP_ULP`, keeps rustls;
    /// a refusal after the keys were taken from rustls loses the connection
    /// and turns `offload` off.
    pub async fn into_kernel(mut self, offload: &Offload) -> Offloaded {
        use std::os::fd::AsRawFd;
        let version = self.tls.protocol_version();
        let Some(kind) = offload.carries(version, self.tls.negotiated_cipher_suite()) else {
            let suite = self.tls.negotiated_cipher_suite().map(|s| s.suite());
            return Offloaded::Declined(
                Box::new(self),
                format!("{version:?} {suite:?}: not a session this kernel carries"),
            );
        };
        if whole_records(&self.input[self.fed..]) != self.input.len() - self.fed {
            return Offloaded::Declined(Box::new(self), "part of a record was read with the handshake".into());
        }
        let fd = self.tcp.as_raw_fd();
        if let Err(e) = kernel::set_ulp(fd) {
            return Offloaded::Declined(Box::new(self), format!("TCP_ULP tls refused: {e}"));
        }
        // From here the socket is under the kernel's TLS layer (passing bytes
        // through until keys are installed): there is no way back to rustls.
        let mut early = Vec::new();
        loop {
            // Taken after each record: rustls holds at most 16 KiB of plaintext.
            if let Err(e) = self.tls.reader().read_to_end(&mut early) {
                // WouldBlock: all that was decrypted is taken; anything else ends it.
                if e.kind() != io::ErrorKind::WouldBlock {
                    return Offloaded::Lost(e);
                }
            }
            match self.feed_record().await {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return Offloaded::Lost(e),
            }
        }
        if let Err(e) = self.flush().await {
            return Offloaded::Lost(e);
        }
        let TlsConn { tcp, tls, .. } = self;
        let secrets = match tls.dangerous_extract_secrets() {
            Ok(s) => s,
            Err(e) => {
                let e = io::Error::other(e);
                offload.turn_off(&e);
                return Offloaded::Lost(e);
            }
        };
        match kernel::install(fd, kind.version, secrets) {
            Ok(()) => Offloaded::Kernel(KernelTlsConn::new(tcp, early)),
            Err(e) => {
                offload.turn_off(&e);
                Offloaded::Lost(e)
            }
        }
    }

    /// Sends `close_notify` and shuts the socket's write side.
    pub async fn shutdown(&mut self) {
        self.tls.send_close_notify();
        let _ = self.flush().await;
        let _ = self.tcp.shutdown().await;
    }

    /// Gives buffered ciphertext to rustls and processes it; `false` when
    /// none was buffered. On a TLS error the alert rustls queued is sent.
    async fn feed(&mut self) -> io::Result<bool> {
        if self.fed >= self.input.len() {
            return Ok(false);
        }
        let mut rest = &self.input[self.fed..];
        let took = self.tls.read_tls(&mut rest)?;
        self.fed += took;
        if let Err(e) = self.tls.process_new_packets() {
            let _ = self.flush().await;
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        if self.tls.wants_write() {
            self.flush().await?;
        }
        Ok(true)
    }

    /// Gives rustls the next whole record in `input` and processes it; `false`
    /// when `input` holds no whole record. On a TLS error the alert rustls
    /// queued is sent.
    async fn feed_record(&mut self) -> io::Result<bool> {
        let rest = &self.input[self.fed..];
        let whole = next_record_len(rest);
        if whole == 0 {
            return Ok(false);
        }
        let mut record = &rest[..whole];
        while !record.is_empty() {
            // rustls takes at most a few KiB per call; `record` advances by what it took.
            if self.tls.read_tls(&mut record)? == 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "rustls took no more of a record"));
            }
        }
        self.fed += whole;
        if let Err(e) = self.tls.process_new_packets() {
            let _ = self.flush().await;
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(true)
    }

    /// Reads more ciphertext from the socket after what is buffered and not
    /// yet given to rustls; `false` at its end.
    async fn fill(&mut self) -> io::Result<bool> {
        let mut input = std::mem::take(&mut self.input);
        input.drain(..self.fed);
        self.fed = 0;
        input.reserve(READ_SIZE);
        let kept = input.len();
        let (res, input) = self.tcp.read(input.slice_mut(kept..)).await;
        self.input = input.into_inner();
        Ok(res? > 0)
    }

    /// Writes every record rustls has queued.
    async fn flush(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            let mut out = std::mem::take(&mut self.output);
            out.clear();
            while self.tls.wants_write() {
                self.tls.write_tls(&mut out)?;
            }
            let (res, mut out) = monoio::time::timeout(write_stall_timeout(), self.tcp.write_all(out))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))?;
            res?;
            if out.capacity() <= KEEP_OUTPUT {
                out.clear();
                self.output = out;
            }
        }
        Ok(())
    }
}

/// The longest TLS record: 2^14 bytes of plaintext and 2048 of expansion, and its header.
const MAX_RECORD: usize = 5 + (1 << 14) + 2048;

/// The length of the TLS record at the start of `buf` (a 5-byte header:
/// type, version, length), or 0 when `buf` does not hold all of it yet. What
/// cannot be a record's header (a content type outside 20..=24, a version
/// not 3.x, a length past [`MAX_RECORD`]) is all handed on at once, so rustls
/// refuses it now instead of the connection waiting for bytes that mean nothing.
fn next_record_len(buf: &[u8]) -> usize {
    match buf {
        [kind, major, _, hi, lo, ..] => {
            let len = 5 + usize::from(u16::from_be_bytes([*hi, *lo]));
            if !(20..=24).contains(kind) || *major != 3 || len > MAX_RECORD {
                buf.len()
            } else if buf.len() >= len {
                len
            } else {
                0
            }
        }
        _ => 0,
    }
}

/// How many bytes at the start of `buf` are whole records.
fn whole_records(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match next_record_len(&buf[at..]) {
            0 => return at,
            n => at += n,
        }
    }
}

/// Whether the first bytes from a client are a plain HTTP request line
/// rather than a TLS record (whose first byte is 0x16, a handshake).
fn looks_like_http(first: &[u8]) -> bool {
    // Every method is at least three capital letters; a TLS record starts with 0x14..=0x18.
    first.len() >= 3 && first[..3].iter().all(u8::is_ascii_uppercase)
}

/// Chunk buffers for file bodies, kept per serving thread between sends: a
/// send takes one and gives it back, so a thread allocates as many as it has
/// sends in flight at once, not one per send, and keeps a few.
mod spare {
    use std::cell::RefCell;

    use super::CHUNK;

    /// Buffers kept per thread when no send uses them.
    const KEEP: usize = 4;

    thread_local! {
        static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    /// A buffer of `len` bytes (at most [`CHUNK`]).
    pub fn take(len: usize) -> Vec<u8> {
        let mut buf = SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_default();
        buf.resize(len.min(CHUNK), 0);
        buf
    }

    pub fn give_back(buf: Vec<u8>) {
        if buf.capacity() <= CHUNK {
            SPARE.with(|s| {
                let mut s = s.borrow_mut();
                if s.len() < KEEP {
                    s.push(buf);
                }
            });
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn buffers_are_reused_and_a_few_kept() {
            let a = take(CHUNK);
            let at = a.as_ptr();
            give_back(a);
            let b = take(10);
            assert_eq!((b.as_ptr(), b.len()), (at, 10), "the spare buffer is taken again, cut to length");
            give_back(b);
            let held: Vec<_> = (0..KEEP + 3).map(|_| take(CHUNK)).collect();
            held.into_iter().for_each(give_back);
            assert_eq!(SPARE.with(|s| s.borrow().len()), KEEP);
        }
    }
}

/// Sends `data` from an owned buffer (`IoBuf`) through `conn`.
pub async fn write_buf<B: IoBuf>(conn: &mut TlsConn, buf: B) -> io::Result<()> {
    // SAFETY: `buf` is owned here and outlives the slice; `read_ptr` is valid for `bytes_init` bytes.
    let data = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
    let r = conn.write_all(data).await;
    drop(buf);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_told_apart_by_their_headers() {
        let mut two = vec![0x17, 3, 3, 0, 2, b'a', b'b', 0x15, 3, 3, 0, 1, b'c'];
        assert_eq!(next_record_len(&two), 7);
        assert_eq!(whole_records(&two), 13);
        two.extend_from_slice(&[0x17, 3, 3, 0, 9, 1]);
        assert_eq!(whole_records(&two), 13, "a record not all here is not counted");
        assert_eq!(next_record_len(&[0x17, 3, 3]), 0, "nor is a header not all here");
        assert_eq!(whole_records(&[]), 0);
        assert_eq!(next_record_len(&[0x17, 3, 3, 0, 0]), 5, "an empty record is whole");
        let garbage = b"GET / HTTP/1.1\r\n";
        assert_eq!(next_record_len(garbage), garbage.len(), "not a record: all handed to rustls to refuse");
        assert_eq!(next_record_len(&[0x17, 3, 3, 0xff, 0xff, 0]), 6, "longer than any record");
        assert_eq!(next_record_len(&[0x16, 2, 0, 0, 5, 0]), 6, "not TLS 1.x");
    }

    #[test]
    fn plain_http_is_told_from_a_client_hello() {
        assert!(looks_like_http(b"GET /v2/ HTTP/1.1\r\n"));
        assert!(looks_like_http(b"HEAD / HTTP/1.0"));
        assert!(!looks_like_http(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(!looks_like_http(b"GE"));
        assert!(looks_like_http(b"PUT /v2/a/blobs/uploads/ HTTP/1.1"));
    }
}
