//! `ociregistry load --image-file SPEC`: fills the cache ahead of time, for a
//! cluster that must boot without its upstreams or a site that is air-gapped.
//! SPEC names image lists and tarballs (see `spec`). Images of lists are
//! pulled from their upstreams through the fetch plane (`pull`), as a
//! pull-through would; tarballs are read and committed locally (`tarball`).
//! Everything is digest-checked before it is committed, and what is already
//! cached is not fetched again.
//!
//! [`load`] is a function over a store and a fetch handle, so a running
//! server can run it too (`serve --preload-images`, and the admin job `load`
//! in [`job`]). When a server runs on the image path (its `.admin` file),
//! the `load` command hands the work to it as that job and follows it;
//! otherwise it owns the image path (its lock) while it runs. The exit
//! status is an [`Outcome`] either way.

pub mod hello_world;
pub mod image_ref;
pub mod job;
pub mod platform;
mod preload;
mod progress;
mod pull;
pub mod spec;
mod tarball;

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use tokio::sync::{watch, Semaphore};

pub use image_ref::ImageRef;
pub use platform::Platforms;
pub use preload::preload;
pub use progress::Progress;
pub use spec::Input;

use crate::cli::{Cli, LoadArgs, LogLevel, ServeArgs};
use crate::config::{FileConfig, Settings};
use crate::fetch::FetchHandle;
use crate::oci::Platform;
use crate::store::{Layout, OpenError, Store};

/// Images loaded at once (and blob downloads at once) by default.
pub const DEFAULT_JOBS: usize = 4;
/// The most a load handed to a server may run at once, whatever its body asks.
pub const MAX_JOBS: usize = 64;

/// How a run ended; its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every image is loaded.
    Loaded,
    /// Some image could not be loaded (each is named); the others are.
    SomeFailed,
    /// Load could not run: usage, configuration, unreadable input, or the lock is held.
    NotRun,
}

impl Outcome {
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Loaded => 0,
            Outcome::SomeFailed => 1,
            Outcome::NotRun => 2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub platforms: Platforms,
    /// Images at once, and blob downloads at once.
    pub jobs: NonZeroUsize,
    /// Pin the references loaded (`index/pins`): prune never removes them.
    pub pin: bool,
    /// The name of a single-image tarball's image (`--resolve-ref`, Go's `resolveRef`).
    pub resolve_ref: Option<ImageRef>,
}

/// What loading one image fetched and found already cached.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Counts {
    pub manifests_fetched: u64,
    pub manifests_present: u64,
    pub blobs_fetched: u64,
    pub blobs_present: u64,
    /// Bytes of the blobs fetched.
    pub bytes_fetched: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.manifests_fetched += other.manifests_fetched;
        self.manifests_present += other.manifests_present;
        self.blobs_fetched += other.blobs_fetched;
        self.blobs_present += other.blobs_present;
        self.bytes_fetched += other.bytes_fetched;
    }
}

/// The result of a run, printed as its last line.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Summary {
    pub loaded: u64,
    /// Each image (or list line, or tarball) that failed, with why.
    pub failed: Vec<(String, String)>,
    pub counts: Counts,
    /// References pinned (`--pin`).
    pub pinned: u64,
}

impl Summary {
    pub fn outcome(&self) -> Outcome {
        if self.failed.is_empty() {
            Outcome::Loaded
        } else {
            Outcome::SomeFailed
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        write!(
            f,
            "loaded {} images, {} failed: fetched {} manifests and {} blobs ({} bytes); {} manifests and {} blobs were already cached",
            self.loaded,
            self.failed.len(),
            c.manifests_fetched,
            c.blobs_fetched,
            c.bytes_fetched,
            c.manifests_present,
            c.blobs_present
        )?;
        if self.pinned > 0 {
            write!(f, "; pinned {}", self.pinned)?;
        }
        Ok(())
    }
}

/// Loads every input into `store`: list images through `fetch`, `jobs` at a
/// time; tarballs one after the other. Failures are counted and named in the
/// summary, never stop the others.
pub async fn load(
    store: Arc<Store>,
    fetch: FetchHandle,
    inputs: Vec<Input>,
    options: &Options,
    progress: &Progress,
) -> Summary {
    let mut summary = Summary::default();
    let mut images: Vec<ImageRef> = Vec::new();
    let mut tarballs = Vec::new();
    for input in inputs {
        match input {
            Input::List { lines, .. } => {
                for line in lines {
                    match line.image {
                        Ok(image) if !images.contains(&image) => images.push(image),
                        // Listed twice: loaded once.
                        Ok(_) => progress.image_done(),
                        Err(e) => {
                            progress.failure(format_args!("failed {}: {e}", line.origin));
                            progress.image_done();
                            summary.failed.push((format!("{} ({})", line.text, line.origin), e));
                        }
                    }
                }
            }
            Input::Tarball { path, gzipped, label } => tarballs.push((path, gzipped, label)),
        }
    }
    let jobs = options.jobs.get();
    let puller = pull::Puller {
        store: store.clone(),
        fetch,
        platforms: options.platforms.clone(),
        slots: Arc::new(Semaphore::new(jobs)),
        jobs,
    };
    let results: Vec<(ImageRef, Result<Counts, String>)> = stream::iter(images)
        .map(|image| {
            let puller = &puller;
            async move {
                let bar = progress.image(&image.to_string());
                let result = puller.pull(&image, &bar).await;
                drop(bar);
                match &result {
                    Ok(c) => progress.line(format_args!(
                        "loaded {image}: {} blobs fetched ({} bytes), {} already cached",
                        c.blobs_fetched, c.bytes_fetched, c.blobs_present
                    )),
                    Err(e) => progress.failure(format_args!("failed {image}: {e}")),
                }
                progress.image_done();
                (image, result)
            }
        })
        .buffer_unordered(jobs)
        .collect()
        .await;
    let mut loaded: Vec<String> = Vec::new();
    for (image, result) in results {
        match result {
            Ok(counts) => {
                loaded.push(image.to_string());
                summary.loaded += 1;
                summary.counts.add(&counts);
            }
            Err(e) => summary.failed.push((image.to_string(), e)),
        }
    }
    for (path, gzipped, label) in tarballs {
        // Reading and hashing a tarball is blocking work; nothing else of this load runs meanwhile.
        let results = tokio::task::block_in_place(|| {
            tarball::load(
                &store,
                &path,
                label.as_deref(),
                gzipped,
                &options.platforms,
                options.resolve_ref.as_ref(),
                progress,
            )
        });
        for (name, result) in results {
            match result {
                Ok(counts) => {
                    progress.line(format_args!(
                        "loaded {name} from {}: {} blobs written ({} bytes), {} already cached",
                        path.display(),
                        counts.blobs_fetched,
                        counts.bytes_fetched,
                        counts.blobs_present
                    ));
                    summary.loaded += 1;
                    summary.counts.add(&counts);
                    loaded.push(name);
                }
                Err(e) => {
                    progress.failure(format_args!("failed {name}: {e}"));
                    summary.failed.push((name, e));
                }
            }
        }
        progress.image_done();
    }
    if options.pin && !loaded.is_empty() {
        pin(&store, loaded, &mut summary, progress).await;
    }
    summary
}

/// Pins what loaded (`--pin`); a failure to is a failure of the run.
async fn pin(store: &Arc<Store>, loaded: Vec<String>, summary: &mut Summary, progress: &Progress) {
    let n = loaded.len() as u64;
    let store = store.clone();
    let result = match tokio::task::spawn_blocking(move || store.add_pins(&loaded)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(()) => {
            progress.line(format_args!("pinned {}", plural(n as usize, "reference")));
            summary.pinned = n;
        }
        Err(e) => {
            progress.failure(format_args!("failed to pin the images loaded: {e}"));
            summary.failed.push(("pins (index/pins)".to_string(), e));
        }
    }
}

/// The `load` command: resolves its options (flags over the config file's
/// `imageFile`, `os`, `arch`). When a server runs on the image path (its
/// `.admin` file names a live process whose admin API answers), the work is
/// handed to it as the admin job `load` and followed ([`follow`]). Otherwise
/// it takes the image path's lock, starts the fetch plane as `serve` does
/// (the file's registries, auth and TLS), and loads.
pub fn run(cli: &Cli, args: &LoadArgs) -> Outcome {
    match prepare(cli, args) {
        Ok(Prepared::Local(prepared)) => execute(prepared),
        Ok(Prepared::Server { admin, id, items }) => follow(&admin, &id, items),
        Err(message) => {
            eprintln!("error: {message}");
            Outcome::NotRun
        }
    }
}

enum Prepared {
    Local(Local),
    /// Handed to the running server as admin job `id`.
    Server {
        admin: crate::admin::client::AdminClient,
        id: String,
        items: u64,
    },
}

struct Local {
    settings: Arc<Settings>,
    inputs: Vec<Input>,
    options: Options,
    store: Arc<Store>,
    _log: tracing_appender::non_blocking::WorkerGuard,
}

fn prepare(cli: &Cli, args: &LoadArgs) -> Result<Prepared, String> {
    let file = FileConfig::of(cli).map_err(|e| e.to_string())?;
    let serve = ServeArgs { pull_timeout: args.pull_timeout, ..ServeArgs::default() };
    let mut settings = Settings::resolve(cli, &serve).map_err(|e| e.to_string())?;
    // Loading is fetching: an air-gapped server's config still lets load reach upstreams,
    // and only what the list names is fetched (no prefetch of siblings).
    settings.air_gapped = false;
    settings.prefetch = false;
    let spec = args
        .image_file
        .clone()
        .or(file.image_file.clone())
        .ok_or("--image-file is required (or imageFile in the config file)")?;
    let os = args.os.clone().or(file.os.clone());
    let arch = args.arch.clone().or(file.arch.clone());
    let platforms = if args.all_platforms {
        Platforms::All
    } else {
        Platforms::One(Platform::parse(os.as_deref(), arch.as_deref())?)
    };
    let inputs = spec::resolve(&spec)?;
    let (resolve_ref, resolve_key) = match (&args.resolve_ref, &file.resolve_ref) {
        (Some(r), _) => (Some(r.as_str()), "--resolve-ref"),
        (None, Some(r)) if !r.is_empty() => (Some(r.as_str()), "resolveRef"),
        _ => (None, ""),
    };
    let resolve_ref = resolve_ref
        .map(|r| match ImageRef::parse(r) {
            Ok(i) if i.digest.is_none() => Ok(i),
            Ok(_) => Err(format!("{resolve_key}: {r:?} names a digest; give registry/repository:tag")),
            Err(e) => Err(format!("{resolve_key}: {r:?} is not a full image reference (registry/repository:tag): {e}")),
        })
        .transpose()?;
    if resolve_ref.is_some() && !inputs.iter().any(|i| matches!(i, Input::Tarball { .. })) {
        // As Go: the name is for a tarball; an image list names its own images.
        eprintln!("warning: {resolve_key} is ignored: {spec} names no tarball, only image lists");
    }
    let level = cli.log_level.or(file.log_level).unwrap_or(LogLevel::Warn);
    let log =
        crate::logging::init(level, settings.log_format, settings.log_file.as_deref()).map_err(|e| format!("{e:#}"))?;
    let items = inputs
        .iter()
        .map(|i| match i {
            Input::List { lines, .. } => lines.len() as u64,
            Input::Tarball { .. } => 1,
        })
        .sum();
    if let Some(admin) = crate::admin::client::find_configured(&settings.image_path, file.admin.as_ref())? {
        // Tarballs are staged in the image path's tmp/ for the server (see `job`).
        let tmp = Layout::new(&settings.image_path).tmp_dir();
        let mut staged = Vec::new();
        for (n, input) in inputs.iter().enumerate() {
            if let Input::Tarball { path, gzipped, .. } = input {
                match job::stage(&tmp, path, n) {
                    Ok(name) => {
                        staged.push(job::Staged { name, gzipped: *gzipped, origin: path.display().to_string() })
                    }
                    Err(e) => {
                        job::unstage(&tmp, &staged);
                        return Err(format!(
                            "a server (pid {}) runs on the image path {}: cannot stage {} in {} for it: {e}",
                            admin.pid(),
                            settings.image_path.display(),
                            path.display(),
                            tmp.display()
                        ));
                    }
                }
            }
        }
        let body = job::Body {
            lines: inputs
                .iter()
                .flat_map(|i| match i {
                    Input::List { lines, .. } => lines.as_slice(),
                    Input::Tarball { .. } => &[][..],
                })
                .map(|l| job::BodyLine { origin: l.origin.clone(), text: l.text.clone() })
                .collect(),
            os,
            arch,
            all_platforms: args.all_platforms,
            jobs: args.jobs,
            pin: args.pin,
            staged: staged.clone(),
            resolve_ref: resolve_ref.as_ref().map(|r| r.to_string()),
        };
        let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let started = admin.start_job("load", &body);
        if started.is_err() {
            job::unstage(&tmp, &staged);
        }
        match started {
            Ok(id) => return Ok(Prepared::Server { admin, id, items }),
            Err(crate::admin::client::ClientError::Refused { status, message }) => {
                return Err(format!("the server (pid {}) refused the load ({status}): {message}", admin.pid()))
            }
            // Unreachable: as if no server ran (the lock tells).
            Err(e) => tracing::warn!(error = %e, "the server named in .admin does not answer"),
        }
    } else if let Some(stale) = crate::admin::discovery::stale(&settings.image_path) {
        eprintln!(
            "note: {} names pid {}, which no longer holds the image path's lock (a server that stopped \
             uncleanly): loading into the image path itself",
            Layout::new(&settings.image_path).admin_file().display(),
            stale.pid
        );
    }
    let store = open_store(&settings)?;
    let jobs = args.jobs.unwrap_or(NonZeroUsize::new(DEFAULT_JOBS).expect("non-zero"));
    Ok(Prepared::Local(Local {
        settings: Arc::new(settings),
        inputs,
        options: Options { platforms, jobs, pin: args.pin, resolve_ref },
        store,
        _log: log,
    }))
}

fn open_store(settings: &Settings) -> Result<Arc<Store>, String> {
    let store = Store::open(&settings.image_path, settings.memory).map_err(|e| match e {
        OpenError::Locked { path, pid } => format!(
            "a server (or another load or verify) owns the image path {}: {} holds its lock {}, and no running \
             server could be reached through its .admin file to load through it: stop it and load, or give \
             the server the list with serve --preload-images",
            path.display(),
            pid.map_or_else(|| "a process".to_string(), |p| format!("pid {p}")),
            Layout::new(&path).lock_file().display()
        ),
        other => other.to_string(),
    })?;
    Ok(Arc::new(store))
}

fn execute(p: Local) -> Outcome {
    crate::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(256)
        .thread_name("load")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the fetch runtime: {e}");
            return Outcome::NotRun;
        }
    };
    let metrics = crate::metrics::Metrics::default();
    let (_stop, shutdown) = watch::channel(false);
    let fetch = match crate::fetch::start(
        runtime.handle(),
        p.settings.clone(),
        p.store.clone(),
        shutdown,
        metrics.block(),
        metrics.upstreams.clone(),
    ) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: upstream configuration: {e}");
            return Outcome::NotRun;
        }
    };
    let items = p.inputs.iter().map(|i| match i {
        Input::List { lines, .. } => lines.len() as u64,
        Input::Tarball { .. } => 1,
    });
    let progress = Progress::for_cli(items.sum());
    let summary = runtime.block_on(load(p.store.clone(), fetch, p.inputs, &p.options, &progress));
    progress.finish();
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    report(&summary)
}

/// Follows the server's load job: its lines as they come (an overall bar on
/// a terminal), then the summary, as a local load prints them.
fn follow(admin: &crate::admin::client::AdminClient, id: &str, items: u64) -> Outcome {
    eprintln!("a server (pid {}) runs on the image path: loading through it (admin job {id})", admin.pid());
    let progress = Progress::for_cli(items);
    let mut printed = 0u64;
    let mut done = 0u64;
    let result = admin.wait(id, std::time::Duration::from_millis(200), |status| {
        for (i, line) in status.lines.iter().enumerate() {
            let n = status.lines_dropped + i as u64;
            if n >= printed {
                progress.line(line);
                printed = n + 1;
            }
        }
        let now = status.counters.get("done").copied().unwrap_or(0);
        for _ in done..now {
            progress.image_done();
        }
        done = done.max(now);
    });
    progress.finish();
    let status = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: lost track of the server's load job {id} (it may still run): {e}");
            return Outcome::NotRun;
        }
    };
    let summary = match (status.state.as_str(), status.report) {
        ("done", Some(report)) => serde_json::from_value::<Summary>(report),
        _ => {
            let why = status.error.unwrap_or_else(|| "no report".to_string());
            eprintln!("error: the server's load job {id} did not finish: {why}");
            return Outcome::NotRun;
        }
    };
    match summary {
        Ok(summary) => report(&summary),
        Err(e) => {
            eprintln!("error: the server's load job {id} gave a report this load cannot read: {e}");
            Outcome::NotRun
        }
    }
}

/// Prints the summary (standard output) and each failure (standard error).
fn report(summary: &Summary) -> Outcome {
    println!("{summary}");
    if !summary.failed.is_empty() {
        eprintln!("error: {} could not be loaded:", plural(summary.failed.len(), "image"));
        for (what, why) in &summary.failed {
            eprintln!("  {what}: {why}");
        }
    }
    summary.outcome()
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
