//! `ociregistry export (--pattern RE,... | --image-file LIST) --output FILE.tar`:
//! writes cached images as an OCI image layout tarball, which `load`, `ctr
//! import` and skopeo's `oci-archive:` read back, to carry them to another
//! cache or an air-gapped site. Images are chosen as `list` matches them or
//! as `load` reads image lists (`select`), each with its cached referrers-tag
//! artifacts; each is read and checked (`walk`) before anything is written,
//! and an incomplete one is refused unless `--allow-incomplete`; then the
//! tarball is written atomically (`tarball`).
//!
//! Reads the image path beside a running server, without its lock (see
//! `store::peek`): committed files are immutable. A file a concurrent prune
//! removes mid-export fails the export, which leaves nothing behind.

mod progress;
mod select;
mod tarball;
mod walk;

use std::collections::HashSet;

use progress::Progress;
use select::Chosen;
use tarball::{Contents, Named, Output};
use walk::Walked;

use super::load::spec;
use crate::cli::{Cli, ExportArgs};
use crate::config::patterns::Patterns;
use crate::config::CommonSettings;
use crate::store::{peek, Layout};

/// Runs the command; returns the exit status: 0 every chosen image written,
/// 1 some refused (the others written), 2 could not run.
pub fn run(cli: &Cli, args: &ExportArgs) -> i32 {
    match export(cli, args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            2
        }
    }
}

fn export(cli: &Cli, args: &ExportArgs) -> Result<i32, String> {
    let output = Output::parse(&args.output)?;
    let root = CommonSettings::resolve(cli).map_err(|e| e.to_string())?.image_path;
    let layout = Layout::new(&root);
    if !layout.blobs_dir().is_dir() {
        return Err(format!("{} is not an image path (it has no blobs/ directory)", root.display()));
    }
    let peeked = peek::catalog(&root).map_err(|e| format!("cannot read {}: {e}", root.display()))?;
    if peeked.skipped > 0 {
        eprintln!("warning: skipped {} unreadable lines of the records journal", peeked.skipped);
    }
    let mut selection = match (&args.pattern, &args.image_file) {
        (Some(p), _) => {
            let patterns = Patterns::parse(p).map_err(|e| format!("--pattern: {e}"))?;
            if patterns.is_empty() {
                return Err("--pattern: no pattern given".to_string());
            }
            select::by_patterns(&peeked, &patterns)
        }
        (None, Some(list)) => select::by_lists(&peeked, spec::resolve(list)?)?,
        (None, None) => return Err("--pattern or --image-file is required".to_string()),
    };
    select::add_referrers(&peeked, &mut selection);

    let mut progress = Progress::new(output == Output::Stdout);
    let mut refused = selection.refused;
    let mut accepted: Vec<(Chosen, Walked)> = Vec::new();
    for chosen in selection.chosen {
        let name = chosen.name();
        // A referrer goes only with its image (referrers come after the images they belong to).
        if chosen.referrer_of.as_ref().is_some_and(|of| refused.iter().any(|(n, _)| n == of)) {
            continue;
        }
        match walk::walk(&layout, &peeked.records, &chosen.digest) {
            Err(why) => refused.push((name, why)),
            Ok(w) if !w.missing.is_empty() && !args.allow_incomplete => refused.push((
                name,
                format!("incomplete: {} not cached (--allow-incomplete writes what is)", w.missing.join(", ")),
            )),
            Ok(w) => accepted.push((chosen, w)),
        }
    }
    for (name, why) in &refused {
        progress.line(format_args!("refused {name}: {why}"));
    }
    if accepted.is_empty() {
        report_refused(&refused);
        eprintln!("error: no image to export; {} not written", output.describe());
        return Ok(1);
    }

    let contents = contents(&accepted);
    let (blobs, bytes) = (contents.blobs.len(), contents.blobs.iter().map(|(_, s)| s).sum::<u64>());
    progress.start(bytes);
    let gzip = args.gzip || output.gzip_by_name();
    let written = tarball::write(&output, gzip, &layout, &contents, &|n| progress.inc(n));
    progress.finish();
    written.map_err(|e| format!("{e}; {} not written", output.describe()))?;

    let mut incomplete = 0;
    for (chosen, walked) in &accepted {
        let size: u64 = walked.blobs.iter().map(|(_, s)| s).sum();
        let mut line = format!(
            "exported {}: {} manifests, {} blobs ({size} bytes)",
            chosen.name(),
            walked.manifests.len(),
            walked.blobs.len()
        );
        if let Some(of) = &chosen.referrer_of {
            line.push_str(&format!(", a referrer of {of}"));
        }
        if !walked.missing.is_empty() {
            incomplete += 1;
            line.push_str(&format!("; INCOMPLETE, not cached: {}", walked.missing.join(", ")));
        }
        progress.line(line);
    }
    progress.line(format_args!(
        "exported {} images ({incomplete} incomplete), {} refused: {} manifests and {blobs} blobs ({bytes} bytes) to {}",
        accepted.len(),
        refused.len(),
        contents.manifests.len(),
        output.describe()
    ));
    report_refused(&refused);
    Ok(if refused.is_empty() { 0 } else { 1 })
}

/// Every image's manifests and blobs, each once.
fn contents(accepted: &[(Chosen, Walked)]) -> Contents<'_> {
    let mut contents = Contents { images: Vec::new(), manifests: Vec::new(), blobs: Vec::new() };
    let mut seen = HashSet::new();
    for (chosen, walked) in accepted {
        contents.images.push(Named { name: chosen.name(), top: walked.top() });
        for m in &walked.manifests {
            if seen.insert(m.digest.clone()) {
                contents.manifests.push(m);
            }
        }
        for (digest, size) in &walked.blobs {
            if seen.insert(digest.clone()) {
                contents.blobs.push((digest.clone(), *size));
            }
        }
    }
    contents
}

/// Names every refused image again on standard error, as `load` does.
fn report_refused(refused: &[(String, String)]) {
    if refused.is_empty() {
        return;
    }
    let what = if refused.len() == 1 { "1 image was".to_string() } else { format!("{} images were", refused.len()) };
    eprintln!("error: {what} not exported:");
    for (name, why) in refused {
        eprintln!("  {name}: {why}");
    }
}
