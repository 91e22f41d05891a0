//! Tag listing, proxied to the upstream with a short, bounded cache keyed on
//! the normalised page (`n`, `last`), one upstream request per page in
//! flight. The upstream's `Link` is reduced to its query (`last=…&n=…`) for
//! the serving side to rewrite onto the client's own path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, LINK};
use reqwest::Method;

use tracing::Instrument;

use super::manifest::read_limited;
use super::{FetchError, Fetcher, Source};
use crate::metrics::Counter;

const TAGS_CACHE_TTL: Duration = Duration::from_secs(15);
const MAX_TAGS_BYTES: usize = 4 * 1024 * 1024;
/// Pages kept at most (each up to [`MAX_TAGS_BYTES`], usually a few KiB); a
/// full cache drops expired pages, then starts over.
const MAX_CACHED_PAGES: usize = 256;
/// Distinct tag list fetches in flight at once.
pub const MAX_TAG_FETCHES: usize = 256;
/// The longest `last` passed on: a tag is at most 128 characters.
const MAX_LAST: usize = 256;

#[derive(Debug, Clone)]
pub struct TagsPage {
    /// The upstream's JSON body (`{"name":…,"tags":[…]}`).
    pub body: Bytes,
    /// The next page's query string, without `ns`.
    pub next: Option<String>,
}

/// What a tag list request asks the upstream: the source and the two
/// pagination parameters, normalised, so that other query parameters (or
/// their order) neither defeat the cache nor start another upstream request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TagsKey {
    pub source: Source,
    pub n: Option<u32>,
    pub last: Option<String>,
}

impl TagsKey {
    /// The key of a client's query string: `n` when it is a number, `last`
    /// when it is not absurdly long; everything else is ignored.
    pub fn from_query(source: Source, query: &str) -> TagsKey {
        let pairs = form_pairs(query);
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        TagsKey {
            source,
            n: get("n").and_then(|n| n.parse().ok()),
            last: get("last").filter(|l| !l.is_empty() && l.len() <= MAX_LAST).map(str::to_string),
        }
    }
}

impl Fetcher {
    /// Answers a tag list request from the short cache, else joins the
    /// upstream request in flight for the same page, or starts it.
    pub(super) fn tags(self: Arc<Self>, source: Source, query: &str, reply: super::Reply<TagsPage>) {
        let key = TagsKey::from_query(source, query);
        if let Some((at, page)) = self.tags_cache.lock().get(&key) {
            if at.elapsed() < TAGS_CACHE_TTL {
                let _ = reply.send(Ok(page.clone()));
                return;
            }
        }
        let Some(flight) = self.tag_flights.join(key, reply) else { return };
        tokio::spawn(
            async move {
                let result = self.fetch_tags(flight.key()).await;
                if let Ok(page) = &result {
                    let mut cache = self.tags_cache.lock();
                    super::make_room(&mut cache, MAX_CACHED_PAGES, |(at, _)| at.elapsed() >= TAGS_CACHE_TTL);
                    cache.insert(flight.key().clone(), (Instant::now(), page.clone()));
                }
                flight.land(result);
            }
            .in_current_span(),
        );
    }

    async fn fetch_tags(&self, key: &TagsKey) -> Result<TagsPage, FetchError> {
        self.check_online()?;
        let source = &key.source;
        let up = self.upstreams.get(&source.registry).await?;
        let mut url = up.url(&source.repo, "tags/list");
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(n) = key.n {
                pairs.append_pair("n", &n.to_string());
            }
            if let Some(last) = &key.last {
                pairs.append_pair("last", last);
            }
        }
        self.counters.inc(Counter::UpstreamTags);
        let resp = up.send(Method::GET, &source.repo, url, HeaderMap::new()).await?;
        let resp = self.check_status(resp, source, "tag list").await?;
        let next = resp.headers().get(LINK).and_then(|v| v.to_str().ok()).and_then(next_query);
        let body = read_limited(resp, MAX_TAGS_BYTES).await?;
        Ok(TagsPage { body, next })
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
    fn the_cache_key_is_the_normalised_page() {
        let source = Source { registry: "quay.io".parse().unwrap(), repo: "a/b".parse().unwrap() };
        let key = |q: &str| TagsKey::from_query(source.clone(), q);
        assert_eq!(key("n=10&last=v1&junk=123"), key("last=v1&n=10"));
        assert_eq!(key("junk=1"), key(""));
        assert_eq!(key("n=x&last="), TagsKey { source: source.clone(), n: None, last: None });
        assert_eq!(key(&format!("last={}", "a".repeat(300))).last, None);
        assert_ne!(key("n=10"), key("n=11"));
    }

    #[test]
    fn link_is_reduced_to_its_query() {
        assert_eq!(
            next_query(r#"</v2/library/x/tags/list?last=v1.2&n=2&ns=docker.io>; rel="next""#).as_deref(),
            Some("last=v1.2&n=2")
        );
        assert_eq!(next_query("garbage"), None);
    }
}
