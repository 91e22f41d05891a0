//! `prune`: removes whole images from the cache, by pattern, creation date,
//! last pull or to fit a size (see `plan`), never a pinned one. It works on a
//! `&Store` with no global lock, so a server can run it while it serves:
//!
//! - Right before removing anything the catalog is built again, and whatever
//!   an image that stays uses now (a tag pulled or moved meanwhile) is kept.
//! - Tags go first, then manifests, then blobs, each through the store's
//!   removal (brief map write locks, journaled as removal lines, then the file
//!   unlinked); every removal drops the serving threads' kept answers.
//! - A reader in flight keeps its open file (unlink does not cut it); a
//!   request after the removal is a miss and fetches again; a blob still
//!   downloading is not committed, so no plan names it.

pub mod background;
pub mod cli;
pub mod evict;
pub mod job;
pub mod plan;

use std::collections::{HashMap, HashSet};

pub use plan::{Criteria, Pins, Plan};

use crate::oci::Digest;
use crate::store::catalog::{Image, ImageName};
use crate::store::Store;

/// What a prune did (or, dry, would do).
#[derive(Debug, Default)]
pub struct Report {
    pub plan: Plan,
    /// Planned objects an image that stays came to use before they went.
    pub kept_late: usize,
    /// Removals that failed, with why.
    pub errors: Vec<String>,
    pub dry_run: bool,
    /// The lines of a prune a server ran (see `job`), printed as they are.
    pub remote: Option<Vec<String>>,
}

/// Prunes `store` by `criteria`, keeping `pins`. Blocking: call off the reactors.
pub fn prune(store: &Store, criteria: &Criteria, pins: &Pins, dry_run: bool) -> Report {
    let catalog = store.catalog();
    let sizes: HashMap<Digest, u64> = store.records().into_iter().map(|(d, r)| (d, r.size)).collect();
    let mut report = Report { plan: plan::plan(&catalog, &sizes, criteria, pins), dry_run, ..Report::default() };
    if dry_run || report.plan.images.is_empty() {
        return report;
    }
    let going: HashSet<String> = report.plan.images.iter().map(identity).collect();
    let mut used: HashSet<Digest> = HashSet::new();
    for image in store.catalog().iter().filter(|i| !going.contains(&identity(i))) {
        used.extend(image.manifests.iter().cloned());
        used.extend(image.blobs.iter().cloned());
    }
    let plan = &mut report.plan;
    for list in [&mut plan.manifests, &mut plan.blobs] {
        let before = list.len();
        list.retain(|(d, _)| !used.contains(d));
        report.kept_late += before - list.len();
    }
    plan.freed = plan.manifests.iter().chain(&plan.blobs).map(|(_, s)| s).sum();
    for image in &plan.images {
        if let ImageName::Tag(key) = &image.name {
            // Only if it still names what was planned: a tag moved meanwhile is another image.
            if store.tag(key).is_some_and(|t| t.digest == image.digest) {
                if let Err(e) = store.remove_tag(key) {
                    report.errors.push(format!("cannot remove tag {}: {e}", image.reference()));
                }
            }
        }
    }
    for (digest, _) in plan.manifests.iter().chain(&plan.blobs) {
        if let Err(e) = store.remove(digest) {
            report.errors.push(format!("cannot remove {digest}: {e}"));
        }
    }
    report
}

/// An image as planned: its name and the digest it named.
fn identity(image: &Image) -> String {
    format!("{} {}", image.reference(), image.digest)
}

impl Report {
    /// The report of a prune a server ran: its text, and how many removals failed there.
    pub fn remote(text: String, errors: usize) -> Report {
        Report {
            remote: Some(text.lines().map(str::to_string).collect()),
            errors: vec![String::new(); errors],
            ..Report::default()
        }
    }

    /// The report as lines, for a terminal or a log.
    pub fn lines(&self, short_digest: bool) -> Vec<String> {
        if let Some(lines) = &self.remote {
            return lines.clone();
        }
        let (verb, done) = if self.dry_run { ("would remove", "would free") } else { ("removed", "freed") };
        let mut out = Vec::new();
        for image in &self.plan.images {
            let digest = if short_digest { short(&image.digest) } else { image.digest.to_string() };
            out.push(format!("{verb} image {} ({} {digest})", image.reference(), image.kind.as_str()));
        }
        for (d, size) in &self.plan.manifests {
            out.push(format!("{verb} manifest {d} ({size} bytes)"));
        }
        for (d, size) in &self.plan.blobs {
            out.push(format!("{verb} blob {d} ({size} bytes)"));
        }
        out.extend(self.errors.iter().cloned());
        let mut summary = format!(
            "{} images, {} manifests, {} blobs; {done} {} bytes",
            self.plan.images.len(),
            self.plan.manifests.len(),
            self.plan.blobs.len(),
            self.plan.freed
        );
        if self.plan.pinned > 0 {
            summary.push_str(&format!("; {} pinned images kept", self.plan.pinned));
        }
        if self.kept_late > 0 {
            summary.push_str(&format!("; {} objects kept: pulled again meanwhile", self.kept_late));
        }
        out.push(format!("{}{summary}", if self.dry_run { "dry run: " } else { "pruned " }));
        out
    }
}

/// The first 10 hex characters, as the Go `--short-digest` shows them.
pub fn short(digest: &Digest) -> String {
    digest.hex()[..10].to_string()
}
