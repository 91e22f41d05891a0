//! `POST /cmd/load`: the admin job `ociregistry load` hands to a server
//! running on its image path. The server runs [`super::load`] on its own
//! store and fetch plane, so what loads is served at once and downloads are
//! shared (single-flight) with the clients' pulls. Pulls go through the
//! server's upstream settings as they are (an air-gapped server fetches
//! nothing, and its `pullTimeout` applies, not `load --pull-timeout`).
//!
//! Body (JSON): `lines` (`{origin, text}`: the image lists' lines, read by
//! the command, since it may not see the server's file system; tarballs are
//! not handed over), `os`, `arch`, `allPlatforms`, `jobs`, `pin`.
//! Counters: `images` (lines), `done`; one line per image (as `load`
//! prints); the report is the [`super::Summary`].

use std::num::NonZeroUsize;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::spec::{Input, Line};
use super::{load, ImageRef, Options, Platform, Platforms, Progress, DEFAULT_JOBS};
use crate::admin::{JobContext, JobFuture};

/// The most lines a job takes (the body is capped at 1 MiB anyway).
const MAX_LINES: usize = 100_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Body {
    pub lines: Vec<BodyLine>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub arch: Option<String>,
    #[serde(default)]
    pub all_platforms: bool,
    #[serde(default)]
    pub jobs: Option<NonZeroUsize>,
    #[serde(default)]
    pub pin: bool,
}

/// One line of an image list: where it is (`file:line`) and its text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyLine {
    pub origin: String,
    pub text: String,
}

/// The job kind (see [`crate::admin::JobKind`]).
pub fn start(ctx: JobContext, body: &[u8]) -> Result<JobFuture, String> {
    let body: Body = serde_json::from_slice(body).map_err(|e| format!("load takes a JSON body: {e}"))?;
    if body.lines.len() > MAX_LINES {
        return Err(format!("more than {MAX_LINES} images"));
    }
    let platforms = if body.all_platforms {
        Platforms::All
    } else {
        Platforms::One(Platform::parse(body.os.as_deref(), body.arch.as_deref())?)
    };
    let options = Options {
        platforms,
        jobs: body.jobs.unwrap_or(NonZeroUsize::new(DEFAULT_JOBS).expect("non-zero")),
        pin: body.pin,
        resolve_ref: None,
    };
    let lines: Vec<Line> = body
        .lines
        .into_iter()
        .map(|l| Line { image: ImageRef::parse(&l.text), origin: l.origin, text: l.text })
        .collect();
    ctx.progress.set("images", lines.len() as u64);
    ctx.progress.set("done", 0);
    let inputs = vec![Input::List { path: PathBuf::from("(sent by load)"), lines }];
    Ok(Box::pin(async move {
        let progress = Progress::Job(ctx.progress.clone());
        let summary = load(ctx.env.store.clone(), ctx.env.fetch.clone(), inputs, &options, &progress).await;
        serde_json::to_value(&summary).map_err(|e| e.to_string())
    }))
}
