//! Per-upstream policies of the configuration file, each settable globally and
//! per registry: how often a cached tag is re-checked upstream (`tagPolicy`),
//! and the duration value it and `circuitBreaker` ([`super::breaker`]) are
//! written with. Values are parsed into types when the file is loaded; every
//! problem names its key. Durations are a number and a unit (`500ms`, `30s`,
//! `5m`, `12h`, `7d`) or Go's compound form (`1h30m`), as `config::duration`
//! reads them.

use super::duration::parse as parse_duration;
use std::time::Duration;

use serde::Deserialize;

/// A duration as written: text such as `30s`, or a bare number, which is
/// refused with a message asking for a unit (rather than failing the parse).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DurationValue {
    Text(String),
    Number(u64),
}

impl DurationValue {
    pub fn parse(&self) -> Result<Duration, String> {
        match self {
            DurationValue::Text(t) => parse_duration(t),
            DurationValue::Number(n) => Err(format!("{n} has no unit: write {n}s, {n}ms, {n}m, {n}h or {n}d")),
        }
    }
}

/// How often a cached tag is re-checked upstream (`tagPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TagPolicy {
    /// Never: a cached tag is served as it is (the Go ociregistry's behaviour).
    #[default]
    Never,
    /// On every pull.
    Always,
    /// At most this often: a pull after this long since the last check re-checks.
    Every(Duration),
}

impl TagPolicy {
    /// Parses `never`, `always` or a duration; `at` names the key in the error.
    pub fn parse(value: &DurationValue, at: &str) -> Result<TagPolicy, String> {
        let shape = |v: &dyn std::fmt::Display| format!("{at}: `{v}` is not never, always or a duration such as 5m");
        match value {
            DurationValue::Text(t) if t.trim() == "never" => Ok(TagPolicy::Never),
            DurationValue::Text(t) if t.trim() == "always" => Ok(TagPolicy::Always),
            DurationValue::Text(t) => match parse_duration(t) {
                Ok(d) if d.is_zero() => Err(format!("{at}: a zero duration; write always to re-check on every pull")),
                Ok(d) => Ok(TagPolicy::Every(d)),
                Err(_) => Err(shape(&t)),
            },
            DurationValue::Number(n) => Err(shape(n)),
        }
    }

    /// Whether a tag last confirmed at `last_checked` (Unix seconds) is due a re-check at `now`.
    pub fn due(self, last_checked: u64, now: u64) -> bool {
        match self {
            TagPolicy::Never => false,
            TagPolicy::Always => true,
            TagPolicy::Every(d) => now.saturating_sub(last_checked) >= d.as_secs().max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_number_and_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration(" 5m "), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)), "Go's compound form");
        for bad in ["", "5", "s", "1.5s", "-1s", "5 s", "5sec", "9999999999999d", "1s2", "30m1h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tag_policies_parse_and_fall_due() {
        let text = |t: &str| TagPolicy::parse(&DurationValue::Text(t.into()), "tagPolicy");
        assert_eq!(text("never"), Ok(TagPolicy::Never));
        assert_eq!(text("always"), Ok(TagPolicy::Always));
        assert_eq!(text("30s"), Ok(TagPolicy::Every(Duration::from_secs(30))));
        assert_eq!(text("7d"), Ok(TagPolicy::Every(Duration::from_secs(604_800))));
        assert_eq!(text("1h30m"), Ok(TagPolicy::Every(Duration::from_secs(5400))), "as pruneConfig reads it");
        assert_eq!(text("2h45m10s"), Ok(TagPolicy::Every(Duration::from_secs(9910))));
        for bad in ["sometimes", "0s", "5", "Never", ""] {
            assert!(text(bad).unwrap_err().starts_with("tagPolicy:"), "{bad:?}");
        }
        assert!(TagPolicy::parse(&DurationValue::Number(30), "x").is_err());
        assert!(!TagPolicy::Never.due(0, u64::MAX));
        assert!(TagPolicy::Always.due(100, 100));
        let five_min = TagPolicy::Every(Duration::from_secs(300));
        assert!(!five_min.due(1000, 1299));
        assert!(five_min.due(1000, 1300));
        assert!(!five_min.due(2000, 1000), "a clock that went back is not due");
        // Sub-second durations count as one second (times are kept in seconds).
        let short = TagPolicy::Every(Duration::from_millis(10));
        assert!(!short.due(1000, 1000) && short.due(1000, 1001));
    }
}
