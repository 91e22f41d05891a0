//! One image's content as an export writes it, read from the image path and
//! checked before anything is written: its manifests (an index's platform
//! manifests too) read whole and hashed against their digests, its configs'
//! and layers' files sized against their records (and hashed later, as they
//! are written). What is not cached (a platform manifest, a config, a layer)
//! is listed, so the image can be refused as incomplete or written without it;
//! content that is damaged refuses the image.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::oci::{media, Digest, MediaType};
use crate::store::{Kind, Layout, Record};

/// A manifest larger than this is not read (the fetch limit).
const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// Indexes inside indexes followed at most.
const MAX_DEPTH: usize = 2;

/// A checked manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: MediaType,
    pub body: Bytes,
}

/// An image's content, checked.
#[derive(Debug, Default)]
pub struct Walked {
    /// The top manifest first, then the platform manifests cached.
    pub manifests: Vec<Manifest>,
    /// Configs and layers cached: (digest, size of its record and file).
    pub blobs: Vec<(Digest, u64)>,
    /// What it references that is not cached, as `platform manifest <digest>` or `blob <digest>`.
    pub missing: Vec<String>,
}

impl Walked {
    pub fn top(&self) -> &Manifest {
        &self.manifests[0]
    }
}

/// Reads and checks the image whose top manifest is `top`. An error names
/// what is damaged (or that the top manifest is not cached).
pub fn walk(layout: &Layout, records: &HashMap<Digest, Arc<Record>>, top: &Digest) -> Result<Walked, String> {
    let mut walked = Walked::default();
    Walker { layout, records }.visit(top, None, 0, &mut walked)?;
    Ok(walked)
}

struct Walker<'a> {
    layout: &'a Layout,
    records: &'a HashMap<Digest, Arc<Record>>,
}

impl Walker<'_> {
    fn visit(&self, digest: &Digest, wanted: Option<u64>, depth: usize, out: &mut Walked) -> Result<(), String> {
        if out.manifests.iter().any(|m| m.digest == *digest) {
            return Ok(());
        }
        let record = match self.records.get(digest) {
            Some(r) if r.kind == Kind::Manifest => r,
            _ if depth == 0 => return Err(format!("manifest {digest} is not cached")),
            _ => {
                out.missing.push(format!("platform manifest {digest}"));
                return Ok(());
            }
        };
        let body = self.read_manifest(digest, record.size)?;
        if wanted.is_some_and(|w| w != record.size) {
            return Err(format!("manifest {digest} is {} bytes, its index says {}", record.size, wanted.unwrap_or(0)));
        }
        let info = media::inspect(&body).map_err(|e| format!("manifest {digest}: {e}"))?;
        let media_type = match &record.media_type {
            Some(m) => m.clone(),
            None => media::effective_media_type(None, &info, &[]).map_err(|e| format!("manifest {digest}: {e}"))?,
        };
        out.manifests.push(Manifest { digest: digest.clone(), media_type, body });
        if info.is_index {
            if depth >= MAX_DEPTH {
                return Err(format!("index {digest}: indexes nested too deep"));
            }
            for child in &info.references {
                self.visit(&child.digest, Some(child.size), depth + 1, out)?;
            }
            return Ok(());
        }
        for blob in &info.references {
            if out.blobs.iter().any(|(d, _)| *d == blob.digest) {
                continue;
            }
            match self.records.get(&blob.digest) {
                Some(r) => out.blobs.push((blob.digest.clone(), self.blob_size(&blob.digest, r)?)),
                None => out.missing.push(format!("blob {}", blob.digest)),
            }
        }
        Ok(())
    }

    /// A committed manifest's bytes, checked against its record and digest.
    fn read_manifest(&self, digest: &Digest, size: u64) -> Result<Bytes, String> {
        if size > MAX_MANIFEST_BYTES {
            return Err(format!("manifest {digest} is larger than {MAX_MANIFEST_BYTES} bytes"));
        }
        let bytes = std::fs::read(self.layout.blob(digest))
            .map_err(|e| format!("manifest {digest} cannot be read: {e} (run verify)"))?;
        let actual = Digest::of(digest.algorithm(), &bytes);
        if bytes.len() as u64 != size || actual != *digest {
            return Err(format!("manifest {digest} is damaged: its file hashes to {actual} (run verify)"));
        }
        Ok(Bytes::from(bytes))
    }

    /// A committed blob's size, its file checked against its record.
    fn blob_size(&self, digest: &Digest, record: &Record) -> Result<u64, String> {
        let meta = std::fs::metadata(self.layout.blob(digest))
            .map_err(|e| format!("blob {digest} cannot be read: {e} (run verify)"))?;
        if meta.len() != record.size {
            return Err(format!(
                "blob {digest} is damaged: its file has {} bytes, its record {} (run verify)",
                meta.len(),
                record.size
            ));
        }
        Ok(record.size)
    }
}
