//! Manifest media types, the fixed `Accept` sent upstream, client `Accept`
//! negotiation, and the little of a manifest's JSON the cache needs: its
//! descriptors (digest and size of what it references).
//!
//! A media type comes from an upstream (a manifest's `mediaType`, a
//! `Content-Type`) and goes out as a `Content-Type` header, so it is a
//! [`MediaType`]: RFC 6838 syntax, checked when it is parsed, on the network
//! and on disk alike. Nothing else can reach a header through it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::digest::Digest;

/// A media type without parameters, `type/subtype`, each an RFC 6838
/// restricted name: a letter or digit, then up to 126 of letters, digits and
/// `! # $ & - ^ _ . +`. No space, quote, semicolon or control character.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MediaType(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid media type {0:?}: not type/subtype of RFC 6838 restricted names")]
pub struct MediaTypeError(String);

impl MediaType {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// One of this module's constants (known valid).
    pub fn known(s: &'static str) -> MediaType {
        debug_assert!(is_restricted_pair(s), "{s}");
        MediaType(s.to_string())
    }
}

fn is_restricted_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 127
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c))
}

fn is_restricted_pair(s: &str) -> bool {
    matches!(s.split_once('/'), Some((t, sub)) if is_restricted_name(t) && is_restricted_name(sub))
}

impl FromStr for MediaType {
    type Err = MediaTypeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if is_restricted_pair(s) {
            Ok(MediaType(s.to_string()))
        } else {
            Err(MediaTypeError(s.chars().take(200).collect()))
        }
    }
}

impl TryFrom<String> for MediaType {
    type Error = MediaTypeError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if is_restricted_pair(&s) {
            Ok(MediaType(s))
        } else {
            Err(MediaTypeError(s.chars().take(200).collect()))
        }
    }
}

impl From<MediaType> for String {
    fn from(m: MediaType) -> String {
        m.0
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The manifest types this registry caches, in the order they are offered upstream.
pub const MANIFEST_TYPES: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// The `Accept` value sent upstream for every manifest request: fixed, never the
/// client's, so what is cached for a tag does not depend on who asked first.
pub fn upstream_accept(extra_types: &[String]) -> String {
    let mut all: Vec<&str> = MANIFEST_TYPES.to_vec();
    all.extend(extra_types.iter().map(String::as_str));
    all.join(", ")
}

pub fn is_schema1(media_type: &str) -> bool {
    media_type == DOCKER_SCHEMA1 || media_type == DOCKER_SCHEMA1_SIGNED
}

/// Whether a client whose `Accept` header lines are `accept_lines` takes
/// `media_type`. No `Accept` at all, `*/*` or `type/*` accept anything of that kind.
pub fn accepts(accept_lines: &[String], media_type: &str) -> bool {
    let mut saw_any = false;
    for item in accept_lines.iter().flat_map(|l| l.split(',')) {
        let item = item.split(';').next().unwrap_or("").trim();
        if item.is_empty() {
            continue;
        }
        saw_any = true;
        if item == "*/*" || item.eq_ignore_ascii_case(media_type) {
            return true;
        }
        if let Some(major) = item.strip_suffix("/*") {
            if media_type.split('/').next() == Some(major) {
                return true;
            }
        }
    }
    !saw_any
}

/// A reference from a manifest or index to another object.
#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, Deserialize)]
struct ManifestShape {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(default)]
    blobs: Vec<Descriptor>,
}

/// What the cache learns from a manifest body.
#[derive(Debug, Default)]
pub struct ManifestInfo {
    /// The `mediaType` field inside the body, when present.
    pub embedded_media_type: Option<String>,
    pub schema_version: Option<u32>,
    /// Every blob or child manifest it references, with the size it promises.
    pub references: Vec<Descriptor>,
    /// Whether it is an index (its references are manifests, not blobs).
    pub is_index: bool,
}

/// Reads the descriptors out of a manifest or index. A body that is not JSON
/// of the expected shape yields an error message for the caller to report.
pub fn inspect(body: &[u8]) -> Result<ManifestInfo, String> {
    let shape: ManifestShape = serde_json::from_slice(body).map_err(|e| format!("manifest is not valid JSON: {e}"))?;
    let is_index = !shape.manifests.is_empty();
    let mut references = Vec::new();
    references.extend(shape.config);
    references.extend(shape.layers);
    references.extend(shape.manifests);
    references.extend(shape.blobs);
    Ok(ManifestInfo {
        embedded_media_type: shape.media_type,
        schema_version: shape.schema_version,
        references,
        is_index,
    })
}

/// The media type to store a manifest under, decided by its bytes first so
/// that no upstream can make the same digest mean another type to others:
/// the body's own `mediaType` when present (a `Content-Type` naming another
/// manifest type is refused); else the `Content-Type` when it is a manifest or
/// configured artifact type of the body's shape; else the OCI type of that shape.
/// A `mediaType` that is not a valid media type refuses the manifest.
pub fn effective_media_type(
    content_type: Option<&str>,
    info: &ManifestInfo,
    artifact_types: &[String],
) -> Result<MediaType, String> {
    let chosen = choose_media_type(content_type, info, artifact_types)?;
    chosen.parse::<MediaType>().map_err(|e| format!("manifest refused: {e}"))
}

fn choose_media_type(
    content_type: Option<&str>,
    info: &ManifestInfo,
    artifact_types: &[String],
) -> Result<String, String> {
    let header =
        content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase()).filter(|c| !c.is_empty());
    let names_a_manifest =
        |t: &str| MANIFEST_TYPES.contains(&t) || is_schema1(t) || artifact_types.iter().any(|a| a == t);
    if let Some(embedded) = &info.embedded_media_type {
        return match header {
            Some(h) if names_a_manifest(&h) && h != *embedded => {
                Err(format!("upstream sent Content-Type {h} for a manifest whose mediaType is {embedded}"))
            }
            _ => Ok(embedded.clone()),
        };
    }
    let shape_fits =
        |t: &str| if info.is_index { t == OCI_INDEX || t == DOCKER_LIST } else { t != OCI_INDEX && t != DOCKER_LIST };
    match header {
        Some(h) if names_a_manifest(&h) && shape_fits(&h) => Ok(h),
        _ if info.is_index => Ok(OCI_INDEX.to_string()),
        _ => Ok(OCI_MANIFEST.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        let none: Vec<String> = vec![];
        assert!(accepts(&none, OCI_INDEX));
        let skopeo = vec![OCI_MANIFEST.to_string(), format!("{DOCKER_MANIFEST}, {DOCKER_LIST}")];
        assert!(accepts(&skopeo, DOCKER_LIST));
        assert!(!accepts(&skopeo, OCI_INDEX));
        let star = vec![format!("{OCI_MANIFEST}, */*;q=0.8")];
        assert!(accepts(&star, OCI_INDEX));
        let family = vec!["application/*".to_string()];
        assert!(accepts(&family, OCI_INDEX));
        let with_params = vec![format!("{OCI_INDEX}; q=0.5")];
        assert!(accepts(&with_params, OCI_INDEX));
    }

    #[test]
    fn upstream_accept_is_fixed() {
        let a = upstream_accept(&["application/vnd.cncf.helm.config.v1+json".into()]);
        assert!(a.starts_with(OCI_INDEX));
        assert!(a.contains(DOCKER_MANIFEST));
        assert!(a.ends_with("helm.config.v1+json"));
        assert!(!a.contains("v1+prettyjws"));
    }

    #[test]
    fn inspects_descriptors() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"c","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":2},
            "layers":[{"mediaType":"l","digest":"sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9","size":11}]}"#;
        let info = inspect(m).unwrap();
        assert_eq!(info.references.len(), 2);
        assert_eq!(info.references[1].size, 11);
        let none: Vec<String> = vec![];
        assert_eq!(
            effective_media_type(Some("application/json"), &info, &none).as_ref().map(MediaType::as_str),
            Ok(OCI_MANIFEST)
        );
        assert_eq!(
            effective_media_type(Some("x/y; charset=utf-8"), &info, &none).as_ref().map(MediaType::as_str),
            Ok(OCI_MANIFEST)
        );
        assert!(effective_media_type(Some(DOCKER_MANIFEST), &info, &none).is_err(), "contradicts the body");
    }

    #[test]
    fn media_type_without_an_embedded_one_follows_the_shape() {
        let none: Vec<String> = vec![];
        let index = inspect(br#"{"schemaVersion":2,"manifests":[{"digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":1}]}"#).unwrap();
        assert!(index.is_index);
        assert_eq!(effective_media_type(None, &index, &none).as_ref().map(MediaType::as_str), Ok(OCI_INDEX));
        assert_eq!(
            effective_media_type(Some(DOCKER_LIST), &index, &none).as_ref().map(MediaType::as_str),
            Ok(DOCKER_LIST)
        );
        assert_eq!(
            effective_media_type(Some(OCI_MANIFEST), &index, &none).as_ref().map(MediaType::as_str),
            Ok(OCI_INDEX)
        );
        assert_eq!(
            effective_media_type(Some("application/x-evil"), &index, &none).as_ref().map(MediaType::as_str),
            Ok(OCI_INDEX)
        );
        let image = inspect(br#"{"schemaVersion":2,"layers":[]}"#).unwrap();
        let helm = vec!["application/vnd.cncf.helm.chart.v1+json".to_string()];
        assert_eq!(
            effective_media_type(Some(&helm[0]), &image, &helm).as_ref().map(MediaType::as_str),
            Ok(helm[0].as_str())
        );
        assert_eq!(
            effective_media_type(Some(&helm[0]), &image, &none).as_ref().map(MediaType::as_str),
            Ok(OCI_MANIFEST)
        );
        assert!(inspect(b"not json").is_err());
    }

    #[test]
    fn media_types_follow_rfc_6838() {
        for ok in
            [OCI_MANIFEST, DOCKER_LIST, "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "a/b", "x-1/y!#$&^_.+-"]
        {
            assert_eq!(ok.parse::<MediaType>().map(|m| m.to_string()), Ok(ok.to_string()), "{ok}");
        }
        for bad in [
            "",
            "application",
            "application/",
            "/json",
            "a/b/c",
            "application/json; charset=utf-8",
            "application/vnd.oci.image.manifest.v1+json\r\nX-Injected: yes",
            "application/json\n",
            "text/pl ain",
            "text/\"x\"",
            "-a/b",
            "a/\u{7f}",
            "a/b\u{e9}",
        ] {
            assert!(bad.parse::<MediaType>().is_err(), "{bad:?}");
        }
        assert!(format!("a/{}", "b".repeat(127)).parse::<MediaType>().is_ok());
        assert!(format!("a/{}", "b".repeat(128)).parse::<MediaType>().is_err());
        let from_json: Result<MediaType, _> = serde_json::from_str("\"a/b\\r\\nX: y\"");
        assert!(from_json.is_err(), "deserialising checks too");
    }

    #[test]
    fn an_injected_embedded_media_type_refuses_the_manifest() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json\r\nX-Injected: yes","layers":[]}"#;
        let info = inspect(body).unwrap();
        let none: Vec<String> = vec![];
        let err = effective_media_type(Some("application/json"), &info, &none).unwrap_err();
        assert!(err.contains("invalid media type"), "{err}");
    }
}
