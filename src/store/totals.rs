//! Running totals of what the store holds, by kind: bytes and objects of
//! committed manifests and blobs. Kept as records come and go (never by a
//! walk of the disk), so `pruneConfig.maxSize` and a metrics scrape read them
//! for the price of four atomic loads.

use std::sync::atomic::{AtomicU64, Ordering};

use super::records::{Kind, Record};

/// The totals, updated with relaxed atomics (each value is exact on its own;
/// a reader may see one kind's change before another's).
#[derive(Default)]
pub struct Totals {
    manifest_bytes: AtomicU64,
    manifest_count: AtomicU64,
    blob_bytes: AtomicU64,
    blob_count: AtomicU64,
}

/// One reading of [`Totals`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub manifest_bytes: u64,
    pub manifests: u64,
    pub blob_bytes: u64,
    pub blobs: u64,
}

impl Totals {
    fn of(&self, kind: Kind) -> (&AtomicU64, &AtomicU64) {
        match kind {
            Kind::Manifest => (&self.manifest_bytes, &self.manifest_count),
            Kind::Blob => (&self.blob_bytes, &self.blob_count),
        }
    }

    /// Counts a record that was added.
    pub fn add(&self, record: &Record) {
        let (bytes, count) = self.of(record.kind);
        bytes.fetch_add(record.size, Ordering::Relaxed);
        count.fetch_add(1, Ordering::Relaxed);
    }

    /// Uncounts a record that was removed.
    pub fn remove(&self, record: &Record) {
        let (bytes, count) = self.of(record.kind);
        let _ = bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(record.size)));
        let _ = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| Some(c.saturating_sub(1)));
    }

    /// Moves a record from blob to manifest (a blob found to be a manifest).
    pub fn upgrade(&self, blob: &Record) {
        self.remove(blob);
        self.add(&Record { kind: Kind::Manifest, ..blob.clone() });
    }

    /// Bytes of every committed object.
    pub fn bytes(&self) -> u64 {
        self.manifest_bytes.load(Ordering::Relaxed) + self.blob_bytes.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            manifest_bytes: self.manifest_bytes.load(Ordering::Relaxed),
            manifests: self.manifest_count.load(Ordering::Relaxed),
            blob_bytes: self.blob_bytes.load(Ordering::Relaxed),
            blobs: self.blob_count.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: Kind, size: u64) -> Record {
        Record { kind, media_type: None, size, sources: vec![], created: None }
    }

    #[test]
    fn totals_follow_adds_removals_and_upgrades() {
        let t = Totals::default();
        t.add(&record(Kind::Manifest, 10));
        t.add(&record(Kind::Blob, 100));
        t.add(&record(Kind::Blob, 7));
        assert_eq!(t.snapshot(), Snapshot { manifest_bytes: 10, manifests: 1, blob_bytes: 107, blobs: 2 });
        t.upgrade(&record(Kind::Blob, 7));
        assert_eq!(t.snapshot(), Snapshot { manifest_bytes: 17, manifests: 2, blob_bytes: 100, blobs: 1 });
        t.remove(&record(Kind::Blob, 100));
        t.remove(&record(Kind::Blob, 100));
        assert_eq!(t.snapshot(), Snapshot { manifest_bytes: 17, manifests: 2, blob_bytes: 0, blobs: 0 });
        assert_eq!(t.bytes(), 17);
    }
}
