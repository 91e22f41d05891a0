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
            if self.feed().await? {
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
    /// (the caller has read cold ranges in first, as for `sendfile`).
    pub async fn send_file(&mut self, fd: RawFd, mut offset: u64, len: u64) -> io::Result<u64> {
        let end = offset + len;
        let mut chunk = vec![0u8; (len as usize).min(CHUNK)];
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
                0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file ended before its recorded size")),
                n => {
                    self.write_all(&chunk[..n as usize]).await?;
                    offset += n as u64;
                }
            }
        }
        Ok(len)
    }

    /// The raw socket, the TLS session left behind.
    pub fn into_tcp(self) -> TcpStream {
        self.tcp
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

    /// Reads ciphertext from the socket; `false` at its end.
    async fn fill(&mut self) -> io::Result<bool> {
        let mut input = std::mem::take(&mut self.input);
        input.clear();
        self.fed = 0;
        input.reserve(READ_SIZE);
        let (res, input) = self.tcp.read(input).await;
        self.input = input;
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

/// Whether the first bytes from a client are a plain HTTP request line
/// rather than a TLS record (whose first byte is 0x16, a handshake).
fn looks_like_http(first: &[u8]) -> bool {
    // Every method is at least three capital letters; a TLS record starts with 0x14..=0x18.
    first.len() >= 3 && first[..3].iter().all(u8::is_ascii_uppercase)
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
    fn plain_http_is_told_from_a_client_hello() {
        assert!(looks_like_http(b"GET /v2/ HTTP/1.1\r\n"));
        assert!(looks_like_http(b"HEAD / HTTP/1.0"));
        assert!(!looks_like_http(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(!looks_like_http(b"GE"));
        assert!(looks_like_http(b"PUT /v2/a/blobs/uploads/ HTTP/1.1"));
    }
}
