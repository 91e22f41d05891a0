//! The Go ociregistry's list commands, built from the store's records and
//! tags: `manifest/list` (one line per image), `image/list` (each image with
//! its blobs) and `blob/list` (each cached blob with how many manifests
//! reference it). Plain text, a header line first, sorted, at most `count`
//! items. Blocking (manifests not in memory are read from disk, checked
//! against their digests, and not kept): run on a blocking thread of the
//! fetch runtime. A manifest whose file does not match its digest is never
//! trusted: its image is listed without blobs, and it counts for no blob.
//!
//! An image is a tag (`registry/repo:tag`), or a manifest fetched by digest
//! for a repository none of whose cached tags names it (`registry/repo@digest`,
//! shown with the digest cut to 10 hex digits as the Go version does).
//! `CREATED` and `PULLED` are printed as Go prints them: the server's local
//! time (`TZ` honoured), `2025-02-28T12:59:59`, with no zone.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use regex::{Regex, RegexBuilder};

use super::command::{Count, ImageFilter};
use crate::go_time::format_time;
use crate::oci::{media, Digest};
use crate::store::{Kind, Store};

/// The largest manifest read for its blobs (the fetch limit).
const MAX_MANIFEST: u64 = 4 * 1024 * 1024;
/// The most memory a compiled pattern may take.
const REGEX_SIZE_LIMIT: usize = 1024 * 1024;
/// What a list with nothing in it says (the Go version's words).
pub const NO_MANIFESTS: &str = "no manifests found\n";
pub const NO_BLOBS: &str = "no blobs found\n";

/// One image of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `registry/repo:tag` or `registry/repo@digest`.
    pub url: String,
    pub digest: Digest,
    /// Unix seconds when the tag was first resolved to this digest.
    pub created: Option<u64>,
    /// Unix seconds when a client last pulled this manifest.
    pub pulled: Option<u64>,
}

/// A `pattern=` that does not compile: the request is refused (400).
#[derive(Debug, thiserror::Error)]
#[error("invalid parameters: regex did not compile: {pattern:?}")]
pub struct BadPattern {
    pub pattern: String,
}

/// The compiled filter of a list command.
pub enum Selector {
    All,
    Patterns(Vec<Regex>),
    Digest(String),
}

impl Selector {
    pub fn compile(filter: &ImageFilter) -> Result<Selector, BadPattern> {
        Ok(match filter {
            ImageFilter::All => Selector::All,
            ImageFilter::Digest(d) => Selector::Digest(d.clone()),
            ImageFilter::Patterns(ps) => Selector::Patterns(
                ps.iter()
                    .map(|p| {
                        RegexBuilder::new(p)
                            .size_limit(REGEX_SIZE_LIMIT)
                            .build()
                            .map_err(|_| BadPattern { pattern: p.clone() })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

/// Every image, sorted by URL.
pub fn images(store: &Store) -> Vec<Image> {
    let pulled = store.pulled_times();
    let mut out = Vec::new();
    let mut tagged = HashSet::new();
    for (key, tag) in store.all_tags() {
        let source = format!("{}/{}", key.registry, key.repo);
        out.push(Image {
            url: format!("{source}:{}", key.tag),
            digest: tag.digest.clone(),
            created: Some(tag.fetched_at),
            pulled: pulled.get(&tag.digest).copied(),
        });
        tagged.insert((source, tag.digest));
    }
    for (digest, record) in store.records() {
        if record.kind != Kind::Manifest {
            continue;
        }
        for source in &record.sources {
            if !tagged.contains(&(source.clone(), digest.clone())) {
                out.push(Image {
                    url: format!("{source}@{digest}"),
                    digest: digest.clone(),
                    created: None,
                    pulled: pulled.get(&digest).copied(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.url.cmp(&b.url));
    out
}

/// The blobs (config and layers) an image manifest names, read through the
/// store (checked against its digest, not kept in memory); none for an
/// index, or a manifest that cannot be read or does not match its digest
/// (the store logs that).
fn blobs_of(store: &Store, digest: &Digest) -> Vec<Digest> {
    if !store.record(digest).is_some_and(|r| r.kind == Kind::Manifest && r.size <= MAX_MANIFEST) {
        return Vec::new();
    }
    let Some(body) = store.manifest_unkept(digest) else { return Vec::new() };
    match media::inspect(&body) {
        Ok(info) if !info.is_index => info.references.into_iter().map(|d| d.digest).collect(),
        _ => Vec::new(),
    }
}

/// `manifest/list` (without blobs) or `image/list` (with them).
pub fn list_images(store: &Store, selector: &Selector, count: Count, with_blobs: bool) -> String {
    let mut text = String::new();
    let mut shown = 0;
    for image in images(store) {
        if shown >= count.take() {
            break;
        }
        let blobs = match (selector, with_blobs) {
            (Selector::Digest(_), _) | (_, true) => blobs_of(store, &image.digest),
            _ => Vec::new(),
        };
        let selected = match selector {
            Selector::All => true,
            Selector::Patterns(res) => res.iter().any(|re| re.is_match(&image.url)),
            Selector::Digest(part) => blobs.iter().any(|b| b.to_string().contains(part.as_str())),
        };
        if !selected {
            continue;
        }
        if shown == 0 {
            text.push_str("URL DIGEST CREATED PULLED\n");
        }
        shown += 1;
        let created = image.created.map_or_else(|| "-".to_string(), format_time);
        let pulled = image.pulled.map_or_else(|| "-".to_string(), format_time);
        let _ = writeln!(text, "{} {}  {created} {pulled}", display_url(&image.url), image.digest);
        if with_blobs {
            for blob in blobs {
                let _ = writeln!(text, "- {blob}");
            }
        }
    }
    if shown == 0 {
        return NO_MANIFESTS.to_string();
    }
    text
}

/// `blob/list`: cached blobs whose digest contains `substr`, each with the
/// number of cached manifests that reference it.
pub fn list_blobs(store: &Store, substr: &str, count: Count) -> String {
    let records = store.records();
    let mut refs: HashMap<Digest, u64> = HashMap::new();
    for (digest, record) in &records {
        if record.kind == Kind::Manifest {
            for blob in blobs_of(store, digest).into_iter().collect::<HashSet<_>>() {
                *refs.entry(blob).or_default() += 1;
            }
        }
    }
    let mut blobs: Vec<String> = records
        .iter()
        .filter(|(_, r)| r.kind == Kind::Blob)
        .map(|(d, _)| d.to_string())
        .filter(|d| d.contains(substr))
        .collect();
    if blobs.is_empty() {
        return NO_BLOBS.to_string();
    }
    blobs.sort();
    let mut text = String::from("URL REFCNT\n");
    for digest in blobs.into_iter().take(count.take()) {
        let n = digest.parse::<Digest>().ok().and_then(|d| refs.get(&d).copied()).unwrap_or(0);
        let _ = writeln!(text, "{digest} {n}");
    }
    text
}

/// An image URL as the Go version shows it: a digest reference cut to 10 hex digits.
fn display_url(url: &str) -> String {
    match url.split_once('@') {
        Some((name, digest)) => match digest.split_once(':') {
            Some((algorithm, hex)) => format!("{name}@{algorithm}:{}", &hex[..hex.len().min(10)]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(display_url(&format!("quay.io/a@{d}")), "quay.io/a@sha256:ababababab");
        assert_eq!(display_url("quay.io/a:v1"), "quay.io/a:v1");
    }

    #[test]
    fn patterns_compile_or_are_named() {
        let ok = Selector::compile(&ImageFilter::Patterns(vec!["nginx".into(), ".*:v1$".into()]));
        assert!(matches!(ok, Ok(Selector::Patterns(ref v)) if v.len() == 2));
        let err = Selector::compile(&ImageFilter::Patterns(vec!["ok".into(), "(".into()])).err().unwrap();
        assert_eq!(err.to_string(), "invalid parameters: regex did not compile: \"(\"");
        let huge = Selector::compile(&ImageFilter::Patterns(vec!["\\w{1000}{1000}".into()]));
        assert!(huge.is_err(), "a pattern past the size limit is refused");
    }
}
