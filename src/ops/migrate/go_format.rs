//! The Go ociregistry's image path, read and checked, never trusted. Its
//! layout (aceeric/ociregistry `impl/globals/globals.go`, `impl/serialize/serialize.go`):
//!
//! ```text
//! img/<hex>    one manifest each, pulled by a tag other than `latest` or by digest
//! lts/<hex>    the same for manifests pulled by the tag `latest` (kept apart so that
//!              --always-pull-latest can replace them)
//! blobs/<hex>  config and layer blobs, the file named by its sha256 hex
//! ```
//!
//! Go releases 1.6.0 to 1.8.3 kept `fat/<hex>` (manifest lists and indexes)
//! and `img/<hex>` (image manifests, `latest` included) instead, in the same
//! file format, so `fat/` is read too. Releases up to 1.5.0 wrote another
//! format (with a `pullRequest` field), which is refused, saying so.
//!
//! A manifest file is `json.Marshal` of imgpull's `ManifestHolder`
//! (aceeric/imgpull `pkg/imgpull/manifest_holder.go`): `type` (0 Docker
//! list, 1 Docker manifest, 2 OCI index, 3 OCI manifest), `digest` (bare hex,
//! also the file name), `imageUrl` (`registry/repo:tag` or `registry/repo@sha256:…`,
//! Go's `PullRequest.Url()`), `bytes` (the upstream's manifest bytes, base64
//! as Go encodes `[]byte`), the same manifest decoded four ways (cosmetic,
//! ignored here), and `created`/`pulled` (`2006-01-02T15:04:05`, local time).

use std::ffi::OsStr;

use base64::Engine;
use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::fetch::MAX_MANIFEST_BYTES;
use crate::go_time::parse_date;
use crate::oci::media::{self, ManifestInfo};
use crate::oci::{Algorithm, Digest, MediaType};
use crate::ops::load::ImageRef;

/// The Go directory of manifests pulled by anything but the tag `latest`.
pub const IMG: &str = "img";
/// The Go directory of manifests pulled by the tag `latest`.
pub const LTS: &str = "lts";
/// The Go directory of manifest lists and indexes of releases 1.6.0 to 1.8.3.
pub const FAT: &str = "fat";
/// The Go directory of blobs; ours holds `sha256/` and `sha512/` directories in it.
pub const BLOBS: &str = "blobs";

/// The largest Go manifest file read: a manifest of our 4 MiB limit as
/// base64, plus its decoded copy, with room to spare.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Which Go manifest directory a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Img,
    Lts,
    Fat,
}

impl Dir {
    /// Every Go manifest directory.
    pub const ALL: [Dir; 3] = [Dir::Lts, Dir::Fat, Dir::Img];

    pub fn name(self) -> &'static str {
        match self {
            Dir::Img => IMG,
            Dir::Lts => LTS,
            Dir::Fat => FAT,
        }
    }
}

/// A Go manifest file, checked: its bytes hash to its name, its type, and the
/// image it was pulled as.
#[derive(Debug)]
pub struct GoManifest {
    pub digest: Digest,
    pub media_type: MediaType,
    pub body: Bytes,
    /// What Go pulled it as: a tag (tag set, no digest) or a digest (equal to `digest`).
    pub image: ImageRef,
    /// Unix seconds it was first pulled, if Go's `created` reads.
    pub created: Option<u64>,
    /// Unix seconds it was last pulled, if Go's `pulled` reads.
    pub pulled: Option<u64>,
    /// The blobs (an image manifest) or manifests (an index) it references.
    pub info: ManifestInfo,
}

/// `ManifestHolder` as `encoding/json` writes it. Unknown fields refuse the
/// file: this is the Go format or not ours to guess at.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Holder {
    #[serde(rename = "type")]
    kind: u8,
    digest: String,
    #[serde(rename = "imageUrl")]
    image_url: String,
    /// `omitempty` in Go: absent when empty.
    #[serde(default)]
    bytes: Option<String>,
    #[serde(rename = "v1.oci.index", default)]
    _oci_index: IgnoredAny,
    #[serde(rename = "v1.oci.manifest", default)]
    _oci_manifest: IgnoredAny,
    #[serde(rename = "v2.docker.manifestList", default)]
    _docker_list: IgnoredAny,
    #[serde(rename = "v2.docker.manifest", default)]
    _docker_manifest: IgnoredAny,
    #[serde(default)]
    created: String,
    #[serde(default)]
    pulled: String,
}

/// imgpull's `ManifestType` values, in its `iota` order, as media types.
fn media_type_of(kind: u8) -> Option<&'static str> {
    match kind {
        0 => Some(media::DOCKER_LIST),
        1 => Some(media::DOCKER_MANIFEST),
        2 => Some(media::OCI_INDEX),
        3 => Some(media::OCI_MANIFEST),
        _ => None,
    }
}

/// The sha256 digest a Go file name (64 lowercase hex) stands for.
pub fn digest_of_name(name: &OsStr) -> Option<Digest> {
    let name = name.to_str()?;
    if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    format!("sha256:{name}").parse().ok()
}

/// A file name fit for a log line: its first 80 characters, anything but
/// letters, digits and `._-` shown as `?`.
pub fn shown(name: &OsStr) -> String {
    let lossy = name.to_string_lossy();
    let mut out: String =
        lossy.chars().take(80).map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '?' }).collect();
    if lossy.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// Parses and checks the Go manifest file `name` in `dir` whose content is `text`.
pub fn parse_manifest(name: &OsStr, dir: Dir, text: &[u8]) -> Result<GoManifest, String> {
    let digest = digest_of_name(name).ok_or("its name is not a sha256 hex digest")?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    let holder: Holder = serde_json::from_slice(text).map_err(|e| {
        let old = serde_json::from_slice::<serde_json::Value>(text).is_ok_and(|v| v.get("pullRequest").is_some());
        if old {
            "in the format of Go ociregistry 1.5.0 and older, which is not imported".to_string()
        } else {
            format!("not a Go manifest file: {e}")
        }
    })?;
    let named = holder.digest.strip_prefix("sha256:").unwrap_or(&holder.digest);
    if named != digest.hex() {
        return Err("its digest field differs from its file name".into());
    }
    let encoded = holder.bytes.filter(|b| !b.is_empty()).ok_or("it holds no manifest bytes")?;
    let body = base64::engine::general_purpose::STANDARD
        .decode(encoded.as_bytes())
        .map_err(|e| format!("its manifest bytes are not base64: {e}"))?;
    if body.len() > MAX_MANIFEST_BYTES {
        return Err(format!("its manifest is larger than {MAX_MANIFEST_BYTES} bytes"));
    }
    if Digest::of(Algorithm::Sha256, &body) != digest {
        return Err("its manifest bytes do not match their digest".into());
    }
    let go_type = media_type_of(holder.kind).ok_or_else(|| format!("unknown manifest type {}", holder.kind))?;
    let info = media::inspect(&body)?;
    // The body's own mediaType decides, as for a pull (and is checked before it reaches a header).
    let media_type = match &info.embedded_media_type {
        Some(embedded) => embedded.parse::<MediaType>().map_err(|e| format!("manifest refused: {e}"))?,
        None => media::effective_media_type(Some(go_type), &info, &[])?,
    };
    if media_type.as_str() != go_type {
        return Err(format!("Go recorded it as {go_type}, its bytes are {}", media_type.as_str()));
    }
    let image = ImageRef::parse(&holder.image_url).map_err(|e| format!("imageUrl: {e}"))?;
    if image.digest.as_ref().is_some_and(|d| d != &digest) {
        return Err("its imageUrl names another digest".into());
    }
    if image.digest.is_some() && image.tag.is_some() {
        return Err("its imageUrl names both a tag and a digest".into());
    }
    let latest = image.tag.as_ref().is_some_and(|t| t.as_str().eq_ignore_ascii_case("latest"));
    if dir == Dir::Lts && !latest {
        return Err("it is in lts/ but was not pulled by the tag latest".into());
    }
    Ok(GoManifest {
        digest,
        media_type,
        body: Bytes::from(body),
        image,
        created: parse_date(&holder.created).ok(),
        pulled: parse_date(&holder.pulled).ok(),
        info,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;

    /// A file as imgpull's `ManifestHolder` marshals (see the module doc).
    pub(crate) fn holder(kind: u8, digest: &str, url: &str, bytes: &[u8]) -> Vec<u8> {
        holder_at(kind, digest, url, bytes, "2025-02-28T12:59:59")
    }

    /// [`holder`] pulled first at `created`.
    pub(crate) fn holder_at(kind: u8, digest: &str, url: &str, bytes: &[u8], created: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "type": kind,
            "digest": digest,
            "imageUrl": url,
            "bytes": base64::engine::general_purpose::STANDARD.encode(bytes),
            "v1.oci.index": {"schemaVersion": 0, "manifests": null},
            "v1.oci.manifest": {"schemaVersion": 2},
            "v2.docker.manifestList": {"schemaVersion": 0, "mediaType": "", "manifests": null},
            "v2.docker.manifest": {"schemaVersion": 0},
            "created": created,
            "pulled": "2025-03-01T08:00:00",
        }))
        .unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        Digest::of(Algorithm::Sha256, bytes).hex().to_string()
    }

    #[test]
    fn reads_a_go_manifest_file() {
        let h = hex(MANIFEST);
        let file = holder(3, &h, "docker.io/hello-world:v1", MANIFEST);
        let m = parse_manifest(OsStr::new(&h), Dir::Img, &file).unwrap();
        assert_eq!(m.digest.hex(), h);
        assert_eq!(m.media_type.as_str(), media::OCI_MANIFEST);
        assert_eq!(&m.body[..], MANIFEST);
        assert_eq!(m.image.to_string(), "docker.io/library/hello-world:v1");
        assert_eq!(m.created, parse_date("2025-02-28T12:59:59").ok());
        assert!(m.pulled > m.created);
        let by_digest = holder(3, &h, &format!("quay.io/a/b@sha256:{h}"), MANIFEST);
        let m = parse_manifest(OsStr::new(&h), Dir::Img, &by_digest).unwrap();
        assert_eq!((m.image.tag, m.image.digest), (None, Some(m.digest)));
        let latest = holder(3, &h, "quay.io/a/b:latest", MANIFEST);
        assert!(parse_manifest(OsStr::new(&h), Dir::Lts, &latest).is_ok());
        assert!(parse_manifest(OsStr::new(&h), Dir::Img, &latest).is_ok(), "Go 1.8 kept latest in img/");
        assert!(parse_manifest(OsStr::new(&h), Dir::Fat, &holder(3, &h, "quay.io/a/b:v1", MANIFEST)).is_ok());
    }

    #[test]
    fn refuses_what_is_not_a_sound_go_manifest_file() {
        let h = hex(MANIFEST);
        let other = hex(b"other");
        let url = "quay.io/a/b:v1";
        let refused = |name: &str, dir: Dir, file: &[u8]| parse_manifest(OsStr::new(name), dir, file).unwrap_err();
        assert!(refused("x.json", Dir::Img, &holder(3, &h, url, MANIFEST)).contains("name"));
        assert!(refused(&h.to_uppercase(), Dir::Img, &holder(3, &h, url, MANIFEST)).contains("name"));
        assert!(refused(&other, Dir::Img, &holder(3, &other, url, MANIFEST)).contains("do not match"));
        assert!(refused(&h, Dir::Img, &holder(3, &other, url, MANIFEST)).contains("digest field"));
        assert!(refused(&h, Dir::Img, &holder(7, &h, url, MANIFEST)).contains("unknown manifest type"));
        assert!(refused(&h, Dir::Img, &holder(2, &h, url, MANIFEST)).contains("recorded it as"));
        assert!(refused(&h, Dir::Img, &holder(1, &h, url, MANIFEST)).contains("recorded it as"));
        assert!(refused(&h, Dir::Lts, &holder(3, &h, url, MANIFEST)).contains("lts/"));
        assert!(refused(&h, Dir::Img, &holder(3, &h, "hello-world:v1", MANIFEST)).contains("imageUrl"));
        assert!(refused(&h, Dir::Img, &holder(3, &h, &format!("quay.io/a@sha256:{other}"), MANIFEST))
            .contains("another digest"));
        assert!(refused(&h, Dir::Img, &holder(3, &h, "quay.io/a/b:v1\r\nX: y", MANIFEST)).contains("imageUrl"));
        let mut extra: serde_json::Value = serde_json::from_slice(&holder(3, &h, url, MANIFEST)).unwrap();
        extra["surprise"] = 1.into();
        assert!(refused(&h, Dir::Img, &serde_json::to_vec(&extra).unwrap()).contains("unknown field"));
        extra.as_object_mut().unwrap().remove("surprise");
        extra["bytes"] = "!!not base64!!".into();
        assert!(refused(&h, Dir::Img, &serde_json::to_vec(&extra).unwrap()).contains("base64"));
        extra.as_object_mut().unwrap().remove("bytes");
        assert!(refused(&h, Dir::Img, &serde_json::to_vec(&extra).unwrap()).contains("no manifest bytes"));
        assert!(refused(&h, Dir::Img, b"{\"type\":3").contains("not a Go manifest file"));
        let go_1_5 = br#"{"pullRequest":{},"imageUrl":"quay.io/a/b:v1","mediaType":"","digest":"","bytes":null}"#;
        assert!(refused(&h, Dir::Img, go_1_5).contains("1.5.0 and older"));
        let huge = format!(r#"{{"schemaVersion":2,"layers":[],"pad":"{}"}}"#, "x".repeat(MAX_MANIFEST_BYTES));
        let hh = hex(huge.as_bytes());
        assert!(refused(&hh, Dir::Img, &holder(3, &hh, url, huge.as_bytes())).contains("manifest is larger"));
        let big = vec![b' '; MAX_FILE_BYTES as usize + 1];
        assert!(refused(&h, Dir::Img, &big).contains("larger"));
        let bad_media = br#"{"schemaVersion":2,"mediaType":"text/html; x","layers":[]}"#;
        let hb = hex(bad_media);
        assert!(refused(&hb, Dir::Img, &holder(3, &hb, url, bad_media)).contains("media type"));
    }

    #[test]
    fn names_are_shown_safely() {
        assert_eq!(shown(OsStr::new("a\x1b[31mb\nc")), "a??31mb?c");
        assert_eq!(shown(OsStr::new(&"x".repeat(100))).chars().count(), 81);
        assert_eq!(digest_of_name(OsStr::new(&"a".repeat(64))).unwrap().hex(), "a".repeat(64));
        assert!(digest_of_name(OsStr::new(&"g".repeat(64))).is_none());
    }
}
