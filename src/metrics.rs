//! Counters, and their Prometheus text exposition.
//!
//! Every serving thread owns one [`Block`] of counters and is the only thread
//! that writes it (relaxed atomic adds on its own cache lines: no lock and no
//! cache-line ping-pong between cores on the hit path); the fetcher has a block
//! of its own. A scrape sums the blocks. Names carry the `ociregistry_` prefix;
//! the four the Go ociregistry also exports (`manifest_pulls_total`,
//! `blob_pulls_total`, `v2_api_endpoint_hits_total`, `api_errors_total`) keep
//! its names and meaning.
//!
//! Per-upstream circuit breaker series ([`Circuits`]) are written by the
//! fetcher alone, so the serving threads' hit path never sees their lock.
//!
//! The exposition is served by [`serve_exposition`] on its own port
//! (`--metrics PORT`, as the Go ociregistry does), away from the serving
//! threads.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

/// One counter. The discriminant is its slot in a [`Block`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Requests to a `/v2/` API endpoint (any method, any outcome).
    ApiRequests,
    /// Answers with a 4xx or 5xx status.
    ApiErrors,
    ManifestHit,
    ManifestMiss,
    BlobHit,
    /// Blob answers fetched upstream (a HEAD) or streamed from a download in flight.
    BlobMiss,
    /// Answers sent from a serving thread's kept answers (see `serve::hot`).
    KeptAnswers,
    /// File chunks a blocking thread read into the page cache before a serving thread sent them.
    ColdReads,
    /// Body bytes sent, by how they were sent.
    SentMemory,
    SentSendfile,
    SentMapped,
    SentStreamed,
    /// Requests sent to upstream registries, by what they asked for.
    UpstreamManifest,
    /// Tag re-checks (`HEAD` of a manifest by tag).
    UpstreamManifestHead,
    UpstreamBlob,
    UpstreamBlobHead,
    UpstreamTags,
    UpstreamToken,
    /// Blob body bytes received from upstream registries.
    UpstreamBlobBytes,
    /// Blob downloads that ended verified and committed, or failed.
    DownloadsCommitted,
    DownloadsFailed,
    /// Connections answered 503 and closed at once because the cap was reached.
    ConnectionsRefused,
    /// File body bytes encrypted and sent on HTTPS connections.
    SentTls,
    /// HTTPS connections whose handshake failed or timed out.
    TlsHandshakeFailures,
}

const SLOTS: usize = Counter::TlsHandshakeFailures as usize + 1;

/// The counters one thread writes.
#[repr(align(128))]
pub struct Block {
    slots: [AtomicU64; SLOTS],
}

impl Block {
    #[inline]
    pub fn add(&self, counter: Counter, n: u64) {
        self.slots[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub fn inc(&self, counter: Counter) {
        self.add(counter, 1);
    }
}

/// An exposed metric: name, help, and its series as (labels, counter); series
/// without labels are summed into one value.
type Family = (&'static str, &'static str, &'static [(&'static str, Counter)]);

/// All blocks of one server.
#[derive(Default)]
pub struct Metrics {
    /// Locked only to add a block (thread start) and to scrape.
    blocks: Mutex<Vec<Arc<Block>>>,
    /// Per-upstream circuit breaker series.
    pub circuits: Arc<Circuits>,
}

/// A per-registry metric: name, type, help, and how to read its value.
type CircuitFamily = (&'static str, &'static str, &'static str, fn(&CircuitSeries) -> u64);

/// One upstream's circuit breaker, as its breaker publishes it.
#[derive(Default)]
pub struct CircuitSeries {
    /// 0 closed, 1 open, 2 half-open.
    pub state: AtomicU8,
    /// Times the breaker opened.
    pub opened: AtomicU64,
    /// Requests answered at once, without an upstream request, while it was open.
    pub fast_failures: AtomicU64,
    /// Cached tags served although their due re-check failed (see `fetch::freshness`).
    pub stale_serves: AtomicU64,
}

/// The circuit series by registry name. Locked only when an upstream's
/// client is built (on the fetcher) and to scrape.
#[derive(Default)]
pub struct Circuits {
    by_registry: Mutex<BTreeMap<String, Arc<CircuitSeries>>>,
}

impl Circuits {
    /// The series of `registry`, kept across rebuilds of its client. Once
    /// `max` are held, the series no breaker holds any more are dropped, so
    /// this map has the bound of the clients' map.
    pub fn series(&self, registry: &str, max: usize) -> Arc<CircuitSeries> {
        let mut map = self.by_registry.lock();
        if let Some(s) = map.get(registry) {
            return s.clone();
        }
        if map.len() >= max {
            map.retain(|_, s| Arc::strong_count(s) > 1);
        }
        map.entry(registry.to_string()).or_default().clone()
    }

    fn render(&self, out: &mut String) {
        let map = self.by_registry.lock();
        let families: [CircuitFamily; 4] = [
            (
                "upstream_circuit_state",
                "gauge",
                "Circuit breaker state per upstream: 0 closed, 1 open, 2 half-open.",
                |s| s.state.load(Ordering::Relaxed) as u64,
            ),
            ("upstream_circuit_opened_total", "counter", "Times an upstream's circuit breaker opened.", |s| {
                s.opened.load(Ordering::Relaxed)
            }),
            (
                "upstream_fast_failures_total",
                "counter",
                "Requests answered at once, without contacting the upstream, while its circuit was open.",
                |s| s.fast_failures.load(Ordering::Relaxed),
            ),
            (
                "stale_serves_total",
                "counter",
                "Cached tags served unconfirmed because their due re-check upstream failed.",
                |s| s.stale_serves.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in families {
            out.push_str(&format!("# HELP ociregistry_{name} {help}\n# TYPE ociregistry_{name} {kind}\n"));
            for (registry, s) in map.iter() {
                out.push_str(&format!("ociregistry_{name}{{registry=\"{}\"}} {}\n", escape_label(registry), value(s)));
            }
        }
    }
}

/// A Prometheus label value: `\`, `"` and newlines escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// A new block for the calling thread (or the fetcher) to write.
    pub fn block(&self) -> Arc<Block> {
        let block = Arc::new(Block { slots: std::array::from_fn(|_| AtomicU64::new(0)) });
        self.blocks.lock().push(block.clone());
        block
    }

    /// The sum of `counter` over every block.
    pub fn total(&self, counter: Counter) -> u64 {
        self.totals()[counter as usize]
    }

    /// Every counter summed over every block, under one lock.
    fn totals(&self) -> [u64; SLOTS] {
        let blocks = self.blocks.lock();
        std::array::from_fn(|i| blocks.iter().map(|b| b.slots[i].load(Ordering::Relaxed)).sum())
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        use Counter::*;
        let families: &[Family] = &[
            ("v2_api_endpoint_hits_total", "Requests to the /v2/ API.", &[("", ApiRequests)]),
            ("api_errors_total", "/v2/ API requests answered with a 4xx or 5xx status.", &[("", ApiErrors)]),
            (
                "manifest_pulls_total",
                "Manifest requests answered with a manifest.",
                &[("", ManifestHit), ("", ManifestMiss)],
            ),
            ("blob_pulls_total", "Blob requests answered with a blob.", &[("", BlobHit), ("", BlobMiss)]),
            (
                "responses_total",
                "Manifest and blob answers by kind and by whether the cache had them.",
                &[
                    ("kind=\"manifest\",cache=\"hit\"", ManifestHit),
                    ("kind=\"manifest\",cache=\"miss\"", ManifestMiss),
                    ("kind=\"blob\",cache=\"hit\"", BlobHit),
                    ("kind=\"blob\",cache=\"miss\"", BlobMiss),
                ],
            ),
            (
                "connections_refused_total",
                "Connections answered 503 and closed at once because maxConnections were open.",
                &[("", ConnectionsRefused)],
            ),
            (
                "tls_handshake_failures_total",
                "HTTPS connections closed because their TLS handshake failed or timed out.",
                &[("", TlsHandshakeFailures)],
            ),
            (
                "kept_answers_total",
                "Answers a serving thread sent from the answers it keeps for repeated requests.",
                &[("", KeptAnswers)],
            ),
            (
                "cold_reads_total",
                "File chunks (up to 8 MiB) read into the page cache by a blocking thread before a serving thread sent them.",
                &[("", ColdReads)],
            ),
            (
                "body_bytes_sent_total",
                "Response body bytes sent, by send path.",
                &[
                    ("path=\"memory\"", SentMemory),
                    ("path=\"sendfile\"", SentSendfile),
                    ("path=\"mapped\"", SentMapped),
                    ("path=\"download\"", SentStreamed),
                    ("path=\"tls\"", SentTls),
                ],
            ),
            (
                "upstream_requests_total",
                "HTTP requests sent to upstream registries, by what they asked for.",
                &[
                    ("kind=\"manifest\"", UpstreamManifest),
                    ("kind=\"manifest_head\"", UpstreamManifestHead),
                    ("kind=\"blob\"", UpstreamBlob),
                    ("kind=\"blob_head\"", UpstreamBlobHead),
                    ("kind=\"tags\"", UpstreamTags),
                    ("kind=\"token\"", UpstreamToken),
                ],
            ),
            (
                "upstream_blob_bytes_total",
                "Blob body bytes received from upstream registries.",
                &[("", UpstreamBlobBytes)],
            ),
            (
                "blob_downloads_total",
                "Upstream blob downloads by outcome.",
                &[("outcome=\"committed\"", DownloadsCommitted), ("outcome=\"failed\"", DownloadsFailed)],
            ),
        ];
        let totals = self.totals();
        let mut out = String::with_capacity(4096);
        for (name, help, series) in families {
            out.push_str(&format!("# HELP ociregistry_{name} {help}\n# TYPE ociregistry_{name} counter\n"));
            if series.iter().all(|(labels, _)| labels.is_empty()) {
                let sum: u64 = series.iter().map(|(_, c)| totals[*c as usize]).sum();
                out.push_str(&format!("ociregistry_{name} {sum}\n"));
            } else {
                for (labels, c) in series.iter() {
                    out.push_str(&format!("ociregistry_{name}{{{labels}}} {}\n", totals[*c as usize]));
                }
            }
        }
        self.circuits.render(&mut out);
        if let Some(live) = crate::heap::live_bytes() {
            out.push_str("# HELP ociregistry_heap_live_bytes Heap bytes allocated and not freed (test builds only).\n");
            out.push_str(&format!("# TYPE ociregistry_heap_live_bytes gauge\nociregistry_heap_live_bytes {live}\n"));
        }
        out
    }
}

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

fn answer(stream: &mut std::net::TcpStream, metrics: &Metrics) -> io::Result<()> {
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
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != b"HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_summed_and_rendered() {
        let m = Metrics::default();
        let (a, b) = (m.block(), m.block());
        a.add(Counter::SentMapped, 5);
        b.add(Counter::SentMapped, 7);
        a.inc(Counter::ManifestHit);
        b.inc(Counter::ManifestMiss);
        assert_eq!(m.total(Counter::SentMapped), 12);
        let text = m.render();
        assert!(text.contains("ociregistry_body_bytes_sent_total{path=\"mapped\"} 12\n"), "{text}");
        assert!(text.contains("ociregistry_manifest_pulls_total 2\n"), "{text}");
        assert!(text.contains("ociregistry_responses_total{kind=\"manifest\",cache=\"hit\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE ociregistry_blob_pulls_total counter\n"), "{text}");
    }

    #[test]
    fn circuits_are_rendered_per_registry_and_bounded() {
        let m = Metrics::default();
        let quay = m.circuits.series("quay.io", 2);
        quay.state.store(1, Ordering::Relaxed);
        quay.opened.fetch_add(3, Ordering::Relaxed);
        assert!(Arc::ptr_eq(&quay, &m.circuits.series("quay.io", 2)));
        drop(m.circuits.series("a\"b\\c", 2));
        let text = m.render();
        assert!(text.contains("ociregistry_upstream_circuit_state{registry=\"quay.io\"} 1\n"), "{text}");
        assert!(text.contains("ociregistry_upstream_circuit_opened_total{registry=\"quay.io\"} 3\n"), "{text}");
        assert!(text.contains("ociregistry_upstream_fast_failures_total{registry=\"a\\\"b\\\\c\"} 0\n"), "{text}");
        assert!(text.contains("# TYPE ociregistry_upstream_circuit_state gauge\n"), "{text}");
        // Full: the series nobody holds go, the held ones stay.
        let _ghcr = m.circuits.series("ghcr.io", 2);
        assert_eq!(m.circuits.by_registry.lock().keys().collect::<Vec<_>>(), ["ghcr.io", "quay.io"]);
    }
}
