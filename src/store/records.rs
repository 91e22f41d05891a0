//! Per-digest records: what a committed digest is (manifest or blob), its media
//! type and size, and which (registry, repository) pairs it was fetched for.
//! Kept in memory and journaled to `index/records.jsonl`, one JSON object a line,
//! so startup reads one file however many blobs there are. Each append is
//! synced before the commit it records is reported done. A torn last line (a
//! crash mid-append) is cut off at load, so appends always start on a line
//! boundary; a later line for the same digest adds sources. A removal line
//! (`"removed": true`, written when `verify --repair` takes a damaged digest
//! out) makes `load` forget the digest; a later line adds it again.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::oci::{Digest, MediaType};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Manifest,
    Blob,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    pub media_type: Option<MediaType>,
    pub size: u64,
    /// `registry/repository` pairs this digest was fetched for.
    pub sources: Vec<String>,
    /// Unix seconds when it was first committed; `None` for records journaled
    /// before lines carried the time.
    pub created: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    digest: Digest,
    kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    media_type: Option<MediaType>,
    size: u64,
    /// The source the digest was fetched for; absent on a removal.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    source: String,
    /// The digest was removed: its file is being unlinked. `kind`, `mediaType`
    /// and `size` say what was removed.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    removed: bool,
    /// Unix seconds of the commit (absent on lines written by older releases).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    at: Option<u64>,
}

impl Line {
    fn new(digest: &Digest, record: &Record, source: String, removed: bool) -> Line {
        Line {
            digest: digest.clone(),
            kind: record.kind,
            media_type: record.media_type.clone(),
            size: record.size,
            source,
            removed,
            at: (!removed).then(|| record.created.unwrap_or_else(super::tags::now_secs)),
        }
    }
}

impl Record {
    /// A digest first fetched as a blob (through `/blobs/`) and later as a
    /// manifest becomes a manifest: the same bytes, now known to be one.
    pub fn upgraded_by(&self, newer: &Record) -> bool {
        self.kind == Kind::Blob && newer.kind == Kind::Manifest
    }
}

/// The journal as loaded: the records, the lines that did not parse, and
/// whether a torn last line was cut off.
pub struct Loaded {
    pub records: HashMap<Digest, Record>,
    pub skipped: usize,
    pub torn_bytes: u64,
}

/// Reads the journal into a map. Unparseable lines are counted, not fatal. A
/// last line without its newline is what a crash mid-append leaves: it is cut
/// off the file (so the next append starts on a line boundary) and reported.
pub fn load(path: &Path) -> io::Result<Loaded> {
    scan(path, true)
}

/// Reads the journal like [`load`] without changing the file: for readers
/// beside the owning process (`list`), for whom a torn last line is an
/// append in progress, skipped.
pub fn read(path: &Path) -> io::Result<Loaded> {
    scan(path, false)
}

fn scan(path: &Path, cut_torn_tail: bool) -> io::Result<Loaded> {
    let mut loaded = Loaded { records: HashMap::new(), skipped: 0, torn_bytes: 0 };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(loaded),
        Err(e) => return Err(e),
    };
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut complete: u64 = 0;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            loaded.torn_bytes = n as u64;
            break;
        }
        complete += n as u64;
        match serde_json::from_slice::<Line>(&line) {
            Ok(entry) => merge(&mut loaded.records, entry),
            Err(_) => loaded.skipped += 1,
        }
    }
    if loaded.torn_bytes > 0 && cut_torn_tail {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(complete)?;
        file.sync_all()?;
    }
    Ok(loaded)
}

fn merge(map: &mut HashMap<Digest, Record>, entry: Line) {
    if entry.removed {
        map.remove(&entry.digest);
        return;
    }
    let line_record = Record {
        kind: entry.kind,
        media_type: entry.media_type,
        size: entry.size,
        sources: Vec::new(),
        created: entry.at,
    };
    let record = map.entry(entry.digest).or_insert_with(|| line_record.clone());
    if record.upgraded_by(&line_record) {
        record.kind = Kind::Manifest;
        record.media_type = line_record.media_type;
    }
    if record.created.is_none() {
        record.created = line_record.created;
    }
    if !entry.source.is_empty() && !record.sources.contains(&entry.source) {
        record.sources.push(entry.source);
    }
}

/// The append side of the journal. Every append is one whole line, durable
/// (fdatasync) before it returns, so a record is on disk with the commit it
/// describes; an append that fails part-way is cut back off the file, so the
/// next one still starts on a line boundary.
pub struct Journal {
    file: File,
    /// The length of the file's whole lines: where the next line goes.
    len: u64,
}

impl Journal {
    /// Opens the journal for appending; call after [`load`], which cuts a torn tail.
    pub fn open(path: &Path) -> io::Result<Journal> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Journal { file, len })
    }

    /// Appends one record for `source` and syncs it.
    pub fn append(&mut self, digest: &Digest, record: &Record, source: &str) -> io::Result<()> {
        self.write(&Line::new(digest, record, source.to_string(), false))
    }

    /// Appends the removal of `digest` (whose record was `record`) and syncs it.
    pub fn append_removal(&mut self, digest: &Digest, record: &Record) -> io::Result<()> {
        self.write(&Line::new(digest, record, String::new(), true))
    }

    /// Appends the removals of many digests (each with the record it had), with one sync.
    pub fn append_removals(&mut self, removed: &[(&Digest, &Record)]) -> io::Result<()> {
        if removed.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for (digest, record) in removed {
            serde_json::to_writer(&mut bytes, &Line::new(digest, record, String::new(), true))
                .map_err(io::Error::other)?;
            bytes.push(b'\n');
        }
        self.write_bytes(&bytes)
    }

    fn write(&mut self, line: &Line) -> io::Result<()> {
        let mut bytes = serde_json::to_vec(line).map_err(io::Error::other)?;
        bytes.push(b'\n');
        self.write_bytes(&bytes)
    }

    /// Appends whole lines and syncs them; on failure cuts the file back.
    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.file.write_all(bytes).and_then(|_| self.file.sync_data()) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Whatever part of the line reached the file must not prefix the next one.
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trip_merges_sources_and_skips_unreadable_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        let d = Digest::of(crate::oci::Algorithm::Sha256, b"x");
        let rec = Record {
            kind: Kind::Manifest,
            media_type: Some("m/t".parse().unwrap()),
            size: 1,
            sources: vec![],
            created: None,
        };
        let mut j = Journal::open(&path).unwrap();
        j.append(&d, &rec, "docker.io/library/a").unwrap();
        j.append(&d, &rec, "quay.io/b").unwrap();
        j.append(&d, &rec, "quay.io/b").unwrap();
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"not json\n").unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!((loaded.skipped, loaded.torn_bytes), (1, 0));
        let got = &loaded.records[&d];
        assert_eq!(got.kind, Kind::Manifest);
        assert_eq!(got.media_type.as_ref().map(MediaType::as_str), Some("m/t"));
        assert_eq!(got.sources, vec!["docker.io/library/a", "quay.io/b"]);
    }

    #[test]
    fn a_removal_line_forgets_the_digest_until_a_later_line_adds_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        let (a, b) = (Digest::of(crate::oci::Algorithm::Sha256, b"a"), Digest::of(crate::oci::Algorithm::Sha256, b"b"));
        let blob = Record { kind: Kind::Blob, media_type: None, size: 1, sources: vec![], created: None };
        let mut j = Journal::open(&path).unwrap();
        j.append(&a, &blob, "quay.io/a").unwrap();
        j.append(&b, &blob, "quay.io/b").unwrap();
        j.append_removal(&a, &blob).unwrap();
        let last = std::fs::read_to_string(&path).unwrap().lines().last().unwrap().to_string();
        assert_eq!(last, format!(r#"{{"digest":"{a}","kind":"blob","size":1,"removed":true}}"#));
        let loaded = load(&path).unwrap();
        assert_eq!((loaded.skipped, loaded.torn_bytes), (0, 0));
        assert!(!loaded.records.contains_key(&a), "the removal applies");
        assert_eq!(loaded.records[&b].sources, vec!["quay.io/b"], "other digests are untouched");

        j.append(&a, &blob, "ghcr.io/c").unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.records[&a].sources, vec!["ghcr.io/c"], "re-added with only the sources after the removal");
    }

    #[test]
    fn a_torn_last_line_is_cut_so_the_next_append_starts_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        let (a, b) = (Digest::of(crate::oci::Algorithm::Sha256, b"a"), Digest::of(crate::oci::Algorithm::Sha256, b"b"));
        let blob = Record { kind: Kind::Blob, media_type: None, size: 1, sources: vec![], created: None };
        Journal::open(&path).unwrap().append(&a, &blob, "quay.io/a").unwrap();
        let whole = std::fs::metadata(&path).unwrap().len();
        // A crash in the middle of the next append.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"digest\":\"sha25").unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!((loaded.records.len(), loaded.skipped, loaded.torn_bytes), (1, 0, 16));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole, "the torn tail is gone from the file");
        Journal::open(&path).unwrap().append(&b, &blob, "quay.io/b").unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!((loaded.records.len(), loaded.skipped, loaded.torn_bytes), (2, 0, 0), "both records survive");
    }
}
