//! Pruning inside `serve`, as `pruneConfig` asks: every `frequency` (the
//! first run one `frequency` after startup, as in Go), the same [`prune`] as
//! the command runs, on a blocking thread while the server keeps serving,
//! with the pins file and the `pinned:` patterns. Each run is logged.

use std::sync::Arc;

use tokio::sync::watch;

use super::{prune_with, Criteria, Pins};
use crate::config::patterns::Patterns;
use crate::config::prune::{BackgroundPrune, Select};
use crate::store::Store;

/// Runs until shutdown.
pub async fn run(store: Arc<Store>, config: BackgroundPrune, pinned: Vec<String>, mut shutdown: watch::Receiver<bool>) {
    let patterns = Patterns::from_entries(pinned.iter().map(String::as_str)).ok().filter(|p| !p.is_empty());
    tracing::info!(every_secs = config.every.as_secs(), dry_run = config.dry_run, "background pruning enabled");
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.every) => {}
            _ = shutdown.changed() => return,
        }
        let (store, config, patterns) = (store.clone(), config.clone(), patterns.clone());
        let ran = tokio::task::spawn_blocking(move || once(&store, &config, patterns)).await;
        if let Err(e) = ran {
            tracing::error!(error = %e, "a background prune failed");
        }
    }
}

fn once(store: &Store, config: &BackgroundPrune, patterns: Option<Patterns>) {
    let exact = match store.pins() {
        Ok(pins) => pins.into_iter().collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the pins; skipping this background prune");
            return;
        }
    };
    let now = crate::store::tags::now_secs();
    let mut criteria = Criteria { count: config.count, ..Criteria::default() };
    match &config.select {
        Select::Accessed(secs) => criteria.accessed_before = Some(now.saturating_sub(*secs)),
        Select::Created(secs) => criteria.created_before = Some(now.saturating_sub(*secs)),
        Select::Pattern(p) => criteria.patterns = Some(p.clone()),
    }
    let log = |lines: &[String]| lines.iter().for_each(|line| tracing::info!(target: "prune", "{line}"));
    // Each image's lines as it goes, then the summary.
    let report = prune_with(store, &criteria, &Pins { exact, patterns }, config.dry_run, log);
    for line in report.closing_lines() {
        tracing::info!(target: "prune", "{line}");
    }
}
