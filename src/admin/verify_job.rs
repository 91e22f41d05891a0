//! `POST /cmd/verify`: `ociregistry verify` on a running server's store,
//! read-only. Each recorded object is checked (present, of its size,
//! hashing to its digest, a manifest parsing) one file at a time on a
//! blocking thread, and orphan files are counted; nothing is removed and the
//! lock is not needed. Content removed while the job runs (a prune) is not a
//! problem, and a file committed while it runs is not an orphan: both are
//! checked again before they are reported.
//!
//! Body: empty, or `{}`. Counters: `objects`, `bytesTotal`, `checked`,
//! `bytes`, `ok`, `damaged`, `missing`, `orphans`; one line per problem; the
//! report is the summary's counts and its line.

use serde::Deserialize;
use serde_json::{json, Value};

use super::jobs::{JobContext, JobFuture};
use crate::ops::verify::check::{self, Class, Problem};
use crate::ops::verify::Summary;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {}

/// The job kind (see [`super::jobs::JobKind`]).
pub fn start(ctx: JobContext, body: &[u8]) -> Result<JobFuture, String> {
    if !body.iter().all(u8::is_ascii_whitespace) {
        serde_json::from_slice::<Options>(body).map_err(|e| format!("verify takes an empty body or {{}}: {e}"))?;
    }
    Ok(Box::pin(async move {
        let runtime = ctx.env.runtime.clone();
        runtime.spawn_blocking(move || run(&ctx)).await.map_err(|e| format!("verify stopped: {e}"))?
    }))
}

fn run(ctx: &JobContext) -> Result<Value, String> {
    let (store, progress) = (&ctx.env.store, &ctx.progress);
    let mut records = store.records();
    records.sort_by(|a, b| a.0.cmp(&b.0));
    progress.set("objects", records.len() as u64);
    progress.set("bytesTotal", records.iter().map(|(_, r)| r.size).sum());
    let mut summary = Summary { objects: records.len() as u64, ..Summary::default() };
    let mut buffer = vec![0; check::BUFFER];
    let tally = |summary: &mut Summary, problem: Option<&Problem>| {
        let counter = match problem.map(Problem::class) {
            None => {
                summary.ok += 1;
                "ok"
            }
            Some(Class::Damaged) => {
                summary.damaged += 1;
                "damaged"
            }
            Some(Class::Missing) => {
                summary.missing += 1;
                "missing"
            }
            Some(Class::Orphan) => {
                summary.orphans += 1;
                "orphans"
            }
        };
        progress.add(counter, 1);
        if let Some(p) = problem {
            progress.line(p);
        }
    };
    for (digest, record) in &records {
        if ctx.stopping() {
            return Err("the server is shutting down".to_string());
        }
        let path = store.layout().blob(digest);
        let checked = check::check(&path, digest, record, &mut buffer, |n| progress.add("bytes", n));
        summary.bytes += checked.hashed;
        progress.add("checked", 1);
        // Removed since the list was taken: gone on purpose, not damaged.
        let problem = checked.problem.filter(|_| store.record(digest).is_some());
        if problem.is_none() && store.record(digest).is_none() {
            summary.objects -= 1;
            continue;
        }
        tally(&mut summary, problem.as_ref());
    }
    let orphans = store.orphans().map_err(|e| format!("cannot list {}: {e}", store.layout().blobs_dir().display()))?;
    for orphan in orphans {
        // A commit renames its file in before it records it.
        if store.layout().digest_of_blob(&orphan.path).is_some_and(|d| store.record(&d).is_some()) {
            continue;
        }
        let path = orphan.path.strip_prefix(store.layout().root()).unwrap_or(&orphan.path).to_path_buf();
        tally(&mut summary, Some(&Problem::Orphan { path, size: orphan.size }));
    }
    Ok(json!({
        "objects": summary.objects,
        "bytes": summary.bytes,
        "ok": summary.ok,
        "damaged": summary.damaged,
        "missing": summary.missing,
        "orphans": summary.orphans,
        "summary": summary.to_string(),
    }))
}
