//! Counters, and their Prometheus text exposition.
//!
//! Every serving thread owns one [`Block`] of counters and is the only thread
//! that writes it (relaxed atomic adds on its own cache lines: no lock and no
//! cache-line ping-pong between cores on the hit path); the fetcher has a block
//! of its own. A block also holds one cache line of counters per upstream
//! ([`PerUpstream`]), indexed by the small ids of [`names`], so per-upstream
//! hits cost the hit path no more than the totals do. A scrape sums the blocks.
//!
//! Per-upstream series the fetcher writes (circuit breaker, latency, errors,
//! rate limit) are in [`upstream`]; the store's running totals give the bytes
//! and objects on disk. [`exposition`] encodes all of it with the
//! `prometheus-client` crate, Go's ten names kept exactly (see README, Metrics);
//! [`endpoint`] serves it on its own port (`--metrics PORT`, as the Go
//! ociregistry does), away from the serving threads.

pub mod endpoint;
pub mod exposition;
pub mod names;
mod process;
pub mod upstream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

pub use endpoint::serve_exposition;
pub use names::{UpstreamId, UpstreamNames};
pub use upstream::{UpstreamSeries, UpstreamSeriesMap};

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
    /// File body bytes sent on HTTPS connections whose records the kernel encrypts.
    SentKernelTls,
    /// HTTPS connections handed to the kernel's TLS after their handshake,
    /// kept with rustls (a session the kernel cannot carry, `TCP_ULP` refused),
    /// or lost because the kernel refused keys rustls had given up.
    TlsKernelOffloads,
    TlsKernelDeclined,
    TlsKernelFailures,
}

const SLOTS: usize = Counter::TlsKernelFailures as usize + 1;

/// One upstream's counters on one serving thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerUpstream {
    /// Manifest answers from the cache (Go's `cached_pulls_by_ns`).
    ManifestHits,
    /// Manifest answers fetched upstream for them (Go's `upstream_pulls_by_ns`).
    ManifestMisses,
    /// Manifest misses answered by another request's fetch they joined (or
    /// by the store, by then): Go counts these in `cached_pulls_by_ns`.
    ManifestJoined,
    BlobHits,
    /// Blob answers fetched upstream or streamed from a download in flight.
    BlobMisses,
    /// Body bytes sent in answers for this upstream.
    BytesServed,
}

const PER_UPSTREAM: usize = 8;

/// One cache line of per-upstream counters (64-byte aligned and sized, so
/// two threads' rows never share a line).
#[repr(align(64))]
struct Row([AtomicU64; PER_UPSTREAM]);

/// The counters one thread writes.
#[repr(align(128))]
pub struct Block {
    slots: [AtomicU64; SLOTS],
    /// By [`UpstreamId`].
    rows: Box<[Row]>,
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

    /// Adds `n` to `upstream`'s `counter`.
    #[inline]
    pub fn add_upstream(&self, upstream: UpstreamId, counter: PerUpstream, n: u64) {
        if let Some(row) = self.rows.get(upstream.index()) {
            row.0[counter as usize].fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// All blocks of one server, and where the rest of its series are read.
pub struct Metrics {
    /// Locked only to add a block (thread start) and to scrape.
    blocks: Mutex<Vec<Arc<Block>>>,
    /// The upstreams that have labels (and rows in each block).
    pub names: Arc<UpstreamNames>,
    /// Per-upstream series the fetcher writes.
    pub upstreams: Arc<UpstreamSeriesMap>,
    /// The store whose totals are exposed, once it is open.
    store: OnceLock<Arc<crate::store::Store>>,
    /// Whether the kernel offers TLS offload, once HTTPS is configured and probed.
    /// (Whether it is used is `serverTlsConfig.kernelTls`, and the offload counters.)
    kernel_tls: OnceLock<bool>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new(UpstreamNames::default())
    }
}

impl Metrics {
    pub fn new(names: UpstreamNames) -> Metrics {
        Metrics {
            blocks: Mutex::default(),
            names: Arc::new(names),
            upstreams: Arc::default(),
            store: OnceLock::new(),
            kernel_tls: OnceLock::new(),
        }
    }

    /// Exposes `store`'s totals (bytes and objects on disk).
    pub fn attach_store(&self, store: Arc<crate::store::Store>) {
        let _ = self.store.set(store);
    }

    /// Exposes the kernel TLS probe's answer (HTTPS servers only).
    pub fn note_kernel_tls(&self, available: bool) {
        let _ = self.kernel_tls.set(available);
    }

    fn store_totals(&self) -> Option<crate::store::totals::Snapshot> {
        self.store.get().map(|s| s.totals())
    }

    /// A new block for the calling thread (or the fetcher) to write.
    pub fn block(&self) -> Arc<Block> {
        let block = Arc::new(Block {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
            rows: (0..self.names.rows()).map(|_| Row(std::array::from_fn(|_| AtomicU64::new(0)))).collect(),
        });
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

    /// Per-upstream counters summed over every block, by [`UpstreamId`].
    fn upstream_totals(&self) -> Vec<[u64; PER_UPSTREAM]> {
        let blocks = self.blocks.lock();
        (0..self.names.rows())
            .map(|r| std::array::from_fn(|c| blocks.iter().map(|b| b.rows[r].0[c].load(Ordering::Relaxed)).sum()))
            .collect()
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(self: &Arc<Self>) -> String {
        exposition::render(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_summed_and_rendered() {
        let m = Arc::new(Metrics::default());
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
    fn per_upstream_rows_are_summed_by_name_with_go_labels() {
        let quay: crate::oci::RegistryName = "quay.io".parse().unwrap();
        let m = Arc::new(Metrics::new(UpstreamNames::new([&quay])));
        let (a, b) = (m.block(), m.block());
        let id = m.names.id(&quay, false);
        a.add_upstream(id, PerUpstream::ManifestHits, 2);
        b.add_upstream(id, PerUpstream::ManifestHits, 1);
        b.add_upstream(id, PerUpstream::ManifestMisses, 1);
        a.add_upstream(m.names.other(), PerUpstream::BytesServed, 9);
        let text = m.render();
        assert!(text.contains("ociregistry_cached_pulls_by_ns_total{ns=\"quay.io\"} 3\n"), "{text}");
        assert!(text.contains("ociregistry_upstream_pulls_by_ns{ns=\"quay.io\"} 1\n"), "{text}");
        assert!(text.contains("ociregistry_upstream_bytes_served_total{registry=\"other\"} 9\n"), "{text}");
        assert!(text.contains("ociregistry_upstream_hits_total{registry=\"quay.io\",kind=\"manifest\"} 3\n"), "{text}");
    }

    #[test]
    fn fetcher_series_are_labelled_by_name_and_the_unlabelled_summed_into_other() {
        let quay: crate::oci::RegistryName = "quay.io".parse().unwrap();
        let m = Arc::new(Metrics::new(UpstreamNames::new([&quay])));
        let series = m.upstreams.series("quay.io", 8);
        series.state.store(1, Ordering::Relaxed);
        series.opened.fetch_add(3, Ordering::Relaxed);
        series.note_ratelimit(b"76;w=21600");
        series.error(upstream::ErrorKind::RateLimited);
        // Upstreams without a label of their own: summed, the worst state, the least budget.
        for (name, opened, budget) in [("a\"b\\c", 1, b"9"), ("b.example", 2, b"5")] {
            let s = m.upstreams.series(name, 8);
            s.opened.fetch_add(opened, Ordering::Relaxed);
            s.note_ratelimit(budget);
            s.observe(std::time::Duration::from_millis(1));
            s.state.store(opened as u8, Ordering::Relaxed);
        }
        let text = m.render();
        assert!(text.contains("ociregistry_upstream_circuit_state{registry=\"quay.io\"} 1\n"), "{text}");
        assert!(text.contains("ociregistry_upstream_circuit_opened_total{registry=\"quay.io\"} 3\n"), "{text}");
        assert!(text.contains("ociregistry_upstream_ratelimit_remaining{registry=\"quay.io\"} 76\n"), "{text}");
        let errors = "ociregistry_upstream_errors_total{registry=\"quay.io\",kind=\"rate_limited\"} 1\n";
        assert!(text.contains(errors), "{text}");
        assert!(text.contains("ociregistry_upstream_circuit_opened_total{registry=\"other\"} 3\n"), "{text}");
        assert!(text.contains("ociregistry_upstream_circuit_state{registry=\"other\"} 2\n"), "{text}");
        assert!(text.contains("ociregistry_upstream_ratelimit_remaining{registry=\"other\"} 5\n"), "{text}");
        let other_latency = "ociregistry_upstream_request_duration_seconds_bucket{registry=\"other\",le=\"0.005\"} 2\n";
        assert!(text.contains(other_latency), "{text}");
        assert!(!text.contains("b.example") && !text.contains("a\\\"b"), "{text}");
        assert!(text.contains("# TYPE ociregistry_upstream_circuit_state gauge\n"), "{text}");
    }
}
