//! The exposition: a `prometheus-client` collector that reads our atomics at
//! scrape time (the hit path keeps its plain per-thread counters), encoded in
//! the Prometheus text format 0.0.4 the Go ociregistry serves.
//!
//! The standard `process_*` series come from `process`, without the prefix.
//!
//! prometheus-client appends `_total` to every counter's name. Nine of Go's ten
//! names fit that; `ociregistry_upstream_pulls_by_ns` (a counter without
//! `_total` in Go) is exposed as `untyped` to keep its exact name.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::upstream::{ErrorKind, Latency, UpstreamSeries};
use super::{Counter, Metrics, PerUpstream, UpstreamId};

/// Every metric name starts with this and `_`.
pub const PREFIX: &str = "ociregistry";

/// The Prometheus text exposition (format 0.0.4) of `metrics`.
pub fn render(metrics: &Arc<Metrics>) -> String {
    let mut registry = Registry::default();
    registry.sub_registry_with_prefix(PREFIX).register_collector(Box::new(Scrape(metrics.clone())));
    registry.register_collector(Box::new(super::process::Process));
    let mut out = String::with_capacity(16 * 1024);
    prometheus_text::encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

/// Reads every series of one server when encoded.
struct Scrape(Arc<Metrics>);

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scrape")
    }
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?.encode_counter::<NoLabelSet, u64, u64>(&v, None)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Gauge)?.encode_gauge(&v)
}

/// A family with labels; `kind` is Counter, Gauge or Unknown (untyped).
fn family(
    enc: &mut DescriptorEncoder,
    kind: MetricType,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in series {
        let mut s = m.encode_family(labels)?;
        match kind {
            MetricType::Counter => s.encode_counter::<NoLabelSet, u64, u64>(v, None)?,
            _ => s.encode_gauge(v)?,
        }
    }
    Ok(())
}

/// The serving threads' per-upstream rows that are shown, with their labels:
/// every named upstream, and `other` once it counted anything.
type Rows<'a> = [(&'a str, &'a [u64; super::PER_UPSTREAM])];

fn labelled_rows<'a>(
    m: &'a Metrics,
    rows: &'a [[u64; super::PER_UPSTREAM]],
) -> Vec<(&'a str, &'a [u64; super::PER_UPSTREAM])> {
    rows.iter()
        .enumerate()
        .filter_map(|(i, row)| {
            let id = UpstreamId(i as u16);
            let named = id == m.names.other() || m.names.label(id) != super::names::OTHER;
            let shown = id != m.names.other() || row.iter().any(|&v| v > 0);
            (named && shown).then(|| (m.names.label(id), row))
        })
        .collect()
}

/// One series per upstream row, labelled `label`, summing `counters`.
fn by_upstream<'a>(labelled: &Rows<'a>, label: &'static str, counters: &[PerUpstream]) -> Vec<(Labels<'a>, u64)> {
    labelled.iter().map(|(name, row)| (vec![(label, *name)], counters.iter().map(|&c| row[c as usize]).sum())).collect()
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let (m, e) = (&self.0, &mut enc);
        let totals = m.totals();
        let rows = m.upstream_totals();
        let labelled = labelled_rows(m, &rows);
        go_series(e, m, &totals, &labelled)?;
        serving_series(e, &totals, &labelled)?;
        fetcher_series(e, m)?;
        if let Some(&available) = m.kernel_tls.get() {
            let help = "1 when the kernel offers TLS offload (the tls TCP ULP), 0 when not; see tls_kernel_offloads for its use";
            gauge(e, "tls_kernel_offload_available", help, u64::from(available))?;
        }
        if let Some(live) = crate::heap::live_bytes() {
            gauge(e, "heap_live_bytes", "Heap bytes allocated and not freed (test builds only).", live)?;
        }
        Ok(())
    }
}

/// The Go ociregistry's ten series: its names, types, labels and help texts.
fn go_series(e: &mut DescriptorEncoder, m: &Metrics, totals: &[u64; super::SLOTS], labelled: &Rows) -> fmt::Result {
    use Counter::*;
    let c = |counter: Counter| totals[counter as usize];
    counter(e, "manifest_pulls", "Total count of all manifest pulls", c(ManifestHit) + c(ManifestMiss))?;
    counter(e, "blob_pulls", "Total count of all blob pulls", c(BlobHit) + c(BlobMiss))?;
    counter(
        e,
        "v2_api_endpoint_hits",
        "Totals calls to the v2 oci distribution api spec endpoints implemented by the server",
        c(ApiRequests),
    )?;
    counter(
            e,
            "api_errors",
            "Totals calls to the v2 oci distribution api spec endpoints that resulted in errors (not found, internal server error)",
            c(ApiErrors),
        )?;
    family(
        e,
        MetricType::Counter,
        "cached_pulls_by_ns",
        "Total pulls of cached images by namespace",
        &by_upstream(labelled, "ns", &[PerUpstream::ManifestHits, PerUpstream::ManifestJoined]),
    )?;
    family(
        e,
        MetricType::Unknown,
        "upstream_pulls_by_ns",
        "Total pulls of un-cached images by namespace",
        &by_upstream(labelled, "ns", &[PerUpstream::ManifestMisses]),
    )?;
    let store = m.store_totals().unwrap_or_default();
    gauge(
        e,
        "blob_bytes_on_disk_total",
        "Total blob bytes on disk (independent of file system overhead)",
        store.blob_bytes,
    )?;
    gauge(
        e,
        "manifest_bytes_on_disk_total",
        "Total manifest bytes on disk (independent of file system overhead)",
        store.manifest_bytes,
    )?;
    gauge(
        e,
        "cached_manifest_count",
        "Total number of manifest references cached: by tag and by digest, per repository",
        store.manifest_references,
    )?;
    gauge(e, "cached_blob_count", "Total number of cached blobs", store.blobs)?;

    Ok(())
}

/// Ours, from the serving threads' and the fetcher's blocks.
fn serving_series(e: &mut DescriptorEncoder, totals: &[u64; super::SLOTS], labelled: &Rows) -> fmt::Result {
    use Counter::*;
    let c = |counter: Counter| totals[counter as usize];
    let pairs = |kind: &'static str, a: Counter, b: Counter| {
        [(vec![("kind", kind), ("cache", "hit")], c(a)), (vec![("kind", kind), ("cache", "miss")], c(b))]
    };
    let mut responses = pairs("manifest", ManifestHit, ManifestMiss).to_vec();
    responses.extend(pairs("blob", BlobHit, BlobMiss));
    family(
        e,
        MetricType::Counter,
        "responses",
        "Manifest and blob answers by kind and by whether the cache had them.",
        &responses,
    )?;
    counter(
        e,
        "connections_refused",
        "Connections answered 503 and closed at once because maxConnections were open.",
        c(ConnectionsRefused),
    )?;
    counter(
        e,
        "tls_handshake_failures",
        "HTTPS connections closed because their TLS handshake failed or timed out.",
        c(TlsHandshakeFailures),
    )?;
    counter(
        e,
        "tls_kernel_offloads",
        "HTTPS connections whose records the kernel encrypts and decrypts after the rustls handshake.",
        c(TlsKernelOffloads),
    )?;
    counter(
        e,
        "tls_kernel_offload_declined",
        "HTTPS connections kept with rustls in user space although kernel TLS is on (a session it cannot carry, TCP_ULP refused).",
        c(TlsKernelDeclined),
    )?;
    counter(
        e,
        "tls_kernel_offload_failures",
        "HTTPS connections closed because the kernel refused the session keys rustls had given up (kernel TLS then turns off).",
        c(TlsKernelFailures),
    )?;
    counter(
        e,
        "kept_answers",
        "Answers a serving thread sent from the answers it keeps for repeated requests.",
        c(KeptAnswers),
    )?;
    counter(
        e,
        "cold_reads",
        "File chunks (up to 8 MiB) read into the page cache by a blocking thread before a serving thread sent them.",
        c(ColdReads),
    )?;
    let one = |label: &'static str, value: &'static str, counter: Counter| (vec![(label, value)], c(counter));
    family(
        e,
        MetricType::Counter,
        "body_bytes_sent",
        "Response body bytes sent, by send path.",
        &[
            one("path", "memory", SentMemory),
            one("path", "sendfile", SentSendfile),
            one("path", "mapped", SentMapped),
            one("path", "download", SentStreamed),
            one("path", "tls", SentTls),
            one("path", "kernel_tls", SentKernelTls),
        ],
    )?;
    family(
        e,
        MetricType::Counter,
        "upstream_requests",
        "HTTP requests sent to upstream registries, by what they asked for.",
        &[
            one("kind", "manifest", UpstreamManifest),
            one("kind", "manifest_head", UpstreamManifestHead),
            one("kind", "blob", UpstreamBlob),
            one("kind", "blob_head", UpstreamBlobHead),
            one("kind", "tags", UpstreamTags),
            one("kind", "token", UpstreamToken),
        ],
    )?;
    counter(e, "upstream_blob_bytes", "Blob body bytes received from upstream registries.", c(UpstreamBlobBytes))?;
    family(
        e,
        MetricType::Counter,
        "blob_downloads",
        "Upstream blob downloads by outcome.",
        &[one("outcome", "committed", DownloadsCommitted), one("outcome", "failed", DownloadsFailed)],
    )?;

    let mut hits = Vec::new();
    let mut misses = Vec::new();
    for (name, row) in labelled {
        let manifest_misses = row[PerUpstream::ManifestMisses as usize] + row[PerUpstream::ManifestJoined as usize];
        for (kind, hit, miss) in [
            ("manifest", row[PerUpstream::ManifestHits as usize], manifest_misses),
            ("blob", row[PerUpstream::BlobHits as usize], row[PerUpstream::BlobMisses as usize]),
        ] {
            hits.push((vec![("registry", *name), ("kind", kind)], hit));
            misses.push((vec![("registry", *name), ("kind", kind)], miss));
        }
    }
    family(
        e,
        MetricType::Counter,
        "upstream_hits",
        "Manifest and blob answers served from the cache, by upstream.",
        &hits,
    )?;
    family(
        e,
        MetricType::Counter,
        "upstream_misses",
        "Manifest and blob answers fetched from (or streamed from a download from) the upstream, by upstream.",
        &misses,
    )?;
    family(
        e,
        MetricType::Counter,
        "upstream_bytes_served",
        "Response body bytes sent in answers for each upstream's content.",
        &by_upstream(labelled, "registry", &[PerUpstream::BytesServed]),
    )?;

    Ok(())
}

/// Ours, per upstream, from the fetcher.
fn fetcher_series(e: &mut DescriptorEncoder, m: &Metrics) -> fmt::Result {
    // The fetcher holds series for every upstream client it keeps; those
    // whose name has no label of its own are summed into `other`.
    let mut groups: BTreeMap<&str, Vec<Arc<UpstreamSeries>>> = BTreeMap::new();
    for (name, s) in m.upstreams.all() {
        groups.entry(m.names.label(m.names.known(&name))).or_default().push(s);
    }
    let each = |read: fn(&UpstreamSeries) -> u64| -> Vec<(Labels, u64)> {
        groups.iter().map(|(name, g)| (vec![("registry", *name)], g.iter().map(|s| read(s)).sum())).collect()
    };
    let states: Vec<(Labels, u64)> = groups
        .iter()
        .map(|(name, g)| {
            (vec![("registry", *name)], g.iter().map(|s| s.state.load(Ordering::Relaxed)).max().unwrap_or(0) as u64)
        })
        .collect();
    family(
        e,
        MetricType::Gauge,
        "upstream_circuit_state",
        "Circuit breaker state per upstream: 0 closed, 1 open, 2 half-open (for other: the worst).",
        &states,
    )?;
    family(
        e,
        MetricType::Counter,
        "upstream_circuit_opened",
        "Times an upstream's circuit breaker opened.",
        &each(|s| s.opened.load(Ordering::Relaxed)),
    )?;
    family(
        e,
        MetricType::Counter,
        "upstream_fast_failures",
        "Requests answered at once, without contacting the upstream, while its circuit was open.",
        &each(|s| s.fast_failures.load(Ordering::Relaxed)),
    )?;
    family(
        e,
        MetricType::Counter,
        "stale_serves",
        "Cached tags served unconfirmed because their due re-check upstream failed.",
        &each(|s| s.stale_serves.load(Ordering::Relaxed)),
    )?;
    family(
        e,
        MetricType::Counter,
        "upstream_bytes_fetched",
        "Blob body bytes received from each upstream.",
        &each(|s| s.bytes_fetched.load(Ordering::Relaxed)),
    )?;
    family(
        e,
        MetricType::Counter,
        "upstream_coalesced_waiters",
        "Requests that joined a manifest fetch or blob download already in flight instead of starting one.",
        &each(|s| s.coalesced.load(Ordering::Relaxed)),
    )?;
    family(
        e,
        MetricType::Gauge,
        "upstream_downloads_in_flight",
        "Blob downloads from each upstream in flight now.",
        &each(|s| s.downloads_in_flight.load(Ordering::Relaxed)),
    )?;
    let mut errors = Vec::new();
    for (name, g) in &groups {
        for kind in ErrorKind::ALL {
            errors.push((vec![("registry", *name), ("kind", kind.as_str())], g.iter().map(|s| s.errors(kind)).sum()));
        }
    }
    family(
            e,
            MetricType::Counter,
            "upstream_errors",
            "Failed upstream requests by kind: rate_limited (429), server_error (5xx), denied (401/403), unreachable, timeout, other.",
            &errors,
        )?;
    let announced: Vec<(Labels, u64)> = groups
        .iter()
        .filter_map(|(name, g)| {
            g.iter().filter_map(|s| s.ratelimit_remaining()).min().map(|n| (vec![("registry", *name)], n))
        })
        .collect();
    family(
        e,
        MetricType::Gauge,
        "upstream_ratelimit_remaining",
        "Requests left in the upstream's rate-limit window, as its last RateLimit-Remaining header said (Docker Hub).",
        &announced,
    )?;
    let mut h = e.encode_descriptor(
        "upstream_request_duration_seconds",
        "Time from sending an upstream request to its answer's headers (tokens and redirects included), by upstream.",
        None,
        MetricType::Histogram,
    )?;
    for (name, g) in &groups {
        let l = Latency::merged(g.iter().map(|s| s.latency()));
        let labels = [("registry", *name)];
        h.encode_family(&labels)?.encode_histogram::<NoLabelSet>(l.sum, l.count, &l.buckets, None)?;
    }
    Ok(())
}
