//! The second pass of a migration: what the scan found goes into the store.
//! Blobs first: each verified Go blob file is fsynced and renamed (the same
//! filesystem) into `blobs/<algorithm>/<2 hex>/<hex>`, then journaled. Then
//! manifests, exactly as a pull commits them (file, journal line, tag
//! record); only once that is durable is the Go file moved to `go-migrated/`.
//! Refused and unknown files are moved to `go-migrated/refused/` and
//! `go-migrated/unknown/`, so a second run finds nothing; anything else
//! (a directory, a link) stays where it is and is reported again.
//!
//! Every step can be interrupted: what was moved is indexed, what was not is
//! still in the Go directories, and a blob renamed but not yet journaled
//! (a crash between the two) is found by digest and journaled on the next run.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use super::go_format::{shown, Dir};
use super::scan::{self, Entry, Plan};
use super::Summary;
use crate::oci::Digest;
use crate::store::{sync_parent, tags::now_secs, Kind, Layout, Record, StagedManifest, Store, TagKey, TagRecord};

/// Imports the plan into the store (blocking).
pub fn apply(store: &Store, plan: Plan) -> io::Result<Summary> {
    let root = store.layout().root().to_path_buf();
    let mut plan = plan;
    // The newest first: when two Go files claim one tag, the later pull's manifest gets it.
    plan.manifests.sort_by_key(|f| std::cmp::Reverse(f.manifest.created));
    let mut summary = Summary { refused: plan.refused.len(), unknown: plan.unknown.len(), ..Summary::default() };
    // Each blob is journaled for the first repository whose image manifest references it.
    let mut sources: HashMap<&Digest, String> = HashMap::new();
    for found in plan.manifests.iter().filter(|f| !f.manifest.info.is_index) {
        for reference in &found.manifest.info.references {
            sources.entry(&reference.digest).or_insert_with(|| source_of(&found.manifest.image));
        }
    }
    let source = |d: &Digest| sources.get(d).cloned().unwrap_or_default();
    for blob in &plan.blobs {
        if blob.known {
            remove(&blob.path)?;
            summary.duplicates += 1;
            continue;
        }
        store.commit_verified_file(&blob.path, &blob.digest, blob.size, &source(&blob.digest))?;
        summary.blobs += 1;
    }
    summary.blobs += recover_renamed(store, &plan, &source)?;
    for found in &plan.manifests {
        let m = &found.manifest;
        import_manifest(store, m)?;
        crate::faults::panic_point("migrate", &format!("{}/{}", found.dir.name(), m.digest.hex()));
        move_aside(&root, &found.path, &[found.dir.name()])?;
        summary.manifests += 1;
        if !m.info.is_index {
            let missing = m.info.references.iter().filter(|r| store.record(&r.digest).is_none()).count();
            if missing > 0 {
                summary.incomplete += 1;
                tracing::warn!(
                    image = %m.image,
                    digest = %m.digest,
                    missing,
                    "Go cache: imported a manifest whose blobs are not all cached; list shows it incomplete"
                );
            }
        }
    }
    if !plan.manifests.is_empty() {
        store.flush_pulled()?;
    }
    for entry in &plan.refused {
        set_aside(&root, entry, "refused")?;
    }
    for entry in &plan.unknown {
        set_aside(&root, entry, "unknown")?;
    }
    for dir in Dir::ALL {
        // Gone only when empty: what stays is reported on the next run too.
        let _ = std::fs::remove_dir(root.join(dir.name()));
    }
    Ok(summary)
}

fn source_of(image: &crate::ops::load::ImageRef) -> String {
    format!("{}/{}", image.registry, image.repo)
}

fn blob_record(size: u64) -> Record {
    Record { kind: Kind::Blob, media_type: None, size, sources: vec![], created: Some(now_secs()) }
}

/// Blobs an earlier run renamed into place but did not live to journal:
/// files of digests the Go manifests reference, present in our layout with
/// no record. Each is hashed again before it is journaled.
fn recover_renamed(store: &Store, plan: &Plan, source: &impl Fn(&Digest) -> String) -> io::Result<usize> {
    let mut buffer = vec![0u8; 1 << 20];
    let mut recovered = 0;
    let referenced =
        plan.manifests.iter().filter(|f| !f.manifest.info.is_index).flat_map(|f| &f.manifest.info.references);
    for reference in referenced {
        let digest = &reference.digest;
        let path = store.layout().blob(digest);
        if store.record(digest).is_some() || !path.is_file() {
            continue;
        }
        match scan::hash(&path, &mut buffer)? {
            (actual, size) if &actual == digest => {
                store.add_record(digest, blob_record(size), &source(digest))?;
                recovered += 1;
            }
            _ => {
                tracing::warn!(%digest, "Go cache: a blob file left by an interrupted import is damaged; left as an orphan")
            }
        }
    }
    Ok(recovered)
}

/// Commits one Go manifest (and its tag) as a pull would; nothing when it is in already.
fn import_manifest(store: &Store, m: &super::go_format::GoManifest) -> io::Result<()> {
    let source = source_of(&m.image);
    let tag = match &m.image.tag {
        None => None,
        Some(tag) => {
            let key = TagKey { registry: m.image.registry.clone(), repo: m.image.repo.clone(), tag: tag.clone() };
            match store.tag(&key) {
                Some(ours) if ours.digest == m.digest => None,
                Some(ours) => {
                    tracing::warn!(
                        image = %m.image,
                        go_digest = %m.digest,
                        digest = %ours.digest,
                        "Go cache: this cache's tag already names another manifest; kept it"
                    );
                    None
                }
                None => {
                    let at = m.created.unwrap_or_else(now_secs);
                    let record = TagRecord {
                        digest: m.digest.clone(),
                        media_type: m.media_type.clone(),
                        fetched_at: at,
                        last_checked_at: at,
                    };
                    Some((key, record))
                }
            }
        }
    };
    let committed = store.record(&m.digest).is_some_and(|r| r.kind == Kind::Manifest && r.sources.contains(&source));
    if !committed || tag.is_some() {
        let staged = StagedManifest {
            digest: m.digest.clone(),
            media_type: m.media_type.clone(),
            body: m.body.clone(),
            source,
            tag,
        };
        store.commit_dated_manifest(&staged, m.created.unwrap_or_else(now_secs))?;
    }
    if let Some(pulled) = m.pulled {
        store.note_pulled([(m.digest.clone(), pulled)]);
    }
    Ok(())
}

/// Moves a refused or unknown regular file to `go-migrated/<why>/<dir>/`; leaves anything else.
fn set_aside(root: &Path, entry: &Entry, why: &str) -> io::Result<()> {
    if !entry.file {
        return Ok(());
    }
    move_aside(root, &entry.path, &[why, entry.dir])
}

/// Renames `path` into `go-migrated/<sub...>/` under the same name, durably.
fn move_aside(root: &Path, path: &Path, sub: &[&str]) -> io::Result<()> {
    let mut dir: PathBuf = Layout::new(root).go_migrated_dir();
    for s in sub {
        dir.push(s);
    }
    std::fs::create_dir_all(&dir)?;
    let name = path.file_name().ok_or_else(|| io::Error::other(format!("{} has no name", shown(path.as_os_str()))))?;
    let target = dir.join(name);
    std::fs::rename(path, &target)?;
    sync_parent(&target)?;
    sync_parent(path)
}

/// Removes a Go file whose content our index holds already.
fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_parent(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::super::go_format::tests::{holder, holder_at};
    use super::*;
    use crate::oci::Algorithm;
    use crate::store::MemoryLimits;

    fn hex(bytes: &[u8]) -> String {
        Digest::of(Algorithm::Sha256, bytes).hex().to_string()
    }

    /// A Go tree: one image by tag (config + layer), and its manifest again under lts/ as latest.
    fn go_tree(root: &Path) -> (String, String, Vec<String>) {
        let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
        let layer = b"layer bytes".to_vec();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{}","size":{}}}]}}"#,
            hex(&config),
            config.len(),
            hex(&layer),
            layer.len()
        );
        let other = manifest.replace("\"schemaVersion\":2", "\"schemaVersion\": 2");
        for dir in ["img", "lts", "blobs"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        let (m, o) = (hex(manifest.as_bytes()), hex(other.as_bytes()));
        std::fs::write(root.join("img").join(&m), holder(3, &m, "quay.io/a/b:v1", manifest.as_bytes())).unwrap();
        std::fs::write(root.join("lts").join(&o), holder(3, &o, "quay.io/a/b:latest", other.as_bytes())).unwrap();
        for blob in [&config, &layer] {
            std::fs::write(root.join("blobs").join(hex(blob)), blob).unwrap();
        }
        (m, o, vec![hex(&config), hex(&layer)])
    }

    fn tag(store: &Store, tag: &str) -> Option<String> {
        let key =
            TagKey { registry: "quay.io".parse().unwrap(), repo: "a/b".parse().unwrap(), tag: tag.parse().unwrap() };
        store.tag(&key).map(|r| r.digest.hex().to_string())
    }

    #[test]
    fn imports_in_place_once() {
        let dir = tempfile::tempdir().unwrap();
        let (m, o, blobs) = go_tree(dir.path());
        let store = Store::open(dir.path(), MemoryLimits::default()).unwrap();
        let summary = super::super::at_startup(&store).unwrap().unwrap();
        assert_eq!((summary.manifests, summary.blobs, summary.refused, summary.incomplete), (2, 2, 0, 0));
        assert_eq!((tag(&store, "v1"), tag(&store, "latest")), (Some(m.clone()), Some(o.clone())));
        for b in &blobs {
            let d: Digest = format!("sha256:{b}").parse().unwrap();
            assert_eq!(store.record(&d).unwrap().sources, ["quay.io/a/b"]);
            assert!(store.layout().blob(&d).is_file());
        }
        let dm: Digest = format!("sha256:{m}").parse().unwrap();
        let go_created = crate::go_time::parse_date("2025-02-28T12:59:59").ok();
        assert_eq!(store.record(&dm).unwrap().created, go_created, "a migrated manifest keeps its age");
        let go_pulled = crate::go_time::parse_date("2025-03-01T08:00:00").unwrap();
        let pulled = std::fs::read_to_string(store.layout().pulled_file()).unwrap();
        assert!(pulled.contains(&format!("{dm} {go_pulled}")), "{pulled}");
        assert!(store.layout().go_migrated_dir().join("img").join(&m).is_file());
        assert!(store.layout().go_migrated_dir().join("lts").join(&o).is_file());
        assert!(!dir.path().join("img").exists() && !dir.path().join("lts").exists());
        let journal = std::fs::read_to_string(store.layout().records_journal()).unwrap();
        assert_eq!(super::super::at_startup(&store).unwrap(), None, "nothing left to import");
        // A run interrupted before its Go files moved: the next one adds nothing twice.
        std::fs::create_dir_all(dir.path().join("img")).unwrap();
        std::fs::rename(store.layout().go_migrated_dir().join("img").join(&m), dir.path().join("img").join(&m))
            .unwrap();
        let again = super::super::at_startup(&store).unwrap().unwrap();
        assert_eq!((again.manifests, again.blobs), (1, 0));
        assert_eq!(std::fs::read_to_string(store.layout().records_journal()).unwrap(), journal);
    }

    #[test]
    fn a_blob_renamed_but_not_journaled_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, blobs) = go_tree(dir.path());
        let store = Store::open(dir.path(), MemoryLimits::default()).unwrap();
        // The crash window: renamed into our layout, no journal line yet.
        let d: Digest = format!("sha256:{}", blobs[1]).parse().unwrap();
        std::fs::create_dir_all(store.layout().blob(&d).parent().unwrap()).unwrap();
        std::fs::rename(dir.path().join("blobs").join(&blobs[1]), store.layout().blob(&d)).unwrap();
        let summary = super::super::at_startup(&store).unwrap().unwrap();
        assert_eq!((summary.blobs, summary.incomplete), (2, 0));
        assert!(store.record(&d).is_some());
    }

    #[test]
    fn refused_and_unknown_files_are_set_aside_and_missing_blobs_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, blobs) = go_tree(dir.path());
        std::fs::write(dir.path().join("blobs").join(&blobs[1]), b"corrupted").unwrap();
        std::fs::write(dir.path().join("img/notes.txt"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("img/sub")).unwrap();
        let store = Store::open(dir.path(), MemoryLimits::default()).unwrap();
        let summary = super::super::at_startup(&store).unwrap().unwrap();
        assert_eq!((summary.manifests, summary.blobs, summary.refused, summary.unknown), (2, 1, 1, 2));
        assert_eq!(summary.incomplete, 2, "both manifests lack the corrupt layer");
        let d: Digest = format!("sha256:{}", blobs[1]).parse().unwrap();
        assert!(store.record(&d).is_none());
        assert!(store.layout().go_migrated_dir().join("refused/blobs").join(&blobs[1]).is_file());
        assert!(store.layout().go_migrated_dir().join("unknown/img/notes.txt").is_file());
        assert!(dir.path().join("img/sub").is_dir(), "a directory stays, reported on each start");
        let next = super::super::at_startup(&store).unwrap().unwrap();
        assert_eq!((next.manifests, next.unknown), (0, 1));
    }

    #[test]
    fn when_two_go_files_claim_a_tag_the_newer_pull_gets_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("img")).unwrap();
        let bodies: Vec<String> = (0..3)
            .map(|i| {
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{}","layers":[],"n":{i}}}"#,
                    crate::oci::media::OCI_MANIFEST
                )
            })
            .collect();
        let created = ["2025-01-01T00:00:00", "2025-06-01T00:00:00", "2025-03-01T00:00:00"];
        for (body, at) in bodies.iter().zip(created) {
            let h = hex(body.as_bytes());
            std::fs::write(dir.path().join("img").join(&h), holder_at(3, &h, "quay.io/a/b:v1", body.as_bytes(), at))
                .unwrap();
        }
        let store = Store::open(dir.path(), MemoryLimits::default()).unwrap();
        let summary = super::super::at_startup(&store).unwrap().unwrap();
        assert_eq!(summary.manifests, 3);
        assert_eq!(tag(&store, "v1"), Some(hex(bodies[1].as_bytes())));
    }
}
