//! `POST /cmd/load`: the admin job `ociregistry load` hands to a server
//! running on its image path. The server runs [`super::load`] on its own
//! store and fetch plane, so what loads is served at once and downloads are
//! shared (single-flight) with the clients' pulls. Pulls go through the
//! server's upstream settings as they are (an air-gapped server fetches
//! nothing, and its `pullTimeout` applies, not `load --pull-timeout`).
//!
//! Body (JSON): `lines` (`{origin, text}`: the image lists' lines, read by
//! the command, since it may not see the server's file system), `staged`
//! (tarballs: see [`stage`]), `os`, `arch`, `allPlatforms`, `jobs` (at most [`MAX_JOBS`](super::MAX_JOBS)), `pin`.
//!
//! A tarball is handed over staged: the command hard-links (or, across file
//! systems, copies) it into the image path's `tmp/` as `load-<pid>-<n>.tar`
//! and names only that file. Being able to write there is what owning the
//! cache takes, so no client can make the server read a file it could not
//! read itself; the job takes only such names (no path), and removes them
//! when it ends (startup clears `tmp/` of any a crash left).
//! Counters: `images` (lines), `done`; one line per image (as `load`
//! prints); the report is the [`super::Summary`].

use std::num::NonZeroUsize;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::spec::{Input, Line};
use super::{load, ImageRef, Options, Platforms, Progress, DEFAULT_JOBS, MAX_JOBS};
use crate::oci::Platform;

#[cfg(test)]
mod tests {
    #[test]
    fn only_staged_names_are_taken() {
        for ok in ["load-12-0.tar", "load-1-99.tar"] {
            assert!(super::is_staged_name(ok), "{ok}");
        }
        for bad in [
            "load-1.tar",
            "load--1.tar",
            "load-1-2-3.tar",
            "../load-1-2.tar",
            "load-1-2.tar/x",
            "x.tar",
            "load-a-1.tar",
        ] {
            assert!(!super::is_staged_name(bad), "{bad}");
        }
    }
}
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
    #[serde(default)]
    pub staged: Vec<Staged>,
    /// `--resolve-ref`: the name of a staged single-image tarball's image.
    #[serde(default)]
    pub resolve_ref: Option<String>,
}

/// A tarball the command staged in the image path's `tmp/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Staged {
    /// `load-<pid>-<n>.tar`, a file name in `tmp/`.
    pub name: String,
    pub gzipped: bool,
    /// The path the command was given, for messages.
    pub origin: String,
}

/// Whether `name` is a staged tarball's name: `load-<digits>-<digits>.tar`.
fn is_staged_name(name: &str) -> bool {
    let Some(middle) = name.strip_prefix("load-").and_then(|n| n.strip_suffix(".tar")) else { return false };
    let mut parts = middle.split('-');
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None)
        if !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit()))
}

/// Stages tarball `path` in `tmp_dir` for the server (a hard link, else a
/// copy); returns the staged file's name. The caller removes it if the job
/// does not start.
pub fn stage(tmp_dir: &std::path::Path, path: &std::path::Path, n: usize) -> std::io::Result<String> {
    let name = format!("load-{}-{n}.tar", std::process::id());
    let staged = tmp_dir.join(&name);
    let _ = std::fs::remove_file(&staged);
    if std::fs::hard_link(path, &staged).is_err() {
        std::fs::copy(path, &staged)?;
    }
    Ok(name)
}

/// Removes what the command staged.
pub fn unstage(tmp_dir: &std::path::Path, staged: &[Staged]) {
    for s in staged.iter().filter(|s| is_staged_name(&s.name)) {
        let _ = std::fs::remove_file(tmp_dir.join(&s.name));
    }
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
    if body.lines.len() + body.staged.len() > MAX_LINES {
        return Err(format!("more than {MAX_LINES} images"));
    }
    let tmp = ctx.env.store.layout().tmp_dir();
    let mut tarballs = Vec::new();
    for s in &body.staged {
        if !is_staged_name(&s.name) {
            return Err(format!("staged {:?} is not a staged tarball's name (load-<pid>-<n>.tar)", s.name));
        }
        let path = tmp.join(&s.name);
        if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            return Err(format!("{} (staged as {}) is not in the image path's tmp/", s.origin, s.name));
        }
        tarballs.push(Input::Tarball { path, gzipped: s.gzipped, label: Some(s.origin.clone()) });
    }
    let platforms = if body.all_platforms {
        Platforms::All
    } else {
        Platforms::One(Platform::parse(body.os.as_deref(), body.arch.as_deref())?)
    };
    let options = Options {
        platforms,
        jobs: NonZeroUsize::new(body.jobs.map_or(DEFAULT_JOBS, |j| j.get().min(MAX_JOBS))).expect("non-zero"),
        pin: body.pin,
        resolve_ref: match body.resolve_ref.as_deref().map(ImageRef::parse).transpose() {
            Ok(Some(r)) if r.digest.is_some() => {
                return Err("resolve_ref names a digest; give registry/repository:tag".into())
            }
            Ok(r) => r,
            Err(e) => return Err(format!("resolve_ref is not a full image reference: {e}")),
        },
    };
    let lines: Vec<Line> = body
        .lines
        .into_iter()
        .map(|l| Line { image: ImageRef::parse(&l.text), origin: l.origin, text: l.text })
        .collect();
    ctx.progress.set("images", (lines.len() + tarballs.len()) as u64);
    ctx.progress.set("done", 0);
    let mut inputs = vec![Input::List { path: PathBuf::from("(sent by load)"), lines }];
    inputs.extend(tarballs);
    let staged = body.staged;
    Ok(Box::pin(async move {
        let progress = Progress::Job(ctx.progress.clone());
        let summary = load(ctx.env.store.clone(), ctx.env.fetch.clone(), inputs, &options, &progress).await;
        unstage(&ctx.env.store.layout().tmp_dir(), &staged);
        serde_json::to_value(&summary).map_err(|e| e.to_string())
    }))
}
