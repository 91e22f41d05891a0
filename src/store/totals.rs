//! Running totals of what the store holds, by kind: bytes and objects of
//! committed manifests and blobs, and the `registry/repo` sources manifests
//! were fetched for. Kept as records come and go (never by a walk of the
//! disk), so `pruneConfig.maxSize` and a metrics scrape read them for the
//! price of a few atomic loads.

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
    /// Sources of manifest records: each is a `registry/repo@digest` the
    /// manifest is cached under.
    manifest_sources: AtomicU64,
}

/// One reading of [`Totals`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub manifest_bytes: u64,
    pub manifests: u64,
    pub blob_bytes: u64,
    pub blobs: u64,
    /// References cached manifests are kept under: one per tag
    /// (`registry/repo:tag`) and one per repository a manifest was fetched
    /// for (`registry/repo@digest`). What Go's `cached_manifest_count` counts
    /// (its in-memory map entries, by tag and by digest).
    pub manifest_references: u64,
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
        if record.kind == Kind::Manifest {
            self.manifest_sources.fetch_add(record.sources.len() as u64, Ordering::Relaxed);
        }
    }

    /// Counts a source added to a record of `kind`.
    pub fn add_source(&self, kind: Kind) {
        if kind == Kind::Manifest {
            self.manifest_sources.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Uncounts a record that was removed.
    pub fn remove(&self, record: &Record) {
        let (bytes, count) = self.of(record.kind);
        let _ = bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(record.size)));
        let _ = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| Some(c.saturating_sub(1)));
        if record.kind == Kind::Manifest {
            let sources = record.sources.len() as u64;
            let _ = self
                .manifest_sources
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| Some(s.saturating_sub(sources)));
        }
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

    /// The totals, with the store's `tags` (tag records) counted as references.
    pub fn snapshot(&self, tags: usize) -> Snapshot {
        Snapshot {
            manifest_bytes: self.manifest_bytes.load(Ordering::Relaxed),
            manifests: self.manifest_count.load(Ordering::Relaxed),
            blob_bytes: self.blob_bytes.load(Ordering::Relaxed),
            blobs: self.blob_count.load(Ordering::Relaxed),
            manifest_references: self.manifest_sources.load(Ordering::Relaxed) + tags as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: Kind, size: u64) -> Record {
        Record { kind, media_type: None, size, sources: vec![], created: None }
    }

    fn snapshot(manifest_bytes: u64, manifests: u64, blob_bytes: u64, blobs: u64, refs: u64) -> Snapshot {
        Snapshot { manifest_bytes, manifests, blob_bytes, blobs, manifest_references: refs }
    }

    #[test]
    fn totals_follow_adds_removals_and_upgrades() {
        let t = Totals::default();
        t.add(&record(Kind::Manifest, 10));
        t.add(&record(Kind::Blob, 100));
        t.add(&record(Kind::Blob, 7));
        assert_eq!(t.snapshot(0), snapshot(10, 1, 107, 2, 0));
        t.upgrade(&record(Kind::Blob, 7));
        assert_eq!(t.snapshot(0), snapshot(17, 2, 100, 1, 0));
        t.remove(&record(Kind::Blob, 100));
        t.remove(&record(Kind::Blob, 100));
        assert_eq!(t.snapshot(0), snapshot(17, 2, 0, 0, 0));
        assert_eq!(t.bytes(), 17);
    }

    #[test]
    fn manifest_references_are_tags_and_manifest_sources() {
        let t = Totals::default();
        let sourced = |kind, sources: &[&str]| Record {
            sources: sources.iter().map(|s| s.to_string()).collect(),
            ..record(kind, 1)
        };
        t.add(&sourced(Kind::Manifest, &["quay.io/a", "quay.io/b"]));
        t.add(&sourced(Kind::Blob, &["quay.io/a"]));
        assert_eq!(t.snapshot(3).manifest_references, 5, "3 tags, 2 sources; a blob's are not counted");
        t.add_source(Kind::Manifest);
        t.add_source(Kind::Blob);
        assert_eq!(t.snapshot(0).manifest_references, 3);
        t.upgrade(&sourced(Kind::Blob, &["quay.io/a"]));
        assert_eq!(t.snapshot(0).manifest_references, 4, "a blob found to be a manifest brings its sources");
        t.remove(&sourced(Kind::Manifest, &["quay.io/a", "quay.io/b", "quay.io/c"]));
        assert_eq!(t.snapshot(0).manifest_references, 1);
    }
}
