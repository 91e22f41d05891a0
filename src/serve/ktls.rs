//! An HTTPS connection whose records the kernel encrypts and decrypts (kernel
//! TLS), after rustls ran its handshake and gave the session's keys up (see
//! `tls::TlsConn::into_kernel`). The socket reads and writes plaintext, so a
//! connection like this sends file bodies as a plain one does: `sendfile`, or
//! `send` from the worker's mapping, with no byte passing through user space.
//!
//! What rustls decrypted before the hand-over (the client's first request,
//! when it came with the end of the handshake) is read first. A record that is
//! not application data (a `close_notify` alert, a TLS 1.3 key update the
//! kernel cannot follow) makes the socket's read fail with `EIO`: that ends
//! the connection as the client closing it would.
//!
//! AES-GCM keys must not encrypt more than about 2^24.5 records. The kernel
//! (before 6.13) cannot update keys, so a connection that has sent more than
//! [`RECORD_LIMIT`] records (counted high: every write starts a record) is
//! closed after the answer that crossed it.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::io::RawFd;
use std::rc::Rc;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;

use super::http::write_all_within;
use super::mapped::{self, MappedFile};
use super::sendfile;

/// Records a connection may send before it is closed after its answer: well
/// below AES-GCM's confidentiality limit (2^24.5 records).
pub const RECORD_LIMIT: u64 = 1 << 23;
// A whole answer may pass the limit before the connection closes: room for one of 128 GiB (2^23 records).
const _: () = assert!(RECORD_LIMIT + (1 << 23) < 23_726_566, "AES-GCM's limit is 2^24.5 (23,726,566) records");
/// The most plaintext one TLS record carries.
const RECORD: u64 = 16 * 1024;

/// The records one write of `bytes` may make, counted high: full records,
/// and a short one at its end.
fn records_in(bytes: u64) -> u64 {
    bytes.div_ceil(RECORD) + 1
}

pub struct KernelTlsConn {
    tcp: TcpStream,
    /// Plaintext rustls decrypted before the hand-over; `early[taken..]` is unread.
    early: Vec<u8>,
    taken: usize,
    /// Records sent, counted high.
    records: u64,
}

impl KernelTlsConn {
    pub fn new(tcp: TcpStream, early: Vec<u8>) -> KernelTlsConn {
        KernelTlsConn { tcp, early, taken: 0, records: 0 }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn into_tcp(self) -> TcpStream {
        self.tcp
    }

    /// Whether this connection's keys have encrypted enough: close it after this answer.
    pub fn worn_out(&self) -> bool {
        self.records >= RECORD_LIMIT
    }

    fn count(&mut self, bytes: u64) {
        self.records = self.records.saturating_add(records_in(bytes));
    }

    /// Reads plaintext into `buf`; `Ok(0)` when the client closed (`close_notify`,
    /// or a record the kernel does not pass on).
    pub async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        if self.taken < self.early.len() {
            let n = (self.early.len() - self.taken).min(buf.bytes_total());
            // SAFETY: `write_ptr` is valid for `bytes_total` bytes, and n is no more than that.
            unsafe {
                std::ptr::copy_nonoverlapping(self.early[self.taken..].as_ptr(), buf.write_ptr(), n);
                buf.set_init(n);
            }
            self.taken += n;
            if self.taken == self.early.len() {
                self.early = Vec::new();
                self.taken = 0;
            }
            return (Ok(n), buf);
        }
        match self.tcp.read(buf).await {
            (Err(e), buf) if e.raw_os_error() == Some(libc::EIO) => (Ok(0), buf),
            other => other,
        }
    }

    /// Writes all of `buf`, failing when the client stops reading for the write stall timeout.
    pub async fn write_all<B: IoBuf>(&mut self, buf: B) -> io::Result<()> {
        self.count(buf.bytes_init() as u64);
        write_all_within(&mut self.tcp, buf).await
    }

    /// Sends `len` bytes of the open file `fd` from `offset` with `sendfile`.
    pub async fn send_file(&mut self, fd: RawFd, offset: u64, len: u64) -> io::Result<u64> {
        self.count(len);
        sendfile::send_range(&self.tcp, fd, offset, len).await
    }

    /// Sends `len` bytes of a mapped file from `offset`.
    pub async fn send_mapped(&mut self, map: Rc<MappedFile>, offset: u64, len: u64) -> io::Result<u64> {
        self.count(len);
        mapped::send_range(&mut self.tcp, map, offset, len).await
    }

    /// Sends `close_notify` (best effort) and shuts the socket's write side.
    pub async fn shutdown(&mut self) {
        let _ = crate::tls::kernel::send_close_notify(self.tcp.as_raw_fd());
        let _ = self.tcp.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_counted_high_and_wear_the_connection_out() {
        let count = |writes: &[u64]| writes.iter().map(|&w| records_in(w)).sum::<u64>();
        assert_eq!(count(&[0]), 1, "an empty write still counts");
        assert_eq!(count(&[RECORD]), 2, "one full record, and the one a following write starts");
        assert_eq!(count(&[RECORD + 1, 10]), 5);
        // A 1 GiB blob sent as one sendfile range: 65,537 of the 8,388,608 records allowed.
        assert_eq!(count(&[1 << 30]), 65_537);
    }
}
