//! Tag freshness: re-checking a cached tag upstream when its `tagPolicy`
//! says it is due (the serving side decides that; see `serve::handler`).
//!
//! - A re-check is a `HEAD` of the manifest by tag with the fixed `Accept`
//!   (Docker Hub does not count a `HEAD` against its pull limit). The same
//!   `Docker-Content-Digest` as cached: the tag's `last_checked_at` moves on.
//!   Another digest, or none (then a `GET` tells): the new manifest is
//!   fetched, checked and stored, and the tag moves to it.
//! - One re-check per tag at a time: every pull of the tag that arrives while
//!   it runs waits for it and gets its answer. The whole re-check is bounded
//!   by [`CHECK_TIMEOUT`] (or the pull timeout, if shorter).
//! - A re-check that fails (upstream down, slow, 429, 5xx, circuit open, the
//!   tag gone upstream) answers [`Checked::Stale`]: the cached manifest is
//!   served, never a failed pull for something the cache holds. Each is
//!   counted per registry (`ociregistry_stale_serves_total`) and logged at
//!   most once per [`STALE_LOG_EVERY`].
//! - Confirmations are kept in memory at once and written to the tag files
//!   in batches, every [`FLUSH_EVERY`], each changed tag once, so a hot tag
//!   with `tagPolicy: always` costs no disk write per pull.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use reqwest::Method;

use tracing::Instrument;

use super::{FetchError, Fetcher, ManifestHit, Reply, Source};
use crate::metrics::Counter;
use crate::oci::{Digest, Reference, Tag};
use crate::store::{tags::now_secs, TagKey};

/// The longest a re-check may take, the `GET` of a moved manifest included.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often confirmed check times are written to the tag files.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// At most one "serving a stale tag" log line per this long.
pub const STALE_LOG_EVERY: Duration = Duration::from_secs(10);
/// Distinct tags re-checked at once; past this a due pull is served the cached copy.
pub const MAX_CHECKS: usize = 1024;
/// Confirmed tags waiting to be written at most; past this one waits for the next confirmation.
const MAX_UNWRITTEN: usize = 65_536;

/// What a re-check found.
#[derive(Debug, Clone)]
pub enum Checked {
    /// The upstream still names the cached digest.
    Same,
    /// The tag moved upstream; the new manifest is stored and the tag points at it.
    Moved(ManifestHit),
    /// The re-check failed; serve the cached manifest.
    Stale,
}

/// A re-check is keyed by the tag it checks.
pub(super) type CheckKey = (Source, Tag);

/// Tags confirmed since the last write, and when the last stale log line was.
#[derive(Default)]
pub(super) struct CheckWrites {
    unwritten: Mutex<HashSet<TagKey>>,
    last_stale_log: AtomicU64,
}

impl Fetcher {
    /// Joins the re-check of (source, tag) in flight, or starts it.
    pub(super) fn check_tag(self: Arc<Self>, source: Source, tag: Tag, cached: Digest, reply: Reply<Checked>) {
        let Some(flight) = self.tag_checks.join((source, tag), reply) else { return };
        tokio::spawn(
            async move {
                let (source, tag) = flight.key();
                let limit = CHECK_TIMEOUT.min(self.settings.pull_timeout);
                let checked = match tokio::time::timeout(limit, self.recheck(source, tag, &cached)).await {
                    Ok(Ok(checked)) => checked,
                    Ok(Err(e)) => self.stale(source, tag, &e.to_string()),
                    Err(_) => self.stale(source, tag, &format!("no answer within {limit:?}")),
                };
                flight.land(Ok(checked));
            }
            .in_current_span(),
        );
    }

    async fn recheck(&self, source: &Source, tag: &Tag, cached: &Digest) -> Result<Checked, FetchError> {
        self.check_online()?;
        let up = self.upstreams.get(&source.registry).await?;
        let url = up.url(&source.repo, &format!("manifests/{tag}"));
        self.counters.inc(Counter::UpstreamManifestHead);
        let resp = up.send(Method::HEAD, &source.repo, url, self.manifest_headers()?).await?;
        if !resp.status().is_success() {
            return Err(FetchError::Upstream {
                status: resp.status().as_u16(),
                message: format!("HEAD of tag {tag} in {source}"),
            });
        }
        let announced = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<Digest>().ok());
        if announced.as_ref() == Some(cached) {
            self.confirmed(source, tag, cached);
            return Ok(Checked::Same);
        }
        let reference = Reference::Tag(tag.clone());
        let hit = self.get_manifest(source, &reference, &format!("manifest {reference}")).await?;
        if &hit.digest == cached {
            self.confirmed(source, tag, cached);
            return Ok(Checked::Same);
        }
        self.store_manifest(source, &reference, &hit.digest, &hit.media_type, &hit.body);
        tracing::info!(%source, %tag, from = %cached, to = %hit.digest, "tag moved upstream; new manifest cached");
        Ok(Checked::Moved(hit))
    }

    /// Moves the tag's check time on, in memory now and on disk with the next batch.
    fn confirmed(&self, source: &Source, tag: &Tag, digest: &Digest) {
        let key = TagKey { registry: source.registry.clone(), repo: source.repo.clone(), tag: tag.clone() };
        if self.store.tag_checked(&key, digest, now_secs()) {
            let mut unwritten = self.check_writes.unwritten.lock();
            if unwritten.len() < MAX_UNWRITTEN {
                unwritten.insert(key);
            }
        }
    }

    /// Counts and (rate-limited) logs a stale serve.
    fn stale(&self, source: &Source, tag: &Tag, why: &str) -> Checked {
        let series = self.upstreams.series(&source.registry);
        series.stale_serves.fetch_add(1, Ordering::Relaxed);
        let now = now_secs();
        let last = self.check_writes.last_stale_log.load(Ordering::Relaxed);
        if now >= last + STALE_LOG_EVERY.as_secs()
            && self
                .check_writes
                .last_stale_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let total = series.stale_serves.load(Ordering::Relaxed);
            tracing::warn!(%source, %tag, error = why, stale_serves = total,
                "tag re-check failed; serving the cached manifest (further such lines suppressed for 10 s)");
        }
        Checked::Stale
    }

    /// Writes the confirmed check times every [`FLUSH_EVERY`] until shutdown, then once more.
    pub(super) async fn flush_check_times(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(FLUSH_EVERY) => false,
                _ = shutdown.changed() => true,
            };
            let keys: Vec<TagKey> = self.check_writes.unwritten.lock().drain().collect();
            if !keys.is_empty() {
                let written = self
                    .blocking(move |store| {
                        for key in &keys {
                            store.write_tag(key)?;
                        }
                        Ok(keys.len())
                    })
                    .await;
                match written {
                    Ok(n) => tracing::debug!(tags = n, "tag check times written"),
                    Err(e) => tracing::warn!(error = %e, "tag check times could not be written"),
                }
            }
            if stopping || *shutdown.borrow() {
                return;
            }
        }
    }
}
