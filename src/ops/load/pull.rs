//! Loading one image from its upstream, through the fetch plane exactly as a
//! pull-through does (the same digest checks, the same commits, the tag record
//! for a tag): the manifest, for an index the chosen platforms' manifests,
//! then every config and layer. What the store already holds is not fetched
//! again, so a second load of the same list asks the upstream nothing.
//! Blob downloads across all images share one bound (`--jobs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use tokio::sync::Semaphore;

use super::image_ref::ImageRef;
use super::platform::Platforms;
use super::progress::ImageBar;
use super::Counts;
use crate::fetch::{BlobSource, FetchHandle, Source, State};
use crate::oci::{media, Digest, Reference};
use crate::store::{Kind, Store, TagKey};

/// Indexes inside indexes followed at most this deep.
const MAX_INDEX_DEPTH: usize = 2;
/// How long a manifest may take to reach the disk once fetched.
const PERSIST_WAIT: Duration = Duration::from_secs(60);
/// How long a verified blob may take to be fsynced and renamed into place.
const COMMIT_WAIT: Duration = Duration::from_secs(600);

/// What pulling needs: the store, the fetch plane and the shared bounds.
pub struct Puller {
    pub store: Arc<Store>,
    pub fetch: FetchHandle,
    pub platforms: Platforms,
    /// Blob downloads at once, across every image.
    pub slots: Arc<Semaphore>,
    pub jobs: usize,
}

impl Puller {
    /// Loads `image` and returns what it fetched and found; an error names what failed.
    pub async fn pull(&self, image: &ImageRef, bar: &ImageBar) -> Result<Counts, String> {
        let mut counts = Counts::default();
        let source = image.source();
        let (_, body) = self.top_manifest(image, &mut counts).await?;
        let mut blobs: Vec<(Digest, u64)> = Vec::new();
        let mut stack = vec![(body, 0)];
        while let Some((body, depth)) = stack.pop() {
            let info = media::inspect(&body)?;
            if !info.is_index {
                for r in info.references {
                    if !blobs.iter().any(|(d, _)| *d == r.digest) {
                        blobs.push((r.digest, r.size));
                    }
                }
                continue;
            }
            if depth >= MAX_INDEX_DEPTH {
                return Err(format!("indexes nested more than {MAX_INDEX_DEPTH} deep"));
            }
            for child in super::platform::choose(&body, &self.platforms)? {
                let body = self.manifest_by_digest(&source, &child, &mut counts).await?;
                stack.push((body, depth + 1));
            }
        }
        let total = blobs.len() as u64;
        let missing: Vec<(Digest, u64)> = blobs.into_iter().filter(|(d, _)| self.store.record(d).is_none()).collect();
        counts.blobs_present += total - missing.len() as u64;
        bar.add_total(missing.iter().map(|(_, size)| size).sum());
        let results: Vec<Result<Option<u64>, String>> = stream::iter(missing)
            .map(|(digest, _)| self.blob(&source, digest, bar))
            .buffer_unordered(self.jobs)
            .collect()
            .await;
        for r in results {
            match r? {
                Some(size) => {
                    counts.blobs_fetched += 1;
                    counts.bytes_fetched += size;
                }
                None => counts.blobs_present += 1,
            }
        }
        Ok(counts)
    }

    /// The manifest `image` names: its cached tag or digest, else fetched.
    async fn top_manifest(&self, image: &ImageRef, counts: &mut Counts) -> Result<(Digest, Bytes), String> {
        let source = image.source();
        let tag = match image.reference() {
            Reference::Digest(d) => return Ok((d.clone(), self.manifest_by_digest(&source, &d, counts).await?)),
            Reference::Tag(t) => t,
        };
        let key = TagKey { registry: image.registry.clone(), repo: image.repo.clone(), tag: tag.clone() };
        if let Some(record) = self.store.tag(&key) {
            if let Some(body) = self.cached_manifest(&record.digest).await {
                counts.manifests_present += 1;
                return Ok((record.digest, body));
            }
        }
        let hit = self.fetch.manifest(source, Reference::Tag(tag)).await.map_err(|e| e.to_string())?;
        self.persisted(&hit.digest).await?;
        counts.manifests_fetched += 1;
        Ok((hit.digest, hit.body))
    }

    async fn manifest_by_digest(&self, source: &Source, digest: &Digest, counts: &mut Counts) -> Result<Bytes, String> {
        if let Some(body) = self.cached_manifest(digest).await {
            counts.manifests_present += 1;
            return Ok(body);
        }
        let hit = self
            .fetch
            .manifest(source.clone(), Reference::Digest(digest.clone()))
            .await
            .map_err(|e| format!("manifest {digest}: {e}"))?;
        self.persisted(digest).await?;
        counts.manifests_fetched += 1;
        Ok(hit.body)
    }

    /// A committed manifest's bytes (read off the runtime: it may touch the disk).
    async fn cached_manifest(&self, digest: &Digest) -> Option<Bytes> {
        self.store.record(digest).filter(|r| r.kind == Kind::Manifest)?;
        let (store, d) = (self.store.clone(), digest.clone());
        let found = tokio::task::spawn_blocking(move || store.manifest(&d)).await.ok()?;
        found.map(|(body, _)| body)
    }

    /// Waits (bounded) until a fetched manifest is on disk, and tells whether it made it.
    async fn persisted(&self, digest: &Digest) -> Result<(), String> {
        let deadline = Instant::now() + PERSIST_WAIT;
        while self.store.is_pending(digest) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        match (self.store.is_pending(digest), self.store.record(digest)) {
            (false, Some(_)) => Ok(()),
            (true, _) => Err(format!("manifest {digest} was not written to the cache within {PERSIST_WAIT:?}")),
            (false, None) => Err(format!("manifest {digest} could not be written to the cache (see the log)")),
        }
    }

    /// Fetches one blob unless it is committed by then; returns its size when it fetched it.
    async fn blob(&self, source: &Source, digest: Digest, bar: &ImageBar) -> Result<Option<u64>, String> {
        let _slot = self.slots.acquire().await.map_err(|e| e.to_string())?;
        if self.store.record(&digest).is_some() {
            return Ok(None);
        }
        let mut reader = match self.fetch.blob(source.clone(), digest.clone()).await {
            Ok(BlobSource::Committed) => return Ok(None),
            Ok(BlobSource::Downloading(reader)) => reader,
            Err(e) => return Err(format!("blob {digest}: {e}")),
        };
        let mut seen = 0;
        loop {
            let progress = reader.progress.borrow_and_update().clone();
            bar.inc(progress.published.saturating_sub(seen));
            seen = seen.max(progress.published);
            match progress.state {
                State::Verified => break,
                State::Failed(e) => return Err(format!("blob {digest}: {e}")),
                State::Connecting | State::Streaming => {}
            }
            if reader.progress.changed().await.is_err() {
                return Err(format!("blob {digest}: the download ended without an outcome"));
            }
        }
        drop(reader);
        // Verified: the commit (fsync, rename, record) follows on a blocking thread.
        let deadline = Instant::now() + COMMIT_WAIT;
        loop {
            if let Some(record) = self.store.record(&digest) {
                return Ok(Some(record.size));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "blob {digest} was verified but not committed within {COMMIT_WAIT:?} (see the log)"
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
