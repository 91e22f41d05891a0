//! What the page cache holds of a file, and reading a range into it without
//! copying: the serving threads check before they send (`serve::warm`), and
//! the store before it reads a small blob into memory on a serving thread.

use std::fs::File;
use std::io;
use std::os::unix::io::RawFd;

/// `cachestat(2)` (Linux 6.5): the same number on every architecture.
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as u64
}

/// Whether all of `[offset, offset + len)` of the file is in the page cache.
/// When the kernel cannot tell, the answer is yes (and the send may block, as
/// it would have anyway).
pub fn resident(fd: RawFd, offset: u64, len: u64) -> bool {
    if len == 0 {
        return true;
    }
    let page = page_size();
    let first = offset / page;
    let pages = (offset + len).div_ceil(page) - first;
    let range = CachestatRange { off: first * page, len: pages * page };
    let mut stat = Cachestat::default();
    // SAFETY: valid pointers to properly sized structs for the call's duration; flags 0.
    let r =
        unsafe { libc::syscall(SYS_CACHESTAT, fd, &range as *const CachestatRange, &mut stat as *mut Cachestat, 0u32) };
    if r == 0 {
        return stat.nr_cache >= pages;
    }
    resident_by_mincore(fd, first * page, pages, page).unwrap_or(true)
}

/// The same through a throwaway mapping of the range (kernels without cachestat).
fn resident_by_mincore(fd: RawFd, offset: u64, pages: u64, page: u64) -> Option<bool> {
    let len = (pages * page) as usize;
    // SAFETY: a fresh read-only shared mapping, unmapped below; mincore only reads it.
    unsafe {
        let addr = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, fd, offset as libc::off_t);
        if addr == libc::MAP_FAILED {
            return None;
        }
        let mut vec = vec![0u8; pages as usize];
        let ok = libc::mincore(addr, len, vec.as_mut_ptr()) == 0;
        libc::munmap(addr, len);
        ok.then(|| vec.iter().all(|b| b & 1 == 1))
    }
}

/// Reads `[offset, offset + len)` of `file` into the page cache (blocking).
pub fn populate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let page = page_size();
    let start = offset / page * page;
    let map_len = (offset + len - start) as usize;
    // SAFETY: a read-only mapping of an immutable committed file, dropped at return.
    let map = unsafe { memmap2::MmapOptions::new().offset(start).len(map_len).map(file)? };
    if map.advise(memmap2::Advice::PopulateRead).is_ok() {
        return Ok(());
    }
    // Kernels before 5.14: touch one byte per page.
    let mut sum = 0u8;
    for i in (0..map.len()).step_by(page as usize) {
        sum ^= map[i];
    }
    std::hint::black_box(sum);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::io::AsRawFd;

    #[test]
    fn residency_follows_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![7u8; 32 << 20]).unwrap();
        f.sync_all().unwrap();
        let f = File::open(&path).unwrap();
        let fd = f.as_raw_fd();
        // SAFETY: advisory calls on a valid fd.
        unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
        if resident(fd, 0, 32 << 20) {
            return; // this file system keeps its pages (tmpfs): nothing to observe
        }
        populate(&f, 4096, 100_000).unwrap();
        assert!(resident(fd, 4096, 100_000));
        assert!(resident(fd, 5000, 10));
        assert!(!resident(fd, 31 << 20, 1 << 20), "the far end was not read");
        assert_eq!(resident_by_mincore(fd, 4096, 24, 4096), Some(true));
        assert!(resident(fd, 0, 0));
    }
}
