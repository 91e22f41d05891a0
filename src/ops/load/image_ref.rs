//! An image named in full, as an image list or a tarball names it:
//! `registry/repository[:tag][@digest]`, parsed once into checked parts with
//! the cache's canonical names (`docker.io/x` is `docker.io/library/x`).
//! Lists must name the registry (nothing is inferred, as in the Go
//! ociregistry); names from a `docker save` tarball's `RepoTags` follow
//! Docker's rule instead (`x:tag` is `docker.io/library/x:tag`).

use std::fmt;

use crate::fetch::Source;
use crate::oci::{Digest, Reference, RegistryName, RepoName, Tag};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: RegistryName,
    pub repo: RepoName,
    /// The tag named, if any (`latest` when neither a tag nor a digest is).
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// A reference that names its registry: `quay.io/a/b:v1`, `127.0.0.1:5000/x@sha256:…`.
    pub fn parse(s: &str) -> Result<ImageRef, String> {
        let s = s.trim();
        let (host, rest) = s.split_once('/').ok_or_else(|| not_qualified(s))?;
        if !RegistryName::looks_like_host(host) {
            return Err(not_qualified(s));
        }
        let registry: RegistryName = host.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let (name, digest) = match rest.split_once('@') {
            Some((name, d)) => (name, Some(d.parse::<Digest>().map_err(|e| format!("{s:?}: {e}"))?)),
            None => (rest, None),
        };
        // A tag is after the last `:` that follows the last `/`.
        let last_segment = name.rsplit('/').next().unwrap_or(name);
        let (repo, tag) = match last_segment.rsplit_once(':') {
            Some((_, tag)) => (&name[..name.len() - tag.len() - 1], Some(tag)),
            None => (name, None),
        };
        let repo = repo.parse::<RepoName>().map_err(|e| format!("{s:?}: {e}"))?.canonical_for(&registry);
        let tag = tag.map(|t| t.parse::<Tag>().map_err(|e| format!("{s:?}: {e}"))).transpose()?;
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".parse().expect("a valid tag")),
            _ => tag,
        };
        Ok(ImageRef { registry, repo, tag, digest })
    }

    /// A name from a `docker save` tarball: Docker's rule fills in `docker.io`.
    pub fn parse_docker(s: &str) -> Result<ImageRef, String> {
        let s = s.trim();
        let first = s.split('/').next().unwrap_or_default();
        if s.contains('/') && RegistryName::looks_like_host(first) {
            ImageRef::parse(s)
        } else {
            ImageRef::parse(&format!("docker.io/{s}"))
        }
    }

    pub fn source(&self) -> Source {
        Source { registry: self.registry.clone(), repo: self.repo.clone() }
    }

    /// What to ask the upstream for: the digest when one is named, else the tag.
    pub fn reference(&self) -> Reference {
        match (&self.digest, &self.tag) {
            (Some(d), _) => Reference::Digest(d.clone()),
            (None, Some(t)) => Reference::Tag(t.clone()),
            (None, None) => unreachable!("parse always sets a tag or a digest"),
        }
    }
}

fn not_qualified(s: &str) -> String {
    format!("{s:?} is not a fully qualified image reference: name its registry, e.g. docker.io/library/alpine:3.20")
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_references_parse_and_are_canonical() {
        let r = ImageRef::parse("docker.io/nginx").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/nginx:latest");
        let r = ImageRef::parse("127.0.0.1:5000/a/b:v1.2").unwrap();
        assert_eq!((r.registry.as_str(), r.repo.as_str()), ("127.0.0.1:5000", "a/b"));
        assert_eq!(r.reference().to_string(), "v1.2");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("quay.io/x/y:t@{d}")).unwrap();
        assert_eq!(r.reference().to_string(), d);
        assert_eq!(r.tag.unwrap().as_str(), "t");
        let r = ImageRef::parse(&format!("index.docker.io/library/alpine@{d}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/alpine@{d}"));
    }

    #[test]
    fn bad_references_are_refused_with_a_reason() {
        for bad in ["alpine:3", "library/alpine", "quay.io/", "quay.io/A/b", "quay.io/a:-x", "quay.io/a@sha256:12", ""]
        {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
        assert!(ImageRef::parse("alpine").unwrap_err().contains("fully qualified"));
    }

    #[test]
    fn docker_names_get_docker_hub() {
        assert_eq!(ImageRef::parse_docker("alpine:3.20").unwrap().to_string(), "docker.io/library/alpine:3.20");
        assert_eq!(ImageRef::parse_docker("me/app").unwrap().to_string(), "docker.io/me/app:latest");
        assert_eq!(ImageRef::parse_docker("localhost:5000/app:1").unwrap().to_string(), "localhost:5000/app:1");
    }
}
