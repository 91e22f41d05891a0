//! Each serving thread's finished answers to the requests it sees again and
//! again: a manifest or small-blob hit is kept as its complete response bytes
//! (head and body, in one buffer) under the request target, the `Accept`
//! lines and the upstream an `X-Registry` header names (two upstreams never
//! share an answer). A repeated request is then answered with one hash lookup and one
//! write: no routing, no store lock, no header formatting, no allocation.
//!
//! Answers by digest never change (content addressing). Answers that went
//! through a tag are kept only while the store's generation is the one they
//! were built in: any tag change or removal in the store bumps it, and the
//! thread drops every such answer at its next lookup; a removal from the
//! store (prune, repair) drops every kept answer. A kept manifest answer
//! notes its pull (see `pulls`) at most once per second. Only HTTP/1.1
//! keep-alive answers without a `Range` are kept, so the framing is fixed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use bytes::Bytes;

use super::http::{Method, Request};
use super::pulls::Pulls;
use super::response::Kind;
use super::x_registry::XRegistry;
use crate::metrics::UpstreamId;
use crate::oci::{Digest, RegistryName};
use crate::store::REMOVED;

/// Entries kept per thread; past this (or [`MAX_BYTES`]) the cache starts over.
const MAX_ENTRIES: usize = 4096;
/// Bytes of responses kept per thread.
const MAX_BYTES: usize = 4 * 1024 * 1024;

/// Whether an answer may be reused, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Not kept (misses, errors, anything that depends on more than the request).
    No,
    /// Content-addressed: valid as long as it is cached.
    Immutable,
    /// Resolved through a tag: valid until the store's generation changes.
    WhileGeneration,
}

/// A kept answer as found.
pub struct Kept {
    /// Head and body.
    pub response: Bytes,
    pub head_len: usize,
    pub kind: Kind,
    pub upstream: Option<UpstreamId>,
}

/// A kept answer.
struct Hot {
    /// Head and body.
    response: Bytes,
    head_len: usize,
    kind: Kind,
    /// The upstream it is counted for.
    upstream: Option<UpstreamId>,
    path: Box<str>,
    query: Option<Box<str>>,
    accept: Box<[Box<str>]>,
    /// The upstream the request's `X-Registry` named.
    x_registry: Option<RegistryName>,
    /// Store generation it depends on, if it went through a tag.
    generation: Option<u64>,
    /// The manifest it pulls, and the second its pull was last noted.
    pulled: Option<(Digest, Cell<u64>)>,
}

impl Hot {
    /// Whether this is the answer to `req` (its key is only a hash).
    fn matches(&self, req: &Request) -> bool {
        *self.path == *req.path
            && self.query.as_deref() == req.query.as_deref()
            && self.accept.len() == req.accept.len()
            && self.accept.iter().zip(&req.accept).all(|(a, b)| **a == **b)
            && self.x_registry.as_ref() == req.x_registry.named()
    }
}

#[derive(Default)]
pub struct HotResponses {
    map: RefCell<HashMap<u64, Hot, Identity>>,
    bytes: Cell<usize>,
    /// The store generation the tag-dependent entries were built in.
    generation: Cell<u64>,
    hasher: std::collections::hash_map::RandomState,
}

impl HotResponses {
    /// Whether `req` may be answered from here at all.
    pub fn eligible(req: &Request) -> bool {
        matches!(req.method, Method::Get | Method::Head)
            && req.keep_alive
            && !req.http10
            && !req.has_body
            && req.range.is_none()
            && !matches!(req.x_registry, XRegistry::Invalid(_))
    }

    /// The kept answer to `req`, if any; `generation` is the store's now.
    /// A manifest answer is noted in `pulls`.
    pub fn get(&self, req: &Request, generation: u64, pulls: &Pulls) -> Option<Kept> {
        if self.generation.get() != generation {
            let mut map = self.map.borrow_mut();
            if self.generation.get() / REMOVED != generation / REMOVED {
                map.clear();
            }
            map.retain(|_, h| h.generation.is_none());
            self.bytes.set(map.values().map(|h| h.response.len()).sum());
            self.generation.set(generation);
        }
        let map = self.map.borrow();
        let hot = map.get(&self.key(req)).filter(|h| h.matches(req))?;
        if let Some((digest, noted)) = &hot.pulled {
            if noted.get() != pulls.now() {
                noted.set(pulls.now());
                pulls.note(digest);
            }
        }
        Some(Kept { response: hot.response.clone(), head_len: hot.head_len, kind: hot.kind, upstream: hot.upstream })
    }

    /// Keeps `response` (`head_len` bytes of head, then the body) as the
    /// answer to `req`; `pulled` is the manifest it pulls, noted already.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &self,
        req: &Request,
        response: Bytes,
        head_len: usize,
        (kind, upstream): (Kind, Option<UpstreamId>),
        reuse: Reuse,
        generation: u64,
        pulled: Option<(Digest, u64)>,
    ) {
        let generation = match reuse {
            Reuse::No => return,
            Reuse::Immutable => None,
            Reuse::WhileGeneration if generation != self.generation.get() => return,
            Reuse::WhileGeneration => Some(generation),
        };
        let mut map = self.map.borrow_mut();
        if map.len() >= MAX_ENTRIES || self.bytes.get() + response.len() > MAX_BYTES {
            map.clear();
            self.bytes.set(0);
            if response.len() > MAX_BYTES {
                return;
            }
        }
        let accept = req.accept.iter().map(|a| a.as_str().into()).collect();
        self.bytes.set(self.bytes.get() + response.len());
        let (path, query) = (req.path.as_str().into(), req.query.as_deref().map(Into::into));
        let pulled = pulled.map(|(d, noted)| (d, Cell::new(noted)));
        let x_registry = req.x_registry.named().cloned();
        let hot = Hot { response, head_len, kind, upstream, path, query, accept, x_registry, generation, pulled };
        if let Some(old) = map.insert(self.key(req), hot) {
            self.bytes.set(self.bytes.get() - old.response.len());
        }
    }

    fn key(&self, req: &Request) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(req.path.as_bytes());
        h.write_u8(0);
        if let Some(q) = &req.query {
            h.write(q.as_bytes());
        }
        for a in &req.accept {
            h.write_u8(1);
            h.write(a.as_bytes());
        }
        if let Some(name) = req.x_registry.named() {
            h.write_u8(2);
            h.write(name.as_str().as_bytes());
        }
        h.finish()
    }
}

/// The keys are hashes already.
#[derive(Default, Clone)]
struct Identity;

impl BuildHasher for Identity {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, query: Option<&str>, accept: &[&str]) -> Request {
        Request {
            method: Method::Get,
            path: path.into(),
            query: query.map(Into::into),
            accept: accept.iter().map(|a| a.to_string()).collect(),
            range: None,
            keep_alive: true,
            http10: false,
            has_body: false,
            ..Request::default()
        }
    }

    #[test]
    fn answers_are_kept_per_target_and_accept_and_tag_answers_follow_the_generation() {
        let hot = HotResponses::default();
        let pulls = Pulls::default();
        let a = req("/v2/r/manifests/v1", Some("ns=docker.io"), &["x/y"]);
        let resp = Bytes::from_static(b"HEAD\r\n\r\nbody");
        hot.insert(&a, resp.clone(), 8, (Kind::Manifest, None), Reuse::WhileGeneration, 0, None);
        assert_eq!(hot.get(&a, 0, &pulls).map(|k| (k.response, k.head_len)), Some((resp.clone(), 8)));
        assert!(hot.get(&req("/v2/r/manifests/v1", Some("ns=docker.io"), &["x/z"]), 0, &pulls).is_none());
        assert!(hot.get(&req("/v2/r/manifests/v1", None, &["x/y"]), 0, &pulls).is_none());
        assert!(hot.get(&req("/v2/r/manifests/v1", Some("ns=quay.io"), &["x/y"]), 0, &pulls).is_none());

        let d = req("/v2/r/blobs/sha256:ab", None, &[]);
        hot.insert(&d, resp.clone(), 8, (Kind::Blob, None), Reuse::Immutable, 0, None);
        assert!(hot.get(&a, 1, &pulls).is_none(), "a tag answer is dropped when the store changes");
        assert!(hot.get(&d, 1, &pulls).is_some(), "a digest answer stays");
        hot.insert(&a, resp.clone(), 8, (Kind::Manifest, None), Reuse::WhileGeneration, 0, None);
        assert!(hot.get(&a, 1, &pulls).is_none(), "an answer built in an older generation is not kept");
        hot.insert(&a, resp.clone(), 8, (Kind::Manifest, None), Reuse::No, 1, None);
        assert!(hot.get(&a, 1, &pulls).is_none());

        let mut refused = req("/v2/r/blobs/sha256:ab", None, &[]);
        refused.x_registry.add_line(b"quay.io/x");
        assert!(HotResponses::eligible(&d));
        assert!(!HotResponses::eligible(&refused), "an X-Registry naming no upstream");
        let mut ranged = d;
        ranged.range = Some("bytes=0-1".into());
        assert!(!HotResponses::eligible(&ranged));
    }

    #[test]
    fn answers_are_kept_per_upstream_an_x_registry_names() {
        let hot = HotResponses::default();
        let pulls = Pulls::default();
        let named = |x: Option<&str>| {
            let mut r = req("/v2/r/manifests/v1", None, &["x/y"]);
            x.into_iter().for_each(|x| r.x_registry.add_line(x.as_bytes()));
            assert!(HotResponses::eligible(&r));
            r
        };
        let (a, b) = (Bytes::from_static(b"H\r\n\r\nfrom a"), Bytes::from_static(b"H\r\n\r\nfrom b"));
        hot.insert(&named(Some("a.example")), a.clone(), 5, (Kind::Manifest, None), Reuse::WhileGeneration, 0, None);
        assert!(hot.get(&named(Some("b.example")), 0, &pulls).is_none());
        assert!(hot.get(&named(None), 0, &pulls).is_none());
        hot.insert(&named(Some("b.example")), b.clone(), 5, (Kind::Manifest, None), Reuse::WhileGeneration, 0, None);
        let got = |x| hot.get(&named(Some(x)), 0, &pulls).map(|k| k.response);
        assert_eq!((got("a.example"), got("b.example")), (Some(a.clone()), Some(b)));
        assert_eq!(got("A.example"), Some(a), "the same upstream, named in another case");
    }

    #[test]
    fn stays_within_its_byte_budget() {
        let hot = HotResponses::default();
        let pulls = Pulls::default();
        let big = Bytes::from(vec![0u8; MAX_BYTES / 3]);
        for i in 0..10 {
            hot.insert(
                &req(&format!("/v2/r/blobs/{i}"), None, &[]),
                big.clone(),
                0,
                (Kind::Blob, None),
                Reuse::Immutable,
                0,
                None,
            );
            assert!(hot.bytes.get() <= MAX_BYTES);
        }
        assert!(hot.get(&req("/v2/r/blobs/9", None, &[]), 0, &pulls).is_some());
    }

    #[test]
    fn a_removal_drops_every_kept_answer_and_kept_manifests_note_their_pulls() {
        let hot = HotResponses::default();
        let pulls = Pulls::default();
        let m = req("/v2/r/manifests/sha256:ab", None, &[]);
        let d = Digest::of(crate::oci::Algorithm::Sha256, b"m");
        let resp = Bytes::from_static(b"HEAD\r\n\r\nbody");
        hot.insert(&m, resp.clone(), 8, (Kind::Manifest, None), Reuse::Immutable, 0, Some((d.clone(), pulls.now())));
        assert!(hot.get(&m, 0, &pulls).is_some());
        assert!(pulls.noted().is_empty(), "already noted when it was answered this second");
        hot.map.borrow().values().for_each(|h| h.pulled.as_ref().unwrap().1.set(0));
        assert!(hot.get(&m, 3, &pulls).is_some(), "a tag change keeps digest answers");
        assert_eq!(pulls.noted(), vec![(d, pulls.now())], "noted again in a later second");
        assert!(hot.get(&m, 3 + REMOVED, &pulls).is_none(), "a removal drops it");
    }
}
