//! Images of an OCI image layout tarball (`oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>`), as skopeo's `oci-archive:` and `docker save` of
//! Docker 25+ write them. Each `index.json` entry is one image, named by its
//! `io.containerd.image.name` annotation, else by
//! `org.opencontainers.image.ref.name` when that is a full reference
//! (registry included); an entry without a usable name is refused.

use serde::Deserialize;

use super::scan::Scan;
use super::{BlobPlan, ImagePlan, ManifestPlan, Plan};
use crate::oci::{media, Digest, MediaType};
use crate::ops::load::image_ref::ImageRef;
use crate::ops::load::platform::{self, Platforms};

const CONTAINERD_NAME: &str = "io.containerd.image.name";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    digest: Digest,
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
}

/// Where a blob of `digest` is in the layout.
pub fn blob_name(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex())
}

/// Plans every image of the layout; `what` names the tarball in messages.
pub fn plan(scan: &Scan, platforms: &Platforms, resolve: Option<&ImageRef>, what: &str) -> Result<Plan, String> {
    let index = scan.json.get("index.json").ok_or_else(|| format!("{what}: index.json is larger than 4 MiB"))?;
    let index: Index = serde_json::from_slice(index).map_err(|e| format!("{what}: index.json is not valid: {e}"))?;
    if let Some(r) = resolve {
        super::single_image_for(r, index.manifests.len(), what)?;
    }
    let mut plan = Plan::default();
    for entry in index.manifests {
        let label = format!("{} in {what}", entry.digest);
        let named = match resolve {
            Some(r) => Ok(r.clone()),
            None => name_of(&entry),
        };
        let name = match named {
            Ok(n) => n,
            Err(e) => {
                plan.refused.push((label, e));
                continue;
            }
        };
        let mut image = ImagePlan { names: vec![name], manifests: Vec::new(), blobs: Vec::new() };
        add_manifest(scan, platforms, &entry.digest, entry.media_type.as_deref(), 0, &mut image)?;
        plan.images.push(image);
    }
    if plan.images.is_empty() && plan.refused.is_empty() {
        return Err(format!("{what}: index.json lists no image"));
    }
    Ok(plan)
}

fn name_of(entry: &Entry) -> Result<ImageRef, String> {
    let name = if let Some(n) = entry.annotations.get(CONTAINERD_NAME) {
        ImageRef::parse(n).map_err(|e| format!("its {CONTAINERD_NAME} annotation: {e}"))?
    } else if let Some(n) = entry.annotations.get(REF_NAME) {
        ImageRef::parse(n).map_err(|_| {
            format!(
                "it has no usable name: its {REF_NAME} {n:?} is not a full reference (registry/repository:tag) and it \
                 has no {CONTAINERD_NAME}; name it when creating the archive (skopeo copy … oci-archive:FILE:host/repo:tag)"
            )
        })?
    } else {
        return Err(format!("it has no name ({CONTAINERD_NAME} or {REF_NAME} annotation)"));
    };
    match &name.digest {
        Some(d) if *d != entry.digest => Err(format!("its name {name} names another digest")),
        _ => Ok(name),
    }
}

/// Adds a manifest (children first) and, for an image manifest, its blobs.
fn add_manifest(
    scan: &Scan,
    platforms: &Platforms,
    digest: &Digest,
    descriptor_type: Option<&str>,
    depth: usize,
    image: &mut ImagePlan,
) -> Result<(), String> {
    let name = blob_name(digest);
    let body =
        scan.json.get(&name).ok_or_else(|| format!("manifest {digest} is missing from the tarball (or over 4 MiB)"))?;
    let actual = Digest::of(digest.algorithm(), body);
    if actual != *digest {
        return Err(format!("{name} hashes to {actual}, not {digest}"));
    }
    let info = media::inspect(body)?;
    let media_type: MediaType = media::effective_media_type(descriptor_type, &info, &[])?;
    if media::is_schema1(media_type.as_str()) || info.schema_version == Some(1) {
        return Err(format!("manifest {digest} is Docker schema 1, which is not supported"));
    }
    if info.is_index {
        if depth >= 2 {
            return Err(format!("index {digest}: indexes nested too deep"));
        }
        for child in platform::choose(body, platforms).map_err(|e| format!("index {digest}: {e}"))? {
            add_manifest(scan, platforms, &child, None, depth + 1, image)?;
        }
    } else {
        for r in &info.references {
            if !image.blobs.iter().any(|b| b.digest == r.digest) {
                image.blobs.push(BlobPlan { digest: r.digest.clone(), entry: blob_name(&r.digest), size: r.size });
            }
        }
    }
    image.manifests.push(ManifestPlan { digest: digest.clone(), media_type, body: body.clone().into() });
    Ok(())
}
