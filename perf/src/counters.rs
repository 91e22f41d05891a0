//! The server's own counters: ociregistry's Prometheus exposition (`serve
//! --metrics PORT`), scraped before and after the run. The report gives the
//! difference of every `ociregistry_*` series, and from it how many upstream
//! blob requests and bytes the run cost.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// Series (name with labels, as exposed) → value.
pub type Series = BTreeMap<String, f64>;

/// Parses the Prometheus text format, keeping the `ociregistry_` series.
pub fn parse(text: &str) -> Series {
    text.lines()
        .filter(|l| l.starts_with("ociregistry_"))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

pub async fn scrape(url: &str) -> Result<Series> {
    let resp = reqwest::get(url).await.with_context(|| format!("scraping {url}"))?;
    if !resp.status().is_success() {
        bail!("scraping {url}: {}", resp.status());
    }
    Ok(parse(&resp.text().await.with_context(|| format!("reading {url}"))?))
}

/// What the run cost the server, from its counters.
#[derive(Serialize)]
pub struct ServerCounters {
    pub url: String,
    /// `ociregistry_upstream_requests_total{kind="blob"}` during the run.
    pub upstream_blob_requests: f64,
    pub upstream_blob_bytes: f64,
    /// Upstream blob bytes / image bytes: 1.0 is one download per blob.
    pub upstream_bytes_per_image_bytes: Option<f64>,
    /// Every series that changed, by how much.
    pub changed: Series,
}

pub fn difference(url: &str, before: &Series, after: &Series, image_bytes: u64) -> ServerCounters {
    let changed: Series = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect();
    let get = |k: &str| changed.get(k).copied().unwrap_or(0.0);
    let upstream_blob_bytes = get("ociregistry_upstream_blob_bytes_total");
    ServerCounters {
        url: url.to_string(),
        upstream_blob_requests: get("ociregistry_upstream_requests_total{kind=\"blob\"}"),
        upstream_blob_bytes,
        upstream_bytes_per_image_bytes: (image_bytes > 0).then(|| upstream_blob_bytes / image_bytes as f64),
        changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_of_the_exposition() {
        let before = parse("# HELP x\nociregistry_upstream_blob_bytes_total 100\nother_metric 5\n");
        let after = parse(
            "ociregistry_upstream_blob_bytes_total 1100\n\
             ociregistry_upstream_requests_total{kind=\"blob\"} 2\n\
             ociregistry_kept_answers_total 0\n",
        );
        assert!(!before.contains_key("other_metric"));
        let d = difference("u", &before, &after, 500);
        assert_eq!(d.upstream_blob_bytes, 1000.0);
        assert_eq!(d.upstream_blob_requests, 2.0);
        assert_eq!(d.upstream_bytes_per_image_bytes, Some(2.0));
        assert!(!d.changed.contains_key("ociregistry_kept_answers_total"), "unchanged series are left out");
    }
}
