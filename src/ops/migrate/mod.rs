//! Importing a Go ociregistry cache in place, so that switching binaries on
//! an existing image path loses nothing: `serve` runs it at startup whenever
//! the Go directories are there, and `ociregistry migrate` runs it by hand
//! (`--dry-run` reads and checks everything and changes nothing).
//!
//! `go_format` reads the Go files, `scan` sorts the Go directories (read
//! only), `apply` moves what checked out into the store. Every refusal and
//! every unknown entry is a WARN line naming it, with why; one INFO line sums up.

pub mod apply;
pub mod go_format;
pub mod scan;

use std::fmt;
use std::io;
use std::path::Path;

use crate::store::Store;

/// What a migration did (or, dry, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Go manifest files imported.
    pub manifests: usize,
    /// Go blob files moved into the store.
    pub blobs: usize,
    /// Go blob files whose digest the store held already (removed).
    pub duplicates: usize,
    /// Files refused: a blob not matching its name, a manifest not matching its digest, bad JSON...
    pub refused: usize,
    /// Image manifests imported without all their blobs.
    pub incomplete: usize,
    /// Entries of the Go directories that are not Go files.
    pub unknown: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} manifests, {} blobs imported, {} refused, {} incomplete, {} unknown entries, {} blobs already cached",
            self.manifests, self.blobs, self.refused, self.incomplete, self.unknown, self.duplicates
        )
    }
}

/// Whether `root` holds a Go layout still to import.
pub fn pending(root: &Path) -> io::Result<bool> {
    scan::present(root)
}

/// Imports a Go cache found in the store's image path (blocking; before
/// serving). `None` when there is none, which is checked cheaply.
pub fn at_startup(store: &Store) -> io::Result<Option<Summary>> {
    let root = store.layout().root();
    if !scan::present(root)? {
        return Ok(None);
    }
    tracing::info!(path = %root.display(), "found a Go ociregistry cache (img/, lts/, blobs/<hex>); importing it");
    let plan = scan::scan(root, |d| store.record(d).is_some())?;
    report(&plan);
    let summary = apply::apply(store, plan)?;
    tracing::info!(
        manifests = summary.manifests,
        blobs = summary.blobs,
        refused = summary.refused,
        incomplete = summary.incomplete,
        unknown = summary.unknown,
        "Go cache imported: {summary}"
    );
    Ok(Some(summary))
}

/// A WARN line for each refused and unknown entry (names and reasons printable).
fn report(plan: &scan::Plan) {
    for entry in &plan.refused {
        tracing::warn!(file = %entry.shown, reason = %entry.reason, "Go cache: refused, not imported");
    }
    for entry in &plan.unknown {
        let fate = if entry.file { "moved to go-migrated/unknown/" } else { "left where it is" };
        tracing::warn!(file = %entry.shown, reason = %entry.reason, "Go cache: not a Go cache file; {fate}");
    }
}
