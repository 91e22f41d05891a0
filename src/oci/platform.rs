//! A platform as OCI image indexes write it: an OS, an architecture and an
//! optional variant, in Go's (`GOOS`/`GOARCH`) names. [`Platform`] is the one
//! wanted (`--os`, `--arch` or the file's `os`/`arch`, defaulting to this
//! host's), checked to be short lower-case words; [`EntryPlatform`] is an index
//! entry's, as written upstream.

use std::fmt;

use serde::Deserialize;

/// An OS, architecture and optional variant, checked to be short lower-case words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

/// The `platform` of an index entry, as written upstream.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EntryPlatform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// `os` and `arch[/variant]`, each defaulting to this host's.
    pub fn parse(os: Option<&str>, arch: Option<&str>) -> Result<Platform, String> {
        let os = os.map_or_else(|| std::env::consts::OS.to_string(), str::to_string);
        let arch = arch.map_or_else(|| go_arch(std::env::consts::ARCH).to_string(), str::to_string);
        let (arch, variant) = match arch.split_once('/') {
            Some((a, v)) => (a.to_string(), Some(v.to_string())),
            None => (arch, None),
        };
        for (what, value) in [("os", Some(&os)), ("arch", Some(&arch)), ("arch variant", variant.as_ref())] {
            if let Some(v) = value {
                let ok = (1..=32).contains(&v.len())
                    && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !ok {
                    return Err(format!(
                        "--{}: {v:?} is not a platform name (lower-case letters, digits, _)",
                        what.split(' ').next().unwrap_or(what)
                    ));
                }
            }
        }
        Ok(Platform { os, arch, variant })
    }

    /// Whether an index entry is for this platform. A wanted variant must
    /// match, except `arm64/v8`, which an entry without a variant also is.
    pub fn matches(&self, entry: &EntryPlatform) -> bool {
        if entry.os != self.os || entry.architecture != self.arch {
            return false;
        }
        match (&self.variant, &entry.variant) {
            (None, _) => true,
            (Some(want), Some(have)) => want == have,
            (Some(want), None) => self.arch == "arm64" && want == "v8",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Rust's name for a CPU architecture in Go's (`GOARCH`) terms.
fn go_arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(os: &str, arch: &str, variant: Option<&str>) -> EntryPlatform {
        EntryPlatform { os: os.into(), architecture: arch.into(), variant: variant.map(Into::into) }
    }

    #[test]
    fn platforms_match_like_go() {
        let p = Platform::parse(Some("linux"), Some("arm64/v8")).unwrap();
        assert!(p.matches(&entry("linux", "arm64", Some("v8"))));
        assert!(p.matches(&entry("linux", "arm64", None)));
        assert!(!p.matches(&entry("linux", "amd64", None)));
        let p = Platform::parse(Some("linux"), Some("arm/v7")).unwrap();
        assert!(p.matches(&entry("linux", "arm", Some("v7"))));
        assert!(!p.matches(&entry("linux", "arm", Some("v6"))));
        assert!(!p.matches(&entry("linux", "arm", None)));
        let p = Platform::parse(Some("linux"), Some("arm")).unwrap();
        assert!(p.matches(&entry("linux", "arm", Some("v6"))));
        assert!(!p.matches(&entry("unknown", "unknown", None)));
    }

    #[test]
    fn defaults_are_this_host_in_go_names_and_bad_names_are_refused() {
        let p = Platform::parse(None, None).unwrap();
        assert_eq!(p.os, std::env::consts::OS);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(p.arch, "amd64");
        }
        for bad in ["AMD64", "", "amd64/", "a b", "../x"] {
            assert!(Platform::parse(None, Some(bad)).is_err(), "{bad}");
        }
    }
}
