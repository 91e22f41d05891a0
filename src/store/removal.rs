//! Taking content out of the image path (for `verify --repair` and `prune`). A removed
//! digest leaves memory first, then its removal is journaled (synced), then
//! its file is unlinked: the journal never names a file that is gone, and a
//! crash in between leaves only an orphan, a file no record names, which the
//! next `verify` finds. Tags that named a removed manifest go with it, so no
//! tag points at content the store does not hold (a tag left behind by a
//! crash is harmless: a tag whose digest has no record is a miss, fetched
//! upstream). Committed files are unlinked, never rewritten.
//!
//! [`Store::remove_many`] does the same for many digests at once (prune): up
//! to [`BATCH`] at a time leave memory together, their removal lines are
//! journaled with one sync, then their files are unlinked, and serving threads
//! drop their kept answers once per batch, not once per digest. Its unlinks
//! are not followed by a directory sync each: the journal line is what makes
//! the removal durable, and an unlink a crash undoes leaves an orphan (or a
//! tag naming nothing), as above.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{sync_parent, Record, Store, TagKey};
use crate::oci::Digest;

/// What [`Store::remove`] took away.
#[derive(Debug)]
pub struct Removal {
    /// The digest's record, if it had one.
    pub record: Option<Arc<Record>>,
    /// The tags that named it, removed with it.
    pub tags: Vec<TagKey>,
    /// Whether its file was there to unlink.
    pub file_unlinked: bool,
}

/// A file under `blobs/` that no record names: left by a crash between a
/// removal's journal line and its unlink, or put there by hand. Nothing
/// serves it.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub path: PathBuf,
    pub size: u64,
}

/// Directory levels under `blobs/` searched for orphans (the layout uses 2).
const MAX_DEPTH: usize = 8;

/// Digests [`Store::remove_many`] takes out together (one journal sync).
pub const BATCH: usize = 256;

impl Store {
    /// Removes `digest`: its record (journaled), the tags naming it and its
    /// file. The next request for it is a miss. Blocking: call off the reactors.
    /// On an error it is already gone from memory, so this process fetches it
    /// again rather than serve it.
    pub fn remove(&self, digest: &Digest) -> io::Result<Removal> {
        let _placing = self.placing(digest);
        let (record, tags) = self.forget(digest);
        self.removed();
        if let Some(record) = &record {
            self.journal.lock().append_removal(digest, record)?;
        }
        for key in &tags {
            unlink(&self.layout.tag(&key.registry, &key.repo, &key.tag))?;
        }
        let file_unlinked = unlink(&self.layout.blob(digest))?;
        Ok(Removal { record, tags, file_unlinked })
    }

    /// [`Store::remove`] for many digests, [`BATCH`] at a time (see the
    /// module): each digest's outcome, in order. Blocking.
    pub fn remove_many(&self, digests: &[Digest]) -> Vec<io::Result<Removal>> {
        let mut out = Vec::with_capacity(digests.len());
        for batch in digests.chunks(BATCH) {
            out.extend(self.remove_batch(batch));
        }
        out
    }

    fn remove_batch(&self, digests: &[Digest]) -> Vec<io::Result<Removal>> {
        // Every stripe the batch touches, in order (so two batches cannot deadlock).
        let mut stripes: Vec<usize> = digests.iter().map(|d| self.stripe(d)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let _placing: Vec<_> = stripes.iter().map(|&i| self.placing[i].lock()).collect();
        let forgotten: Vec<_> = digests.iter().map(|d| self.forget(d)).collect();
        self.removed();
        let lines: Vec<(&Digest, &Record)> =
            digests.iter().zip(&forgotten).filter_map(|(d, (r, _))| Some((d, r.as_deref()?))).collect();
        let journaled = self.journal.lock().append_removals(&lines);
        digests
            .iter()
            .zip(forgotten)
            .map(|(digest, (record, tags))| {
                if let Err(e) = &journaled {
                    return Err(io::Error::new(e.kind(), format!("cannot journal the removal: {e}")));
                }
                for key in &tags {
                    unlink_unsynced(&self.layout.tag(&key.registry, &key.repo, &key.tag))?;
                }
                let file_unlinked = unlink_unsynced(&self.layout.blob(digest))?;
                Ok(Removal { record, tags, file_unlinked })
            })
            .collect()
    }

    /// Takes `digest` out of memory: its record, its kept bytes, its pull
    /// time, and (a manifest) the tags naming it. Call with its stripe held.
    fn forget(&self, digest: &Digest) -> (Option<Arc<super::Record>>, Vec<TagKey>) {
        let record = self.records.write().remove(digest);
        self.count_removed(record.as_deref());
        self.pending.write().remove(digest);
        self.memory.remove(digest);
        self.pulled.forget(digest);
        // Only a manifest is tagged; look under the read lock, write only to remove.
        let manifest = record.as_ref().is_none_or(|r| r.kind == super::Kind::Manifest);
        let named = |tags: &std::collections::HashMap<TagKey, super::TagRecord>| -> Vec<TagKey> {
            tags.iter().filter(|(_, t)| &t.digest == digest).map(|(k, _)| k.clone()).collect()
        };
        let mut keys = if manifest { named(&self.tags.read()) } else { Vec::new() };
        if !keys.is_empty() {
            let mut tags = self.tags.write();
            keys = named(&tags);
            for key in &keys {
                tags.remove(key);
            }
        }
        (record, keys)
    }

    /// Removes tags (their records, then their files); returns which were there.
    pub fn remove_tags(&self, keys: &[TagKey]) -> Vec<io::Result<bool>> {
        if keys.is_empty() {
            return Vec::new();
        }
        let known: Vec<bool> = {
            let mut tags = self.tags.write();
            keys.iter().map(|k| tags.remove(k).is_some()).collect()
        };
        self.removed();
        keys.iter()
            .zip(known)
            .map(|(key, known)| unlink_unsynced(&self.layout.tag(&key.registry, &key.repo, &key.tag)).map(|_| known))
            .collect()
    }

    /// Removes one tag (its record and file); the manifest it named stays.
    /// Returns whether it was there.
    pub fn remove_tag(&self, key: &TagKey) -> io::Result<bool> {
        let known = self.tags.write().remove(key).is_some();
        self.removed();
        unlink(&self.layout.tag(&key.registry, &key.repo, &key.tag))?;
        Ok(known)
    }

    /// Every file under `blobs/` that no record names, sorted by path.
    pub fn orphans(&self) -> io::Result<Vec<Orphan>> {
        let mut out = Vec::new();
        self.find_orphans(&self.layout.blobs_dir(), 0, &mut out)?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn find_orphans(&self, dir: &Path, depth: usize, out: &mut Vec<Orphan>) -> io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                if depth < MAX_DEPTH {
                    self.find_orphans(&path, depth + 1, out)?;
                }
            } else if !self.is_recorded_file(&path) {
                out.push(Orphan { size: entry.metadata()?.len(), path });
            }
        }
        Ok(())
    }

    fn is_recorded_file(&self, path: &Path) -> bool {
        self.layout.digest_of_blob(path).is_some_and(|d| self.records.read().contains_key(&d))
    }

    /// Unlinks an orphan, unless a record names its file by now.
    pub fn remove_orphan(&self, orphan: &Orphan) -> io::Result<()> {
        if !orphan.path.starts_with(self.layout.blobs_dir()) || self.is_recorded_file(&orphan.path) {
            return Err(io::Error::other(format!("{} is not an orphan", orphan.path.display())));
        }
        unlink(&orphan.path).map(drop)
    }
}

/// Unlinks `path` and syncs its directory; `false` when it was already gone.
fn unlink(path: &Path) -> io::Result<bool> {
    if unlink_unsynced(path)? {
        sync_parent(path)?;
        return Ok(true);
    }
    Ok(false)
}

/// Unlinks `path`; `false` when it was already gone.
fn unlink_unsynced(path: &Path) -> io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::{MemoryLimits, StagedManifest, TagRecord, REMOVED};
    use super::*;
    use crate::oci::{media, Algorithm, MediaType};

    #[test]
    fn a_removed_manifest_takes_its_tags_and_stays_gone_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let body = Bytes::from_static(br#"{"schemaVersion":2}"#);
        let d = Digest::of(Algorithm::Sha256, &body);
        let key =
            TagKey { registry: "quay.io".parse().unwrap(), repo: "a".parse().unwrap(), tag: "v1".parse().unwrap() };
        {
            let store = Store::open(dir.path(), MemoryLimits::default()).unwrap();
            let tag = TagRecord {
                digest: d.clone(),
                media_type: MediaType::known(media::OCI_MANIFEST),
                fetched_at: 1,
                last_checked_at: 1,
            };
            let staged = StagedManifest {
                digest: d.clone(),
                media_type: MediaType::known(media::OCI_MANIFEST),
                body,
                source: "quay.io/a".into(),
                tag: Some((key.clone(), tag)),
            };
            store.stage_manifest(&staged);
            store.persist_manifest(&staged).unwrap();
            let stray = store.layout().blobs_dir().join("sha256/00/stray");
            std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
            std::fs::write(&stray, b"xyz").unwrap();
            let orphans = store.orphans().unwrap();
            assert_eq!(orphans.iter().map(|o| (o.path.clone(), o.size)).collect::<Vec<_>>(), vec![(stray.clone(), 3)]);

            let removal = store.remove(&d).unwrap();
            assert!(removal.record.is_some() && removal.file_unlinked);
            assert_eq!(removal.tags, vec![key.clone()]);
            assert!(store.manifest(&d).is_none() && store.tag(&key).is_none());
            assert!(!store.layout().blob(&d).exists());
            store.remove_orphan(&orphans[0]).unwrap();
            assert!(store.orphans().unwrap().is_empty());
        }
        let store = Store::open(dir.path(), MemoryLimits::default()).unwrap();
        assert!(store.record(&d).is_none(), "the removal was journaled");
        assert!(store.tag(&key).is_none(), "the tag file is gone");
        let again = store.remove(&d).unwrap();
        assert!(again.record.is_none() && !again.file_unlinked && again.tags.is_empty());
    }

    #[test]
    fn many_digests_are_removed_in_batches_with_their_tags_and_stay_gone_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut digests = Vec::new();
        let key =
            TagKey { registry: "quay.io".parse().unwrap(), repo: "a".parse().unwrap(), tag: "v1".parse().unwrap() };
        {
            let store = Store::open(dir.path(), MemoryLimits::default()).unwrap();
            for i in 0..(BATCH + 10) {
                let body = Bytes::from(format!("{{\"schemaVersion\":2,\"n\":{i}}}"));
                let d = Digest::of(Algorithm::Sha256, &body);
                let tag = (i == 7).then(|| {
                    let record = TagRecord {
                        digest: d.clone(),
                        media_type: MediaType::known(media::OCI_MANIFEST),
                        fetched_at: 1,
                        last_checked_at: 1,
                    };
                    (key.clone(), record)
                });
                let staged = StagedManifest {
                    digest: d.clone(),
                    media_type: MediaType::known(media::OCI_MANIFEST),
                    body,
                    source: "quay.io/a".into(),
                    tag,
                };
                store.stage_manifest(&staged);
                store.persist_manifest(&staged).unwrap();
                digests.push(d);
            }
            let kept = digests.pop().unwrap();
            let unknown = Digest::of(Algorithm::Sha256, b"never stored");
            digests.push(unknown.clone());
            let generation = store.generation();
            let removals = store.remove_many(&digests);
            assert_eq!(removals.len(), digests.len());
            let removals: Vec<Removal> = removals.into_iter().map(Result::unwrap).collect();
            assert!(removals[..BATCH + 9].iter().all(|r| r.record.is_some() && r.file_unlinked));
            assert!(removals[BATCH + 9].record.is_none() && !removals[BATCH + 9].file_unlinked, "unknown");
            assert_eq!(removals[7].tags, vec![key.clone()]);
            assert!(store.generation() / REMOVED - generation / REMOVED == 2, "serving threads told once per batch");
            assert!(store.tag(&key).is_none() && store.manifest(&digests[0]).is_none());
            assert!(store.manifest(&kept).is_some());
            assert_eq!(store.bytes(), store.record(&kept).unwrap().size);
            digests.pop();
            digests.push(kept);
        }
        let store = Store::open(dir.path(), MemoryLimits::default()).unwrap();
        let kept = digests.pop().unwrap();
        assert!(digests.iter().all(|d| store.record(d).is_none()), "the removals were journaled");
        assert!(store.record(&kept).is_some() && store.tag(&key).is_none());
    }
}
