//! The address guard for upstreams nobody configured. An open mirror must not
//! be a way into internal hosts, so an unlisted upstream, every redirect it
//! sends, and its token realm may only reach public addresses: names are
//! resolved by [`PublicOnly`] on every connection (no pinning, so rotating
//! load-balancer addresses keep working), and IP literals are checked by
//! [`check_url`]. Listed upstreams are trusted, and so are the configured
//! proxies (`HTTP_PROXY`/`HTTPS_PROXY`), which then resolve the target.
//!
//! Names that RFC 6761 reserves as never resolving (`.invalid`) are refused
//! for every upstream, listed or not, by [`check_resolvable`] before any
//! lookup: the system resolver is never asked, and the answer is the one a
//! failed lookup gives (upstream unreachable).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

use super::FetchError;

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The resolver error that says an address was refused (see [`is_refusal`]).
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves to no public address; list it under `registries` in the configuration to allow it")]
pub struct NotPublic(String);

/// Resolves with the system resolver and keeps only public addresses.
pub struct PublicOnly {
    trusted: Arc<HashSet<String>>,
}

impl PublicOnly {
    /// Trusts the hosts of the proxy environment variables.
    pub fn from_env() -> PublicOnly {
        let trusted = ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .filter_map(|u| Url::parse(&u).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase)))
            .collect();
        PublicOnly { trusted: Arc::new(trusted) }
    }
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let trusted = self.trusted.contains(&host);
        Box::pin(async move {
            if is_reserved_invalid(&host) {
                return Err(format!("{host}: RFC 6761 reserves the .invalid domain, which never resolves").into());
            }
            let found = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host.as_str(), 0)))
                .await
                .map_err(|_| format!("resolving {host} timed out"))??;
            let kept: Vec<SocketAddr> = found.filter(|a| trusted || is_public(a.ip())).collect();
            if kept.is_empty() {
                return Err(Box::new(NotPublic(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// Refuses a URL whose host is a non-public IP literal (names go through [`PublicOnly`]).
pub fn check_url(url: &Url) -> Result<(), FetchError> {
    let literal = url.host_str().and_then(|h| h.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok());
    match literal {
        Some(ip) if !is_public(ip) => Err(FetchError::Refused(format!(
            "{ip} is not a public address; list the upstream under `registries` in the configuration to allow it"
        ))),
        _ => Ok(()),
    }
}

/// Fails as a DNS failure would, without asking any resolver, for a host in
/// RFC 6761's `invalid.` domain (`registry.invalid`, `registry.invalid.`).
pub fn check_resolvable(url: &Url) -> Result<(), FetchError> {
    match url.host_str() {
        Some(host) if is_reserved_invalid(host) => Err(FetchError::Unreachable(format!(
            "{host} cannot be resolved: RFC 6761 reserves the .invalid domain, which never resolves"
        ))),
        _ => Ok(()),
    }
}

/// Whether `host` is `invalid` or a name under it, with or without the root dot.
pub fn is_reserved_invalid(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    host == "invalid" || host.ends_with(".invalid")
}

/// Whether a request error came from [`PublicOnly`] refusing every address.
pub fn is_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<NotPublic>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// False for loopback, private (RFC 1918, ULA), link-local, shared (CGNAT),
/// benchmarking, reserved, multicast and unspecified addresses, including
/// IPv4 addresses embedded in IPv6 (mapped, compatible, NAT64, 6to4).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| IpAddr::V4(std::net::Ipv4Addr::from(((hi as u32) << 16) | lo as u32));
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            if s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
                return is_public(embedded(s[6], s[7]));
            }
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public(embedded(s[6], s[7]));
            }
            if s[0] == 0x2002 {
                return is_public(embedded(s[1], s[2]));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2606:4700::1111", "172.32.0.1", "64:ff9b::808:808", "2002:808:808::"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn literal_urls_are_checked() {
        for bad in ["http://169.254.169.254/latest", "https://[::1]:5000/v2/", "http://10.0.0.1/token"] {
            assert!(matches!(check_url(&Url::parse(bad).unwrap()), Err(FetchError::Refused(_))), "{bad}");
        }
        for ok in ["https://registry-1.docker.io/v2/", "https://8.8.8.8/", "https://localhost/"] {
            assert!(check_url(&Url::parse(ok).unwrap()).is_ok(), "{ok}");
        }
    }

    #[test]
    fn the_invalid_domain_is_refused_without_a_lookup() {
        for host in ["registry.invalid", "registry.invalid.", "REGISTRY.INVALID", "invalid", "a.b.invalid:5000"] {
            let url = Url::parse(&format!("https://{host}/v2/")).unwrap();
            let err = check_resolvable(&url).unwrap_err();
            assert!(matches!(&err, FetchError::Unreachable(m) if m.contains("RFC 6761")), "{host}: {err:?}");
        }
        for host in ["registry.example", "invalid.example.com", "notinvalid", "quay.io", "10.0.0.1", "[::1]"] {
            assert!(check_resolvable(&Url::parse(&format!("https://{host}/")).unwrap()).is_ok(), "{host}");
        }
    }

    #[tokio::test]
    async fn names_resolving_to_private_addresses_are_refused() {
        let resolver = PublicOnly { trusted: Arc::default() };
        let err = match resolver.resolve("localhost".parse::<Name>().unwrap()).await {
            Err(e) => e,
            Ok(_) => panic!("localhost resolved to a public address"),
        };
        assert!(is_refusal(err.as_ref()), "{err}");
        let trusted = PublicOnly { trusted: Arc::new(["localhost".to_string()].into()) };
        assert!(trusted.resolve("localhost".parse::<Name>().unwrap()).await.is_ok());
    }
}
