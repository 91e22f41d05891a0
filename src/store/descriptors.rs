//! What stored manifests say about the blobs they reference, per source
//! (`registry/repository`): one upstream's manifest must not decide how
//! another upstream's blob of the same digest is judged or prefetched.
//!
//! This is a hint, not the cache: it comes from upstream data, so it is
//! bounded. Each map keeps two generations; when the current one is full it
//! becomes the previous one and the oldest is dropped, so what manifests
//! recently stored or read say is kept, and memory stays within
//! [`MAX_ENTRIES`] entries a map whatever upstreams send. A manifest read from
//! disk again restores its entries.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use crate::oci::{media, Digest};

/// Entries kept per map (both generations together).
pub const MAX_ENTRIES: usize = 200_000;
/// An image manifest with more blobs than this is not prefetched from.
pub const MAX_PREFETCH_BLOBS: usize = 256;

/// A map of at most `max` entries, in two generations.
struct TwoGenerations<K, V> {
    current: HashMap<K, V>,
    previous: HashMap<K, V>,
    max: usize,
}

impl<K: Eq + Hash, V> TwoGenerations<K, V> {
    fn new(max: usize) -> Self {
        TwoGenerations { current: HashMap::new(), previous: HashMap::new(), max }
    }

    fn get(&self, k: &K) -> Option<&V> {
        self.current.get(k).or_else(|| self.previous.get(k))
    }

    fn insert(&mut self, k: K, v: V) {
        if self.current.len() >= self.max / 2 {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(k, v);
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

pub struct Descriptors {
    /// Sizes promised by descriptors, to refuse a blob whose upstream
    /// Content-Length disagrees before hashing it.
    sizes: TwoGenerations<(Arc<str>, Digest), u64>,
    /// Blob → all blobs of an image manifest that references it (for prefetch).
    image_blobs: TwoGenerations<(Arc<str>, Digest), Arc<[Digest]>>,
}

impl Default for Descriptors {
    fn default() -> Self {
        Descriptors::with_max(MAX_ENTRIES)
    }
}

impl Descriptors {
    fn with_max(max: usize) -> Descriptors {
        Descriptors { sizes: TwoGenerations::new(max), image_blobs: TwoGenerations::new(max) }
    }

    pub fn size(&self, source: &str, digest: &Digest) -> Option<u64> {
        self.sizes.get(&(Arc::from(source), digest.clone())).copied()
    }

    pub fn image_blobs(&self, source: &str, digest: &Digest) -> Option<Arc<[Digest]>> {
        self.image_blobs.get(&(Arc::from(source), digest.clone())).cloned()
    }

    /// Remembers what the manifest `body` (fetched for `source`) references.
    pub fn remember(&mut self, source: &str, body: &[u8]) {
        let Ok(info) = media::inspect(body) else { return };
        let source: Arc<str> = Arc::from(source);
        if !info.is_index && info.references.len() <= MAX_PREFETCH_BLOBS {
            let blobs: Arc<[Digest]> = info.references.iter().map(|d| d.digest.clone()).collect();
            for d in blobs.iter() {
                self.image_blobs.insert((source.clone(), d.clone()), blobs.clone());
            }
        }
        for d in info.references {
            self.sizes.insert((source.clone(), d.digest), d.size);
        }
    }

    /// Entries held, both maps together.
    pub fn len(&self) -> usize {
        self.sizes.len() + self.image_blobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;

    fn manifest(layers: usize, seed: usize) -> (Vec<u8>, Vec<Digest>) {
        let digests: Vec<Digest> =
            (0..layers).map(|i| Digest::of(Algorithm::Sha256, format!("{seed}-{i}").as_bytes())).collect();
        let layers: Vec<_> =
            digests.iter().map(|d| serde_json::json!({"mediaType": "l", "digest": d.to_string(), "size": 7})).collect();
        (serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "layers": layers})).unwrap(), digests)
    }

    #[test]
    fn stays_bounded_whatever_manifests_arrive_and_keeps_the_recent_ones() {
        let mut d = Descriptors::with_max(1000);
        for seed in 0..50 {
            let (body, _) = manifest(100, seed);
            d.remember("quay.io/a", &body);
            assert!(d.sizes.len() <= 1000 && d.image_blobs.len() <= 1000, "{}", d.len());
        }
        let (body, digests) = manifest(100, 99);
        d.remember("quay.io/a", &body);
        assert_eq!(d.size("quay.io/a", &digests[3]), Some(7));
        assert_eq!(d.size("quay.io/other", &digests[3]), None, "per source");
        assert_eq!(d.image_blobs("quay.io/a", &digests[0]).map(|b| b.len()), Some(100));
    }

    #[test]
    fn a_huge_manifest_is_not_prefetched_from_and_its_sizes_stay_within_the_bound() {
        let mut d = Descriptors::with_max(10_000);
        let (body, digests) = manifest(25_000, 1);
        d.remember("quay.io/a", &body);
        assert_eq!(d.image_blobs("quay.io/a", &digests[0]), None);
        assert!(d.sizes.len() <= 10_000);
        assert_eq!(d.size("quay.io/a", &digests[24_999]), Some(7), "the latest entries are kept");
    }
}
