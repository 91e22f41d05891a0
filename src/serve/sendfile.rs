//! Zero-copy file → socket with `sendfile(2)`, on either monoio driver. The
//! kernel moves page-cache pages to the socket; no blob byte passes through
//! user space. `sendfile` is called with the socket non-blocking (epoll-driver
//! sockets already are; io_uring-driver sockets are switched only for the
//! call), and a full socket buffer is waited out through the runtime
//! (`writable`), so a slow client never blocks the worker.

use std::io;
use std::os::unix::io::{AsRawFd, RawFd};

use monoio::net::TcpStream;

/// The most handed to one `sendfile` call.
const MAX_PER_CALL: usize = 4 * 1024 * 1024;

/// Sends `len` bytes of `file` from `offset`. An early end of file is an error.
/// Pages not in the page cache are read by `sendfile` on this thread: callers
/// read cold ranges in elsewhere first (see `warm`).
pub async fn send_range(stream: &TcpStream, file: RawFd, mut offset: u64, len: u64) -> io::Result<u64> {
    let socket = stream.as_raw_fd();
    let end = offset + len;
    while offset < end {
        let sent = with_nonblocking(socket, || {
            let mut total = 0u64;
            while offset < end {
                let mut off = offset as libc::off_t;
                let want = ((end - offset) as usize).min(MAX_PER_CALL);
                // SAFETY: valid fds; `off` is a valid pointer for the call's duration.
                let n = unsafe { libc::sendfile(socket, file, &mut off, want) };
                if n < 0 {
                    let err = io::Error::last_os_error();
                    return match err.kind() {
                        io::ErrorKind::WouldBlock => Ok(total),
                        io::ErrorKind::Interrupted => continue,
                        _ => Err(err),
                    };
                }
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file ended before its recorded size"));
                }
                offset += n as u64;
                total += n as u64;
            }
            Ok(total)
        })?;
        if offset < end && sent == 0 {
            monoio::time::timeout(super::http::write_stall_timeout(), stream.writable(false))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))??;
        }
    }
    Ok(len)
}

/// Runs `f` with `O_NONBLOCK` set on `fd`, restoring the previous flags after.
fn with_nonblocking<T>(fd: RawFd, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    // SAFETY: fcntl on a valid fd.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let was_blocking = flags & libc::O_NONBLOCK == 0;
    if was_blocking {
        // SAFETY: as above.
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    }
    let result = f();
    if was_blocking {
        // SAFETY: as above.
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
    }
    result
}
