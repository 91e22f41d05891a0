//! Sending a [`Response`]: the head, then the body from memory, from a
//! committed file, or from a download in flight. File bodies go out with
//! `sendfile(2)` (see `sendfile`). An in-flight body is sent as its bytes are
//! published, and the last byte of the response is held back until the whole
//! blob has verified; if the download fails instead, the connection is reset
//! so no client ever holds a complete, wrong body.

use std::io;
use std::os::unix::io::AsRawFd;

use monoio::net::TcpStream;

use super::http::{head, write_all, Framing};
use super::response::{Body, CacheStatus, Response};
use super::sendfile;
use crate::fetch::{Reader, State};

/// Sends `resp`; returns the body bytes sent. An error means the connection
/// must be closed (and has been reset if a body was cut short).
pub async fn send(stream: &mut TcpStream, mut resp: Response, framing: Framing) -> io::Result<u64> {
    if resp.cache != CacheStatus::None {
        resp.headers.push(("X-Cache", resp.cache.as_str().to_string()));
    }
    let mut out = head(resp.status, &resp.headers, resp.body.length(), framing);
    if framing.head_only {
        write_all(stream, out).await?;
        return Ok(0);
    }
    match resp.body {
        Body::Empty | Body::Sized(_) => write_all(stream, out).await.map(|_| 0),
        Body::Bytes(b) => {
            out.extend_from_slice(&b);
            write_all(stream, out).await?;
            Ok(b.len() as u64)
        }
        Body::File { path, offset, len } => {
            let file = std::fs::File::open(&path)?;
            write_all(stream, out).await?;
            let sent = sendfile::send_range(stream, file.as_raw_fd(), offset, len).await;
            cut_on_error(stream, sent)
        }
        Body::Download { reader, start, end } => {
            write_all(stream, out).await?;
            let sent = send_download(stream, reader, start, end).await;
            cut_on_error(stream, sent)
        }
    }
}

fn cut_on_error(stream: &TcpStream, r: io::Result<u64>) -> io::Result<u64> {
    if r.is_err() {
        reset_on_close(stream);
    }
    r
}

/// Makes the coming close send RST instead of FIN: the client sees an error,
/// never a body that merely ended early.
fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: valid fd and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Streams `[start, end)` of a download as it is published. With `end` unknown
/// the body is chunked and runs to the blob's end.
async fn send_download(stream: &mut TcpStream, reader: Reader, start: u64, end: Option<u64>) -> io::Result<u64> {
    let chunked = end.is_none();
    let file = reader.download.open_reader()?;
    let mut rx = reader.progress;
    let mut pos = start;
    loop {
        let (published, verified, end_now) = {
            let p = rx.borrow_and_update();
            if let State::Failed(e) = &p.state {
                return Err(io::Error::other(format!("download failed: {e}")));
            }
            let verified = p.state == State::Verified;
            let end_now = end.or(if verified { Some(p.published) } else { None });
            (p.published, verified, end_now)
        };
        // The last byte of this response waits for verification.
        let limit = match (end_now, verified) {
            (Some(e), true) => e,
            (Some(e), false) => published.min(e.saturating_sub(1)),
            (None, _) => published.saturating_sub(1),
        };
        if pos < limit {
            let n = limit - pos;
            if chunked {
                write_all(stream, format!("{n:x}\r\n").into_bytes()).await?;
            }
            sendfile::send_range(stream, file.as_raw_fd(), pos, n).await?;
            if chunked {
                write_all(stream, &b"\r\n"[..]).await?;
            }
            pos += n;
            continue;
        }
        if verified && end_now.is_some_and(|e| pos >= e) {
            if chunked {
                write_all(stream, &b"0\r\n\r\n"[..]).await?;
            }
            return Ok(pos - start);
        }
        if rx.changed().await.is_err() {
            return Err(io::Error::other("download vanished"));
        }
    }
}
