//! The small HTTP server that answers `GET /metrics` on `--metrics PORT`,
//! on its own thread, away from the serving threads.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;

use super::Metrics;

/// Serves `GET /metrics` on `listener` until the process ends, one connection
/// at a time, on the calling thread (scrapes are rare and small).
pub fn serve_exposition(listener: TcpListener, metrics: Arc<Metrics>) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        if let Err(e) = answer(&mut stream, &metrics) {
            tracing::debug!(error = %e, "metrics scrape failed");
        }
    }
}

fn answer(stream: &mut std::net::TcpStream, metrics: &Arc<Metrics>) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    let (status, body) = match (method, path) {
        (b"GET" | b"HEAD", b"/metrics") => ("200 OK", metrics.render()),
        _ => ("404 Not Found", "metrics are served at /metrics\n".to_string()),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        prometheus_text::CONTENT_TYPE,
        body.len()
    );
    if method != b"HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes())
}
