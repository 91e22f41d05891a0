//! Each serving thread's note of the manifests it answered, for their
//! last-pulled times. A note costs a lookup in this thread's own map (no lock,
//! no clock read: the time is the thread's coarse clock, in seconds, set by its
//! one-second tick); the tick hands the notes to the store in one batch.
//! A kept answer notes at most once per second (see `hot`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Duration;

use crate::oci::Digest;
use crate::store::Store;

/// How often a thread hands its notes over (and sets its clock).
pub const TICK: Duration = Duration::from_secs(1);
/// Distinct manifests noted between two ticks; past this, more are dropped
/// until the next tick (a thread cannot answer that many in a second anyway).
const MAX_NOTES: usize = 65_536;

pub struct Pulls {
    /// Unix seconds, as of the last tick.
    now: Cell<u64>,
    notes: RefCell<HashMap<Digest, u64>>,
}

impl Default for Pulls {
    fn default() -> Pulls {
        Pulls { now: Cell::new(crate::store::tags::now_secs()), notes: RefCell::default() }
    }
}

impl Pulls {
    /// The thread's coarse clock.
    pub fn now(&self) -> u64 {
        self.now.get()
    }

    /// Notes a pull of `digest` now.
    pub fn note(&self, digest: &Digest) {
        let now = self.now.get();
        let mut notes = self.notes.borrow_mut();
        if let Some(at) = notes.get_mut(digest) {
            *at = now;
        } else if notes.len() < MAX_NOTES {
            notes.insert(digest.clone(), now);
        }
    }

    /// Sets the clock and hands the notes to the store.
    pub fn tick(&self, store: &Store) {
        self.now.set(crate::store::tags::now_secs());
        let notes = std::mem::take(&mut *self.notes.borrow_mut());
        if !notes.is_empty() {
            store.note_pulled(notes);
        }
    }

    #[cfg(test)]
    pub fn noted(&self) -> Vec<(Digest, u64)> {
        self.notes.borrow().iter().map(|(d, t)| (d.clone(), *t)).collect()
    }
}
