//! Durations as the configuration file and the command line write them: a
//! number and a unit (`ms`, `s`, `m`, `h`, and our `d` and `w`), or sums of
//! them as Go writes durations, largest unit first and each once: `1h30m`,
//! `2h45m10s`, `1d12h`. Shared by `tagPolicy`, `circuitBreaker` and the prune
//! criteria (which also read a bare number as seconds).

use std::time::Duration;

/// Digits one term may have: more is a typo, and keeps the sum far from overflow checks' edge.
const MAX_DIGITS: usize = 12;

/// Parses a duration; the error names the text and shows the forms.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration such as 500ms, 30s, 5m, 12h, 7d or 1h30m");
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let (mut rest, mut total_ms, mut last_scale) = (t, 0u64, u64::MAX);
    while !rest.is_empty() {
        let split = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (digits, tail) = rest.split_at(split);
        if digits.is_empty() || digits.len() > MAX_DIGITS {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let scale_ms: u64 = match &tail[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return Err(bad()),
        };
        // Largest unit first, each once (as Go prints them): `30m1h` is a typo, not 90 minutes.
        if scale_ms >= last_scale {
            return Err(bad());
        }
        last_scale = scale_ms;
        total_ms = n.checked_mul(scale_ms).and_then(|v| total_ms.checked_add(v)).ok_or_else(bad)?;
        rest = &tail[unit_len..];
    }
    Ok(Duration::from_millis(total_ms))
}

/// A duration in whole seconds, a bare number being seconds (prune's criteria and `pruneConfig`).
pub fn parse_secs(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a duration (a number and s, m, h, d or w: 30m, 12h, 7d, 1h30m)");
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| bad());
    }
    match parse(t) {
        Ok(d) if d.subsec_nanos() == 0 => Ok(d.as_secs()),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_units_and_go_compound_durations() {
        let secs = |s: u64| Ok(Duration::from_secs(s));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), secs(30));
        assert_eq!(parse(" 5m "), secs(300));
        assert_eq!(parse("12h"), secs(43_200));
        assert_eq!(parse("7d"), secs(604_800));
        assert_eq!(parse("2w"), secs(1_209_600));
        assert_eq!(parse("1h30m"), secs(5400));
        assert_eq!(parse("2h45m10s"), secs(9910));
        assert_eq!(parse("1d12h"), secs(129_600));
        assert_eq!(parse("1m500ms"), Ok(Duration::from_millis(60_500)));
        for bad in ["", "5", "s", "1.5s", "-1s", "5 s", "5sec", "1y", "1s2", "30m1h", "1h1h", "1h 30m", "h30m", "1h30"]
        {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse("9999999999999d").is_err(), "too many digits");
        assert!(parse("999999999999w").is_err(), "overflows");
        assert_eq!((parse_secs("90"), parse_secs("1h30m")), (Ok(90), Ok(5400)), "bare seconds too");
        assert!(parse_secs("1500ms").is_err(), "whole seconds only");
    }

    #[test]
    fn whole_seconds_as_list_and_prune_take_them() {
        assert_eq!(parse_secs("30m"), Ok(1800));
        assert_eq!(parse_secs("12h"), Ok(43_200));
        assert_eq!(parse_secs("7d"), Ok(604_800));
        assert_eq!(parse_secs("90"), Ok(90));
        assert_eq!(parse_secs("90s"), Ok(90));
        assert_eq!(parse_secs("1h30m"), Ok(5400));
        assert_eq!(parse_secs("2h45m10s"), Ok(9910));
        assert_eq!(parse_secs(" 15d "), Ok(15 * 86_400));
        assert_eq!(parse_secs("1d12h"), Ok(129_600));
        for bad in ["", "d", "7y", "-1d", "1.5h", "99999999999999999999d", "30m1h", "1h1h", "1h 30m", "h30m", "1h30"] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
    }
}
