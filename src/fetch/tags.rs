//! Tag listing, proxied to the upstream with a short cache. The upstream's
//! `Link` is reduced to its query (`last=…&n=…`) for the serving side to
//! rewrite onto the client's own path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, LINK};
use reqwest::Method;

use super::manifest::read_limited;
use super::{FetchError, Fetcher, Source};
use crate::metrics::Counter;

const TAGS_CACHE_TTL: Duration = Duration::from_secs(15);
const MAX_TAGS_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct TagsPage {
    /// The upstream's JSON body (`{"name":…,"tags":[…]}`).
    pub body: Bytes,
    /// The next page's query string, without `ns`.
    pub next: Option<String>,
}

impl Fetcher {
    pub(super) async fn tags(self: Arc<Self>, source: Source, query: String) -> Result<TagsPage, FetchError> {
        let key = (source.clone(), query.clone());
        if let Some((at, page)) = self.tags_cache.lock().unwrap().get(&key) {
            if at.elapsed() < TAGS_CACHE_TTL {
                return Ok(page.clone());
            }
        }
        self.check_online()?;
        let up = self.upstreams.get(&source.registry).await?;
        let mut url = up.url(&source.repo, "tags/list");
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in form_pairs(&query) {
                if k == "n" || k == "last" {
                    pairs.append_pair(&k, &v);
                }
            }
        }
        self.counters.inc(Counter::UpstreamTags);
        let resp = up.send(Method::GET, &source.repo, url, HeaderMap::new()).await?;
        let resp = self.check_status(resp, &source, "tag list").await?;
        let next = resp.headers().get(LINK).and_then(|v| v.to_str().ok()).and_then(next_query);
        let body = read_limited(resp, MAX_TAGS_BYTES).await?;
        let page = TagsPage { body, next };
        let mut cache = self.tags_cache.lock().unwrap();
        cache.retain(|_, (at, _)| at.elapsed() < TAGS_CACHE_TTL);
        cache.insert(key, (Instant::now(), page.clone()));
        Ok(page)
    }
}

/// Decoded `k=v` pairs of a query string.
pub fn form_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .map(|u| u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

/// `</v2/x/tags/list?last=a&n=2&ns=y>; rel="next"` → `last=a&n=2`.
fn next_query(link: &str) -> Option<String> {
    let target = link.split('>').next()?.trim().trim_start_matches('<');
    let (_, query) = target.split_once('?')?;
    let kept: Vec<String> = form_pairs(query)
        .into_iter()
        .filter(|(k, _)| k != "ns")
        .map(|(k, v)| format!("{}={}", encode(&k), encode(&v)))
        .collect();
    Some(kept.join("&"))
}

/// Percent-encodes a query component.
pub fn encode(s: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/").expect("static URL");
    url.query_pairs_mut().append_pair("v", s);
    url.query().unwrap_or("v=")[2..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_is_reduced_to_its_query() {
        assert_eq!(
            next_query(r#"</v2/library/x/tags/list?last=v1.2&n=2&ns=docker.io>; rel="next""#).as_deref(),
            Some("last=v1.2&n=2")
        );
        assert_eq!(next_query("garbage"), None);
    }
}
