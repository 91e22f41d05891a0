//! `MemoryCache`: manifests and small blobs held in memory within a byte
//! budget, so hot small objects are answered without touching a file. A hit
//! takes only the read side of a lock and sets the entry's "referenced" bit;
//! inserting past the budget evicts with the CLOCK (second-chance) policy:
//! entries referenced since the last sweep survive one more round.

use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use crate::oci::Digest;

struct Entry {
    bytes: Bytes,
    referenced: AtomicBool,
}

pub struct MemoryCache {
    budget: usize,
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<Digest, Entry>,
    bytes: usize,
}

impl MemoryCache {
    pub fn new(budget: usize) -> MemoryCache {
        MemoryCache { budget, state: RwLock::default() }
    }

    pub fn get(&self, digest: &Digest) -> Option<Bytes> {
        let state = self.state.read();
        let entry = state.entries.get(digest)?;
        // Only write when it changes: a hot entry's line stays shared between cores.
        if !entry.referenced.load(Ordering::Relaxed) {
            entry.referenced.store(true, Ordering::Relaxed);
        }
        Some(entry.bytes.clone())
    }

    /// Keeps `bytes` if they fit the budget at all, evicting others as needed.
    pub fn insert(&self, digest: Digest, bytes: Bytes) {
        if bytes.len() > self.budget {
            return;
        }
        let mut state = self.state.write();
        if state.entries.contains_key(&digest) {
            return;
        }
        state.bytes += bytes.len();
        state.entries.insert(digest.clone(), Entry { bytes, referenced: AtomicBool::new(false) });
        if state.bytes > self.budget {
            state.evict_to(self.budget, &digest);
        }
    }

    /// Forgets `digest` (its content left the store).
    pub fn remove(&self, digest: &Digest) {
        let mut state = self.state.write();
        if let Some(entry) = state.entries.remove(digest) {
            state.bytes -= entry.bytes.len();
        }
    }

    pub fn used(&self) -> usize {
        self.state.read().bytes
    }
}

impl State {
    /// Evicts down to `budget`, sparing `newest` (the entry whose insertion made room necessary).
    fn evict_to(&mut self, budget: usize, newest: &Digest) {
        // At most two sweeps: the first clears reference bits, the second finds them unset.
        for _ in 0..2 {
            let mut victims = Vec::new();
            let mut freed = 0;
            for (digest, entry) in &self.entries {
                if self.bytes - freed <= budget {
                    break;
                }
                if digest != newest && !entry.referenced.swap(false, Ordering::Relaxed) {
                    freed += entry.bytes.len();
                    victims.push(digest.clone());
                }
            }
            for d in victims {
                if let Some(e) = self.entries.remove(&d) {
                    self.bytes -= e.bytes.len();
                }
            }
            if self.bytes <= budget {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;

    fn d(i: u32) -> Digest {
        Digest::of(Algorithm::Sha256, &i.to_le_bytes())
    }

    #[test]
    fn stays_within_budget_and_keeps_referenced_entries() {
        let cache = MemoryCache::new(100);
        cache.insert(d(0), Bytes::from(vec![0; 40]));
        cache.insert(d(1), Bytes::from(vec![1; 40]));
        assert!(cache.get(&d(0)).is_some());
        cache.insert(d(2), Bytes::from(vec![2; 40]));
        assert!(cache.used() <= 100);
        assert!(cache.get(&d(0)).is_some(), "the referenced entry got a second chance");
        assert!(cache.get(&d(1)).is_none());
        assert!(cache.get(&d(2)).is_some());
        cache.insert(d(3), Bytes::from(vec![3; 101]));
        assert!(cache.get(&d(3)).is_none(), "larger than the whole budget");
    }
}
