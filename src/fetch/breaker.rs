//! The per-upstream circuit breaker: an upstream that keeps failing is left
//! alone for a while instead of being hammered, and its requests are answered
//! at once (503 with `Retry-After`) without touching the network.
//!
//! - **Closed**: requests go through; [`Policy::failures`] consecutive
//!   failures that say the upstream is unwell (connection refused or reset,
//!   timeout, DNS or TLS handshake failure, 502-504, 429) open it. Any other
//!   answer (404, 401, 403, a bad manifest: the upstream is up) resets the count.
//! - **Open**: requests fail fast until the cool-down is over. The cool-down is
//!   [`Policy::cool_down`], doubled after every failed trial, at most
//!   [`Policy::max_cool_down`]; a 429 with `Retry-After` opens it at once for
//!   that long (capped the same way).
//! - **Half-open**: exactly one trial request goes through; others still fail
//!   fast. The trial's success closes the breaker, its failure re-opens it with
//!   a longer cool-down, and a trial that ends without an outcome (cancelled,
//!   refused by policy) lets the next request be the trial.
//!
//! The thresholds are configuration: a [`Policy`] per upstream, from
//! `circuitBreaker` globally and per registry (its parsing and defaults are
//! [`crate::config::breaker`]'s); `failures: 0` disables the breaker: it
//! never opens.
//!
//! [`Circuit`] is the pure state machine, with time passed in; [`Breaker`]
//! wraps it in a lock and makes its changes visible in logs and metrics.
//! Only requests admitted as the trial decide a half-open circuit: answers to
//! requests let through before it opened do not.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::breaker::Policy;
use crate::metrics::UpstreamSeries;
use crate::oci::RegistryName;

/// What one upstream request said about the upstream's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It answered, whatever it answered (success, 404, 401/403, bad content).
    Healthy,
    /// Unreachable, timed out, or a 5xx (or a 429 without a usable `Retry-After`).
    Unwell,
    /// 429 with `Retry-After` in seconds: leave it alone that long.
    RateLimited(Duration),
    /// Nothing learnt (refused by our own policy, cancelled).
    Unknown,
}

/// Whether a request may go upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Closed: go ahead.
    Go,
    /// Half-open: go ahead as the one trial.
    Trial,
    /// Open, or half-open with the trial in flight: do not send; retry in this long.
    Reject(Duration),
}

/// The breaker's state, as exposed in the metrics (`0|1|2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Closed => "closed",
            Phase::Open => "open",
            Phase::HalfOpen => "half-open",
        }
    }
}

/// A state change, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Opened { failures: u32, cool_down: Duration },
    HalfOpen,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial: bool },
}

/// The pure state machine; see the module documentation.
#[derive(Debug, Clone)]
pub struct Circuit {
    state: State,
    /// The cool-down the next failed trial starts from (doubled then).
    cool_down: Duration,
    policy: Policy,
}

impl Default for Circuit {
    fn default() -> Circuit {
        Circuit::new(Policy::default())
    }
}

impl Circuit {
    pub fn new(policy: Policy) -> Circuit {
        Circuit { state: State::Closed { failures: 0 }, cool_down: policy.cool_down, policy }
    }

    pub fn phase(&self) -> Phase {
        match self.state {
            State::Closed { .. } => Phase::Closed,
            State::Open { .. } => Phase::Open,
            State::HalfOpen { .. } => Phase::HalfOpen,
        }
    }

    /// Whether a request may be sent at `now`, and the change that decision made.
    pub fn allow(&mut self, now: Instant) -> (Admit, Option<Change>) {
        match self.state {
            State::Closed { .. } => (Admit::Go, None),
            State::Open { until } if now < until => (Admit::Reject(until - now), None),
            State::Open { .. } => {
                self.state = State::HalfOpen { trial: true };
                (Admit::Trial, Some(Change::HalfOpen))
            }
            State::HalfOpen { trial: true } => (Admit::Reject(self.policy.cool_down), None),
            State::HalfOpen { trial: false } => {
                self.state = State::HalfOpen { trial: true };
                (Admit::Trial, None)
            }
        }
    }

    /// Takes the outcome of a request admitted as `admitted` (`Go` or `Trial`).
    pub fn record(&mut self, admitted: Admit, outcome: Outcome, now: Instant) -> Option<Change> {
        let (threshold, max) = (self.policy.failures, self.policy.max_cool_down);
        if threshold == 0 {
            return None;
        }
        match (self.state, admitted == Admit::Trial) {
            (State::Closed { failures }, false) => match outcome {
                Outcome::Healthy => {
                    self.state = State::Closed { failures: 0 };
                    None
                }
                Outcome::Unknown => None,
                Outcome::RateLimited(wait) => Some(self.open(failures + 1, wait.min(max), now)),
                Outcome::Unwell if failures + 1 >= threshold => {
                    self.cool_down = self.policy.cool_down;
                    Some(self.open(failures + 1, self.cool_down, now))
                }
                Outcome::Unwell => {
                    self.state = State::Closed { failures: failures + 1 };
                    None
                }
            },
            (State::HalfOpen { trial: true }, true) => match outcome {
                Outcome::Healthy => {
                    *self = Circuit::new(self.policy);
                    Some(Change::Closed)
                }
                Outcome::Unknown => {
                    self.state = State::HalfOpen { trial: false };
                    None
                }
                Outcome::Unwell => {
                    self.cool_down = (self.cool_down * 2).min(max);
                    Some(self.open(1, self.cool_down, now))
                }
                Outcome::RateLimited(wait) => {
                    self.cool_down = (self.cool_down * 2).min(max);
                    Some(self.open(1, wait.max(self.cool_down).min(max), now))
                }
            },
            // Answers to requests admitted in another state than the current one decide nothing.
            _ => None,
        }
    }

    fn open(&mut self, failures: u32, cool_down: Duration, now: Instant) -> Change {
        self.state = State::Open { until: now + cool_down };
        Change::Opened { failures, cool_down }
    }
}

/// One upstream's breaker: the circuit under a lock (held for a few
/// instructions, never across an `.await`), logging and counting its changes.
pub struct Breaker {
    registry: RegistryName,
    circuit: Mutex<Circuit>,
    series: Arc<UpstreamSeries>,
}

impl Breaker {
    pub fn new(registry: RegistryName, policy: Policy, series: Arc<UpstreamSeries>) -> Breaker {
        series.state.store(Phase::Closed as u8, Ordering::Relaxed);
        Breaker { registry, circuit: Mutex::new(Circuit::new(policy)), series }
    }

    pub fn phase(&self) -> Phase {
        self.circuit.lock().phase()
    }

    /// Whether a request may go upstream at `now`; a rejection is counted as a fast failure.
    pub fn allow(&self, now: Instant) -> Admit {
        let (admit, change) = self.circuit.lock().allow(now);
        if let Admit::Reject(_) = admit {
            self.series.fast_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.note(change);
        admit
    }

    pub fn record(&self, admitted: Admit, outcome: Outcome, now: Instant) {
        let change = self.circuit.lock().record(admitted, outcome, now);
        self.note(change);
    }

    fn note(&self, change: Option<Change>) {
        let registry = self.registry.as_str();
        let phase = match change {
            None => return,
            Some(Change::Opened { failures, cool_down }) => {
                self.series.opened.fetch_add(1, Ordering::Relaxed);
                let cool_down_ms = cool_down.as_millis() as u64;
                tracing::warn!(registry, failures, cool_down_ms, "upstream circuit opened");
                Phase::Open
            }
            Some(Change::HalfOpen) => {
                tracing::info!(registry, "upstream circuit half-open: one trial request goes through");
                Phase::HalfOpen
            }
            Some(Change::Closed) => {
                tracing::info!(registry, "upstream circuit closed");
                Phase::Closed
            }
        };
        self.series.state.store(phase as u8, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::breaker::{BASE_COOL_DOWN, FAILURE_THRESHOLD, MAX_COOL_DOWN};

    fn fail(c: &mut Circuit, now: Instant) -> Option<Change> {
        let (admit, _) = c.allow(now);
        c.record(admit, Outcome::Unwell, now)
    }

    fn open_it(c: &mut Circuit, now: Instant) {
        for _ in 0..FAILURE_THRESHOLD {
            fail(c, now);
        }
        assert_eq!(c.phase(), Phase::Open);
    }

    #[test]
    fn opens_after_the_threshold_of_consecutive_failures_only() {
        let now = Instant::now();
        let mut c = Circuit::default();
        for _ in 1..FAILURE_THRESHOLD {
            assert_eq!(fail(&mut c, now), None);
        }
        // A healthy answer (a 404 is one) resets the count.
        assert_eq!(c.record(Admit::Go, Outcome::Healthy, now), None);
        for _ in 1..FAILURE_THRESHOLD {
            assert_eq!(fail(&mut c, now), None);
        }
        assert_eq!(c.phase(), Phase::Closed);
        assert_eq!(fail(&mut c, now), Some(Change::Opened { failures: FAILURE_THRESHOLD, cool_down: BASE_COOL_DOWN }));
        assert_eq!(c.allow(now).0, Admit::Reject(BASE_COOL_DOWN));
        assert_eq!(c.allow(now + BASE_COOL_DOWN / 4).0, Admit::Reject(BASE_COOL_DOWN * 3 / 4));
    }

    #[test]
    fn unknown_outcomes_neither_count_nor_reset() {
        let now = Instant::now();
        let mut c = Circuit::default();
        for _ in 1..FAILURE_THRESHOLD {
            fail(&mut c, now);
        }
        assert_eq!(c.record(Admit::Go, Outcome::Unknown, now), None);
        assert!(matches!(fail(&mut c, now), Some(Change::Opened { .. })));
    }

    #[test]
    fn half_open_lets_one_trial_through_and_its_success_closes() {
        let t0 = Instant::now();
        let mut c = Circuit::default();
        open_it(&mut c, t0);
        let t1 = t0 + BASE_COOL_DOWN;
        assert_eq!(c.allow(t1), (Admit::Trial, Some(Change::HalfOpen)));
        for _ in 0..10 {
            assert_eq!(c.allow(t1).0, Admit::Reject(BASE_COOL_DOWN), "a second trial while one is in flight");
        }
        // A late answer to a request let through before the breaker opened decides nothing.
        assert_eq!(c.record(Admit::Go, Outcome::Healthy, t1), None);
        assert_eq!(c.phase(), Phase::HalfOpen);
        assert_eq!(c.record(Admit::Trial, Outcome::Healthy, t1), Some(Change::Closed));
        assert_eq!(c.allow(t1).0, Admit::Go);
        // Closed again from scratch: the full threshold is needed to re-open, with the base cool-down.
        for _ in 1..FAILURE_THRESHOLD {
            assert_eq!(fail(&mut c, t1), None);
        }
        assert_eq!(fail(&mut c, t1), Some(Change::Opened { failures: FAILURE_THRESHOLD, cool_down: BASE_COOL_DOWN }));
    }

    #[test]
    fn failed_trials_double_the_cool_down_up_to_the_cap() {
        let mut now = Instant::now();
        let mut c = Circuit::default();
        open_it(&mut c, now);
        let mut expected = BASE_COOL_DOWN;
        for _ in 0..10 {
            now += expected;
            assert_eq!(c.allow(now - Duration::from_millis(1)).0, Admit::Reject(Duration::from_millis(1)));
            assert_eq!(c.allow(now).0, Admit::Trial);
            expected = (expected * 2).min(MAX_COOL_DOWN);
            assert_eq!(
                c.record(Admit::Trial, Outcome::Unwell, now),
                Some(Change::Opened { failures: 1, cool_down: expected })
            );
        }
        assert_eq!(expected, MAX_COOL_DOWN);
    }

    #[test]
    fn a_trial_without_an_outcome_hands_the_trial_to_the_next_request() {
        let now = Instant::now();
        let mut c = Circuit::default();
        open_it(&mut c, now);
        let later = now + BASE_COOL_DOWN;
        assert_eq!(c.allow(later).0, Admit::Trial);
        assert_eq!(c.record(Admit::Trial, Outcome::Unknown, later), None);
        assert_eq!(c.allow(later), (Admit::Trial, None));
        assert!(matches!(c.allow(later).0, Admit::Reject(_)));
    }

    #[test]
    fn a_429_with_retry_after_opens_at_once_for_that_long_capped() {
        let now = Instant::now();
        let mut c = Circuit::default();
        let wait = Duration::from_secs(7);
        assert_eq!(
            c.record(Admit::Go, Outcome::RateLimited(wait), now),
            Some(Change::Opened { failures: 1, cool_down: wait })
        );
        assert_eq!(c.allow(now + Duration::from_secs(6)).0, Admit::Reject(Duration::from_secs(1)));
        assert_eq!(c.allow(now + wait).0, Admit::Trial);
        assert_eq!(c.record(Admit::Trial, Outcome::Healthy, now + wait), Some(Change::Closed));
        let mut c = Circuit::default();
        assert_eq!(
            c.record(Admit::Go, Outcome::RateLimited(Duration::from_secs(86_400)), now),
            Some(Change::Opened { failures: 1, cool_down: MAX_COOL_DOWN })
        );
    }

    #[test]
    fn one_trial_under_concurrency() {
        let series = Arc::new(UpstreamSeries::default());
        let breaker = Arc::new(Breaker::new("quay.io".parse().unwrap(), Policy::default(), series.clone()));
        let t0 = Instant::now();
        for _ in 0..FAILURE_THRESHOLD {
            let admit = breaker.allow(t0);
            breaker.record(admit, Outcome::Unwell, t0);
        }
        assert_eq!(series.state.load(Ordering::Relaxed), Phase::Open as u8);
        assert_eq!(series.opened.load(Ordering::Relaxed), 1);
        let later = t0 + BASE_COOL_DOWN;
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (b, barrier) = (breaker.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..50).map(|_| b.allow(later)).filter(|a| *a == Admit::Trial).count()
                })
            })
            .collect();
        let trials: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(trials, 1);
        assert_eq!(series.state.load(Ordering::Relaxed), Phase::HalfOpen as u8);
        assert_eq!(series.fast_failures.load(Ordering::Relaxed), 16 * 50 - 1);
        breaker.record(Admit::Trial, Outcome::Healthy, later);
        assert_eq!((breaker.phase(), series.state.load(Ordering::Relaxed)), (Phase::Closed, 0));
    }

    #[test]
    fn the_policy_sets_threshold_and_cool_downs_and_zero_failures_disables() {
        let policy =
            Policy { failures: 2, cool_down: Duration::from_millis(300), max_cool_down: Duration::from_millis(1000) };
        let mut now = Instant::now();
        let mut c = Circuit::new(policy);
        assert_eq!(fail(&mut c, now), None);
        assert_eq!(fail(&mut c, now), Some(Change::Opened { failures: 2, cool_down: policy.cool_down }));
        for expected in [600, 1000, 1000] {
            now += Duration::from_millis(1000);
            assert_eq!(c.allow(now).0, Admit::Trial);
            let cool_down = Duration::from_millis(expected);
            assert_eq!(c.record(Admit::Trial, Outcome::Unwell, now), Some(Change::Opened { failures: 1, cool_down }));
        }
        let mut c = Circuit::new(policy);
        let long = Outcome::RateLimited(Duration::from_secs(30));
        assert_eq!(
            c.record(Admit::Go, long, now),
            Some(Change::Opened { failures: 1, cool_down: policy.max_cool_down })
        );
        let mut c = Circuit::new(Policy { failures: 0, ..policy });
        for _ in 0..100 {
            assert_eq!(fail(&mut c, now), None);
        }
        assert_eq!(c.record(Admit::Go, long, now), None);
        assert_eq!(c.allow(now).0, Admit::Go);
    }
}
