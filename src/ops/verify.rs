//! `ociregistry verify [--repair]`: every object the store records is checked
//! against its file and digest (see `check`), `--jobs` files at a time, and
//! files under `blobs/` that no record names (orphans) are counted. With
//! `--repair`, a damaged or missing object is taken out through
//! [`Store::remove`] (a manifest with the tags that name it), so the next
//! pull of it is a miss that fetches it again, and orphans are deleted.
//!
//! It owns the image path while it runs, so it refuses to start while a
//! server holds the lock. The exit status is an [`Outcome`].

pub mod check;
mod progress;

use std::fmt;
use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tracing_appender::non_blocking::WorkerGuard;

pub use check::{Class, Problem};
use progress::Progress;

use crate::cli::{Cli, LogLevel, VerifyArgs};
use crate::config::CommonSettings;
use crate::oci::Digest;
use crate::store::{Layout, MemoryLimits, OpenError, Orphan, Store};

/// How a run ended; its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything is intact, or everything damaged was removed.
    Intact,
    /// Damage was found and is still there.
    Damaged,
    /// Verify could not run: bad configuration, no image path, or its lock is held.
    NotRun,
}

impl Outcome {
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Intact => 0,
            Outcome::Damaged => 1,
            Outcome::NotRun => 2,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Remove what is damaged or missing, and orphan files.
    pub repair: bool,
    /// Files checked at once.
    pub jobs: NonZeroUsize,
}

/// The counts of a run, printed as its last line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub objects: u64,
    /// Bytes read and hashed.
    pub bytes: u64,
    pub ok: u64,
    /// Of the wrong size, hashing to another digest, unreadable, or an unparseable manifest.
    pub damaged: u64,
    pub missing: u64,
    pub orphans: u64,
    /// Objects and orphan files removed.
    pub removed: u64,
}

impl Summary {
    fn count(&mut self, problem: Option<&Problem>, removed: bool) {
        match problem.map(Problem::class) {
            None => self.ok += 1,
            Some(Class::Damaged) => self.damaged += 1,
            Some(Class::Missing) => self.missing += 1,
            Some(Class::Orphan) => self.orphans += 1,
        }
        self.removed += u64::from(removed);
    }

    pub fn outcome(&self) -> Outcome {
        if self.damaged + self.missing + self.orphans > self.removed {
            Outcome::Damaged
        } else {
            Outcome::Intact
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "verified {} objects ({} bytes): {} ok, {} damaged, {} missing, {} orphan files; removed {}",
            self.objects, self.bytes, self.ok, self.damaged, self.missing, self.orphans, self.removed
        )
    }
}

/// The `verify` command: resolves the image path like `serve` does (flag,
/// else the file's `imagePath`, else the default), takes its lock, verifies.
/// Logs only warnings unless told otherwise: its output is its report.
pub fn run(cli: &Cli, args: &VerifyArgs) -> Outcome {
    let (store, _log) = match open(cli) {
        Ok(opened) => opened,
        Err(message) => {
            eprintln!("error: {message}");
            return Outcome::NotRun;
        }
    };
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN));
    match verify(&store, Options { repair: args.repair, jobs }) {
        Ok(summary) => {
            // The exit status tells the outcome even when standard output is closed.
            let _ = writeln!(io::stdout().lock(), "{summary}");
            summary.outcome()
        }
        Err(e) => {
            eprintln!("error: cannot list {}: {e}", store.layout().blobs_dir().display());
            Outcome::NotRun
        }
    }
}

fn open(cli: &Cli) -> Result<(Store, WorkerGuard), String> {
    let settings = CommonSettings::resolve(cli).map_err(|e| e.to_string())?;
    let level = settings.log_level.unwrap_or(LogLevel::Warn);
    let log =
        crate::logging::init(level, settings.log_format, settings.log_file.as_deref()).map_err(|e| format!("{e:#}"))?;
    let root = &settings.image_path;
    if !Layout::new(root).blobs_dir().is_dir() {
        return Err(format!("{} is not an image path (it has no blobs/ directory)", root.display()));
    }
    // Go blob files sit directly in blobs/: verify would call them orphans (and --repair delete them).
    if crate::ops::migrate::pending(root).map_err(|e| format!("cannot read {}: {e}", root.display()))? {
        return Err(format!(
            "{} holds a Go ociregistry cache not imported yet: run `ociregistry migrate` (or serve) first",
            root.display()
        ));
    }
    let store = Store::open(root, MemoryLimits::default()).map_err(|e| match e {
        OpenError::Locked { path, pid } => format!(
            "a server (or another verify) owns the image path {}: {} holds its lock {}; stop it, then run verify again",
            path.display(),
            pid.map_or_else(|| "a process".to_string(), |p| format!("pid {p}")),
            Layout::new(&path).lock_file().display()
        ),
        other => other.to_string(),
    })?;
    Ok((store, log))
}

/// Verifies every record of an open store and lists its orphans, printing
/// each problem as one line; with `repair`, removes what it found.
pub fn verify(store: &Store, options: Options) -> io::Result<Summary> {
    let orphans = store.orphans()?;
    let mut records = store.records();
    // The largest first, so the last files to finish are small ones.
    records.sort_by(|a, b| b.1.size.cmp(&a.1.size).then_with(|| a.0.cmp(&b.0)));
    let progress = Progress::new(records.iter().map(|(_, r)| r.size).sum(), records.len() as u64);
    let summary = Mutex::new(Summary { objects: records.len() as u64, ..Summary::default() });
    for orphan in &orphans {
        let problem = orphan_problem(store, orphan);
        progress.line(&problem);
        let removed = options.repair && remove_orphan(store, orphan, &progress);
        summary.lock().count(Some(&problem), removed);
    }
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.get().min(records.len()) {
            scope.spawn(|| {
                let mut buffer = vec![0; check::BUFFER];
                while let Some((digest, record)) = records.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let path = store.layout().blob(digest);
                    let checked = check::check(&path, digest, record, &mut buffer, |n| progress.hashed(n));
                    progress.object_done(record.size.saturating_sub(checked.hashed));
                    let removed = match &checked.problem {
                        Some(problem) => {
                            progress.line(problem);
                            options.repair && remove(store, digest, &progress)
                        }
                        None => false,
                    };
                    let mut summary = summary.lock();
                    summary.bytes += checked.hashed;
                    summary.count(checked.problem.as_ref(), removed);
                }
            });
        }
    });
    progress.finish();
    Ok(summary.into_inner())
}

fn orphan_problem(store: &Store, orphan: &Orphan) -> Problem {
    let path = orphan.path.strip_prefix(store.layout().root()).unwrap_or(&orphan.path).to_path_buf();
    Problem::Orphan { path, size: orphan.size }
}

/// Deletes an orphan file; returns whether it did.
fn remove_orphan(store: &Store, orphan: &Orphan, progress: &Progress) -> bool {
    match store.remove_orphan(orphan) {
        Ok(()) => true,
        Err(e) => {
            progress.line(format_args!("cannot remove {}: {e}", orphan.path.display()));
            false
        }
    }
}

/// Removes a damaged object (and the tags naming it); returns whether it did.
fn remove(store: &Store, digest: &Digest, progress: &Progress) -> bool {
    match store.remove(digest) {
        Ok(removal) => {
            for key in &removal.tags {
                progress.line(format_args!(
                    "untagged {}/{}:{} (its manifest was removed)",
                    key.registry, key.repo, key.tag
                ));
            }
            true
        }
        Err(e) => {
            progress.line(format_args!("cannot remove {digest}: {e}"));
            false
        }
    }
}
