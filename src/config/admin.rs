//! The admin API's access settings (`admin:`): the key as written
//! ([`AdminConfig`]) and the checked rules it becomes ([`Access`]): the
//! networks listed under `admin.allow` and the SHA-256 of the token (`token`
//! or `tokenFile`), never the token itself. Parsed and checked when the file
//! is loaded, every problem naming its key; applying the rules to a request
//! is `admin::access`'s.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// The shortest token accepted: a guessable one would open the admin API to
/// every network the server listens on.
pub const MIN_TOKEN_LEN: usize = 16;
/// The most networks `admin.allow` may list.
pub const MAX_NETWORKS: usize = 256;

/// The `admin:` key of the configuration file, as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdminConfig {
    /// Networks (CIDR, or a single address) whose peers may use the admin API.
    #[serde(default)]
    pub allow: Vec<String>,
    /// A bearer token that opens the admin API from anywhere.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the token (its surrounding whitespace trimmed).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl AdminConfig {
    /// The token a local command presents (`token`, else `tokenFile`'s
    /// contents trimmed): `None` when neither is set or the file cannot be read
    /// (the server, which checks both, then refuses a peer that needs it).
    pub fn client_token(&self) -> Option<String> {
        self.token.clone().or_else(|| {
            let path = self.token_file.as_ref()?;
            std::fs::read_to_string(path).ok().map(|t| t.trim().to_string())
        })
    }
}

/// A network: an address and how many leading bits of it count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Network, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| format!("{s:?} is not an address or CIDR network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("{s:?}: the prefix length must be 0 to {max}")),
            },
        };
        Ok(Network { addr, prefix })
    }
}

impl Network {
    /// Whether `ip` is inside this network (an IPv4 peer seen as IPv4-mapped IPv6 included).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => same_prefix(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => same_prefix(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

fn same_prefix(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (whole, rest) = ((bits / 8) as usize, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

/// The checked access rules.
#[derive(Clone, Default)]
pub struct Access {
    allow: Vec<Network>,
    /// SHA-256 of the token.
    token: Option<[u8; 32]>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access").field("allow", &self.allow).field("token", &self.token.map(|_| "<redacted>")).finish()
    }
}

impl Access {
    /// Checks the `admin:` key, adding each problem (naming its key) to `problems`.
    pub fn from_config(config: Option<&AdminConfig>, problems: &mut Vec<String>) -> Access {
        let Some(config) = config else { return Access::default() };
        let mut allow = Vec::new();
        if config.allow.len() > MAX_NETWORKS {
            problems.push(format!("admin.allow: at most {MAX_NETWORKS} networks"));
        }
        for (i, n) in config.allow.iter().enumerate().take(MAX_NETWORKS) {
            match n.parse::<Network>() {
                Ok(n) => allow.push(n),
                Err(e) => problems.push(format!("admin.allow[{i}]: {e}")),
            }
        }
        let token = match (&config.token, &config.token_file) {
            (Some(_), Some(_)) => {
                problems.push("admin: set token or tokenFile, not both".to_string());
                None
            }
            (Some(t), None) => check_token(t, "admin.token", problems),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(t) => check_token(t.trim(), "admin.tokenFile", problems),
                Err(e) => {
                    problems.push(format!("admin.tokenFile: cannot read {}: {e}", path.display()));
                    None
                }
            },
            (None, None) => None,
        };
        Access { allow, token }
    }

    /// The networks whose peers may use the admin API (`admin.allow`).
    pub fn networks(&self) -> &[Network] {
        &self.allow
    }

    /// The token's [`token_sha256`], if one is set.
    pub fn token_sha256(&self) -> Option<&[u8; 32]> {
        self.token.as_ref()
    }
}

fn check_token(token: &str, key: &str, problems: &mut Vec<String>) -> Option<[u8; 32]> {
    if token.len() < MIN_TOKEN_LEN {
        problems.push(format!("{key}: the token must be at least {MIN_TOKEN_LEN} characters"));
        return None;
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        problems.push(format!("{key}: the token must be visible ASCII without spaces"));
        return None;
    }
    Some(token_sha256(token))
}

/// The SHA-256 of a token: what [`Access`] keeps of the configured one, and
/// what a presented one is compared through.
pub fn token_sha256(token: &str) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(&Sha256::digest(token.as_bytes()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(yaml: &str) -> (Access, Vec<String>) {
        let config: AdminConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        (Access::from_config(Some(&config), &mut problems), problems)
    }

    #[test]
    fn networks() {
        let n: Network = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains("10.1.255.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()), "IPv4-mapped peers count as IPv4");
        let n: Network = "192.0.2.7".parse().unwrap();
        assert!(n.contains("192.0.2.7".parse().unwrap()) && !n.contains("192.0.2.8".parse().unwrap()));
        let n: Network = "10.0.0.0/9".parse().unwrap();
        assert!(n.contains("10.127.0.1".parse().unwrap()) && !n.contains("10.128.0.1".parse().unwrap()));
        let n: Network = "fd00::/8".parse().unwrap();
        assert!(n.contains("fd12::1".parse().unwrap()) && !n.contains("fe80::1".parse().unwrap()));
        assert!("0.0.0.0/0".parse::<Network>().unwrap().contains("203.0.113.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "host.example", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
    }

    #[test]
    fn problems_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let (_, p) = access("allow: [10.0.0.0/8, 300.1.1.1, 10.0.0.0/40]\ntoken: short\n");
        assert!(p.iter().any(|p| p.starts_with("admin.allow[1]:")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("admin.allow[2]:")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("admin.token:")), "{p:?}");
        let file = dir.path().join("token");
        std::fs::write(&file, "  fedcba9876543210fedcba\n").unwrap();
        let (a, p) = access(&format!("tokenFile: {}\n", file.display()));
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(a.token_sha256(), Some(&token_sha256("fedcba9876543210fedcba")), "trimmed, then hashed");
        assert!(format!("{a:?}").contains("<redacted>"), "{a:?}");
        let (_, p) = access("tokenFile: /nonexistent/token\n");
        assert!(p[0].starts_with("admin.tokenFile: cannot read"), "{p:?}");
        let (_, p) = access(&format!("token: 0123456789abcdef0123\ntokenFile: {}\n", file.display()));
        assert!(p[0].contains("not both"), "{p:?}");
    }
}
