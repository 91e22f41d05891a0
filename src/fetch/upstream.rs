//! Upstream registries as HTTP clients. `Upstreams` finds (or builds, for an
//! unlisted registry) the client for a registry name, refusing private and
//! loopback addresses that are not listed; `Upstream::send` performs one
//! registry request with authentication (Basic, Bearer token flow with a cached
//! token, static token) and follows redirects by hand: a hop to another host
//! (a CDN or object store) goes through a separate client with system roots,
//! no client certificate and no `Authorization`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode, Url};

use super::auth::{parse_challenge, Challenge, TokenCache, TokenKey, TokenResponse};
use super::error::{error_chain, FetchError};
use crate::config::{Credentials, Registry, Settings};
use crate::oci::{RegistryName, RepoName};

const MAX_REDIRECTS: usize = 5;
const USER_AGENT: &str = concat!("ociregistry/", env!("CARGO_PKG_VERSION"));

/// Every upstream client, by registry name.
pub struct Upstreams {
    settings: Arc<Settings>,
    clients: Mutex<HashMap<RegistryName, Arc<Upstream>>>,
    /// For redirect targets on other hosts: system roots, no identity, no credentials.
    foreign: reqwest::Client,
    tokens: Arc<TokenCache>,
}

impl Upstreams {
    pub fn new(settings: Arc<Settings>) -> Result<Upstreams, String> {
        let foreign = base_builder(&settings).build().map_err(|e| error_chain(&e))?;
        Ok(Upstreams { settings, clients: Mutex::new(HashMap::new()), foreign, tokens: Arc::default() })
    }

    /// Builds the clients of every listed registry now, so a bad CA or key fails at startup.
    pub fn prepare_listed(&self) -> Result<(), String> {
        for registry in &self.settings.registries {
            let up = self.build(registry.clone(), None)?;
            self.clients.lock().unwrap().insert(registry.name.clone(), Arc::new(up));
        }
        Ok(())
    }

    pub async fn get(&self, name: &RegistryName) -> Result<Arc<Upstream>, FetchError> {
        if let Some(up) = self.clients.lock().unwrap().get(name) {
            return Ok(up.clone());
        }
        if self.settings.deny_unlisted {
            return Err(FetchError::Refused(format!(
                "upstream {name} is not listed in the configuration (denyUnlisted is set)"
            )));
        }
        let registry = Registry::implicit(name.clone());
        let pinned = resolve_public(name).await?;
        let up = Arc::new(self.build(registry, Some(pinned)).map_err(FetchError::Internal)?);
        self.clients.lock().unwrap().insert(name.clone(), up.clone());
        Ok(up)
    }

    fn build(&self, registry: Registry, pinned: Option<(String, Vec<SocketAddr>)>) -> Result<Upstream, String> {
        let mut b = base_builder(&self.settings);
        if let Some(ca) = &registry.tls.ca {
            let pem = std::fs::read(ca).map_err(|e| format!("{}: tls.ca {}: {e}", registry.name, ca.display()))?;
            for cert in
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("{}: tls.ca: {e}", registry.name))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&registry.tls.cert, &registry.tls.key) {
            let mut pem = std::fs::read(cert).map_err(|e| format!("{}: tls.cert: {e}", registry.name))?;
            pem.extend(std::fs::read(key).map_err(|e| format!("{}: tls.key: {e}", registry.name))?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| format!("{}: tls.cert/key: {e}", registry.name))?;
            b = b.identity(id);
        }
        if registry.tls.insecure_skip_verify {
            b = b.danger_accept_invalid_certs(true);
        }
        if let Some((host, addrs)) = &pinned {
            b = b.resolve_to_addrs(host, addrs);
        }
        let client = b.build().map_err(|e| format!("{}: {}", registry.name, error_chain(&e)))?;
        let base = Url::parse(&registry.base_url).map_err(|e| format!("{}: {e}", registry.name))?;
        Ok(Upstream {
            registry,
            base,
            client,
            foreign: self.foreign.clone(),
            tokens: self.tokens.clone(),
            challenge: Mutex::new(None),
            timeout: self.settings.pull_timeout,
        })
    }
}

fn base_builder(settings: &Settings) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(settings.pull_timeout)
        .read_timeout(settings.pull_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
}

/// Resolves an unlisted upstream and refuses it if any address is loopback,
/// link-local or private: an open mirror must not be a way into internal hosts.
/// The addresses found are pinned into its client.
async fn resolve_public(name: &RegistryName) -> Result<(String, Vec<SocketAddr>), FetchError> {
    let host = if name.is_docker_hub() { "registry-1.docker.io" } else { name.host() };
    let port = name
        .as_str()
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .filter(|_| !host.contains(':') || name.as_str().starts_with('['));
    let port = port.unwrap_or(443);
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| FetchError::Unreachable(format!("cannot resolve {host}: {e}")))?
            .collect(),
    };
    if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(FetchError::Refused(format!(
            "upstream {name} resolves to the non-public address {}; list it under `registries` in the configuration to allow it",
            bad.ip()
        )));
    }
    if addrs.is_empty() {
        return Err(FetchError::Unreachable(format!("{host} has no addresses")));
    }
    Ok((host.to_string(), addrs))
}

/// False for loopback, link-local, private (RFC 1918, ULA), unspecified and similar addresses.
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
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let seg0 = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00
                || (seg0 & 0xffc0) == 0xfe80)
        }
    }
}

/// One upstream registry's client.
pub struct Upstream {
    pub registry: Registry,
    base: Url,
    client: reqwest::Client,
    foreign: reqwest::Client,
    tokens: Arc<TokenCache>,
    /// The last challenge seen, so later requests authenticate up front.
    challenge: Mutex<Option<Challenge>>,
    timeout: Duration,
}

impl Upstream {
    /// `<base>/v2/<repo>/<tail>`, with `?ns=<name>` when the registry is reached through an endpoint.
    pub fn url(&self, repo: &RepoName, tail: &str) -> Url {
        let mut url = self.base.clone();
        let path = format!("{}/v2/{}/{}", self.base.path().trim_end_matches('/'), repo, tail);
        url.set_path(&path);
        if self.registry.send_ns {
            url.query_pairs_mut().append_pair("ns", self.registry.name.as_str());
        }
        url
    }

    /// Sends one request for `repo`, authenticating as the upstream asks and
    /// following redirects. The caller interprets the final status.
    pub async fn send(
        &self,
        method: Method,
        repo: &RepoName,
        url: Url,
        headers: HeaderMap,
    ) -> Result<Response, FetchError> {
        let mut auth = self.preemptive_auth(repo).await?;
        let mut refreshed = false;
        loop {
            let resp = self.follow(method.clone(), url.clone(), &headers, auth.as_ref()).await?;
            if resp.status() != StatusCode::UNAUTHORIZED || refreshed {
                return Ok(resp);
            }
            refreshed = true;
            let challenge =
                resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).and_then(parse_challenge);
            let Some(challenge) = challenge else {
                return Ok(resp);
            };
            *self.challenge.lock().unwrap() = Some(challenge.clone());
            match self.authorization(&challenge, repo, true).await? {
                Some(a) => auth = Some(a),
                None => return Ok(resp),
            }
        }
    }

    async fn preemptive_auth(&self, repo: &RepoName) -> Result<Option<HeaderValue>, FetchError> {
        if let Some(Credentials::Token(t)) = &self.registry.credentials {
            return Ok(header(&format!("Bearer {t}")));
        }
        let challenge = self.challenge.lock().unwrap().clone();
        match challenge {
            Some(c) => self.authorization(&c, repo, false).await,
            None => Ok(None),
        }
    }

    /// The `Authorization` answering `challenge` for a pull of `repo`.
    async fn authorization(
        &self,
        challenge: &Challenge,
        repo: &RepoName,
        fresh: bool,
    ) -> Result<Option<HeaderValue>, FetchError> {
        match (challenge, &self.registry.credentials) {
            (Challenge::Basic, Some(Credentials::Basic { user, password })) => Ok(header(&basic(user, password))),
            (Challenge::Basic, _) => Ok(None),
            (Challenge::Bearer { realm, service, .. }, _) => {
                let key = TokenKey {
                    realm: realm.clone(),
                    service: service.clone(),
                    scope: format!("repository:{repo}:pull"),
                };
                if fresh {
                    self.tokens.forget(&key);
                } else if let Some(t) = self.tokens.get(&key, Instant::now()) {
                    return Ok(header(&format!("Bearer {t}")));
                }
                let token = self.fetch_token(&key).await?;
                Ok(header(&format!("Bearer {token}")))
            }
        }
    }

    async fn fetch_token(&self, key: &TokenKey) -> Result<String, FetchError> {
        let mut url = Url::parse(&key.realm).map_err(|e| FetchError::Upstream {
            status: 401,
            message: format!("bad token realm {:?}: {e}", key.realm),
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = &key.service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", &key.scope);
        }
        let same_host =
            url.host_str() == self.base.host_str() && url.port_or_known_default() == self.base.port_or_known_default();
        let mut req = if same_host { self.client.get(url) } else { self.foreign.get(url) };
        if let Some(Credentials::Basic { user, password }) = &self.registry.credentials {
            req = req.header(AUTHORIZATION, basic(user, password));
        }
        let resp = tokio::time::timeout(self.timeout, req.send())
            .await
            .map_err(|_| FetchError::Timeout("token endpoint".into()))?
            .map_err(|e| FetchError::from_reqwest(&e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(FetchError::NotFound(format!(
                "the token endpoint of {} refused access ({status})",
                self.registry.name
            )));
        }
        if !status.is_success() {
            return Err(FetchError::Upstream { status: status.as_u16(), message: "token endpoint failed".into() });
        }
        let body = resp.bytes().await.map_err(|e| FetchError::from_reqwest(&e))?;
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| FetchError::Upstream {
            status: 502,
            message: format!("token endpoint sent invalid JSON: {e}"),
        })?;
        let token = parsed
            .token()
            .ok_or_else(|| FetchError::Upstream { status: 502, message: "token endpoint sent no token".into() })?
            .to_string();
        self.tokens.put(key.clone(), token.clone(), Instant::now() + parsed.lifetime());
        Ok(token)
    }

    /// Sends and follows up to [`MAX_REDIRECTS`] redirects; only hops on the
    /// upstream's own origin carry credentials and the configured TLS identity.
    async fn follow(
        &self,
        method: Method,
        mut url: Url,
        headers: &HeaderMap,
        auth: Option<&HeaderValue>,
    ) -> Result<Response, FetchError> {
        for _ in 0..=MAX_REDIRECTS {
            let own = same_origin(&url, &self.base);
            let client = if own { &self.client } else { &self.foreign };
            let mut req = client.request(method.clone(), url.clone()).headers(headers.clone());
            if let (true, Some(a)) = (own, auth) {
                req = req.header(AUTHORIZATION, a.clone());
            }
            let resp = tokio::time::timeout(self.timeout, req.send())
                .await
                .map_err(|_| {
                    FetchError::Timeout(format!(
                        "no response from {} within {:?}",
                        url.host_str().unwrap_or("?"),
                        self.timeout
                    ))
                })?
                .map_err(|e| FetchError::from_reqwest(&e))?;
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let Some(location) = resp.headers().get(LOCATION).and_then(|l| l.to_str().ok()) else {
                return Ok(resp);
            };
            url = url.join(location).map_err(|e| FetchError::Upstream {
                status: resp.status().as_u16(),
                message: format!("bad redirect {location:?}: {e}"),
            })?;
        }
        Err(FetchError::Upstream { status: 310, message: format!("more than {MAX_REDIRECTS} redirects") })
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

fn header(v: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(v).ok().map(|mut h| {
        h.set_sensitive(true);
        h
    })
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("user:pass", "dXNlcjpwYXNz"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn private_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "100.64.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_carry_ns_only_through_endpoints() {
        let settings = Arc::new(test_settings());
        let ups = Upstreams::new(settings).unwrap();
        let mut reg = Registry::implicit("docker.io".parse().unwrap());
        reg.base_url = "https://mirror.corp:5000/dockerhub".into();
        reg.send_ns = true;
        let up = ups.build(reg, None).unwrap();
        let url = up.url(&"library/alpine".parse().unwrap(), "manifests/3.20");
        assert_eq!(url.as_str(), "https://mirror.corp:5000/dockerhub/v2/library/alpine/manifests/3.20?ns=docker.io");
        let up = ups.build(Registry::implicit("quay.io".parse().unwrap()), None).unwrap();
        assert_eq!(up.url(&"a/b".parse().unwrap(), "blobs/x").as_str(), "https://quay.io/v2/a/b/blobs/x");
    }

    fn test_settings() -> Settings {
        use clap::Parser;
        crate::tls::install_crypto_provider();
        let cli = crate::cli::Cli::try_parse_from(["ociregistry", "serve"]).unwrap();
        let crate::cli::Command::Serve(s) = &cli.command else { panic!() };
        Settings::resolve(&cli, s).unwrap()
    }
}
