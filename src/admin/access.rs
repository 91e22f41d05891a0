//! Who may use the admin API: loopback peers always; peers inside a network
//! listed under `admin.allow`; and anyone presenting `Authorization: Bearer
//! <token>` with the configured token (compared in constant time, through
//! its SHA-256, so neither its bytes nor its length leak through timing).
//! The rules are parsed and checked when the configuration is loaded
//! ([`crate::config::admin`]); here a request is checked against them, before
//! its body is read.

use std::net::IpAddr;

use crate::config::admin::{token_sha256, Access};

/// Why a request was let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    Loopback,
    Network,
    Token,
}

/// Whether a request from `peer` carrying `authorization` may use the admin API under `access`.
pub fn check(access: &Access, peer: IpAddr, authorization: Option<&str>) -> Option<Grant> {
    if peer.to_canonical().is_loopback() {
        return Some(Grant::Loopback);
    }
    if access.networks().iter().any(|n| n.contains(peer)) {
        return Some(Grant::Network);
    }
    let (expected, presented) = (access.token_sha256()?, bearer(authorization?)?);
    constant_time_eq(expected, &token_sha256(presented)).then_some(Grant::Token)
}

/// The token of an `Authorization: Bearer <token>` value.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the compiler from turning the fold back into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::admin::AdminConfig;

    fn access(yaml: &str) -> Access {
        let config: AdminConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        let access = Access::from_config(Some(&config), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        access
    }

    #[test]
    fn who_is_let_in() {
        let a = access("allow: [192.0.2.0/24]\ntoken: 0123456789abcdef0123\n");
        let outside: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(check(&a, "127.0.0.1".parse().unwrap(), None), Some(Grant::Loopback));
        assert_eq!(check(&a, "::1".parse().unwrap(), None), Some(Grant::Loopback));
        assert_eq!(check(&a, "192.0.2.9".parse().unwrap(), None), Some(Grant::Network));
        assert_eq!(check(&a, outside, None), None);
        assert_eq!(check(&a, outside, Some("Bearer 0123456789abcdef0123")), Some(Grant::Token));
        assert_eq!(check(&a, outside, Some("bearer  0123456789abcdef0123 ")), Some(Grant::Token));
        assert_eq!(check(&a, outside, Some("Bearer 0123456789abcdef012")), None);
        assert_eq!(check(&a, outside, Some("Basic 0123456789abcdef0123")), None);
        assert_eq!(check(&Access::default(), outside, Some("Bearer x")), None);
    }

    #[test]
    fn a_token_file_opens_it_too() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  fedcba9876543210fedcba\n").unwrap();
        let a = access(&format!("tokenFile: {}\n", file.display()));
        let outside: IpAddr = "203.0.113.5".parse().unwrap();
        assert_eq!(check(&a, outside, Some("Bearer fedcba9876543210fedcba")), Some(Grant::Token));
        assert_eq!(check(&a, outside, Some("Bearer   fedcba9876543210fedcba\n")), Some(Grant::Token));
        assert_eq!(check(&a, outside, Some("Bearer fedcba9876543210fedcbb")), None);
    }
}
