//! Request framing at the socket, against the real binary over raw TCP: every
//! request-smuggling shape (Content-Length with Transfer-Encoding, repeated or
//! non-decimal Content-Length, a Transfer-Encoding other than `chunked`,
//! obsolete line folding, bare LF line ends) is answered with one 400 carrying
//! the OCI error JSON, the connection is closed, and the bytes after the head
//! are never answered as a second request; a client still sending after its
//! 400 receives the 400 rather than a reset; and a request head left half-sent
//! is closed by the server after `--header-timeout` (or `headerTimeout`), on
//! io_uring and on epoll, while other connections are served meanwhile.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Server;

/// One answer read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// Everything the server sent on one connection until it closed it.
struct Exchange {
    answers: Vec<Answer>,
    /// Bytes after the last whole answer (none when the server frames correctly).
    rest: Vec<u8>,
    /// Whether the server closed the connection (read returned 0) rather than going quiet.
    closed: bool,
}

/// Sends `raw` on a fresh connection and reads until the server closes it or
/// stays silent for 5 s (at most 20 s in all).
fn exchange(server: &Server, raw: &[u8]) -> Exchange {
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.write_all(raw).unwrap();
    let (got, closed) = read_until_closed(&mut stream, Duration::from_secs(5), Duration::from_secs(20));
    let (answers, rest) = split_answers(&got);
    Exchange { answers, rest, closed }
}

/// Reads until EOF, an error, `quiet` without a byte, or `limit` in all;
/// returns what came and whether the peer closed (EOF or reset).
fn read_until_closed(stream: &mut TcpStream, quiet: Duration, limit: Duration) -> (Vec<u8>, bool) {
    stream.set_read_timeout(Some(quiet)).unwrap();
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while Instant::now() < deadline && got.len() < 1024 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return (got, false),
            Err(e) => panic!("read failed after {} bytes ({e}): {}", got.len(), String::from_utf8_lossy(&got)),
        }
    }
    (got, false)
}

/// Splits a byte stream into `Content-Length`-framed answers.
fn split_answers(mut raw: &[u8]) -> (Vec<Answer>, Vec<u8>) {
    let mut answers = Vec::new();
    while let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let status = head.strip_prefix("HTTP/1.1 ").and_then(|s| s.get(..3)).and_then(|s| s.parse().ok());
        let length = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
        });
        let (Some(status), Some(length)) = (status, length) else { break };
        let body_end = (end + 4 + length).min(raw.len());
        answers.push(Answer { status, body: raw[end + 4..body_end].to_vec() });
        raw = &raw[body_end..];
    }
    (answers, raw.to_vec())
}

/// Asserts that `raw` got exactly one answer, a 400 with an OCI error body,
/// and that the server then closed the connection.
fn assert_refused(server: &Server, name: &str, raw: &[u8]) {
    let x = exchange(server, raw);
    let shown = format!("{name}: answers {:?}, rest {:?}", x.answers, String::from_utf8_lossy(&x.rest));
    assert_eq!(x.answers.len(), 1, "{shown}");
    assert!(x.rest.is_empty(), "{shown}");
    let answer = &x.answers[0];
    assert_eq!(answer.status, 400, "{shown}");
    let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_else(|e| panic!("{shown}: {e}"));
    let error = &body["errors"][0];
    assert!(error["code"].is_string() && error["message"].is_string(), "{shown}");
    assert!(x.closed, "{name}: the connection stayed open after the 400");
}

/// A complete request, to follow each bad head: answering it would mean the
/// bytes after a head were taken as a second request.
const NEXT: &str = "GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn smuggling_shapes_get_one_400_and_a_close() {
    let server = Server::start("", &[]);
    // A well-framed pipeline is served whole: the shapes below fail for their framing alone.
    let x = exchange(&server, format!("{NEXT}GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
    assert_eq!(x.answers.iter().map(|a| a.status).collect::<Vec<_>>(), vec![200, 200]);
    assert!(x.closed);

    let head = "GET /v2/ HTTP/1.1\r\nHost: x\r\n";
    let shapes: Vec<(&str, String)> = vec![
        ("CL then TE", format!("{head}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{NEXT}")),
        ("TE then CL", format!("{head}Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n{NEXT}")),
        ("two equal CL", format!("{head}Content-Length: 0\r\nContent-Length: 0\r\n\r\n{NEXT}")),
        ("two different CL", format!("{head}Content-Length: 0\r\nContent-Length: 31\r\n\r\n{NEXT}")),
        ("CL list", format!("{head}Content-Length: 0, 0\r\n\r\n{NEXT}")),
        ("CL with sign", format!("{head}Content-Length: +0\r\n\r\n{NEXT}")),
        ("CL in hex", format!("{head}Content-Length: 0x0\r\n\r\n{NEXT}")),
        ("CL negative", format!("{head}Content-Length: -1\r\n\r\n{NEXT}")),
        ("CL empty", format!("{head}Content-Length:\r\n\r\n{NEXT}")),
        ("TE gzip, chunked", format!("{head}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{NEXT}")),
        ("TE chunked, identity", format!("{head}Transfer-Encoding: chunked, identity\r\n\r\n{NEXT}")),
        ("TE identity", format!("{head}Transfer-Encoding: identity\r\n\r\n{NEXT}")),
        ("TE twice", format!("{head}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{NEXT}")),
        ("TE xchunked", format!("{head}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{NEXT}")),
        ("obs-fold", format!("{head}X-Folded: a\r\n b\r\n\r\n{NEXT}")),
        ("obs-fold in TE", format!("{head}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{NEXT}")),
        ("obs-fold with tab", format!("{head}X-Folded: a\r\n\tb\r\n\r\n{NEXT}")),
        ("bare LF everywhere", format!("GET /v2/ HTTP/1.1\nHost: x\n\n{NEXT}")),
        ("bare LF in one header", format!("{head}X-A: a\nX-B: b\r\n\r\n{NEXT}")),
        ("bare LF ending the head", format!("{head}\n{NEXT}")),
    ];
    for (name, raw) in &shapes {
        assert_refused(&server, name, raw.as_bytes());
    }
    // The server is still serving.
    assert_eq!(server.get("/v2/", &[]).status, 200);
}

#[test]
fn a_client_still_sending_after_its_400_receives_the_400() {
    let server = Server::start("", &[]);
    let heads = [
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\nContent-Length: 9\r\n\r\n",
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nNot A Header\r\n\r\n",
    ];
    for head in heads {
        let mut stream = TcpStream::connect(&server.addr).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        // Keep sending (a body the server never reads) while its 400 is on its way:
        // at most 256 KiB over at most 1 s, well within what the server discards before closing.
        let chunk = [b'x'; 8 * 1024];
        let deadline = Instant::now() + Duration::from_secs(1);
        for _ in 0..32 {
            if Instant::now() > deadline {
                break;
            }
            // A reset would fail these writes (and clients that stop at a failed write never read the 400).
            if let Err(e) = stream.write_all(&chunk) {
                panic!("{head:?}: sending after the 400 failed: {e}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (got, closed) = read_until_closed(&mut stream, Duration::from_secs(5), Duration::from_secs(20));
        let (answers, _) = split_answers(&got);
        assert_eq!(answers.len(), 1, "{head:?}: {}", String::from_utf8_lossy(&got));
        assert_eq!(answers[0].status, 400, "{head:?}");
        assert!(closed, "{head:?}: the connection stayed open after the 400");
    }
}

/// How long after sending half a head the server closed that connection,
/// checked against a complete request served on another connection meanwhile.
fn half_head_closed_after(server: &Server) -> Duration {
    let mut stalled = TcpStream::connect(&server.addr).unwrap();
    stalled.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").unwrap();
    let sent = Instant::now();
    assert_eq!(server.get("/v2/", &[]).status, 200, "a complete request waited behind a stalled head");
    stalled.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 1024];
    for _ in 0..100 {
        match stalled.read(&mut buf) {
            Ok(0) => return sent.elapsed(),
            Ok(n) => panic!("a half-sent head was answered: {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return sent.elapsed(),
        }
        if sent.elapsed() > Duration::from_secs(15) {
            break;
        }
    }
    panic!("a half-sent head was still open {:?} after it was sent:\n{}", sent.elapsed(), server.log());
}

#[test]
fn a_stalled_head_is_closed_after_the_header_timeout_on_both_drivers() {
    // The flag with io_uring, the config key with epoll.
    for (config, args) in [
        ("", &["--io-driver", "uring", "--header-timeout", "2"][..]),
        ("headerTimeout: 2\n", &["--io-driver", "epoll"][..]),
    ] {
        let server = Server::start(config, args);
        let took = half_head_closed_after(&server);
        assert!(took >= Duration::from_secs(1), "{args:?}: closed after {took:?}, before the 2 s header timeout");
    }
}
