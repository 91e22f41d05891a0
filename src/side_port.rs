//! The one-request HTTP/1.1 exchange of the side ports (`--metrics PORT`,
//! `--health PORT`): a request head read within a bound, its method and path
//! (the query dropped), and a `Connection: close` answer. These ports run on
//! threads of their own, never on the serving threads.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The longest request head read; a longer one is closed unanswered.
const MAX_HEAD: usize = 16 * 1024;

/// A request's method and path (without its query).
pub struct Request {
    pub method: Vec<u8>,
    pub path: Vec<u8>,
}

impl Request {
    pub fn is_head(&self) -> bool {
        self.method == b"HEAD"
    }
}

/// The whole request head must arrive within this, however it trickles in.
const HEAD_DEADLINE: Duration = Duration::from_secs(5);

/// Reads one request head: `None` when the peer closed first, the head
/// passed [`MAX_HEAD`], or it was not all there within [`HEAD_DEADLINE`].
pub fn read_request(stream: &mut TcpStream) -> io::Result<Option<Request>> {
    let deadline = Instant::now() + HEAD_DEADLINE;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() > MAX_HEAD {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    Ok(Some(Request { method: method.to_vec(), path: path.to_vec() }))
}

/// Writes the answer and its headers (`extra_headers`: whole `Name: value\r\n`
/// lines); a `HEAD` gets the headers only.
pub fn answer(
    stream: &mut TcpStream,
    request: &Request,
    status: &str,
    content_type: &str,
    extra_headers: &str,
    body: &str,
) -> io::Result<()> {
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{extra_headers}Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    if !request.is_head() {
        response.push_str(body);
    }
    stream.write_all(response.as_bytes())
}
