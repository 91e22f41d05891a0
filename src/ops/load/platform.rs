//! Which images of a multi-platform index `load` takes: one platform
//! (`--os`, `--arch` with an optional variant, as in the Go ociregistry,
//! defaulting to this host's in Go's names; see `oci::platform`) or all of them.

use serde::Deserialize;

use crate::oci::{Digest, EntryPlatform, Platform};

/// What to take from an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Platforms {
    One(Platform),
    All,
}

#[derive(Deserialize)]
struct IndexShape {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

#[derive(Deserialize)]
struct IndexEntry {
    digest: Digest,
    #[serde(default)]
    platform: Option<EntryPlatform>,
}

/// The manifests of an index to load: every one, or the first for the platform.
pub fn choose(index: &[u8], platforms: &Platforms) -> Result<Vec<Digest>, String> {
    let index: IndexShape = serde_json::from_slice(index).map_err(|e| format!("index is not valid: {e}"))?;
    let p = match platforms {
        Platforms::All => return Ok(index.manifests.into_iter().map(|e| e.digest).collect()),
        Platforms::One(p) => p,
    };
    if let Some(e) = index.manifests.iter().find(|e| e.platform.as_ref().is_some_and(|ep| p.matches(ep))) {
        return Ok(vec![e.digest.clone()]);
    }
    let have: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|e| e.platform.as_ref())
        .map(|ep| match &ep.variant {
            Some(v) => format!("{}/{}/{v}", ep.os, ep.architecture),
            None => format!("{}/{}", ep.os, ep.architecture),
        })
        .collect();
    Err(format!("the index has no {p} image (it has: {}); see --os, --arch, --all-platforms", have.join(", ")))
}
