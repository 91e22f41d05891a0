//! Debian's kernel for the guest, fetched once into `~/.cache/ociregistry-ci/vm/<package>/`:
//! the exact `linux-image-<abi>-amd64` package that `linux-image-amd64` depends on, downloaded
//! with `apt-get download` (after an `apt-get update` when that fails) and unpacked with
//! `dpkg-deb -x`, keeping `vmlinuz` (and `vmlinux` unpacked from it) and `lib/modules/<version>`.
//! Debian builds `tls` as a module there, which the machines the tests run on lack.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::run_bounded;

/// A cached Debian kernel: its image and its modules directory.
pub struct GuestKernel {
    /// The uncompressed `vmlinux` qemu boots through PVH (under TCG, decompressing the bzImage
    /// takes longer than booting), or `vmlinuz` when it could not be unpacked.
    pub image: PathBuf,
    /// `.../lib/modules/<version>`
    pub modules_dir: PathBuf,
    /// The release, e.g. `6.1.0-57-amd64` (the guest's `/lib/modules/<version>`).
    pub version: String,
}

/// The meta-package whose dependency names the kernel to fetch.
const META_PACKAGE: &str = "linux-image-amd64";

/// The cached kernel, fetched first when the cache does not hold the current one.
pub fn debian_kernel() -> Result<GuestKernel, String> {
    let cache = cache_dir()?;
    let package = match kernel_package() {
        Ok(package) => package,
        Err(first) => {
            apt_update().map_err(|e| format!("{first}; and updating the package lists: {e}"))?;
            kernel_package()?
        }
    };
    let dir = cache.join(&package);
    if !dir.join(".complete").exists() {
        fetch(&cache, &package, &dir)?;
        remove_older_kernels(&cache, &package);
    }
    let version = std::fs::read_to_string(dir.join(".complete")).map_err(|e| format!("read {}: {e}", dir.display()))?;
    let image = match unpacked_image(&dir) {
        Ok(vmlinux) => vmlinux,
        Err(e) => {
            eprintln!("booting the compressed kernel (slower under TCG): {e}");
            dir.join("vmlinuz")
        }
    };
    Ok(GuestKernel { image, modules_dir: dir.join("modules").join(&version), version })
}

fn cache_dir() -> Result<PathBuf, String> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").ok_or("neither XDG_CACHE_HOME nor HOME is set")?).join(".cache"),
    };
    let dir = base.join("ociregistry-ci").join("vm");
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// `linux-image-<abi>-amd64`, from the local package lists (no network).
fn kernel_package() -> Result<String, String> {
    let out = run_bounded(
        std::process::Command::new("apt-cache").args(["depends", "--important", META_PACKAGE]),
        Duration::from_secs(60),
    )?;
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|name| {
            name.starts_with("linux-image-")
                && name.ends_with("-amd64")
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.+".contains(&b))
        })
        .map(str::to_string)
        .ok_or_else(|| format!("apt-cache names no linux-image-*-amd64 that {META_PACKAGE} depends on"))
}

fn apt_update() -> Result<(), String> {
    run_bounded(std::process::Command::new("apt-get").args(["update", "-qq"]), Duration::from_secs(300)).map(drop)
}

/// Downloads and unpacks `package` into a scratch directory, then renames it to `dir`, so a
/// run stopped halfway (or a second test fetching at the same time) leaves no half cache.
fn fetch(cache: &Path, package: &str, dir: &Path) -> Result<(), String> {
    let scratch = cache.join(format!("tmp-{}-{}", std::process::id(), crate::common::unique()));
    let result = unpack_into(&scratch, package);
    if result.is_ok() && std::fs::rename(&scratch, dir).is_ok() {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(&scratch);
    // Another process may have won the rename with the same contents.
    if dir.join(".complete").exists() {
        return Ok(());
    }
    result.and(Err(format!("could not move the unpacked kernel into {}", dir.display())))
}

fn unpack_into(scratch: &Path, package: &str) -> Result<(), String> {
    std::fs::create_dir_all(scratch).map_err(|e| format!("create {}: {e}", scratch.display()))?;
    let download = || {
        run_bounded(
            std::process::Command::new("apt-get").args(["download", "-qq", package]).current_dir(scratch),
            Duration::from_secs(600),
        )
    };
    if let Err(first) = download() {
        apt_update().map_err(|e| format!("{first}; and updating the package lists: {e}"))?;
        download()?;
    }
    let deb = std::fs::read_dir(scratch)
        .map_err(|e| format!("read {}: {e}", scratch.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| format!("apt-get download {package} left no .deb"))?;
    let root = scratch.join("root");
    run_bounded(std::process::Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root), Duration::from_secs(300))?;
    let modules = root.join("lib/modules");
    let version = only_entry(&modules)?;
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{version}"));
    let moves = [(vmlinuz, scratch.join("vmlinuz")), (modules.join(&version), scratch.join("modules").join(&version))];
    std::fs::create_dir_all(scratch.join("modules")).map_err(|e| e.to_string())?;
    for (from, to) in moves {
        std::fs::rename(&from, &to).map_err(|e| format!("move {} to {}: {e}", from.display(), to.display()))?;
    }
    std::fs::remove_dir_all(&root).map_err(|e| e.to_string())?;
    std::fs::remove_file(&deb).map_err(|e| e.to_string())?;
    std::fs::write(scratch.join(".complete"), &version).map_err(|e| e.to_string())
}

/// Removes the kernels a security update replaced (each is ~400 MB), keeping `current`.
fn remove_older_kernels(cache: &Path, current: &str) {
    let Ok(entries) = std::fs::read_dir(cache) else { return };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("linux-image-") && name != current {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `dir/vmlinux`, unpacked once from `vmlinuz`: Debian compresses it with xz, whose stream
/// starts at its magic bytes inside the bzImage. Written aside and renamed into place.
fn unpacked_image(dir: &Path) -> Result<PathBuf, String> {
    let vmlinux = dir.join("vmlinux");
    if vmlinux.exists() {
        return Ok(vmlinux);
    }
    let bzimage = std::fs::read(dir.join("vmlinuz")).map_err(|e| format!("read vmlinuz: {e}"))?;
    let start = bzimage.windows(6).position(|w| w == b"\xfd7zXZ\x00").ok_or("vmlinuz holds no xz stream")?;
    let scratch = dir.join(format!("vmlinux.tmp-{}-{}", std::process::id(), crate::common::unique()));
    let payload = scratch.with_extension("xz");
    let unpack = || -> Result<(), String> {
        std::fs::write(&payload, &bzimage[start..]).map_err(|e| e.to_string())?;
        let out = std::fs::File::create(&scratch).map_err(|e| e.to_string())?;
        let status = std::process::Command::new("timeout")
            .args(["120", "xz", "-dc", "--single-stream"])
            .arg(&payload)
            .stdout(out)
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("run xz: {e}"))?;
        let elf = std::fs::read(&scratch).map_err(|e| e.to_string())?;
        if !status.success() || !elf.starts_with(b"\x7fELF") {
            return Err(format!("xz (Debian package xz-utils) could not unpack it: {status}"));
        }
        std::fs::rename(&scratch, &vmlinux).map_err(|e| e.to_string())
    };
    let result = unpack();
    let _ = std::fs::remove_file(&payload);
    let _ = std::fs::remove_file(&scratch);
    result.map(|()| vmlinux)
}

/// The one directory name in `dir` (a kernel package installs one `lib/modules/<version>`).
fn only_entry(dir: &Path) -> Result<String, String> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    match names.as_slice() {
        [one] if !one.contains(['/', '\n']) => Ok(one.clone()),
        _ => Err(format!("expected one kernel version in {}, found {names:?}", dir.display())),
    }
}
