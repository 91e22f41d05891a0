//! Manifest fetches: one upstream request per (source, reference) at a time,
//! the body read whole (at most [`MAX_MANIFEST_BYTES`]), checked against its
//! digest, stored with its media type, and the tag pointed at it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, ACCEPT_ENCODING, CONTENT_TYPE};
use reqwest::{Method, Response, StatusCode};

use tracing::Instrument;

use super::{FetchError, Fetcher, ManifestHit, Reply, Source};
use crate::metrics::Counter;
use crate::oci::{media, Digest, MediaType, Reference};
use crate::store::{tags::now_secs, StagedManifest, TagKey, TagRecord};

/// The largest manifest accepted, enforced while reading.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// How long an upstream "not found" is remembered per (source, reference).
pub const NOT_FOUND_TTL: Duration = Duration::from_secs(30);
/// "Not found" answers remembered at most; a full map drops expired ones, then starts over.
const MAX_NOT_FOUND: usize = 10_000;
/// Distinct manifest fetches in flight at once; past this a request is answered 503 at once.
pub const MAX_MANIFEST_FETCHES: usize = 1024;

impl Fetcher {
    /// Joins the fetch of (source, reference) in flight, or starts it.
    pub(super) fn manifest(self: Arc<Self>, source: Source, reference: Reference, reply: Reply<ManifestHit>) {
        // Only a request that joins a fetch already in flight touches the per-registry series
        // (counted as coalesced there); a leader's name meets the upstream checks first.
        let registry = source.registry.clone();
        let Some(flight) = self
            .manifest_flights
            .join_with((source, reference), reply, |reply| joined(reply, &self.upstreams.series(&registry)))
        else {
            return;
        };
        // In the leader's span: a request that joins the flight sends no span of its own here.
        tokio::spawn(
            async move {
                let (source, reference) = flight.key();
                let result = self.fetch_manifest(source, reference).await;
                if let Err(e) = &result {
                    tracing::debug!(%source, %reference, error = %e, "manifest fetch failed");
                }
                flight.land(result);
            }
            .in_current_span(),
        );
    }

    /// The manifest `fetch_manifest` found: `fetched` only when it came from upstream.
    async fn fetch_manifest(&self, source: &Source, reference: &Reference) -> Result<ManifestHit, FetchError> {
        if let Reference::Digest(d) = reference {
            // Reading a manifest from disk blocks: never on this runtime's thread.
            let d = d.clone();
            if let Some((body, media_type)) = self.blocking(move |store| Ok(store.manifest(&d))).await? {
                let Reference::Digest(digest) = reference else { unreachable!() };
                return Ok(ManifestHit { digest: digest.clone(), media_type, body, fetched: false });
            }
        }
        self.check_online()?;
        // Negative answers are remembered under this key: a manifest and a blob of one digest are not the same thing.
        let what = format!("manifest {reference}");
        self.check_remembered(source, &what)?;
        let hit = self.get_manifest(source, reference, &what).await?;
        let ManifestHit { digest, media_type, body, .. } = &hit;
        self.store_manifest(source, reference, digest, media_type, body);
        tracing::info!(%source, %reference, %digest, %media_type, size = body.len(), "manifest cached");
        Ok(hit)
    }

    /// The request headers of every manifest request: the fixed `Accept`, never the client's.
    pub(super) fn manifest_headers(&self) -> Result<HeaderMap, FetchError> {
        let mut headers = HeaderMap::new();
        let accept = media::upstream_accept(&self.settings.artifact_types);
        headers.insert(ACCEPT, HeaderValue::from_str(&accept).map_err(|e| FetchError::Internal(e.to_string()))?);
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        Ok(headers)
    }

    /// GETs a manifest upstream and checks it (digest, media type, schema), storing nothing.
    pub(super) async fn get_manifest(
        &self,
        source: &Source,
        reference: &Reference,
        what: &str,
    ) -> Result<ManifestHit, FetchError> {
        let up = self.upstreams.get(&source.registry).await?;
        let url = up.url(&source.repo, &format!("manifests/{reference}"));
        let headers = self.manifest_headers()?;
        self.counters.inc(Counter::UpstreamManifest);
        let resp = up.send(Method::GET, &source.repo, url, headers).await?;
        let resp = self.check_status(resp, source, what).await?;
        let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let header_digest =
            resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = read_limited(resp, MAX_MANIFEST_BYTES).await?;
        let digest = match (reference, header_digest) {
            (Reference::Digest(d), _) => d.clone(),
            (Reference::Tag(_), Some(h)) => h
                .parse::<Digest>()
                .map_err(|e| FetchError::BadContent(format!("upstream sent an invalid Docker-Content-Digest: {e}")))?,
            (Reference::Tag(_), None) => Digest::of(crate::oci::Algorithm::Sha256, &body),
        };
        let actual = Digest::of(digest.algorithm(), &body);
        if actual != digest {
            return Err(FetchError::BadContent(format!("{what} from {source} hashes to {actual}, not {digest}")));
        }
        let info = media::inspect(&body).map_err(|e| FetchError::BadContent(format!("{what} from {source}: {e}")))?;
        let media_type = media::effective_media_type(content_type.as_deref(), &info, &self.settings.artifact_types)
            .map_err(|e| FetchError::BadContent(format!("{what} from {source}: {e}")))?;
        if media::is_schema1(media_type.as_str()) || info.schema_version == Some(1) {
            return Err(FetchError::BadContent(format!(
                "{what} from {source} is Docker schema 1, which is deprecated and not supported"
            )));
        }
        Ok(ManifestHit { digest, media_type, body, fetched: true })
    }

    /// Makes the manifest servable now and writes it to disk in the background.
    pub(super) fn store_manifest(
        &self,
        source: &Source,
        reference: &Reference,
        digest: &Digest,
        media_type: &MediaType,
        body: &Bytes,
    ) {
        let tag = match reference {
            Reference::Tag(t) => {
                let key = TagKey { registry: source.registry.clone(), repo: source.repo.clone(), tag: t.clone() };
                let now = now_secs();
                let fetched_at = self.store.tag(&key).filter(|r| &r.digest == digest).map_or(now, |r| r.fetched_at);
                let record = TagRecord {
                    digest: digest.clone(),
                    media_type: media_type.clone(),
                    fetched_at,
                    last_checked_at: now,
                };
                Some((key, record))
            }
            Reference::Digest(_) => None,
        };
        let staged = StagedManifest {
            digest: digest.clone(),
            media_type: media_type.clone(),
            body: body.clone(),
            source: source.to_string(),
            tag,
        };
        self.store.stage_manifest(&staged);
        let store = self.store.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _in_request = span.enter();
            if let Err(e) = store.persist_manifest(&staged) {
                tracing::error!(digest = %staged.digest, error = %e, "manifest could not be written to the cache");
            }
        });
    }

    /// Fails fast when the upstream said "not found" for this recently, or
    /// answered a 5xx about it (see `failing`).
    pub(super) fn check_remembered(&self, source: &Source, what: &str) -> Result<(), FetchError> {
        let key = (source.clone(), what.to_string());
        self.failing.lock().check(&key, Instant::now())?;
        let mut map = self.not_found.lock();
        match map.get(&key) {
            Some((until, message)) if *until > Instant::now() => Err(FetchError::NotFound(message.clone())),
            Some(_) => {
                map.remove(&key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Maps a non-success upstream status to a [`FetchError`], remembering
    /// "not found" and 5xx answers about one object; a success forgets the latter.
    pub(super) async fn check_status(
        &self,
        resp: Response,
        source: &Source,
        what: &str,
    ) -> Result<Response, FetchError> {
        let status = resp.status();
        if status.is_success() {
            self.failing.lock().forget(&(source.clone(), what.to_string()));
            return Ok(resp);
        }
        match status {
            StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let message = if status == StatusCode::NOT_FOUND {
                    format!("{what} is not in {source} (upstream answered 404)")
                } else {
                    format!("{what} is not available from {source} (upstream denied access: {status})")
                };
                let mut map = self.not_found.lock();
                let now = Instant::now();
                super::make_room(&mut map, MAX_NOT_FOUND, |(until, _)| *until <= now);
                map.insert((source.clone(), what.to_string()), (Instant::now() + NOT_FOUND_TTL, message.clone()));
                Err(FetchError::NotFound(message))
            }
            StatusCode::TOO_MANY_REQUESTS => Err(FetchError::TooManyRequests {
                retry_after: resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(retry_after),
            }),
            _ => {
                let snippet = resp.text().await.unwrap_or_default().chars().take(200).collect::<String>();
                let message = format!("{what} from {source}: {snippet}");
                if status.is_server_error() && !super::upstream::upstream_wide(status.as_u16()) {
                    let key = (source.clone(), what.to_string());
                    let wait = self.failing.lock().note(key, status.as_u16(), message.clone(), Instant::now());
                    tracing::warn!(%source, what, status = status.as_u16(), wait_ms = wait.as_millis() as u64,
                        "upstream failed for one object; not asking again for a while");
                }
                Err(FetchError::Upstream { status: status.as_u16(), message })
            }
        }
    }
}

/// An upstream's `Retry-After`, passed on to clients only when it has the
/// header's syntax: delay seconds, or an HTTP date (letters, digits, spaces,
/// commas and colons).
fn retry_after(v: &str) -> Option<String> {
    let v = v.trim();
    let seconds = !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit());
    let date = (20..=40).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b" ,:".contains(&b));
    (seconds || date).then(|| v.to_string())
}

/// Reads a body, refusing it as soon as it grows past `limit`.
pub(super) async fn read_limited(mut resp: Response, limit: usize) -> Result<Bytes, FetchError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(FetchError::BadContent(format!("manifest larger than {limit} bytes")));
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| FetchError::from_reqwest(&e))? {
        if buf.len() + chunk.len() > limit {
            return Err(FetchError::BadContent(format!("manifest larger than {limit} bytes")));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Counts a request that joins a manifest fetch in flight and answers it
/// with the fetch's result marked as not fetched for it (Go counts it as a
/// cached pull).
fn joined(reply: super::Reply<ManifestHit>, series: &crate::metrics::UpstreamSeries) -> super::Reply<ManifestHit> {
    series.coalesced.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (tx, rx) = tokio::sync::oneshot::channel::<Result<ManifestHit, super::FetchError>>();
    tokio::spawn(async move {
        if let Ok(result) = rx.await {
            let _ = reply.send(result.map(|hit| ManifestHit { fetched: false, ..hit }));
        }
    });
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_passed_on_only_with_its_syntax() {
        assert_eq!(retry_after(" 120 ").as_deref(), Some("120"));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT").as_deref(), Some("Wed, 21 Oct 2015 07:28:00 GMT"));
        for bad in ["", "1.5", "soon; X-Evil: 1", "12345678901", "<script>alert(1)</script>...."] {
            assert_eq!(retry_after(bad), None, "{bad:?}");
        }
    }
}
