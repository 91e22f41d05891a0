//! Reading an image path beside the process that owns it, for `list` and
//! `export`: no lock is taken and nothing is written. Committed files are
//! immutable and tag files and `index/pulled` are replaced atomically, so each read is
//! whole; a torn last line of the records journal is an append in progress,
//! skipped (not cut). Manifests are read from their files and checked
//! against their digests, like everything else on disk.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::catalog::{self, Image, View};
use super::{access, modified, records, tags, Kind, Layout};
use crate::oci::Digest;

/// A manifest file larger than this is not read (the fetch limit).
const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// The catalog of the image path at `root`, and what could not be read.
pub struct Peeked {
    pub images: Vec<Image>,
    /// Every committed object's size.
    pub sizes: HashMap<Digest, u64>,
    /// Every committed object's record, as the journal has it.
    pub records: HashMap<Digest, Arc<super::Record>>,
    /// Every tag record.
    pub tags: Vec<(super::TagKey, super::TagRecord)>,
    /// Journal lines that did not parse.
    pub skipped: usize,
}

pub fn catalog(root: &Path) -> io::Result<Peeked> {
    let layout = Layout::new(root);
    let loaded = records::read(&layout.records_journal())?;
    let records: HashMap<Digest, Arc<super::Record>> =
        loaded.records.into_iter().map(|(d, r)| (d, Arc::new(r))).collect();
    let mut pulled = access::load(&layout.pulled_file())?;
    pulled.retain(|d, _| records.get(d).is_some_and(|r| r.kind == Kind::Manifest));
    let view = View { records, tags: tags::load_all(&layout.tags_dir())?, pulled };
    let read = |d: &Digest| manifest(&layout, d, view.records.get(d)?.size);
    let images = catalog::build(&view, read, |d| modified(&layout.blob(d)));
    let sizes = view.records.iter().map(|(d, r)| (d.clone(), r.size)).collect();
    Ok(Peeked { images, sizes, records: view.records, tags: view.tags, skipped: loaded.skipped })
}

fn manifest(layout: &Layout, digest: &Digest, size: u64) -> Option<Bytes> {
    if size > MAX_MANIFEST_BYTES {
        return None;
    }
    let bytes = std::fs::read(layout.blob(digest)).ok()?;
    (bytes.len() as u64 == size && Digest::of(digest.algorithm(), &bytes) == *digest).then(|| Bytes::from(bytes))
}
