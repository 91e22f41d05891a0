//! The kernel modules a guest gets: every module under a few directories of a Debian
//! kernel's `/lib/modules/<version>` (TLS and the crypto it may ask for), plus whatever
//! they depend on, with the `modules.dep` and `modules.alias` that busybox's `modprobe`
//! reads — both written here from each module's `.modinfo` section, so no `depmod` is needed.
//! The kernel's own `request_module` (e.g. `crypto-gcm` at the first `TLS_TX`) runs
//! `/sbin/modprobe` and is answered from the same files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Directories (under `/lib/modules/<version>/kernel`) shipped whole.
const SHIPPED: [&str; 4] = ["net/tls", "crypto", "arch/x86/crypto", "lib/crypto"];

/// One module to ship: its path relative to the modules directory and what modinfo says.
pub struct Module {
    pub relative: PathBuf,
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
        let relative = all.get(&name).ok_or_else(|| format!("module {name} is depended on but missing"))?.clone();
        let info = modinfo(&modules_dir.join(&relative))?;
        let depends: Vec<String> = info
            .iter()
            .filter_map(|(k, v)| (k == "depends").then_some(v))
            .flat_map(|v| v.split(',').filter(|d| !d.is_empty()).map(module_name))
            .collect();
        let aliases = info.iter().filter(|(k, _)| k == "alias").map(|(_, v)| v.clone()).collect();
        wanted.extend(depends.iter().cloned());
        chosen.insert(name, Module { relative, depends, aliases });
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

/// Maps every module name under `dir` to its path relative to `root`.
fn index(root: &Path, dir: &Path, all: &mut BTreeMap<String, PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("read {}: {e}", dir.display()))?.path();
        if path.is_dir() {
            index(root, &path, all)?;
        } else if let Some(stem) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".ko")) {
            all.insert(module_name(stem), path.strip_prefix(root).unwrap().to_path_buf());
        }
    }
    Ok(())
}

fn module_name(file_stem: &str) -> String {
    file_stem.replace('-', "_")
}

/// The `key=value` strings of an (uncompressed) module's `.modinfo` ELF section.
fn modinfo(path: &Path) -> Result<Vec<(String, String)>, String> {
    let elf = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let section =
        modinfo_section(&elf).ok_or_else(|| format!("{} is not a 64-bit ELF module with .modinfo", path.display()))?;
    Ok(section
        .split(|&b| b == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok()?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
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
