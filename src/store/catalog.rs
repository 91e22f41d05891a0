//! The catalog: the images the cache holds, as `list` shows them and `prune`
//! removes them. An image is a tag record (`registry/repo:tag` → manifest
//! digest), or a manifest pulled by digest that no tag names and no cached
//! index lists (named `registry/repo@digest` by its record's sources). An
//! index's cached platform manifests belong to the index's image.
//!
//! Each image knows the manifests and committed blobs it consists of, so its
//! size counts each blob once, and prune can count references over the images
//! it keeps. Built from a [`View`]: a live store's indexes, or the files of an
//! image path read beside the server that owns it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use super::{Kind, Record, TagKey, TagRecord};
use crate::oci::{media, Digest};

/// Everything the catalog is built from.
pub struct View {
    pub records: HashMap<Digest, Arc<Record>>,
    pub tags: Vec<(TagKey, TagRecord)>,
    /// Last-pulled unix seconds per manifest.
    pub pulled: HashMap<Digest, u64>,
}

/// How an image is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageName {
    Tag(TagKey),
    /// A manifest pulled by digest, under the `registry/repo` it was fetched for.
    Digest {
        repository: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageType {
    /// An index (manifest list): its image consists of its cached platform manifests.
    Index,
    Image,
}

impl ImageType {
    /// As the Go ociregistry's `list` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageType::Index => "list",
            ImageType::Image => "image",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Image {
    pub name: ImageName,
    pub digest: Digest,
    pub kind: ImageType,
    /// Unix seconds when first fetched, if known.
    pub created: Option<u64>,
    /// Unix seconds when last pulled (any of its manifests), if ever recorded.
    pub pulled: Option<u64>,
    /// Bytes of its manifests and committed blobs, each counted once.
    pub size: u64,
    /// Its manifest and its cached platform manifests.
    pub manifests: Vec<Digest>,
    /// The committed blobs of those manifests.
    pub blobs: Vec<Digest>,
    /// Blobs its cached image manifests reference that are not committed.
    pub missing: usize,
    /// Platform manifests cached (1 for an image manifest).
    pub platforms: usize,
}

impl Image {
    /// `registry/repo`
    pub fn repository(&self) -> String {
        match &self.name {
            ImageName::Tag(k) => format!("{}/{}", k.registry, k.repo),
            ImageName::Digest { repository } => repository.clone(),
        }
    }

    /// `registry/repo:tag` or `registry/repo@digest`.
    pub fn reference(&self) -> String {
        match &self.name {
            ImageName::Tag(k) => format!("{}/{}:{}", k.registry, k.repo, k.tag),
            ImageName::Digest { repository } => format!("{repository}@{}", self.digest),
        }
    }

    /// Every name a pattern or a pin may match: the reference, and for a tag
    /// also `registry/repo@digest`.
    pub fn references(&self) -> Vec<String> {
        let mut out = vec![self.reference()];
        if let ImageName::Tag(_) = self.name {
            out.push(format!("{}@{}", self.repository(), self.digest));
        }
        out
    }

    /// Every cached platform manifest has all its blobs, and one at least is cached.
    pub fn complete(&self) -> bool {
        self.missing == 0 && self.platforms > 0
    }

    /// When it was last used: last pulled, else created (0 when neither is known).
    pub fn last_used(&self) -> u64 {
        self.pulled.or(self.created).unwrap_or(0)
    }
}

/// A manifest's references, as far as the catalog needs them.
struct Parsed {
    is_index: bool,
    references: Vec<Digest>,
}

/// Builds the catalog. `read` returns a committed manifest's bytes (checked
/// against its digest by the caller); `created_fallback` a time for a record
/// without one (its file's modification time). Sorted by reference.
pub fn build(
    view: &View,
    read: impl Fn(&Digest) -> Option<Bytes>,
    created_fallback: impl Fn(&Digest) -> Option<u64>,
) -> Vec<Image> {
    let mut parsed: HashMap<&Digest, Parsed> = HashMap::new();
    for (digest, record) in &view.records {
        if record.kind != Kind::Manifest {
            continue;
        }
        let Some(body) = read(digest) else { continue };
        let Ok(info) = media::inspect(&body) else { continue };
        parsed.insert(
            digest,
            Parsed { is_index: info.is_index, references: info.references.into_iter().map(|d| d.digest).collect() },
        );
    }
    let listed: HashSet<&Digest> = parsed.values().filter(|p| p.is_index).flat_map(|p| p.references.iter()).collect();
    let tagged: HashSet<&Digest> = view.tags.iter().map(|(_, t)| &t.digest).collect();
    let mut images = Vec::new();
    for (key, tag) in &view.tags {
        if parsed.contains_key(&tag.digest) {
            let name = ImageName::Tag(key.clone());
            images.push(image(view, &parsed, name, &tag.digest, Some(tag.fetched_at)));
        }
    }
    for digest in parsed.keys() {
        if tagged.contains(digest) || listed.contains(digest) {
            continue;
        }
        let record = &view.records[*digest];
        let Some(repository) = record.sources.iter().min() else { continue };
        let created = record.created.or_else(|| created_fallback(digest));
        let name = ImageName::Digest { repository: repository.clone() };
        images.push(image(view, &parsed, name, digest, created));
    }
    images.sort_by_key(Image::reference);
    images
}

fn image(
    view: &View,
    parsed: &HashMap<&Digest, Parsed>,
    name: ImageName,
    root: &Digest,
    created: Option<u64>,
) -> Image {
    let top = &parsed[root];
    let platforms: Vec<&Digest> = if top.is_index {
        top.references.iter().filter(|d| parsed.get(d).is_some_and(|p| !p.is_index)).collect()
    } else {
        vec![root]
    };
    let mut manifests = vec![root.clone()];
    manifests.extend(platforms.iter().filter(|d| **d != root).map(|d| (*d).clone()));
    let mut seen = HashSet::new();
    let (mut blobs, mut missing) = (Vec::new(), 0);
    for platform in &platforms {
        for blob in &parsed[platform].references {
            if !seen.insert(blob) {
                continue;
            }
            match view.records.get(blob) {
                Some(_) => blobs.push(blob.clone()),
                None => missing += 1,
            }
        }
    }
    let size = manifests.iter().chain(&blobs).filter_map(|d| view.records.get(d)).map(|r| r.size).sum();
    let pulled = manifests.iter().filter_map(|d| view.pulled.get(d)).max().copied();
    let kind = if top.is_index { ImageType::Index } else { ImageType::Image };
    Image {
        name,
        digest: root.clone(),
        kind,
        created,
        pulled,
        size,
        manifests,
        blobs,
        missing,
        platforms: platforms.len(),
    }
}
