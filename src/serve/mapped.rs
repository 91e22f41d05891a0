//! Large committed blobs for clients on the same host, sent from a memory
//! mapping of their file instead of with `sendfile(2)`.
//!
//! Over loopback (a node-local mirror: containerd and this server on one edge
//! node) the kernel copies every body byte into the receiving socket whatever
//! the sender does. With `sendfile` that copy happens in the client's `recv`,
//! which reads the page cache from memory; with `send(2)` from a mapping the
//! server makes the copy and the client then reads fresh, cache-warm socket
//! buffers, so the work is split across two cores and costs the host less in
//! all. On the 2-core bench machine a 128 MiB blob moved 1.1–1.4× the bytes
//! per second (oha to wrk) for 0.7–0.8× the host's CPU per byte
//! (perf/SERVE-MODES.md, perf/RESULTS.md), at about twice the server's own CPU
//! per byte, most of it the copy (RESULTS.md, section 6). For a peer
//! on another host `sendfile` stays: there no byte has to be copied at all.
//! `blobSend` in the config file chooses (`auto`, `sendfile`, `mmap`).
//!
//! Committed files are immutable (design.md), so each worker keeps a few
//! mappings and reuses them across requests; one unused for [`IDLE`] is
//! dropped by the worker's periodic sweep, so the space of a file removed from the cache is not held long.
//! A read error while the kernel copies from the mapping fails the `send` with
//! `EFAULT` (the copy runs in the kernel), never a signal.

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::AsyncWriteRent;
use monoio::net::TcpStream;

use super::http::write_stall_timeout;
use super::warm::Warmer;

/// Bodies from this size up are sent from a mapping (to same-host peers).
/// Smaller ones stay with `sendfile`: their pages are found in the CPU caches
/// by the receiver anyway, and sendfile measured faster at 1 MiB.
pub const MAPPED_MIN: u64 = 4 * 1024 * 1024;
/// Mappings kept per worker.
const MAX_ENTRIES: usize = 16;
/// A mapping unused this long is dropped.
const IDLE: Duration = Duration::from_secs(30);
/// How often a worker drops idle mappings when no request does it.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// A committed blob file and its mapping.
pub struct MappedFile {
    pub file: std::fs::File,
    pub map: memmap2::Mmap,
}

impl MappedFile {
    /// Opens and maps a committed file (blocking).
    fn open(path: &Path, size: u64) -> io::Result<MappedFile> {
        let file = std::fs::File::open(path)?;
        if file.metadata()?.len() != size {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "blob file does not have its recorded size"));
        }
        // SAFETY: committed blob files are never written, truncated or replaced
        // in place (they are only unlinked), so the mapping stays valid and its
        // bytes do not change while it exists.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(MappedFile { file, map })
    }
}

struct Entry {
    path: PathBuf,
    mapped: Rc<MappedFile>,
    used: Instant,
}

/// One worker's mappings of committed blob files.
#[derive(Default)]
pub struct MappedFiles {
    entries: RefCell<Vec<Entry>>,
}

impl MappedFiles {
    /// The mapping of the committed file at `path`, whose recorded size is
    /// `size`. A file not mapped yet is opened and mapped on a blocking thread
    /// (`warmer`): opening a cold file can wait on the disk.
    pub async fn get(&self, path: &Path, size: u64, warmer: &Warmer<'_>) -> io::Result<Rc<MappedFile>> {
        if let Some(e) = self.entries.borrow_mut().iter_mut().find(|e| e.path == path) {
            e.used = Instant::now();
            return Ok(e.mapped.clone());
        }
        let owned = path.to_path_buf();
        let mapped = Rc::new(warmer.off_thread(move || MappedFile::open(&owned, size)).await?);
        let now = Instant::now();
        let mut entries = self.entries.borrow_mut();
        if let Some(e) = entries.iter_mut().find(|e| e.path == path) {
            // Another request of this thread mapped it meanwhile.
            e.used = now;
            return Ok(e.mapped.clone());
        }
        if entries.len() >= MAX_ENTRIES {
            if let Some(oldest) = entries.iter().enumerate().min_by_key(|(_, e)| e.used).map(|(i, _)| i) {
                entries.swap_remove(oldest);
            }
        }
        entries.push(Entry { path: path.to_path_buf(), mapped: mapped.clone(), used: now });
        Ok(mapped)
    }

    /// Drops the mappings unused for [`IDLE`] (their pages stay in the page
    /// cache; only this process's hold on them, and on removed files, ends).
    pub fn sweep(&self, now: Instant) {
        self.entries.borrow_mut().retain(|e| now.duration_since(e.used) < IDLE);
    }
}

/// `[start, end)` of a mapping as a monoio send buffer.
struct Slice {
    map: Rc<MappedFile>,
    start: usize,
    end: usize,
}

// SAFETY: the mapping lives as long as the Rc and never moves or changes;
// `start..end` is inside it (checked by `send_range`).
unsafe impl monoio::buf::IoBuf for Slice {
    fn read_ptr(&self) -> *const u8 {
        // SAFETY: start <= len of the mapping.
        unsafe { self.map.map.as_ptr().add(self.start) }
    }
    fn bytes_init(&self) -> usize {
        self.end - self.start
    }
}

/// Sends `len` bytes of `map` from `offset`; a client that takes nothing for
/// [`WRITE_STALL_TIMEOUT`] is an error. Cold pages are the caller's to read
/// in first (see `warm`): a page fault here blocks the serving thread.
pub async fn send_range(stream: &mut TcpStream, map: Rc<MappedFile>, offset: u64, len: u64) -> io::Result<u64> {
    let end = offset
        .checked_add(len)
        .filter(|&e| e <= map.map.len() as u64)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "range outside the mapped file"))?
        as usize;
    let mut pos = offset as usize;
    while pos < end {
        let buf = Slice { map: map.clone(), start: pos, end };
        let (r, _) = monoio::time::timeout(write_stall_timeout(), stream.write(buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))?;
        match r? {
            0 => return Err(io::Error::new(io::ErrorKind::WriteZero, "connection closed")),
            n => pos += n,
        }
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_are_reused_checked_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let maps = MappedFiles::default();
        let mut paths = Vec::new();
        for i in 0..MAX_ENTRIES + 2 {
            let p = dir.path().join(format!("f{i}"));
            std::fs::write(&p, vec![i as u8; 100]).unwrap();
            paths.push(p);
        }
        let blocking = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
        let metrics = crate::metrics::Metrics::default();
        let (counters, recent) = (metrics.block(), super::super::warm::RecentlyCached::default());
        let warmer = Warmer { runtime: blocking.handle(), counters: &counters, recent: &recent };
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        rt.block_on(async {
            let a = maps.get(&paths[0], 100, &warmer).await.unwrap();
            let b = maps.get(&paths[0], 100, &warmer).await.unwrap();
            assert!(Rc::ptr_eq(&a, &b), "a second request reuses the mapping");
            assert_eq!(&a.map[..], &[0u8; 100][..]);
            assert!(maps.get(&paths[1], 99, &warmer).await.is_err(), "a size other than the recorded one is refused");
            for p in &paths {
                maps.get(p, 100, &warmer).await.unwrap();
            }
        });
        assert_eq!(maps.entries.borrow().len(), MAX_ENTRIES);
    }
}
