//! What a handler answers: status, headers, and a body that is either in
//! memory, a committed blob file, or a download in flight. `CacheStatus` says
//! how it was served; it goes out as `X-Cache` and into the access log.

use std::path::PathBuf;

use bytes::Bytes;

use super::error::ApiError;
pub use super::hot::Reuse;
use crate::fetch::Reader;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the cache.
    Hit,
    /// Fetched from upstream for this request.
    Miss,
    /// Streamed from a download that is still in flight.
    Stream,
    /// Not cacheable content (errors, API base, tag lists).
    None,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stream => "STREAM",
            CacheStatus::None => "-",
        }
    }
}

pub enum Body {
    Empty,
    /// No body is sent but its length is announced (answers to HEAD).
    Sized(u64),
    Bytes(Bytes),
    /// `len` bytes of a committed file of `size` bytes, from `offset`.
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
        size: u64,
    },
    /// Bytes `[start, end)` of an in-flight download; `end` is `None` when the
    /// size is not known yet (the body is then sent chunked).
    Download {
        reader: Reader,
        start: u64,
        end: Option<u64>,
    },
}

impl Body {
    /// The Content-Length to announce, `None` for chunked.
    pub fn length(&self) -> Option<u64> {
        match self {
            Body::Empty => Some(0),
            Body::Sized(n) => Some(*n),
            Body::Bytes(b) => Some(b.len() as u64),
            Body::File { len, .. } => Some(*len),
            Body::Download { start, end, .. } => end.map(|e| e - start),
        }
    }
}

/// What a successful answer carried, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Manifest,
    Blob,
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
    pub cache: CacheStatus,
    pub kind: Option<Kind>,
    /// Whether the serving thread may keep this answer for the same request.
    pub reuse: Reuse,
    /// The manifest this answer pulls, noted as its last-pulled time.
    pub pulled: Option<crate::oci::Digest>,
    /// The upstream whose content this answer carries, for its counters.
    pub upstream: Option<crate::metrics::UpstreamId>,
    /// A manifest miss answered without an upstream request of its own (it
    /// joined another request's fetch, or the store had it by then): the Go
    /// ociregistry counts it as a cached pull.
    pub joined: bool,
}

impl Response {
    pub fn new(status: u16, body: Body, cache: CacheStatus) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body,
            cache,
            kind: None,
            reuse: Reuse::No,
            pulled: None,
            upstream: None,
            joined: false,
        }
    }

    pub fn reuse(mut self, reuse: Reuse) -> Response {
        self.reuse = reuse;
        self
    }

    pub fn pulled(mut self, digest: crate::oci::Digest) -> Response {
        self.pulled = Some(digest);
        self
    }

    pub fn kind(mut self, kind: Kind) -> Response {
        self.kind = Some(kind);
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    pub fn json(status: u16, body: impl Into<Bytes>) -> Response {
        Response::new(status, Body::Bytes(body.into()), CacheStatus::None).header("Content-Type", "application/json")
    }
}

impl From<ApiError> for Response {
    fn from(e: ApiError) -> Response {
        let mut r = Response::json(e.status, e.body());
        r.headers.extend(e.headers);
        r
    }
}
