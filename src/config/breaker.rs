//! The circuit breaker's configuration (`circuitBreaker`, globally and per
//! registry): the key as written ([`BreakerConfig`]), the thresholds it
//! resolves to ([`Policy`]) and their defaults. Absent fields inherit (per
//! registry: from the global key; globally: from the defaults); every problem
//! names its key. The breaker itself (its state and what it admits) is
//! `fetch::breaker`'s, which takes a [`Policy`] per upstream.

use std::time::Duration;

use serde::Deserialize;

use super::policies::DurationValue;

/// Consecutive failures that open a closed breaker, by default.
pub const FAILURE_THRESHOLD: u32 = 5;
/// The first cool-down by default; each failed trial doubles it.
pub const BASE_COOL_DOWN: Duration = Duration::from_secs(1);
/// The longest cool-down by default, also the cap on a 429's `Retry-After`.
pub const MAX_COOL_DOWN: Duration = Duration::from_secs(60);

/// The shortest cool-down the file may set.
const MIN_ACCEPTED_COOL_DOWN: Duration = Duration::from_millis(10);
/// The longest cool-down the file may set.
const MAX_ACCEPTED_COOL_DOWN: Duration = Duration::from_secs(3600);
/// Consecutive failures the file may ask for at most before a breaker opens.
const MAX_ACCEPTED_FAILURES: u32 = 10_000;

/// A breaker's thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Consecutive failures that open a closed breaker; 0: never open.
    pub failures: u32,
    /// The first cool-down; each failed trial doubles it.
    pub cool_down: Duration,
    /// The longest cool-down, also the cap on a 429's `Retry-After`.
    pub max_cool_down: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { failures: FAILURE_THRESHOLD, cool_down: BASE_COOL_DOWN, max_cool_down: MAX_COOL_DOWN }
    }
}

/// `circuitBreaker:` as written; absent fields inherit (per registry: from
/// the global key; globally: from the defaults).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BreakerConfig {
    /// Consecutive upstream-wide failures that open the breaker; 0 disables it.
    #[serde(default)]
    pub failures: Option<u32>,
    /// The first cool-down, doubled after every failed trial.
    #[serde(default)]
    pub cool_down: Option<DurationValue>,
    /// The longest cool-down, also the cap on a 429's `Retry-After`.
    #[serde(default)]
    pub max_cool_down: Option<DurationValue>,
}

impl BreakerConfig {
    /// `base` with the fields given here, validated; problems are pushed naming `at` (the key).
    pub fn resolve(&self, base: Policy, at: &str, problems: &mut Vec<String>) -> Policy {
        let mut policy = base;
        if let Some(n) = self.failures {
            if n > MAX_ACCEPTED_FAILURES {
                problems
                    .push(format!("{at}.failures: {n} is more than {MAX_ACCEPTED_FAILURES} (0 disables the breaker)"));
            } else {
                policy.failures = n;
            }
        }
        let bounded = |key: &str, value: &Option<DurationValue>, problems: &mut Vec<String>| -> Option<Duration> {
            let d = match value.as_ref()?.parse() {
                Ok(d) => d,
                Err(e) => {
                    problems.push(format!("{at}.{key}: {e}"));
                    return None;
                }
            };
            if !(MIN_ACCEPTED_COOL_DOWN..=MAX_ACCEPTED_COOL_DOWN).contains(&d) {
                problems.push(format!("{at}.{key}: must be between 10ms and 1h"));
                return None;
            }
            Some(d)
        };
        if let Some(d) = bounded("coolDown", &self.cool_down, problems) {
            policy.cool_down = d;
        }
        if let Some(d) = bounded("maxCoolDown", &self.max_cool_down, problems) {
            policy.max_cool_down = d;
        }
        if policy.max_cool_down < policy.cool_down {
            problems.push(format!(
                "{at}.maxCoolDown: {:?} is shorter than coolDown ({:?})",
                policy.max_cool_down, policy.cool_down
            ));
        }
        policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_fields_inherit_and_are_checked() {
        let mut problems = Vec::new();
        let base = Policy::default();
        let c = BreakerConfig { failures: Some(2), ..Default::default() };
        let p = c.resolve(base, "circuitBreaker", &mut problems);
        assert_eq!((p.failures, p.cool_down, p.max_cool_down), (2, base.cool_down, base.max_cool_down));
        let c = BreakerConfig {
            failures: Some(0),
            cool_down: Some(DurationValue::Text("250ms".into())),
            max_cool_down: Some(DurationValue::Text("10s".into())),
        };
        let p = c.resolve(base, "x", &mut problems);
        assert_eq!(
            (p.failures, p.cool_down, p.max_cool_down),
            (0, Duration::from_millis(250), Duration::from_secs(10))
        );
        assert!(problems.is_empty(), "{problems:?}");
        for (c, needle) in [
            (BreakerConfig { failures: Some(10_001), ..Default::default() }, "at.failures"),
            (BreakerConfig { cool_down: Some(DurationValue::Number(1)), ..Default::default() }, "at.coolDown"),
            (BreakerConfig { cool_down: Some(DurationValue::Text("1ms".into())), ..Default::default() }, "at.coolDown"),
            (
                BreakerConfig { max_cool_down: Some(DurationValue::Text("2h".into())), ..Default::default() },
                "at.maxCoolDown",
            ),
            (
                BreakerConfig { max_cool_down: Some(DurationValue::Text("500ms".into())), ..Default::default() },
                "at.maxCoolDown",
            ),
        ] {
            let mut problems = Vec::new();
            c.resolve(base, "at", &mut problems);
            assert!(problems.len() == 1 && problems[0].starts_with(needle), "{needle}: {problems:?}");
        }
    }
}
