//! `POST /cmd/prune`: the same [`prune`] on a running server's store, as an
//! exclusive admin job (no global lock: pulls go on, see the module above).
//! `ociregistry prune` hands its work here when a server owns the image
//! path, and prints the report as a local prune does.
//!
//! Body (JSON, every key optional, at least one selecting):
//! `{"pattern": "RE,RE", "createdBefore": unix-secs, "accessedBefore":
//! unix-secs, "maxSize": bytes, "count": n, "dryRun": bool}`. Counters:
//! `images` (counting up as they go), `manifests`, `blobs`, `freed`,
//! `errors`; each image's lines as it is removed (the image, then the
//! manifests and blobs it freed), then one per error and the summary. The report:
//! `{"images", "manifests", "blobs", "freed", "errors", "dryRun", "lines"}`
//! (`lines` is exactly what the command prints).
//!
//! Go's `DELETE /cmd/prune?type=accessed|created|pattern&dur=…&expr=…&count=…&dryRun=…`
//! is mapped onto the same body by [`body_from_go_query`] (Go's defaults:
//! `dryRun` true, `count` 50, `-1` for all) and answered with the text of the
//! lines, as Go answers its log.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{prune_with, Criteria, Pins};
use crate::admin::command;
use crate::admin::{JobContext, JobFuture};
use crate::config::patterns::Patterns;
use crate::ops::criteria::parse_duration;

/// What a prune job is asked: the criteria, already resolved to absolute values.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PruneBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accessed_before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    #[serde(default)]
    pub dry_run: bool,
}

impl PruneBody {
    /// The body for `criteria` (the pattern as the user wrote it).
    pub fn new(criteria: &Criteria, pattern: Option<&str>, dry_run: bool) -> PruneBody {
        PruneBody {
            pattern: pattern.map(str::to_string),
            created_before: criteria.created_before,
            accessed_before: criteria.accessed_before,
            max_size: criteria.max_size,
            count: criteria.count,
            dry_run,
        }
    }

    pub fn criteria(&self) -> Result<Criteria, String> {
        let c = Criteria {
            patterns: self.pattern.as_deref().map(Patterns::parse).transpose().map_err(|e| format!("pattern: {e}"))?,
            created_before: self.created_before,
            accessed_before: self.accessed_before,
            max_size: self.max_size,
            count: self.count,
        };
        if !c.selects() {
            return Err("say what to prune: pattern, createdBefore, accessedBefore or maxSize".into());
        }
        Ok(c)
    }
}

/// The job kind (see [`crate::admin::JobKind`]).
pub fn start(ctx: JobContext, body: &[u8]) -> Result<JobFuture, String> {
    let body: PruneBody = serde_json::from_slice(body).map_err(|e| format!("prune takes a JSON body: {e}"))?;
    let criteria = body.criteria()?;
    let patterns = Patterns::from_entries(ctx.env.settings.pinned.iter().map(String::as_str))
        .map_err(|e| format!("pinned: {e}"))?;
    Ok(Box::pin(async move {
        let runtime = ctx.env.runtime.clone();
        runtime
            .spawn_blocking(move || {
                let exact =
                    ctx.env.store.pins().map_err(|e| format!("cannot read the pins: {e}"))?.into_iter().collect();
                let pins = Pins { exact, patterns: (!patterns.is_empty()).then_some(patterns) };
                let p = &ctx.progress;
                let mut images = 0;
                // Each image's lines as it goes, so the command (and GET /cmd/jobs/<id>) follow the prune.
                let report = prune_with(&ctx.env.store, &criteria, &pins, body.dry_run, |lines| {
                    images += 1;
                    p.set("images", images);
                    for line in lines {
                        tracing::info!(target: "prune", "{line}");
                        p.line(line);
                    }
                });
                p.set("images", report.plan.images.len() as u64);
                p.set("manifests", report.plan.manifests.len() as u64);
                p.set("blobs", report.plan.blobs.len() as u64);
                p.set("freed", report.plan.freed);
                p.set("errors", report.errors.len() as u64);
                for line in report.closing_lines() {
                    tracing::info!(target: "prune", "{line}");
                    p.line(line);
                }
                let lines = report.lines(false);
                Ok(json!({
                    "images": report.plan.images.len(),
                    "manifests": report.plan.manifests.len(),
                    "blobs": report.plan.blobs.len(),
                    "freed": report.plan.freed,
                    "errors": report.errors.len(),
                    "dryRun": report.dry_run,
                    "lines": lines,
                }))
            })
            .await
            .map_err(|e| format!("prune stopped: {e}"))?
    }))
}

/// Go's query parameters as a prune body, at `now` (unix seconds); `count`
/// is read as the list commands read it.
pub fn body_from_go_query(query: &str, now: u64) -> Result<PruneBody, String> {
    let param = |key: &str| command::param(query, key);
    let dry_run = match param("dryRun").as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => true,
        Some("true" | "1" | "t") => true,
        Some("false" | "0" | "f") => false,
        Some(other) => return Err(format!("invalid dry run param: {other}")),
    };
    let count = command::count(query)?.0;
    let dur = || -> Result<u64, String> {
        let d = param("dur").ok_or("dur is required for this type (e.g. 30d)")?;
        parse_duration(&d).map(|secs| now.saturating_sub(secs)).map_err(|e| format!("dur: {e}"))
    };
    let mut body = PruneBody { count, dry_run, ..PruneBody::default() };
    match param("type").as_deref() {
        Some("accessed") => body.accessed_before = Some(dur()?),
        Some("created") => body.created_before = Some(dur()?),
        Some("pattern") => {
            let expr = param("expr").filter(|e| !e.is_empty()).ok_or("expr is required for type pattern")?;
            Patterns::parse(&expr).map_err(|e| format!("expr: {e}"))?;
            body.pattern = Some(expr);
        }
        other => return Err(format!("type {other:?} is not one of accessed, created or pattern")),
    }
    Ok(body)
}

/// The lines of a finished prune job's report, as text.
pub fn report_text(report: &Value) -> String {
    let mut text = String::new();
    for line in report["lines"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        text.push_str(line);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_parameters_map_onto_the_criteria() {
        let b = body_from_go_query("type=pattern&expr=team%2Fa,nginx", 1000).unwrap();
        assert_eq!((b.pattern.as_deref(), b.dry_run, b.count), (Some("team/a,nginx"), true, Some(50)));
        let b = body_from_go_query("type=accessed&dur=10s&dryRun=false&count=-1", 1000).unwrap();
        assert_eq!((b.accessed_before, b.dry_run, b.count), (Some(990), false, None));
        let b = body_from_go_query("type=created&dur=1m&count=3", 1000).unwrap();
        assert_eq!((b.created_before, b.count), (Some(940), Some(3)));
        for bad in ["type=x", "type=accessed", "type=pattern", "type=pattern&expr=(", "type=pattern&expr=a&dryRun=x"] {
            assert!(body_from_go_query(bad, 1000).is_err(), "{bad}");
        }
        let body = serde_json::to_vec(&b).unwrap();
        assert!(serde_json::from_slice::<PruneBody>(&body).unwrap().criteria().is_ok());
        assert!(PruneBody::default().criteria().is_err());
    }
}
