//! `serve --preload-images SPEC` (`preloadImages`): a server loads the
//! images (lists and tarballs, as `load --image-file`) into its own store
//! through its own fetch plane before it starts serving, so a node's first
//! pulls are hits. Unlike the Go ociregistry, which refuses to start when one
//! image fails, a failure is logged (each image by name) and counted, and the
//! server starts anyway with what did load: a node that cannot reach one
//! upstream still serves everything else.

use std::num::NonZeroUsize;
use std::sync::Arc;

use super::{load, spec, Options, Platforms, Progress, Summary, DEFAULT_JOBS};
use crate::fetch::FetchHandle;
use crate::store::Store;

/// Runs the preload on `runtime` and logs its summary; returns it (`None` when SPEC itself was unusable).
pub fn preload(
    runtime: &tokio::runtime::Runtime,
    store: Arc<Store>,
    fetch: FetchHandle,
    spec: &str,
    platforms: Platforms,
) -> Option<Summary> {
    tracing::info!(spec, "preloading images");
    let inputs = match spec::resolve(spec) {
        Ok(inputs) => inputs,
        Err(e) => {
            tracing::error!(error = %e, "preloading: nothing loaded");
            return None;
        }
    };
    let options =
        Options { platforms, jobs: NonZeroUsize::new(DEFAULT_JOBS).expect("non-zero"), pin: false, resolve_ref: None };
    let summary = runtime.block_on(load(store, fetch, inputs, &options, &Progress::Log));
    let c = &summary.counts;
    if summary.failed.is_empty() {
        tracing::info!(
            loaded = summary.loaded,
            blobs_fetched = c.blobs_fetched,
            bytes_fetched = c.bytes_fetched,
            blobs_cached = c.blobs_present,
            "preloading done"
        );
    } else {
        let failed: Vec<&str> = summary.failed.iter().map(|(name, _)| name.as_str()).collect();
        tracing::warn!(
            loaded = summary.loaded,
            failed = summary.failed.len(),
            images = %failed.join(", "),
            "preloading done; some images could not be loaded (see above); serving what did"
        );
    }
    Some(summary)
}
