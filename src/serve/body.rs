//! Sending a [`Response`]: the head, then the body from memory, from a
//! committed file, or from a download in flight. On plain connections file
//! bodies go out with `sendfile(2)` (see `sendfile`), large ones to a client
//! on the same host from a mapping of the file (see `mapped`); on HTTPS ones
//! they are encrypted from the same mapping or from file reads (see `conn`). An in-flight body is sent as its bytes are
//! published, and the last byte of the response is held back until the whole
//! blob has verified; if the download fails instead, the connection is reset
//! so no client ever holds a complete, wrong body.

use std::io;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use bytes::Bytes;

use super::conn::Conn;

use super::error::ApiError;
use super::http::{head, header_value_ok, write_all, Framing};
use super::mapped::{self, MappedFiles};
use super::response::{Body, CacheStatus, Response};
use super::warm::{self, Warmer};
use crate::fetch::{Reader, State};
use crate::metrics::{Block, Counter};
use crate::oci::OciCode;

/// The sending thread's counters, and its mappings when this connection's
/// large file bodies go out from a mapping.
pub struct SendVia<'a> {
    pub counters: &'a Block,
    pub mapped: Option<&'a MappedFiles>,
    /// Reads cold file chunks in off this thread before they are sent.
    pub warmer: Warmer<'a>,
}

/// Sends `resp`; returns the body bytes sent. An error means the connection
/// must be closed (and has been reset if a body was cut short).
pub async fn send(stream: &mut Conn, resp: Response, framing: Framing, via: &SendVia<'_>) -> io::Result<u64> {
    let (counter, sent) = send_body(stream, writable(resp), framing, via).await;
    if let (Some(c), Ok(n)) = (counter, &sent) {
        via.counters.add(c, *n);
    }
    sent
}

async fn send_body(
    stream: &mut Conn,
    resp: Response,
    framing: Framing,
    via: &SendVia<'_>,
) -> (Option<Counter>, io::Result<u64>) {
    let mut out = head_of(&resp, framing);
    if framing.head_only {
        return (None, write_all(stream, out).await.map(|_| 0));
    }
    match resp.body {
        Body::Empty | Body::Sized(_) => (None, write_all(stream, out).await.map(|_| 0)),
        Body::Bytes(b) => {
            out.extend_from_slice(&b);
            (Some(Counter::SentMemory), write_all(stream, out).await.map(|_| b.len() as u64))
        }
        Body::File { path, offset, len, size } => {
            let maps = via.mapped.filter(|_| len >= mapped::MAPPED_MIN);
            let counter = match (&*stream, maps) {
                (Conn::Tls(_), _) => Counter::SentTls,
                (Conn::KernelTls(_), _) => Counter::SentKernelTls,
                (_, Some(_)) => Counter::SentMapped,
                (_, None) => Counter::SentSendfile,
            };
            (Some(counter), send_file(stream, out, &path, size, maps, offset, len, &via.warmer).await)
        }
        Body::Download { reader, start, end } => {
            let sent = match write_all(stream, out).await {
                Ok(()) => send_download(stream, reader, start, end).await,
                Err(e) => Err(e),
            };
            (Some(Counter::SentStreamed), cut_on_error(stream, sent))
        }
    }
}

/// A committed file's range, chunk by chunk, each chunk read in off this
/// thread first when it is not in the page cache (unless this thread recently
/// found the whole file cached): with `sendfile`, or from the worker's mapping
/// of the file when `maps` is given.
#[allow(clippy::too_many_arguments)]
async fn send_file(
    stream: &mut Conn,
    head: Vec<u8>,
    path: &Path,
    size: u64,
    maps: Option<&MappedFiles>,
    offset: u64,
    len: u64,
    warmer: &Warmer<'_>,
) -> io::Result<u64> {
    let now = std::time::Instant::now();
    let trusted = warmer.recent.trusted(path, now);
    let mapped = match maps {
        Some(m) => Some(m.get(path, size, warmer).await?),
        None => None,
    };
    let opened;
    let file = match &mapped {
        Some(m) => &m.file,
        None => {
            opened = warmer.open(path, trusted).await?;
            &opened
        }
    };
    let step = if trusted { len.max(1) } else { warm::CHUNK };
    write_all(stream, head).await?;
    let sent = async {
        let (mut pos, end) = (offset, offset + len);
        while pos < end {
            let n = (end - pos).min(step);
            if !trusted {
                warmer.ensure(file, path, pos, n).await?;
                Warmer::hint(file.as_raw_fd(), pos + n, (end - pos - n).min(step));
            }
            match &mapped {
                Some(m) => stream.send_mapped(m.clone(), pos, n).await?,
                None => stream.send_file(file.as_raw_fd(), pos, n).await?,
            };
            pos += n;
        }
        if !trusted && offset == 0 && len == size {
            warmer.recent.remember(path, now);
        }
        Ok(len)
    }
    .await;
    cut_on_error(stream, sent)
}

/// `resp`, or a 500 in its place when one of its header values could not be
/// written safely (see [`header_value_ok`]). Values from upstreams are checked
/// where they enter; this is the last line, so a value that slipped through
/// can never add a header or end the head.
fn writable(resp: Response) -> Response {
    let Some((name, _)) = resp.headers.iter().find(|(_, v)| !header_value_ok(v)) else { return resp };
    tracing::error!(header = name, status = resp.status, "refused to write a header value with control characters");
    ApiError::new(500, OciCode::Unavailable, "internal error: the answer had an invalid header value").into()
}

/// The response head, with `X-Cache` when the answer has a cache status.
fn head_of(resp: &Response, framing: Framing) -> Vec<u8> {
    let cache = (resp.cache != CacheStatus::None).then(|| ("X-Cache", resp.cache.as_str()));
    let headers = resp.headers.iter().map(|(n, v)| (*n, v.as_str())).chain(cache);
    head(resp.status, headers, resp.body.length(), framing)
}

/// The whole answer (head, then body) in one buffer, and the head's length,
/// when its body is in memory; built as for a GET whatever the method, so a
/// kept answer serves both GET and HEAD.
pub fn in_memory(resp: &Response, framing: Framing) -> Option<(Bytes, usize)> {
    let Body::Bytes(body) = &resp.body else { return None };
    if !resp.headers.iter().all(|(_, v)| header_value_ok(v)) {
        return None;
    }
    let mut out = head_of(resp, Framing { head_only: false, ..framing });
    let head_len = out.len();
    out.extend_from_slice(body);
    Some((Bytes::from(out), head_len))
}

/// Sends an answer built by [`in_memory`]: all of it, or its head for a HEAD.
pub async fn send_kept(
    stream: &mut Conn,
    response: Bytes,
    head_len: usize,
    framing: Framing,
    via: &SendVia<'_>,
) -> io::Result<u64> {
    if framing.head_only {
        return write_all(stream, response.slice(..head_len)).await.map(|_| 0);
    }
    let body = (response.len() - head_len) as u64;
    write_all(stream, response).await?;
    via.counters.add(Counter::SentMemory, body);
    Ok(body)
}

fn cut_on_error(stream: &Conn, r: io::Result<u64>) -> io::Result<u64> {
    if r.is_err() {
        reset_on_close(stream);
    }
    r
}

/// Makes the coming close send RST instead of FIN: the client sees an error,
/// never a body that merely ended early.
fn reset_on_close(stream: &Conn) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: valid fd and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            stream.tcp().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Streams `[start, end)` of a download as it is published. With `end` unknown
/// the body is chunked and runs to the blob's end.
async fn send_download(stream: &mut Conn, reader: Reader, start: u64, end: Option<u64>) -> io::Result<u64> {
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
            stream.send_file(file.as_raw_fd(), pos, n).await?;
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
