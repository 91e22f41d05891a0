//! How a local command finds the server running on an image path: once it
//! listens, the server writes `<image-path>/.admin` (atomically: a temp file
//! renamed in) with a URL that reaches its admin API from this host and its
//! pid, and removes it when it stops. A file left by a server that died is
//! stale: it counts only while the image path's lock is held by that pid
//! (`/proc/locks` names the holder of every `flock`; nothing is locked to
//! find out, so a check never gets in the way of a server starting).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::Layout;

/// What `.admin` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminFile {
    /// `http://127.0.0.1:8080`, `http://[::1]:8080`, or the listening address itself.
    pub url: String,
    pub pid: u32,
}

/// The URL a command on this host reaches a server listening on `listen`
/// at: loopback for a wildcard or loopback address, else that address.
pub fn local_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() || ip.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() || ip.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

/// The published `.admin` file; removed on drop (unless another process's by then).
pub struct Published {
    path: PathBuf,
}

impl Published {
    /// Removes the file now (shutdown has begun: no more admin requests are taken).
    pub fn remove(self) {}
}

impl Drop for Published {
    fn drop(&mut self) {
        let ours = read_file(&self.path).is_some_and(|f| f.pid == std::process::id());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes `.admin` for a server listening on `listen`.
pub fn publish(layout: &Layout, listen: SocketAddr) -> io::Result<Published> {
    let file = AdminFile { url: local_url(listen), pid: std::process::id() };
    let path = layout.admin_file();
    let tmp = layout.tmp_dir().join(format!(".admin.{}", std::process::id()));
    let bytes = serde_json::to_vec(&file).map_err(io::Error::other)?;
    crate::store::write_atomically(&path, &tmp, &bytes)?;
    Ok(Published { path })
}

fn read_file(path: &Path) -> Option<AdminFile> {
    let text = std::fs::read(path).ok()?;
    if text.len() > 4096 {
        return None;
    }
    serde_json::from_slice(&text).ok()
}

/// The running server's `.admin`, or `None` when there is none or it is
/// stale (no process, or another one, holds the image path's lock).
pub fn find(image_path: &Path) -> Option<AdminFile> {
    let layout = Layout::new(image_path);
    let file = read_file(&layout.admin_file())?;
    lock_held_by(&layout.lock_file(), file.pid).then_some(file)
}

/// A `.admin` file that [`find`] ignores: left by a server that stopped
/// uncleanly (its pid no longer holds the image path's lock).
pub fn stale(image_path: &Path) -> Option<AdminFile> {
    let layout = Layout::new(image_path);
    let file = read_file(&layout.admin_file())?;
    (!lock_held_by(&layout.lock_file(), file.pid)).then_some(file)
}

/// Whether `pid` holds the `flock` on `lock`.
fn lock_held_by(lock: &Path, pid: u32) -> bool {
    let Ok(meta) = std::fs::metadata(lock) else { return false };
    match std::fs::read_to_string("/proc/locks") {
        Ok(locks) => locks.lines().any(|line| holds(line, pid, meta.dev(), meta.ino())),
        // No /proc: the pid the lock file names, alive.
        Err(_) => {
            let named = std::fs::read_to_string(lock).ok().and_then(|s| s.trim().parse::<u32>().ok());
            // SAFETY: signal 0 only checks that the process exists.
            named == Some(pid) && unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
        }
    }
}

/// Whether a `/proc/locks` line is an exclusive `flock` by `pid` on the file `dev`/`ino`:
/// `1: FLOCK  ADVISORY  WRITE 18673 fe:00:5636873 0 EOF` (device as hex major:minor).
fn holds(line: &str, pid: u32, dev: u64, ino: u64) -> bool {
    // `->` marks a process waiting for the lock, not holding it.
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [_, "FLOCK", _, "WRITE", holder, file, ..] = fields.as_slice() else { return false };
    let mut parts = file.split(':');
    let (Some(major), Some(minor), Some(inode), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    holder.parse::<u32>().ok() == Some(pid)
        && inode.parse::<u64>().ok() == Some(ino)
        && hex(major) == Some(libc::major(dev) as u64)
        && hex(minor) == Some(libc::minor(dev) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryLimits, Store};

    #[test]
    fn urls_reach_the_listener_from_this_host() {
        assert_eq!(local_url("0.0.0.0:8080".parse().unwrap()), "http://127.0.0.1:8080");
        assert_eq!(local_url("127.0.0.5:80".parse().unwrap()), "http://127.0.0.1:80");
        assert_eq!(local_url("[::]:5000".parse().unwrap()), "http://[::1]:5000");
        assert_eq!(local_url("192.0.2.2:8080".parse().unwrap()), "http://192.0.2.2:8080");
    }

    #[test]
    fn a_file_counts_only_while_its_pid_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), MemoryLimits::default()).unwrap();
        let published = publish(store.layout(), "0.0.0.0:8080".parse().unwrap()).unwrap();
        let found = find(dir.path()).expect("found while the lock is held");
        assert_eq!(found, AdminFile { url: "http://127.0.0.1:8080".into(), pid: std::process::id() });
        // Another pid's claim is stale even though the lock is held.
        let other = serde_json::to_vec(&AdminFile { url: found.url.clone(), pid: 1 }).unwrap();
        std::fs::write(store.layout().admin_file(), other).unwrap();
        assert_eq!(find(dir.path()), None);
        drop(published);
        assert!(store.layout().admin_file().exists(), "another process's file is left alone");
        let ours = serde_json::to_vec(&found).unwrap();
        std::fs::write(store.layout().admin_file(), ours).unwrap();
        drop(store);
        assert_eq!(find(dir.path()), None, "no lock held: stale");
    }

    #[test]
    fn proc_locks_lines() {
        let dev = libc::makedev(0xfe, 0x01);
        assert!(holds("1: FLOCK  ADVISORY  WRITE 42 fe:01:777 0 EOF", 42, dev, 777));
        assert!(!holds("1: FLOCK  ADVISORY  WRITE 42 fe:01:777 0 EOF", 43, dev, 777));
        assert!(!holds("1: FLOCK  ADVISORY  WRITE 42 fe:01:778 0 EOF", 42, dev, 777));
        assert!(!holds("1: FLOCK  ADVISORY  READ 42 fe:01:777 0 EOF", 42, dev, 777));
        assert!(!holds("1: POSIX  ADVISORY  WRITE 42 fe:01:777 0 EOF", 42, dev, 777));
        assert!(!holds("1: FLOCK  ADVISORY  WRITE 42 fe:02:777 0 EOF", 42, dev, 777));
        assert!(!holds("1: -> FLOCK  ADVISORY  WRITE 42 fe:01:777 0 EOF", 42, dev, 777), "a waiter holds nothing");
        assert!(!holds("garbage", 42, dev, 777));
    }
}
