//! The Go ociregistry's date format, `2025-02-28T12:59:59` in local time:
//! how `list`, `prune --date`, the admin lists and the Go image path's
//! records write and read times. A leaf: the operator commands and the admin
//! API both use it.

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
    fn dates_read_and_print_alike() {
        assert_eq!(parse_date("1970-01-02T00:00:00Z"), Ok(86_400));
        assert_eq!(parse_date("2025-02-28T12:59:59Z"), Ok(1_740_747_599));
        for bad in ["2025-02-30T00:00:00Z", "2025-02-28 12:59:59", "2025-2-28T12:59:59", "2025-13-01T00:00:00"] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
        let local = parse_date("2025-02-28T12:59:59").unwrap();
        assert_eq!(format_time(local), "2025-02-28T12:59:59", "prints what --date reads");
    }
}
