//! The parts of OCI/Docker manifests a pull needs, and picking a platform from an index.

use serde::Deserialize;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The manifest `Accept` containerd sends (the four types, then `*/*`).
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json, */*";

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`, e.g. `linux/amd64`, `linux/arm64/v8`.
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(format!("platform {s:?}: expected os/arch or os/arch/variant"));
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    /// Whether an index entry for `entry` serves a node of this platform. An unspecified wanted variant
    /// accepts any; arm64's variant `v8` is the same as none.
    fn accepts(&self, entry: &Platform) -> bool {
        fn norm<'a>(arch: &str, v: Option<&'a str>) -> Option<&'a str> {
            match (arch, v) {
                ("arm64", Some("v8")) => None,
                (_, v) => v,
            }
        }
        self.os == entry.os
            && self.architecture == entry.architecture
            && (self.variant.is_none()
                || norm(&self.architecture, self.variant.as_deref())
                    == norm(&entry.architecture, entry.variant.as_deref()))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// A manifest document: an index/list (`manifests`) or an image manifest (`config` + `layers`).
#[derive(Debug, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Option<Vec<Descriptor>>,
}

pub enum Parsed {
    Index(Vec<Descriptor>),
    Image { config: Descriptor, layers: Vec<Descriptor> },
}

/// Classifies a manifest body by its Content-Type, falling back to its `mediaType` field and shape.
pub fn parse(content_type: &str, body: &[u8]) -> Result<Parsed, String> {
    let m: Manifest = serde_json::from_slice(body).map_err(|e| format!("manifest is not valid JSON: {e}"))?;
    if m.schema_version != 2 {
        return Err(format!("unsupported manifest schemaVersion {}", m.schema_version));
    }
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let kind = if matches!(ct, OCI_INDEX | DOCKER_LIST | OCI_MANIFEST | DOCKER_MANIFEST) {
        ct.to_string()
    } else if let Some(mt) = &m.media_type {
        mt.clone()
    } else if m.manifests.is_some() {
        OCI_INDEX.to_string()
    } else {
        OCI_MANIFEST.to_string()
    };
    match kind.as_str() {
        OCI_INDEX | DOCKER_LIST => Ok(Parsed::Index(m.manifests.ok_or("index without manifests")?)),
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(Parsed::Image {
            config: m.config.ok_or("image manifest without config")?,
            layers: m.layers.unwrap_or_default(),
        }),
        other => Err(format!("unsupported manifest media type {other:?}")),
    }
}

/// The first index entry that is an image manifest for `want` (attestation entries never match: their
/// platform is `unknown/unknown`).
pub fn select_platform<'a>(entries: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    entries.iter().find(|d| {
        (d.media_type.is_empty() || d.media_type == OCI_MANIFEST || d.media_type == DOCKER_MANIFEST)
            && d.platform.as_ref().is_some_and(|p| want.accepts(p))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest: &str, mt: &str, platform: Option<(&str, &str, Option<&str>)>) -> Descriptor {
        Descriptor {
            media_type: mt.into(),
            digest: digest.into(),
            size: 1,
            platform: platform.map(|(os, a, v)| Platform {
                os: os.into(),
                architecture: a.into(),
                variant: v.map(Into::into),
            }),
        }
    }

    #[test]
    fn parses_platforms() {
        assert_eq!(Platform::parse("linux/amd64").unwrap().to_string(), "linux/amd64");
        assert_eq!(Platform::parse("linux/arm64/v8").unwrap().variant.as_deref(), Some("v8"));
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//v7").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
    }

    #[test]
    fn selects_the_platform_from_an_index() {
        let entries = vec![
            entry("arm", OCI_MANIFEST, Some(("linux", "arm", Some("v7")))),
            entry("att", OCI_MANIFEST, Some(("unknown", "unknown", None))),
            entry("arm64", OCI_MANIFEST, Some(("linux", "arm64", Some("v8")))),
            entry("amd", DOCKER_MANIFEST, Some(("linux", "amd64", None))),
            entry("win", OCI_MANIFEST, Some(("windows", "amd64", None))),
        ];
        let pick = |p: &str| select_platform(&entries, &Platform::parse(p).unwrap()).map(|d| d.digest.as_str());
        assert_eq!(pick("linux/amd64"), Some("amd"));
        assert_eq!(pick("windows/amd64"), Some("win"));
        assert_eq!(pick("linux/arm64"), Some("arm64"));
        assert_eq!(pick("linux/arm64/v8"), Some("arm64"));
        assert_eq!(pick("linux/arm/v7"), Some("arm"));
        assert_eq!(pick("linux/arm/v6"), None);
        assert_eq!(pick("linux/s390x"), None);
    }

    #[test]
    fn skips_nested_indexes_and_entries_without_platform() {
        let entries = vec![
            entry("nested", OCI_INDEX, Some(("linux", "amd64", None))),
            entry("noplat", OCI_MANIFEST, None),
            entry("ok", "", Some(("linux", "amd64", None))),
        ];
        let want = Platform::parse("linux/amd64").unwrap();
        assert_eq!(select_platform(&entries, &want).unwrap().digest, "ok");
    }

    #[test]
    fn classifies_manifests() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(matches!(parse("", index), Ok(Parsed::Index(_))));
        let image =
            br#"{"schemaVersion":2,"config":{"digest":"sha256:a","size":2},"layers":[{"digest":"sha256:b","size":3}]}"#;
        match parse(DOCKER_MANIFEST, image) {
            Ok(Parsed::Image { config, layers }) => {
                assert_eq!(config.size, 2);
                assert_eq!(layers.len(), 1);
            }
            _ => panic!("expected an image manifest"),
        }
        assert!(parse("", br#"{"schemaVersion":1}"#).is_err());
        assert!(parse("", b"not json").is_err());
    }
}
