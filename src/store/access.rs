//! When each manifest was last pulled. Serving threads note pulls in buffers
//! of their own and hand them over in batches (see `serve::pulls`); here they
//! are merged into one map bounded by the manifest records (a digest the
//! store holds no manifest for is not kept), written to `index/pulled`
//! atomically every [`FLUSH_EVERY`] and at shutdown, and read back at
//! startup. The file holds one `<digest> <unix seconds>` line per manifest;
//! lines that do not parse are skipped.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::oci::Digest;

/// How often the server writes the times out (and so how far `list` may lag).
pub const FLUSH_EVERY: Duration = Duration::from_secs(30);
/// Lines read from the file at most, whatever is in it.
const MAX_LINES: usize = 4_000_000;

#[derive(Default)]
pub struct AccessTimes {
    map: Mutex<HashMap<Digest, u64>>,
    /// Changed since the last write.
    dirty: AtomicBool,
}

impl AccessTimes {
    pub fn new(map: HashMap<Digest, u64>) -> AccessTimes {
        AccessTimes { map: Mutex::new(map), dirty: AtomicBool::new(false) }
    }

    /// Merges a batch of pulls, keeping only digests `keep` accepts.
    pub fn note(&self, batch: impl IntoIterator<Item = (Digest, u64)>, keep: impl Fn(&Digest) -> bool) {
        let mut map = self.map.lock();
        for (digest, at) in batch {
            if let Some(t) = map.get_mut(&digest) {
                *t = (*t).max(at);
            } else if keep(&digest) {
                map.insert(digest, at);
            } else {
                continue;
            }
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    pub fn forget(&self, digest: &Digest) {
        if self.map.lock().remove(digest).is_some() {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> HashMap<Digest, u64> {
        self.map.lock().clone()
    }

    /// Writes the map to `path` (through `tmp`) if it changed since the last write.
    pub fn flush(&self, path: &Path, tmp: &Path) -> io::Result<()> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let mut text = String::new();
        for (digest, at) in self.snapshot() {
            text.push_str(&format!("{digest} {at}\n"));
        }
        let written = super::write_atomically(path, tmp, text.as_bytes());
        if written.is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
        written
    }
}

/// Reads the file (absent: no times); lines that do not parse are skipped.
pub fn load(path: &Path) -> io::Result<HashMap<Digest, u64>> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    };
    let mut map = HashMap::new();
    for line in text.split(|&b| b == b'\n').take(MAX_LINES) {
        let Ok(line) = std::str::from_utf8(line) else { continue };
        let mut parts = line.split(' ');
        let (Some(digest), Some(at), None) = (parts.next(), parts.next(), parts.next()) else { continue };
        let (Ok(digest), Ok(at)) = (digest.parse::<Digest>(), at.parse::<u64>()) else { continue };
        map.insert(digest, at);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;

    #[test]
    fn times_round_trip_bad_lines_are_skipped_and_unknown_digests_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (path, tmp) = (dir.path().join("pulled"), dir.path().join("tmp"));
        let (a, b) = (Digest::of(Algorithm::Sha256, b"a"), Digest::of(Algorithm::Sha256, b"b"));
        let times = AccessTimes::default();
        times.note([(a.clone(), 10), (b.clone(), 5)], |d| d == &a);
        times.note([(a.clone(), 7)], |_| true);
        times.flush(&path, &tmp).unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{a} 10\n"), "the later time wins; a digest not kept is dropped");
        text.push_str("junk\nsha256:zz 1\n");
        text.push_str(&format!("{b} notanumber\n{b} 3 extra\n{b} 4"));
        std::fs::write(&path, text).unwrap();
        assert_eq!(load(&path).unwrap(), HashMap::from([(a, 10), (b, 4)]));
        assert!(load(&dir.path().join("absent")).unwrap().is_empty());
    }
}
