//! `X-Registry`: the Go ociregistry's header naming the upstream. It is parsed
//! once, as the request head is read, into an [`XRegistry`]: absent, one
//! canonical [`RegistryName`], or the reason it names none. Routing takes the
//! name from here (it never re-reads the raw value), and the serving thread's
//! kept answers use it as part of their key, so two upstreams named this way
//! never share an answer.

use std::fmt;

use crate::oci::RegistryName;

/// The longest value taken for a name: a registry name's 255 bytes.
pub const MAX_LEN: usize = 255;
/// Characters of a refused value kept for its error message.
const SHOWN: usize = 64;

/// What a request's `X-Registry` lines name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum XRegistry {
    /// No `X-Registry` line.
    #[default]
    Absent,
    /// Exactly one line, holding one `host[:port]`.
    Named(RegistryName),
    /// A line that names no upstream; the request is refused (400).
    Invalid(Invalid),
}

/// Why an `X-Registry` names no upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// More than one line came (Go ignores the header then; we refuse).
    Repeated,
    /// Longer than [`MAX_LEN`] bytes.
    TooLong,
    /// Not one `host[:port]` (a scheme, path, userinfo, query, bad port, ...);
    /// holds at most the first [`SHOWN`] characters of the value.
    NotHostPort(String),
}

impl XRegistry {
    /// Takes one `X-Registry` line's raw value, after those already taken for
    /// this request.
    pub fn add_line(&mut self, raw: &[u8]) {
        *self = match self {
            XRegistry::Absent => Self::parse(raw),
            _ => XRegistry::Invalid(Invalid::Repeated),
        };
    }

    fn parse(raw: &[u8]) -> XRegistry {
        let value = String::from_utf8_lossy(raw);
        let value = value.trim();
        if value.len() > MAX_LEN {
            return XRegistry::Invalid(Invalid::TooLong);
        }
        match value.parse::<RegistryName>() {
            Ok(name) => XRegistry::Named(name),
            Err(_) => XRegistry::Invalid(Invalid::NotHostPort(value.chars().take(SHOWN).collect())),
        }
    }

    /// The upstream named, when one is.
    pub fn named(&self) -> Option<&RegistryName> {
        match self {
            XRegistry::Named(name) => Some(name),
            _ => None,
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Repeated => f.write_str("sent more than once"),
            Invalid::TooLong => write!(f, "longer than {MAX_LEN} bytes"),
            Invalid::NotHostPort(value) => write!(f, "{value:?} is not a registry host[:port]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(values: &[&str]) -> XRegistry {
        let mut x = XRegistry::Absent;
        values.iter().for_each(|v| x.add_line(v.as_bytes()));
        x
    }

    #[test]
    fn one_line_naming_one_host_port_is_a_canonical_name() {
        let name = |v: &str| lines(&[v]).named().map(|n| n.as_str().to_string());
        assert_eq!(lines(&[]), XRegistry::Absent);
        assert_eq!(name("  GHCR.io ").as_deref(), Some("ghcr.io"));
        assert_eq!(name("index.docker.io").as_deref(), Some("docker.io"));
        assert_eq!(name("[::1]:5000").as_deref(), Some("[::1]:5000"));
        for bad in ["quay.io/x", "u:p@quay.io", "https://quay.io", "quay.io:0", "quay.io:99999", "", "a..b", "a b"] {
            assert!(matches!(lines(&[bad]), XRegistry::Invalid(Invalid::NotHostPort(_))), "{bad:?}");
        }
        assert_eq!(lines(&["quay.io", "quay.io"]), XRegistry::Invalid(Invalid::Repeated));
        assert_eq!(lines(&["bad value", "quay.io", "quay.io"]), XRegistry::Invalid(Invalid::Repeated));
        assert_eq!(lines(&[&"a".repeat(256)]), XRegistry::Invalid(Invalid::TooLong));
        let XRegistry::Invalid(shown) = lines(&[&format!("{}/x", "a".repeat(200))]) else { panic!() };
        assert!(shown.to_string().len() < 100, "a refused value is shown cut: {shown}");
        let invalid_utf8 = {
            let mut x = XRegistry::Absent;
            x.add_line(b"quay\xff.io");
            x
        };
        assert!(matches!(invalid_utf8, XRegistry::Invalid(Invalid::NotHostPort(_))));
    }
}
