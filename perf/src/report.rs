//! The run's report: a human table and the same figures as JSON.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::accesslog::UpstreamCounts;
use crate::pull::{since, ErrorKind};
use crate::reference::ImageRef;
use crate::stats::{summarize, Summary};
use crate::{Args, Outcome};

/// How many error messages the report keeps verbatim.
const ERROR_SAMPLES: usize = 10;

#[derive(Serialize)]
pub struct Report {
    pub registry: String,
    pub ns: Option<String>,
    pub images: Vec<String>,
    pub platform: String,
    pub nodes: usize,
    pub images_per_node: usize,
    pub repetitions: usize,
    pub ramp_ms: u64,
    pub duration_secs: u64,
    pub layer_concurrency: usize,
    pub range_chunk_bytes: u64,
    pub range_parallel: usize,
    pub connections_per_node: Option<usize>,
    /// The run hit --duration-secs and stopped the pulls still going.
    pub stopped_by_deadline: bool,
    pub pulls: Pulls,
    /// From the start of the run until the last node finished (or the deadline).
    pub all_done_secs: f64,
    /// Latency of successful pulls, from the HEAD to the last verified blob byte.
    pub latency_secs: Summary,
    pub first_blob_byte: FirstByte,
    pub images_per_sec: f64,
    /// Body bytes received (manifests and blobs, including failed and stopped pulls).
    pub bytes_total: u64,
    pub bytes_per_sec: f64,
    /// Distinct config and layer bytes of the images pulled (each digest once).
    pub image_bytes: u64,
    pub errors: BTreeMap<ErrorKind, u64>,
    pub error_samples: Vec<String>,
    /// Layers fetched whole because the server answered a Range chunk with 200.
    pub range_fallbacks: u64,
    pub upstream: Option<Upstream>,
    /// The server's own counters over the run (`--metrics-url`).
    pub server: Option<crate::counters::ServerCounters>,
}

#[derive(Serialize)]
pub struct Pulls {
    pub started: usize,
    pub ok: usize,
    pub failed: usize,
    /// Started but stopped by the deadline.
    pub incomplete: usize,
}

/// When each node's first pull received the first body byte of its image's first layer.
#[derive(Serialize, Default)]
pub struct FirstByte {
    /// The node that got its first byte earliest, and the one that got it latest (by time since run start).
    pub first_node: Option<NodeFirstByte>,
    pub last_node: Option<NodeFirstByte>,
    /// last_node.at_secs − first_node.at_secs (includes --ramp-ms).
    pub spread_secs: Option<f64>,
    /// Time from each node's start to its first byte.
    pub after_node_start_secs: Summary,
}

#[derive(Serialize, Clone)]
pub struct NodeFirstByte {
    pub node: usize,
    /// Since the start of the run.
    pub at_secs: f64,
    /// Since that node started.
    pub after_node_start_secs: f64,
}

#[derive(Serialize)]
pub struct Upstream {
    pub pattern: String,
    #[serde(flatten)]
    pub counts: UpstreamCounts,
    /// Upstream blob bytes / image_bytes: 1.0 is one download per blob.
    pub bytes_per_image_bytes: Option<f64>,
}

impl Report {
    pub fn verification_failed(&self) -> bool {
        self.errors.keys().any(|k| k.is_verification())
    }
}

pub fn build(args: &Args, images: &[ImageRef], o: &Outcome, upstream: Option<UpstreamCounts>) -> Report {
    let ok: Vec<_> = o.records.iter().filter(|r| r.result.is_ok()).collect();
    let mut errors = BTreeMap::new();
    let mut error_samples = Vec::new();
    for r in &o.records {
        if let Err(e) = &r.result {
            *errors.entry(e.kind).or_insert(0) += 1;
            if error_samples.len() < ERROR_SAMPLES {
                error_samples.push(format!("node {} {}: {:?}: {}", r.node, images[r.image], e.kind, e.message));
            }
        }
    }
    let end = if o.stopped_by_deadline { o.end } else { o.records.iter().map(|r| r.end).max().unwrap_or(o.end) };
    let all_done = since(o.t0, end).as_secs_f64();

    let firsts: Vec<NodeFirstByte> = o
        .records
        .iter()
        .filter(|r| r.first_of_node)
        .filter_map(|r| {
            let fb = r.info.first_blob_byte?;
            Some(NodeFirstByte {
                node: r.node,
                at_secs: since(o.t0, fb).as_secs_f64(),
                after_node_start_secs: since(r.node_start, fb).as_secs_f64(),
            })
        })
        .collect();
    let after_start =
        summarize(firsts.iter().map(|f| std::time::Duration::from_secs_f64(f.after_node_start_secs)).collect());
    let pick = |best: fn(f64, f64) -> bool| {
        firsts.iter().fold(None::<&NodeFirstByte>, |acc, f| match acc {
            Some(a) if !best(f.at_secs, a.at_secs) => Some(a),
            _ => Some(f),
        })
    };
    let first_node = pick(|x, y| x < y).cloned();
    let last_node = pick(|x, y| x > y).cloned();
    let spread_secs = match (&first_node, &last_node) {
        (Some(a), Some(b)) => Some(b.at_secs - a.at_secs),
        _ => None,
    };

    let mut distinct: HashMap<&str, u64> = HashMap::new();
    for r in &o.records {
        for (d, s) in &r.info.blobs {
            distinct.insert(d, *s);
        }
    }
    let image_bytes: u64 = distinct.values().sum();
    let bytes_total = o.totals.bytes.load(Ordering::Relaxed);
    let secs = all_done.max(1e-9);
    let upstream = upstream.map(|counts| Upstream {
        pattern: args.upstream_log_pattern.clone(),
        bytes_per_image_bytes: (image_bytes > 0).then(|| counts.bytes as f64 / image_bytes as f64),
        counts,
    });
    Report {
        registry: args.registry.clone(),
        ns: args.ns.clone(),
        images: images.iter().map(ToString::to_string).collect(),
        platform: args.platform.clone(),
        nodes: args.nodes,
        images_per_node: args.images_per_node,
        repetitions: args.repetitions,
        ramp_ms: args.ramp_ms,
        duration_secs: args.duration_secs,
        layer_concurrency: args.layer_concurrency,
        range_chunk_bytes: args.range_chunk_bytes,
        range_parallel: args.range_parallel,
        connections_per_node: args.connections_per_node,
        stopped_by_deadline: o.stopped_by_deadline,
        pulls: Pulls {
            started: o.started,
            ok: ok.len(),
            failed: o.records.len() - ok.len(),
            incomplete: o.started.saturating_sub(o.records.len()),
        },
        all_done_secs: all_done,
        latency_secs: summarize(ok.iter().map(|r| r.end - r.start).collect()),
        first_blob_byte: FirstByte { first_node, last_node, spread_secs, after_node_start_secs: after_start },
        images_per_sec: ok.len() as f64 / secs,
        bytes_total,
        bytes_per_sec: bytes_total as f64 / secs,
        image_bytes,
        errors,
        error_samples,
        range_fallbacks: o.totals.range_fallbacks.load(Ordering::Relaxed),
        upstream,
        server: None,
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |s| format!("{:.1} ms", s * 1000.0))
}

fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} {}", UNITS[i])
    } else {
        format!("{v:.2} {}", UNITS[i])
    }
}

/// The human-readable table.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let mut row = |k: &str, v: String| {
        let _ = writeln!(s, "  {k:<32} {v}");
    };
    row("registry", format!("{}{}", r.registry, r.ns.as_ref().map(|n| format!(" (ns={n})")).unwrap_or_default()));
    row("images", r.images.join(", "));
    row(
        "nodes × pulls",
        format!(
            "{} nodes × {} image(s) × {} repetition(s), ramp {} ms",
            r.nodes, r.images_per_node, r.repetitions, r.ramp_ms
        ),
    );
    row(
        "fetch",
        format!(
            "{} blobs at once{}{}",
            r.layer_concurrency,
            if r.range_chunk_bytes > 0 {
                format!(", Range chunks of {} × {}", human_bytes(r.range_chunk_bytes as f64), r.range_parallel)
            } else {
                String::new()
            },
            r.connections_per_node.map(|c| format!(", ≤{c} connections/node")).unwrap_or_default(),
        ),
    );
    row(
        "pulls",
        format!(
            "{} ok, {} failed, {} incomplete (of {} started){}",
            r.pulls.ok,
            r.pulls.failed,
            r.pulls.incomplete,
            r.pulls.started,
            if r.stopped_by_deadline { " — STOPPED at --duration-secs" } else { "" }
        ),
    );
    let l = &r.latency_secs;
    row("pull latency p50/p90/p99/max", format!("{} / {} / {} / {}", ms(l.p50), ms(l.p90), ms(l.p99), ms(l.max)));
    let fb = &r.first_blob_byte;
    if let (Some(a), Some(b)) = (&fb.first_node, &fb.last_node) {
        let node = |n: &NodeFirstByte| {
            format!(
                "node {} at {} ({} after its start)",
                n.node,
                ms(Some(n.at_secs)),
                ms(Some(n.after_node_start_secs))
            )
        };
        row("first layer byte: first node", node(a));
        row("first layer byte: last node", node(b));
        row("first layer byte: spread", ms(fb.spread_secs));
    } else {
        row("first layer byte", "-".into());
    }
    row("all nodes done", format!("{:.3} s", r.all_done_secs));
    row("images/s", format!("{:.2}", r.images_per_sec));
    row("bytes/s", format!("{}/s", human_bytes(r.bytes_per_sec)));
    row("bytes total", format!("{} ({} B)", human_bytes(r.bytes_total as f64), r.bytes_total));
    row("image bytes (distinct blobs)", format!("{} ({} B)", human_bytes(r.image_bytes as f64), r.image_bytes));
    if r.range_chunk_bytes > 0 {
        row("Range ignored → whole fetch", r.range_fallbacks.to_string());
    }
    if r.errors.is_empty() {
        row("errors", "none".into());
    } else {
        let list: Vec<String> = r.errors.iter().map(|(k, v)| format!("{}: {v}", kind_name(*k))).collect();
        row("errors", list.join(", "));
    }
    if let Some(u) = &r.upstream {
        row(
            "upstream GETs (pattern)",
            format!("{} ({} ok, {} HEAD) matching {:?}", u.counts.gets, u.counts.gets_ok, u.counts.heads, u.pattern),
        );
        row("upstream bytes", format!("{} ({} B)", human_bytes(u.counts.bytes as f64), u.counts.bytes));
        row("upstream bytes / image bytes", u.bytes_per_image_bytes.map_or("-".into(), |x| format!("{x:.3}")));
    }
    if let Some(c) = &r.server {
        row("server: upstream blob requests", format!("{}", c.upstream_blob_requests));
        row(
            "server: upstream blob bytes",
            format!("{} ({} B)", human_bytes(c.upstream_blob_bytes), c.upstream_blob_bytes),
        );
        row(
            "server: upstream bytes / image bytes",
            c.upstream_bytes_per_image_bytes.map_or("-".into(), |x| format!("{x:.3}")),
        );
        for (series, delta) in &c.changed {
            let _ = writeln!(s, "    {series} +{delta}");
        }
    }
    for e in &r.error_samples {
        let _ = writeln!(s, "  ! {e}");
    }
    s
}

fn kind_name(k: ErrorKind) -> String {
    serde_json::to_value(k).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| format!("{k:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.50 KiB");
        assert_eq!(human_bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.00 GiB");
    }

    #[test]
    fn error_kinds_are_snake_case() {
        assert_eq!(kind_name(ErrorKind::DigestMismatch), "digest_mismatch");
        assert_eq!(kind_name(ErrorKind::ShortBody), "short_body");
    }
}
