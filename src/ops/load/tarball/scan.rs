//! Reading a tarball, which is hostile until checked: entries are only ever
//! streamed or read into memory, looked up by their name as a string, and
//! never unpacked to a path. The first pass keeps the metadata (the JSON
//! files: `manifest.json`, `index.json`, manifests, configs) in memory within
//! bounds, and the size of every regular file; the second pass streams the
//! blobs the plan needs.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// A JSON file larger than this is not metadata (the 4 MiB manifest bound).
pub const MAX_JSON_BYTES: u64 = 4 * 1024 * 1024;
/// Metadata kept in memory at most, all files together.
const MAX_METADATA_BYTES: u64 = 64 * 1024 * 1024;
/// Regular files a tarball may hold.
const MAX_ENTRIES: usize = 100_000;

/// What the first pass found.
#[derive(Default)]
pub struct Scan {
    /// Small JSON files, by normalised entry name.
    pub json: HashMap<String, Vec<u8>>,
    /// The size of every regular file, by normalised entry name.
    pub sizes: HashMap<String, u64>,
}

/// Opens the tarball for one pass, through gzip when it is gzipped.
pub fn open(path: &Path, gzipped: bool) -> Result<tar::Archive<Box<dyn Read>>, String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let reader: Box<dyn Read> = if gzipped {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file)))
    } else {
        Box::new(BufReader::with_capacity(1 << 20, file))
    };
    Ok(tar::Archive::new(reader))
}

/// An entry's name as the plan looks it up: `./` prefixes dropped.
pub fn entry_name(entry: &tar::Entry<'_, Box<dyn Read>>) -> String {
    let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    let mut name = raw.as_str();
    while let Some(rest) = name.strip_prefix("./") {
        name = rest;
    }
    name.to_string()
}

/// The first pass.
pub fn scan(path: &Path, gzipped: bool) -> Result<Scan, String> {
    let mut archive = open(path, gzipped)?;
    let mut scan = Scan::default();
    let mut kept = 0u64;
    let entries = archive.entries().map_err(|e| format!("{} is not a readable tarball: {e}", path.display()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("{} is not a readable tarball: {e}", path.display()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry_name(&entry);
        let size = entry.size();
        if scan.sizes.len() >= MAX_ENTRIES {
            return Err(format!("{} holds more than {MAX_ENTRIES} files", path.display()));
        }
        scan.sizes.insert(name.clone(), size);
        if size > MAX_JSON_BYTES || scan.json.contains_key(&name) {
            continue;
        }
        let mut bytes = Vec::with_capacity(size as usize);
        (&mut entry)
            .take(MAX_JSON_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{}: cannot read {name}: {e}", path.display()))?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{')
            && bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'[')
        {
            continue;
        }
        kept += bytes.len() as u64;
        if kept > MAX_METADATA_BYTES {
            return Err(format!("{} holds more than {MAX_METADATA_BYTES} bytes of JSON files", path.display()));
        }
        scan.json.insert(name, bytes);
    }
    Ok(scan)
}
