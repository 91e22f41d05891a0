//! Loading a tarball: a `docker save` archive (`docker`) or an OCI image
//! layout (`oci`, preferred when a tarball has both, as Docker 25+ writes),
//! gzipped or not. Two passes over the file (`scan`): the first reads the
//! metadata and makes a plan, the second streams the blobs the store lacks
//! into temp files, hashing them. Only when every blob of the tarball's
//! images checked out is anything committed: blobs, then manifests, then
//! tags, exactly as a pull-through commits them. A blob that does not match
//! its digest refuses the whole tarball and commits nothing; an image without
//! a usable name is refused alone.
//!
//! Blocking: run it off the async runtime.

mod docker;
mod oci;
mod scan;

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use bytes::Bytes;

use super::image_ref::ImageRef;
use super::platform::Platforms;
use super::progress::Progress;
use super::Counts;
use crate::oci::{Digest, MediaType};
use crate::store::{tags::now_secs, BlobWriter, StagedManifest, Store, TagKey, TagRecord};

/// What the first pass decided to load.
#[derive(Default)]
pub struct Plan {
    pub images: Vec<ImagePlan>,
    /// Images left out, with why.
    pub refused: Vec<(String, String)>,
}

pub struct ImagePlan {
    /// Every name it is loaded under (a docker save image may have several tags).
    pub names: Vec<ImageRef>,
    /// Verified manifests, children before the index that lists them; the last is the top one.
    pub manifests: Vec<ManifestPlan>,
    pub blobs: Vec<BlobPlan>,
}

pub struct ManifestPlan {
    pub digest: Digest,
    pub media_type: MediaType,
    pub body: Bytes,
}

pub struct BlobPlan {
    pub digest: Digest,
    /// The tarball entry holding it.
    pub entry: String,
    pub size: u64,
}

/// Loads one tarball; returns each image's (name, outcome), or the whole
/// tarball's failure. `label` names it in messages instead of `path` (a copy
/// staged for a server names the file the user gave). `resolve`
/// (`--resolve-ref`) names the tarball's one image instead of its own names.
pub fn load(
    store: &Store,
    path: &Path,
    label: Option<&str>,
    gzipped: bool,
    platforms: &Platforms,
    resolve: Option<&ImageRef>,
    progress: &Progress,
) -> Vec<(String, Result<Counts, String>)> {
    let shown = path.display().to_string();
    let what = label.unwrap_or(&shown).to_string();
    let relabel = |(name, result): (String, Result<Counts, String>)| match label {
        Some(l) => (name.replace(&shown, l), result.map_err(|e| e.replace(&shown, l))),
        None => (name, result),
    };
    load_as(store, path, &what, gzipped, platforms, resolve, progress).into_iter().map(relabel).collect()
}

fn load_as(
    store: &Store,
    path: &Path,
    what: &str,
    gzipped: bool,
    platforms: &Platforms,
    resolve: Option<&ImageRef>,
    progress: &Progress,
) -> Vec<(String, Result<Counts, String>)> {
    let what = what.to_string();
    let plan = match plan(path, gzipped, platforms, resolve, &what) {
        Ok(p) => p,
        Err(e) => return vec![(what, Err(e))],
    };
    let mut results: Vec<(String, Result<Counts, String>)> =
        plan.refused.iter().map(|(label, why)| (label.clone(), Err(format!("refused: {why}")))).collect();
    match commit(store, path, gzipped, &plan, progress, &what) {
        Ok(counts) => results.extend(plan.images.iter().zip(counts).map(|(i, c)| (i.names[0].to_string(), Ok(c)))),
        Err(e) => results.push((what, Err(format!("nothing of it was loaded: {e}")))),
    }
    results
}

fn plan(
    path: &Path,
    gzipped: bool,
    platforms: &Platforms,
    resolve: Option<&ImageRef>,
    what: &str,
) -> Result<Plan, String> {
    let scan = scan::scan(path, gzipped)?;
    if scan.sizes.contains_key("index.json") {
        oci::plan(&scan, platforms, resolve, what)
    } else if scan.sizes.contains_key("manifest.json") {
        docker::plan(&scan, resolve, what)
    } else {
        Err(format!("{what} is neither an OCI image layout (index.json) nor a docker save archive (manifest.json)"))
    }
}

/// The second pass, then the commits. Returns each planned image's counts.
fn commit(
    store: &Store,
    path: &Path,
    gzipped: bool,
    plan: &Plan,
    progress: &Progress,
    what: &str,
) -> Result<Vec<Counts>, String> {
    // Entry name → the digest it must hash to, for blobs the store lacks.
    let mut wanted: HashMap<&str, (&Digest, u64)> = HashMap::new();
    for blob in plan.images.iter().flat_map(|i| &i.blobs) {
        if store.record(&blob.digest).is_none() {
            wanted.insert(&blob.entry, (&blob.digest, blob.size));
        }
    }
    let bar = progress.image(what);
    bar.add_total(wanted.values().map(|(_, size)| size).sum());
    let mut written: HashMap<Digest, BlobWriter> = HashMap::new();
    if !wanted.is_empty() {
        let mut archive = scan::open(path, gzipped)?;
        let entries = archive.entries().map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 1 << 20];
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("cannot read it again: {e}"))?;
            let Some(name) = scan::entry_name(&entry) else { continue };
            let Some(&(digest, _)) = wanted.get(name.as_str()) else { continue };
            if written.contains_key(digest) {
                continue;
            }
            let (mut writer, _) =
                BlobWriter::create(store, digest).map_err(|e| format!("cannot write to the cache: {e}"))?;
            loop {
                let n = entry.read(&mut buf).map_err(|e| format!("cannot read {name}: {e}"))?;
                if n == 0 {
                    break;
                }
                writer.write(&buf[..n]).map_err(|e| format!("cannot write to the cache: {e}"))?;
                bar.inc(n as u64);
            }
            writer.verify().map_err(|e| format!("{name}: {e}"))?;
            // Closed until the commit: a tarball may hold more blobs than this process may open files.
            writer.park().map_err(|e| format!("cannot write to the cache: {e}"))?;
            written.insert(digest.clone(), writer);
        }
    }
    if let Some((entry, _)) = wanted.iter().find(|(_, (d, _))| !written.contains_key(*d)) {
        return Err(format!("{entry} is missing from it"));
    }
    drop(bar);
    let mut all = Vec::new();
    for image in &plan.images {
        let source = format!("{}/{}", image.names[0].registry, image.names[0].repo);
        let mut counts = Counts::default();
        for blob in &image.blobs {
            match written.remove(&blob.digest) {
                Some(writer) => {
                    let size = writer.written();
                    writer.commit(store, &source).map_err(|e| format!("cannot commit {}: {e}", blob.digest))?;
                    counts.blobs_fetched += 1;
                    counts.bytes_fetched += size;
                }
                None => counts.blobs_present += 1,
            }
        }
        commit_manifests(store, image, &source, &mut counts)?;
        all.push(counts);
    }
    Ok(all)
}

/// Commits an image's manifests (children first) and points its names at the top one.
fn commit_manifests(store: &Store, image: &ImagePlan, source: &str, counts: &mut Counts) -> Result<(), String> {
    let Some(top) = image.manifests.last() else { return Ok(()) };
    for m in &image.manifests {
        let is_top = std::ptr::eq(m, top);
        let tags: Vec<(TagKey, TagRecord)> = if is_top {
            image
                .names
                .iter()
                .filter_map(|n| {
                    n.tag.clone().map(|tag| TagKey { registry: n.registry.clone(), repo: n.repo.clone(), tag })
                })
                .filter(|key| store.tag(key).is_none_or(|r| r.digest != m.digest))
                .map(|key| {
                    let now = now_secs();
                    let record = TagRecord {
                        digest: m.digest.clone(),
                        media_type: m.media_type.clone(),
                        fetched_at: now,
                        last_checked_at: now,
                    };
                    (key, record)
                })
                .collect()
        } else {
            Vec::new()
        };
        let committed = store.record(&m.digest).is_some_and(|r| r.kind == crate::store::Kind::Manifest);
        if committed && tags.is_empty() {
            counts.manifests_present += 1;
            continue;
        }
        let stages: Vec<Option<(TagKey, TagRecord)>> =
            if tags.is_empty() { vec![None] } else { tags.into_iter().map(Some).collect() };
        for tag in stages {
            let staged = StagedManifest {
                digest: m.digest.clone(),
                media_type: m.media_type.clone(),
                body: m.body.clone(),
                source: source.to_string(),
                tag,
            };
            store.stage_manifest(&staged);
            store.persist_manifest(&staged).map_err(|e| format!("cannot commit manifest {}: {e}", m.digest))?;
        }
        if committed {
            counts.manifests_present += 1;
        } else {
            counts.manifests_fetched += 1;
        }
    }
    Ok(())
}

/// Refuses `--resolve-ref` for a tarball of `images` images (Go's rule: one image only).
fn single_image_for(resolve: &ImageRef, images: usize, what: &str) -> Result<(), String> {
    if images != 1 {
        return Err(format!(
            "--resolve-ref {resolve} was given, but {what} holds {images} images; it names single-image tarballs only"
        ));
    }
    Ok(())
}
