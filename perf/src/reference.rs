//! Image references as the load generator takes them: `NAME[:TAG][@DIGEST]`.
//!
//! `NAME` is the repository path sent to the registry, exactly as given. Its first segment may be an
//! upstream host (`127.0.0.1:5000/test/app`, `quay.io/calico/node`): the path style of CRI-O, podman and
//! skopeo mirrors. The tag is what follows the last `:` after the last `/`, so a port in the first segment is
//! never mistaken for a tag. No tag and no digest means `latest`.

use std::fmt;

/// A parsed `NAME[:TAG][@DIGEST]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// The repository path, e.g. `127.0.0.1:5000/test/app`.
    pub name: String,
    /// The tag, if one was given (or `latest` when neither tag nor digest was).
    pub tag: Option<String>,
    /// A pinned manifest digest (`sha256:<hex>`); when present the tag is not resolved.
    pub digest: Option<String>,
}

impl ImageRef {
    /// The reference to resolve: the digest if pinned, otherwise the tag.
    pub fn reference(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d,
            (None, Some(t)) => t,
            (None, None) => "latest",
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Parses `NAME[:TAG][@DIGEST]`, with a clear message for what is wrong.
pub fn parse(input: &str) -> Result<ImageRef, String> {
    let input = input.trim();
    if input.is_empty() {
        return Err("empty image reference".into());
    }
    let (rest, digest) = match input.split_once('@') {
        Some((r, d)) => {
            check_digest(d).map_err(|e| format!("image {input:?}: {e}"))?;
            (r, Some(d.to_string()))
        }
        None => (input, None),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        check_tag(t).map_err(|e| format!("image {input:?}: {e}"))?;
    }
    check_name(name).map_err(|e| format!("image {input:?}: {e}"))?;
    let tag = match (tag, &digest) {
        (Some(t), _) => Some(t.to_string()),
        (None, None) => Some("latest".to_string()),
        (None, Some(_)) => None,
    };
    Ok(ImageRef { name: name.to_string(), tag, digest })
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty repository name".into());
    }
    for (i, segment) in name.split('/').enumerate() {
        if segment.is_empty() {
            return Err("empty path segment in repository name".into());
        }
        // The first segment may be a host[:port]; the others follow the distribution grammar.
        let host_like = i == 0 && name.contains('/') && (segment.contains('.') || segment.contains(':'));
        let ok = segment.chars().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, '.' | '_' | '-')
                || (host_like && (c == ':' || c.is_ascii_uppercase()))
        });
        if !ok {
            return Err(format!("invalid character in repository path segment {segment:?}"));
        }
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid tag {tag:?}"))
    }
}

/// Accepts `sha256:<64 hex>` and `sha512:<128 hex>` (lower case), the algorithms the puller can verify.
pub fn check_digest(d: &str) -> Result<(), String> {
    let (alg, hex) = d.split_once(':').ok_or_else(|| format!("digest {d:?} has no algorithm"))?;
    let len = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err(format!("digest {d:?}: unsupported algorithm {alg:?}")),
    };
    if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(format!("digest {d:?}: expected {len} lower-case hex digits"));
    }
    Ok(())
}

/// Percent-encodes a query value the way containerd encodes `ns` (everything but unreserved characters).
pub fn query_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn host_with_port_is_not_a_tag() {
        let r = parse("127.0.0.1:5000/test/app:v1").unwrap();
        assert_eq!(r.name, "127.0.0.1:5000/test/app");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.reference(), "v1");
        let r = parse("localhost:5000/app").unwrap();
        assert_eq!(r.name, "localhost:5000/app");
        assert_eq!(r.reference(), "latest");
    }

    #[test]
    fn plain_names_and_defaults() {
        let r = parse("test/app").unwrap();
        assert_eq!((r.name.as_str(), r.tag.as_deref()), ("test/app", Some("latest")));
        let r = parse("quay.io/calico/node:v3.28.0").unwrap();
        assert_eq!(r.name, "quay.io/calico/node");
        assert_eq!(r.to_string(), "quay.io/calico/node:v3.28.0");
    }

    #[test]
    fn digests() {
        let r = parse(&format!("test/app@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.reference(), D);
        let r = parse(&format!("127.0.0.1:5000/test/app:v1@{D}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.reference(), D, "a pinned digest wins over the tag");
        assert!(parse("test/app@sha256:abc").is_err());
        assert!(parse("test/app@md5:0123").is_err());
    }

    #[test]
    fn rejects_bad_input() {
        for bad in ["", "Test/app", "test//app", "test/app:", "test/app:-x", "/app", "test/APP:v1", "a b"] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn query_encoding_matches_containerd() {
        assert_eq!(query_encode("127.0.0.1:5001"), "127.0.0.1%3A5001");
        assert_eq!(query_encode("docker.io"), "docker.io");
        assert_eq!(query_encode("a/b c"), "a%2Fb%20c");
    }
}
