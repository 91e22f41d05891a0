//! `Store`: the sole owner of the image path. It holds the exclusive lock,
//! indexes what is committed (digest records and tags, in memory, shared by
//! every thread behind read-mostly locks), keeps manifest bytes in memory, and
//! commits new content atomically: verified, fsynced, renamed into `blobs/`,
//! then journaled. Committed files are never rewritten in place; content found
//! damaged is removed (see `removal`).

pub mod access;
pub mod catalog;
pub mod descriptors;
pub mod layout;
pub mod memory;
pub mod pagecache;
pub mod peek;
pub mod pins;
pub mod records;
pub mod removal;
pub mod space;
pub mod tags;
pub mod totals;
pub mod writer;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use bytes::Bytes;

use crate::oci::{media, Digest, MediaType};
pub use layout::Layout;
pub use records::{Kind, Record};
pub use removal::{Orphan, Removal};
pub use tags::{TagKey, TagRecord};
pub use writer::BlobWriter;

pub struct Store {
    layout: Layout,
    records: RwLock<HashMap<Digest, Arc<Record>>>,
    tags: RwLock<HashMap<TagKey, TagRecord>>,
    /// Manifests staged but not yet on disk: served from here until they are.
    pending: RwLock<HashMap<Digest, (Bytes, MediaType)>>,
    /// Manifest bodies and small blobs, within a byte budget.
    memory: memory::MemoryCache,
    /// Blobs up to this size are served from `memory`.
    memory_blob_max: u64,
    /// What stored manifests say about the blobs they reference (bounded).
    descriptors: RwLock<descriptors::Descriptors>,
    journal: Mutex<records::Journal>,
    temp_counter: AtomicU64,
    /// Bumped after every change that can alter what a tag or a digest
    /// answers (a tag written, anything removed); serving threads drop the
    /// answers they keep that went through a tag when it moves. A removal
    /// adds [`REMOVED`], so they drop every kept answer then.
    generation: AtomicU64,
    /// When each manifest was last pulled.
    pulled: access::AccessTimes,
    /// Held while a digest's file is placed (commit) or taken away (removal),
    /// by stripes of digests: a removal never unlinks a file committed again
    /// meanwhile, whose record would then name a file that is gone.
    placing: [Mutex<()>; 64],
    /// Bytes and objects committed, by kind (the records' sizes), kept as they change.
    totals: totals::Totals,
    /// Past this many bytes a commit wakes [`Store::over_high_watermark`] (`pruneConfig.maxSize`).
    high_watermark: AtomicU64,
    over_high: tokio::sync::Notify,
    _lock: File,
}

/// How much the store may keep in memory.
#[derive(Debug, Clone, Copy)]
pub struct MemoryLimits {
    /// Bytes of manifests and small blobs held in memory.
    pub budget: usize,
    /// Blobs up to this size are served from memory.
    pub blob_max: u64,
}

impl Default for MemoryLimits {
    fn default() -> MemoryLimits {
        MemoryLimits { budget: 32 * 1024 * 1024, blob_max: 64 * 1024 }
    }
}

/// A verified manifest on its way to disk.
pub struct StagedManifest {
    pub digest: Digest,
    pub media_type: MediaType,
    pub body: Bytes,
    /// `registry/repository` it was fetched for.
    pub source: String,
    /// The tag that named it, when fetched by tag.
    pub tag: Option<(TagKey, TagRecord)>,
}

impl StagedManifest {
    fn record(&self) -> Record {
        Record {
            kind: Kind::Manifest,
            media_type: Some(self.media_type.clone()),
            size: self.body.len() as u64,
            sources: vec![],
            created: Some(tags::now_secs()),
        }
    }
}

/// Where a committed manifest's bytes are.
pub enum InMemory {
    Found(Bytes, MediaType),
    /// Committed, to be read from its file.
    OnDisk,
    /// Not a committed manifest.
    Absent,
}

/// A committed blob, ready to serve.
pub struct CommittedBlob {
    pub size: u64,
    /// The whole blob, when it is small enough to be kept in memory and is.
    pub bytes: Option<Bytes>,
    /// Small enough to be kept in memory, but not there yet.
    pub small: bool,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("image path {path} is in use by another ociregistry process{}", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked { path: PathBuf, pid: Option<u32> },
    #[error("image path {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl Store {
    /// Opens (creating if needed) the image path, takes its exclusive lock,
    /// removes temp files left by a dead owner and loads the indexes.
    pub fn open(root: &Path, limits: MemoryLimits) -> Result<Store, OpenError> {
        let layout = Layout::new(root);
        let io_err = |source| OpenError::Io { path: root.to_path_buf(), source };
        for dir in [layout.blobs_dir(), layout.index_dir(), layout.tags_dir(), layout.tmp_dir()] {
            std::fs::create_dir_all(&dir).map_err(io_err)?;
        }
        let lock = take_lock(&layout.lock_file()).map_err(|e| match e {
            LockError::Held(pid) => OpenError::Locked { path: root.to_path_buf(), pid },
            LockError::Io(source) => OpenError::Io { path: root.to_path_buf(), source },
        })?;
        let removed = clear_dir(&layout.tmp_dir()).map_err(io_err)?;
        if removed > 0 {
            tracing::info!(removed, "removed temp files of an earlier process");
        }
        let loaded = records::load(&layout.records_journal()).map_err(io_err)?;
        if loaded.torn_bytes > 0 {
            tracing::warn!(
                bytes = loaded.torn_bytes,
                "the records journal ended in a torn line (a crash mid-append); cut it off"
            );
        }
        if loaded.skipped > 0 {
            tracing::warn!(skipped = loaded.skipped, "skipped unreadable lines in the records journal");
        }
        let records: HashMap<_, _> = loaded.records.into_iter().map(|(d, r)| (d, Arc::new(r))).collect();
        let tags: HashMap<_, _> = tags::load_all(&layout.tags_dir()).map_err(io_err)?.into_iter().collect();
        let journal = records::Journal::open(&layout.records_journal()).map_err(io_err)?;
        let mut pulled = access::load(&layout.pulled_file()).map_err(io_err)?;
        pulled.retain(|d, _| records.get(d).is_some_and(|r| r.kind == Kind::Manifest));
        tracing::info!(digests = records.len(), tags = tags.len(), path = %root.display(), "cache indexed");
        let totals = totals::Totals::default();
        records.values().for_each(|r| totals.add(r));
        Ok(Store {
            layout,
            records: RwLock::new(records),
            tags: RwLock::new(tags),
            pending: RwLock::default(),
            memory: memory::MemoryCache::new(limits.budget),
            memory_blob_max: limits.blob_max,
            descriptors: RwLock::default(),
            journal: Mutex::new(journal),
            temp_counter: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            pulled: access::AccessTimes::new(pulled),
            placing: std::array::from_fn(|_| Mutex::new(())),
            totals,
            high_watermark: AtomicU64::new(u64::MAX),
            over_high: tokio::sync::Notify::new(),
            _lock: lock,
        })
    }

    /// Bytes of every committed object, from a running total (no walk).
    pub fn bytes(&self) -> u64 {
        self.totals.bytes()
    }

    /// Bytes and objects committed, by kind, and the references manifests
    /// are cached under, from running totals (no walk).
    pub fn totals(&self) -> totals::Snapshot {
        self.totals.snapshot(self.tags.read().len())
    }

    /// Sets the size past which commits wake [`Store::over_high_watermark`];
    /// wakes it now if the cache is over already.
    pub fn set_high_watermark(&self, high: u64) {
        self.high_watermark.store(high, Ordering::Relaxed);
        self.check_high_watermark();
    }

    /// Resolves once a commit took the cache over the high watermark (since
    /// the last time it resolved: a wake-up is never lost).
    pub async fn over_high_watermark(&self) {
        self.over_high.notified().await
    }

    fn check_high_watermark(&self) {
        if self.bytes() > self.high_watermark.load(Ordering::Relaxed) {
            self.over_high.notify_one();
        }
    }

    fn count_removed(&self, record: Option<&Record>) {
        if let Some(r) = record {
            self.totals.remove(r);
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn record(&self, digest: &Digest) -> Option<Arc<Record>> {
        self.records.read().get(digest).cloned()
    }

    /// Every record, as of now, in no particular order.
    pub fn records(&self) -> Vec<(Digest, Arc<Record>)> {
        self.records.read().iter().map(|(d, r)| (d.clone(), r.clone())).collect()
    }

    pub fn tag(&self, key: &TagKey) -> Option<TagRecord> {
        self.tags.read().get(key).cloned()
    }

    /// Every cached tag of one repository, sorted.
    pub fn tags_of(&self, registry: &crate::oci::RegistryName, repo: &crate::oci::RepoName) -> Vec<String> {
        let mut out: Vec<String> = self
            .tags
            .read()
            .keys()
            .filter(|k| &k.registry == registry && &k.repo == repo)
            .map(|k| k.tag.as_str().to_string())
            .collect();
        out.sort();
        out
    }

    /// Every cached tag, as of now, in no particular order.
    pub fn all_tags(&self) -> Vec<(TagKey, TagRecord)> {
        self.tags.read().iter().map(|(k, r)| (k.clone(), r.clone())).collect()
    }

    /// The size a manifest fetched for `source` promises for `digest`.
    pub fn expected_size(&self, source: &str, digest: &Digest) -> Option<u64> {
        self.descriptors.read().size(source, digest)
    }

    /// Every blob (config and layers) of an image manifest that references `digest`.
    pub fn image_blobs(&self, source: &str, digest: &Digest) -> Option<Arc<[Digest]>> {
        self.descriptors.read().image_blobs(source, digest)
    }

    /// A committed manifest's bytes and media type: from memory, else read from
    /// disk (a small file, usually in the page cache) and checked once more.
    pub fn manifest(&self, digest: &Digest) -> Option<(Bytes, MediaType)> {
        match self.manifest_in_memory(digest) {
            InMemory::Found(bytes, media_type) => Some((bytes, media_type)),
            InMemory::Absent => None,
            InMemory::OnDisk => self.manifest_from_disk(digest),
        }
    }

    /// A committed manifest without touching the disk: a serving thread asks
    /// this, and has [`Store::manifest`] run elsewhere when it is `OnDisk`.
    pub fn manifest_in_memory(&self, digest: &Digest) -> InMemory {
        let Some(record) = self.record(digest).filter(|r| r.kind == Kind::Manifest) else { return InMemory::Absent };
        let media_type = record.media_type.clone().unwrap_or_else(|| MediaType::known(media::OCI_MANIFEST));
        if let Some(bytes) = self.memory.get(digest) {
            return InMemory::Found(bytes, media_type);
        }
        if let Some((bytes, _)) = self.pending.read().get(digest) {
            return InMemory::Found(bytes.clone(), media_type);
        }
        InMemory::OnDisk
    }

    /// A committed manifest's bytes, checked against its digest, without
    /// keeping them in memory: for a pass over every manifest (the admin
    /// lists), which must not push the served ones out. Blocking when the
    /// manifest is not in memory; `None` when it is not committed, its file
    /// cannot be read, or its file does not match its digest (logged).
    pub fn manifest_unkept(&self, digest: &Digest) -> Option<Bytes> {
        match self.manifest_in_memory(digest) {
            InMemory::Found(bytes, _) => Some(bytes),
            InMemory::Absent => None,
            InMemory::OnDisk => self.read_manifest_file(digest),
        }
    }

    /// A manifest's file, checked against its digest.
    fn read_manifest_file(&self, digest: &Digest) -> Option<Bytes> {
        let bytes = Bytes::from(std::fs::read(self.layout.blob(digest)).ok()?);
        if Digest::of(digest.algorithm(), &bytes) != *digest {
            tracing::error!(%digest, "stored manifest does not match its digest; treating as uncached");
            return None;
        }
        Some(bytes)
    }

    fn manifest_from_disk(&self, digest: &Digest) -> Option<(Bytes, MediaType)> {
        let record = self.record(digest).filter(|r| r.kind == Kind::Manifest)?;
        let media_type = record.media_type.clone().unwrap_or_else(|| MediaType::known(media::OCI_MANIFEST));
        let bytes = self.read_manifest_file(digest)?;
        for source in &record.sources {
            self.remember_descriptors(source, &bytes);
        }
        self.memory.insert(digest.clone(), bytes.clone());
        Some((bytes, media_type))
    }

    /// A committed digest as a blob, without touching the disk: its size, and
    /// either its bytes (small blobs in memory) or the path of its file. A
    /// small blob not in memory yet has `small: true`; the caller reads it in
    /// with [`Store::read_small_blob`] off its serving thread.
    pub fn blob(&self, digest: &Digest) -> Option<CommittedBlob> {
        let record = self.record(digest)?;
        let path = self.layout.blob(digest);
        let small = record.size <= self.memory_blob_max;
        let bytes = if small { self.memory.get(digest) } else { None };
        Some(CommittedBlob { size: record.size, small: small && bytes.is_none(), bytes, path })
    }

    /// Reads a small committed blob into memory (blocking: call off the
    /// serving threads) and returns it; `None` when it is not committed or its
    /// file does not have the recorded size.
    pub fn read_small_blob(&self, digest: &Digest) -> Option<Bytes> {
        let record = self.record(digest)?;
        let bytes = Bytes::from(std::fs::read(self.layout.blob(digest)).ok()?);
        if bytes.len() as u64 != record.size {
            tracing::error!(%digest, "stored blob has the wrong size; treating as uncached");
            return None;
        }
        if record.size <= self.memory_blob_max {
            self.memory.insert(digest.clone(), bytes.clone());
        }
        Some(bytes)
    }

    /// Makes a verified manifest (and the tag that named it) servable at once,
    /// in memory only; [`Store::persist_manifest`] then writes both durably.
    /// Clients are not kept waiting for the disk: a manifest they got before a
    /// crash is simply fetched again after it.
    pub fn stage_manifest(&self, staged: &StagedManifest) {
        self.stage_record(staged, staged.record());
    }

    fn stage_record(&self, staged: &StagedManifest, record: Record) {
        self.remember_descriptors(&staged.source, &staged.body);
        self.memory.insert(staged.digest.clone(), staged.body.clone());
        self.pending.write().insert(staged.digest.clone(), (staged.body.clone(), staged.media_type.clone()));
        self.insert_record(&staged.digest, record, &staged.source);
        if let Some((key, record)) = &staged.tag {
            let mut tags = self.tags.write();
            crate::faults::panic_point("manifest", key.tag.as_str());
            tags.insert(key.clone(), record.clone());
            drop(tags);
            self.changed();
        }
    }

    /// Whether a staged manifest is still on its way to disk (see
    /// [`Store::persist_manifest`]); once not, it is committed if it has a record.
    pub fn is_pending(&self, digest: &Digest) -> bool {
        self.pending.read().contains_key(digest)
    }

    /// The current generation (see the field); read before looking anything up.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Taken around placing or removing `digest`'s file (see the field).
    pub fn placing(&self, digest: &Digest) -> parking_lot::MutexGuard<'_, ()> {
        self.placing[self.stripe(digest)].lock()
    }

    fn stripe(&self, digest: &Digest) -> usize {
        u8::from_str_radix(&digest.hex()[..2], 16).unwrap_or(0) as usize % self.placing.len()
    }

    /// Something was removed: serving threads drop every kept answer.
    fn removed(&self) {
        self.generation.fetch_add(REMOVED, Ordering::Release);
    }

    /// Merges a serving thread's batch of manifest pulls (digest, unix seconds).
    pub fn note_pulled(&self, batch: impl IntoIterator<Item = (Digest, u64)>) {
        let records = self.records.read();
        self.pulled.note(batch, |d| records.get(d).is_some_and(|r| r.kind == Kind::Manifest));
    }

    /// When each manifest was last pulled (unix seconds), as of now.
    pub fn pulled_times(&self) -> HashMap<Digest, u64> {
        self.pulled.snapshot()
    }

    /// Writes the last-pulled times to `index/pulled` if they changed (blocking).
    pub fn flush_pulled(&self) -> io::Result<()> {
        let path = self.layout.pulled_file();
        let tmp = self.layout.temp_index("pulled", self.temp_counter.fetch_add(1, Ordering::Relaxed));
        self.pulled.flush(&path, &tmp)
    }

    /// What the catalog is built from, as of now.
    pub fn view(&self) -> catalog::View {
        catalog::View {
            records: self.records.read().clone(),
            tags: self.tags.read().iter().map(|(k, t)| (k.clone(), t.clone())).collect(),
            pulled: self.pulled.snapshot(),
        }
    }

    /// The images the cache holds (reads manifests not in memory from disk: blocking).
    pub fn catalog(&self) -> Vec<catalog::Image> {
        catalog::build(&self.view(), |d| self.manifest(d).map(|(b, _)| b), |d| modified(&self.layout.blob(d)))
    }

    /// Writes a staged manifest, its record and its tag to disk (blocking: call
    /// off the reactors). On failure the manifest is forgotten, to be fetched again.
    pub fn persist_manifest(&self, staged: &StagedManifest) -> io::Result<()> {
        self.persist_record(staged, &staged.record())
    }

    /// Stages and persists a manifest first fetched at `created` (unix
    /// seconds) by an earlier cache: a migrated manifest keeps its age.
    pub fn commit_dated_manifest(&self, staged: &StagedManifest, created: u64) -> io::Result<()> {
        let record = Record { created: Some(created), ..staged.record() };
        self.stage_record(staged, record.clone());
        self.persist_record(staged, &record)
    }

    fn persist_record(&self, staged: &StagedManifest, record: &Record) -> io::Result<()> {
        let _placing = self.placing(&staged.digest);
        let written = self.write_staged(staged, record);
        self.pending.write().remove(&staged.digest);
        if written.is_err() {
            let removed = self.records.write().remove(&staged.digest);
            self.count_removed(removed.as_deref());
            if let Some((key, _)) = &staged.tag {
                self.tags.write().remove(key);
            }
            self.changed();
        }
        written
    }

    fn write_staged(&self, staged: &StagedManifest, record: &Record) -> io::Result<()> {
        let path = self.layout.blob(&staged.digest);
        if !path.exists() {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            write_atomically(&path, &self.temp_path(&staged.digest), &staged.body)?;
        }
        self.journal.lock().append(&staged.digest, record, &staged.source)?;
        if let Some((key, record)) = &staged.tag {
            let tag_path = self.layout.tag(&key.registry, &key.repo, &key.tag);
            tags::write(&tag_path, &self.temp_path(&record.digest), record)?;
        }
        Ok(())
    }

    /// Notes, in memory, that the upstream confirmed at `at` (Unix seconds)
    /// that `key` still names `digest`; false when the tag names something
    /// else by now. [`Store::write_tag`] makes it durable.
    pub fn tag_checked(&self, key: &TagKey, digest: &Digest, at: u64) -> bool {
        match self.tags.write().get_mut(key) {
            Some(r) if &r.digest == digest => {
                r.last_checked_at = r.last_checked_at.max(at);
                true
            }
            _ => false,
        }
    }

    /// Writes the tag's record as it is in memory now to its file (blocking).
    pub fn write_tag(&self, key: &TagKey) -> io::Result<()> {
        let Some(record) = self.tag(key) else { return Ok(()) };
        let path = self.layout.tag(&key.registry, &key.repo, &key.tag);
        tags::write(&path, &self.temp_path(&record.digest), &record)
    }

    /// Commits a file that already holds the verified bytes of `digest`
    /// (`size` of them) and is on the image path's filesystem: fsync, rename
    /// into `blobs/`, journal the blob record for `source` (empty: none
    /// known). The file is gone from `path` once this returns `Ok`. Blocking.
    pub fn commit_verified_file(&self, path: &Path, digest: &Digest, size: u64, source: &str) -> io::Result<()> {
        File::open(path)?.sync_all()?;
        let target = self.layout.blob(digest);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        {
            let _placing = self.placing(digest);
            std::fs::rename(path, &target)?;
        }
        sync_parent(&target)?;
        sync_parent(path)?;
        crate::faults::panic_point("migrate", &format!("blobs/{}", digest.hex()));
        let record =
            Record { kind: Kind::Blob, media_type: None, size, sources: vec![], created: Some(tags::now_secs()) };
        self.add_record(digest, record, source)
    }

    /// Records a committed digest and the source it was fetched for, in memory and in the journal.
    pub fn add_record(&self, digest: &Digest, record: Record, source: &str) -> io::Result<()> {
        if self.insert_record(digest, record.clone(), source) {
            self.journal.lock().append(digest, &record, source)?;
        }
        Ok(())
    }

    /// Adds the record (or its source, or upgrades a blob to a manifest) in
    /// memory; returns whether anything changed.
    fn insert_record(&self, digest: &Digest, record: Record, source: &str) -> bool {
        {
            let records = self.records.read();
            let known = records.get(digest);
            if known.is_some_and(|r| r.sources.iter().any(|s| s == source) && !r.upgraded_by(&record)) {
                return false;
            }
        }
        let mut records = self.records.write();
        let mut added = false;
        let entry = records.entry(digest.clone()).or_insert_with(|| {
            added = true;
            Arc::new(record.clone())
        });
        if added {
            self.totals.add(&record);
        }
        if entry.upgraded_by(&record) {
            self.totals.upgrade(entry);
            let e = Arc::make_mut(entry);
            e.kind = Kind::Manifest;
            e.media_type = record.media_type;
        }
        // An empty source (a blob no known image references) is not one, as the journal reads it back.
        if !source.is_empty() && !entry.sources.iter().any(|s| s == source) {
            Arc::make_mut(entry).sources.push(source.to_string());
            self.totals.add_source(entry.kind);
        }
        drop(records);
        if added {
            self.check_high_watermark();
        }
        true
    }

    /// A fresh, unique temp path for `digest`.
    pub fn temp_path(&self, digest: &Digest) -> PathBuf {
        self.layout.temp(digest, self.temp_counter.fetch_add(1, Ordering::Relaxed))
    }

    fn remember_descriptors(&self, source: &str, body: &[u8]) {
        self.descriptors.write().remember(source, body);
    }
}

/// What a removal adds to the store's generation: a serving thread that sees
/// the upper half change drops every kept answer, not only those through tags.
pub const REMOVED: u64 = 1 << 32;

/// A file's modification time in unix seconds.
pub fn modified(path: &Path) -> Option<u64> {
    let mtime = std::fs::metadata(path).ok()?.modified().ok()?;
    mtime.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Writes `bytes` to `tmp`, fsyncs, renames to `path` and fsyncs the directory.
pub fn write_atomically(path: &Path, tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(tmp)?;
    let result = f.write_all(bytes).and_then(|_| f.sync_all()).and_then(|_| std::fs::rename(tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result?;
    sync_parent(path)
}

pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

enum LockError {
    Held(Option<u32>),
    Io(io::Error),
}

fn take_lock(path: &Path) -> Result<File, LockError> {
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(LockError::Io)?;
    // SAFETY: flock on a valid, owned fd.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let pid = std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok());
            return Err(LockError::Held(pid));
        }
        return Err(LockError::Io(err));
    }
    file.set_len(0).map_err(LockError::Io)?;
    write!(file, "{}", std::process::id()).map_err(LockError::Io)?;
    Ok(file)
}

fn clear_dir(dir: &Path) -> io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;

    #[test]
    fn second_owner_is_refused_and_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let body = Bytes::from_static(br#"{"schemaVersion":2}"#);
        let d = Digest::of(Algorithm::Sha256, &body);
        {
            let store = Store::open(dir.path(), MemoryLimits::default()).unwrap();
            assert!(matches!(
                Store::open(dir.path(), MemoryLimits::default()),
                Err(OpenError::Locked { pid: Some(_), .. })
            ));
            let key =
                TagKey { registry: "quay.io".parse().unwrap(), repo: "a".parse().unwrap(), tag: "v1".parse().unwrap() };
            let rec = TagRecord {
                digest: d.clone(),
                media_type: MediaType::known(media::OCI_MANIFEST),
                fetched_at: 1,
                last_checked_at: 2,
            };
            let staged = StagedManifest {
                digest: d.clone(),
                media_type: MediaType::known(media::OCI_MANIFEST),
                body: body.clone(),
                source: "quay.io/a".into(),
                tag: Some((key, rec)),
            };
            store.stage_manifest(&staged);
            assert_eq!(store.manifest(&d).unwrap().0, body, "served before it is on disk");
            store.persist_manifest(&staged).unwrap();
            std::fs::write(store.temp_path(&d), b"partial").unwrap();
        }
        let store = Store::open(dir.path(), MemoryLimits::default()).unwrap();
        assert_eq!(std::fs::read_dir(store.layout().tmp_dir()).unwrap().count(), 0);
        let (bytes, mt) = store.manifest(&d).unwrap();
        assert_eq!((bytes, mt.as_str()), (body, media::OCI_MANIFEST));
        assert_eq!(store.tags_of(&"quay.io".parse().unwrap(), &"a".parse().unwrap()), vec!["v1"]);
    }
}
