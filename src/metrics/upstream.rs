//! Per-upstream series the fetcher writes: its circuit breaker, stale
//! serves, bytes fetched, coalesced waiters, downloads in flight, request
//! latency, errors by kind and the rate-limit budget an upstream announces.
//! The serving threads never touch these (their per-upstream counters are in
//! their own blocks), so the hit path never sees this map's lock. The map is
//! keyed by registry name with the bound of the fetcher's clients; a scrape
//! labels each series through [`super::names`], summing the unlabelled into `other`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// Upper bounds (seconds) of the upstream request latency histogram: the
/// time to an upstream's response headers, tokens and redirects included.
pub const LATENCY_BOUNDS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Why an upstream request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 429 Too Many Requests.
    RateLimited,
    /// A 5xx answer.
    Server,
    /// 401 or 403 after authenticating.
    Denied,
    /// No connection, or the connection broke.
    Unreachable,
    /// No answer within `--pull-timeout`.
    Timeout,
    /// Any other failure (a refused redirect, a malformed answer).
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::RateLimited,
        ErrorKind::Server,
        ErrorKind::Denied,
        ErrorKind::Unreachable,
        ErrorKind::Timeout,
        ErrorKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Server => "server_error",
            ErrorKind::Denied => "denied",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Other => "other",
        }
    }
}

/// `ratelimit_remaining` before an upstream announced any.
const NOT_ANNOUNCED: u64 = u64::MAX;

/// One upstream's series.
pub struct UpstreamSeries {
    /// Circuit breaker state: 0 closed, 1 open, 2 half-open.
    pub state: AtomicU8,
    /// Times the breaker opened.
    pub opened: AtomicU64,
    /// Requests answered at once, without an upstream request, while it was open.
    pub fast_failures: AtomicU64,
    /// Cached tags served although their due re-check failed (see `fetch::freshness`).
    pub stale_serves: AtomicU64,
    /// Blob body bytes received from this upstream.
    pub bytes_fetched: AtomicU64,
    /// Requests that joined a fetch already in flight instead of starting one.
    pub coalesced: AtomicU64,
    /// Blob downloads from this upstream in flight now.
    pub downloads_in_flight: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    latency_sum_micros: AtomicU64,
    errors: [AtomicU64; ErrorKind::ALL.len()],
    ratelimit_remaining: AtomicU64,
}

impl Default for UpstreamSeries {
    fn default() -> UpstreamSeries {
        UpstreamSeries {
            state: AtomicU8::new(0),
            opened: AtomicU64::new(0),
            fast_failures: AtomicU64::new(0),
            stale_serves: AtomicU64::new(0),
            bytes_fetched: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            downloads_in_flight: AtomicU64::new(0),
            latency_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_micros: AtomicU64::new(0),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            ratelimit_remaining: AtomicU64::new(NOT_ANNOUNCED),
        }
    }
}

/// A histogram as read: per-bucket counts (the last one past every bound),
/// the sum in seconds and the count.
pub struct Latency {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl Latency {
    /// The sum of several histograms with the same bounds.
    pub fn merged(all: impl Iterator<Item = Latency>) -> Latency {
        let mut total = Latency {
            buckets: LATENCY_BOUNDS.iter().copied().chain([f64::INFINITY]).map(|b| (b, 0)).collect(),
            sum: 0.0,
            count: 0,
        };
        for l in all {
            for (t, (_, n)) in total.buckets.iter_mut().zip(l.buckets) {
                t.1 += n;
            }
            total.sum += l.sum;
            total.count += l.count;
        }
        total
    }
}

impl UpstreamSeries {
    /// Records one request's time to its answer (or its failure).
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = LATENCY_BOUNDS.iter().position(|&b| secs <= b).unwrap_or(LATENCY_BOUNDS.len());
        self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(took.as_micros().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    pub fn latency(&self) -> Latency {
        let counts: Vec<u64> = self.latency_buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let mut buckets: Vec<(f64, u64)> = LATENCY_BOUNDS.iter().copied().zip(counts.iter().copied()).collect();
        buckets.push((f64::INFINITY, counts[LATENCY_BOUNDS.len()]));
        Latency {
            sum: self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: counts.iter().sum(),
            buckets,
        }
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors[kind as usize].load(Ordering::Relaxed)
    }

    /// Notes a `RateLimit-Remaining` header value; one that does not parse
    /// (see [`parse_ratelimit_remaining`]) leaves the last value standing.
    pub fn note_ratelimit(&self, header: &[u8]) {
        if let Some(n) = parse_ratelimit_remaining(header) {
            self.ratelimit_remaining.store(n, Ordering::Relaxed);
        }
    }

    /// The requests left in the upstream's window, as it last announced them.
    pub fn ratelimit_remaining(&self) -> Option<u64> {
        Some(self.ratelimit_remaining.load(Ordering::Relaxed)).filter(|&n| n != NOT_ANNOUNCED)
    }
}

/// Docker Hub's `ratelimit-remaining: 76;w=21600`: the requests left, then
/// optionally `;w=<window seconds>`. Strict: 1 to 10 ASCII digits, a window
/// of 1 to 10 digits, no other parameter, no spaces inside; anything else is `None`.
pub fn parse_ratelimit_remaining(v: &[u8]) -> Option<u64> {
    let v = std::str::from_utf8(v).ok()?.trim();
    let (count, rest) = match v.split_once(';') {
        Some((c, w)) => (c, Some(w)),
        None => (v, None),
    };
    let digits = |s: &str| (1..=10).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(count) || rest.is_some_and(|w| !w.strip_prefix("w=").is_some_and(digits)) {
        return None;
    }
    count.parse().ok()
}

/// Counts a blob download from its start to its end (drop).
pub struct InFlight(Arc<UpstreamSeries>);

impl InFlight {
    pub fn new(series: Arc<UpstreamSeries>) -> InFlight {
        series.downloads_in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(series)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.downloads_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The series by registry name. Locked only when an upstream's client is
/// built or a download starts (on the fetcher) and to scrape.
#[derive(Default)]
pub struct UpstreamSeriesMap {
    by_registry: Mutex<BTreeMap<String, Arc<UpstreamSeries>>>,
}

impl UpstreamSeriesMap {
    /// The series of `registry`, kept across rebuilds of its client. Once
    /// `max` are held, the series no one holds any more are dropped, so
    /// this map has the bound of the clients' map.
    pub fn series(&self, registry: &str, max: usize) -> Arc<UpstreamSeries> {
        let mut map = self.by_registry.lock();
        if let Some(s) = map.get(registry) {
            return s.clone();
        }
        if map.len() >= max {
            map.retain(|_, s| Arc::strong_count(s) > 1);
        }
        map.entry(registry.to_string()).or_default().clone()
    }

    /// Every series, by name, for a scrape.
    pub fn all(&self) -> Vec<(String, Arc<UpstreamSeries>)> {
        self.by_registry.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    #[cfg(test)]
    pub fn names(&self) -> Vec<String> {
        self.by_registry.lock().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratelimit_remaining_is_parsed_strictly() {
        assert_eq!(parse_ratelimit_remaining(b"76;w=21600"), Some(76));
        assert_eq!(parse_ratelimit_remaining(b" 0 "), Some(0));
        assert_eq!(parse_ratelimit_remaining(b"100"), Some(100));
        for bad in
            [&b""[..], b"-1", b"76;w=", b"76;x=1", b"76 ;w=1", b"76;w=1;q=2", b"1e3", b"12345678901", b"76,77", b"\xff"]
        {
            assert_eq!(parse_ratelimit_remaining(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        let s = UpstreamSeries::default();
        assert_eq!(s.ratelimit_remaining(), None);
        s.note_ratelimit(b"76;w=21600");
        s.note_ratelimit(b"garbage");
        assert_eq!(s.ratelimit_remaining(), Some(76));
    }

    #[test]
    fn latency_lands_in_its_bucket() {
        let s = UpstreamSeries::default();
        s.observe(Duration::from_millis(3));
        s.observe(Duration::from_millis(300));
        s.observe(Duration::from_secs(100));
        let l = s.latency();
        assert_eq!((l.count, l.buckets.len()), (3, LATENCY_BOUNDS.len() + 1));
        assert_eq!(l.buckets[0], (0.005, 1));
        assert_eq!(l.buckets[6], (0.5, 1));
        assert_eq!(l.buckets[LATENCY_BOUNDS.len()], (f64::INFINITY, 1));
        assert!((l.sum - 100.303).abs() < 1e-6);
    }

    #[test]
    fn series_are_kept_per_registry_and_bounded() {
        let m = UpstreamSeriesMap::default();
        let quay = m.series("quay.io", 2);
        assert!(Arc::ptr_eq(&quay, &m.series("quay.io", 2)));
        drop(m.series("a.example", 2));
        // Full: the series nobody holds go, the held ones stay.
        let _ghcr = m.series("ghcr.io", 2);
        assert_eq!(m.names(), ["ghcr.io", "quay.io"]);
    }
}
