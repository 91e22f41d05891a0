//! `Range` requests on blobs: one `bytes=` range is honoured (206); several
//! ranges or a header we do not understand get the whole body (200), as RFC 9110
//! allows; a range that starts past the end is unsatisfiable (416).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    Full,
    /// `start..end`, end exclusive.
    Partial {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// Interprets a `Range` header against a body of `size` bytes.
pub fn parse(header: Option<&str>, size: u64) -> RangeSpec {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeSpec::Full;
    };
    if spec.contains(',') {
        return RangeSpec::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeSpec::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let Ok(suffix) = last.parse::<u64>() else {
            return RangeSpec::Full;
        };
        if suffix == 0 || size == 0 {
            return RangeSpec::Unsatisfiable;
        }
        return RangeSpec::Partial { start: size.saturating_sub(suffix), end: size };
    }
    let Ok(start) = first.parse::<u64>() else {
        return RangeSpec::Full;
    };
    let end = if last.is_empty() {
        size
    } else {
        match last.parse::<u64>() {
            Ok(l) if l >= start => l.saturating_add(1).min(size),
            _ => return RangeSpec::Full,
        }
    };
    if start >= size {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Partial { start, end }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse(None, 10), RangeSpec::Full);
        assert_eq!(parse(Some("bytes=0-4"), 10), RangeSpec::Partial { start: 0, end: 5 });
        assert_eq!(parse(Some("bytes=5-"), 10), RangeSpec::Partial { start: 5, end: 10 });
        assert_eq!(parse(Some("bytes=5-100"), 10), RangeSpec::Partial { start: 5, end: 10 });
        assert_eq!(parse(Some("bytes=-3"), 10), RangeSpec::Partial { start: 7, end: 10 });
        assert_eq!(parse(Some("bytes=-30"), 10), RangeSpec::Partial { start: 0, end: 10 });
        assert_eq!(parse(Some("bytes=10-"), 10), RangeSpec::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 10), RangeSpec::Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-1,3-4"), 10), RangeSpec::Full);
        assert_eq!(parse(Some("bytes=4-2"), 10), RangeSpec::Full);
        assert_eq!(parse(Some("items=0-1"), 10), RangeSpec::Full);
        assert_eq!(parse(Some("bytes=x-1"), 10), RangeSpec::Full);
    }
}
