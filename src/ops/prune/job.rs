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
//! is read into the same [`PruneRequest`] by [`from_go_query`] (Go's defaults:
//! `dryRun` true, `count` 50, `-1` for all) and answered with the text of the
//! lines, as Go answers its log.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{prune_with, Criteria, Pins};
use crate::admin::{JobContext, JobFuture};
use crate::config::duration::parse_secs;
use crate::config::patterns::Patterns;

/// What a prune job is asked, typed: the criteria (resolved to absolute
/// values) and whether to only plan. It is the job's body on the wire
/// ([`Body`]), read and checked in one conversion there: a request that
/// names no criterion, or a pattern that does not compile, is never made.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "Body", into = "Body")]
pub struct PruneRequest {
    pub criteria: Criteria,
    pub dry_run: bool,
}

/// A [`PruneRequest`] as JSON: the pattern as text, the rest as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Body {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    accessed_before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    count: Option<usize>,
    #[serde(default)]
    dry_run: bool,
}

impl TryFrom<Body> for PruneRequest {
    type Error = String;

    fn try_from(body: Body) -> Result<PruneRequest, String> {
        let criteria = Criteria {
            patterns: body.pattern.as_deref().map(Patterns::parse).transpose().map_err(|e| format!("pattern: {e}"))?,
            created_before: body.created_before,
            accessed_before: body.accessed_before,
            max_size: body.max_size,
            count: body.count,
        };
        if !criteria.selects() {
            return Err("say what to prune: pattern, createdBefore, accessedBefore or maxSize".into());
        }
        Ok(PruneRequest { criteria, dry_run: body.dry_run })
    }
}

impl From<PruneRequest> for Body {
    fn from(request: PruneRequest) -> Body {
        let c = request.criteria;
        Body {
            pattern: c.patterns.as_ref().map(Patterns::source),
            created_before: c.created_before,
            accessed_before: c.accessed_before,
            max_size: c.max_size,
            count: c.count,
            dry_run: request.dry_run,
        }
    }
}

/// The job kind (see [`crate::admin::JobKind`]).
pub fn start(ctx: JobContext, body: &[u8]) -> Result<JobFuture, String> {
    let request: PruneRequest = serde_json::from_slice(body).map_err(|e| format!("prune takes a JSON body: {e}"))?;
    run(ctx, request)
}

/// The job for `request` (a JSON body read by [`start`], or Go's query by [`from_go_query`]).
pub fn run(ctx: JobContext, request: PruneRequest) -> Result<JobFuture, String> {
    let PruneRequest { criteria, dry_run } = request;
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
                let report = prune_with(&ctx.env.store, &criteria, &pins, dry_run, |lines| {
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

/// Go's query parameters as a prune request, at `now` (unix seconds);
/// `count` is read as the list commands read it.
pub fn from_go_query(query: &str, now: u64) -> Result<PruneRequest, String> {
    let param = |key: &str| crate::query::param(query, key);
    let dry_run = match param("dryRun").as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => true,
        Some("true" | "1" | "t") => true,
        Some("false" | "0" | "f") => false,
        Some(other) => return Err(format!("invalid dry run param: {other}")),
    };
    let dur = || -> Result<u64, String> {
        let d = param("dur").ok_or("dur is required for this type (e.g. 30d)")?;
        parse_secs(&d).map(|secs| now.saturating_sub(secs)).map_err(|e| format!("dur: {e}"))
    };
    let mut criteria = Criteria { count: crate::query::count(query)?.0, ..Criteria::default() };
    match param("type").as_deref() {
        Some("accessed") => criteria.accessed_before = Some(dur()?),
        Some("created") => criteria.created_before = Some(dur()?),
        Some("pattern") => {
            let expr = param("expr").filter(|e| !e.is_empty()).ok_or("expr is required for type pattern")?;
            criteria.patterns = Some(Patterns::parse(&expr).map_err(|e| format!("expr: {e}"))?);
        }
        other => return Err(format!("type {other:?} is not one of accessed, created or pattern")),
    }
    Ok(PruneRequest { criteria, dry_run })
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
        let r = from_go_query("type=pattern&expr=team%2Fa,nginx", 1000).unwrap();
        let source = r.criteria.patterns.as_ref().map(Patterns::source);
        assert_eq!((source.as_deref(), r.dry_run, r.criteria.count), (Some("team/a,nginx"), true, Some(50)));
        let r = from_go_query("type=accessed&dur=10s&dryRun=false&count=-1", 1000).unwrap();
        assert_eq!((r.criteria.accessed_before, r.dry_run, r.criteria.count), (Some(990), false, None));
        let r = from_go_query("type=created&dur=1m&count=3", 1000).unwrap();
        assert_eq!((r.criteria.created_before, r.criteria.count), (Some(940), Some(3)));
        for bad in ["type=x", "type=accessed", "type=pattern", "type=pattern&expr=(", "type=pattern&expr=a&dryRun=x"] {
            assert!(from_go_query(bad, 1000).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_request_is_its_json_body() {
        let sent = from_go_query("type=pattern&expr=team/a,nginx&dryRun=false&count=7", 1000).unwrap();
        let body = serde_json::to_string(&sent).unwrap();
        assert_eq!(body, r#"{"pattern":"team/a,nginx","count":7,"dryRun":false}"#);
        let read: PruneRequest = serde_json::from_str(&body).unwrap();
        assert_eq!(serde_json::to_string(&read).unwrap(), body);
        for refused in ["{}", r#"{"dryRun":true,"count":3}"#, r#"{"pattern":"("}"#, r#"{"maxSize":1,"x":1}"#] {
            assert!(serde_json::from_str::<PruneRequest>(refused).is_err(), "{refused}");
        }
        let r: PruneRequest = serde_json::from_str(r#"{"maxSize":1048576}"#).unwrap();
        assert_eq!((r.criteria.max_size, r.dry_run), (Some(1_048_576), false));
    }
}
