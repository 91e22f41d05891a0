//! Tag records: (registry, repository, tag) → manifest digest, media type and
//! when it was fetched and last checked. One small JSON file per tag, replaced
//! atomically (write temp, fsync, rename), read into memory at startup.

use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::oci::{Digest, MediaType, RegistryName, RepoName, Tag};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TagKey {
    pub registry: RegistryName,
    pub repo: RepoName,
    pub tag: Tag,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagRecord {
    pub digest: Digest,
    /// Checked when read back: a record with an invalid one is not loaded.
    pub media_type: MediaType,
    /// Unix seconds when the tag was first resolved to this digest.
    pub fetched_at: u64,
    /// Unix seconds when the upstream last confirmed it.
    pub last_checked_at: u64,
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Writes `record` to `path` atomically, going through `tmp` in the same file system.
pub fn write(path: &Path, tmp: &Path, record: &TagRecord) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
    super::write_atomically(path, tmp, &bytes)
}

/// Reads every tag record under `tags_dir` (layout `<registry>/<repo…>/_tags/<tag>`).
pub fn load_all(tags_dir: &Path) -> io::Result<Vec<(TagKey, TagRecord)>> {
    let mut out = Vec::new();
    let registries = match std::fs::read_dir(tags_dir) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for reg in registries {
        let reg = reg?;
        // A stray file here (a note, an editor's backup) is not a registry.
        if !reg.file_type()?.is_dir() {
            continue;
        }
        let Ok(registry) = reg.file_name().to_string_lossy().parse::<RegistryName>() else {
            continue;
        };
        walk_repo(&reg.path(), &registry, String::new(), &mut out, 0)?;
    }
    Ok(out)
}

fn walk_repo(
    dir: &Path,
    registry: &RegistryName,
    repo: String,
    out: &mut Vec<(TagKey, TagRecord)>,
    depth: usize,
) -> io::Result<()> {
    if depth > 64 {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type()?.is_dir() {
            continue;
        }
        if name == "_tags" {
            read_tags(&entry.path(), registry, &repo, out)?;
        } else {
            let child = if repo.is_empty() { name } else { format!("{repo}/{name}") };
            walk_repo(&entry.path(), registry, child, out, depth + 1)?;
        }
    }
    Ok(())
}

fn read_tags(dir: &Path, registry: &RegistryName, repo: &str, out: &mut Vec<(TagKey, TagRecord)>) -> io::Result<()> {
    let Ok(repo) = repo.parse::<RepoName>() else {
        return Ok(());
    };
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(tag) = entry.file_name().to_string_lossy().parse::<Tag>() else {
            continue;
        };
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        let Ok(record) = serde_json::from_slice::<TagRecord>(&bytes) else {
            continue;
        };
        out.push((TagKey { registry: registry.clone(), repo: repo.clone(), tag }, record));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stray_files_among_the_registries_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let record = TagRecord {
            digest: "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse().unwrap(),
            media_type: "application/vnd.oci.image.manifest.v1+json".parse().unwrap(),
            fetched_at: 1,
            last_checked_at: 1,
        };
        let path = dir.path().join("quay.io/a/_tags/v1");
        write(&path, &dir.path().join("tmp-v1"), &record).unwrap();
        // Names that parse as registries, but are files, not directories.
        std::fs::write(dir.path().join("readme"), "notes").unwrap();
        std::fs::write(dir.path().join("quay.io/notes"), "notes").unwrap();
        let loaded = load_all(dir.path()).unwrap();
        assert_eq!(loaded.len(), 1, "{loaded:?}");
        assert_eq!(loaded[0].1, record);
    }
}
