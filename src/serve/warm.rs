//! Keeping cold file reads off the serving threads. A committed blob goes out
//! with `sendfile(2)` or from a mapping; either blocks the whole serving
//! thread (and every connection on it) while pages come from disk: a cold page
//! cache after a restart, a blob evicted under memory pressure, an SD card on
//! an edge node. So before each [`CHUNK`] of a file body the serving thread
//! asks the kernel whether that chunk is in the page cache (`cachestat(2)`,
//! or `mincore(2)` on kernels before 6.5, a few µs either way); when it is
//! not, a blocking thread of the fetch runtime reads it in
//! (`MADV_POPULATE_READ` on a mapping of the chunk: no copy) and the serving
//! thread serves its other connections meanwhile. The next chunk's read-ahead
//! is started as the current one goes out.
//!
//! Those checks walk the page cache page by page, which costs a hot 128 MiB
//! blob a few ms per response. So a file this thread found wholly cached and
//! sent whole is trusted to stay cached for [`TRUST`] and goes out unchecked
//! meanwhile: a hot blob is checked a few times a minute, not per response.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::metrics::{Block, Counter};
use crate::store::pagecache::{populate, resident};

/// The unit checked and read in at once.
pub const CHUNK: u64 = 8 * 1024 * 1024;

/// How long a file found wholly cached is sent without checking again.
pub const TRUST: Duration = Duration::from_secs(10);
/// Files remembered per thread; past this the memory starts over.
const MAX_TRUSTED: usize = 4096;

/// The files one serving thread recently found wholly in the page cache.
#[derive(Default)]
pub struct RecentlyCached {
    files: RefCell<HashMap<PathBuf, Instant>>,
}

impl RecentlyCached {
    pub fn trusted(&self, path: &Path, now: Instant) -> bool {
        self.files.borrow().get(path).is_some_and(|t| now.duration_since(*t) < TRUST)
    }

    pub fn remember(&self, path: &Path, now: Instant) {
        let mut files = self.files.borrow_mut();
        if files.len() >= MAX_TRUSTED {
            files.clear();
        }
        files.insert(path.to_path_buf(), now);
    }

    /// Forgets what is past [`TRUST`].
    pub fn sweep(&self, now: Instant) {
        self.files.borrow_mut().retain(|_, t| now.duration_since(*t) < TRUST);
    }
}

/// Where a serving thread sends its cold reads.
pub struct Warmer<'a> {
    pub runtime: &'a tokio::runtime::Handle,
    pub counters: &'a Block,
    pub recent: &'a RecentlyCached,
}

impl Warmer<'_> {
    /// Returns once `[offset, offset + len)` of `file` is in the page cache:
    /// at once when it already is, else after a blocking thread read it in.
    /// `path` is the file's, for the test-only `cold-read` fault hook.
    pub async fn ensure(&self, file: &File, path: &Path, offset: u64, len: u64) -> io::Result<()> {
        let slowed = crate::faults::armed_for("cold-read", &path.to_string_lossy());
        if !slowed && resident(file.as_raw_fd(), offset, len) {
            return Ok(());
        }
        self.counters.inc(Counter::ColdReads);
        let file = file.try_clone()?;
        self.runtime
            .spawn_blocking(move || {
                if slowed {
                    std::thread::sleep(crate::faults::SLOW_READ);
                }
                populate(&file, offset, len)
            })
            .await
            .map_err(|e| io::Error::other(format!("cold read: {e}")))?
    }

    /// Opens a committed file. Opening can wait on the disk (directory and
    /// inode reads of a cold file), so it happens on a blocking thread unless
    /// this thread served the whole file moments ago (`trusted`: its inode is
    /// surely cached).
    pub async fn open(&self, path: &Path, trusted: bool) -> io::Result<File> {
        if trusted {
            return File::open(path);
        }
        let path = path.to_path_buf();
        self.runtime
            .spawn_blocking(move || File::open(path))
            .await
            .map_err(|e| io::Error::other(format!("open: {e}")))?
    }

    /// Runs `f` (blocking file work) on a blocking thread.
    pub async fn off_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        self.runtime.spawn_blocking(f).await.map_err(|e| io::Error::other(format!("blocking file work: {e}")))?
    }

    /// Starts reading `[offset, offset + len)` ahead, asynchronously in the kernel.
    pub fn hint(fd: RawFd, offset: u64, len: u64) {
        // SAFETY: advisory call on a valid fd.
        unsafe { libc::posix_fadvise(fd, offset as libc::off_t, len as libc::off_t, libc::POSIX_FADV_WILLNEED) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_found_cached_are_trusted_for_a_while() {
        let recent = RecentlyCached::default();
        let (p, now) = (Path::new("/x"), Instant::now());
        assert!(!recent.trusted(p, now));
        recent.remember(p, now);
        assert!(recent.trusted(p, now + TRUST / 2));
        assert!(!recent.trusted(p, now + TRUST));
        recent.sweep(now + TRUST);
        assert!(recent.files.borrow().is_empty());
    }
}
