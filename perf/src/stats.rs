//! Latency percentiles.

use std::time::Duration;

/// The nearest-rank percentile `p` (0 < p ≤ 100) of `sorted` (ascending); `None` when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Summary of a set of durations, in seconds.
#[derive(Clone, Debug, Default, serde::Serialize, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub min: Option<f64>,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

pub fn summarize(mut samples: Vec<Duration>) -> Summary {
    samples.sort_unstable();
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    let mean =
        (!samples.is_empty()).then(|| samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64);
    Summary {
        count: samples.len(),
        min: secs(samples.first().copied()),
        mean,
        p50: secs(percentile(&samples, 50.0)),
        p90: secs(percentile(&samples, 90.0)),
        p99: secs(percentile(&samples, 99.0)),
        max: secs(samples.last().copied()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&x| Duration::from_millis(x)).collect()
    }

    #[test]
    fn nearest_rank() {
        let s = ms(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&s, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&s, 90.0), Some(Duration::from_millis(90)));
        assert_eq!(percentile(&s, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&s, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&s, 0.1), Some(Duration::from_millis(1)));
    }

    #[test]
    fn small_and_empty_sets() {
        assert_eq!(percentile(&[], 50.0), None);
        let one = ms(&[7]);
        assert_eq!(percentile(&one, 50.0), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&one, 99.0), Some(Duration::from_millis(7)));
        let s = ms(&[1, 2, 3, 4]);
        assert_eq!(percentile(&s, 50.0), Some(Duration::from_millis(2)));
        assert_eq!(percentile(&s, 90.0), Some(Duration::from_millis(4)));
    }

    #[test]
    fn summary_sorts_its_input() {
        let s = summarize(ms(&[30, 10, 20]));
        assert_eq!(s.count, 3);
        assert_eq!(s.min, Some(0.01));
        assert_eq!(s.p50, Some(0.02));
        assert_eq!(s.max, Some(0.03));
        assert!((s.mean.unwrap() - 0.02).abs() < 1e-9);
        assert_eq!(summarize(vec![]), Summary::default());
    }
}
