//! `pruneConfig.maxSize`: keeping the cache under a size inside `serve`.
//! The store keeps a running total of its committed bytes and wakes this
//! task when a commit takes it over the high watermark (`maxSize`); the task
//! then runs the same [`prune`] with `max_size` set to the low watermark:
//! the least recently pulled unpinned whole images go until the cache is no
//! larger than that. It runs on a blocking thread, never on the commit path,
//! one eviction at a time (commits meanwhile only leave a wake-up behind).
//! With `--air-gapped` the evicted images cannot be fetched back: each
//! eviction logs a warning saying so.

use std::sync::Arc;

use tokio::sync::watch;

use super::{prune, Criteria, Pins};
use crate::config::prune::Watermarks;
use crate::ops::criteria::Patterns;
use crate::store::Store;

/// Runs until shutdown.
pub async fn run(
    store: Arc<Store>,
    marks: Watermarks,
    pinned: Vec<String>,
    air_gapped: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let patterns = Patterns::from_entries(pinned.iter().map(String::as_str)).ok().filter(|p| !p.is_empty());
    tracing::info!(high = marks.high, low = marks.low, "size-based eviction enabled");
    store.set_high_watermark(marks.high);
    loop {
        tokio::select! {
            _ = store.over_high_watermark() => {}
            _ = shutdown.changed() => return,
        }
        if store.bytes() <= marks.high {
            continue;
        }
        let (store, patterns) = (store.clone(), patterns.clone());
        let ran = tokio::task::spawn_blocking(move || once(&store, marks.low, patterns, air_gapped)).await;
        if let Err(e) = ran {
            tracing::error!(error = %e, "an eviction failed");
        }
    }
}

fn once(store: &Store, low: u64, patterns: Option<Patterns>, air_gapped: bool) {
    let exact = match store.pins() {
        Ok(pins) => pins.into_iter().collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the pins; skipping this eviction");
            return;
        }
    };
    let before = store.bytes();
    let criteria = Criteria { max_size: Some(low), ..Criteria::default() };
    let report = prune(store, &criteria, &Pins { exact, patterns }, false);
    for line in report.lines(false) {
        tracing::info!(target: "prune", "{line}");
    }
    if air_gapped && !report.plan.images.is_empty() {
        tracing::warn!(
            images = report.plan.images.len(),
            "evicted images to fit maxSize in air-gapped mode: they cannot be fetched back"
        );
    }
    if store.bytes() > low && report.plan.images.is_empty() {
        tracing::warn!(bytes = store.bytes(), before, low, "over the low watermark, but every image left is pinned");
    }
}
