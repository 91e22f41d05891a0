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
use std::io::{self, Write};
use std::path::Path;

use crate::cli::{Cli, MigrateArgs};
use crate::config::CommonSettings;
use crate::store::{records, Layout, MemoryLimits, OpenError, Store};

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
    tracing::info!(path = %root.display(), "found a Go ociregistry cache (img/, lts/ or fat/, blobs/<hex>); importing it");
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

/// The `migrate` command. Exit status: 0 imported (or nothing to import),
/// 1 when something was refused or unknown (each named), 2 could not run.
pub fn run(cli: &Cli, args: &MigrateArgs) -> i32 {
    match migrate(cli, args) {
        Ok(summary) => i32::from(summary.refused + summary.unknown > 0),
        Err(message) => {
            eprintln!("error: {message}");
            2
        }
    }
}

fn migrate(cli: &Cli, args: &MigrateArgs) -> Result<Summary, String> {
    let settings = CommonSettings::resolve(cli).map_err(|e| e.to_string())?;
    let level = settings.log_level.unwrap_or(crate::cli::LogLevel::Info);
    let _log =
        crate::logging::init(level, settings.log_format, settings.log_file.as_deref()).map_err(|e| format!("{e:#}"))?;
    let root = &settings.image_path;
    if !root.is_dir() {
        return Err(format!("{} is not a directory", root.display()));
    }
    let cannot = |e: io::Error| format!("cannot migrate {}: {e}", root.display());
    if !scan::present(root).map_err(cannot)? {
        println!("nothing to migrate: {} holds no Go ociregistry cache", root.display());
        return Ok(Summary::default());
    }
    let summary = if args.dry_run {
        // Read beside whoever owns the path; take no lock, create nothing.
        let known = records::read(&Layout::new(root).records_journal()).map_err(cannot)?.records;
        let plan = scan::scan(root, |d| known.contains_key(d)).map_err(cannot)?;
        report(&plan);
        dry_summary(&plan, |d| known.contains_key(d))
    } else {
        let store = Store::open(root, MemoryLimits::default()).map_err(|e| match e {
            OpenError::Locked { pid, .. } => format!(
                "a server owns the image path {} ({}); it imported the Go cache at its startup",
                root.display(),
                pid.map_or_else(|| "a process".to_string(), |p| format!("pid {p}"))
            ),
            other => other.to_string(),
        })?;
        at_startup(&store).map_err(cannot)?.unwrap_or_default()
    };
    let verb = if args.dry_run { "would import" } else { "imported" };
    let _ = writeln!(io::stdout().lock(), "{verb}: {summary}");
    Ok(summary)
}

fn dry_summary(plan: &scan::Plan, known: impl Fn(&crate::oci::Digest) -> bool) -> Summary {
    let will_hold = |d: &crate::oci::Digest| known(d) || plan.blobs.iter().any(|b| &b.digest == d);
    let images = plan.manifests.iter().map(|f| &f.manifest.info).filter(|i| !i.is_index);
    Summary {
        manifests: plan.manifests.len(),
        blobs: plan.blobs.iter().filter(|b| !b.known).count(),
        duplicates: plan.blobs.iter().filter(|b| b.known).count(),
        refused: plan.refused.len(),
        incomplete: images.filter(|i| i.references.iter().any(|r| !will_hold(&r.digest))).count(),
        unknown: plan.unknown.len(),
    }
}
