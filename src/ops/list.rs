//! `ociregistry list`: the cached images as a table (the Go ociregistry's
//! columns, plus completeness) or JSON. Reads the image path beside a running
//! server without its lock (see `store::peek`).

use std::io::{self, Write};

use serde::Serialize;

use super::prune::short;
use crate::cli::{Cli, ListArgs, ListOutput};
use crate::config::patterns::Patterns;
use crate::config::{CommonSettings, FileConfig};
use crate::go_time::format_time;
use crate::store::catalog::Image;
use crate::store::{peek, Layout};

/// Runs the command; returns the exit status (0 listed, 2 could not list).
pub fn run(cli: &Cli, args: &ListArgs) -> i32 {
    match list(cli, args) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("error: {message}");
            2
        }
    }
}

fn list(cli: &Cli, args: &ListArgs) -> Result<(), String> {
    let file = FileConfig::of(cli).map_err(|e| e.to_string())?;
    // Go's listConfig gives the defaults of the flags.
    let defaults = file.list_config.clone().unwrap_or_default();
    let patterns = match (&args.pattern, &defaults.expr) {
        (Some(p), _) => Some(Patterns::parse(p).map_err(|e| format!("--pattern: {e}"))?),
        (None, Some(p)) if !p.is_empty() => Some(Patterns::parse(p).map_err(|e| format!("listConfig.expr: {e}"))?),
        (None, _) => None,
    };
    let (header, short_digest) = (args.header || defaults.header, args.short_digest || defaults.short_digest);
    let root = CommonSettings::merge(cli, &file).image_path;
    if !Layout::new(&root).blobs_dir().is_dir() {
        return Err(format!("{} is not an image path (it has no blobs/ directory)", root.display()));
    }
    if crate::ops::migrate::pending(&root).unwrap_or(false) {
        eprintln!(
            "warning: {} holds a Go ociregistry cache not imported yet (not listed): serve or migrate imports it",
            root.display()
        );
    }
    let peeked = peek::catalog(&root).map_err(|e| format!("cannot read {}: {e}", root.display()))?;
    if peeked.skipped > 0 {
        eprintln!("warning: skipped {} unreadable lines of the records journal", peeked.skipped);
    }
    let images: Vec<&Image> =
        peeked.images.iter().filter(|i| patterns.as_ref().is_none_or(|p| p.matches_any(&i.references()))).collect();
    let text = match args.output {
        ListOutput::Table => table(&images, header, short_digest),
        ListOutput::Json => json(&images, short_digest),
    };
    // A closed standard output (`| head`) is not an error worth a message.
    let _ = io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

/// The tag, or the digest's hex without its `sha256:` (short: 10 hex characters), as Go shows it;
/// the JSON output keeps the whole digest.
fn tag_or_digest(image: &Image, short_digest: bool) -> String {
    match &image.name {
        crate::store::catalog::ImageName::Tag(k) => k.tag.as_str().to_string(),
        _ if short_digest => short(&image.digest),
        _ => image.digest.hex().to_string(),
    }
}

fn completeness(image: &Image) -> String {
    match (image.complete(), image.platforms) {
        (true, _) => "complete".into(),
        (false, 0) => "no-platforms".into(),
        (false, _) => format!("missing:{}", image.missing),
    }
}

fn table(images: &[&Image], header: bool, short_digest: bool) -> String {
    let mut rows: Vec<[String; 7]> = Vec::new();
    if header {
        rows.push(["IMAGE", "TAG/DIGEST", "TYPE", "CREATED", "PULLED", "SIZE(MB)", "COMPLETE"].map(String::from));
    }
    for i in images {
        rows.push([
            i.repository(),
            tag_or_digest(i, short_digest),
            i.kind.as_str().to_string(),
            i.created.map_or("-".into(), format_time),
            i.pulled.map_or("-".into(), format_time),
            format!("{:.1}", i.size as f64 / 1e6),
            completeness(i),
        ]);
    }
    let mut widths = [0; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    image: String,
    /// The tag, or absent for an image by digest.
    tag: Option<String>,
    digest: String,
    reference: String,
    r#type: &'static str,
    /// Unix seconds.
    created: Option<u64>,
    pulled: Option<u64>,
    size: u64,
    complete: bool,
    missing_blobs: usize,
    platforms: usize,
}

fn json(images: &[&Image], short_digest: bool) -> String {
    let rows: Vec<Row> = images
        .iter()
        .map(|i| Row {
            image: i.repository(),
            tag: match &i.name {
                crate::store::catalog::ImageName::Tag(k) => Some(k.tag.as_str().to_string()),
                _ => None,
            },
            digest: if short_digest { short(&i.digest) } else { i.digest.to_string() },
            reference: i.reference(),
            r#type: i.kind.as_str(),
            created: i.created,
            pulled: i.pulled,
            size: i.size,
            complete: i.complete(),
            missing_blobs: i.missing,
            platforms: i.platforms,
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into());
    text.push('\n');
    text
}
