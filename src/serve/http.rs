//! HTTP/1.1 on a client connection (`conn::Conn`, plain or TLS), hand-written over `httparse`: only what a
//! pull-only registry needs (GET and HEAD without bodies, keep-alive,
//! pipelining, HTTP/1.0; a size-capped `Content-Length` body for the admin
//! API only), and the raw stream stays ours for zero-copy sends.
//! All I/O is in monoio's ownership-passing ("rent") style: a buffer goes into
//! each operation and comes back with its result.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;

use super::conn::Conn;
use super::x_registry::XRegistry;

/// The largest request head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// How long a write may make no progress (a client that stopped reading), in
/// seconds: `writeTimeout`, set once at startup (see [`set_write_stall_timeout`]).
static WRITE_STALL_SECS: AtomicU64 = AtomicU64::new(60);

/// Sets how long a write may make no progress before the connection is cut.
pub fn set_write_stall_timeout(timeout: Duration) {
    WRITE_STALL_SECS.store(timeout.as_secs().max(1), Ordering::Relaxed);
}

/// How long a write may make no progress before the connection is cut.
pub fn write_stall_timeout() -> Duration {
    Duration::from_secs(WRITE_STALL_SECS.load(Ordering::Relaxed))
}

/// Writes all of `buf` to a socket that takes plaintext (plain, or kernel
/// TLS), failing when the client takes nothing for the write stall timeout.
pub async fn write_all_within<B: monoio::buf::IoBuf>(
    stream: &mut monoio::net::TcpStream,
    buf: B,
) -> std::io::Result<()> {
    use monoio::io::AsyncWriteRentExt;
    match monoio::time::timeout(write_stall_timeout(), stream.write_all(buf)).await {
        Ok((res, _)) => res.map(|_| ()),
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "client stopped reading")),
    }
}
const MAX_HEADERS: usize = 96;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Other(String),
}

impl Method {
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Other(m) => m,
        }
    }
}

/// One parsed request head. A connection keeps one and parses every request
/// into it, reusing its strings' capacity: no allocation per request once the
/// connection has seen one of the same shape.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    /// Every `Accept` header line, in order.
    pub accept: Vec<String>,
    pub range: Option<String>,
    pub keep_alive: bool,
    /// An HTTP/1.0 request: no chunked responses, keep-alive only when asked.
    pub http10: bool,
    /// The request announced a body (Content-Length > 0 or Transfer-Encoding);
    /// the connection cannot be reused after it.
    pub has_body: bool,
    /// The `Content-Length`, when one was sent (saturating at `u64::MAX`).
    pub content_length: Option<u64>,
    /// `Authorization`, kept for admin requests (`/cmd/`) only.
    pub authorization: Option<String>,
    /// `X-Registry` (the Go ociregistry's way to name the upstream), parsed.
    pub x_registry: XRegistry,
    /// The client's `X-Request-Id`, when it passed `request_id::client_supplied`.
    pub request_id: Option<String>,
}

impl Default for Request {
    fn default() -> Request {
        Request {
            method: Method::Get,
            path: String::new(),
            query: None,
            accept: Vec::new(),
            range: None,
            keep_alive: true,
            http10: false,
            has_body: false,
            content_length: None,
            authorization: None,
            x_registry: XRegistry::Absent,
            request_id: None,
        }
    }
}

#[derive(Debug)]
pub enum ReadError {
    /// The peer closed, the read failed or timed out: close quietly.
    Closed,
    /// Unparseable or oversized head: answer 400/431 and close.
    Bad(u16, &'static str),
}

/// The read side of a connection: a buffer that may hold pipelined requests.
pub struct Reader {
    buf: Vec<u8>,
}

impl Default for Reader {
    fn default() -> Reader {
        Reader { buf: Vec::with_capacity(8 * 1024) }
    }
}

impl Reader {
    /// Reads the next request head into `req`: waits at most `idle` for its
    /// first byte, then at most `head_timeout()` (asked when that byte is
    /// there, so it can reflect the load of that moment) for the rest.
    /// Slow heads hold a connection for nothing (slowloris); the deadline is
    /// for the whole head, however slowly its bytes trickle in.
    pub async fn next(
        &mut self,
        stream: &mut Conn,
        idle: Duration,
        head_timeout: impl Fn() -> Duration,
        req: &mut Request,
    ) -> Result<(), ReadError> {
        let mut head_deadline = (!self.buf.is_empty()).then(|| Instant::now() + head_timeout());
        loop {
            if !self.buf.is_empty() {
                if let Some(used) = parse_into(&self.buf, req)? {
                    self.buf.drain(..used);
                    return Ok(());
                }
                if self.buf.len() >= MAX_HEAD {
                    return Err(ReadError::Bad(431, "request head too large"));
                }
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(8 * 1024);
            }
            let len = self.buf.len();
            let buf = std::mem::take(&mut self.buf);
            let wait = match head_deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => idle,
            };
            let read = monoio::time::timeout(wait, stream.read(buf.slice_mut(len..)));
            let (res, slice) = match read.await {
                Ok(r) => r,
                Err(_) => return Err(ReadError::Closed),
            };
            self.buf = slice.into_inner();
            match res {
                Ok(0) | Err(_) => return Err(ReadError::Closed),
                Ok(_) => {
                    head_deadline.get_or_insert_with(|| Instant::now() + head_timeout());
                }
            }
        }
    }
}

impl Reader {
    /// Reads the `len` bytes of body that follow the last head (bytes
    /// already buffered first), all within `timeout`. Only admin requests
    /// have bodies read; their size is capped before this is called.
    pub async fn read_body(&mut self, stream: &mut Conn, len: usize, timeout: Duration) -> Result<Vec<u8>, ReadError> {
        let deadline = Instant::now() + timeout;
        let take = len.min(self.buf.len());
        let mut body: Vec<u8> = self.buf.drain(..take).collect();
        body.reserve_exact(len - body.len());
        while body.len() < len {
            let have = body.len();
            let wait = deadline.saturating_duration_since(Instant::now());
            let (res, slice) = match monoio::time::timeout(wait, stream.read(body.slice_mut(have..len))).await {
                Ok(r) => r,
                Err(_) => return Err(ReadError::Closed),
            };
            body = slice.into_inner();
            match res {
                Ok(0) | Err(_) => return Err(ReadError::Closed),
                Ok(_) => {}
            }
        }
        Ok(body)
    }
}

/// Parses one complete request head at the start of `buf` into `req`;
/// returns the bytes it took, or `None` while the head is incomplete.
///
/// Heads whose framing two parsers could read differently are refused (see
/// [`BodyFraming`]): a proxy in front of us that read the framing
/// another way would take the bytes after the head for a body, or a body for
/// a next request. `httparse` already refuses obsolete line folding in
/// requests; bare LF line ends it accepts, so they are looked for here.
///
/// Crate-visible for the request head fuzz target (`crate::fuzzing`).
pub(crate) fn parse_into(buf: &[u8], req: &mut Request) -> Result<Option<usize>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let used = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ReadError::Bad(431, "too many headers")),
        Err(_) => return Err(ReadError::Bad(400, "malformed request")),
    };
    if has_bare_lf(&buf[..used]) {
        return Err(ReadError::Bad(400, "a line of the request head ends in LF without CR"));
    }
    req.method = match parsed.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_string()),
    };
    let target = parsed.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    set(&mut req.path, path);
    set_opt(&mut req.query, query);
    let admin = crate::admin::is_admin_path(path);
    let mut authorization = None;
    req.x_registry = XRegistry::Absent;
    req.http10 = parsed.version == Some(0);
    req.keep_alive = !req.http10;
    req.has_body = false;
    let mut accepts = 0;
    let mut ranged = false;
    let mut request_id = None;
    let mut framing = BodyFraming::default();
    for h in parsed.headers.iter() {
        let name = h.name;
        // Decoded only for the headers read below (most requests carry others too).
        let value = || String::from_utf8_lossy(h.value);
        if name.eq_ignore_ascii_case("accept") {
            let value = value();
            let value = value.trim();
            match req.accept.get_mut(accepts) {
                Some(slot) => set(slot, value),
                None => req.accept.push(value.to_string()),
            }
            accepts += 1;
        } else if name.eq_ignore_ascii_case("range") {
            set_opt(&mut req.range, Some(value().trim()));
            ranged = true;
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value();
            if value.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")) {
                req.keep_alive = false;
            } else if value.split(',').any(|t| t.trim().eq_ignore_ascii_case("keep-alive")) {
                req.keep_alive = true;
            }
        } else if admin && name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value().trim().to_string());
        } else if name.eq_ignore_ascii_case("x-registry") {
            req.x_registry.add_line(h.value);
        } else if name.eq_ignore_ascii_case("x-request-id") {
            request_id = super::request_id::client_supplied(h.value);
        } else if name.eq_ignore_ascii_case("content-length") {
            framing.content_length(h.value)?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            framing.transfer_encoding(h.value)?;
        }
    }
    req.has_body = framing.has_body()?;
    req.content_length = (framing.lengths == 1).then_some(framing.length);
    req.authorization = authorization;
    set_opt(&mut req.request_id, request_id);
    req.accept.truncate(accepts);
    if !ranged {
        req.range = None;
    }
    Ok(Some(used))
}

/// Whether a line of `head` ends in LF alone. `httparse` takes a bare LF for
/// a line end; a proxy that does not would see other headers, or another
/// end of the head, than we do.
fn has_bare_lf(head: &[u8]) -> bool {
    let mut from = 0;
    while let Some(at) = head[from..].iter().position(|&b| b == b'\n') {
        let at = from + at;
        if at == 0 || head[at - 1] != b'\r' {
            return true;
        }
        from = at + 1;
    }
    false
}

/// How a request head says its body is framed, gathered header by header.
/// Only unambiguous framing passes: one plain decimal `Content-Length`, or
/// one `Transfer-Encoding: chunked`, or neither. RFC 9112 section 6.3 has
/// the rest answered 400 with a close (or allows it, for a list of equal
/// lengths), and so does `connection`.
#[derive(Debug, Default)]
struct BodyFraming {
    /// `Content-Length` lines seen.
    lengths: u32,
    /// Whether a `Content-Length` announced a body (a value other than zero).
    length_nonzero: bool,
    /// The last `Content-Length`'s value, saturating.
    length: u64,
    /// `Transfer-Encoding` lines seen.
    codings: u32,
}

impl BodyFraming {
    fn content_length(&mut self, value: &[u8]) -> Result<(), ReadError> {
        // `httparse` has trimmed the whitespace around the value.
        if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
            return Err(ReadError::Bad(400, "Content-Length is not a decimal number"));
        }
        self.lengths += 1;
        self.length_nonzero |= value.iter().any(|&b| b != b'0');
        self.length = value.iter().fold(0u64, |n, &b| n.saturating_mul(10).saturating_add(u64::from(b - b'0')));
        Ok(())
    }

    fn transfer_encoding(&mut self, value: &[u8]) -> Result<(), ReadError> {
        // Coding names are case-insensitive (RFC 9112 section 7); lists are not accepted.
        if !value.eq_ignore_ascii_case(b"chunked") {
            return Err(ReadError::Bad(400, "Transfer-Encoding other than chunked"));
        }
        self.codings += 1;
        Ok(())
    }

    /// Whether the request has a body, once every header is seen.
    fn has_body(&self) -> Result<bool, ReadError> {
        match (self.lengths, self.codings) {
            (0, 0) => Ok(false),
            (1, 0) => Ok(self.length_nonzero),
            (0, 1) => Ok(true),
            (0, _) => Err(ReadError::Bad(400, "Transfer-Encoding given more than once")),
            (_, 0) => Err(ReadError::Bad(400, "Content-Length given more than once")),
            _ => Err(ReadError::Bad(400, "both Content-Length and Transfer-Encoding")),
        }
    }
}

/// Replaces the contents of `slot`, keeping its capacity.
fn set(slot: &mut String, value: &str) {
    slot.clear();
    slot.push_str(value);
}

fn set_opt(slot: &mut Option<String>, value: Option<&str>) {
    match (slot.as_mut(), value) {
        (Some(s), Some(v)) => set(s, v),
        (None, Some(v)) => *slot = Some(v.to_string()),
        (_, None) => *slot = None,
    }
}

/// How a response is framed on its connection.
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    pub head_only: bool,
    pub keep_alive: bool,
    pub http10: bool,
}

/// Whether `value` may be written as a header value: visible ASCII, spaces
/// and tabs only. A CR or LF would end the header (and could start another,
/// or end the head); other control bytes are refused as well.
pub fn header_value_ok(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// Builds a response head. `length` is `Some(n)` for `Content-Length: n`,
/// `None` for a chunked body. Callers check values with [`header_value_ok`]
/// first (see `body`): this writes them as given.
pub fn head<'a>(
    status: u16,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    length: Option<u64>,
    framing: Framing,
) -> Vec<u8> {
    let mut h = Vec::with_capacity(256);
    h.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
    h.extend_from_slice(b"Docker-Distribution-Api-Version: registry/2.0\r\n");
    for (name, value) in headers {
        h.extend_from_slice(name.as_bytes());
        h.extend_from_slice(b": ");
        h.extend_from_slice(value.as_bytes());
        h.extend_from_slice(b"\r\n");
    }
    match length {
        Some(n) => h.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes()),
        None => h.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    match (framing.keep_alive, framing.http10) {
        (false, _) => h.extend_from_slice(b"Connection: close\r\n"),
        (true, true) => h.extend_from_slice(b"Connection: keep-alive\r\n"),
        (true, false) => {}
    }
    h.extend_from_slice(b"\r\n");
    h
}

/// Writes all of `buf`, failing when the client stops reading for [`write_stall_timeout`].
pub async fn write_all<B: monoio::buf::IoBuf>(stream: &mut Conn, buf: B) -> io::Result<()> {
    stream.write_all(buf).await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, ReadError> {
        let mut req = Request::default();
        Ok(parse_into(buf, &mut req)?.map(|used| (req, used)))
    }

    #[test]
    fn a_reused_request_carries_nothing_over() {
        let mut req = Request::default();
        let first = b"GET /v2/a/manifests/v1?ns=docker.io HTTP/1.1\r\nAccept: a\r\nAccept: b\r\nRange: bytes=0-1\r\nConnection: close\r\n\r\n";
        parse_into(first, &mut req).unwrap().unwrap();
        assert_eq!((req.accept.len(), req.query.as_deref(), req.keep_alive), (2, Some("ns=docker.io"), false));
        parse_into(b"HEAD /v2/b/blobs/x HTTP/1.1\r\nAccept: c\r\n\r\n", &mut req).unwrap().unwrap();
        assert_eq!(req.method, Method::Head);
        assert_eq!(req.path, "/v2/b/blobs/x");
        assert_eq!((req.query.as_deref(), req.range.as_deref()), (None, None));
        assert_eq!(req.accept, vec!["c".to_string()]);
        assert!(req.keep_alive && !req.has_body);
    }

    #[test]
    fn x_registry_is_parsed_once_per_request_and_not_carried_over() {
        use super::super::x_registry::Invalid;
        let mut req = Request::default();
        let raw = b"GET /v2/a/manifests/v1 HTTP/1.1\r\nX-Registry:  quay.io \r\nx-registry: ghcr.io\r\n\r\n";
        parse_into(raw, &mut req).unwrap().unwrap();
        assert_eq!(req.x_registry, XRegistry::Invalid(Invalid::Repeated));
        let one = b"GET /v2/a/manifests/v1 HTTP/1.1\r\nX-Registry:  Quay.io \r\n\r\n";
        parse_into(one, &mut req).unwrap().unwrap();
        assert_eq!(req.x_registry.named().map(|n| n.as_str()), Some("quay.io"));
        let long = format!("GET /v2/a/manifests/v1 HTTP/1.1\r\nX-Registry: {}\r\n\r\n", "a".repeat(1000));
        parse_into(long.as_bytes(), &mut req).unwrap().unwrap();
        assert_eq!(req.x_registry, XRegistry::Invalid(Invalid::TooLong));
        parse_into(b"GET /v2/a/manifests/v1 HTTP/1.1\r\n\r\n", &mut req).unwrap().unwrap();
        assert_eq!(req.x_registry, XRegistry::Absent);
    }

    #[test]
    fn parses_pipelined_requests_with_repeated_accept() {
        let raw = b"GET /v2/a/manifests/v1?ns=docker.io HTTP/1.1\r\nAccept: a/b\r\naccept: c/d, e/f\r\nRange: bytes=0-1\r\n\r\nHEAD /v2/ HTTP/1.0\r\n\r\n";
        let (r, used) = parse(raw).unwrap().unwrap();
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path, "/v2/a/manifests/v1");
        assert_eq!(r.query.as_deref(), Some("ns=docker.io"));
        assert_eq!(r.accept, vec!["a/b", "c/d, e/f"]);
        assert_eq!(r.range.as_deref(), Some("bytes=0-1"));
        assert!(r.keep_alive && !r.has_body);
        let (r2, used2) = parse(&raw[used..]).unwrap().unwrap();
        assert_eq!(r2.method, Method::Head);
        assert!(!r2.keep_alive, "HTTP/1.0 closes by default");
        assert_eq!(used + used2, raw.len());
    }

    #[test]
    fn partial_bad_and_bodies() {
        assert!(parse(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        assert!(matches!(parse(b"GET /v2/ HTTP/9\r\n\r\n"), Err(ReadError::Bad(400, _))));
        let (r, _) = parse(b"PUT /v2/a/blobs/uploads/ HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.has_body && !r.keep_alive);
        assert_eq!(r.method, Method::Other("PUT".into()));
    }

    #[test]
    fn admin_requests_keep_their_length_and_authorization() {
        let raw = b"POST /cmd/verify HTTP/1.1\r\nAuthorization: Bearer  abc \r\nContent-Length: 0012\r\n\r\n";
        let (r, _) = parse(raw).unwrap().unwrap();
        assert_eq!((r.content_length, r.authorization.as_deref(), r.has_body), (Some(12), Some("Bearer  abc"), true));
        // Only admin requests keep it: a registry client's credentials are never held.
        let raw = b"GET /v2/a/manifests/v1 HTTP/1.1\r\nAuthorization: Bearer abc\r\n\r\n";
        let (r, _) = parse(raw).unwrap().unwrap();
        assert_eq!((r.content_length, r.authorization), (None, None));
        let (r, _) = parse(&with("Content-Length: 99999999999999999999999\r\n")).unwrap().unwrap();
        assert_eq!(r.content_length, Some(u64::MAX), "saturates, and the admin cap refuses it");
        let (r, _) = parse(&with("Transfer-Encoding: chunked\r\n")).unwrap().unwrap();
        assert_eq!((r.content_length, r.has_body), (None, true));
    }

    /// `GET /v2/` with `extra` header lines, ended.
    fn with(extra: &str) -> Vec<u8> {
        format!("GET /v2/ HTTP/1.1\r\nHost: x\r\n{extra}\r\n").into_bytes()
    }

    fn refused(raw: &[u8]) -> bool {
        matches!(parse(raw), Err(ReadError::Bad(400, _)))
    }

    #[test]
    fn ambiguous_body_framing_is_refused() {
        for extra in [
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
            "Content-Length: 0\r\nContent-Length: 0\r\n",
            "Content-Length: 1\r\ncontent-length: 2\r\n",
            "Content-Length: 0, 0\r\n",
            "Content-Length: +1\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 0x10\r\n",
            "Content-Length: 1 2\r\n",
            "Content-Length:\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked, gzip\r\n",
            "Transfer-Encoding: identity\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: \"chunked\"\r\n",
            "Transfer-Encoding:\r\n",
        ] {
            assert!(refused(&with(extra)), "{extra:?}");
        }
    }

    #[test]
    fn plain_body_framing_is_accepted() {
        for (extra, body) in [
            ("", false),
            ("Content-Length: 0\r\n", false),
            ("Content-Length: 000\r\n", false),
            ("Content-Length:  12 \r\n", true),
            ("Content-Length: 99999999999999999999999\r\n", true),
            ("Transfer-Encoding: chunked\r\n", true),
            ("transfer-encoding: Chunked\r\n", true),
        ] {
            let (r, _) = parse(&with(extra)).unwrap().unwrap();
            assert_eq!(r.has_body, body, "{extra:?}");
        }
    }

    #[test]
    fn obsolete_line_folding_is_refused() {
        // `httparse` refuses it in requests; this keeps it so.
        for extra in ["X-A: a\r\n b\r\n", "X-A: a\r\n\tb\r\n", "Transfer-Encoding:\r\n chunked\r\n"] {
            assert!(refused(&with(extra)), "{extra:?}");
        }
        assert!(refused(b"GET /v2/ HTTP/1.1\r\n Host: x\r\n\r\n"));
    }

    #[test]
    fn bare_lf_line_ends_are_refused() {
        for raw in [
            &b"GET /v2/ HTTP/1.1\nHost: x\n\n"[..],
            b"GET /v2/ HTTP/1.1\r\nHost: x\nX-A: a\r\n\r\n",
            b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\n",
            b"\nGET /v2/ HTTP/1.1\r\n\r\n",
        ] {
            assert!(refused(raw), "{:?}", String::from_utf8_lossy(raw));
        }
        // A bare CR is refused by `httparse` itself.
        assert!(refused(b"GET /v2/ HTTP/1.1\r\nX-A: a\rb\r\n\r\n"));
        // An empty CRLF line before a request (after a pipelined one) is allowed, and
        // a bare LF after the head belongs to the next request, not this one.
        let (_, used) = parse(b"\r\nGET /v2/ HTTP/1.1\r\n\r\n\nGET").unwrap().unwrap();
        assert_eq!(used, 23);
    }

    #[test]
    fn bare_lf_scan() {
        assert!(!has_bare_lf(b""));
        assert!(!has_bare_lf(b"a\r\nb\r\n\r\n"));
        assert!(has_bare_lf(b"\n"));
        assert!(has_bare_lf(b"a\r\nb\n"));
        assert!(has_bare_lf(b"a\r\n\r\n\n"));
        assert!(has_bare_lf(b"a\n\r\n"));
    }

    #[test]
    fn header_values_with_control_characters_are_not_writable() {
        assert!(header_value_ok("application/vnd.oci.image.manifest.v1+json"));
        assert!(header_value_ok("bytes 0-1/2\tx"));
        for bad in ["a\r\nX-Injected: yes", "a\nb", "a\rb", "a\0b", "a\u{7f}", "caf\u{e9}"] {
            assert!(!header_value_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn heads() {
        let close = Framing { head_only: false, keep_alive: false, http10: false };
        let h = String::from_utf8(head(206, [("Content-Range", "bytes 0-1/2")], Some(2), close)).unwrap();
        assert!(h.starts_with("HTTP/1.1 206 Partial Content\r\n"));
        assert!(h.contains("Docker-Distribution-Api-Version: registry/2.0\r\n"));
        assert!(h.contains("Content-Length: 2\r\nConnection: close\r\n\r\n"));
        let keep = Framing { head_only: false, keep_alive: true, http10: false };
        let h = String::from_utf8(head(200, [], None, keep)).unwrap();
        assert!(h.contains("Transfer-Encoding: chunked\r\n") && !h.contains("Connection"));
        let h = String::from_utf8(head(200, [], Some(0), Framing { http10: true, ..keep })).unwrap();
        assert!(h.contains("Connection: keep-alive\r\n"));
    }
}
