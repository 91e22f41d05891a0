//! A short memory of objects whose upstream answered a 5xx about them (500,
//! 501, 505 and the like: the statuses the circuit breaker ignores because
//! they concern one object, not the upstream). Such an object (a manifest
//! reference or a blob digest, per source) is not asked of the upstream again
//! for a while: [`FIRST_WAIT`] after the first failure, doubled after every
//! failure that follows the wait, at most [`MAX_WAIT`]. Requests in between
//! are answered at once with the failure and how long to wait. A success
//! forgets the object. The map holds at most [`MAX_OBJECTS`] entries; past
//! that the entries whose wait is long over go first, then the oldest.
//!
//! Pure: time is passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{FetchError, Source};

/// The wait after an object's first failure.
pub const FIRST_WAIT: Duration = Duration::from_secs(2);
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Objects remembered at most.
pub const MAX_OBJECTS: usize = 4096;

/// What failed: the source and `manifest <reference>` or `blob <digest>`.
pub type ObjectKey = (Source, String);

#[derive(Debug, Clone)]
struct Entry {
    /// Not asked again before this.
    until: Instant,
    /// The current wait; the next failure after it doubles it.
    wait: Duration,
    /// When the last failure was noted (eviction order).
    noted: Instant,
    status: u16,
    message: String,
}

#[derive(Debug, Default)]
pub struct Failing {
    entries: HashMap<ObjectKey, Entry>,
}

impl Failing {
    /// The failure to answer with at once while `key` is being left alone.
    pub fn check(&self, key: &ObjectKey, now: Instant) -> Result<(), FetchError> {
        match self.entries.get(key) {
            Some(e) if e.until > now => {
                let left = e.until - now;
                Err(FetchError::Failing {
                    status: e.status,
                    message: e.message.clone(),
                    retry_after_secs: left.as_secs() + u64::from(left.subsec_nanos() > 0),
                })
            }
            _ => Ok(()),
        }
    }

    /// Notes a failure of `key` answered `status`; returns the wait it now has.
    pub fn note(&mut self, key: ObjectKey, status: u16, message: String, now: Instant) -> Duration {
        let wait = match self.entries.get(&key) {
            // Answers to requests sent before the last failure was noted do not lengthen the wait.
            Some(e) if e.until > now => e.wait,
            Some(e) => (e.wait * 2).min(MAX_WAIT),
            None => {
                self.make_room(now);
                FIRST_WAIT
            }
        };
        self.entries.insert(key, Entry { until: now + wait, wait, noted: now, status, message });
        wait
    }

    /// Forgets `key` after a success.
    /// Forgets every failure (the upstreams' configuration was reloaded).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn forget(&mut self, key: &ObjectKey) {
        if !self.entries.is_empty() {
            self.entries.remove(key);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drops the entries whose wait ended more than [`MAX_WAIT`] ago, then the
    /// oldest, until one more fits.
    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < MAX_OBJECTS {
            return;
        }
        self.entries.retain(|_, e| e.until + MAX_WAIT > now);
        while self.entries.len() >= MAX_OBJECTS {
            let oldest = self.entries.iter().min_by_key(|(_, e)| e.noted).map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.entries.remove(&k),
                None => break,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(what: &str) -> ObjectKey {
        (Source { registry: "quay.io".parse().unwrap(), repo: "a/b".parse().unwrap() }, what.to_string())
    }

    fn retry_after(f: &Failing, k: &ObjectKey, now: Instant) -> Option<u64> {
        match f.check(k, now) {
            Err(FetchError::Failing { retry_after_secs, status: 500, .. }) => Some(retry_after_secs),
            Err(e) => panic!("{e:?}"),
            Ok(()) => None,
        }
    }

    #[test]
    fn waits_grow_while_failing_and_end_on_success() {
        let mut f = Failing::default();
        let k = key("manifest v1");
        let mut now = Instant::now();
        assert_eq!(retry_after(&f, &k, now), None);
        let mut expected = vec![2, 4, 8, 16, 30, 30].into_iter();
        for _ in 0..6 {
            let wait = f.note(k.clone(), 500, "broken".into(), now);
            assert_eq!(wait.as_secs(), expected.next().unwrap());
            assert_eq!(retry_after(&f, &k, now), Some(wait.as_secs()));
            assert_eq!(retry_after(&f, &k, now + wait - Duration::from_millis(1)), Some(1));
            // Another object of the same source is not affected.
            assert_eq!(retry_after(&f, &key("manifest v2"), now), None);
            now += wait;
            assert_eq!(retry_after(&f, &k, now), None, "asked again once the wait is over");
        }
        // A failure noted while the wait runs (a request sent before) keeps the wait.
        let wait = f.note(k.clone(), 500, "broken".into(), now);
        assert_eq!(f.note(k.clone(), 500, "broken".into(), now + Duration::from_secs(1)), wait);
        f.forget(&k);
        assert_eq!(retry_after(&f, &k, now), None);
        assert_eq!(f.note(k.clone(), 500, "broken".into(), now), FIRST_WAIT, "forgotten: starts over");
    }

    #[test]
    fn the_map_is_bounded_and_evicts_the_oldest() {
        let mut f = Failing::default();
        let t0 = Instant::now();
        for i in 0..MAX_OBJECTS {
            f.note(key(&format!("blob {i}")), 500, String::new(), t0 + Duration::from_micros(i as u64));
        }
        assert_eq!(f.len(), MAX_OBJECTS);
        let later = t0 + Duration::from_micros(MAX_OBJECTS as u64);
        for i in 0..10 {
            f.note(key(&format!("new {i}")), 500, String::new(), later);
            assert_eq!(f.len(), MAX_OBJECTS);
        }
        for i in 0..10 {
            assert_eq!(retry_after(&f, &key(&format!("blob {i}")), later), None, "the oldest went first");
            assert!(retry_after(&f, &key(&format!("new {i}")), later).is_some());
        }
        assert!(retry_after(&f, &key("blob 10"), later).is_some());
        // Long-expired entries go all at once.
        let much_later = later + MAX_WAIT * 3;
        f.note(key("fresh"), 500, String::new(), much_later);
        assert_eq!(f.len(), 1);
    }
}
