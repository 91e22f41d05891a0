//! The first pass of a migration, read-only (and the whole of `--dry-run`):
//! every entry of the Go directories is sorted into a manifest that checked
//! out, a blob that hashed to its name (or one our index holds already), a
//! refusal with its reason, or an unknown entry. Nothing is followed through
//! a symbolic link; every name and reason is made printable before it is kept.
//! Blobs are hashed on as many threads as the process has CPUs. The plan
//! holds every Go manifest in memory, as the Go version itself did.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::go_format::{self, digest_of_name, shown, Dir, GoManifest, BLOBS, MAX_FILE_BYTES};
use crate::oci::{Algorithm, Digest, Hasher};
use crate::printable::printable;

/// What the Go directories hold.
#[derive(Default)]
pub struct Plan {
    pub manifests: Vec<FoundManifest>,
    pub blobs: Vec<GoBlob>,
    pub refused: Vec<Entry>,
    pub unknown: Vec<Entry>,
}

pub struct FoundManifest {
    pub path: PathBuf,
    pub dir: Dir,
    pub manifest: GoManifest,
}

pub struct GoBlob {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
    /// Our index holds this digest already: the Go copy is only removed.
    pub known: bool,
}

/// An entry that is not imported, and why.
pub struct Entry {
    pub path: PathBuf,
    /// `dir/name`, printable.
    pub shown: String,
    /// The Go directory it is in (`img`, `lts`, `blobs`).
    pub dir: &'static str,
    pub reason: String,
    /// A regular file (moved aside after a real run); anything else stays.
    pub file: bool,
}

impl Plan {
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().filter(|b| !b.known).map(|b| b.size).sum()
    }
}

/// Our own blob directories, which share `blobs/` with the Go blob files.
const OURS: [&str; 2] = ["sha256", "sha512"];

/// Whether the image path holds anything of a Go layout: `img/` or `lts/`,
/// or a file directly in `blobs/` (ours keeps only directories there).
pub fn present(root: &Path) -> io::Result<bool> {
    for dir in Dir::ALL {
        if root.join(dir.name()).symlink_metadata().is_ok() {
            return Ok(true);
        }
    }
    let blobs = root.join(BLOBS);
    let entries = match std::fs::read_dir(&blobs) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let ours = entry.file_type()?.is_dir() && OURS.iter().any(|o| entry.file_name() == *o);
        if !ours {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Reads and checks everything in the Go directories; `known` says whether
/// our index holds a digest already (such blobs are not hashed again).
pub fn scan(root: &Path, known: impl Fn(&Digest) -> bool) -> io::Result<Plan> {
    let mut plan = Plan::default();
    for dir in Dir::ALL {
        for (path, name, is_file) in entries(&root.join(dir.name()))? {
            let entry = |reason: String| Entry {
                shown: format!("{}/{}", dir.name(), shown(&name)),
                path: path.clone(),
                dir: dir.name(),
                reason: printable(&reason),
                file: is_file,
            };
            if !is_file || digest_of_name(&name).is_none() {
                plan.unknown.push(entry("not a Go manifest file (a regular file named by its sha256 hex)".into()));
                continue;
            }
            match read_bounded(&path).and_then(|text| go_format::parse_manifest(&name, dir, &text)) {
                Ok(manifest) => plan.manifests.push(FoundManifest { path: path.clone(), dir, manifest }),
                Err(reason) => plan.refused.push(entry(reason)),
            }
        }
    }
    let mut to_hash = Vec::new();
    for (path, name, is_file) in entries(&root.join(BLOBS))? {
        if !is_file && OURS.iter().any(|o| name == *o) {
            continue;
        }
        let digest = match digest_of_name(&name) {
            Some(d) if is_file => d,
            _ => {
                let reason = "not a Go blob file (a regular file named by its sha256 hex)";
                plan.unknown.push(blob_entry(path, &name, is_file, reason));
                continue;
            }
        };
        if known(&digest) {
            let size = path.symlink_metadata()?.len();
            plan.blobs.push(GoBlob { path, digest, size, known: true });
        } else {
            to_hash.push((path, name, digest));
        }
    }
    for ((path, name, digest), hashed) in to_hash.iter().zip(hash_all(&to_hash)?) {
        match hashed {
            (actual, size) if actual == *digest => {
                plan.blobs.push(GoBlob { path: path.clone(), digest: digest.clone(), size, known: false })
            }
            _ => {
                plan.refused.push(blob_entry(path.clone(), name, true, "its content does not match its name (sha256)"))
            }
        }
    }
    Ok(plan)
}

fn blob_entry(path: PathBuf, name: &OsStr, file: bool, reason: &str) -> Entry {
    Entry { shown: format!("{BLOBS}/{}", shown(name)), path, dir: BLOBS, reason: reason.to_string(), file }
}

/// A file's sha256 and size, or why it could not be read.
type Hashed = io::Result<(Digest, u64)>;

/// Hashes the files, as many at a time as this process has CPUs (a large
/// Go cache is read before the server listens); the results in order.
fn hash_all(files: &[(PathBuf, OsString, Digest)]) -> io::Result<Vec<(Digest, u64)>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(files.len());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Hashed>>> = Mutex::new(std::iter::repeat_with(|| None).take(files.len()).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut buffer = vec![0u8; 1 << 20];
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some((path, _, _)) = files.get(index) else { break };
                    let hashed = hash(path, &mut buffer);
                    results.lock()[index] = Some(hashed);
                }
            });
        }
    });
    results.into_inner().into_iter().map(|r| r.unwrap_or_else(|| Err(io::Error::other("not hashed")))).collect()
}

/// The names in `dir` (none when it does not exist), sorted, with whether
/// each is a regular file (a symbolic link is not).
fn entries(dir: &Path) -> io::Result<Vec<(PathBuf, OsString, bool)>> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = entry?;
        out.push((entry.path(), entry.file_name(), entry.file_type()?.is_file()));
    }
    out.sort();
    Ok(out)
}

fn open_no_follow(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)
}

/// A manifest file's content, refused past [`MAX_FILE_BYTES`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let file = open_no_follow(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mut text = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut text).map_err(|e| format!("cannot read it: {e}"))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    Ok(text)
}

/// The sha256 of a file and its size.
pub fn hash(path: &Path, buffer: &mut [u8]) -> io::Result<(Digest, u64)> {
    let mut file = open_no_follow(path)?;
    let mut hasher = Hasher::new(Algorithm::Sha256);
    let mut size = 0u64;
    loop {
        let n = file.read(buffer)?;
        if n == 0 {
            return Ok((hasher.finish(), size));
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
}

/// A reason fit for a log line: control characters shown as `?`, at most 300 characters.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_the_go_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(!present(root).unwrap());
        std::fs::create_dir_all(root.join("blobs/sha256/ab")).unwrap();
        assert!(!present(root).unwrap(), "our own layout is not a Go one");
        let good = b"layer".to_vec();
        let good_hex = Digest::of(Algorithm::Sha256, &good).hex().to_string();
        let bad_hex = Digest::of(Algorithm::Sha256, b"something else").hex().to_string();
        std::fs::write(root.join("blobs").join(&good_hex), &good).unwrap();
        assert!(present(root).unwrap());
        std::fs::write(root.join("blobs").join(&bad_hex), b"corrupt").unwrap();
        std::fs::write(root.join("blobs/README\x1b"), b"?").unwrap();
        std::os::unix::fs::symlink(root.join("blobs").join(&good_hex), root.join("blobs").join("a".repeat(64)))
            .unwrap();
        std::fs::create_dir_all(root.join("img/sub")).unwrap();
        std::fs::write(root.join("img").join(&bad_hex), b"{}").unwrap();
        let plan = scan(root, |_| false).unwrap();
        assert_eq!(plan.blobs.len(), 1);
        assert_eq!((plan.blobs[0].digest.hex(), plan.blobs[0].size, plan.blobs[0].known), (&*good_hex, 5, false));
        let refused: Vec<&str> = plan.refused.iter().map(|e| e.shown.as_str()).collect();
        assert_eq!(refused, [format!("img/{bad_hex}"), format!("blobs/{bad_hex}")]);
        let unknown: Vec<&str> = plan.unknown.iter().map(|e| e.shown.as_str()).collect();
        assert_eq!(unknown, ["img/sub".to_string(), "blobs/README?".into(), format!("blobs/{}", "a".repeat(64))]);
        let plan = scan(root, |d| d.hex() == good_hex).unwrap();
        assert!(plan.blobs[0].known);
    }
}
