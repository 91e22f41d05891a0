//! One image pull, the way containerd does it: resolve the tag with HEAD, GET the manifest by digest, pick
//! the platform from an index, then GET config and layers a few at a time (optionally as parallel `Range`
//! chunks, like containerd 2.x), verifying every size and digest.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{stream, StreamExt, TryStreamExt};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::{Client, Method, StatusCode};
use serde::Serialize;
use sha2::{Digest, Sha256, Sha512};
use tokio::sync::Semaphore;

use crate::chunks::{self, Chunk};
use crate::manifest::{self, Descriptor, Parsed, Platform};
use crate::reference::ImageRef;

/// Manifests larger than this are refused (the OCI guidance is 4 MiB).
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// How a pull failed. The first three are verification failures: the server sent wrong bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The body's digest is not the one asked for.
    DigestMismatch,
    /// The body ended (or the connection broke) before the promised size.
    ShortBody,
    /// A length that contradicts the descriptor: Content-Length, Content-Range, or a body longer than the size.
    SizeMismatch,
    /// An unexpected HTTP status.
    Status,
    /// No response: connection refused or reset, DNS, TLS, request sent on a dead connection.
    Connect,
    /// A request timed out.
    Timeout,
    /// A manifest that cannot be used: not JSON, unknown media type, no entry for the platform.
    Manifest,
}

impl ErrorKind {
    pub fn is_verification(self) -> bool {
        matches!(self, ErrorKind::DigestMismatch | ErrorKind::ShortBody | ErrorKind::SizeMismatch)
    }
}

#[derive(Clone, Debug)]
pub struct PullError {
    pub kind: ErrorKind,
    pub message: String,
}

fn err(kind: ErrorKind, message: impl Into<String>) -> PullError {
    PullError { kind, message: message.into() }
}

fn transport(e: reqwest::Error, during_body: bool, what: &str) -> PullError {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if during_body {
        ErrorKind::ShortBody
    } else {
        ErrorKind::Connect
    };
    // reqwest's Display hides the cause ("error sending request"); the source chain names it.
    let mut msg = format!("{what}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    err(kind, msg)
}

/// Settings shared by every pull.
pub struct PullConfig {
    /// `http://host:port`, no trailing slash.
    pub registry: String,
    /// `?ns=<encoded>` or empty.
    pub query: String,
    pub platform: Platform,
    pub layer_concurrency: usize,
    pub range_chunk_bytes: u64,
    pub range_parallel: usize,
}

/// Counters every node adds to while it runs (so a run stopped by its deadline still counts its bytes).
#[derive(Default)]
pub struct Totals {
    pub bytes: AtomicU64,
    pub range_fallbacks: AtomicU64,
}

/// One simulated node: its connection pool and, optionally, a cap on its simultaneous requests.
pub struct Node {
    pub client: Client,
    pub connections: Option<Arc<Semaphore>>,
}

/// What a finished pull observed.
#[derive(Debug, Default)]
pub struct PullInfo {
    /// When the first body byte of the image's first layer (the config if there are none) arrived; kept
    /// when the pull fails later.
    pub first_blob_byte: Option<Instant>,
    /// (digest, size) of the config and layers of the platform's image manifest.
    pub blobs: Vec<(String, u64)>,
}

struct Ctx<'a> {
    cfg: &'a PullConfig,
    node: &'a Node,
    totals: &'a Totals,
    name: &'a str,
    first_byte: &'a OnceLock<Instant>,
}

impl Ctx<'_> {
    fn url(&self, kind: &str, reference: &str) -> String {
        format!("{}/v2/{}/{}/{}{}", self.cfg.registry, self.name, kind, reference, self.cfg.query)
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        range: Option<&str>,
    ) -> Result<(reqwest::Response, Option<tokio::sync::OwnedSemaphorePermit>), PullError> {
        let permit = match &self.node.connections {
            Some(s) => Some(s.clone().acquire_owned().await.map_err(|_| err(ErrorKind::Connect, "pool closed"))?),
            None => None,
        };
        let mut req = self.node.client.request(method.clone(), url).header(ACCEPT, manifest::ACCEPT);
        if let Some(r) = range {
            req = req.header(RANGE, r);
        }
        let resp = req.send().await.map_err(|e| transport(e, false, &format!("{method} {url}")))?;
        Ok((resp, permit))
    }
}

/// Pulls `image` once. `info` is filled in as the pull goes, so a failed pull still reports what it saw.
pub async fn pull(
    cfg: &PullConfig,
    node: &Node,
    totals: &Totals,
    image: &ImageRef,
    info: &mut PullInfo,
) -> Result<(), PullError> {
    let first_byte = OnceLock::new();
    let ctx = Ctx { cfg, node, totals, name: &image.name, first_byte: &first_byte };
    let result = pull_inner(&ctx, image, info).await;
    info.first_blob_byte = first_byte.get().copied();
    result
}

async fn pull_inner(ctx: &Ctx<'_>, image: &ImageRef, info: &mut PullInfo) -> Result<(), PullError> {
    let cfg = ctx.cfg;

    // Resolve: HEAD by tag gives the digest; a server that omits Docker-Content-Digest gets a GET by tag.
    let (digest, prefetched) = match &image.digest {
        Some(d) => (d.clone(), None),
        None => {
            let url = ctx.url("manifests", image.reference());
            let (resp, _permit) = ctx.send(Method::HEAD, &url, None).await?;
            if resp.status() != StatusCode::OK {
                return Err(err(ErrorKind::Status, format!("HEAD {url}: {}", resp.status())));
            }
            match resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()) {
                Some(d) => (d.to_string(), None),
                None => {
                    let (ct, body) = fetch_manifest(ctx, image.reference(), None).await?;
                    (digest_of(&body), Some((ct, body)))
                }
            }
        }
    };
    let (ct, body) = match prefetched {
        Some(m) => m,
        None => fetch_manifest(ctx, &digest, None).await?,
    };
    let (config, layers) = match manifest::parse(&ct, &body).map_err(|e| err(ErrorKind::Manifest, e))? {
        Parsed::Image { config, layers } => (config, layers),
        Parsed::Index(entries) => {
            let entry = manifest::select_platform(&entries, &cfg.platform).ok_or_else(|| {
                err(ErrorKind::Manifest, format!("{image}: no manifest for platform {}", cfg.platform))
            })?;
            let (ct, body) = fetch_manifest(ctx, &entry.digest, Some(entry.size)).await?;
            match manifest::parse(&ct, &body).map_err(|e| err(ErrorKind::Manifest, e))? {
                Parsed::Image { config, layers } => (config, layers),
                Parsed::Index(_) => return Err(err(ErrorKind::Manifest, format!("{image}: nested index"))),
            }
        }
    };

    // Config and layers, `layer_concurrency` at a time, each distinct digest once.
    let first = layers.first().unwrap_or(&config).digest.clone();
    let mut seen = HashSet::new();
    let blobs: Vec<Descriptor> =
        std::iter::once(config).chain(layers).filter(|d| seen.insert(d.digest.clone())).collect();
    info.blobs = blobs.iter().map(|d| (d.digest.clone(), d.size)).collect();
    for d in &blobs {
        crate::reference::check_digest(&d.digest).map_err(|e| err(ErrorKind::Manifest, e))?;
    }
    let first = &first;
    stream::iter(blobs)
        .map(|d| async move { fetch_blob(ctx, &d, &d.digest == first).await })
        .buffer_unordered(cfg.layer_concurrency.max(1))
        .try_collect::<Vec<u64>>()
        .await?;
    Ok(())
}

/// GETs a manifest, checks its digest (when `reference` is one) and size, and returns (Content-Type, body).
async fn fetch_manifest(ctx: &Ctx<'_>, reference: &str, size: Option<u64>) -> Result<(String, Bytes), PullError> {
    let url = ctx.url("manifests", reference);
    let (resp, _permit) = ctx.send(Method::GET, &url, None).await?;
    if resp.status() != StatusCode::OK {
        return Err(err(ErrorKind::Status, format!("GET {url}: {}", resp.status())));
    }
    let ct = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let promised = content_length(&resp);
    if promised.is_some_and(|n| n > MAX_MANIFEST_BYTES as u64) {
        return Err(err(ErrorKind::Manifest, format!("GET {url}: manifest larger than {MAX_MANIFEST_BYTES} bytes")));
    }
    let body = resp.bytes().await.map_err(|e| transport(e, true, &format!("GET {url}")))?;
    ctx.totals.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    if let Some(n) = promised {
        if (body.len() as u64) < n {
            return Err(err(ErrorKind::ShortBody, format!("GET {url}: {} of {n} bytes", body.len())));
        }
    }
    if let Some(n) = size {
        if body.len() as u64 != n {
            return Err(err(ErrorKind::SizeMismatch, format!("GET {url}: {} bytes, descriptor says {n}", body.len())));
        }
    }
    if reference.contains(':') {
        let got = digest_with(reference, &body);
        if got != reference {
            return Err(err(ErrorKind::DigestMismatch, format!("GET {url}: body digest {got}")));
        }
    }
    Ok((ct, body))
}

/// Fetches one blob whole or in Range chunks and returns the bytes received; with `track`, its first body
/// byte is the pull's first blob byte.
async fn fetch_blob(ctx: &Ctx<'_>, d: &Descriptor, track: bool) -> Result<u64, PullError> {
    if let Some(plan) = chunks::plan(d.size, ctx.cfg.range_chunk_bytes) {
        match fetch_chunked(ctx, d, &plan, track).await? {
            Some(done) => return Ok(done),
            None => {
                // The server ignored Range (200): containerd drops to one stream, so do we.
                ctx.totals.range_fallbacks.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    fetch_whole(ctx, d, track).await
}

async fn fetch_whole(ctx: &Ctx<'_>, d: &Descriptor, track: bool) -> Result<u64, PullError> {
    let url = ctx.url("blobs", &d.digest);
    let (resp, _permit) = ctx.send(Method::GET, &url, None).await?;
    if resp.status() != StatusCode::OK {
        return Err(err(ErrorKind::Status, format!("GET {url}: {}", resp.status())));
    }
    if let Some(n) = content_length(&resp) {
        if n != d.size {
            return Err(err(ErrorKind::SizeMismatch, format!("GET {url}: Content-Length {n}, descriptor {}", d.size)));
        }
    }
    let mut hasher = Hasher::for_digest(&d.digest);
    let mut received = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| transport(e, true, &format!("GET {url} after {received} bytes")))?;
        if piece.is_empty() {
            continue;
        }
        if track && received == 0 {
            let _ = ctx.first_byte.set(Instant::now());
        }
        received += piece.len() as u64;
        ctx.totals.bytes.fetch_add(piece.len() as u64, Ordering::Relaxed);
        if received > d.size {
            return Err(err(ErrorKind::SizeMismatch, format!("GET {url}: body longer than {}", d.size)));
        }
        hasher.update(&piece);
    }
    if received < d.size {
        return Err(err(ErrorKind::ShortBody, format!("GET {url}: {received} of {} bytes", d.size)));
    }
    let got = hasher.finish();
    if got != d.digest {
        return Err(err(ErrorKind::DigestMismatch, format!("GET {url}: body digest {got}")));
    }
    Ok(received)
}

/// `Ok(None)` when the server answered a chunk with 200 (Range ignored).
async fn fetch_chunked(ctx: &Ctx<'_>, d: &Descriptor, plan: &[Chunk], track: bool) -> Result<Option<u64>, PullError> {
    let url = ctx.url("blobs", &d.digest);
    let mut hasher = Hasher::for_digest(&d.digest);
    let mut received = 0u64;
    // `buffered` runs up to range_parallel chunks at once and yields them in order, so the hash sees the
    // blob in order while later chunks are still downloading (at most range_parallel chunks in memory).
    let url_ref = &url;
    let size = d.size;
    let mut chunks = stream::iter(plan.iter().copied().enumerate())
        .map(|(i, c)| async move { fetch_chunk(ctx, url_ref, size, c, track && i == 0).await })
        .buffered(ctx.cfg.range_parallel.max(1));
    while let Some(r) = chunks.next().await {
        let Some(bytes) = r? else { return Ok(None) };
        received += bytes.len() as u64;
        hasher.update(&bytes);
    }
    let got = hasher.finish();
    if got != d.digest {
        return Err(err(ErrorKind::DigestMismatch, format!("GET {url} in {} ranges: digest {got}", plan.len())));
    }
    Ok(Some(received))
}

async fn fetch_chunk(ctx: &Ctx<'_>, url: &str, size: u64, c: Chunk, track: bool) -> Result<Option<Bytes>, PullError> {
    let range = c.header();
    let (resp, _permit) = ctx.send(Method::GET, url, Some(&range)).await?;
    let what = || format!("GET {url} Range {range}");
    match resp.status() {
        StatusCode::PARTIAL_CONTENT => {}
        StatusCode::OK => return Ok(None),
        s => return Err(err(ErrorKind::Status, format!("{}: {s}", what()))),
    }
    let cr = resp.headers().get(CONTENT_RANGE).and_then(|v| v.to_str().ok()).and_then(chunks::parse_content_range);
    match cr {
        Some((s, e, total)) if s == c.start && e == c.end && total.is_none_or(|t| t == size) => {}
        _ => return Err(err(ErrorKind::SizeMismatch, format!("{}: Content-Range {cr:?}", what()))),
    }
    let mut buf = BytesMut::with_capacity(c.len() as usize);
    let mut body = resp.bytes_stream();
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| transport(e, true, &format!("{} after {} bytes", what(), buf.len())))?;
        if piece.is_empty() {
            continue;
        }
        if track && buf.is_empty() {
            let _ = ctx.first_byte.set(Instant::now());
        }
        ctx.totals.bytes.fetch_add(piece.len() as u64, Ordering::Relaxed);
        if (buf.len() + piece.len()) as u64 > c.len() {
            return Err(err(ErrorKind::SizeMismatch, format!("{}: body longer than the range", what())));
        }
        buf.extend_from_slice(&piece);
    }
    if (buf.len() as u64) < c.len() {
        return Err(err(ErrorKind::ShortBody, format!("{}: {} of {} bytes", what(), buf.len(), c.len())));
    }
    Ok(Some(buf.freeze()))
}

fn content_length(resp: &reqwest::Response) -> Option<u64> {
    resp.headers().get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    /// The hasher for `digest`'s algorithm (digests were checked to be sha256 or sha512 before).
    fn for_digest(digest: &str) -> Hasher {
        if digest.starts_with("sha512:") {
            Hasher::Sha512(Sha512::new())
        } else {
            Hasher::Sha256(Sha256::new())
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex(&h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex(&h.finalize())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256:<hex>` of `data`.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// The digest of `data` in the algorithm of `reference` (a digest string).
fn digest_with(reference: &str, data: &[u8]) -> String {
    let mut h = Hasher::for_digest(reference);
    h.update(data);
    h.finish()
}

/// Elapsed seconds from `t0`, for reports.
pub fn since(t0: Instant, t: Instant) -> Duration {
    t.saturating_duration_since(t0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        assert_eq!(digest_of(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let d512 = digest_with("sha512:x", b"");
        assert!(d512.starts_with("sha512:cf83e1357eefb8bdf1542850d66d8007"));
        assert_eq!(d512.len(), 7 + 128);
    }

    #[test]
    fn verification_kinds() {
        assert!(ErrorKind::DigestMismatch.is_verification());
        assert!(ErrorKind::ShortBody.is_verification());
        assert!(ErrorKind::SizeMismatch.is_verification());
        assert!(!ErrorKind::Status.is_verification());
        assert!(!ErrorKind::Connect.is_verification());
    }
}
