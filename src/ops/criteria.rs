//! The values `list` and `prune` take on the command line (and `pruneConfig`
//! in the file), parsed into types at the edge: comma-separated regular
//! expressions matched against image references, durations (`30m`, `12h`,
//! `7d`), sizes (`1048576`, `500MiB`, `20GB`) and the Go ociregistry's date
//! format (`2025-02-28T12:59:59`, local time), which is also how times print.

use regex::Regex;

use crate::store::catalog::Image;

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

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether any pattern matches any of the image's references.
    pub fn matches(&self, image: &Image) -> bool {
        let refs = image.references();
        self.0.iter().any(|re| refs.iter().any(|r| re.is_match(r)))
    }
}

/// `30s`, `30m`, `12h`, `7d`, `2w` (or plain seconds) as seconds, and sums
/// of them as Go writes durations: `1h30m`, `2h45m10s`, `1d12h`.
pub use crate::config::duration::parse_secs as parse_duration;

/// Bytes, or a number with a unit: `k`/`KB`, `M`/`MB`, `G`/`GB`, `T`/`TB`
/// (powers of 1000) and `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a size (bytes, or a number with KB, MB, GB, TB, KiB, MiB, GiB or TiB)");
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n.parse().map_err(|_| bad())?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = n * scale;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// The Go ociregistry's date format, `2025-02-28T12:59:59`, in local time
/// (as Go reads it); with a trailing `Z`, in UTC. Unix seconds.
pub fn parse_date(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a date like 2025-02-28T12:59:59 (local time; a trailing Z means UTC)");
    let (t, utc) = match text.strip_suffix('Z') {
        Some(t) => (t, true),
        None => (text, false),
    };
    let b = t.as_bytes();
    if b.len() != 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| t[r].parse::<i32>().map_err(|_| bad());
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || min > 59
        || sec > 59
    {
        return Err(bad());
    }
    // SAFETY: a zeroed tm is valid; timegm/mktime read and normalise it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    tm.tm_isdst = -1;
    // SAFETY: as above, on a tm we own.
    let secs = unsafe {
        if utc {
            libc::timegm(&mut tm)
        } else {
            libc::mktime(&mut tm)
        }
    };
    if secs < 0 || tm.tm_mday != day {
        return Err(bad());
    }
    Ok(secs as u64)
}

/// Unix seconds as `2025-02-28T12:59:59` in local time (the Go format).
pub fn format_time(secs: u64) -> String {
    let t = secs as libc::time_t;
    // SAFETY: localtime_r fills a tm we own from a valid time_t.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return "-".to_string();
    }
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_sizes_and_dates() {
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("12h"), Ok(43_200));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("2h45m10s"), Ok(9910));
        assert_eq!(parse_duration(" 15d "), Ok(15 * 86_400));
        assert_eq!(parse_duration("1d12h"), Ok(129_600));
        for bad in ["", "d", "7y", "-1d", "1.5h", "99999999999999999999d", "30m1h", "1h1h", "1h 30m", "h30m", "1h30"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("500MiB"), Ok(500 * 1024 * 1024));
        assert_eq!(parse_size("20GB"), Ok(20_000_000_000));
        assert_eq!(parse_size("1.5 kB"), Ok(1500));
        for bad in ["", "MB", "12 parsecs", "-3MB", "1e999GB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_date("1970-01-02T00:00:00Z"), Ok(86_400));
        assert_eq!(parse_date("2025-02-28T12:59:59Z"), Ok(1_740_747_599));
        for bad in ["2025-02-30T00:00:00Z", "2025-02-28 12:59:59", "2025-2-28T12:59:59", "2025-13-01T00:00:00"] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
        let local = parse_date("2025-02-28T12:59:59").unwrap();
        assert_eq!(format_time(local), "2025-02-28T12:59:59", "prints what --date reads");
    }
}
