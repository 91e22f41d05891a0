//! A client connection as the HTTP code sees it: plain TCP, TLS over TCP
//! encrypted by rustls on this thread, or TLS whose records the kernel
//! encrypts. Plain and kernel-TLS connections keep the zero-copy sends
//! (`sendfile`, or `send` from a file's mapping); rustls ones read file bodies
//! in bounded chunks and encrypt them here (see `tls`). Everything above this
//! module is the same for all three.

use std::io;
use std::os::unix::io::RawFd;
use std::rc::Rc;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;

use super::http::write_all_within;
use super::ktls::KernelTlsConn;
use super::mapped::{self, MappedFile};
use super::sendfile;
use super::tls::{self, TlsConn};

pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsConn>),
    KernelTls(KernelTlsConn),
}

impl Conn {
    /// The raw socket (its addresses and options).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => t.tcp(),
            Conn::KernelTls(k) => k.tcp(),
        }
    }

    /// Whether the connection must close after this answer (kernel TLS keys
    /// that have encrypted enough; see `ktls`).
    pub fn worn_out(&self) -> bool {
        matches!(self, Conn::KernelTls(k) if k.worn_out())
    }

    /// The raw socket, a TLS session left behind.
    pub fn into_tcp(self) -> TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => t.into_tcp(),
            Conn::KernelTls(k) => k.into_tcp(),
        }
    }

    /// Reads what the client sent (decrypted) into `buf`; `Ok(0)` at its end.
    pub async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(t) => t.read(buf).await,
            Conn::KernelTls(k) => k.read(buf).await,
        }
    }

    /// Writes all of `buf`, failing when the client stops reading for the write stall timeout.
    pub async fn write_all<B: IoBuf>(&mut self, buf: B) -> io::Result<()> {
        match self {
            Conn::Plain(s) => write_all_within(s, buf).await,
            Conn::Tls(t) => tls::write_buf(t, buf).await,
            Conn::KernelTls(k) => k.write_all(buf).await,
        }
    }

    /// Sends `len` bytes of the open file `fd` from `offset`: with `sendfile`
    /// on a plain or kernel-TLS connection.
    pub async fn send_file(&mut self, fd: RawFd, offset: u64, len: u64) -> io::Result<u64> {
        match self {
            Conn::Plain(s) => sendfile::send_range(s, fd, offset, len).await,
            Conn::Tls(t) => t.send_file(fd, offset, len).await,
            Conn::KernelTls(k) => k.send_file(fd, offset, len).await,
        }
    }

    /// Sends `len` bytes of a mapped file from `offset`.
    pub async fn send_mapped(&mut self, map: Rc<MappedFile>, offset: u64, len: u64) -> io::Result<u64> {
        match self {
            Conn::Plain(s) => mapped::send_range(s, map, offset, len).await,
            Conn::Tls(t) => {
                let end = offset
                    .checked_add(len)
                    .filter(|&e| e <= map.map.len() as u64)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "range outside the mapped file"))?;
                for chunk in map.map[offset as usize..end as usize].chunks(tls::CHUNK) {
                    t.write_all(chunk).await?;
                }
                Ok(len)
            }
            Conn::KernelTls(k) => k.send_mapped(map, offset, len).await,
        }
    }

    /// Ends the connection's write side (after `close_notify` on TLS).
    pub async fn shutdown(&mut self) {
        match self {
            Conn::Plain(s) => {
                let _ = s.shutdown().await;
            }
            Conn::Tls(t) => t.shutdown().await,
            Conn::KernelTls(k) => k.shutdown().await,
        }
    }
}
