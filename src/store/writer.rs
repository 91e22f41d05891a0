//! `BlobWriter`: a blob on its way into the store. Bytes are appended to a
//! unique temp file and hashed as they arrive; readers get their own handle to
//! the same file so they can stream it while it fills. [`BlobWriter::commit`]
//! checks digest and size, fsyncs and renames into `blobs/`, then journals the
//! record. Dropping a writer that was not committed deletes the temp file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

use super::{sync_parent, Kind, Record, Store};
use crate::oci::{Digest, Hasher};

pub struct BlobWriter {
    /// `None` once [`BlobWriter::park`]ed: synced and closed until its commit.
    file: Option<File>,
    temp: PathBuf,
    hasher: Option<Hasher>,
    written: u64,
    expected: Digest,
    done: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl BlobWriter {
    /// Creates the temp file. Returns the writer and a read handle for streamers.
    pub fn create(store: &Store, digest: &Digest) -> io::Result<(BlobWriter, File)> {
        let temp = store.temp_path(digest);
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&temp)?;
        let reader = file.try_clone()?;
        let writer = BlobWriter {
            file: Some(file),
            temp,
            hasher: Some(Hasher::new(digest.algorithm())),
            written: 0,
            expected: digest.clone(),
            done: false,
        };
        Ok((writer, reader))
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends and hashes `bytes`. They are in the page cache (visible to
    /// readers of the same file) when this returns.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.as_mut().ok_or_else(|| io::Error::other("write after park"))?.write_all(bytes)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(bytes);
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Finishes the hash and compares it with the expected digest. This, not
    /// the fsync, is what releases the last byte to readers.
    pub fn verify(&mut self) -> Result<(), CommitError> {
        let actual = self.hasher.take().map(Hasher::finish).ok_or_else(|| io::Error::other("verified twice"))?;
        if actual != self.expected {
            return Err(CommitError::DigestMismatch { expected: self.expected.clone(), actual });
        }
        Ok(())
    }

    /// Syncs a verified blob and closes its file, keeping the temp file for
    /// [`BlobWriter::commit`]: for a caller that verifies many blobs before it
    /// commits any (a tarball's), so they do not each hold a descriptor.
    pub fn park(&mut self) -> io::Result<()> {
        if self.hasher.is_some() {
            return Err(io::Error::other("park before verify"));
        }
        if let Some(file) = self.file.take() {
            file.sync_all()?;
        }
        Ok(())
    }

    /// Makes a verified blob durable and visible: fsync, rename into `blobs/`,
    /// journal the record for `source`.
    pub fn commit(mut self, store: &Store, source: &str) -> io::Result<()> {
        if self.hasher.is_some() {
            return Err(io::Error::other("commit before verify"));
        }
        self.park()?;
        let path = store.layout().blob(&self.expected);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _placing = store.placing(&self.expected);
        std::fs::rename(&self.temp, &path)?;
        self.done = true;
        sync_parent(&path)?;
        let record = Record {
            kind: Kind::Blob,
            media_type: None,
            size: self.written,
            sources: vec![],
            created: Some(super::tags::now_secs()),
        };
        store.add_record(&self.expected, record, source)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;
    use std::os::unix::fs::FileExt;

    #[test]
    fn commit_verified_and_abort_on_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), super::super::MemoryLimits::default()).unwrap();
        let d = Digest::of(Algorithm::Sha256, b"hello world");
        let (mut w, reader) = BlobWriter::create(&store, &d).unwrap();
        w.write(b"hello ").unwrap();
        w.write(b"world").unwrap();
        // Readers share the file description, so they read by offset (pread), never by position.
        let mut seen = [0u8; 11];
        reader.read_exact_at(&mut seen, 0).unwrap();
        assert_eq!(&seen, b"hello world");
        w.verify().unwrap();
        w.commit(&store, "quay.io/a").unwrap();
        assert_eq!(std::fs::read(store.layout().blob(&d)).unwrap(), b"hello world");
        assert_eq!(store.record(&d).unwrap().size, 11);

        // Parked: verified, synced and closed; committed later, or removed when dropped.
        let d3 = Digest::of(Algorithm::Sha256, b"parked");
        let (mut w, reader) = BlobWriter::create(&store, &d3).unwrap();
        drop(reader);
        w.write(b"parked").unwrap();
        assert!(w.park().is_err(), "not verified yet");
        w.verify().unwrap();
        w.park().unwrap();
        assert!(w.write(b"more").is_err());
        w.commit(&store, "quay.io/a").unwrap();
        assert_eq!(std::fs::read(store.layout().blob(&d3)).unwrap(), b"parked");
        let (mut w, _) = BlobWriter::create(&store, &d).unwrap();
        w.write(b"hello world").unwrap();
        w.verify().unwrap();
        w.park().unwrap();
        drop(w);

        let d2 = Digest::of(Algorithm::Sha256, b"other");
        let (mut w, _) = BlobWriter::create(&store, &d2).unwrap();
        w.write(b"tampered").unwrap();
        assert!(matches!(w.verify(), Err(CommitError::DigestMismatch { .. })));
        drop(w);
        assert_eq!(std::fs::read_dir(store.layout().tmp_dir()).unwrap().count(), 0);
        assert!(store.record(&d2).is_none());
    }
}
