//! The durations `list` and `prune` take on the command line, parsed at the
//! edge: seconds (`30m`, `12h`, `7d`; see `config::duration`). Dates, in the
//! Go ociregistry's format, are `crate::go_time`; pattern lists and sizes,
//! which the configuration file takes too, are `config::patterns` and
//! `config::size`.

/// `30s`, `30m`, `12h`, `7d`, `2w` (or plain seconds) as seconds, and sums
/// of them as Go writes durations: `1h30m`, `2h45m10s`, `1d12h`.
pub use crate::config::duration::parse_secs as parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
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
    }
}
