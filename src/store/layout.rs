//! The on-disk layout of the image path. This module is the only code that
//! builds paths inside it; everything is a plain file, so a copy of the
//! directory serves on another host.
//!
//! ```text
//! <image-path>/
//!   .lock                              exclusive lock of the owning process (holds its pid)
//!   .admin                             where a running server's admin API is (JSON: url, pid),
//!                                      written once it listens, removed when it stops
//!   blobs/<algorithm>/<2 hex>/<hex>    committed blobs and manifests, immutable
//!   index/records.jsonl                per-digest records (kind, media type, size, sources),
//!                                      one JSON object a line, appended after each commit
//!                                      (and after each removal by `verify --repair` or `prune`);
//!                                      each line carries `at`, the commit's unix seconds
//!                                      (lines of older releases lack it)
//!   index/pulled                       when each manifest was last pulled: `<digest> <unix secs>`
//!                                      lines, rewritten atomically every 30 s and at shutdown
//!   index/pins                         pinned references (`load --pin`), one a line, never pruned
//!   tags/<registry>/<repo>/_tags/<tag> tag records (digest, media type, times), JSON,
//!                                      replaced atomically; `_` cannot start a repo component
//!   tmp/                               downloads in progress; emptied at startup
//!   go-migrated/                       a Go ociregistry cache's files once imported or set
//!                                      aside (`ops::migrate`), kept for the operator to delete
//! ```

use std::path::{Path, PathBuf};

use crate::oci::{Digest, RegistryName, RepoName, Tag};

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout { root: root.to_path_buf() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join(".lock")
    }

    /// Where a running server tells local commands how to reach its admin API.
    pub fn admin_file(&self) -> PathBuf {
        self.root.join(".admin")
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub fn blob(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.blobs_dir().join(digest.algorithm().as_str()).join(&hex[..2]).join(hex)
    }

    /// The digest whose committed file `path` is ([`Layout::blob`] inverted),
    /// or `None` for any other path.
    pub fn digest_of_blob(&self, path: &Path) -> Option<Digest> {
        let relative = path.strip_prefix(self.blobs_dir()).ok()?;
        let parts: Vec<&str> = relative.iter().map(|c| c.to_str()).collect::<Option<_>>()?;
        let [algorithm, _, hex] = parts.as_slice() else { return None };
        let digest: Digest = format!("{algorithm}:{hex}").parse().ok()?;
        (self.blob(&digest) == path).then_some(digest)
    }

    pub fn index_dir(&self) -> PathBuf {
        self.root.join("index")
    }

    pub fn records_journal(&self) -> PathBuf {
        self.index_dir().join("records.jsonl")
    }

    pub fn pulled_file(&self) -> PathBuf {
        self.index_dir().join("pulled")
    }

    pub fn pins_file(&self) -> PathBuf {
        self.index_dir().join("pins")
    }

    pub fn tags_dir(&self) -> PathBuf {
        self.root.join("tags")
    }

    pub fn tag(&self, registry: &RegistryName, repo: &RepoName, tag: &Tag) -> PathBuf {
        self.tags_dir().join(registry.as_str()).join(repo.as_str()).join("_tags").join(tag.as_str())
    }

    /// Where a migration puts the Go ociregistry's files it is done with.
    pub fn go_migrated_dir(&self) -> PathBuf {
        self.root.join("go-migrated")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A temp file for rewriting the index file `name`, unique to this process.
    pub fn temp_index(&self, name: &str, unique: u64) -> PathBuf {
        self.tmp_dir().join(format!("{name}.{}.{unique}", std::process::id()))
    }

    /// A temp file name unique to this process and download.
    pub fn temp(&self, digest: &Digest, unique: u64) -> PathBuf {
        self.tmp_dir().join(format!(
            "{}-{}.{}.{}",
            digest.algorithm().as_str(),
            digest.hex(),
            std::process::id(),
            unique
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let l = Layout::new(Path::new("/data"));
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse().unwrap();
        assert_eq!(
            l.blob(&d),
            Path::new("/data/blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        let tag = l.tag(&"127.0.0.1:5001".parse().unwrap(), &"a/x.json".parse().unwrap(), &"x".parse().unwrap());
        assert_eq!(tag, Path::new("/data/tags/127.0.0.1:5001/a/x.json/_tags/x"));
        assert!(l.temp(&d, 7).starts_with("/data/tmp"));
        assert_eq!(l.digest_of_blob(&l.blob(&d)), Some(d.clone()));
        for other in [
            "/data/blobs/sha256/ff/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "/data/blobs/sha256/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "/data/blobs/sha256/e3/junk",
            "/elsewhere/blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert_eq!(l.digest_of_blob(Path::new(other)), None, "{other}");
        }
    }
}
