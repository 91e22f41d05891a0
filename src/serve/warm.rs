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

use std::fs::File;
use std::io;
use std::os::unix::io::{AsRawFd, RawFd};

use crate::metrics::{Block, Counter};
use crate::store::pagecache::{populate, resident};

/// The unit checked and read in at once.
pub const CHUNK: u64 = 8 * 1024 * 1024;

/// Where a serving thread sends its cold reads.
pub struct Warmer<'a> {
    pub runtime: &'a tokio::runtime::Handle,
    pub counters: &'a Block,
}

impl Warmer<'_> {
    /// Returns once `[offset, offset + len)` of `file` is in the page cache:
    /// at once when it already is, else after a blocking thread read it in.
    pub async fn ensure(&self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        if resident(file.as_raw_fd(), offset, len) {
            return Ok(());
        }
        self.counters.inc(Counter::ColdReads);
        let file = file.try_clone()?;
        self.runtime
            .spawn_blocking(move || populate(&file, offset, len))
            .await
            .map_err(|e| io::Error::other(format!("cold read: {e}")))?
    }

    /// Starts reading `[offset, offset + len)` ahead, asynchronously in the kernel.
    pub fn hint(fd: RawFd, offset: u64, len: u64) {
        // SAFETY: advisory call on a valid fd.
        unsafe { libc::posix_fadvise(fd, offset as libc::off_t, len as libc::off_t, libc::POSIX_FADV_WILLNEED) };
    }
}
