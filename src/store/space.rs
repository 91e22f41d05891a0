//! Free space on the image path's file system. Downloads are refused early
//! when it would fall below the configured floor (`minFreeBytes`), so a full
//! disk costs a clear error for the new blob, never the cache's ability to
//! write manifests, records and tags for what it already serves.

use std::path::Path;

/// Bytes available to this process on the file system holding `path`, and its size.
pub fn free_and_total(path: &Path) -> Option<(u64, u64)> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs fills a caller-owned struct from a NUL-terminated path.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    Some((s.f_bavail as u64 * s.f_frsize as u64, s.f_blocks as u64 * s.f_frsize as u64))
}

/// Whether `needed` more bytes leave at least `floor` free (true when the
/// file system cannot be asked: a failed write is still handled).
pub fn fits(path: &Path, needed: u64, floor: u64) -> bool {
    free_and_total(path).is_none_or(|(free, _)| free >= floor.saturating_add(needed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let (free, total) = free_and_total(dir.path()).unwrap();
        assert!(free <= total && total > 0);
        assert!(fits(dir.path(), 0, 0));
        assert!(!fits(dir.path(), 1, free), "one byte over the floor");
        assert!(!fits(dir.path(), u64::MAX, 0));
    }
}
