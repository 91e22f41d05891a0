//! The guest's whole filesystem, as an initramfs: busybox with its applets linked, the kernel
//! modules from [`super::modules`], the given binaries at their host paths with the shared
//! libraries `ldd` names, extra host files at their paths, a few `/etc` files (and the host's CA
//! bundle), and `/init`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cpio::Cpio;
use super::kernel::GuestKernel;
use super::{find_on_path, modules, run_bounded};

/// What goes at one path of the guest.
enum Entry {
    Dir,
    /// A host file's contents (symlinks followed), with this mode.
    Host(PathBuf, u32),
    Bytes(Vec<u8>, u32),
    Symlink(String),
    /// `/dev/console`, which the kernel opens for init before anything mounts.
    Console,
}

/// The guest's files by absolute path; parents are added with their children.
#[derive(Default)]
pub struct Initramfs {
    entries: BTreeMap<PathBuf, Entry>,
}

const ETC: [(&str, &str); 4] = [
    ("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
    ("/etc/group", "root:x:0:\n"),
    ("/etc/hosts", "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"),
    ("/etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\n"),
];

/// Debian's bundle of trusted roots (package ca-certificates), copied in when the host has it.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl Initramfs {
    /// The base system: busybox, the kernel's TLS and crypto modules, `/etc` and `/init`.
    pub fn new(kernel: &GuestKernel, init_script: &str) -> Result<Initramfs, String> {
        let mut fs = Initramfs::default();
        for dir in ["/proc", "/sys", "/dev", "/tmp", "/root", "/run"] {
            fs.add(dir, Entry::Dir);
        }
        fs.add("/dev/console", Entry::Console);
        for (path, text) in ETC {
            fs.add(path, Entry::Bytes(text.as_bytes().to_vec(), 0o644));
        }
        // ociregistry loads the system's roots at startup (for HTTPS upstreams) and stops
        // when there are none.
        if Path::new(CA_BUNDLE).is_file() {
            fs.add(CA_BUNDLE, Entry::Host(CA_BUNDLE.into(), 0o644));
        }
        fs.add("/init", Entry::Bytes(init_script.as_bytes().to_vec(), 0o755));
        fs.add_busybox()?;
        fs.add_modules(kernel)?;
        Ok(fs)
    }

    /// An executable at its own absolute path, with the shared libraries it loads.
    pub fn add_binary(&mut self, binary: &Path) -> Result<(), String> {
        if !binary.is_absolute() {
            return Err(format!("{} is not an absolute path", binary.display()));
        }
        self.add(binary, Entry::Host(binary.to_path_buf(), 0o755));
        for library in shared_libraries(binary)? {
            self.add(&library, Entry::Host(library.clone(), 0o755));
        }
        Ok(())
    }

    /// An executable at `guest` (an absolute path, e.g. where a unit's `ExecStart=` looks), read
    /// from `host`, with the shared libraries it loads at their host paths.
    pub fn add_binary_at(&mut self, guest: &Path, host: &Path) -> Result<(), String> {
        if !guest.is_absolute() || !host.is_absolute() {
            return Err(format!("{} and {} must be absolute paths", guest.display(), host.display()));
        }
        self.add(guest, Entry::Host(host.to_path_buf(), 0o755));
        for library in shared_libraries(host)? {
            self.add(&library, Entry::Host(library.clone(), 0o755));
        }
        Ok(())
    }

    /// A host file at another guest path, with this mode.
    pub fn add_host_file_at(&mut self, guest: &Path, host: &Path, mode: u32) -> Result<(), String> {
        if !guest.is_absolute() || !host.is_file() {
            return Err(format!("{} is not an absolute path or {} is not a file", guest.display(), host.display()));
        }
        self.add(guest, Entry::Host(host.to_path_buf(), mode));
        Ok(())
    }

    /// A file made of `data` at the absolute path `guest` (replacing what was there).
    pub fn add_bytes(&mut self, guest: &Path, data: &[u8], mode: u32) -> Result<(), String> {
        if !guest.is_absolute() {
            return Err(format!("{} is not an absolute path", guest.display()));
        }
        self.add(guest, Entry::Bytes(data.to_vec(), mode));
        Ok(())
    }

    /// A symbolic link at the absolute path `guest` pointing at `target`.
    pub fn add_symlink(&mut self, guest: &Path, target: &str) -> Result<(), String> {
        if !guest.is_absolute() {
            return Err(format!("{} is not an absolute path", guest.display()));
        }
        self.add(guest, Entry::Symlink(target.to_string()));
        Ok(())
    }

    /// A host file, or a directory with everything in it, at the same path.
    pub fn add_host_path(&mut self, path: &Path) -> Result<(), String> {
        if !path.is_absolute() {
            return Err(format!("{} is not an absolute path", path.display()));
        }
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_dir() {
            use std::os::unix::fs::PermissionsExt;
            self.add(path, Entry::Host(path.to_path_buf(), meta.permissions().mode() & 0o7777));
            return Ok(());
        }
        self.add(path, Entry::Dir);
        for entry in std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))? {
            self.add_host_path(&entry.map_err(|e| e.to_string())?.path())?;
        }
        Ok(())
    }

    /// Writes the archive (parents before children: the map is ordered by path).
    pub fn write(&self, out: &Path) -> Result<(), String> {
        let write = || -> std::io::Result<()> {
            let mut cpio = Cpio::create(out)?;
            for (path, entry) in &self.entries {
                let name =
                    path.to_str().ok_or_else(|| std::io::Error::other(format!("{} is not UTF-8", path.display())))?;
                match entry {
                    Entry::Dir => cpio.dir(name)?,
                    Entry::Host(source, mode) => cpio.file(name, *mode, source)?,
                    Entry::Bytes(data, mode) => cpio.bytes(name, *mode, data)?,
                    Entry::Symlink(target) => cpio.symlink(name, target)?,
                    Entry::Console => cpio.char_device(name, 5, 1)?,
                }
            }
            cpio.finish()
        };
        write().map_err(|e| format!("write the initramfs {}: {e}", out.display()))
    }

    /// The total size of the files in it, for sizing the guest's memory.
    pub fn payload_bytes(&self) -> u64 {
        let size = |entry: &Entry| match entry {
            Entry::Host(path, _) => std::fs::metadata(path).map_or(0, |m| m.len()),
            Entry::Bytes(data, _) => data.len() as u64,
            _ => 0,
        };
        self.entries.values().map(size).sum()
    }

    fn add_busybox(&mut self) -> Result<(), String> {
        let busybox = find_on_path("busybox").ok_or("busybox is not installed (Debian package busybox-static)")?;
        self.add("/bin/busybox", Entry::Host(busybox.clone(), 0o755));
        for library in shared_libraries(&busybox)? {
            self.add(&library, Entry::Host(library.clone(), 0o755));
        }
        let applets = run_bounded(std::process::Command::new(&busybox).arg("--list-full"), Duration::from_secs(10))?;
        for applet in String::from_utf8_lossy(&applets).lines().filter(|l| !l.is_empty() && !l.contains("..")) {
            let path = Path::new("/").join(applet);
            if !self.entries.contains_key(&path) {
                self.add(&path, Entry::Symlink("/bin/busybox".into()));
            }
        }
        if !self.entries.contains_key(Path::new("/sbin/modprobe")) {
            return Err(format!("{} has no modprobe applet", busybox.display()));
        }
        Ok(())
    }

    fn add_modules(&mut self, kernel: &GuestKernel) -> Result<(), String> {
        let chosen = modules::select(&kernel.modules_dir)?;
        let guest_dir = Path::new("/lib/modules").join(&kernel.version);
        self.add(guest_dir.join("modules.dep"), Entry::Bytes(modules::modules_dep(&chosen).into_bytes(), 0o644));
        self.add(guest_dir.join("modules.alias"), Entry::Bytes(modules::modules_alias(&chosen).into_bytes(), 0o644));
        for module in chosen.into_values() {
            self.add(guest_dir.join(&module.relative), Entry::Bytes(module.elf, 0o644));
        }
        Ok(())
    }

    fn add(&mut self, path: impl AsRef<Path>, entry: Entry) {
        let path = path.as_ref();
        for parent in path.ancestors().skip(1).filter(|p| *p != Path::new("/")) {
            self.entries.entry(parent.to_path_buf()).or_insert(Entry::Dir);
        }
        self.entries.insert(path.to_path_buf(), entry);
    }
}

/// The libraries (and loader) `ldd` resolves for `binary`, at the paths it names; none for a
/// static binary.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let out = std::process::Command::new("timeout")
        .args(["30", "ldd"])
        .arg(binary)
        .output()
        .map_err(|e| format!("run ldd (Debian package libc-bin): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(format!("ldd {}: {}", binary.display(), String::from_utf8_lossy(&out.stderr)));
    }
    let mut libraries = Vec::new();
    for line in text.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`
        let path = line.split("=>").last().unwrap_or("").split_whitespace().next().unwrap_or("");
        if line.contains("not found") {
            return Err(format!("ldd {}: {line}", binary.display()));
        }
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}
