//! Lists of regular expressions that select images by reference: `pinned`,
//! `pruneConfig.expr`, `listConfig.expr` in the file, `--pattern` on the
//! command line. Each is compiled once, at the edge, with bounds on how many
//! and how large, so a list cannot cost unbounded memory or time.

use regex::Regex;

/// Patterns a pattern list may hold at most, and bytes of one pattern.
const MAX_PATTERNS: usize = 256;
const MAX_PATTERN_LEN: usize = 1024;

/// Comma-separated regular expressions; an image matches when any of them
/// matches (unanchored, as in Go) any of its references.
#[derive(Debug, Clone)]
pub struct Patterns(Vec<Regex>);

impl Patterns {
    pub fn parse(list: &str) -> Result<Patterns, String> {
        Patterns::from_entries(list.split(',').filter(|p| !p.is_empty()))
    }

    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Patterns, String> {
        let mut out = Vec::new();
        for p in entries {
            if out.len() == MAX_PATTERNS {
                return Err(format!("more than {MAX_PATTERNS} patterns"));
            }
            if p.len() > MAX_PATTERN_LEN {
                return Err(format!("pattern longer than {MAX_PATTERN_LEN} bytes"));
            }
            let re = regex::RegexBuilder::new(p)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("pattern {p:?} is not a regular expression: {e}"))?;
            out.push(re);
        }
        Ok(Patterns(out))
    }

    /// The patterns as a pattern list ([`Patterns::parse`] reads it back).
    pub fn source(&self) -> String {
        self.0.iter().map(Regex::as_str).collect::<Vec<_>>().join(",")
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether any pattern matches any of an image's references.
    pub fn matches_any(&self, references: &[String]) -> bool {
        self.0.iter().any(|re| references.iter().any(|r| re.is_match(r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_any_reference_unanchored_and_are_bounded() {
        let p = Patterns::parse("nginx,,:v1$").unwrap();
        assert!(p.matches_any(&["docker.io/library/nginx:latest".into()]));
        assert!(p.matches_any(&["quay.io/a:x".into(), "quay.io/b:v1".into()]));
        assert!(!p.matches_any(&["quay.io/a:v10".into()]));
        assert!(Patterns::parse("").unwrap().is_empty());
        assert!(Patterns::parse("(").unwrap_err().contains("not a regular expression"));
        assert!(Patterns::from_entries(std::iter::repeat_n("a", 257)).is_err());
        assert!(Patterns::parse(&"a".repeat(1025)).is_err());
    }
}
