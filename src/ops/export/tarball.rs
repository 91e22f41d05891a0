//! Writing the OCI image layout tarball: `oci-layout`, `index.json` (each
//! image's top manifest, named by `io.containerd.image.name` and
//! `org.opencontainers.image.ref.name`, both the full reference, as `load`,
//! `ctr import` and skopeo's `oci-archive:FILE:NAME` read them), then
//! `blobs/<alg>/<hex>`, each once. Manifests come checked from memory; blobs
//! are streamed from their files and hashed on the way, so one that does not
//! match its digest (or its size) fails the export. Entries carry mtime 0:
//! the same images make the same tarball.
//!
//! A file is written as a temp file beside it (`.<name>.<pid>.tmp`), fsynced
//! and renamed over it when complete; a failed export leaves nothing behind.
//! `-` writes to standard output as it goes. With `--gzip`, or a name ending
//! in `.tar.gz` or `.tgz`, the tarball is gzipped (load tells by the magic).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::walk::Manifest;
use crate::oci::{Digest, Hasher};
use crate::store::Layout;

const CONTAINERD_NAME: &str = "io.containerd.image.name";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Where the tarball goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    File(PathBuf),
    Stdout,
}

impl Output {
    pub fn parse(text: &str) -> Result<Output, String> {
        if text == "-" {
            return Ok(Output::Stdout);
        }
        let path = PathBuf::from(text);
        if text.is_empty() || path.file_name().is_none() {
            return Err(format!("--output {text:?} does not name a file"));
        }
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(format!("--output: the directory {} does not exist", parent.display()));
        }
        if path.is_dir() {
            return Err(format!("--output: {} is a directory", path.display()));
        }
        Ok(Output::File(path))
    }

    /// Whether the file's name asks for gzip (`.tar.gz`, `.tgz`).
    pub fn gzip_by_name(&self) -> bool {
        match self {
            Output::File(p) => {
                let name = p.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
                name.ends_with(".tar.gz") || name.ends_with(".tgz")
            }
            Output::Stdout => false,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Output::File(p) => p.display().to_string(),
            Output::Stdout => "standard output".to_string(),
        }
    }
}

/// An image as `index.json` lists it.
pub struct Named<'a> {
    pub name: String,
    pub top: &'a Manifest,
}

/// What goes into the tarball.
pub struct Contents<'a> {
    pub images: Vec<Named<'a>>,
    /// Every manifest, each once.
    pub manifests: Vec<&'a Manifest>,
    /// Every blob (digest, size), each once.
    pub blobs: Vec<(Digest, u64)>,
}

/// Writes the tarball (through gzip when `gzip`); `progress` is told the bytes of each blob written.
pub fn write(
    output: &Output,
    gzip: bool,
    layout: &Layout,
    contents: &Contents<'_>,
    progress: &dyn Fn(u64),
) -> Result<(), String> {
    match output {
        Output::Stdout => {
            let out = BufWriter::with_capacity(1 << 20, io::stdout().lock());
            let out = write_maybe_gzipped(out, gzip, layout, contents, progress)?;
            out.into_inner().map(drop).map_err(|e| format!("cannot write to standard output: {}", e.error()))
        }
        Output::File(path) => {
            let temp = TempFile::create(path)?;
            let file = temp.file.try_clone().map_err(|e| format!("cannot write {}: {e}", temp.path.display()))?;
            let out = BufWriter::with_capacity(1 << 20, file);
            let out = write_maybe_gzipped(out, gzip, layout, contents, progress)?;
            let file = out.into_inner().map_err(|e| format!("cannot write {}: {}", temp.path.display(), e.error()))?;
            file.sync_all().map_err(|e| format!("cannot write {}: {e}", temp.path.display()))?;
            temp.persist(path)
        }
    }
}

/// The tarball into `out`, through gzip when `gzip` (fast level: layers are
/// mostly compressed already; header mtime 0, so still deterministic).
fn write_maybe_gzipped<W: Write>(
    out: W,
    gzip: bool,
    layout: &Layout,
    contents: &Contents<'_>,
    progress: &dyn Fn(u64),
) -> Result<W, String> {
    if !gzip {
        return write_to(out, layout, contents, progress);
    }
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let gz = write_to(gz, layout, contents, progress)?;
    gz.finish().map_err(|e| format!("cannot write the end of the gzip stream: {e}"))
}

fn write_to<W: Write>(out: W, layout: &Layout, contents: &Contents<'_>, progress: &dyn Fn(u64)) -> Result<W, String> {
    let mut tar = tar::Builder::new(out);
    let failed = |what: &str, e: io::Error| format!("cannot write {what}: {e}");
    let oci_layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    append(&mut tar, "oci-layout", oci_layout.len() as u64, &oci_layout[..]).map_err(|e| failed("oci-layout", e))?;
    let index = index_json(contents);
    append(&mut tar, "index.json", index.len() as u64, index.as_slice()).map_err(|e| failed("index.json", e))?;
    for m in &contents.manifests {
        append(&mut tar, &blob_name(&m.digest), m.body.len() as u64, &m.body[..])
            .map_err(|e| failed(&format!("manifest {}", m.digest), e))?;
    }
    for (digest, size) in &contents.blobs {
        let path = layout.blob(digest);
        let file = File::open(&path).map_err(|e| format!("blob {digest} cannot be read: {e}"))?;
        let reader = Checked::new(file, digest, *size);
        append(&mut tar, &blob_name(digest), *size, reader).map_err(|e| failed(&format!("blob {digest}"), e))?;
        progress(*size);
    }
    tar.into_inner().map_err(|e| failed("the end of the tarball", e))
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, size: u64, data: impl Read) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    tar.append_data(&mut header, name, data)
}

/// Where a blob of `digest` is in the layout.
fn blob_name(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex())
}

fn index_json(contents: &Contents<'_>) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = contents
        .images
        .iter()
        .map(|i| {
            json!({
                "mediaType": i.top.media_type.as_str(),
                "digest": i.top.digest.to_string(),
                "size": i.top.body.len(),
                "annotations": { CONTAINERD_NAME: i.name, REF_NAME: i.name },
            })
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    serde_json::to_vec(&index).expect("JSON values serialize")
}

/// A blob file read as exactly `size` bytes that hash to its digest; anything
/// else is a read error, which fails the export.
struct Checked<'a> {
    file: File,
    digest: &'a Digest,
    left: u64,
    hasher: Option<Hasher>,
}

impl<'a> Checked<'a> {
    fn new(file: File, digest: &'a Digest, size: u64) -> Checked<'a> {
        Checked { file, digest, left: size, hasher: Some(Hasher::new(digest.algorithm())) }
    }
}

impl Read for Checked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(hasher) = self.hasher.as_mut() else { return Ok(0) };
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = if want == 0 { 0 } else { self.file.read(&mut buf[..want])? };
        if n > 0 {
            hasher.update(&buf[..n]);
            self.left -= n as u64;
            return Ok(n);
        }
        if self.left > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "its file is shorter than its record (run verify)",
            ));
        }
        let actual = self.hasher.take().expect("checked above").finish();
        if actual != *self.digest {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("its file hashes to {actual} (run verify)"),
            ));
        }
        Ok(0)
    }
}

/// The temp file beside the output; removed unless persisted.
struct TempFile {
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl TempFile {
    fn create(target: &Path) -> Result<TempFile, String> {
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let path = target.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TempFile { path, file, persisted: false })
    }

    fn persist(mut self, target: &Path) -> Result<(), String> {
        std::fs::rename(&self.path, target)
            .map_err(|e| format!("cannot rename {} to {}: {e}", self.path.display(), target.display()))?;
        self.persisted = true;
        if let Some(dir) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            // The rename is durable once the directory is synced; a failure here loses nothing written.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_checked(content: &[u8], digest: &Digest, size: u64) -> io::Result<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, content).unwrap();
        let mut out = Vec::new();
        Checked::new(File::open(&path).unwrap(), digest, size).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn blobs_are_written_only_as_their_digest_and_size_say() {
        let digest = Digest::of(crate::oci::Algorithm::Sha256, b"layer bytes");
        assert_eq!(read_checked(b"layer bytes", &digest, 11).unwrap(), b"layer bytes");
        let wrong = read_checked(b"layer bytez", &digest, 11).unwrap_err();
        assert!(wrong.to_string().contains("hashes to"), "{wrong}");
        let short = read_checked(b"layer", &digest, 11).unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
        // A longer file is read only as far as its record says, then fails its digest.
        assert!(read_checked(b"layer bytes and more", &digest, 11).is_ok());
        assert!(read_checked(b"layer bytes and more", &digest, 20).is_err());
    }

    #[test]
    fn outputs_are_files_in_existing_directories_or_stdout() {
        assert_eq!(Output::parse("-"), Ok(Output::Stdout));
        assert_eq!(Output::parse("x.tar"), Ok(Output::File(PathBuf::from("x.tar"))));
        assert!(Output::parse("/nonexistent-dir/x.tar").unwrap_err().contains("does not exist"));
        assert!(Output::parse("").is_err());
        let dir = tempfile::tempdir().unwrap();
        assert!(Output::parse(dir.path().to_str().unwrap()).is_err());
    }
}
