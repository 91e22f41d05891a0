//! Single flight: one fetch per key in flight, whatever the fan-out; every
//! requester of that key waits for the same answer. The table is bounded (a
//! request past [`Flights`]' limit is refused as busy at once), and a flight
//! always lands: should its task end without an answer (a panic), dropping its
//! [`Flight`] answers every waiter with an error, so none waits forever.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{FetchError, Reply};

pub(crate) struct Flights<K, T> {
    waiting: Mutex<HashMap<K, Vec<Reply<T>>>>,
    /// Distinct keys in flight at most.
    max: usize,
    /// What is fetched, for messages ("manifest fetches").
    what: &'static str,
}

/// The lead of one flight: the requester that runs the fetch.
pub(crate) struct Flight<K: Eq + Hash, T: Clone> {
    flights: Arc<Flights<K, T>>,
    key: K,
    result: Option<Result<T, FetchError>>,
}

impl<K: Eq + Hash + Clone, T: Clone> Flights<K, T> {
    pub fn new(max: usize, what: &'static str) -> Arc<Flights<K, T>> {
        Arc::new(Flights { waiting: Mutex::new(HashMap::new()), max, what })
    }

    /// Joins the flight of `key`, or starts it: `Some` means the caller leads
    /// and must run the fetch, then [`Flight::land`] its result.
    pub fn join(self: &Arc<Self>, key: K, reply: Reply<T>) -> Option<Flight<K, T>> {
        self.join_with(key, reply, |reply| reply)
    }

    /// [`Flights::join`]; a caller that joins a flight already in the air (a
    /// coalesced request) waits on the reply `on_join` makes of its own.
    pub fn join_with(
        self: &Arc<Self>,
        key: K,
        reply: Reply<T>,
        on_join: impl FnOnce(Reply<T>) -> Reply<T>,
    ) -> Option<Flight<K, T>> {
        let mut waiting = self.waiting.lock();
        if let Some(list) = waiting.get_mut(&key) {
            list.push(on_join(reply));
            return None;
        }
        if waiting.len() >= self.max {
            let _ = reply
                .send(Err(FetchError::Busy(format!("{} {} are in flight; try again shortly", self.max, self.what))));
            return None;
        }
        waiting.insert(key.clone(), vec![reply]);
        Some(Flight { flights: self.clone(), key, result: None })
    }

    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.waiting.lock().len()
    }
}

impl<K: Eq + Hash, T: Clone> Flight<K, T> {
    pub fn key(&self) -> &K {
        &self.key
    }

    /// Answers every waiter with `result`.
    pub fn land(mut self, result: Result<T, FetchError>) {
        self.result = Some(result);
    }
}

impl<K: Eq + Hash, T: Clone> Drop for Flight<K, T> {
    fn drop(&mut self) {
        let waiters = self.flights.waiting.lock().remove(&self.key).unwrap_or_default();
        let result = self.result.take().unwrap_or_else(|| {
            tracing::error!(what = self.flights.what, "a fetch ended without an answer");
            Err(FetchError::Internal(format!("one of the {} ended without an answer", self.flights.what)))
        });
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[test]
    fn one_lead_per_key_every_waiter_answered_and_a_bound() {
        let flights: Arc<Flights<u32, u32>> = Flights::new(2, "tests");
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let lead = flights.join(7, tx1).expect("first requester leads");
        assert!(flights.join(7, tx2).is_none(), "second requester waits");
        let (tx3, _rx3) = oneshot::channel();
        let other = flights.join(8, tx3).expect("another key leads its own flight");
        let (tx4, mut rx4) = oneshot::channel();
        assert!(flights.join(9, tx4).is_none());
        assert!(matches!(rx4.try_recv(), Ok(Err(FetchError::Busy(_)))), "past the bound: busy at once");
        lead.land(Ok(42));
        assert_eq!(rx1.try_recv().unwrap(), Ok(42));
        assert_eq!(rx2.try_recv().unwrap(), Ok(42));
        assert_eq!(flights.in_flight(), 1);
        drop(other);
        assert_eq!(flights.in_flight(), 0);
    }

    #[test]
    fn a_lead_dropped_without_landing_answers_with_an_error() {
        let flights: Arc<Flights<u32, u32>> = Flights::new(8, "tests");
        let (tx, mut rx) = oneshot::channel();
        let lead = flights.join(1, tx).unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _lead = lead;
            panic!("injected");
        }));
        assert!(panicked.is_err());
        assert!(matches!(rx.try_recv(), Ok(Err(FetchError::Internal(_)))));
        assert_eq!(flights.in_flight(), 0);
    }
}
