//! Connection limits with clear answers, against the real binary over raw TCP:
//! an oversized request head and too many header lines are answered 431; an
//! idle keep-alive connection is closed after `idleTimeout`; a client that
//! stops reading a body is cut off after `writeTimeout` without progress, and
//! the server goes on serving others.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::fake_upstream::FakeUpstream;
use common::{plain_registry, random_bytes, Server};

/// The status line's code of what the server sends on a fresh connection for `raw`.
fn status_of(server: &Server, raw: &[u8]) -> u16 {
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(raw);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn oversized_heads_and_too_many_headers_are_431() {
    let server = Server::start("", &[]);
    let long = format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n", "a".repeat(70 * 1024));
    assert_eq!(status_of(&server, long.as_bytes()), 431);
    let mut many = String::from("GET /v2/ HTTP/1.1\r\nHost: x\r\n");
    for i in 0..120 {
        many += &format!("X-H{i}: v\r\n");
    }
    many += "\r\n";
    assert_eq!(status_of(&server, many.as_bytes()), 431);
    assert_eq!(status_of(&server, b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 200);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let server = Server::start("idleTimeout: 2\n", &[]);
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let idle_since = Instant::now();
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break false,
            Err(_) => break true,
        }
    };
    let waited = idle_since.elapsed();
    assert!(closed, "the idle connection was not closed within 20 s");
    assert!(waited >= Duration::from_secs(1), "closed after {waited:?}, before the idle timeout");
}

#[test]
fn a_client_that_stops_reading_is_cut_off_after_write_timeout() {
    let up = FakeUpstream::start();
    let config = format!("{}writeTimeout: 2\nblobSend: sendfile\n", plain_registry(&up.host()));
    let server = Server::start(&config, &[]);
    let blob = random_bytes(9, 64 * 1024 * 1024);
    let digest = up.add_blob("big", blob.clone());
    let path = format!("/v2/{}/big/blobs/{digest}", up.host());
    assert!(server.get(&path, &[]).body == blob, "cached first");

    let mut stalled = TcpStream::connect(&server.addr).unwrap();
    shrink_receive_buffer(&stalled);
    write!(stalled, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // Not reading: the server's write stalls once the socket buffers are full.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(server.get("/v2/", &[]).status, 200, "others are served meanwhile");
    stalled.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1024 * 1024];
    let deadline = Instant::now() + Duration::from_secs(30);
    let ended = loop {
        if Instant::now() > deadline {
            break false;
        }
        match stalled.read(&mut buf) {
            Ok(0) | Err(_) => break true,
            Ok(n) => got += n,
        }
    };
    assert!(ended, "the stalled connection was never cut");
    assert!(got < blob.len(), "the body was cut short ({got} of {} bytes)", blob.len());
}

/// A small receive buffer, so the server's writes stall sooner.
fn shrink_receive_buffer(stream: &TcpStream) {
    use std::os::unix::io::AsRawFd;
    let size: libc::c_int = 64 * 1024;
    // SAFETY: setsockopt on a valid socket with a correctly sized value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
