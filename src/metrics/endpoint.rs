//! The small HTTP server that answers `GET /metrics` on `--metrics PORT`,
//! on its own thread, away from the serving threads.

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;

use super::Metrics;
use crate::side_port;

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
    let Some(request) = side_port::read_request(stream)? else { return Ok(()) };
    let (status, body) = match (request.method.as_slice(), request.path.as_slice()) {
        (b"GET" | b"HEAD", b"/metrics") => ("200 OK", metrics.render()),
        _ => ("404 Not Found", "metrics are served at /metrics\n".to_string()),
    };
    side_port::answer(stream, &request, status, prometheus_text::CONTENT_TYPE, "", &body)
}
