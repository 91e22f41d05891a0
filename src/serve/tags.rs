//! `GET /v2/<name>/tags/list`: proxied upstream (the fetcher keeps a short
//! cache), with the upstream's `Link` rewritten onto the client's own path; in
//! air-gapped mode, and when the upstream fails (unreachable, 5xx, rate
//! limited, circuit open: anything but "no such repository"), answered from
//! the tags this cache holds, with the same `n`/`last` pagination.

use serde::Serialize;

use super::error::{ApiError, Wanted};
use super::http::Request;
use super::response::Response;
use super::Shared;
use crate::fetch::tags::{encode, form_pairs};
use crate::fetch::{FetchError, Source};
use crate::oci::RegistryName;

pub async fn list(
    shared: &Shared,
    req: &Request,
    client_name: &str,
    ns: Option<&RegistryName>,
    source: Source,
) -> Result<Response, ApiError> {
    let query = req.query.clone().unwrap_or_default();
    let (body, next) = if shared.settings.air_gapped {
        from_cache(shared, &source, &query)?
    } else {
        match shared.fetch.tags(source.clone(), query.clone()).await {
            Ok(page) => (page.body.to_vec(), page.next),
            Err(e @ (FetchError::NotFound(_) | FetchError::Refused(_))) => {
                return Err(ApiError::from_fetch(e, Wanted::Tags))
            }
            Err(e) => match from_cache(shared, &source, &query) {
                Ok(cached) => {
                    tracing::warn!(%source, error = %e, "upstream failed; serving the cached tags");
                    cached
                }
                Err(_) => return Err(ApiError::from_fetch(e, Wanted::Tags)),
            },
        }
    };
    let mut r = Response::json(200, body);
    if let Some(next) = next {
        let ns = ns.map(|n| format!("&ns={}", encode(n.as_str()))).unwrap_or_default();
        r = r.header("Link", format!("</v2/{client_name}/tags/list?{next}{ns}>; rel=\"next\""));
    }
    Ok(r)
}

#[derive(Serialize)]
struct TagList<'a> {
    name: &'a str,
    tags: &'a [String],
}

fn from_cache(shared: &Shared, source: &Source, query: &str) -> Result<(Vec<u8>, Option<String>), ApiError> {
    let all = shared.store.tags_of(&source.registry, &source.repo);
    if all.is_empty() {
        return Err(ApiError::new(404, crate::oci::OciCode::NameUnknown, format!("{source} has no cached tags")));
    }
    let pairs = form_pairs(query);
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let last = get("last");
    let n = get("n").and_then(|n| n.parse::<usize>().ok());
    let page = paginate(&all, last.as_deref(), n);
    let next = match (n, page.last()) {
        (Some(n), Some(last_tag)) if page.len() == n && all.last() != Some(last_tag) => {
            Some(format!("last={}&n={n}", encode(last_tag)))
        }
        _ => None,
    };
    let body = serde_json::to_vec(&TagList { name: source.repo.as_str(), tags: &page }).expect("serialises");
    Ok((body, next))
}

/// Tags after `last` (sorted input), at most `n`.
fn paginate(sorted: &[String], last: Option<&str>, n: Option<usize>) -> Vec<String> {
    let start = last.map_or(0, |l| sorted.partition_point(|t| t.as_str() <= l));
    let rest = &sorted[start..];
    rest[..n.unwrap_or(rest.len()).min(rest.len())].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination() {
        let tags: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(paginate(&tags, None, Some(2)), vec!["a", "b"]);
        assert_eq!(paginate(&tags, Some("b"), Some(2)), vec!["c", "d"]);
        assert_eq!(paginate(&tags, Some("d"), None), Vec::<String>::new());
        assert_eq!(paginate(&tags, None, Some(0)), Vec::<String>::new());
        assert_eq!(paginate(&tags, Some("bb"), None), vec!["c", "d"]);
    }
}
