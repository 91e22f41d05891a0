//! The `prune` command: parses its flags into [`Criteria`], reads the pins
//! (the pins file and the config's `pinned:` patterns), takes the image
//! path's lock and prunes. While a server owns the image path (its
//! `.admin` file names it) the prune is handed to it as a `prune` admin job
//! (see `job`) and its report printed the same way; if the server's admin
//! API cannot be reached the command refuses, naming the server's pid (a
//! `--dry-run` then plans from the files beside the server, see `store::peek`).
//! A `.admin` left by a server that stopped uncleanly (its pid no longer holds
//! the lock) is ignored, with a note, and the command prunes the path itself.

use std::io::{self, Write};

use super::job::PruneRequest;
use super::{plan, prune_with, Criteria, Pins, Report};
use crate::cli::{Cli, PruneArgs};
use crate::config::duration::parse_secs;
use crate::config::patterns::Patterns;
use crate::config::size::parse as parse_size;
use crate::config::{CommonSettings, FileConfig};
use crate::go_time::parse_date;
use crate::store::{peek, Layout, MemoryLimits, OpenError, Store};

/// Runs the command; returns the exit status: 0 pruned (or nothing to
/// prune), 1 some removals failed, 2 could not run.
pub fn run(cli: &Cli, args: &PruneArgs) -> i32 {
    match run_checked(cli, args) {
        Ok(report) => {
            // The images' lines were printed as they went (see `print`).
            let mut out = io::stdout().lock();
            let rest = match &report.remote {
                Some(lines) => lines.clone(),
                None => report.closing_lines(),
            };
            for line in rest {
                let _ = writeln!(out, "{line}");
            }
            i32::from(!report.errors.is_empty())
        }
        Err(message) => {
            eprintln!("error: {message}");
            2
        }
    }
}

/// The criteria the flags give; an error names the flag.
pub fn criteria(args: &PruneArgs, now: u64) -> Result<Criteria, String> {
    let c = Criteria {
        patterns: args.pattern.as_deref().map(Patterns::parse).transpose().map_err(|e| format!("--pattern: {e}"))?,
        created_before: args.date.as_deref().map(parse_date).transpose().map_err(|e| format!("--date: {e}"))?,
        accessed_before: args
            .accessed_before
            .as_deref()
            .map(|d| parse_secs(d).map(|secs| now.saturating_sub(secs)))
            .transpose()
            .map_err(|e| format!("--accessed-before: {e}"))?,
        max_size: args.max_size.as_deref().map(parse_size).transpose().map_err(|e| format!("--max-size: {e}"))?,
        count: None,
    };
    if !c.selects() {
        return Err("say what to prune: --pattern, --date, --accessed-before or --max-size".into());
    }
    Ok(c)
}

enum Remote {
    /// The server was not reached: prune as if it did not run.
    Unreachable(String),
    /// The server ran (or refused) the job: this is the answer.
    Failed(String),
}

/// Prints lines at once (standard output, flushed: the prune may run long).
fn print(lines: &[String]) {
    let mut out = io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}

/// Runs the prune as a job of the server, printing its lines as they come;
/// the report holds the lines not printed yet.
fn remote(client: &crate::admin::client::AdminClient, criteria: &Criteria, args: &PruneArgs) -> Result<Report, Remote> {
    use crate::admin::client::ClientError;
    let request = PruneRequest { criteria: criteria.clone(), dry_run: args.dry_run };
    let body = serde_json::to_vec(&request).map_err(|e| Remote::Failed(e.to_string()))?;
    let id = client.start_job("prune", &body).map_err(|e| match e {
        ClientError::Io { .. } => Remote::Unreachable(e.to_string()),
        other => Remote::Failed(format!("the server (pid {}) refused the prune: {other}", client.pid())),
    })?;
    // Lines are followed while the job keeps every one since the last poll;
    // after a gap (it keeps only its last lines) the rest come from the report.
    let (mut printed, mut gap) = (0u64, false);
    let status = client
        .wait(&id, std::time::Duration::from_millis(100), |status| {
            if status.state != "running" || gap {
                return;
            }
            if status.lines_dropped > printed {
                gap = true;
                return;
            }
            let fresh = &status.lines[(printed - status.lines_dropped) as usize..];
            print(fresh);
            printed += fresh.len() as u64;
        })
        .map_err(|e| Remote::Failed(format!("lost the server's prune job {id}: {e}")))?;
    let Some(report) = status.report.filter(|_| status.state == "done") else {
        return Err(Remote::Failed(format!(
            "the server's prune job {id} failed: {}",
            status.error.unwrap_or_default()
        )));
    };
    let text = super::job::report_text(&report);
    let rest: String = text.lines().skip(printed as usize).flat_map(|l| [l, "\n"]).collect();
    Ok(Report::remote(rest, report["errors"].as_u64().unwrap_or(0) as usize))
}

fn run_checked(cli: &Cli, args: &PruneArgs) -> Result<Report, String> {
    let criteria = criteria(args, crate::store::tags::now_secs())?;
    let file = FileConfig::of(cli).map_err(|e| e.to_string())?;
    let patterns =
        Patterns::from_entries(file.pinned.iter().map(String::as_str)).map_err(|e| format!("pinned: {e}"))?;
    let settings = CommonSettings::resolve(cli).map_err(|e| e.to_string())?;
    let _log = crate::logging::init(
        settings.log_level.unwrap_or(crate::cli::LogLevel::Warn),
        settings.log_format,
        settings.log_file.as_deref(),
    )
    .map_err(|e| format!("{e:#}"))?;
    let root = &settings.image_path;
    let layout = Layout::new(root);
    if !layout.blobs_dir().is_dir() {
        return Err(format!("{} is not an image path (it has no blobs/ directory)", root.display()));
    }
    let mut unreachable = None;
    if let Some(client) = crate::admin::client::find_configured(root, file.admin.as_ref())? {
        match remote(&client, &criteria, args) {
            Ok(report) => return Ok(report),
            Err(Remote::Failed(m)) => return Err(m),
            Err(Remote::Unreachable(m)) => unreachable = Some(m),
        }
    } else if let Some(stale) = crate::admin::discovery::stale(root) {
        eprintln!(
            "note: {} names pid {}, which no longer holds the image path's lock (a server that stopped \
             uncleanly): pruning the image path itself",
            layout.admin_file().display(),
            stale.pid
        );
    }
    let read_pins = |exact| Pins { exact, patterns: (!patterns.is_empty()).then(|| patterns.clone()) };
    match Store::open(root, MemoryLimits::default()) {
        Ok(store) => {
            let pins = read_pins(store.pins().map_err(|e| format!("cannot read the pins: {e}"))?.into_iter().collect());
            Ok(prune_with(&store, &criteria, &pins, args.dry_run, print))
        }
        Err(OpenError::Locked { path, pid }) if args.dry_run => {
            let _ = pid;
            let exact = crate::store::pins::read(&layout.pins_file()).map_err(|e| format!("cannot read the pins: {e}"))?;
            let peeked = peek::catalog(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let plan = plan::plan(&peeked.images, &peeked.sizes, &criteria, &read_pins(exact.into_iter().collect()));
            let report = Report { plan, dry_run: true, ..Report::default() };
            for i in 0..report.plan.images.len() {
                print(&report.image_lines(i, false));
            }
            Ok(report)
        }
        Err(OpenError::Locked { path, pid }) => Err(format!(
            "a server owns the image path {}: {} holds its lock {}{}; stop it and prune again (or use --dry-run to see what would go)",
            path.display(),
            pid.map_or_else(|| "a process".to_string(), |p| format!("pid {p}")),
            layout.lock_file().display(),
            unreachable.map(|m| format!(", and its admin API does not answer ({m})")).unwrap_or_default()
        )),
        Err(other) => Err(other.to_string()),
    }
}
