//! Entry points for the fuzz targets: one function per target, each taking
//! raw bytes from a hostile client, upstream or config file. The cargo-fuzz
//! targets in `fuzz/fuzz_targets/` call them, and `tests/fuzz_corpus.rs`
//! replays every committed input in `fuzz/corpus/<target>/` through them on
//! stable Rust, so a found crash stays fixed.
//!
//! Each function must never panic, whatever its input. Besides not
//! panicking, each checks cheap invariants of what the parser accepted (a
//! parsed value displays as what re-parses to it, a range lies inside its
//! body, nothing that reaches a header holds CR or LF); a broken invariant
//! panics, which is what the fuzzer reports.

use crate::config::FileConfig;
use crate::fetch::{parse_challenge, Challenge};
use crate::oci::media::{self, MediaType};
use crate::oci::{Digest, Reference, RegistryName, RepoName, Tag};
use crate::serve::http::{self, ReadError, Request};
use crate::serve::range::{self, RangeSpec};
use crate::serve::route::{self, Route};

/// A target's entry point: raw bytes in, a panic on a bug.
pub type EntryPoint = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`.
pub const TARGETS: [(&str, EntryPoint); 8] = [
    ("request_head", request_head),
    ("route", route),
    ("reference", reference),
    ("range", range),
    ("www_authenticate", www_authenticate),
    ("manifest", manifest),
    ("config", config),
    ("go_manifest", go_manifest),
];

/// The bytes a client sent, as a serving thread reads them: every pipelined
/// request head they hold, each then routed and its `Accept` and `Range` read.
pub fn request_head(data: &[u8]) {
    let mut rest = data;
    while let Some(used) = one_request_head(rest) {
        rest = &rest[used..];
    }
}

/// Parses and checks the head at the start of `data`; returns its length when complete.
fn one_request_head(data: &[u8]) -> Option<usize> {
    let mut req = Request::default();
    let used = match http::parse_into(data, &mut req) {
        Ok(Some(used)) => used,
        Ok(None) => return None,
        Err(ReadError::Bad(status, _)) => {
            assert!(status == 400 || status == 431, "refused with {status}");
            return None;
        }
        Err(ReadError::Closed) => panic!("parsing alone cannot close"),
    };
    assert!(used > 0 && used <= data.len());
    let visible = |s: &str| !s.bytes().any(|b| b.is_ascii_control() || b == b' ');
    assert!(visible(&req.path), "path {:?}", req.path);
    assert!(req.query.as_deref().is_none_or(visible), "query {:?}", req.query);
    let no_line_end = |s: &str| !s.contains(['\r', '\n']);
    assert!(req.accept.iter().all(|a| no_line_end(a)) && req.range.as_deref().is_none_or(no_line_end));
    // The head alone is complete, and no shorter prefix of it is: a head that
    // arrives in two reads is read as one that arrives whole.
    let mut again = Request::default();
    assert_eq!(http::parse_into(&data[..used], &mut again).ok(), Some(Some(used)));
    for cut in [used - 1, used / 2] {
        assert!(matches!(http::parse_into(&data[..cut], &mut again), Ok(None)), "prefix of {cut} bytes");
    }
    // A connection's reused request carries nothing over from the one before.
    let mut reused = Request::default();
    let busy = b"PUT /v2/x/blobs/uploads/?ns=quay.io HTTP/1.0\r\nAccept: a/b\r\nAccept: c/d\r\nAccept: e/f\r\nRange: bytes=0-1\r\nX-Registry: quay.io\r\nContent-Length: 3\r\n\r\n";
    http::parse_into(busy, &mut reused).expect("busy head").expect("complete");
    assert_eq!(http::parse_into(data, &mut reused).ok(), Some(Some(used)));
    assert_same_request(&reused, &req);
    // What the handler does next with it.
    let _ = route::parse(&req.path);
    let _ = route::ns_param(req.query.as_deref());
    let _ = media::accepts(&req.accept, media::OCI_INDEX);
    check_range(req.range.as_deref(), 1 << 20);
    Some(used)
}

fn assert_same_request(a: &Request, b: &Request) {
    assert_eq!(a.method, b.method);
    assert_eq!((&a.path, &a.query, &a.accept, &a.range), (&b.path, &b.query, &b.accept, &b.range));
    assert_eq!((a.keep_alive, a.http10, a.has_body), (b.keep_alive, b.http10, b.has_body));
    assert_eq!(a.x_registry, b.x_registry);
}

/// A request path, then optionally a line with its query: routed, the
/// upstream resolved with and without a default namespace, and the
/// reference or digest parsed.
pub fn route(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (path, query) = match text.split_once('\n') {
        Some((p, q)) => (p, Some(q)),
        None => (&*text, None),
    };
    let ns = route::ns_param(query);
    assert!(ns.as_deref().is_none_or(|n| !n.is_empty()));
    let parsed = route::parse(path);
    let (name, rendered) = match &parsed {
        Route::Base => (None, "/v2/".to_string()),
        Route::Root => (None, "/".to_string()),
        Route::TokenAuth => (None, "/v2/auth".to_string()),
        Route::Manifest { name, reference } => {
            if let Ok(r) = route::parse_reference(reference) {
                assert_eq!(r.to_string(), *reference);
            }
            (Some(name), format!("/v2/{name}/manifests/{reference}"))
        }
        Route::Blob { name, digest } => {
            if let Ok(d) = route::parse_digest(digest) {
                assert_eq!(d.to_string(), *digest);
            }
            (Some(name), format!("/v2/{name}/blobs/{digest}"))
        }
        Route::TagsList { name } => (Some(name), format!("/v2/{name}/tags/list")),
        Route::Referrers { name, digest } => (Some(name), format!("/v2/{name}/referrers/{digest}")),
        Route::Unsupported | Route::NotFound => (None, String::new()),
    };
    // A route names exactly the path it came from (`/v2` being `/v2/`).
    if !rendered.is_empty() {
        assert!(rendered == path || (parsed == Route::Base && path == "/v2"), "{path:?} routed as {parsed:?}");
    }
    let Some(name) = name else { return };
    let hub: RegistryName = "docker.io".parse().expect("docker.io");
    // An `ns` naming no registry is refused before a name is resolved.
    let Ok(ns_name) = ns.as_deref().map(str::parse::<RegistryName>).transpose() else { return };
    for default_ns in [None, Some(&hub)] {
        let Ok(source) = route::resolve(name, ns_name.as_ref(), default_ns) else { continue };
        assert_eq!(source.registry.to_string().parse::<RegistryName>().ok(), Some(source.registry.clone()));
        if let Some(ns) = &ns {
            assert_eq!(ns.parse::<RegistryName>().ok(), Some(source.registry.clone()));
        }
        // Docker Hub's `library/` may take a name past the length limit; each component stays valid.
        let repo = source.repo.as_str();
        assert!(repo.split('/').all(|c| c.parse::<RepoName>().is_ok()), "{repo:?}");
    }
}

/// One string as every name type: digest, reference, registry, repository, tag, media type.
pub fn reference(data: &[u8]) {
    let s = &*String::from_utf8_lossy(data);
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.to_string(), s);
        assert_eq!(d.to_string().parse::<Digest>().as_ref(), Ok(&d));
        assert!(d.hex().bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }
    if let Ok(r) = s.parse::<Reference>() {
        assert_eq!(r.to_string(), s);
    }
    if let Ok(r) = s.parse::<RegistryName>() {
        let shown = r.to_string();
        assert_eq!(shown.parse::<RegistryName>().as_ref(), Ok(&r));
        assert!(!shown.bytes().any(|b| b.is_ascii_uppercase() || b.is_ascii_whitespace()), "{shown:?}");
        assert!(!r.host().is_empty() && shown.contains(r.host()));
    }
    let _ = RegistryName::looks_like_host(s);
    if let Ok(r) = s.parse::<RepoName>() {
        assert_eq!(r.to_string(), s);
        let hub: RegistryName = "docker.io".parse().expect("docker.io");
        let canonical = r.canonical_for(&hub);
        assert!(canonical.as_str() == s || canonical.as_str() == format!("library/{s}"));
    }
    if let Ok(t) = s.parse::<Tag>() {
        assert_eq!(t.to_string(), s);
        assert!(t.as_str().len() <= 128);
    }
    check_media_type(s);
}

/// A media type that parses is only visible ASCII, so it is safe as a header value.
fn check_media_type(s: &str) {
    let Ok(m) = s.parse::<MediaType>() else { return };
    let shown = m.to_string();
    assert_eq!(shown, s);
    assert!(shown.bytes().all(|b| b.is_ascii_graphic()), "{shown:?}");
    assert!(http::header_value_ok(&shown));
    let json = serde_json::to_string(&m).expect("serialise");
    assert_eq!(serde_json::from_str::<MediaType>(&json).ok(), Some(m));
}

/// A body size (the first 8 bytes, little-endian), then a `Range` header value.
pub fn range(data: &[u8]) {
    let mut size = [0u8; 8];
    let n = data.len().min(8);
    size[..n].copy_from_slice(&data[..n]);
    let size = u64::from_le_bytes(size);
    let header = String::from_utf8_lossy(&data[n..]);
    check_range(Some(&header), size);
    assert_eq!(range::parse(None, size), RangeSpec::Full);
}

fn check_range(header: Option<&str>, size: u64) {
    match range::parse(header, size) {
        RangeSpec::Partial { start, end } => {
            assert!(start < end && end <= size, "{header:?} of {size}: {start}..{end}")
        }
        RangeSpec::Unsatisfiable => assert!(header.is_some_and(|h| h.trim().starts_with("bytes="))),
        RangeSpec::Full => {}
    }
}

/// A `WWW-Authenticate` value from an upstream: what it parses to, written
/// out again, parses to the same challenge.
pub fn www_authenticate(data: &[u8]) {
    let value = String::from_utf8_lossy(data);
    let Some(challenge) = parse_challenge(&value) else { return };
    let rendered = match &challenge {
        Challenge::Basic => "Basic".to_string(),
        Challenge::Bearer { realm, service, scope, error } => {
            let quote = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
            let mut out = format!("Bearer realm={}", quote(realm));
            for (key, v) in [("service", service), ("scope", scope), ("error", error)] {
                if let Some(v) = v {
                    out.push_str(&format!(",{key}={}", quote(v)));
                }
            }
            out
        }
    };
    assert_eq!(parse_challenge(&rendered).as_ref(), Some(&challenge), "{rendered:?}");
}

/// A manifest body from an upstream, optionally after a `Content-Type: …`
/// line: its descriptors read, and its media type decided against that
/// header and each manifest type.
pub fn manifest(data: &[u8]) {
    let (header, body) = match data.strip_prefix(b"Content-Type:") {
        Some(rest) => {
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            (Some(String::from_utf8_lossy(&rest[..end]).into_owned()), rest.get(end + 1..).unwrap_or_default())
        }
        None => (None, data),
    };
    let Ok(info) = media::inspect(body) else { return };
    for d in &info.references {
        assert_eq!(d.digest.to_string().parse::<Digest>().as_ref(), Ok(&d.digest));
    }
    let helm = ["application/vnd.cncf.helm.config.v1+json".to_string()];
    let mut content_types = vec![None, Some("application/json"), Some("application/x; charset=utf-8")];
    content_types.extend(media::MANIFEST_TYPES.iter().copied().map(Some));
    content_types.extend([Some(media::DOCKER_SCHEMA1), Some(helm[0].as_str()), header.as_deref()]);
    for content_type in content_types {
        for artifacts in [&[][..], &helm[..]] {
            let Ok(chosen) = media::effective_media_type(content_type, &info, artifacts) else { continue };
            check_media_type(chosen.as_str());
            match &info.embedded_media_type {
                Some(embedded) => assert_eq!(chosen.as_str(), embedded),
                None if info.is_index => assert!([media::OCI_INDEX, media::DOCKER_LIST].contains(&chosen.as_str())),
                None => assert!(![media::OCI_INDEX, media::DOCKER_LIST].contains(&chosen.as_str())),
            }
        }
    }
}

/// A configuration file's text: parsed, then the names and media types in it
/// checked as startup checks them.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(file) = FileConfig::parse(&text) else { return };
    if let Some(ns) = &file.default_ns {
        let _ = ns.parse::<RegistryName>();
    }
    for t in &file.artifact_types {
        check_media_type(t);
    }
    for r in &file.registries {
        let _ = r.name.parse::<RegistryName>();
    }
}

/// A Go ociregistry manifest file as `migrate` reads it: the first byte
/// picks the directory (`l` for `lts/`, `f` for `fat/`, else `img/`), the
/// rest of the first line is the file's name, what follows is the file. What is
/// accepted hashes to its name, has a media type fit for a header, and an
/// image name that displays as what re-parses to it.
pub fn go_manifest(data: &[u8]) {
    use crate::ops::migrate::go_format::{parse_manifest, Dir};
    let end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let name = String::from_utf8_lossy(data.get(1..end).unwrap_or_default()).into_owned();
    let dir = match data.first() {
        Some(b'l') => Dir::Lts,
        Some(b'f') => Dir::Fat,
        _ => Dir::Img,
    };
    let Ok(m) = parse_manifest(std::ffi::OsStr::new(&name), dir, data.get(end + 1..).unwrap_or_default()) else {
        return;
    };
    assert_eq!(m.digest.hex(), name);
    assert_eq!(Digest::of(m.digest.algorithm(), &m.body), m.digest);
    assert!(m.body.len() <= crate::fetch::MAX_MANIFEST_BYTES);
    check_media_type(m.media_type.as_str());
    assert!(media::MANIFEST_TYPES.contains(&m.media_type.as_str()));
    let shown = m.image.to_string();
    assert!(!shown.contains(['\r', '\n']), "{shown:?}");
    assert_eq!(crate::ops::load::ImageRef::parse(&shown).as_ref(), Ok(&m.image));
    assert!(m.image.digest.as_ref().is_none_or(|d| d == &m.digest));
    assert!(m.image.tag.is_some() != m.image.digest.is_some());
    if dir == Dir::Lts {
        assert!(m.image.tag.as_ref().is_some_and(|t| t.as_str().eq_ignore_ascii_case("latest")));
    }
}
