//! `pruneConfig.maxSize`: keeping the cache under a size inside `serve`.
//! The store keeps a running total of its committed bytes and wakes this
//! task when a commit takes it over the high watermark (`maxSize`); the task
//! then runs the same [`prune`] with `max_size` set to the low watermark:
//! the least recently pulled unpinned whole images go until the cache is no
//! larger than that. It runs on a blocking thread, never on the commit path,
//! one eviction at a time (commits meanwhile only leave a wake-up behind).
//! With `--air-gapped` the evicted images cannot be fetched back: each
//! eviction logs a warning saying so.
//!
//! When an eviction cannot get under the low watermark (what is left is
//! pinned), the next one waits (see [`Pacer`]) until the cache grew by a
//! margin or a backoff passed, rather than run again at every commit for
//! nothing; that is warned about once, until an eviction gets under again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{prune_with, Criteria, Pins};
use crate::config::patterns::Patterns;
use crate::config::prune::Watermarks;
use crate::store::Store;

/// Runs until shutdown.
pub async fn run(
    store: Arc<Store>,
    marks: Watermarks,
    pinned: Vec<String>,
    air_gapped: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let patterns = Patterns::from_entries(pinned.iter().map(String::as_str)).ok().filter(|p| !p.is_empty());
    tracing::info!(high = marks.high, low = marks.low, "size-based eviction enabled");
    store.set_high_watermark(marks.high);
    let mut pacer = Pacer::new(marks);
    loop {
        let retry = pacer.retry_in(Instant::now());
        tokio::select! {
            _ = store.over_high_watermark() => {}
            _ = tokio::time::sleep(retry.unwrap_or(Duration::MAX)), if retry.is_some() => {}
            _ = shutdown.changed() => return,
        }
        let bytes = store.bytes();
        if !pacer.due(bytes, Instant::now()) {
            continue;
        }
        let (store2, patterns) = (store.clone(), patterns.clone());
        let ran = tokio::task::spawn_blocking(move || once(&store2, marks.low, patterns, air_gapped)).await;
        match ran {
            Ok(Some(evicted)) => {
                let after = store.bytes();
                match pacer.ran(after, Instant::now()) {
                    Verdict::Under => {}
                    Verdict::Recovered => {
                        tracing::info!(bytes = after, low = marks.low, "back under the low watermark")
                    }
                    Verdict::StuckFirst { wait, grow } => tracing::warn!(
                        bytes = after,
                        low = marks.low,
                        evicted,
                        "still over the low watermark after evicting: everything left is pinned; the next \
                         eviction waits until the cache grows by {grow} bytes or {}s pass (warned once)",
                        wait.as_secs()
                    ),
                    Verdict::StuckAgain { wait } => tracing::debug!(
                        bytes = after,
                        evicted,
                        wait_secs = wait.as_secs(),
                        "still over the low watermark after evicting"
                    ),
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "an eviction failed"),
        }
    }
}

/// First wait after an eviction that could not get under the low watermark.
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
/// Longest wait.
const MAX_BACKOFF: Duration = Duration::from_secs(30 * 60);

/// When the next eviction may run. Free while evictions get under the low
/// watermark; after one that could not (pinned content fills the cache) the
/// next waits until the cache holds `grow` more bytes than that one left
/// (the distance between the watermarks, at least 1% of `maxSize`) or a
/// backoff passed (30 s, doubling to 30 min), so commits meanwhile do not
/// each start an eviction that frees nothing.
#[derive(Debug)]
pub struct Pacer {
    marks: Watermarks,
    stuck: Option<Stuck>,
}

#[derive(Debug, Clone, Copy)]
struct Stuck {
    /// Bytes the last eviction left.
    left: u64,
    at: Instant,
    wait: Duration,
}

/// What an eviction's outcome means for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Under the low watermark, as before.
    Under,
    /// Under again after being stuck.
    Recovered,
    /// Could not get under, for the first time since it last could.
    StuckFirst { wait: Duration, grow: u64 },
    /// Could not get under, again.
    StuckAgain { wait: Duration },
}

impl Pacer {
    pub fn new(marks: Watermarks) -> Pacer {
        Pacer { marks, stuck: None }
    }

    fn grow(&self) -> u64 {
        (self.marks.high.saturating_sub(self.marks.low)).max(self.marks.high / 100).max(1)
    }

    /// Whether an eviction should run now, the cache holding `bytes`.
    pub fn due(&mut self, bytes: u64, now: Instant) -> bool {
        if bytes <= self.marks.high {
            return false;
        }
        match self.stuck {
            None => true,
            Some(s) => bytes >= s.left.saturating_add(self.grow()) || now >= s.at + s.wait,
        }
    }

    /// How long until a running backoff ends: the loop wakes then (after
    /// that, the next commit over the high watermark wakes it).
    pub fn retry_in(&self, now: Instant) -> Option<Duration> {
        self.stuck.map(|s| (s.at + s.wait).saturating_duration_since(now)).filter(|d| !d.is_zero())
    }

    /// An eviction ran and left `left` bytes.
    pub fn ran(&mut self, left: u64, now: Instant) -> Verdict {
        if left <= self.marks.low {
            return if self.stuck.take().is_some() { Verdict::Recovered } else { Verdict::Under };
        }
        match self.stuck {
            None => {
                self.stuck = Some(Stuck { left, at: now, wait: FIRST_BACKOFF });
                Verdict::StuckFirst { wait: FIRST_BACKOFF, grow: self.grow() }
            }
            Some(s) => {
                let wait = (s.wait * 2).min(MAX_BACKOFF);
                self.stuck = Some(Stuck { left, at: now, wait });
                Verdict::StuckAgain { wait }
            }
        }
    }
}

/// One eviction; the images it removed, or `None` when it could not run.
fn once(store: &Store, low: u64, patterns: Option<Patterns>, air_gapped: bool) -> Option<usize> {
    let exact = match store.pins() {
        Ok(pins) => pins.into_iter().collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the pins; skipping this eviction");
            return None;
        }
    };
    let criteria = Criteria { max_size: Some(low), ..Criteria::default() };
    let log = |lines: &[String]| lines.iter().for_each(|line| tracing::info!(target: "prune", "{line}"));
    // Each image's lines as it goes, then the summary.
    let report = prune_with(store, &criteria, &Pins { exact, patterns }, false, log);
    for line in report.closing_lines() {
        tracing::info!(target: "prune", "{line}");
    }
    if air_gapped && !report.plan.images.is_empty() {
        tracing::warn!(
            images = report.plan.images.len(),
            "evicted images to fit maxSize in air-gapped mode: they cannot be fetched back"
        );
    }
    Some(report.plan.images.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_an_eviction_that_cannot_get_under_the_next_waits_for_growth_or_a_backoff() {
        let mut p = Pacer::new(Watermarks { high: 1000, low: 900 });
        let t = Instant::now();
        assert!(!p.due(1000, t), "not over");
        assert!(p.due(1001, t));
        assert_eq!(p.ran(850, t), Verdict::Under);
        assert_eq!(p.retry_in(t), None);
        assert!(p.due(1001, t), "free while evictions get under");

        // Pinned content leaves 1050 bytes: warned once, then commits do not start evictions...
        assert_eq!(p.ran(1050, t), Verdict::StuckFirst { wait: FIRST_BACKOFF, grow: 100 });
        for extra in [1, 10, 99] {
            assert!(!p.due(1050 + extra, t + Duration::from_secs(1)), "+{extra} bytes");
        }
        assert_eq!(p.retry_in(t + Duration::from_secs(10)), Some(FIRST_BACKOFF - Duration::from_secs(10)));
        // ... until the cache grew by the margin, or the backoff passed.
        assert!(p.due(1150, t + Duration::from_secs(1)));
        assert!(p.due(1051, t + FIRST_BACKOFF));
        assert_eq!(p.ran(1040, t + FIRST_BACKOFF), Verdict::StuckAgain { wait: FIRST_BACKOFF * 2 });
        assert!(!p.due(1100, t + FIRST_BACKOFF * 2), "the backoff doubled");
        assert!(p.due(1100, t + FIRST_BACKOFF * 3));
        let mut at = t;
        for _ in 0..20 {
            at += MAX_BACKOFF;
            p.ran(1040, at);
        }
        assert_eq!(p.retry_in(at), Some(MAX_BACKOFF), "bounded");
        assert!(!p.due(900, at + MAX_BACKOFF), "under the high watermark (a prune freed it): nothing to do");
        assert_eq!(p.retry_in(at + MAX_BACKOFF), None, "the backoff is over: only a commit wakes it");

        assert_eq!(p.ran(800, at), Verdict::Recovered);
        assert!(p.due(1001, at), "free again");
        assert_eq!(p.ran(1050, at), Verdict::StuckFirst { wait: FIRST_BACKOFF, grow: 100 }, "warned again");
    }
}
