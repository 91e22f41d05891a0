//! Prefetch: when a client starts the download of one blob of an image, the
//! image's other blobs (config and layers) are fetched in the background, a
//! few at a time, so a node's later requests find them cached or in flight.
//! Clients that only read manifests (scanners, admission controllers) trigger
//! nothing. Skipped when the image path's file system is short of free space.

use std::path::Path;
use std::sync::Arc;

use tracing::Instrument;

use super::{BlobSource, Fetcher, Source};
use crate::oci::Digest;

/// Background downloads at once (containerd's own layer concurrency).
pub const PREFETCH_CONCURRENCY: usize = 3;
/// Prefetch only while this much of the file system stays free.
const MIN_FREE_BYTES: u64 = 1 << 30;
const MIN_FREE_FRACTION: f64 = 0.05;
/// Blobs waiting for a prefetch slot at most; past this, siblings are not queued.
const MAX_QUEUED: usize = 1024;

impl Fetcher {
    /// Schedules the other blobs of the image that `digest` belongs to.
    pub(super) fn prefetch_siblings(self: &Arc<Self>, source: &Source, digest: &Digest) {
        if !self.settings.prefetch {
            return;
        }
        let Some(blobs) = self.store.image_blobs(&source.to_string(), digest) else { return };
        for sibling in blobs.iter().filter(|d| *d != digest) {
            if self.store.record(sibling).is_some() || self.downloads.lock().contains_key(sibling) {
                continue;
            }
            {
                let mut queued = self.prefetch_queued.lock();
                if queued.len() >= MAX_QUEUED {
                    tracing::debug!(queued = queued.len(), "prefetch queue full; siblings not queued");
                    return;
                }
                if !queued.insert(sibling.clone()) {
                    continue;
                }
            }
            let (f, source, sibling) = (self.clone(), source.clone(), sibling.clone());
            // Prefetches run in the span of the request whose blob started them.
            tokio::spawn(
                async move {
                    f.prefetch_one(source, &sibling).await;
                    f.prefetch_queued.lock().remove(&sibling);
                }
                .in_current_span(),
            );
        }
    }

    async fn prefetch_one(self: &Arc<Self>, source: Source, digest: &Digest) {
        let Ok(_permit) = self.prefetch_slots.acquire().await else { return };
        if !has_room(self.store.layout().root()) {
            tracing::debug!(%digest, "prefetch skipped: the image path is short of free space");
            return;
        }
        // Holding a subscription keeps the download from counting as orphaned.
        if let Ok(BlobSource::Downloading(mut reader)) = self.clone().blob(source, digest.clone()).await {
            let _ = reader.progress.wait_for(|p| p.is_final()).await;
            tracing::debug!(%digest, "prefetched");
        }
    }
}

fn has_room(path: &Path) -> bool {
    crate::store::space::free_and_total(path)
        .is_some_and(|(free, total)| free >= MIN_FREE_BYTES && (free as f64) >= total as f64 * MIN_FREE_FRACTION)
}
