//! The built-in hello-world image (`serve --hello-world`, `helloWorld`), as
//! the Go ociregistry has one for trying a cluster's wiring with no upstream:
//! `docker.io/library/hello-world:latest`, an OCI index for linux/amd64 whose
//! one layer holds a static program printing a greeting. Docker's own image
//! cannot be shipped here, so `assets/hello-world/` holds ours: the program's
//! source (`hello.S`) and `build.sh`, which regenerates the layer, config,
//! manifest and index embedded below. Installing commits them to the store
//! as a pull would (digest-checked, tag recorded) and is idempotent.

use bytes::Bytes;

use crate::oci::{media, Algorithm, Digest, MediaType, Reference};
use crate::store::{tags::now_secs, BlobWriter, Kind, StagedManifest, Store, TagKey, TagRecord};

/// The name it is served under.
pub const NAME: &str = "docker.io/library/hello-world:latest";
const SOURCE: &str = "docker.io/library/hello-world";

const INDEX: &[u8] = include_bytes!("../../../assets/hello-world/index.json");
const MANIFEST: &[u8] = include_bytes!("../../../assets/hello-world/manifest.json");
const CONFIG: &[u8] = include_bytes!("../../../assets/hello-world/config.json");
const LAYER: &[u8] = include_bytes!("../../../assets/hello-world/layer.tar.gz");

/// Commits the image to `store` unless it is there; returns the index digest.
pub fn install(store: &Store) -> Result<Digest, String> {
    for blob in [CONFIG, LAYER] {
        let digest = Digest::of(Algorithm::Sha256, blob);
        if store.record(&digest).is_some() {
            continue;
        }
        let (mut writer, _) = BlobWriter::create(store, &digest).map_err(|e| e.to_string())?;
        writer.write(blob).map_err(|e| e.to_string())?;
        writer.verify().map_err(|e| e.to_string())?;
        writer.commit(store, SOURCE).map_err(|e| e.to_string())?;
    }
    let manifest = Digest::of(Algorithm::Sha256, MANIFEST);
    commit_manifest(store, &manifest, media::OCI_MANIFEST, MANIFEST, None)?;
    let index = Digest::of(Algorithm::Sha256, INDEX);
    let reference: crate::ops::load::ImageRef = crate::ops::load::ImageRef::parse(NAME)?;
    let Reference::Tag(tag) = reference.reference() else { unreachable!("NAME has a tag") };
    let key = TagKey { registry: reference.registry, repo: reference.repo, tag };
    let now = now_secs();
    let record = TagRecord {
        digest: index.clone(),
        media_type: MediaType::known(media::OCI_INDEX),
        fetched_at: now,
        last_checked_at: now,
    };
    let tag = store.tag(&key).is_none_or(|r| r.digest != index).then_some((key, record));
    commit_manifest(store, &index, media::OCI_INDEX, INDEX, tag)?;
    Ok(index)
}

fn commit_manifest(
    store: &Store,
    digest: &Digest,
    media_type: &'static str,
    body: &'static [u8],
    tag: Option<(TagKey, TagRecord)>,
) -> Result<(), String> {
    let committed = store.record(digest).is_some_and(|r| r.kind == Kind::Manifest);
    if committed && tag.is_none() {
        return Ok(());
    }
    let staged = StagedManifest {
        digest: digest.clone(),
        media_type: MediaType::known(media_type),
        body: Bytes::from_static(body),
        source: SOURCE.to_string(),
        tag,
    };
    store.stage_manifest(&staged);
    store.persist_manifest(&staged).map_err(|e| format!("cannot commit manifest {digest}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_image_is_consistent_and_installs_idempotently() {
        let config = Digest::of(Algorithm::Sha256, CONFIG).to_string();
        let layer = Digest::of(Algorithm::Sha256, LAYER).to_string();
        let manifest = String::from_utf8_lossy(MANIFEST);
        assert!(manifest.contains(&config) && manifest.contains(&layer), "rerun assets/hello-world/build.sh");
        assert!(String::from_utf8_lossy(INDEX).contains(&Digest::of(Algorithm::Sha256, MANIFEST).to_string()));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), crate::store::MemoryLimits::default()).unwrap();
        let index = install(&store).unwrap();
        let journal = std::fs::read_to_string(store.layout().records_journal()).unwrap();
        assert_eq!(install(&store).unwrap(), index);
        assert_eq!(std::fs::read_to_string(store.layout().records_journal()).unwrap(), journal, "installed twice");
        let key = TagKey {
            registry: "docker.io".parse().unwrap(),
            repo: "library/hello-world".parse().unwrap(),
            tag: "latest".parse().unwrap(),
        };
        assert_eq!(store.tag(&key).unwrap().digest, index);
        assert_eq!(store.blob(&Digest::of(Algorithm::Sha256, LAYER)).unwrap().size, LAYER.len() as u64);
    }
}
