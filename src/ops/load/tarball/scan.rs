//! Reading a tarball, which is hostile until checked: entries are only ever
//! streamed or read into memory, looked up by their name as a string, and
//! never unpacked to a path. The first pass keeps the metadata (the JSON
//! files: `manifest.json`, `index.json`, manifests, configs) in memory within
//! bounds, and the size of every regular file, and hashes gzipped files
//! outside `blobs/` both ways (a compressed `docker save` layer); the second
//! pass streams the blobs the plan needs.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::oci::{Algorithm, Digest, Hasher};

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
    /// Gzipped files outside `blobs/` (a `docker save` layer some tools write
    /// compressed), by entry name: the digest of their bytes and of what they
    /// decompress to (the config's `diff_ids` entry names the latter).
    pub gzipped: HashMap<String, Gzipped>,
}

/// The two digests of a gzipped file.
#[derive(Debug, Clone)]
pub struct Gzipped {
    pub compressed: Digest,
    pub uncompressed: Digest,
}

/// Hashes whatever is read through it.
struct Tee<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Both digests of a gzipped entry, `head` being its bytes already read.
fn hash_gzipped(head: &[u8], rest: impl Read) -> std::io::Result<Gzipped> {
    let mut tee = Tee { inner: head.chain(rest), hasher: Hasher::new(Algorithm::Sha256) };
    let mut plain = Hasher::new(Algorithm::Sha256);
    let mut buf = vec![0u8; 1 << 16];
    {
        let mut gz = flate2::read::MultiGzDecoder::new(&mut tee);
        loop {
            let n = gz.read(&mut buf)?;
            if n == 0 {
                break;
            }
            plain.update(&buf[..n]);
        }
    }
    // Whatever follows the gzip stream still counts in the file's digest.
    std::io::copy(&mut tee, &mut std::io::sink())?;
    Ok(Gzipped { compressed: tee.hasher.finish(), uncompressed: plain.finish() })
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

/// The longest entry name kept: every name a layout or `docker save` uses is far shorter.
const MAX_NAME_BYTES: usize = 1024;

/// An entry's name as the plan looks it up: `./` prefixes dropped. `None`
/// for a name no image layout uses (too long, not UTF-8, control characters),
/// which is then skipped: it never becomes a map key or a message.
pub fn entry_name(entry: &tar::Entry<'_, Box<dyn Read>>) -> Option<String> {
    let raw = entry.path_bytes();
    if raw.len() > MAX_NAME_BYTES {
        return None;
    }
    let mut name = std::str::from_utf8(&raw).ok()?;
    if name.chars().any(char::is_control) {
        return None;
    }
    while let Some(rest) = name.strip_prefix("./") {
        name = rest;
    }
    Some(name.to_string())
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
        let Some(name) = entry_name(&entry) else { continue };
        let size = entry.size();
        if scan.sizes.len() >= MAX_ENTRIES {
            return Err(format!("{} holds more than {MAX_ENTRIES} files", path.display()));
        }
        scan.sizes.insert(name.clone(), size);
        if scan.json.contains_key(&name) || scan.gzipped.contains_key(&name) {
            continue;
        }
        let mut head = Vec::with_capacity(2);
        (&mut entry)
            .take(2)
            .read_to_end(&mut head)
            .map_err(|e| format!("{}: cannot read {name}: {e}", path.display()))?;
        if head == [0x1f, 0x8b] && !name.starts_with("blobs/") {
            let gz = hash_gzipped(&head, &mut entry)
                .map_err(|e| format!("{}: {name} is not readable gzip: {e}", path.display()))?;
            scan.gzipped.insert(name, gz);
            continue;
        }
        if size > MAX_JSON_BYTES {
            continue;
        }
        let mut bytes = Vec::with_capacity(size as usize);
        bytes.extend_from_slice(&head);
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
