//! Upstream authentication: parsing `WWW-Authenticate` challenges, and the
//! bearer-token cache keyed by (registry, access generation, realm, service,
//! scope), each token kept until shortly before it expires. The registry is
//! part of the key: two upstreams sharing a realm but holding different
//! credentials never share a token. So is the access generation of the client
//! that fetched it: a reload that changes a registry's access settings gives
//! its new client a new generation, so a token still being fetched with the
//! old credentials, stored after the swap, is never used by the new client. The
//! reload also drops the stored tokens of exactly those registries.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::oci::RegistryName;

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String>, error: Option<String> },
}

/// Parses the first challenge of a `WWW-Authenticate` value. Unknown schemes yield `None`.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    let params = parse_params(rest);
    let get = |k: &str| params.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
            error: get("error"),
        })
    } else {
        None
    }
}

/// `k="v", k2=v2` with backslash escapes inside quotes.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if name.trim().is_empty() || chars.next() != Some('=') {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect::<String>().trim().to_string();
        }
        out.push((name.trim().to_string(), value));
    }
}

/// The token endpoint's answer.
#[derive(Debug, serde::Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref().or(self.access_token.as_deref()).filter(|t| !t.is_empty())
    }

    /// How long to use the token: its lifetime less a margin, 60 s when unstated (the spec's default).
    pub fn lifetime(&self) -> Duration {
        let secs = self.expires_in.unwrap_or(60).max(1);
        Duration::from_secs(secs.saturating_sub(secs.min(10)).max(1))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    /// The upstream the token was fetched for, with its credentials.
    pub registry: RegistryName,
    /// The access generation of the client that fetched it (`Upstream::access`):
    /// new whenever the registry's URL, credentials or TLS settings change.
    pub access: u64,
    pub realm: String,
    pub service: Option<String>,
    pub scope: String,
}

/// Tokens kept at most; a full cache drops expired ones, then starts over.
const MAX_TOKENS: usize = 4096;

/// Bearer tokens by (registry, access generation, realm, service, scope), with their expiry.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<TokenKey, (String, Instant)>>,
}

impl TokenCache {
    pub fn get(&self, key: &TokenKey, now: Instant) -> Option<String> {
        let mut tokens = self.tokens.lock();
        match tokens.get(key) {
            Some((t, exp)) if *exp > now => Some(t.clone()),
            Some(_) => {
                tokens.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn put(&self, key: TokenKey, token: String, expires: Instant) {
        let mut tokens = self.tokens.lock();
        let now = Instant::now();
        super::make_room(&mut tokens, MAX_TOKENS, |(_, exp)| *exp <= now);
        tokens.insert(key, (token, expires));
    }

    pub fn forget(&self, key: &TokenKey) {
        self.tokens.lock().remove(key);
    }

    /// Forgets the tokens of the registries `gone` names (the settings they
    /// were fetched with changed, or the registry is no longer listed).
    pub fn forget_registries(&self, gone: impl Fn(&RegistryName) -> bool) {
        self.tokens.lock().retain(|key, _| !gone(&key.registry));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_challenge() {
        let v = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/x:pull",error="insufficient_scope""#;
        assert_eq!(
            parse_challenge(v),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/x:pull".into()),
                error: Some("insufficient_scope".into()),
            })
        );
    }

    #[test]
    fn parses_basic_unquoted_and_escaped() {
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(r#"bearer realm=http://x/token, service="a\"b""#),
            Some(Challenge::Bearer {
                realm: "http://x/token".into(),
                service: Some("a\"b".into()),
                scope: None,
                error: None
            })
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn token_cache_expires() {
        let cache = TokenCache::default();
        let key = TokenKey {
            registry: "quay.io".parse().unwrap(),
            access: 0,
            realm: "r".into(),
            service: None,
            scope: "s".into(),
        };
        let now = Instant::now();
        cache.put(key.clone(), "t".into(), now + Duration::from_secs(5));
        assert_eq!(cache.get(&key, now).as_deref(), Some("t"));
        assert_eq!(cache.get(&key, now + Duration::from_secs(6)), None);
    }

    #[test]
    fn forgetting_a_registry_keeps_the_tokens_of_the_others() {
        let cache = TokenCache::default();
        let key = |registry: &str| TokenKey {
            registry: registry.parse().unwrap(),
            access: 0,
            realm: "https://auth.example/token".into(),
            service: None,
            scope: "repository:a/b:pull".into(),
        };
        let (now, later) = (Instant::now(), Instant::now() + Duration::from_secs(60));
        cache.put(key("quay.io"), "q".into(), later);
        cache.put(key("ghcr.io"), "g".into(), later);
        assert_eq!(cache.get(&key("ghcr.io"), now).as_deref(), Some("g"), "the same realm, another registry's token");
        cache.forget_registries(|r| r.as_str() == "ghcr.io");
        assert_eq!(cache.get(&key("ghcr.io"), now), None);
        assert_eq!(cache.get(&key("quay.io"), now).as_deref(), Some("q"));
    }

    #[test]
    fn token_lifetime_keeps_a_margin() {
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"a","expires_in":300}"#).unwrap();
        assert_eq!(t.token(), Some("a"));
        assert_eq!(t.lifetime(), Duration::from_secs(290));
        let t: TokenResponse = serde_json::from_str(r#"{"token":"b"}"#).unwrap();
        assert_eq!(t.lifetime(), Duration::from_secs(50));
    }
}
