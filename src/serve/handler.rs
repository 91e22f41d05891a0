//! Per-route logic. A hit is answered from the store without touching the
//! fetcher; a miss asks the fetcher and, for blobs, streams the shared
//! download while it fills. A cached tag whose `tagPolicy` says it is due is
//! re-checked by the fetcher first (see `fetch::freshness`); whatever that
//! re-check meets, the cached manifest is served unless the tag moved.

use bytes::Bytes;

use super::error::{ApiError, Wanted};
use super::http::{Method, Request};
use super::range::{self, RangeSpec};
use super::response::{Body, CacheStatus, Kind, Response, Reuse};
use super::route::{self, Route};
use super::Shared;
use crate::config::TagPolicy;
use crate::fetch::{BlobSource, Checked, ManifestHit, Reader, Source, State};
use crate::oci::{media, Digest, OciCode, Reference};
use crate::store::{tags::now_secs, InMemory, TagKey};

pub async fn handle(shared: &Shared, req: &Request) -> Response {
    crate::faults::panic_point("serve", &req.path);
    match dispatch(shared, req).await {
        Ok(r) => r,
        Err(e) => e.into(),
    }
}

async fn dispatch(shared: &Shared, req: &Request) -> Result<Response, ApiError> {
    let route = route::parse(&req.path);
    if !matches!(req.method, Method::Get | Method::Head) {
        return Err(match route {
            Route::NotFound => not_found(),
            _ => ApiError::unsupported(),
        });
    }
    let default_ns = shared.settings.default_ns.as_ref();
    // Checked only where an upstream is chosen: `/v2/` ignores the header, as Go does.
    let upstream = || route::upstream_override(req);
    match route {
        // Go's echo encodes its nil body as `null` and a newline.
        Route::Root => Ok(Response::json(200, Bytes::from_static(b"null\n"))),
        Route::Base => Ok(Response::json(200, Bytes::from_static(b"{}"))),
        Route::TokenAuth => Ok(token_auth()),
        Route::Manifest { name, reference } => {
            let ns = upstream()?;
            let source = route::resolve(&name, ns.as_ref(), default_ns)?;
            let reference = route::parse_reference(&reference)?;
            let registry = source.registry.clone();
            manifest(shared, req, source, reference).await.map(|r| for_upstream(shared, r, &registry))
        }
        Route::Blob { name, digest } => {
            let ns = upstream()?;
            let source = route::resolve(&name, ns.as_ref(), default_ns)?;
            let digest = route::parse_digest(&digest)?;
            let registry = source.registry.clone();
            blob(shared, req, source, digest).await.map(|r| for_upstream(shared, r, &registry))
        }
        Route::TagsList { name } => {
            let ns = upstream()?;
            let source = route::resolve(&name, ns.as_ref(), default_ns)?;
            super::tags::list(shared, req, &name, ns.as_ref(), source).await
        }
        Route::Referrers { name, digest } => {
            let ns = upstream()?;
            route::resolve(&name, ns.as_ref(), default_ns)?;
            route::parse_digest(&digest)?;
            Err(ApiError::new(404, OciCode::Unsupported, "the referrers API is not served by this pull-through cache")
                .detail("clients fall back to the referrers tag schema"))
        }
        Route::Unsupported => Err(ApiError::unsupported()),
        Route::NotFound => Err(not_found()),
    }
}

/// The token the Go ociregistry hands every client that asks `/v2/auth`: this
/// registry asks no client for credentials (it sends no `WWW-Authenticate`),
/// so the token is a fixed placeholder that nothing checks, and its value is
/// Go's, so a client or script that compared it keeps working.
const PLACEHOLDER_TOKEN: &str = "FROBOZZ";

/// `GET /v2/auth`: as Go answers it, a token that must not be cached.
fn token_auth() -> Response {
    let body = serde_json::json!({ "token": PLACEHOLDER_TOKEN }).to_string() + "\n";
    Response::json(200, Bytes::from(body))
        .header("Cache-Control", "no-cache, no-store, must-revalidate")
        .header("Vary", "Cookie")
}

/// Marks an answer with the upstream it is counted for. A name that has no
/// label yet gets one only when that upstream just answered (a miss): a
/// client naming made-up upstreams for cached content counts as `other`.
fn for_upstream(shared: &Shared, mut r: Response, registry: &crate::oci::RegistryName) -> Response {
    r.upstream = Some(shared.metrics.names.id(registry, r.cache != CacheStatus::Hit));
    r
}

fn not_found() -> ApiError {
    ApiError::new(404, OciCode::NameUnknown, "not an OCI Distribution API path")
}

async fn manifest(shared: &Shared, req: &Request, source: Source, reference: Reference) -> Result<Response, ApiError> {
    let store = &shared.store;
    let policy = match &reference {
        Reference::Tag(t) if !shared.settings.air_gapped => shared.settings.tag_policy(&source.registry, t.as_str()),
        _ => TagPolicy::Never,
    };
    let (cached, due) = match &reference {
        Reference::Tag(tag) => {
            let key = TagKey { registry: source.registry.clone(), repo: source.repo.clone(), tag: tag.clone() };
            match store.tag(&key) {
                Some(t) => (cached_manifest(shared, &t.digest).await, policy.due(t.last_checked_at, now_secs())),
                None => (None, false),
            }
        }
        Reference::Digest(d) => (cached_manifest(shared, d).await, false),
    };
    let (hit, cache) = match (cached, &reference) {
        (Some(hit), Reference::Tag(tag)) if due => {
            match shared.fetch.check_tag(source.clone(), tag.clone(), hit.digest.clone()).await {
                Ok(Checked::Moved(new)) => (new, CacheStatus::Miss),
                Ok(Checked::Same | Checked::Stale) | Err(_) => (hit, CacheStatus::Hit),
            }
        }
        (Some(hit), _) => (hit, CacheStatus::Hit),
        (cached, _) => match shared.fetch.manifest(source.clone(), reference.clone()).await {
            Ok(hit) => (hit, CacheStatus::Miss),
            Err(e) => match cached {
                Some(hit) => {
                    tracing::warn!(%source, %reference, error = %e, "upstream failed; serving the cached manifest");
                    (hit, CacheStatus::Hit)
                }
                None => return Err(ApiError::from_fetch(e, Wanted::Manifest)),
            },
        },
    };
    if !media::accepts(&req.accept, hit.media_type.as_str()) {
        return Err(ApiError::new(
            404,
            OciCode::ManifestUnknown,
            format!("manifest {reference} of {source} is not in a media type the client accepts"),
        )
        .detail(format!("stored media type {}; Accept: {}", hit.media_type, req.accept.join(", "))));
    }
    let reuse = match (&reference, cache) {
        (_, CacheStatus::Miss) => Reuse::No,
        (Reference::Digest(_), _) => Reuse::Immutable,
        // A kept answer would skip the tag's re-checks.
        (Reference::Tag(_), _) if policy != TagPolicy::Never => Reuse::No,
        (Reference::Tag(_), _) => Reuse::WhileGeneration,
    };
    let joined = cache != CacheStatus::Hit && !hit.fetched;
    let mut response = Response::new(200, Body::Bytes(hit.body), cache);
    response.joined = joined;
    Ok(response
        .kind(Kind::Manifest)
        .reuse(reuse)
        .header("Content-Type", hit.media_type.as_str())
        .header("Docker-Content-Digest", hit.digest.to_string())
        .header("Vary", "Accept")
        .pulled(hit.digest))
}

/// A committed manifest; one that is not in memory is read (and checked) on
/// a blocking thread, never on this serving thread.
async fn cached_manifest(shared: &Shared, digest: &Digest) -> Option<ManifestHit> {
    let (body, media_type) = match shared.store.manifest_in_memory(digest) {
        InMemory::Found(body, media_type) => (body, media_type),
        InMemory::Absent => return None,
        InMemory::OnDisk => {
            let (store, d) = (shared.store.clone(), digest.clone());
            shared.blocking.spawn_blocking(move || store.manifest(&d)).await.ok()??
        }
    };
    Some(ManifestHit { digest: digest.clone(), media_type, body, fetched: false })
}

async fn blob(shared: &Shared, req: &Request, source: Source, digest: Digest) -> Result<Response, ApiError> {
    if let Some(response) = committed_blob(shared, req, &digest).await? {
        return Ok(response);
    }
    if req.method == Method::Head {
        return blob_head(shared, source, digest).await;
    }
    let mut retried = false;
    loop {
        let mut reader = match shared.fetch.blob(source.clone(), digest.clone()).await {
            Ok(BlobSource::Committed) => {
                return committed_blob(shared, req, &digest).await?.ok_or_else(|| blob_unknown(&digest));
            }
            Ok(BlobSource::Downloading(d)) => d,
            Err(e) => return Err(ApiError::from_fetch(e, Wanted::Blob)),
        };
        match wait_for_headers(&mut reader, req.http10).await {
            Ok(total) => return Ok(in_flight_response(req, &digest, reader, total)),
            // Another requester's source failed for its own reasons: try ours.
            Err(e) if e.is_source_specific() && reader.download.source != source.to_string() && !retried => {
                retried = true;
            }
            Err(e) => return Err(ApiError::from_fetch(e, Wanted::Blob)),
        }
    }
}

/// HEAD of a blob that is not cached: its size from upstream, nothing downloaded.
async fn blob_head(shared: &Shared, source: Source, digest: Digest) -> Result<Response, ApiError> {
    let size =
        shared.fetch.blob_size(source, digest.clone()).await.map_err(|e| ApiError::from_fetch(e, Wanted::Blob))?;
    Ok(blob_response(Body::Sized(size), CacheStatus::Miss, &digest, None))
}

/// A blob answer with its headers; `partial` is `(start, end, size)` of a 206.
fn blob_response(body: Body, cache: CacheStatus, digest: &Digest, partial: Option<(u64, u64, u64)>) -> Response {
    let status = if partial.is_some() { 206 } else { 200 };
    let r = Response::new(status, body, cache)
        .kind(Kind::Blob)
        .header("Docker-Content-Digest", digest.to_string())
        .header("Content-Type", "application/octet-stream")
        .header("Accept-Ranges", "bytes");
    match partial {
        Some((start, end, size)) => r.header("Content-Range", format!("bytes {start}-{}/{size}", end - 1)),
        None => r,
    }
}

fn blob_unknown(digest: &Digest) -> ApiError {
    ApiError::new(404, OciCode::BlobUnknown, format!("blob {digest} is not cached"))
}

/// A committed blob as a response (from memory when small, else its file),
/// or `None` when it is not committed. A small blob not in memory yet is read
/// in on a blocking thread, never on this serving thread.
async fn committed_blob(shared: &Shared, req: &Request, digest: &Digest) -> Result<Option<Response>, ApiError> {
    let Some(mut blob) = shared.store.blob(digest) else { return Ok(None) };
    if blob.small {
        let (store, d) = (shared.store.clone(), digest.clone());
        blob.bytes = shared.blocking.spawn_blocking(move || store.read_small_blob(&d)).await.ok().flatten();
        if blob.bytes.is_none() {
            return Ok(None);
        }
    }
    let size = blob.size;
    let body = |start: u64, end: u64| match &blob.bytes {
        Some(b) => Body::Bytes(b.slice(start as usize..end as usize)),
        None => Body::File { path: blob.path.clone(), offset: start, len: end - start, size },
    };
    Ok(Some(match range::parse(req.range.as_deref(), size) {
        RangeSpec::Full => blob_response(body(0, size), CacheStatus::Hit, digest, None).reuse(Reuse::Immutable),
        RangeSpec::Partial { start, end } => {
            blob_response(body(start, end), CacheStatus::Hit, digest, Some((start, end, size)))
        }
        RangeSpec::Unsatisfiable => return Err(unsatisfiable(size)),
    }))
}

fn unsatisfiable(size: u64) -> ApiError {
    ApiError::new(416, OciCode::RangeInvalid, "requested range not satisfiable")
        .header("Content-Range", format!("bytes */{size}"))
}

/// Waits until the upstream answered (size known unless chunked) or failed.
/// An HTTP/1.0 client cannot take a chunked body, so with the size unknown it
/// waits for the whole blob.
async fn wait_for_headers(reader: &mut Reader, http10: bool) -> Result<Option<u64>, crate::fetch::FetchError> {
    let rx = &mut reader.progress;
    loop {
        {
            let p = rx.borrow_and_update();
            match &p.state {
                State::Failed(e) => return Err(e.clone()),
                State::Verified => return Ok(p.total.or(Some(p.published))),
                State::Streaming if p.total.is_some() || !http10 => return Ok(p.total),
                State::Streaming => {}
                State::Connecting => {}
            }
        }
        if rx.changed().await.is_err() {
            return Err(crate::fetch::FetchError::Internal("download vanished".into()));
        }
    }
}

fn in_flight_response(req: &Request, digest: &Digest, reader: Reader, total: Option<u64>) -> Response {
    let (start, end, partial) = match total.map(|t| (t, range::parse(req.range.as_deref(), t))) {
        Some((t, RangeSpec::Partial { start, end })) => (start, Some(end), Some((start, end, t))),
        Some((t, RangeSpec::Unsatisfiable)) => return unsatisfiable(t).into(),
        Some((t, RangeSpec::Full)) => (0, Some(t), None),
        None => (0, None, None),
    };
    blob_response(Body::Download { reader, start, end }, CacheStatus::Stream, digest, partial)
}
