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
use crate::store::{Store, TagKey};

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
    prune_with(store, criteria, pins, dry_run, |_| {})
}

/// [`prune`], handing `on_image` each image's lines (see [`Report::image_lines`])
/// as soon as it is removed (dry: as planned), so a caller can stream them.
pub fn prune_with(
    store: &Store,
    criteria: &Criteria,
    pins: &Pins,
    dry_run: bool,
    mut on_image: impl FnMut(&[String]),
) -> Report {
    let catalog = store.catalog();
    let sizes: HashMap<Digest, u64> = store.records().into_iter().map(|(d, r)| (d, r.size)).collect();
    let mut report = Report { plan: plan::plan(&catalog, &sizes, criteria, pins), dry_run, ..Report::default() };
    if dry_run || report.plan.images.is_empty() {
        for i in 0..report.plan.images.len() {
            on_image(&report.image_lines(i, false));
        }
        return report;
    }
    let going: HashSet<String> = report.plan.images.iter().map(identity).collect();
    let mut used: HashSet<Digest> = HashSet::new();
    for image in store.catalog().iter().filter(|i| !going.contains(&identity(i))) {
        used.extend(image.manifests.iter().cloned());
        used.extend(image.blobs.iter().cloned());
    }
    // What an image that stays came to use meanwhile stays, and counts as freed by no one.
    let plan = &mut report.plan;
    let (mut m, mut b) = (0, 0);
    let mut freed_by = Vec::with_capacity(plan.freed_by.len());
    let (mut manifests, mut blobs) = (Vec::new(), Vec::new());
    for &(nm, nb) in &plan.freed_by {
        let keep_m: Vec<_> = plan.manifests[m..m + nm].iter().filter(|(d, _)| !used.contains(d)).cloned().collect();
        let keep_b: Vec<_> = plan.blobs[b..b + nb].iter().filter(|(d, _)| !used.contains(d)).cloned().collect();
        report.kept_late += nm + nb - keep_m.len() - keep_b.len();
        freed_by.push((keep_m.len(), keep_b.len()));
        manifests.extend(keep_m);
        blobs.extend(keep_b);
        (m, b) = (m + nm, b + nb);
    }
    (plan.manifests, plan.blobs, plan.freed_by) = (manifests, blobs, freed_by);
    plan.freed = plan.manifests.iter().chain(&plan.blobs).map(|(_, s)| s).sum();
    // Images go a batch at a time: their tags, then their manifests, then their blobs.
    let (mut m, mut b, mut i) = (0, 0, 0);
    while i < report.plan.images.len() {
        let first = i;
        let (m0, b0) = (m, b);
        while i < report.plan.images.len() && (m - m0) + (b - b0) < crate::store::removal::BATCH {
            let (nm, nb) = report.plan.freed_by[i];
            (m, b, i) = (m + nm, b + nb, i + 1);
        }
        let plan = &report.plan;
        // Only a tag that still names what was planned: one moved meanwhile is another image.
        let (tags, tagged): (Vec<TagKey>, Vec<&Image>) = plan.images[first..i]
            .iter()
            .filter_map(|image| match &image.name {
                ImageName::Tag(key) if store.tag(key).is_some_and(|t| t.digest == image.digest) => {
                    Some((key.clone(), image))
                }
                _ => None,
            })
            .unzip();
        for (result, image) in store.remove_tags(&tags).into_iter().zip(tagged) {
            if let Err(e) = result {
                report.errors.push(format!("cannot remove tag {}: {e}", image.reference()));
            }
        }
        let digests: Vec<Digest> =
            plan.manifests[m0..m].iter().chain(&plan.blobs[b0..b]).map(|(d, _)| d.clone()).collect();
        for (result, digest) in store.remove_many(&digests).into_iter().zip(&digests) {
            if let Err(e) = result {
                report.errors.push(format!("cannot remove {digest}: {e}"));
            }
        }
        for n in first..i {
            on_image(&report.image_lines(n, false));
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

    /// The report as lines, for a terminal or a log: each image's lines (see
    /// [`Report::image_lines`]), then [`Report::closing_lines`].
    pub fn lines(&self, short_digest: bool) -> Vec<String> {
        if let Some(lines) = &self.remote {
            return lines.clone();
        }
        let mut out: Vec<String> =
            (0..self.plan.images.len()).flat_map(|i| self.image_lines(i, short_digest)).collect();
        out.extend(self.closing_lines());
        out
    }

    /// Image `i`'s lines: the image, then the manifests and blobs it freed.
    pub fn image_lines(&self, i: usize, short_digest: bool) -> Vec<String> {
        let verb = if self.dry_run { "would remove" } else { "removed" };
        let image = &self.plan.images[i];
        let digest = if short_digest { short(&image.digest) } else { image.digest.to_string() };
        let mut out = vec![format!("{verb} image {} ({} {digest})", image.reference(), image.kind.as_str())];
        let (m, b) = self.plan.freed_by[..i].iter().fold((0, 0), |(m, b), (nm, nb)| (m + nm, b + nb));
        let (nm, nb) = self.plan.freed_by[i];
        for (d, size) in &self.plan.manifests[m..m + nm] {
            out.push(format!("{verb} manifest {d} ({size} bytes)"));
        }
        for (d, size) in &self.plan.blobs[b..b + nb] {
            out.push(format!("{verb} blob {d} ({size} bytes)"));
        }
        out
    }

    /// The lines after the images': each error, then the summary.
    pub fn closing_lines(&self) -> Vec<String> {
        let done = if self.dry_run { "would free" } else { "freed" };
        let mut out = self.errors.clone();
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::config::patterns::Patterns;
    use crate::oci::{media, Algorithm, MediaType};
    use crate::store::{BlobWriter, MemoryLimits, StagedManifest, TagRecord};

    /// Commits an image `quay.io/r:<tag>` with one layer of `layer` bytes; returns (manifest, layer).
    fn image(store: &Store, tag: &str, layer: &[u8]) -> (Digest, Digest) {
        let blob = Digest::of(Algorithm::Sha256, layer);
        let (mut w, _) = BlobWriter::create(store, &blob).unwrap();
        w.write(layer).unwrap();
        w.verify().unwrap();
        w.commit(store, "quay.io/r").unwrap();
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{blob}","size":{}}},"layers":[]}}"#,
            media::OCI_MANIFEST,
            layer.len()
        );
        let digest = Digest::of(Algorithm::Sha256, body.as_bytes());
        let key =
            TagKey { registry: "quay.io".parse().unwrap(), repo: "r".parse().unwrap(), tag: tag.parse().unwrap() };
        let record = TagRecord {
            digest: digest.clone(),
            media_type: MediaType::known(media::OCI_MANIFEST),
            fetched_at: 1,
            last_checked_at: 1,
        };
        let staged = StagedManifest {
            digest: digest.clone(),
            media_type: MediaType::known(media::OCI_MANIFEST),
            body: Bytes::from(body),
            source: "quay.io/r".into(),
            tag: Some((key, record)),
        };
        store.stage_manifest(&staged);
        store.persist_manifest(&staged).unwrap();
        (digest, blob)
    }

    #[test]
    fn each_images_lines_come_as_soon_as_it_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), MemoryLimits::default()).unwrap();
        let many: Vec<(Digest, Digest)> =
            (0..300).map(|i| image(&store, &format!("t{i:03}"), format!("layer {i}").as_bytes())).collect();
        let criteria = Criteria { patterns: Some(Patterns::parse("quay.io/r:t").unwrap()), ..Criteria::default() };
        let mut seen: Vec<Vec<String>> = Vec::new();
        let report = prune_with(&store, &criteria, &Pins::default(), false, |lines| {
            // Delivered once the image is gone, while later ones are still there.
            let n = seen.len();
            assert!(store.record(&many[n].0).is_none() && store.record(&many[n].1).is_none(), "image {n} is gone");
            // Batches of 256 objects: 128 of these images at a time.
            assert!(store.record(&many[299].1).is_some() || n >= 256, "not all at the end");
            seen.push(lines.to_vec());
        });
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(seen.len(), 300);
        assert_eq!(seen[0][0], format!("removed image quay.io/r:t000 (image {})", many[0].0));
        assert_eq!(seen[0][1], format!("removed manifest {} ({} bytes)", many[0].0, report.plan.manifests[0].1));
        assert_eq!(seen[0][2], format!("removed blob {} (7 bytes)", many[0].1));
        let all: Vec<String> = seen.concat();
        assert_eq!(
            report.lines(false)[..all.len()],
            all[..],
            "the report's lines are the streamed ones, then the summary"
        );
        assert!(report.closing_lines().last().unwrap().starts_with("pruned 300 images, 300 manifests, 300 blobs"));
    }
}
