//! `ociregistry-perf`: pulls images the way a booting cluster does, against any OCI registry, and reports
//! latency, throughput, time to first byte across nodes, errors, and (from an upstream's access log) how
//! many bytes the upstream had to send. See perf/README.md.

mod accesslog;
mod chunks;
mod counters;
mod manifest;
mod pull;
mod reference;
mod report;
mod stats;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use tokio::sync::Semaphore;

use crate::manifest::Platform;
use crate::pull::{Node, PullConfig, PullError, PullInfo, Totals};
use crate::reference::ImageRef;

/// Exit status when any pull received a wrong, short or over-long body.
const EXIT_VERIFICATION: u8 = 3;
/// Exit status when pulls failed otherwise (status, connection, timeout, manifest).
const EXIT_PULL_FAILED: u8 = 1;

/// Pull images the way a booting cluster of containerd nodes does, verifying every byte, and report.
#[derive(Parser, Debug, Clone)]
#[command(name = "ociregistry-perf", version)]
pub struct Args {
    /// Registry base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub registry: String,

    /// Image as NAME[:TAG][@DIGEST]; NAME may start with an upstream host (path style,
    /// 127.0.0.1:5000/test/app:v1). Repeatable: node i pulls image i mod count.
    #[arg(long = "image", required = true)]
    pub images: Vec<String>,

    /// Append ?ns=<REGISTRY, percent-encoded> to every request, as containerd does with a mirror.
    #[arg(long)]
    pub ns: Option<String>,

    /// Simulated nodes pulling concurrently.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,

    /// Images each node pulls per repetition, taken in turn from the --image list.
    #[arg(long, default_value_t = 1)]
    pub images_per_node: usize,

    /// Times each node pulls its image(s); every pull downloads everything again.
    #[arg(long, default_value_t = 1)]
    pub repetitions: usize,

    /// Spread node starts evenly over this many milliseconds (0: all at once).
    #[arg(long, default_value_t = 0)]
    pub ramp_ms: u64,

    /// Hard bound on the run: stop every pull and report after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub duration_secs: u64,

    /// Platform to pick from an index or manifest list: os/arch[/variant].
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,

    /// Blobs (config and layers) fetched at once per pull (containerd's max_concurrent_downloads).
    #[arg(long, default_value_t = 3)]
    pub layer_concurrency: usize,

    /// Fetch each blob of at least N bytes as N-byte Range requests, like containerd 2.x (0: off).
    #[arg(long, default_value_t = 0)]
    pub range_chunk_bytes: u64,

    /// Range chunks of one blob fetched at once.
    #[arg(long, default_value_t = 4)]
    pub range_parallel: usize,

    /// Cap a node's simultaneous connections (requests wait for one). Default: one keep-alive pool per
    /// node that grows as needed, like a real node. 0: no keep-alive, a new connection per request.
    #[arg(long)]
    pub connections_per_node: Option<usize>,

    /// Tokio worker threads (default: the number of CPUs).
    #[arg(long)]
    pub threads: Option<usize>,

    /// Accept any TLS certificate from the registry.
    #[arg(long)]
    pub insecure: bool,

    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// An upstream's access log (CNCF distribution combined format): report the blob GETs and bytes it
    /// served during the run.
    #[arg(long)]
    pub upstream_access_log: Option<PathBuf>,

    /// Which access-log request paths count as upstream blob downloads (substring).
    #[arg(long, default_value = "blobs/")]
    pub upstream_log_pattern: String,

    /// Wait this long after the pulls before reading the access log (the upstream may still be logging).
    #[arg(long, default_value_t = 300)]
    pub upstream_log_settle_ms: u64,

    /// ociregistry's metrics (`serve --metrics PORT`), e.g. http://127.0.0.1:9090/metrics: scraped before
    /// and after the run to report the upstream requests and bytes it cost the server, and every
    /// counter that changed.
    #[arg(long)]
    pub metrics_url: Option<String>,
}

/// One pull as it ended.
pub struct PullRecord {
    pub node: usize,
    pub image: usize,
    pub first_of_node: bool,
    pub node_start: Instant,
    pub start: Instant,
    pub end: Instant,
    pub info: PullInfo,
    pub result: Result<(), PullError>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("ociregistry-perf: {e:#}");
            std::process::ExitCode::from(EXIT_PULL_FAILED)
        }
    }
}

fn run(args: Args) -> Result<u8> {
    let images: Vec<ImageRef> =
        args.images.iter().map(|s| reference::parse(s)).collect::<Result<_, _>>().map_err(anyhow::Error::msg)?;
    let platform = Platform::parse(&args.platform).map_err(anyhow::Error::msg)?;
    let registry = args.registry.trim_end_matches('/').to_string();
    if !(registry.starts_with("http://") || registry.starts_with("https://")) {
        bail!("--registry {registry:?}: expected http://HOST:PORT or https://HOST:PORT");
    }
    if args.nodes == 0 || args.repetitions == 0 || args.images_per_node == 0 {
        bail!("--nodes, --repetitions and --images-per-node must be at least 1");
    }
    if args.layer_concurrency == 0 || args.range_parallel == 0 {
        bail!("--layer-concurrency and --range-parallel must be at least 1");
    }
    if args.duration_secs == 0 {
        bail!("--duration-secs must be at least 1");
    }
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let log_start = match &args.upstream_access_log {
        Some(p) => Some(accesslog::current_len(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };

    let cfg = PullConfig {
        registry,
        query: args.ns.as_deref().map(|ns| format!("?ns={}", reference::query_encode(ns))).unwrap_or_default(),
        platform,
        layer_concurrency: args.layer_concurrency,
        range_chunk_bytes: args.range_chunk_bytes,
        range_parallel: args.range_parallel,
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build().context("starting the tokio runtime")?;
    let counters_before = match &args.metrics_url {
        Some(url) => Some(rt.block_on(counters::scrape(url))?),
        None => None,
    };
    let outcome = rt.block_on(drive(&args, Arc::new(cfg), Arc::new(images.clone())))?;
    let counters_after = match (&args.metrics_url, counters_before) {
        (Some(url), Some(before)) => {
            std::thread::sleep(Duration::from_millis(args.upstream_log_settle_ms.min(10_000)));
            Some((url.clone(), before, rt.block_on(counters::scrape(url))?))
        }
        _ => None,
    };
    // Dropping the runtime waits for nothing: aborted tasks are gone, idle connections close.
    rt.shutdown_timeout(Duration::from_secs(2));

    let upstream = match (&args.upstream_access_log, log_start) {
        (Some(path), Some(from)) => {
            std::thread::sleep(Duration::from_millis(args.upstream_log_settle_ms.min(10_000)));
            Some(
                accesslog::count_since(path, from, &args.upstream_log_pattern)
                    .with_context(|| format!("reading {}", path.display()))?,
            )
        }
        _ => None,
    };
    let mut report = report::build(&args, &images, &outcome, upstream);
    if let Some((url, before, after)) = counters_after {
        report.server = Some(counters::difference(&url, &before, &after, report.image_bytes));
    }
    print!("{}", report::table(&report));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.verification_failed() {
        EXIT_VERIFICATION
    } else if report.pulls.failed > 0 {
        EXIT_PULL_FAILED
    } else {
        0
    })
}

/// What a run produced, for the report.
pub struct Outcome {
    pub t0: Instant,
    pub end: Instant,
    pub stopped_by_deadline: bool,
    pub started: usize,
    pub records: Vec<PullRecord>,
    pub totals: Arc<Totals>,
}

async fn drive(args: &Args, cfg: Arc<PullConfig>, images: Arc<Vec<ImageRef>>) -> Result<Outcome> {
    let totals = Arc::new(Totals::default());
    let records = Arc::new(Mutex::new(Vec::new()));
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Every node's client is built before the clock starts: building one loads TLS roots (milliseconds),
    // which would otherwise stagger the node starts and show up as time-to-first-byte spread.
    let mut nodes = Vec::with_capacity(args.nodes);
    for _ in 0..args.nodes {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("ociregistry-perf/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .danger_accept_invalid_certs(args.insecure);
        let connections = match args.connections_per_node {
            None => None,
            Some(0) => {
                builder = builder.pool_max_idle_per_host(0);
                None
            }
            Some(c) => {
                builder = builder.pool_max_idle_per_host(c);
                Some(Arc::new(Semaphore::new(c)))
            }
        };
        nodes.push(Node { client: builder.build().context("building the HTTP client")?, connections });
    }
    let t0 = Instant::now();
    let deadline = tokio::time::Instant::from_std(t0 + Duration::from_secs(args.duration_secs));
    let mut set = tokio::task::JoinSet::new();
    for (n, node) in nodes.into_iter().enumerate() {
        // Node n starts at t0 + its share of the ramp, whenever the spawn loop gets there.
        let start_at = tokio::time::Instant::from_std(t0)
            + if args.nodes > 1 {
                Duration::from_millis(args.ramp_ms * n as u64 / (args.nodes as u64 - 1))
            } else {
                Duration::ZERO
            };
        let (cfg, images, totals, records, started) =
            (cfg.clone(), images.clone(), totals.clone(), records.clone(), started.clone());
        let (reps, per_node) = (args.repetitions, args.images_per_node);
        set.spawn(async move {
            tokio::time::sleep_until(start_at).await;
            let node_start = Instant::now();
            let mut first = true;
            for _rep in 0..reps {
                for k in 0..per_node {
                    let image = (n * per_node + k) % images.len();
                    started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let start = Instant::now();
                    let mut info = PullInfo::default();
                    let result = pull::pull(&cfg, &node, &totals, &images[image], &mut info).await;
                    let rec = PullRecord {
                        node: n,
                        image,
                        first_of_node: first,
                        node_start,
                        start,
                        end: Instant::now(),
                        info,
                        result,
                    };
                    first = false;
                    records.lock().unwrap().push(rec);
                }
            }
        });
    }
    let mut stopped_by_deadline = false;
    loop {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Ok(Some(r)) => {
                if let Err(e) = r {
                    if e.is_panic() {
                        bail!("a node task panicked: {e}");
                    }
                }
            }
            Ok(None) => break,
            Err(_) => {
                stopped_by_deadline = true;
                set.abort_all();
                // Aborted tasks end at their next await point; bound the wait anyway.
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), async { while set.join_next().await.is_some() {} })
                        .await;
                break;
            }
        }
    }
    let end = if stopped_by_deadline { deadline.into_std() } else { Instant::now() };
    let records = std::mem::take(&mut *records.lock().unwrap());
    Ok(Outcome {
        t0,
        end,
        stopped_by_deadline,
        started: started.load(std::sync::atomic::Ordering::Relaxed),
        records,
        totals,
    })
}
