//! Images of a `docker save` tarball (`manifest.json` listing each image's
//! `Config`, `RepoTags` and `Layers`, with legacy uncompressed layer tars).
//! There is no registry manifest inside, so one is built: a Docker schema 2
//! manifest whose config is the config file and whose layers are the layer
//! tars (`rootfs.diff.tar`), each named by its digest, which for an
//! uncompressed layer is the config's `diff_ids` entry and is checked against
//! the bytes when they are read. A layer some tools write gzipped (podman,
//! skopeo `docker-archive:` from a compressed source) is named by the digest
//! of its compressed bytes, typed `rootfs.diff.tar.gzip`, and must decompress
//! to its `diff_ids` entry (both checked in the first pass, the compressed
//! digest again as it is stored). Names come from `RepoTags`, made full
//! references by Docker's rule (`x:tag` is `docker.io/library/x:tag`); an
//! image without tags is refused.

use serde::Deserialize;
use serde_json::json;

use super::scan::Scan;
use super::{BlobPlan, ImagePlan, ManifestPlan, Plan};
use crate::oci::{media, Algorithm, Digest, MediaType};
use crate::ops::load::image_ref::ImageRef;

const CONFIG_TYPE: &str = "application/vnd.docker.container.image.v1+json";
const LAYER_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar";
const GZIP_LAYER_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Saved {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct Config {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<Digest>,
}

pub fn plan(scan: &Scan, resolve: Option<&ImageRef>, what: &str) -> Result<Plan, String> {
    let manifest =
        scan.json.get("manifest.json").ok_or_else(|| format!("{what}: manifest.json is larger than 4 MiB"))?;
    let saved: Vec<Saved> =
        serde_json::from_slice(manifest).map_err(|e| format!("{what}: manifest.json is not valid: {e}"))?;
    if let Some(r) = resolve {
        super::single_image_for(r, saved.len(), what)?;
    }
    let mut plan = Plan::default();
    for (i, s) in saved.into_iter().enumerate() {
        let label = format!("image {} ({}) in {what}", i + 1, s.config);
        if let Some(r) = resolve {
            plan.images.push(image(scan, &s, vec![r.clone()]).map_err(|e| format!("{label}: {e}"))?);
            continue;
        }
        let tags = s.repo_tags.clone().unwrap_or_default();
        if tags.is_empty() {
            plan.refused.push((label, "it has no RepoTags to name it by".to_string()));
            continue;
        }
        let names: Result<Vec<ImageRef>, String> = tags.iter().map(|t| ImageRef::parse_docker(t)).collect();
        let names = match names {
            Ok(n) if n.iter().all(|r| r.digest.is_none()) => n,
            Ok(_) => {
                plan.refused.push((label, "a RepoTags entry carries a digest".to_string()));
                continue;
            }
            Err(e) => {
                plan.refused.push((label, format!("RepoTags: {e}")));
                continue;
            }
        };
        plan.images.push(image(scan, &s, names).map_err(|e| format!("{label}: {e}"))?);
    }
    Ok(plan)
}

fn image(scan: &Scan, saved: &Saved, names: Vec<ImageRef>) -> Result<ImagePlan, String> {
    let config = scan.json.get(&saved.config).ok_or_else(|| format!("its config {} is missing", saved.config))?;
    let parsed: Config = serde_json::from_slice(config).map_err(|e| format!("config {}: {e}", saved.config))?;
    let diff_ids = parsed.rootfs.diff_ids;
    if diff_ids.len() != saved.layers.len() {
        return Err(format!("{} layers but {} diff_ids in its config", saved.layers.len(), diff_ids.len()));
    }
    let config_digest = Digest::of(Algorithm::Sha256, config);
    let mut blobs =
        vec![BlobPlan { digest: config_digest.clone(), entry: saved.config.clone(), size: config.len() as u64 }];
    let mut layers = Vec::new();
    for (entry, diff_id) in saved.layers.iter().zip(diff_ids) {
        let size = *scan.sizes.get(entry).ok_or_else(|| format!("its layer {entry} is missing"))?;
        let (digest, media_type) = match scan.gzipped.get(entry) {
            Some(gz) if gz.uncompressed == diff_id => (gz.compressed.clone(), GZIP_LAYER_TYPE),
            Some(gz) => {
                return Err(format!(
                    "its layer {entry} decompresses to {}, not its diff_ids entry {diff_id}",
                    gz.uncompressed
                ))
            }
            None => (diff_id, LAYER_TYPE),
        };
        layers.push(json!({"mediaType": media_type, "size": size, "digest": digest.to_string()}));
        blobs.push(BlobPlan { digest, entry: entry.clone(), size });
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::DOCKER_MANIFEST,
        "config": {"mediaType": CONFIG_TYPE, "size": config.len(), "digest": config_digest.to_string()},
        "layers": layers,
    });
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
    let digest = Digest::of(Algorithm::Sha256, &body);
    let manifest = ManifestPlan { digest, media_type: MediaType::known(media::DOCKER_MANIFEST), body: body.into() };
    Ok(ImagePlan { names, manifests: vec![manifest], blobs })
}
