//! Per-digest records: what a committed digest is (manifest or blob), its media
//! type and size, and which (registry, repository) pairs it was fetched for.
//! Kept in memory and journaled to `index/records.jsonl`, one JSON object a line,
//! so startup reads one file however many blobs there are. A torn last line (a
//! crash mid-append) is skipped; a later line for the same digest adds sources.

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
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    digest: Digest,
    kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    media_type: Option<MediaType>,
    size: u64,
    source: String,
}

impl Record {
    /// A digest first fetched as a blob (through `/blobs/`) and later as a
    /// manifest becomes a manifest: the same bytes, now known to be one.
    pub fn upgraded_by(&self, newer: &Record) -> bool {
        self.kind == Kind::Blob && newer.kind == Kind::Manifest
    }
}

/// Reads the journal into a map. Unparseable lines are counted, not fatal.
pub fn load(path: &Path) -> io::Result<(HashMap<Digest, Record>, usize)> {
    let mut map: HashMap<Digest, Record> = HashMap::new();
    let mut skipped = 0;
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((map, 0)),
        Err(e) => return Err(e),
    };
    for line in BufReader::new(file).lines() {
        let line = line?;
        let Ok(entry) = serde_json::from_str::<Line>(&line) else {
            skipped += 1;
            continue;
        };
        let line_record =
            Record { kind: entry.kind, media_type: entry.media_type, size: entry.size, sources: Vec::new() };
        let record = map.entry(entry.digest).or_insert_with(|| line_record.clone());
        if record.upgraded_by(&line_record) {
            record.kind = Kind::Manifest;
            record.media_type = line_record.media_type;
        }
        if !record.sources.contains(&entry.source) {
            record.sources.push(entry.source);
        }
    }
    Ok((map, skipped))
}

/// The append side of the journal.
pub struct Journal {
    file: File,
}

impl Journal {
    pub fn open(path: &Path) -> io::Result<Journal> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Journal { file })
    }

    /// Appends one record for `source`; the line is written with one `write`.
    pub fn append(&mut self, digest: &Digest, record: &Record, source: &str) -> io::Result<()> {
        let line = Line {
            digest: digest.clone(),
            kind: record.kind,
            media_type: record.media_type.clone(),
            size: record.size,
            source: source.to_string(),
        };
        let mut bytes = serde_json::to_vec(&line).map_err(io::Error::other)?;
        bytes.push(b'\n');
        self.file.write_all(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trip_merges_sources_and_skips_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        let d = Digest::of(crate::oci::Algorithm::Sha256, b"x");
        let rec = Record { kind: Kind::Manifest, media_type: Some("m/t".parse().unwrap()), size: 1, sources: vec![] };
        let mut j = Journal::open(&path).unwrap();
        j.append(&d, &rec, "docker.io/library/a").unwrap();
        j.append(&d, &rec, "quay.io/b").unwrap();
        j.append(&d, &rec, "quay.io/b").unwrap();
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"digest\":\"sha25").unwrap();
        let (map, skipped) = load(&path).unwrap();
        assert_eq!(skipped, 1);
        let got = &map[&d];
        assert_eq!(got.kind, Kind::Manifest);
        assert_eq!(got.media_type.as_ref().map(MediaType::as_str), Some("m/t"));
        assert_eq!(got.sources, vec!["docker.io/library/a", "quay.io/b"]);
    }
}
