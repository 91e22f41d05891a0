//! `pruneConfig`: the Go ociregistry's background pruning, validated into
//! [`BackgroundPrune`]. `type` is `accessed` (not pulled for `duration`),
//! `created` (created `duration` ago) or `pattern` (`expr`, comma-separated
//! regular expressions); it runs every `frequency` (default 5h), removes at
//! most `count` images a run (absent or 0: no limit), and with `dryRun`
//! (Go spells it `dryrun`; both are read) only logs what it would remove.

use std::time::Duration;

use serde::Deserialize;

use super::duration::parse_secs as parse_duration;
use super::patterns::Patterns;
use super::size::parse as parse_size;

/// How often by default (Go's `5h`).
pub const DEFAULT_FREQUENCY: Duration = Duration::from_secs(5 * 3600);

/// `pruneConfig` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PruneConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub expr: Option<String>,
    #[serde(default)]
    pub frequency: Option<String>,
    #[serde(default)]
    pub count: Option<i64>,
    #[serde(default, alias = "dryrun")]
    pub dry_run: Option<bool>,
    /// Ours: the high watermark (a size: `20GiB`); see [`watermarks`].
    #[serde(default)]
    pub max_size: Option<String>,
    /// Ours: the low watermark, a size or a percentage of `maxSize` (default 90%).
    #[serde(default)]
    pub low_watermark: Option<String>,
}

/// What selects images for a background prune.
#[derive(Debug, Clone)]
pub enum Select {
    /// Not pulled for this many seconds (never pulled: created that long ago).
    Accessed(u64),
    /// Created this many seconds ago or more.
    Created(u64),
    Pattern(Patterns),
}

#[derive(Debug, Clone)]
pub struct BackgroundPrune {
    pub select: Select,
    pub every: Duration,
    pub count: Option<usize>,
    pub dry_run: bool,
}

/// The background prune `pruneConfig` asks for, if enabled; problems are
/// added to `problems`, each naming its key.
pub fn validate(config: Option<&PruneConfig>, problems: &mut Vec<String>) -> Option<BackgroundPrune> {
    let c = config.filter(|c| c.enabled)?;
    let duration = |problems: &mut Vec<String>| match c.duration.as_deref().map(parse_duration) {
        Some(Ok(secs)) => Some(secs),
        Some(Err(e)) => {
            problems.push(format!("pruneConfig.duration: {e}"));
            None
        }
        None => {
            problems.push("pruneConfig.duration: required for this type (e.g. 15d)".into());
            None
        }
    };
    let select = match c.kind.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("accessed") => duration(problems).map(Select::Accessed),
        Some("created") => duration(problems).map(Select::Created),
        Some("pattern") => match c.expr.as_deref().map(Patterns::parse) {
            Some(Ok(p)) if !p.is_empty() => Some(Select::Pattern(p)),
            Some(Err(e)) => {
                problems.push(format!("pruneConfig.expr: {e}"));
                None
            }
            _ => {
                problems.push("pruneConfig.expr: required for type pattern".into());
                None
            }
        },
        other => {
            problems.push(format!("pruneConfig.type: {other:?} is not one of accessed, created or pattern"));
            None
        }
    };
    let every = match c.frequency.as_deref().map(parse_duration) {
        None => Some(DEFAULT_FREQUENCY),
        Some(Ok(secs)) if secs > 0 => Some(Duration::from_secs(secs)),
        Some(Ok(_)) => {
            problems.push("pruneConfig.frequency: must be more than 0".into());
            None
        }
        Some(Err(e)) => {
            problems.push(format!("pruneConfig.frequency: {e}"));
            None
        }
    };
    let count = match c.count {
        None | Some(0) | Some(-1) => None,
        Some(n) if n > 0 => Some(n as usize),
        Some(n) => {
            problems.push(format!("pruneConfig.count: {n} is negative"));
            None
        }
    };
    Some(BackgroundPrune { select: select?, every: every?, count, dry_run: c.dry_run.unwrap_or(false) })
}

/// `pruneConfig.maxSize` and `lowWatermark` (ours): when the cache grows
/// over `high` bytes, the least recently pulled unpinned images are evicted
/// until it holds at most `low`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub high: u64,
    pub low: u64,
}

/// The default low watermark, in percent of `maxSize`.
pub const DEFAULT_LOW_PERCENT: u64 = 90;

/// The size-based eviction `pruneConfig.maxSize` asks for (whether or not
/// `enabled` is set: that is the scheduled prune's switch).
pub fn watermarks(config: Option<&PruneConfig>, problems: &mut Vec<String>) -> Option<Watermarks> {
    let c = config?;
    let high = match parse_size(c.max_size.as_deref()?) {
        Ok(0) => {
            problems.push("pruneConfig.maxSize: must be more than 0".into());
            return None;
        }
        Ok(n) => n,
        Err(e) => {
            problems.push(format!("pruneConfig.maxSize: {e}"));
            return None;
        }
    };
    let low = match c.low_watermark.as_deref().map(str::trim) {
        None => high / 100 * DEFAULT_LOW_PERCENT + high % 100 * DEFAULT_LOW_PERCENT / 100,
        Some(p) if p.ends_with('%') => match p[..p.len() - 1].trim().parse::<u64>() {
            Ok(n) if (1..=100).contains(&n) => high / 100 * n + high % 100 * n / 100,
            _ => {
                problems.push(format!("pruneConfig.lowWatermark: {p:?} is not a percentage from 1% to 100%"));
                return None;
            }
        },
        Some(s) => match parse_size(s) {
            Ok(n) if n <= high => n,
            Ok(_) => {
                problems.push("pruneConfig.lowWatermark: larger than maxSize".into());
                return None;
            }
            Err(e) => {
                problems.push(format!("pruneConfig.lowWatermark: {e}"));
                return None;
            }
        },
    };
    Some(Watermarks { high, low })
}

#[cfg(test)]
mod watermark_tests {
    use super::*;

    fn marks(max: &str, low: Option<&str>) -> (Option<Watermarks>, Vec<String>) {
        let c = PruneConfig {
            max_size: Some(max.into()),
            low_watermark: low.map(str::to_string),
            ..PruneConfig::default()
        };
        let mut problems = Vec::new();
        (watermarks(Some(&c), &mut problems), problems)
    }

    #[test]
    fn low_watermark_is_a_size_or_a_percentage_defaulting_to_90() {
        assert_eq!(marks("1000", None).0, Some(Watermarks { high: 1000, low: 900 }));
        assert_eq!(marks("1000", Some("80%")).0, Some(Watermarks { high: 1000, low: 800 }));
        assert_eq!(marks("1KiB", Some("500")).0, Some(Watermarks { high: 1024, low: 500 }));
        for (max, low) in [("0", None), ("x", None), ("1000", Some("0%")), ("1000", Some("2000")), ("1000", Some("y"))]
        {
            let (m, problems) = marks(max, low);
            assert!(m.is_none() && problems.iter().all(|p| p.starts_with("pruneConfig.")), "{max} {low:?}");
        }
        assert!(watermarks(Some(&PruneConfig::default()), &mut Vec::new()).is_none(), "no maxSize: no eviction");
    }
}

#[cfg(test)]
mod background_tests {
    use super::*;

    #[test]
    fn duration_and_frequency_take_go_compound_durations_and_our_days() {
        let config = |duration: &str, frequency: &str| PruneConfig {
            enabled: true,
            kind: Some("accessed".into()),
            duration: Some(duration.into()),
            frequency: Some(frequency.into()),
            ..PruneConfig::default()
        };
        let mut problems = Vec::new();
        let b = validate(Some(&config("2h45m10s", "1h30m")), &mut problems).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert!(matches!(b.select, Select::Accessed(9910)));
        assert_eq!(b.every, Duration::from_secs(5400));
        let b = validate(Some(&config("15d", "90s")), &mut problems).unwrap();
        assert!(matches!(b.select, Select::Accessed(1_296_000)));
        assert_eq!(b.every, Duration::from_secs(90));
        assert!(validate(Some(&config("30m1h", "1h")), &mut problems).is_none());
        assert!(problems.iter().any(|p| p.starts_with("pruneConfig.duration:")), "{problems:?}");
    }
}
