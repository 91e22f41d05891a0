//! Request path → typed [`Route`], parsed from the right because repository
//! names have any number of `/`-separated components; then the upstream is
//! chosen: `?ns=` first, else a first path segment that is a registry host,
//! else `--default-ns`.

use super::error::ApiError;
use super::x_registry::XRegistry;
use crate::fetch::Source;
use crate::oci::{Digest, NameError, OciCode, Reference, RegistryName, RepoName};
use crate::query::percent_decode;

/// What a request asks for, before the upstream is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/`: answered as the Go ociregistry answers it (200, JSON `null`).
    Root,
    /// `/v2/`: the API version check.
    Base,
    /// `/v2/auth`: the Go ociregistry's token endpoint (see `handler`).
    TokenAuth,
    Manifest {
        name: String,
        reference: String,
    },
    Blob {
        name: String,
        digest: String,
    },
    TagsList {
        name: String,
    },
    Referrers {
        name: String,
        digest: String,
    },
    /// `/v2/_catalog` and the push endpoints: a pull-through cache has none.
    Unsupported,
    NotFound,
}

pub fn parse(path: &str) -> Route {
    if path == "/" {
        return Route::Root;
    }
    let Some(rest) = path.strip_prefix("/v2") else {
        return Route::NotFound;
    };
    let rest = match rest.strip_prefix('/') {
        Some(rest) => rest,
        None if rest.is_empty() => return Route::Base,
        // `/v2x/...`: not under `/v2/`.
        None => return Route::NotFound,
    };
    if rest.is_empty() {
        return Route::Base;
    }
    if rest == "_catalog" {
        return Route::Unsupported;
    }
    if rest == "auth" {
        return Route::TokenAuth;
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let n = segments.len();
    if n >= 3 {
        let name = segments[..n - 2].join("/");
        let (kind, last) = (segments[n - 2], segments[n - 1]);
        match kind {
            "manifests" => return Route::Manifest { name, reference: last.to_string() },
            "blobs" if last == "uploads" => return Route::Unsupported,
            "blobs" => return Route::Blob { name, digest: last.to_string() },
            "tags" if last == "list" => return Route::TagsList { name },
            "referrers" => return Route::Referrers { name, digest: last.to_string() },
            _ => {}
        }
    }
    if n >= 4 && segments[n - 3] == "uploads" && segments[n - 4] == "blobs" {
        return Route::Unsupported;
    }
    if segments.iter().rev().skip(1).any(|s| *s == "uploads") {
        return Route::Unsupported;
    }
    Route::NotFound
}

/// The value of `?ns=`, URL-decoded. (containerd sends it on every request,
/// so this is a plain scan, not a general query parser.)
pub fn ns_param(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| pair.strip_prefix("ns=")).map(percent_decode).filter(|v| !v.is_empty())
}

/// The upstream a request names outside its path: the `X-Registry` header
/// first (the Go ociregistry's highest priority; parsed with the head, see
/// `x_registry`), else `?ns=`. What it names then meets the same rules as any
/// other upstream name (`denyUnlisted`, public addresses only for unlisted
/// upstreams).
pub fn upstream_override(req: &super::http::Request) -> Result<Option<RegistryName>, ApiError> {
    match &req.x_registry {
        XRegistry::Named(name) => Ok(Some(name.clone())),
        XRegistry::Invalid(why) => Err(ApiError::new(400, OciCode::NameInvalid, format!("X-Registry: {why}"))
            .detail("X-Registry names one upstream registry as host[:port], e.g. quay.io or 10.0.0.5:5000")),
        XRegistry::Absent => ns_param(req.query.as_deref()).map(|ns| ns.parse().map_err(name_error)).transpose(),
    }
}

/// Chooses the upstream and canonical repository for a requested name.
pub fn resolve(name: &str, ns: Option<&RegistryName>, default_ns: Option<&RegistryName>) -> Result<Source, ApiError> {
    if name.len() > crate::oci::reference::MAX_REPO_NAME {
        return Err(name_error(NameError::RepoTooLong));
    }
    let (registry, repo) = if let Some(ns) = ns {
        (ns.clone(), name)
    } else {
        match name.split_once('/') {
            Some((first, rest)) if RegistryName::looks_like_host(first) => (first.parse().map_err(name_error)?, rest),
            _ => match default_ns {
                Some(d) => (d.clone(), name),
                None => {
                    return Err(ApiError::new(
                        404,
                        OciCode::NameUnknown,
                        format!("no upstream registry for {name:?}"),
                    )
                    .detail("name the registry with ?ns=<registry>, as the first path segment (/v2/<registry>/<repo>/...), or start the server with --default-ns"))
                }
            },
        }
    };
    let repo = repo.parse::<RepoName>().map_err(name_error)?.canonical_for(&registry);
    Ok(Source { registry, repo })
}

/// A manifest reference: a tag or a digest. Anything else names no manifest
/// that could exist, so it is unknown (404 `MANIFEST_UNKNOWN`, as the
/// distribution spec's conformance suite expects), not a bad request.
pub fn parse_reference(s: &str) -> Result<Reference, ApiError> {
    s.parse::<Reference>().map_err(|e| ApiError::new(404, OciCode::ManifestUnknown, e.to_string()))
}

pub fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    s.parse::<Digest>().map_err(|e| ApiError::new(400, OciCode::DigestInvalid, e.to_string()))
}

fn name_error(e: NameError) -> ApiError {
    ApiError::new(400, OciCode::NameInvalid, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, r: &str) -> Route {
        Route::Manifest { name: name.into(), reference: r.into() }
    }

    #[test]
    fn routes() {
        assert_eq!(parse("/v2/"), Route::Base);
        assert_eq!(parse("/v2"), Route::Base);
        assert_eq!(parse("/v2/a/manifests/v1"), m("a", "v1"));
        assert_eq!(parse("/v2/a/b/c/d/e/manifests/v1"), m("a/b/c/d/e", "v1"));
        assert_eq!(parse("/v2/quay.io/calico/node/manifests/v3.28.0"), m("quay.io/calico/node", "v3.28.0"));
        assert_eq!(parse("/v2/a/blobs/sha256:x"), Route::Blob { name: "a".into(), digest: "sha256:x".into() });
        assert_eq!(parse("/v2/a/manifests/manifests/x"), m("a/manifests", "x"));
        assert_eq!(parse("/v2/a/tags/list"), Route::TagsList { name: "a".into() });
        assert_eq!(parse("/v2/a/referrers/sha256:x"), Route::Referrers { name: "a".into(), digest: "sha256:x".into() });
        assert_eq!(parse("/v2/_catalog"), Route::Unsupported);
        assert_eq!(parse("/v2/a/blobs/uploads/"), Route::Unsupported);
        assert_eq!(parse("/v2/a/blobs/uploads/1234"), Route::Unsupported);
        assert_eq!(parse("/v2/a/blobs/uploads"), Route::Unsupported);
        assert_eq!(parse("/v2/manifests/x"), Route::NotFound);
        assert_eq!(parse("/v3/"), Route::NotFound);
        assert_eq!(parse("/v2x"), Route::NotFound);
        assert_eq!(parse("/"), Route::Root);
        assert_eq!(parse("/v2/auth"), Route::TokenAuth);
        assert_eq!(parse("/v2/auth/manifests/v1"), m("auth", "v1"));
        assert_eq!(parse("//"), Route::NotFound);
    }

    /// Found by the `route` fuzz target: `/v2a/manifests/latest` was routed as `a`'s manifest.
    #[test]
    fn only_paths_under_v2_slash_are_routed() {
        assert_eq!(parse("/v2a/manifests/latest"), Route::NotFound);
        assert_eq!(parse("/v2library/alpine/blobs/sha256:x"), Route::NotFound);
        assert_eq!(parse("/v2_catalog"), Route::NotFound);
        assert_eq!(parse("/v2//"), Route::NotFound);
        assert_eq!(parse("/v2/a/manifests/latest"), m("a", "latest"));
    }

    #[test]
    fn upstream_selection() {
        let hub: RegistryName = "docker.io".parse().unwrap();
        let quay: RegistryName = "quay.io".parse().unwrap();
        let s = resolve("library/alpine", Some(&hub), None).unwrap();
        assert_eq!(s.to_string(), "docker.io/library/alpine");
        let s = resolve("alpine", Some(&"registry-1.docker.io".parse().unwrap()), None).unwrap();
        assert_eq!(s.to_string(), "docker.io/library/alpine");
        let s = resolve("quay.io/calico/node", None, Some(&hub)).unwrap();
        assert_eq!(s.to_string(), "quay.io/calico/node");
        let s = resolve("docker.io/nginx", None, None).unwrap();
        assert_eq!(s.to_string(), "docker.io/library/nginx");
        let s = resolve("localhost/x", None, None).unwrap();
        assert_eq!(s.registry.as_str(), "localhost");
        let s = resolve("127.0.0.1:5001/test/app", None, None).unwrap();
        assert_eq!(s.to_string(), "127.0.0.1:5001/test/app");
        let s = resolve("nginx", None, Some(&hub)).unwrap();
        assert_eq!(s.to_string(), "docker.io/library/nginx");
        let e = resolve("nginx", None, None).unwrap_err();
        assert_eq!((e.status, e.code), (404, OciCode::NameUnknown));
        let e = resolve("Upper/case", Some(&quay), None).unwrap_err();
        assert_eq!((e.status, e.code), (400, OciCode::NameInvalid));
        let e = resolve(&"a".repeat(256), Some(&quay), None).unwrap_err();
        assert_eq!(e.code, OciCode::NameInvalid);
    }

    #[test]
    fn ns_is_url_decoded() {
        assert_eq!(ns_param(Some("ns=127.0.0.1%3A5001")).as_deref(), Some("127.0.0.1:5001"));
        assert_eq!(ns_param(Some("x=1&ns=docker.io")).as_deref(), Some("docker.io"));
        assert_eq!(ns_param(Some("ns=")), None);
        assert_eq!(ns_param(Some("ns=a%")).as_deref(), Some("a%"));
        assert_eq!(ns_param(Some("ns=%zz%3a")).as_deref(), Some("%zz:"));
        assert_eq!(ns_param(Some("xns=a")), None);
        assert_eq!(ns_param(None), None);
    }

    #[test]
    fn bad_references() {
        for r in [".INVALID_MANIFEST_NAME", "sha256:totallywrong", "md5:abc", "", "a:b"] {
            let e = parse_reference(r).unwrap_err();
            assert_eq!((e.status, e.code), (404, OciCode::ManifestUnknown), "{r:?}");
        }
        assert_eq!(parse_digest("sha1:abc").unwrap_err().code, OciCode::DigestInvalid);
        assert!(parse_reference("v1.0").is_ok());
    }

    #[test]
    fn x_registry_comes_before_ns_and_is_one_host_port() {
        use crate::serve::http::Request;
        let req = |x: &[&str], query: Option<&str>| {
            let mut r = Request { query: query.map(str::to_string), ..Request::default() };
            x.iter().for_each(|v| r.x_registry.add_line(v.as_bytes()));
            r
        };
        let chosen = |r: Request| upstream_override(&r).map(|n| n.map(|n| n.as_str().to_string()));
        assert_eq!(chosen(req(&[], Some("ns=quay.io"))).unwrap().as_deref(), Some("quay.io"));
        assert_eq!(chosen(req(&[], Some("ns=registry-1.docker.io"))).unwrap().as_deref(), Some("docker.io"));
        assert_eq!(chosen(req(&[], None)).unwrap(), None);
        assert_eq!(chosen(req(&["GHCR.io"], Some("ns=quay.io"))).unwrap().as_deref(), Some("ghcr.io"));
        assert_eq!(chosen(req(&["index.docker.io"], None)).unwrap().as_deref(), Some("docker.io"));
        for bad in [&["quay.io/x"][..], &["quay.io", "quay.io"], &[&"a".repeat(256)]] {
            let e = chosen(req(bad, Some("ns=quay.io"))).unwrap_err();
            assert_eq!((e.status, e.code), (400, OciCode::NameInvalid), "{bad:?}");
            assert!(e.message.starts_with("X-Registry: "), "{}", e.message);
        }
        let e = chosen(req(&[], Some("ns=quay.io/x"))).unwrap_err();
        assert_eq!((e.status, e.code), (400, OciCode::NameInvalid));
    }
}
