//! The kernel modules a guest gets: every module under a few directories of a Debian
//! kernel's `/lib/modules/<version>` (TLS and the crypto it may ask for), plus whatever
//! they depend on, with the `modules.dep` and `modules.alias` that busybox's `modprobe`
//! reads — both written here from each module's `.modinfo` section, so no `depmod` is needed.
//! Modules may be shipped compressed (`.ko.xz` from Debian trixie on, some `.ko.zst`): they are
//! decompressed on the host (`xz -dc`, `zstd -dc`), both to read `.modinfo` and for the copy
//! the guest gets, which is always a plain `.ko`.
//! The kernel's own `request_module` (e.g. `crypto-gcm` at the first `TLS_TX`) runs
//! `/sbin/modprobe` and is answered from the same files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::run_bounded;

/// Directories (under `/lib/modules/<version>/kernel`) shipped whole.
const SHIPPED: [&str; 4] = ["net/tls", "crypto", "arch/x86/crypto", "lib/crypto"];

/// One module to ship: its path in the guest, relative to the modules directory (always `.ko`),
/// its uncompressed ELF and what modinfo says.
pub struct Module {
    pub relative: PathBuf,
    pub elf: Vec<u8>,
    depends: Vec<String>,
    aliases: Vec<String>,
}

/// The modules to ship from `modules_dir` (`/lib/modules/<version>`), keyed by module name
/// (`-` spelled `_`, as the kernel does), with every dependency included.
pub fn select(modules_dir: &Path) -> Result<BTreeMap<String, Module>, String> {
    let mut all = BTreeMap::new();
    index(modules_dir, &modules_dir.join("kernel"), &mut all)?;
    let mut wanted: Vec<String> = all
        .iter()
        .filter(|(_, rel)| SHIPPED.iter().any(|dir| rel.starts_with(Path::new("kernel").join(dir))))
        .map(|(name, _)| name.clone())
        .collect();
    if !wanted.iter().any(|name| name == "tls") {
        return Err(format!("{} has no kernel/net/tls/tls.ko", modules_dir.display()));
    }
    let mut chosen = BTreeMap::new();
    while let Some(name) = wanted.pop() {
        if chosen.contains_key(&name) {
            continue;
        }
        let source = all.get(&name).ok_or_else(|| format!("module {name} is depended on but missing"))?;
        let path = modules_dir.join(source);
        let elf = uncompressed(&path)?;
        let info =
            modinfo(&elf).ok_or_else(|| format!("{} is not a 64-bit ELF module with .modinfo", path.display()))?;
        let relative = uncompressed_name(source);
        let depends: Vec<String> = info
            .iter()
            .filter_map(|(k, v)| (k == "depends").then_some(v))
            .flat_map(|v| v.split(',').filter(|d| !d.is_empty()).map(module_name))
            .collect();
        let aliases = info.iter().filter(|(k, _)| k == "alias").map(|(_, v)| v.clone()).collect();
        wanted.extend(depends.iter().cloned());
        chosen.insert(name, Module { relative, elf, depends, aliases });
    }
    Ok(chosen)
}

/// `modules.dep`: each module, then all it needs, nearest first (modprobe loads them from the end).
pub fn modules_dep(modules: &BTreeMap<String, Module>) -> String {
    let mut out = String::new();
    for (name, module) in modules {
        let mut order = Vec::new();
        dependencies_first(name, modules, &mut order, &mut BTreeSet::new());
        order.pop(); // the module itself comes last in a deps-first order
        out.push_str(&format!("{}:", module.relative.display()));
        for dep in order.iter().rev() {
            out.push_str(&format!(" {}", modules[dep].relative.display()));
        }
        out.push('\n');
    }
    out
}

/// `modules.alias`: `alias <pattern> <module>` for every alias a shipped module declares.
pub fn modules_alias(modules: &BTreeMap<String, Module>) -> String {
    let mut out = String::new();
    for (name, module) in modules {
        for alias in module.aliases.iter().filter(|a| !a.contains(char::is_whitespace)) {
            out.push_str(&format!("alias {alias} {name}\n"));
        }
    }
    out
}

fn dependencies_first(
    name: &str,
    modules: &BTreeMap<String, Module>,
    order: &mut Vec<String>,
    seen: &mut BTreeSet<String>,
) {
    if !seen.insert(name.to_string()) {
        return;
    }
    for dep in &modules[name].depends {
        dependencies_first(dep, modules, order, seen);
    }
    order.push(name.to_string());
}

/// Writes the modules [`select`] picks from `from` into `to` (another modules directory),
/// uncompressed, with the kernel's `modules.builtin*` and `modules.order` (so `depmod` can
/// run on it too, as `bench-scripts/tls-guest` does). Returns how many modules it wrote.
pub fn copy_selected(from: &Path, to: &Path) -> Result<usize, String> {
    let chosen = select(from)?;
    for module in chosen.values() {
        let path = to.join(&module.relative);
        let parent = path.parent().expect("a module path has a directory");
        std::fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
        std::fs::write(&path, &module.elf).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    for name in ["modules.builtin", "modules.builtin.modinfo", "modules.order"] {
        if from.join(name).is_file() {
            std::fs::copy(from.join(name), to.join(name)).map_err(|e| format!("copy {name}: {e}"))?;
        }
    }
    Ok(chosen.len())
}

/// How a module file is compressed, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Xz,
    Zstd,
}

/// The module name (`-` spelled `_`) and compression of a module file name (`tls.ko`,
/// `aesni-intel.ko.xz`, `chacha20poly1305.ko.zst`); `None` for anything else.
pub fn module_file(file_name: &str) -> Option<(String, Compression)> {
    let (stem, compression) = if let Some(stem) = file_name.strip_suffix(".ko") {
        (stem, Compression::None)
    } else if let Some(stem) = file_name.strip_suffix(".ko.xz") {
        (stem, Compression::Xz)
    } else {
        (file_name.strip_suffix(".ko.zst")?, Compression::Zstd)
    };
    (!stem.is_empty()).then(|| (module_name(stem), compression))
}

/// `relative` with a compressed module's `.xz` or `.zst` taken off.
fn uncompressed_name(relative: &Path) -> PathBuf {
    match relative.extension().and_then(|x| x.to_str()) {
        Some("xz" | "zst") => relative.with_extension(""),
        _ => relative.to_path_buf(),
    }
}

/// A module file's contents, decompressed on the host when its name says it is compressed.
fn uncompressed(path: &Path) -> Result<Vec<u8>, String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let tool = match module_file(name).map(|(_, c)| c) {
        Some(Compression::Xz) => "xz",
        Some(Compression::Zstd) => "zstd",
        _ => return std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display())),
    };
    run_bounded(Command::new(tool).arg("-dc").arg(path), Duration::from_secs(60))
        .map_err(|e| format!("decompress {} (Debian packages xz-utils, zstd): {e}", path.display()))
}

/// Maps every module name under `dir` to its path relative to `root`.
fn index(root: &Path, dir: &Path, all: &mut BTreeMap<String, PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("read {}: {e}", dir.display()))?.path();
        if path.is_dir() {
            index(root, &path, all)?;
        } else if let Some((name, _)) = path.file_name().and_then(|n| n.to_str()).and_then(module_file) {
            all.insert(name, path.strip_prefix(root).unwrap().to_path_buf());
        }
    }
    Ok(())
}

fn module_name(file_stem: &str) -> String {
    file_stem.replace('-', "_")
}

/// The `key=value` strings of an uncompressed module's `.modinfo` ELF section.
fn modinfo(elf: &[u8]) -> Option<Vec<(String, String)>> {
    let section = modinfo_section(elf)?;
    Some(
        section
            .split(|&b| b == 0)
            .filter_map(|entry| std::str::from_utf8(entry).ok()?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn modinfo_section(elf: &[u8]) -> Option<&[u8]> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?) as usize);
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?) as usize);
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?) as usize);
    // ELF64, little-endian.
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (shoff, shentsize, shnum, shstrndx) = (u64_at(0x28)?, u16_at(0x3A)?, u16_at(0x3C)?, u16_at(0x3E)?);
    let section = |i: usize| -> Option<(usize, &[u8])> {
        let at = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let (offset, size) = (u64_at(at + 0x18)?, u64_at(at + 0x20)?);
        Some((u32_at(at)?, elf.get(offset..offset.checked_add(size)?)?))
    };
    let (_, names) = section(shstrndx)?;
    (0..shnum).filter_map(section).find_map(|(name_at, data)| {
        let name = names.get(name_at..)?.split(|&b| b == 0).next()?;
        (name == b".modinfo").then_some(data)
    })
}
