//! Pinned references: images `prune` never removes, whatever selects them.
//! `index/pins` holds one reference a line (`registry/repo:tag` or
//! `registry/repo@digest`), rewritten atomically when pins are added;
//! lines that are not references are skipped when read. The `pinned:` config
//! list adds patterns (see `ops::prune`).

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::Store;

/// Pins kept at most; past this, adding one is refused.
pub const MAX_PINS: usize = 100_000;
/// The longest line read as a reference.
const MAX_REFERENCE: usize = 4096;

/// Reads a pins file (absent: none).
pub fn read(path: &Path) -> io::Result<BTreeSet<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(e),
    };
    Ok(text.lines().map(str::trim).filter(|l| is_reference(l)).take(MAX_PINS).map(str::to_string).collect())
}

/// `registry/repo:tag` or `registry/repo@algorithm:hex`, without spaces.
fn is_reference(line: &str) -> bool {
    if line.is_empty() || line.len() > MAX_REFERENCE || line.contains(char::is_whitespace) {
        return false;
    }
    match line.split_once('@') {
        Some((name, digest)) => name.contains('/') && digest.parse::<crate::oci::Digest>().is_ok(),
        None => line
            .rsplit_once(':')
            .is_some_and(|(name, tag)| name.contains('/') && tag.parse::<crate::oci::Tag>().is_ok()),
    }
}

impl Store {
    /// The pinned references.
    pub fn pins(&self) -> io::Result<BTreeSet<String>> {
        read(&self.layout.pins_file())
    }

    /// Pins `references` (`registry/repo:tag` or `registry/repo@digest`, as
    /// `list` prints them): prune never removes those images. Blocking.
    pub fn add_pins(&self, references: &[String]) -> io::Result<()> {
        let _writer = self.journal.lock();
        let mut pins = self.pins()?;
        for r in references {
            if !is_reference(r) {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{r:?} is not an image reference")));
            }
            pins.insert(r.clone());
        }
        if pins.len() > MAX_PINS {
            return Err(io::Error::other(format!("more than {MAX_PINS} pins")));
        }
        let text: String = pins.iter().map(|p| format!("{p}\n")).collect();
        let tmp = self.layout.temp_index("pins", self.temp_counter.fetch_add(1, Ordering::Relaxed));
        super::write_atomically(&self.layout.pins_file(), &tmp, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::super::MemoryLimits;
    use super::*;

    #[test]
    fn pins_are_added_kept_across_reopen_and_bad_lines_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        {
            let store = Store::open(dir.path(), MemoryLimits::default()).unwrap();
            store.add_pins(&["quay.io/a:v1".into()]).unwrap();
            store.add_pins(&[format!("127.0.0.1:5000/b@{digest}"), "quay.io/a:v1".into()]).unwrap();
            assert!(store.add_pins(&["not a reference".into()]).is_err());
        }
        let store = Store::open(dir.path(), MemoryLimits::default()).unwrap();
        let path = store.layout().pins_file();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("junk\nquay.io/x:bad tag\n127.0.0.1:5000/c\n");
        std::fs::write(&path, text).unwrap();
        let pins: Vec<String> = store.pins().unwrap().into_iter().collect();
        assert_eq!(pins, vec![format!("127.0.0.1:5000/b@{digest}"), "quay.io/a:v1".to_string()]);
    }
}
