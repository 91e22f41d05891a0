//! Checking one recorded object against its file: present, of the recorded
//! size, hashing to its digest, and, for a manifest, parseable. A file is
//! streamed through the hasher [`BUFFER`] bytes at a time, never read whole;
//! only a manifest's bytes (at most 4 MiB, the fetch limit) are kept, to parse.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::oci::{media, Digest, Hasher};
use crate::store::{Kind, Record};

/// Bytes read from a file at a time.
pub const BUFFER: usize = 1024 * 1024;

/// One thing wrong in the image path, reported as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No file where the record says.
    Missing(Digest),
    /// The file's size is not the recorded one (truncated, or grown).
    Damaged { digest: Digest, size: u64, expected: u64 },
    /// The file hashes to another digest.
    Corrupt { digest: Digest, actual: Digest },
    /// The file could not be read (an I/O error: a failing disk, permissions).
    Unreadable { digest: Digest, error: String },
    /// A manifest whose bytes match its digest but do not parse.
    Unparseable { digest: Digest, error: String },
    /// A file under `blobs/` that no record names (`path` relative to the image path).
    Orphan { path: PathBuf, size: u64 },
}

/// The count of the summary a problem falls under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Damaged,
    Missing,
    Orphan,
}

impl Problem {
    pub fn class(&self) -> Class {
        match self {
            Problem::Missing(_) => Class::Missing,
            Problem::Orphan { .. } => Class::Orphan,
            Problem::Damaged { .. }
            | Problem::Corrupt { .. }
            | Problem::Unreadable { .. }
            | Problem::Unparseable { .. } => Class::Damaged,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing(digest) => write!(f, "missing {digest}"),
            Problem::Damaged { digest, size, expected } => {
                write!(f, "damaged {digest} (size {size}, expected {expected})")
            }
            Problem::Corrupt { digest, actual } => write!(f, "corrupt {digest} (hashes to {actual})"),
            Problem::Unreadable { digest, error } => write!(f, "unreadable {digest} ({error})"),
            Problem::Unparseable { digest, error } => write!(f, "unparseable {digest} ({error})"),
            Problem::Orphan { path, size } => write!(f, "orphan {} ({size} bytes)", path.display()),
        }
    }
}

/// What checking one object found.
#[derive(Debug)]
pub struct Checked {
    /// Bytes read and hashed.
    pub hashed: u64,
    pub problem: Option<Problem>,
}

/// Checks the file at `path` against `digest` and its `record`, telling
/// `on_read` the size of every chunk hashed. `buffer` is reused across calls.
pub fn check(path: &Path, digest: &Digest, record: &Record, buffer: &mut [u8], on_read: impl Fn(u64)) -> Checked {
    let mut hashed = 0;
    let problem = check_file(path, digest, record, buffer, &mut |n| {
        hashed += n;
        on_read(n);
    })
    .err();
    Checked { hashed, problem }
}

fn check_file(
    path: &Path,
    digest: &Digest,
    record: &Record,
    buffer: &mut [u8],
    on_read: &mut dyn FnMut(u64),
) -> Result<(), Problem> {
    let unreadable = |e: io::Error| Problem::Unreadable { digest: digest.clone(), error: e.to_string() };
    let mut file = match File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Problem::Missing(digest.clone())),
        opened => opened.map_err(unreadable)?,
    };
    let size = file.metadata().map_err(unreadable)?.len();
    if size != record.size {
        return Err(Problem::Damaged { digest: digest.clone(), size, expected: record.size });
    }
    let mut hasher = Hasher::new(digest.algorithm());
    let mut manifest = (record.kind == Kind::Manifest).then(Vec::new);
    loop {
        let n = match file.read(buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(unreadable(e)),
        };
        hasher.update(&buffer[..n]);
        if let Some(body) = &mut manifest {
            body.extend_from_slice(&buffer[..n]);
        }
        on_read(n as u64);
    }
    let actual = hasher.finish();
    if actual != *digest {
        return Err(Problem::Corrupt { digest: digest.clone(), actual });
    }
    if let Some(body) = manifest {
        media::inspect(&body).map_err(|error| Problem::Unparseable { digest: digest.clone(), error })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;

    fn checked(bytes: &[u8], digest: &Digest, kind: Kind, size: u64) -> (u64, Option<Problem>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, bytes).unwrap();
        let record = Record { kind, media_type: None, size, sources: vec![], created: None };
        let mut buffer = vec![0; 4];
        let c = check(&path, digest, &record, &mut buffer, |_| {});
        (c.hashed, c.problem)
    }

    #[test]
    fn each_kind_of_damage_is_named() {
        let body = b"hello world";
        let d = Digest::of(Algorithm::Sha256, body);
        assert_eq!(checked(body, &d, Kind::Blob, 11), (11, None), "read in 4-byte chunks");
        assert_eq!(
            checked(b"hello", &d, Kind::Blob, 11).1,
            Some(Problem::Damaged { digest: d.clone(), size: 5, expected: 11 })
        );
        let flipped = b"hellp world";
        let actual = Digest::of(Algorithm::Sha256, flipped);
        assert_eq!(checked(flipped, &d, Kind::Blob, 11).1, Some(Problem::Corrupt { digest: d.clone(), actual }));
        let p = checked(body, &d, Kind::Manifest, 11).1.unwrap();
        assert!(p.to_string().starts_with(&format!("unparseable {d} (manifest is not valid JSON")), "{p}");
        let m = br#"{"schemaVersion":2,"layers":[]}"#;
        assert_eq!(checked(m, &Digest::of(Algorithm::Sha256, m), Kind::Manifest, m.len() as u64).1, None);
        let record = Record { kind: Kind::Blob, media_type: None, size: 1, sources: vec![], created: None };
        let missing = check(Path::new("/nonexistent/f"), &d, &record, &mut [0; 4], |_| {});
        assert_eq!(missing.problem.map(|p| p.to_string()), Some(format!("missing {d}")));
    }
}
