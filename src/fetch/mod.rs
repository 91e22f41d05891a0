//! The fetch plane: one tokio runtime that owns every upstream connection.
//! Serving threads send it jobs through a [`FetchHandle`] (cheap to clone, `Send`)
//! and await the reply; tokio's channels are runtime-agnostic, and monoio's
//! `sync` feature lets the fetcher wake monoio tasks.
//!
//! - Manifests are fetched whole, checked against their digest, stored, then
//!   answered: one upstream request per (registry, repository, reference) at a time.
//! - Cached tags due a re-check (`tagPolicy`) are re-checked with a `HEAD`,
//!   one at a time per tag (see `freshness`).
//! - Blobs are fetched once per digest whatever the fan-out; every requester
//!   gets the same [`Download`] and streams it while it fills.
//! - Disk writes, fsync and rename run on blocking threads, never on the runtime.
//! - A job carries the tracing span of the request that sent it (its `request`
//!   span, with the request id), and the fetch it starts runs inside that span:
//!   the fetcher's lines for it name the id of the request that led it, also
//!   when later requests join it.

mod auth;
mod blob;
pub mod breaker;
pub mod download;
mod ecr;
pub mod error;
mod failing;
mod flights;
pub mod freshness;
mod guard;
mod manifest;
mod prefetch;
pub mod tags;
pub mod upstream;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

/// `WWW-Authenticate` parsing, public for the fuzz target (`crate::fuzzing`).
pub use auth::{parse_challenge, Challenge};
pub use download::{Download, Progress, Reader, State};
pub use error::FetchError;
pub use freshness::Checked;
/// The largest manifest the cache takes (also from a migrated Go cache).
pub use manifest::MAX_MANIFEST_BYTES;
pub use tags::TagsPage;

use crate::config::Settings;
use crate::metrics::{Block, UpstreamSeriesMap};
use crate::oci::{Digest, MediaType, Reference, RegistryName, RepoName, Tag};
use crate::store::Store;

/// An image repository in one upstream: where something is fetched from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    pub registry: RegistryName,
    pub repo: RepoName,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repo)
    }
}

/// A manifest ready to serve.
#[derive(Debug, Clone)]
pub struct ManifestHit {
    pub digest: Digest,
    pub media_type: MediaType,
    pub body: Bytes,
    /// Fetched from the upstream for this request: not read from the cache,
    /// nor another request's fetch that this one joined.
    pub fetched: bool,
}

/// Where a requested blob can be read from.
pub enum BlobSource {
    /// Committed to the store (look it up there).
    Committed,
    /// Being downloaded; stream it as it fills.
    Downloading(Reader),
}

type Reply<T> = oneshot::Sender<Result<T, FetchError>>;

/// A manifest fetch is keyed by what it fetches.
type ManifestKey = (Source, Reference);

enum Job {
    Manifest { source: Source, reference: Reference, reply: Reply<ManifestHit> },
    Blob { source: Source, digest: Digest, reply: Reply<BlobSource> },
    BlobSize { source: Source, digest: Digest, reply: Reply<u64> },
    Tags { source: Source, query: String, reply: Reply<TagsPage> },
    CheckTag { source: Source, tag: Tag, cached: Digest, reply: Reply<Checked> },
}

/// A job and the span of the request that sent it (disabled when that request logs none).
type Sent = (Job, tracing::Span);

/// The serving side's handle on the fetcher.
#[derive(Clone)]
pub struct FetchHandle {
    jobs: mpsc::UnboundedSender<Sent>,
    fetcher: Arc<Fetcher>,
}

impl FetchHandle {
    /// Swaps the configured registries for the fetches that come next (a SIGHUP
    /// reload); see [`upstream::Upstreams::reload`]. Returns a summary to log.
    pub fn reload_registries(&self, registries: &[crate::config::Registry]) -> Result<String, String> {
        let done = self.fetcher.upstreams.reload(registries)?;
        // What the old settings earned (a 401 remembered as not found, a 5xx left
        // alone for a while) is not held against the new ones: these short-lived
        // memories start over.
        self.fetcher.not_found.lock().clear();
        self.fetcher.failing.lock().clear();
        Ok(done)
    }

    /// Resolves and caches a manifest by tag or digest.
    pub async fn manifest(&self, source: Source, reference: Reference) -> Result<ManifestHit, FetchError> {
        self.ask(|reply| Job::Manifest { source, reference, reply }).await
    }

    /// Starts (or joins) the download of a blob.
    pub async fn blob(&self, source: Source, digest: Digest) -> Result<BlobSource, FetchError> {
        self.ask(|reply| Job::Blob { source, digest, reply }).await
    }

    /// The size of a blob that is not cached, asked of the upstream without downloading it.
    pub async fn blob_size(&self, source: Source, digest: Digest) -> Result<u64, FetchError> {
        self.ask(|reply| Job::BlobSize { source, digest, reply }).await
    }

    /// Re-checks upstream a cached tag that names `cached`; see `freshness`.
    pub async fn check_tag(&self, source: Source, tag: Tag, cached: Digest) -> Result<Checked, FetchError> {
        self.ask(|reply| Job::CheckTag { source, tag, cached, reply }).await
    }

    /// Lists tags upstream; `query` is the client's `n`/`last` query string.
    pub async fn tags(&self, source: Source, query: String) -> Result<TagsPage, FetchError> {
        self.ask(|reply| Job::Tags { source, query, reply }).await
    }

    async fn ask<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, FetchError> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send((job(tx), tracing::Span::current())).map_err(|_| FetchError::ShuttingDown)?;
        rx.await.unwrap_or(Err(FetchError::ShuttingDown))
    }
}

/// The fetcher's shared state; lives on the tokio runtime.
pub(crate) struct Fetcher {
    settings: Arc<Settings>,
    store: Arc<Store>,
    upstreams: upstream::Upstreams,
    /// Manifest fetches in flight, with their waiters.
    manifest_flights: Arc<flights::Flights<ManifestKey, ManifestHit>>,
    /// Tag re-checks in flight, with their waiters.
    tag_checks: Arc<flights::Flights<freshness::CheckKey, Checked>>,
    /// Tag check times confirmed but not yet written.
    check_writes: freshness::CheckWrites,
    /// Tag list fetches in flight, with their waiters.
    tag_flights: Arc<flights::Flights<tags::TagsKey, TagsPage>>,
    /// Blob downloads in flight, by digest.
    downloads: Mutex<HashMap<Digest, Arc<Download>>>,
    /// Recent upstream 404s, so crash-looping pods do not hammer the upstream.
    not_found: Mutex<HashMap<(Source, String), (Instant, String)>>,
    /// Objects the upstream recently answered a 5xx about, not asked again for a while.
    failing: Mutex<failing::Failing>,
    /// Digests whose last download did not match, and until when not to retry.
    mismatch_backoff: Mutex<HashMap<Digest, (Instant, u32)>>,
    /// Recent tag list pages, by (source, n, last).
    tags_cache: Mutex<HashMap<tags::TagsKey, (Instant, TagsPage)>>,
    /// Blobs waiting for or being prefetched.
    prefetch_queued: Mutex<std::collections::HashSet<Digest>>,
    prefetch_slots: tokio::sync::Semaphore,
    orphans: AtomicUsize,
    shutdown: watch::Receiver<bool>,
    counters: Arc<Block>,
}

/// Makes room in a bounded map of expiring entries before an insert: drops
/// the expired ones when it is full, and everything if that was not enough.
pub(crate) fn make_room<K, V>(map: &mut HashMap<K, V>, max: usize, expired: impl Fn(&V) -> bool) {
    if map.len() >= max {
        map.retain(|_, v| !expired(v));
        if map.len() >= max {
            map.clear();
        }
    }
}

/// Starts the fetcher's dispatcher on `runtime` and returns the handle serving threads use.
pub fn start(
    runtime: &tokio::runtime::Handle,
    settings: Arc<Settings>,
    store: Arc<Store>,
    shutdown: watch::Receiver<bool>,
    counters: Arc<Block>,
    series_map: Arc<UpstreamSeriesMap>,
) -> Result<FetchHandle, String> {
    let upstreams = upstream::Upstreams::new(settings.clone(), counters.clone(), series_map)?;
    upstreams.prepare_listed()?;
    let fetcher = Arc::new(Fetcher {
        settings,
        store,
        upstreams,
        manifest_flights: flights::Flights::new(manifest::MAX_MANIFEST_FETCHES, "manifest fetches"),
        tag_checks: flights::Flights::new(freshness::MAX_CHECKS, "tag re-checks"),
        check_writes: freshness::CheckWrites::default(),
        tag_flights: flights::Flights::new(tags::MAX_TAG_FETCHES, "tag list fetches"),
        downloads: Mutex::default(),
        not_found: Mutex::default(),
        failing: Mutex::default(),
        mismatch_backoff: Mutex::default(),
        tags_cache: Mutex::default(),
        prefetch_queued: Mutex::default(),
        prefetch_slots: tokio::sync::Semaphore::new(prefetch::PREFETCH_CONCURRENCY),
        orphans: AtomicUsize::new(0),
        shutdown,
        counters,
    });
    runtime.spawn(fetcher.clone().flush_check_times());
    let handle_fetcher = fetcher.clone();
    let (tx, mut rx) = mpsc::unbounded_channel::<Sent>();
    runtime.spawn(async move {
        while let Some((job, span)) = rx.recv().await {
            let f = fetcher.clone();
            // What a job starts runs in its request's span: every task it spawns takes the current one.
            let _in_request = span.enter();
            match job {
                Job::Manifest { source, reference, reply } => f.manifest(source, reference, reply),
                Job::Blob { source, digest, reply } => {
                    tokio::spawn(
                        async move {
                            let _ = reply.send(f.blob(source, digest).await);
                        }
                        .in_current_span(),
                    );
                }
                Job::BlobSize { source, digest, reply } => {
                    tokio::spawn(
                        async move {
                            let _ = reply.send(f.blob_size(source, digest).await);
                        }
                        .in_current_span(),
                    );
                }
                Job::Tags { source, query, reply } => f.tags(source, &query, reply),
                Job::CheckTag { source, tag, cached, reply } => f.check_tag(source, tag, cached, reply),
            }
        }
    });
    Ok(FetchHandle { jobs: tx, fetcher: handle_fetcher })
}

impl Fetcher {
    fn check_online(&self) -> Result<(), FetchError> {
        if self.settings.air_gapped {
            return Err(FetchError::AirGapped);
        }
        if *self.shutdown.borrow() {
            return Err(FetchError::ShuttingDown);
        }
        Ok(())
    }

    /// Runs blocking disk work off the runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, FetchError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| FetchError::Internal(e.to_string()))?
            .map_err(|e| FetchError::Internal(format!("cache write failed: {e}")))
    }
}
