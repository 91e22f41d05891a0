//! Registry host names, repository names, tags and references, validated and
//! canonicalised: `index.docker.io` and `registry-1.docker.io` are `docker.io`,
//! and a one-segment Docker Hub repository `x` is `library/x`, so that every
//! cache key names an image one way only.

use std::fmt;
use std::str::FromStr;

use super::digest::{Digest, DigestError};

/// The longest repository name accepted (distribution's limit).
pub const MAX_REPO_NAME: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid repository name {0:?}: components are lower-case letters, digits and single separators (. _ __ -), joined by /")]
    InvalidRepo(String),
    #[error("repository name is longer than {MAX_REPO_NAME} characters")]
    RepoTooLong,
    #[error("invalid tag {0:?}: 1 to 128 of [A-Za-z0-9_.-], not starting with . or -")]
    InvalidTag(String),
    #[error("invalid registry host {0:?}")]
    InvalidRegistry(String),
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// An upstream registry as clients name it: a lower-case host with an optional port.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryName(String);

pub const DOCKER_HUB: &str = "docker.io";

impl RegistryName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_docker_hub(&self) -> bool {
        self.0 == DOCKER_HUB
    }

    /// The host without a port (brackets of an IPv6 literal removed).
    pub fn host(&self) -> &str {
        let s = self.0.as_str();
        if let Some(rest) = s.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        match s.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => s,
        }
    }

    /// Whether a first path segment names a registry rather than a repository
    /// component: it contains `.` or `:`, or is `localhost` (Docker's rule).
    pub fn looks_like_host(segment: &str) -> bool {
        segment.contains('.') || segment.contains(':') || segment == "localhost"
    }
}

impl FromStr for RegistryName {
    type Err = NameError;

    /// `host[:port]`: a DNS name (labels of letters, digits and inner `-`),
    /// an IPv4 address, or an IPv6 address in brackets; a port of 1 to 65535.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        if lower.len() > 255 || !is_host_port(&lower) {
            return Err(NameError::InvalidRegistry(s.chars().take(300).collect()));
        }
        let canonical = match lower.as_str() {
            "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" | "docker.io" => {
                DOCKER_HUB.to_string()
            }
            _ => lower,
        };
        Ok(RegistryName(canonical))
    }
}

impl fmt::Display for RegistryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RegistryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn is_host_port(s: &str) -> bool {
    let (host_ok, port) = match s.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, after)) => (v6.parse::<std::net::Ipv6Addr>().is_ok(), after),
            None => return false,
        },
        None => match s.split_once(':') {
            Some((h, _)) => (is_dns_name(h), &s[h.len()..]),
            None => (is_dns_name(s), ""),
        },
    };
    host_ok && (port.is_empty() || port.strip_prefix(':').is_some_and(is_port))
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|n| n > 0)
}

/// Dot-separated labels of letters and digits with inner hyphens (an IPv4
/// address is such a name too).
fn is_dns_name(h: &str) -> bool {
    !h.is_empty()
        && h.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

/// A repository name inside a registry, e.g. `library/alpine`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Canonical form for `registry`: Docker Hub's official images live under `library/`.
    pub fn canonical_for(self, registry: &RegistryName) -> RepoName {
        if registry.is_docker_hub() && !self.0.contains('/') {
            RepoName(format!("library/{}", self.0))
        } else {
            self
        }
    }
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_REPO_NAME {
            return Err(NameError::RepoTooLong);
        }
        if s.is_empty() || !s.split('/').all(is_path_component) {
            return Err(NameError::InvalidRepo(s.to_string()));
        }
        Ok(RepoName(s.to_string()))
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`. Case-sensitive.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
        let ok = !b.is_empty() && b.len() <= 128 && word(b[0]) && b.iter().all(|&x| word(x) || x == b'.' || x == b'-');
        if ok {
            Ok(Tag(s.to_string()))
        } else {
            Err(NameError::InvalidTag(s.to_string()))
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What a manifest request names: a tag or a digest.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_aliases_are_canonical() {
        for alias in ["index.docker.io", "registry-1.docker.io", "Docker.IO"] {
            assert_eq!(alias.parse::<RegistryName>().unwrap().as_str(), "docker.io");
        }
        let r: RegistryName = "127.0.0.1:5001".parse().unwrap();
        assert_eq!(r.host(), "127.0.0.1");
        let r: RegistryName = "[::1]:5001".parse().unwrap();
        assert_eq!(r.host(), "::1");
        assert!("bad/host".parse::<RegistryName>().is_err());
    }

    #[test]
    fn registry_names_are_host_and_port() {
        for ok in [
            "quay.io",
            "registry.k8s.io",
            "localhost",
            "localhost:5000",
            "127.0.0.1:5001",
            "[::1]",
            "[::1]:5000",
            "my-registry.corp:443",
            "REGISTRY.CORP",
        ] {
            assert!(ok.parse::<RegistryName>().is_ok(), "{ok}");
        }
        for bad in [
            "", "..", ".", "[", "[::1", "[zz]", "a:b:c", "a:", "a:0", "a:65536", "a:1x", "-a.io", "a-.io", "a..io",
            "a_b.io", "a.io/x", "a b", "a\r\nb", ":5000",
        ] {
            assert!(bad.parse::<RegistryName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn looks_like_host() {
        assert!(RegistryName::looks_like_host("quay.io"));
        assert!(RegistryName::looks_like_host("localhost"));
        assert!(RegistryName::looks_like_host("127.0.0.1:5000"));
        assert!(!RegistryName::looks_like_host("library"));
    }

    #[test]
    fn repo_names() {
        for ok in ["a", "library/alpine", "a/b/c/d/e/f/g/h", "my_repo", "a__b", "a---b", "x.y/z-1"] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok}");
        }
        for bad in ["", "Alpine", "a//b", "/a", "a/", "a___b", "-a", "a-", "a..b", "a b", "a/../b"] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad}");
        }
        let long = "a".repeat(256);
        assert_eq!(long.parse::<RepoName>(), Err(NameError::RepoTooLong));
    }

    #[test]
    fn docker_hub_library_rule() {
        let hub: RegistryName = "docker.io".parse().unwrap();
        let quay: RegistryName = "quay.io".parse().unwrap();
        let r: RepoName = "alpine".parse().unwrap();
        assert_eq!(r.clone().canonical_for(&hub).as_str(), "library/alpine");
        assert_eq!(r.canonical_for(&quay).as_str(), "alpine");
        let r: RepoName = "bitnami/redis".parse().unwrap();
        assert_eq!(r.canonical_for(&hub).as_str(), "bitnami/redis");
    }

    #[test]
    fn tags_are_case_sensitive_and_validated() {
        assert_eq!("V1.0-RC".parse::<Tag>().unwrap().as_str(), "V1.0-RC");
        assert!("_x".parse::<Tag>().is_ok());
        for bad in ["", ".x", "-x", "a/b", &"a".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
    }

    /// Every name becomes a path component (or, for repositories, `/`-joined
    /// components) under the image path: none may climb out of it.
    #[test]
    fn no_name_can_traverse_a_path() {
        let hostile = [
            "..", ".", "../x", "x/..", "x/../y", "%2e%2e", "%2E%2e", "..%2fx", "x%2F..", "..\\x", "x\\..", "/x", "x/",
            "\0", "x\0", "x\0/..", "~", "~root", "x//y", "x/./y", "_tags", "x/_tags", "x y", "x\ty", "x\ny",
        ];
        for s in hostile {
            assert!(s.parse::<RepoName>().is_err(), "repo {s:?}");
            assert!(s.parse::<Tag>().is_err() || !s.contains(['.', '/', '\\', '%', '\0', '~', ' ']), "tag {s:?}");
            assert!(s.parse::<RegistryName>().is_err() || s == "~", "registry {s:?}");
            assert!(s.parse::<Digest>().is_err(), "digest {s:?}");
        }
        for t in ["..", ".", "../x", "..%2f", "a/b", "a\\b", "/a", "\0", "a\0", "%2e%2e", ".hidden", "-x", "a b", "a:b"]
        {
            assert!(t.parse::<Tag>().is_err(), "tag {t:?}");
        }
        // A tag may contain dots, but never start with one: `a..` is a plain file name.
        assert!("a..".parse::<Tag>().is_ok());
        for r in ["..", ".", "a..b", "..:5000", "a/..", "a\\b", "a%2fb", "a\0b", "\0", "[::1]/..", "[::1]%2f", " .. "] {
            assert!(r.parse::<RegistryName>().is_err(), "registry {r:?}");
        }
        for r in hostile.iter().chain(&["a".repeat(256).as_str()]) {
            assert!(!r
                .parse::<RegistryName>()
                .is_ok_and(|n| n.as_str().contains(['/', '\\', '\0']) || n.as_str().starts_with('.')));
        }
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        for d in [
            format!("sha256:../{}", &hex[3..]),
            format!("sha256:{}/..", &hex[..61]),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha256:{hex}\0"),
            format!("../sha256:{hex}"),
            format!("..:{hex}"),
            format!("sha256/..:{hex}"),
        ] {
            assert!(d.parse::<Digest>().is_err(), "digest {d:?}");
        }
        assert_eq!("a".repeat(256).parse::<RepoName>(), Err(NameError::RepoTooLong));
        assert!("a".repeat(129).parse::<Tag>().is_err());
    }

    #[test]
    fn references() {
        assert!(matches!("latest".parse::<Reference>(), Ok(Reference::Tag(_))));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(d.parse::<Reference>(), Ok(Reference::Digest(_))));
        assert!(matches!(
            "md5:d41d8cd98f00b204e9800998ecf8427e".parse::<Reference>(),
            Err(NameError::Digest(DigestError::UnsupportedAlgorithm(_)))
        ));
    }
}
