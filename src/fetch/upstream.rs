//! Upstream registries as HTTP clients. `Upstreams` finds (or builds, for an
//! unlisted registry) the client for a registry name; unlisted ones reach only
//! public addresses (see `guard`). `Upstream::send` performs one
//! registry request with authentication (Basic with a password or an ECR token
//! from `ecr`, Bearer token flow with a cached token, static token) and follows redirects by hand: a hop to another host
//! (a CDN or object store) goes through a separate client with system roots,
//! no client certificate and no `Authorization`. A token realm on another
//! origin is often a sibling service under the same private CA (GitLab's
//! `/jwt/auth`), so a listed registry's realm client trusts what the registry
//! trusts, yet presents no client certificate: that identity is for the
//! registry alone. Every request passes its upstream's circuit breaker
//! (`breaker`) in `send`, the one funnel for manifests, blobs, HEADs, tags
//! and the token requests made on their behalf.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode, Url};

use super::auth::{parse_challenge, Challenge, TokenCache, TokenKey, TokenResponse};
use super::breaker::{Admit, Breaker, Outcome};
use super::ecr::EcrTokens;
use super::error::{error_chain, FetchError};
use super::guard::{self, PublicOnly};
use crate::config::{Credentials, Registry, Settings};
use crate::metrics::upstream::ErrorKind;
use crate::metrics::{Block, Counter, UpstreamSeries, UpstreamSeriesMap};
use crate::oci::{RegistryName, RepoName};

const MAX_REDIRECTS: usize = 5;
/// Clients kept for unlisted upstreams; past this the map starts over.
const MAX_UNLISTED_CLIENTS: usize = 256;
const USER_AGENT: &str = concat!("ociregistry/", env!("CARGO_PKG_VERSION"));

/// Every upstream client, by registry name.
pub struct Upstreams {
    settings: Arc<Settings>,
    /// The configured registries: `settings.registries` until a reload replaces them.
    listed: Mutex<Arc<Vec<Registry>>>,
    clients: Mutex<HashMap<RegistryName, Arc<Upstream>>>,
    /// For redirect targets on other hosts: system roots, no identity, no credentials.
    foreign: reqwest::Client,
    /// The same for redirects sent by unlisted upstreams: public addresses only.
    foreign_public: reqwest::Client,
    tokens: Arc<TokenCache>,
    /// The next access generation (see [`Upstream::access`]).
    next_access: AtomicU64,
    counters: Arc<Block>,
    series_map: Arc<UpstreamSeriesMap>,
}

impl Upstreams {
    pub fn new(
        settings: Arc<Settings>,
        counters: Arc<Block>,
        series_map: Arc<UpstreamSeriesMap>,
    ) -> Result<Upstreams, String> {
        let foreign = base_builder(&settings).build().map_err(|e| error_chain(&e))?;
        let foreign_public =
            base_builder(&settings).dns_resolver(PublicOnly::from_env()).build().map_err(|e| error_chain(&e))?;
        Ok(Upstreams {
            listed: Mutex::new(Arc::new(settings.registries.clone())),
            settings,
            clients: Mutex::new(HashMap::new()),
            foreign,
            foreign_public,
            tokens: Arc::default(),
            next_access: AtomicU64::new(0),
            counters,
            series_map,
        })
    }

    /// Builds the clients of every listed registry now, so a bad CA or key fails at startup.
    pub fn prepare_listed(&self) -> Result<(), String> {
        let listed = self.listed.lock().clone();
        for registry in listed.iter() {
            let up = self.build(registry.clone(), false)?;
            self.clients.lock().insert(registry.name.clone(), Arc::new(up));
        }
        Ok(())
    }

    /// Replaces the configured registries (a SIGHUP reload) for the requests that
    /// come next; requests under way finish with the client they have. Entries
    /// whose settings changed, or that read TLS files (which may have been
    /// rotated), get new clients, all built before anything is swapped: one that
    /// fails to build leaves everything as it was. Unchanged entries keep their
    /// clients, tokens and breaker state. A name no longer listed becomes an
    /// unlisted upstream (public addresses only, or refused with `denyUnlisted`).
    ///
    /// Bearer tokens go with the access settings they were fetched under: those
    /// of a registry whose URL, credentials or TLS changed, that is no longer
    /// listed, or that was not listed before, are dropped; every other
    /// registry keeps its tokens (and a client rebuilt only to re-read its TLS
    /// files keeps its access generation, last challenge and ECR token too).
    /// A new client with other access settings has a new access generation, so
    /// a token the old client is still fetching, stored after the swap, is
    /// never used by the new one.
    pub fn reload(&self, registries: &[Registry]) -> Result<String, String> {
        let old = self.listed.lock().clone();
        let unchanged = |r: &Registry| {
            let files = r.tls.ca.is_some() || r.tls.cert.is_some();
            !files && old.iter().any(|o| o == r)
        };
        let same_access = |r: &Registry| old.iter().any(|o| o.same_access(r));
        let mut rebuilt = Vec::new();
        for registry in registries.iter().filter(|r| !unchanged(r)) {
            let previous = if same_access(registry) { self.clients.lock().get(&registry.name).cloned() } else { None };
            let up = self.build_after(registry.clone(), false, previous.as_deref())?;
            rebuilt.push((registry.name.clone(), Arc::new(up)));
        }
        let removed: Vec<&RegistryName> =
            old.iter().map(|o| &o.name).filter(|n| !registries.iter().any(|r| &r.name == *n)).collect();
        let access_changed: Vec<&RegistryName> =
            registries.iter().filter(|r| !same_access(r)).map(|r| &r.name).chain(removed.iter().copied()).collect();
        {
            let mut clients = self.clients.lock();
            for name in &removed {
                clients.remove(*name);
            }
            for (name, up) in &rebuilt {
                clients.insert(name.clone(), up.clone());
            }
            *self.listed.lock() = Arc::new(registries.to_vec());
        }
        // Tokens fetched under the old settings must not outlive them.
        self.tokens.forget_registries(|name| access_changed.contains(&name));
        Ok(format!(
            "{} registries listed: {} with new clients, {} no longer listed, {} unchanged, tokens dropped for {}",
            registries.len(),
            rebuilt.len(),
            removed.len(),
            registries.len() - rebuilt.len(),
            access_changed.len()
        ))
    }

    /// How many clients are kept at most: the listed ones and a bounded number of others.
    fn client_bound(&self) -> usize {
        self.listed.lock().len() + MAX_UNLISTED_CLIENTS
    }

    pub async fn get(&self, name: &RegistryName) -> Result<Arc<Upstream>, FetchError> {
        if let Some(up) = self.clients.lock().get(name) {
            return Ok(up.clone());
        }
        if self.settings.deny_unlisted {
            return Err(FetchError::Refused(format!(
                "upstream {name} is not listed in the configuration (denyUnlisted is set)"
            )));
        }
        let mut registry = Registry::implicit(name.clone());
        registry.breaker = self.settings.circuit_breaker;
        let up = Arc::new(self.build(registry, true).map_err(FetchError::Internal)?);
        guard::check_url(&up.base)?;
        let listed = self.listed.lock().clone();
        let mut clients = self.clients.lock();
        if clients.len() >= listed.len() + MAX_UNLISTED_CLIENTS {
            clients.retain(|n, _| listed.iter().any(|r| &r.name == n));
        }
        clients.insert(name.clone(), up.clone());
        Ok(up)
    }

    /// The per-registry metric series of `name` (kept with its breaker's).
    pub fn series(&self, name: &RegistryName) -> Arc<crate::metrics::UpstreamSeries> {
        self.series_map.series(name.as_str(), self.client_bound())
    }

    /// A client for `registry`; `unlisted` ones reach only public addresses, redirects included.
    fn build(&self, registry: Registry, unlisted: bool) -> Result<Upstream, String> {
        self.build_after(registry, unlisted, None)
    }

    /// [`Upstreams::build`], taking over what `previous` (a client with the
    /// same access settings) has: its access generation (so its tokens stay
    /// valid), last challenge and ECR token. Without one, the client gets a new
    /// access generation.
    fn build_after(&self, registry: Registry, unlisted: bool, previous: Option<&Upstream>) -> Result<Upstream, String> {
        let mut b = server_trust(base_builder(&self.settings), &registry)?;
        if let (Some(cert), Some(key)) = (&registry.tls.cert, &registry.tls.key) {
            let mut pem = std::fs::read(cert).map_err(|e| format!("{}: tls.cert: {e}", registry.name))?;
            pem.extend(std::fs::read(key).map_err(|e| format!("{}: tls.key: {e}", registry.name))?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| format!("{}: tls.cert/key: {e}", registry.name))?;
            b = b.identity(id);
        }
        if unlisted {
            b = b.dns_resolver(PublicOnly::from_env());
        }
        let client = b.build().map_err(|e| format!("{}: {}", registry.name, error_chain(&e)))?;
        let realm = if unlisted {
            self.foreign_public.clone()
        } else {
            let b = server_trust(base_builder(&self.settings), &registry)?;
            b.build().map_err(|e| format!("{}: token realm client: {}", registry.name, error_chain(&e)))?
        };
        let base = Url::parse(&registry.base_url).map_err(|e| format!("{}: {e}", registry.name))?;
        // Breakers live in their `Upstream`, so they share the clients' bound; their series survive a rebuild.
        let series = self.series_map.series(registry.name.as_str(), self.client_bound());
        let breaker = Breaker::new(registry.name.clone(), registry.breaker, series.clone());
        let ecr = match (&registry.credentials, previous.and_then(|p| p.ecr.clone())) {
            (Some(Credentials::Ecr(_)), Some(kept)) => Some(kept),
            (Some(Credentials::Ecr(source)), None) => {
                Some(Arc::new(EcrTokens::new(registry.name.clone(), source.clone(), self.settings.pull_timeout)))
            }
            _ => None,
        };
        let access = previous.map_or_else(|| self.next_access.fetch_add(1, Ordering::Relaxed), |p| p.access);
        Ok(Upstream {
            ecr,
            access,
            registry,
            base,
            client,
            realm,
            foreign: if unlisted { self.foreign_public.clone() } else { self.foreign.clone() },
            unlisted,
            tokens: self.tokens.clone(),
            challenge: Mutex::new(previous.and_then(|p| p.challenge.lock().clone())),
            timeout: self.settings.pull_timeout,
            counters: self.counters.clone(),
            breaker,
            series,
        })
    }
}

/// `b` verifying servers as `registry` is configured to: its `tls.ca` roots
/// added to the system ones, or no verification with `insecureSkipVerify`.
/// Shared by the registry's client and its token realm client, which must
/// trust the same servers.
fn server_trust(mut b: reqwest::ClientBuilder, registry: &Registry) -> Result<reqwest::ClientBuilder, String> {
    if let Some(ca) = &registry.tls.ca {
        let pem = std::fs::read(ca).map_err(|e| format!("{}: tls.ca {}: {e}", registry.name, ca.display()))?;
        for cert in
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("{}: tls.ca: {e}", registry.name))?
        {
            b = b.add_root_certificate(cert);
        }
    }
    if registry.tls.insecure_skip_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    Ok(b)
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

/// One upstream registry's client.
pub struct Upstream {
    pub registry: Registry,
    base: Url,
    client: reqwest::Client,
    /// For a token realm on another origin: the registry's server trust, no
    /// client certificate (public addresses only for unlisted upstreams).
    realm: reqwest::Client,
    /// For redirect hops to other origins.
    foreign: reqwest::Client,
    /// Reached only at public addresses: every URL it is sent to is checked.
    unlisted: bool,
    tokens: Arc<TokenCache>,
    /// This client's access generation, part of its tokens' keys: shared only
    /// with the client it replaced when the access settings stayed the same.
    access: u64,
    /// The last challenge seen, so later requests authenticate up front.
    challenge: Mutex<Option<Challenge>>,
    timeout: Duration,
    counters: Arc<Block>,
    /// Opens when this upstream keeps failing; see `breaker`.
    breaker: Breaker,
    /// This upstream's metric series (latency, errors, rate limit, bytes).
    series: Arc<UpstreamSeries>,
    /// The ECR token, for `auth.token.provider: ecr`.
    ecr: Option<Arc<EcrTokens>>,
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
    /// following redirects. The caller interprets the final status. While the
    /// circuit breaker is open this fails at once with
    /// [`FetchError::CircuitOpen`], without any network request; the outcome
    /// of a request that was sent (its final status, or its error) is
    /// recorded once, here. A blob body that breaks later is not recorded: the
    /// upstream answered, and its resumption is a request of its own.
    pub async fn send(
        &self,
        method: Method,
        repo: &RepoName,
        url: Url,
        headers: HeaderMap,
    ) -> Result<Response, FetchError> {
        let admitted = match self.breaker.allow(Instant::now()) {
            Admit::Reject(wait) => {
                return Err(FetchError::CircuitOpen {
                    registry: self.registry.name.to_string(),
                    retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                })
            }
            admitted => admitted,
        };
        let mut ticket = Ticket { breaker: &self.breaker, admitted, outcome: Outcome::Unknown };
        let started = Instant::now();
        let result = self.send_admitted(method, repo, url, headers).await;
        ticket.outcome = outcome(&result);
        self.observe(&result, started.elapsed());
        result
    }

    /// This upstream's metric series.
    pub fn series(&self) -> &UpstreamSeries {
        &self.series
    }

    /// Records one request's latency, its failure if it failed, and the
    /// rate-limit budget its answer announced.
    fn observe(&self, result: &Result<Response, FetchError>, took: Duration) {
        self.series.observe(took);
        if let Ok(resp) = result {
            if let Some(v) = resp.headers().get("ratelimit-remaining") {
                self.series.note_ratelimit(v.as_bytes());
            }
        }
        if let Some(kind) = error_kind(result) {
            self.series.error(kind);
        }
    }

    async fn send_admitted(
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
            // A 401, or a 403 to a token we fetched (revoked, or issued for less than this
            // pull), is tried once more with a fresh token. A static token cannot be refreshed.
            let denied_our_token = resp.status() == StatusCode::FORBIDDEN
                && auth.is_some()
                && self.registry.credentials.as_ref().is_none_or(|c| c.fixed_authorization().is_none())
                && matches!(*self.challenge.lock(), Some(Challenge::Bearer { .. }));
            if refreshed || !(resp.status() == StatusCode::UNAUTHORIZED || denied_our_token) {
                return Ok(resp);
            }
            refreshed = true;
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge)
                .or_else(|| self.challenge.lock().clone().filter(|_| denied_our_token));
            let Some(challenge) = challenge else {
                return Ok(resp);
            };
            *self.challenge.lock() = Some(challenge.clone());
            if let (Challenge::Basic, Some(ecr), Some(sent)) = (&challenge, &self.ecr, &auth) {
                // The ECR token itself was refused: renewed now (within bounds), not at its expiry.
                let refused = sent.to_str().unwrap_or_default().to_string();
                match ecr.renew_refused(&refused).await?.as_deref().and_then(header) {
                    Some(renewed) => auth = Some(renewed),
                    None => return Ok(resp),
                }
                continue;
            }
            match self.authorization(&challenge, repo, true).await? {
                Some(a) => auth = Some(a),
                None => return Ok(resp),
            }
        }
    }

    async fn preemptive_auth(&self, repo: &RepoName) -> Result<Option<HeaderValue>, FetchError> {
        if let Some(fixed) = self.registry.credentials.as_ref().and_then(Credentials::fixed_authorization) {
            return Ok(header(&fixed));
        }
        let challenge = self.challenge.lock().clone();
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
        match challenge {
            Challenge::Basic => Ok(self.basic_authorization().await?.as_deref().and_then(header)),
            Challenge::Bearer { realm, service, .. } => {
                let key = self.token_key(realm, service, repo);
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

    /// The cache key of this client's pull token for `repo` from `realm`/`service`.
    fn token_key(&self, realm: &str, service: &Option<String>, repo: &RepoName) -> TokenKey {
        TokenKey {
            registry: self.registry.name.clone(),
            access: self.access,
            realm: realm.to_string(),
            service: service.clone(),
            scope: format!("repository:{repo}:pull"),
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
        guard::check_resolvable(&url)?;
        if self.unlisted {
            guard::check_url(&url)?;
        }
        let client = if same_origin(&url, &self.base) { &self.client } else { &self.realm };
        let mut basic = self.basic_authorization().await?;
        let mut renewed = false;
        let resp = loop {
            let mut req = client.get(url.clone());
            if let Some(authorization) = basic.as_deref().and_then(header) {
                req = req.header(AUTHORIZATION, authorization);
            }
            self.counters.inc(Counter::UpstreamToken);
            let resp = tokio::time::timeout(self.timeout, req.send())
                .await
                .map_err(|_| FetchError::Timeout("token endpoint".into()))?
                .map_err(|e| FetchError::from_reqwest(&e))?;
            // The token endpoint refused the ECR token: renewed now (within bounds) and asked once more.
            if let (StatusCode::UNAUTHORIZED, false, Some(ecr), Some(sent)) =
                (resp.status(), renewed, &self.ecr, &basic)
            {
                renewed = true;
                if let Some(fresh) = ecr.renew_refused(sent).await? {
                    basic = Some(fresh);
                    continue;
                }
            }
            break resp;
        };
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

    /// `Basic <credentials>` for a Basic challenge or the token endpoint: the
    /// configured user and password, or the ECR token (asked for if due).
    async fn basic_authorization(&self) -> Result<Option<String>, FetchError> {
        match (&self.registry.credentials, &self.ecr) {
            (Some(Credentials::Basic { user, password }), _) => Ok(Some(basic(user, password))),
            (Some(Credentials::Ecr(_)), Some(ecr)) => ecr.authorization().await.map(Some),
            _ => Ok(None),
        }
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
            guard::check_resolvable(&url)?;
            if self.unlisted {
                guard::check_url(&url)?;
            }
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

/// A request let through the breaker; its outcome is recorded when it is
/// dropped, so a cancelled request (an `Unknown` outcome) still frees the trial.
struct Ticket<'a> {
    breaker: &'a Breaker,
    admitted: Admit,
    outcome: Outcome,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.breaker.record(self.admitted, self.outcome, Instant::now());
    }
}

/// Statuses that say the upstream as a whole is unwell (a gateway or the
/// service itself unavailable). A 500 or another 5xx answers one request: one
/// broken object, asked for by many clients, must not close the upstream to
/// every other pull.
pub(super) fn upstream_wide(status: u16) -> bool {
    matches!(status, 502..=504)
}

/// What a request's result says about the upstream's health.
fn outcome(result: &Result<Response, FetchError>) -> Outcome {
    match result {
        Ok(resp) if resp.status() == StatusCode::TOO_MANY_REQUESTS => {
            let seconds =
                resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
            match seconds {
                Some(s) if s > 0 => Outcome::RateLimited(Duration::from_secs(s)),
                _ => Outcome::Unwell,
            }
        }
        Ok(resp) if upstream_wide(resp.status().as_u16()) => Outcome::Unwell,
        Ok(_) => Outcome::Healthy,
        Err(FetchError::Unreachable(_) | FetchError::Timeout(_)) => Outcome::Unwell,
        Err(FetchError::Upstream { status, .. }) if upstream_wide(*status) => Outcome::Unwell,
        Err(FetchError::TooManyRequests { .. }) => Outcome::Unwell,
        Err(FetchError::NotFound(_) | FetchError::BadContent(_) | FetchError::Upstream { .. }) => Outcome::Healthy,
        Err(_) => Outcome::Unknown,
    }
}

/// How a request failed, for the errors by kind; `None` for an answer the
/// caller can use (a 404 answers the question).
fn error_kind(result: &Result<Response, FetchError>) -> Option<ErrorKind> {
    let status = match result {
        Ok(resp) => resp.status().as_u16(),
        Err(FetchError::Upstream { status, .. }) => *status,
        Err(FetchError::TooManyRequests { .. }) => 429,
        Err(FetchError::Unreachable(_)) => return Some(ErrorKind::Unreachable),
        Err(FetchError::Timeout(_)) => return Some(ErrorKind::Timeout),
        Err(FetchError::NotFound(_)) => return None,
        Err(_) => return Some(ErrorKind::Other),
    };
    match status {
        429 => Some(ErrorKind::RateLimited),
        500..=599 => Some(ErrorKind::Server),
        401 | 403 => Some(ErrorKind::Denied),
        _ => None,
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
    fn urls_carry_ns_only_through_endpoints() {
        let settings = Arc::new(test_settings());
        let metrics = crate::metrics::Metrics::default();
        let ups = Upstreams::new(settings, metrics.block(), metrics.upstreams.clone()).unwrap();
        let mut reg = Registry::implicit("docker.io".parse().unwrap());
        reg.base_url = "https://mirror.corp:5000/dockerhub".into();
        reg.send_ns = true;
        let up = ups.build(reg, false).unwrap();
        let url = up.url(&"library/alpine".parse().unwrap(), "manifests/3.20");
        assert_eq!(url.as_str(), "https://mirror.corp:5000/dockerhub/v2/library/alpine/manifests/3.20?ns=docker.io");
        let up = ups.build(Registry::implicit("quay.io".parse().unwrap()), true).unwrap();
        assert_eq!(up.url(&"a/b".parse().unwrap(), "blobs/x").as_str(), "https://quay.io/v2/a/b/blobs/x");
    }

    #[test]
    fn failures_that_say_the_upstream_is_unwell_count_and_answers_do_not() {
        let err = |e: FetchError| outcome(&Err(e));
        assert_eq!(err(FetchError::Unreachable("refused".into())), Outcome::Unwell);
        assert_eq!(err(FetchError::Timeout("t".into())), Outcome::Unwell);
        assert_eq!(err(FetchError::Upstream { status: 503, message: "token".into() }), Outcome::Unwell);
        assert_eq!(err(FetchError::Upstream { status: 310, message: "redirects".into() }), Outcome::Healthy);
        assert_eq!(err(FetchError::Upstream { status: 500, message: "one broken object".into() }), Outcome::Healthy);
        assert_eq!(err(FetchError::Upstream { status: 504, message: "gateway".into() }), Outcome::Unwell);
        assert_eq!(err(FetchError::NotFound("401 at the token endpoint".into())), Outcome::Healthy);
        assert_eq!(err(FetchError::BadContent("json".into())), Outcome::Healthy);
        assert_eq!(err(FetchError::Refused("private address".into())), Outcome::Unknown);
    }

    #[test]
    fn a_reload_rebuilds_what_changed_keeps_the_rest_and_is_all_or_nothing() {
        let listed = |name: &str, password: &str| {
            let mut r = Registry::implicit(name.parse().unwrap());
            r.credentials = Some(Credentials::Basic { user: "u".into(), password: password.into() });
            r
        };
        let mut settings = test_settings();
        settings.registries = vec![listed("quay.io", "a"), listed("ghcr.io", "a"), listed("gone.example", "a")];
        let metrics = crate::metrics::Metrics::default();
        let ups = Upstreams::new(Arc::new(settings), metrics.block(), metrics.upstreams.clone()).unwrap();
        ups.prepare_listed().unwrap();
        let client = |name: &str| ups.clients.lock().get(&name.parse::<RegistryName>().unwrap()).cloned();
        let (quay, ghcr, gone) =
            (client("quay.io").unwrap(), client("ghcr.io").unwrap(), client("gone.example").unwrap());
        let later = Instant::now() + Duration::from_secs(300);
        for up in [&quay, &ghcr, &gone] {
            ups.tokens.put(token_key(up), format!("token of {}", up.registry.name), later);
        }

        let done = ups.reload(&[listed("quay.io", "a"), listed("ghcr.io", "b"), listed("new.example", "a")]).unwrap();
        assert!(done.contains("2 with new clients, 1 no longer listed, 1 unchanged, tokens dropped for 3"), "{done}");
        assert!(ups.tokens.get(&token_key(&quay), Instant::now()).is_some(), "unchanged: its token is kept");
        assert!(ups.tokens.get(&token_key(&ghcr), Instant::now()).is_none(), "a new password: its token goes");
        assert!(ups.tokens.get(&token_key(&gone), Instant::now()).is_none(), "no longer listed: its token goes");
        assert!(Arc::ptr_eq(&quay, &client("quay.io").unwrap()), "unchanged: the same client");
        let new_ghcr = client("ghcr.io").unwrap();
        assert!(!Arc::ptr_eq(&ghcr, &new_ghcr), "a new password: a new client");
        assert!(matches!(&new_ghcr.registry.credentials, Some(Credentials::Basic { password, .. }) if password == "b"));
        assert!(client("gone.example").is_none() && client("new.example").is_some());

        let mut broken = listed("quay.io", "c");
        broken.tls.ca = Some("/nonexistent/ca.pem".into());
        let err = ups.reload(&[broken, listed("ghcr.io", "c")]).unwrap_err();
        assert!(err.contains("tls.ca"), "{err}");
        assert!(Arc::ptr_eq(&new_ghcr, &client("ghcr.io").unwrap()), "a failed reload changes nothing");
        assert_eq!(ups.listed.lock().len(), 3);
    }

    /// The key under which `up` keeps its pull token for `a/b`.
    fn token_key(up: &Upstream) -> TokenKey {
        up.token_key("https://auth.example/token", &None, &"a/b".parse().unwrap())
    }

    #[test]
    fn a_token_fetched_with_old_credentials_and_stored_after_a_reload_is_not_used() {
        let listed = |password: &str| {
            let mut r = Registry::implicit("ghcr.io".parse().unwrap());
            r.credentials = Some(Credentials::Basic { user: "u".into(), password: password.into() });
            r
        };
        let mut settings = test_settings();
        settings.registries = vec![listed("old")];
        let metrics = crate::metrics::Metrics::default();
        let ups = Upstreams::new(Arc::new(settings), metrics.block(), metrics.upstreams.clone()).unwrap();
        ups.prepare_listed().unwrap();
        let client = || ups.clients.lock().get(&"ghcr.io".parse::<RegistryName>().unwrap()).cloned().unwrap();
        let old = client();
        let later = Instant::now() + Duration::from_secs(300);

        ups.reload(&[listed("new")]).unwrap();
        // The old client's token request, under way during the reload, completes now.
        ups.tokens.put(token_key(&old), "fetched with the old password".into(), later);
        let new = client();
        assert!(!Arc::ptr_eq(&old, &new));
        assert_eq!(ups.tokens.get(&token_key(&new), Instant::now()), None, "the new client fetches its own");

        ups.tokens.put(token_key(&new), "fetched with the new password".into(), later);
        ups.reload(&[listed("new")]).unwrap();
        assert!(Arc::ptr_eq(&new, &client()), "the same settings: the same client");
        assert_eq!(
            ups.tokens.get(&token_key(&client()), Instant::now()).as_deref(),
            Some("fetched with the new password"),
            "the same access settings keep their tokens"
        );
    }

    fn test_settings() -> Settings {
        use clap::Parser;
        crate::tls::install_crypto_provider();
        let cli = crate::cli::Cli::try_parse_from(["ociregistry", "serve"]).unwrap();
        let Some(crate::cli::Command::Serve(s)) = &cli.command else { panic!() };
        Settings::resolve(&cli, s).unwrap()
    }
}
