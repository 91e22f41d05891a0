//! In-process fake upstream OCI registry (plus a linked fake CDN) for integration tests.
//!
//! The cache under test pulls from it like from Docker Hub or any OCI registry: manifests, blobs with
//! ranges, tag lists, Basic or Bearer-token auth, and CDN redirects. Each listener runs on its own
//! thread with its own current-thread tokio runtime, so plain synchronous `#[test]`s can use it.
//! HTTP/1.1 is written by hand rather than with hyper so faults can be injected at the byte level
//! (truncated or corrupted bodies, throttling, hangs, responses held at a gate the test opens); every
//! request is logged for assertions, and so is every response the client stopped reading.
//! A tiny blocking client (`http_request`, `http_get`) is included for tests that talk to it directly.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;
use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCTET_STREAM: &str = "application/octet-stream";
/// `service=` of the Bearer challenge and the token endpoint.
pub const SERVICE: &str = "fake-registry";

const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_REQUEST_BODY: usize = 1024 * 1024;
const MAX_REQUESTS_PER_CONN: usize = 100_000;
/// Longer than reqwest's default 90 s pool idle timeout, so the client, not us, retires idle connections.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
const HANG_LIMIT: Duration = Duration::from_secs(120);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Public configuration and records
// ---------------------------------------------------------------------------------------------

/// How the registry's `/v2/` endpoints authenticate clients.
#[derive(Clone, Debug, Default)]
pub enum Auth {
    #[default]
    None,
    /// 401 `WWW-Authenticate: Basic realm="fake"` unless these credentials are sent.
    Basic { user: String, pass: String },
    /// Docker-style token flow: `GET /token?service=..&scope=..` on the same listener issues tokens;
    /// `user_pass`, when set, is required (as Basic) on the token endpoint.
    Bearer { token_ttl_secs: u64, user_pass: Option<(String, String)> },
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    pub auth: Auth,
    /// Emulate Docker Hub: unknown repositories, and every single-segment name (`alpine`, as opposed
    /// to `library/alpine`), answer 401 with `error="insufficient_scope"` even with a valid token.
    pub docker_hub: bool,
    /// Start the linked CDN with the registry and answer every blob GET with a 307 to it.
    pub redirect_blobs_to_cdn: bool,
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Request {
    /// Connection number on this listener, counting from 0: equal numbers mean a reused connection.
    pub conn: u64,
    pub method: String,
    /// Path without the query string, not percent-decoded.
    pub path: String,
    /// Raw query string without the `?`, empty when absent.
    pub query: String,
    /// Header names lowercased, values trimmed, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Percent-decoded query parameters, in order, repeats kept.
    pub fn query_params(&self) -> Vec<(String, String)> {
        self.query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(key), percent_decode(value))
            })
            .collect()
    }

    fn param(&self, key: &str) -> Option<String> {
        self.query_params().into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// A misbehaviour injected into responses whose path contains a given substring.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer this status (with an OCI error body) plus these extra headers, e.g. `Retry-After`.
    Status(u16, Vec<(String, String)>),
    /// Flip the bits of the middle byte of the body; the length is unchanged.
    CorruptBody,
    /// Send the headers (full `Content-Length`) and this many body bytes, then close the connection.
    DropAfter(usize),
    /// Throttle the body to about this rate.
    Slow { bytes_per_sec: usize },
    /// Wait this long before answering normally.
    Delay(Duration),
    /// Send the body with `Transfer-Encoding: chunked` and no `Content-Length`.
    Chunked,
    /// Answer 307 with `Location: <base><path>[?<query>]`.
    Redirect(String),
    /// Read the request and never answer, until the client closes (at most 120 s).
    Hang,
    /// Hold the response until the gate opens (at most 120 s, then close), then answer normally.
    Gate(Gate),
    /// Send the headers (full `Content-Length`) and this many body bytes, hold the rest until the
    /// gate opens (at most 120 s, then close), then send it.
    GateAfter(usize, Gate),
    /// Answer normally, with these extra headers (e.g. Docker Hub's `ratelimit-remaining`).
    Headers(Vec<(String, String)>),
}

impl Fault {
    /// `Status(code)` without extra headers.
    pub fn status(code: u16) -> Fault {
        Fault::Status(code, Vec::new())
    }

    /// Body faults skip HEAD requests, so a HEAD probe does not use up a fault meant for the GET.
    fn shapes_body(&self) -> bool {
        matches!(
            self,
            Fault::CorruptBody | Fault::DropAfter(_) | Fault::Slow { .. } | Fault::Chunked | Fault::GateAfter(..)
        )
    }
}

/// Orders a test's steps against the upstream's answers: responses given `Fault::Gate` or
/// `Fault::GateAfter` wait until the test calls `open`. Clones share one gate.
#[derive(Clone, Debug)]
pub struct Gate(Arc<GateState>);

#[derive(Debug)]
struct GateState {
    open: watch::Sender<bool>,
    held: AtomicUsize,
}

impl Gate {
    pub fn new() -> Gate {
        Gate(Arc::new(GateState { open: watch::Sender::new(false), held: AtomicUsize::new(0) }))
    }

    /// Releases every response held now and lets later ones through.
    pub fn open(&self) {
        self.0.open.send_replace(true);
    }

    /// Responses waiting at the gate right now.
    pub fn held(&self) -> usize {
        self.0.held.load(Ordering::SeqCst)
    }

    /// Returns whether the gate opened (false: it stayed shut for `HANG_LIMIT`).
    async fn pass(&self) -> bool {
        let mut open = self.0.open.subscribe();
        self.0.held.fetch_add(1, Ordering::SeqCst);
        let opened = tokio::time::timeout(HANG_LIMIT, open.wait_for(|open| *open)).await.is_ok_and(|r| r.is_ok());
        self.0.held.fetch_sub(1, Ordering::SeqCst);
        opened
    }
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::new()
    }
}

/// What `add_image` stored.
#[derive(Clone, Debug)]
pub struct FakeImage {
    pub manifest_digest: String,
    pub manifest_bytes: Vec<u8>,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Endpoint: one listener thread with its log and faults
// ---------------------------------------------------------------------------------------------

/// A running listener on 127.0.0.1; stops (closing all its connections) when dropped.
pub struct Endpoint {
    port: u16,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    log: Mutex<Vec<Request>>,
    /// Requests whose response the client stopped reading (see `Endpoint::cut_short`).
    cut: Mutex<Vec<Request>>,
    faults: Mutex<Vec<FaultRule>>,
    next_conn: AtomicU64,
}

struct FaultRule {
    path_contains: String,
    fault: Fault,
    remaining: Option<usize>,
}

impl FaultRule {
    fn matches(&self, req: &Request) -> bool {
        req.path.contains(&self.path_contains) && !(req.method == "HEAD" && self.fault.shapes_body())
    }
}

impl Shared {
    /// The first matching rule wins; a rule with a count is removed once used up.
    fn take_fault(&self, req: &Request) -> Option<Fault> {
        let mut rules = lock(&self.faults);
        let index = rules.iter().position(|rule| rule.matches(req))?;
        let fault = rules[index].fault.clone();
        if let Some(left) = rules[index].remaining.as_mut() {
            *left -= 1;
            if *left == 0 {
                rules.remove(index);
            }
        }
        Some(fault)
    }
}

impl Endpoint {
    fn spawn(listener: std::net::TcpListener, role: Role) -> Endpoint {
        let port = listener.local_addr().expect("fake upstream: local addr").port();
        let shared = Arc::new(Shared::default());
        let (shutdown, stop) = oneshot::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fake-upstream-{port}"))
            .spawn(move || run_listener(listener, Arc::new(role), thread_shared, stop))
            .expect("fake upstream: spawn thread");
        Endpoint { port, shared, shutdown: Some(shutdown), thread: Some(thread) }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.log).clone()
    }

    /// Requests with exactly this method whose path contains `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        lock(&self.shared.log).iter().filter(|r| r.method == method && r.path.contains(path_contains)).count()
    }

    /// Requests whose path contains `path_contains` and whose response could not be written whole
    /// because the client had closed the connection (a body cut short by the fake's own
    /// `DropAfter` does not count).
    pub fn cut_short(&self, path_contains: &str) -> usize {
        lock(&self.shared.cut).iter().filter(|r| r.path.contains(path_contains)).count()
    }

    pub fn clear_log(&self) {
        lock(&self.shared.log).clear();
        lock(&self.shared.cut).clear();
    }

    /// Inject `fault` into requests whose path contains `path_contains` (a digest works too):
    /// the next `n` of them for `Some(n)`, all of them until `clear_faults` for `None`.
    pub fn set_fault(&self, path_contains: &str, fault: Fault, times: Option<usize>) {
        if times == Some(0) {
            return;
        }
        let rule = FaultRule { path_contains: path_contains.to_owned(), fault, remaining: times };
        lock(&self.shared.faults).push(rule);
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        drop(self.shutdown.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn bind_loopback() -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("fake upstream: bind 127.0.0.1:0");
    listener.set_nonblocking(true).expect("fake upstream: set_nonblocking");
    listener
}

fn run_listener(listener: std::net::TcpListener, role: Arc<Role>, shared: Arc<Shared>, stop: oneshot::Receiver<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("fake upstream: runtime");
    runtime.block_on(accept_until_stopped(listener, role, shared, stop));
    // Dropping the runtime cancels the connection tasks, hung ones included, which closes their sockets.
    runtime.shutdown_timeout(Duration::from_secs(1));
}

/// Runs until the owning `Endpoint` drops its shutdown sender.
async fn accept_until_stopped(
    listener: std::net::TcpListener,
    role: Arc<Role>,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let listener = TcpListener::from_std(listener).expect("fake upstream: tokio listener");
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(stream, role.clone(), shared.clone()));
                }
                // Out of file descriptors and the like: back off rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// FakeUpstream: the registry
// ---------------------------------------------------------------------------------------------

/// The fake registry. Derefs to its `Endpoint` for the address, request log and faults.
pub struct FakeUpstream {
    endpoint: Endpoint,
    registry: Arc<Registry>,
    cdn: OnceLock<Endpoint>,
}

impl Deref for FakeUpstream {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl FakeUpstream {
    /// Anonymous registry, no CDN redirects.
    pub fn start() -> FakeUpstream {
        FakeUpstream::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> FakeUpstream {
        let content = Arc::new(Mutex::new(Content::default()));
        let cdn = OnceLock::new();
        let mut redirect_blobs_to = None;
        if options.redirect_blobs_to_cdn {
            let endpoint = start_cdn(content.clone());
            redirect_blobs_to = Some(endpoint.base_url());
            let _ = cdn.set(endpoint);
        }
        let listener = bind_loopback();
        let port = listener.local_addr().expect("fake upstream: local addr").port();
        let registry = Arc::new(Registry {
            content,
            auth: Mutex::new(options.auth),
            docker_hub: options.docker_hub,
            base_url: format!("http://127.0.0.1:{port}"),
            redirect_blobs_to,
            tokens: Mutex::new(HashMap::new()),
        });
        let endpoint = Endpoint::spawn(listener, Role::Registry(registry.clone()));
        FakeUpstream { endpoint, registry, cdn }
    }

    /// The linked CDN, started on first use: it serves every stored blob at any path ending in
    /// `/blobs/<digest>` and answers 403 to requests carrying `Authorization`. Point a
    /// `Fault::Redirect(cdn.base_url())` at it, or use `Options::redirect_blobs_to_cdn`.
    pub fn cdn(&self) -> &Endpoint {
        self.cdn.get_or_init(|| start_cdn(self.registry.content.clone()))
    }

    /// Stores a blob in `repo` (creating the repository) and returns its `sha256:<hex>` digest.
    pub fn add_blob(&self, repo: &str, bytes: Vec<u8>) -> String {
        let digest = sha256_digest(&bytes);
        lock(&self.registry.content).repo(repo).blobs.insert(digest.clone(), Bytes::from(bytes));
        digest
    }

    /// Stores a manifest in `repo`, optionally tagging it, and returns its digest.
    pub fn add_manifest(&self, repo: &str, tag: Option<&str>, media_type: &str, bytes: Vec<u8>) -> String {
        let digest = sha256_digest(&bytes);
        let mut content = lock(&self.registry.content);
        let repo = content.repo(repo);
        let manifest = StoredManifest { media_type: media_type.to_owned(), bytes: Bytes::from(bytes) };
        repo.manifests.insert(digest.clone(), manifest);
        if let Some(tag) = tag {
            repo.tags.insert(tag.to_owned(), digest.clone());
        }
        digest
    }

    /// Points `tag` at a manifest already stored in `repo` (panics otherwise: a test bug).
    pub fn set_tag(&self, repo: &str, tag: &str, digest: &str) {
        let mut content = lock(&self.registry.content);
        let repo_content = content.repo(repo);
        assert!(repo_content.manifests.contains_key(digest), "fake upstream: no manifest {digest} in {repo}");
        repo_content.tags.insert(tag.to_owned(), digest.to_owned());
    }

    /// Removes a tag; the manifest stays reachable by digest.
    pub fn remove_tag(&self, repo: &str, tag: &str) {
        lock(&self.registry.content).repo(repo).tags.remove(tag);
    }

    /// Stores a valid OCI image (layers, a small config, the manifest) and tags it.
    pub fn add_image(&self, repo: &str, tag: &str, layers: &[Vec<u8>]) -> FakeImage {
        let layer_digests: Vec<String> = layers.iter().map(|layer| self.add_blob(repo, layer.clone())).collect();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            // Real diff_ids hash the uncompressed layers; the cache never checks them.
            "rootfs": { "type": "layers", "diff_ids": layer_digests },
        });
        let config_bytes = serde_json::to_vec(&config).expect("config json");
        let config_size = config_bytes.len();
        let config_digest = self.add_blob(repo, config_bytes);
        let layer_descriptors: Vec<_> = layers
            .iter()
            .zip(&layer_digests)
            .map(|(layer, digest)| descriptor(OCI_LAYER, digest, layer.len()))
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, &config_digest, config_size),
            "layers": layer_descriptors,
        });
        let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("manifest json");
        let manifest_digest = self.add_manifest(repo, Some(tag), OCI_MANIFEST, manifest_bytes.clone());
        FakeImage { manifest_digest, manifest_bytes, config_digest, layer_digests }
    }

    /// Authenticates clients this way from now on (credentials rotated upstream).
    pub fn set_auth(&self, auth: Auth) {
        *lock(&self.registry.auth) = auth;
    }

    /// Requests to the token endpoint (`GET /token`) since the last `clear_log`.
    pub fn token_requests(&self) -> usize {
        self.requests().iter().filter(|r| r.path == "/token").count()
    }

    /// Every token issued so far (expired or not), for tests that look for leaks.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.registry.tokens).keys().cloned().collect()
    }

    /// Makes every token issued so far expired, so tests need not sleep through a TTL.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        lock(&self.registry.tokens).values_mut().for_each(|token| token.expires = now);
    }
}

fn start_cdn(content: Arc<Mutex<Content>>) -> Endpoint {
    Endpoint::spawn(bind_loopback(), Role::Cdn(content))
}

fn descriptor(media_type: &str, digest: &str, size: usize) -> serde_json::Value {
    json!({ "mediaType": media_type, "digest": digest, "size": size })
}

// ---------------------------------------------------------------------------------------------
// Content store
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Content {
    repos: HashMap<String, Repo>,
}

#[derive(Default)]
struct Repo {
    blobs: HashMap<String, Bytes>,
    manifests: HashMap<String, StoredManifest>,
    /// Sorted, because the tag list must be lexical for `last` pagination.
    tags: BTreeMap<String, String>,
}

struct StoredManifest {
    media_type: String,
    bytes: Bytes,
}

impl Content {
    fn repo(&mut self, name: &str) -> &mut Repo {
        self.repos.entry(name.to_owned()).or_default()
    }

    fn find_blob(&self, digest: &str) -> Option<Bytes> {
        self.repos.values().find_map(|repo| repo.blobs.get(digest).cloned())
    }
}

// ---------------------------------------------------------------------------------------------
// Request handling: registry and CDN roles
// ---------------------------------------------------------------------------------------------

enum Role {
    Registry(Arc<Registry>),
    Cdn(Arc<Mutex<Content>>),
}

impl Role {
    fn handle(&self, req: &Request) -> Response {
        match self {
            Role::Registry(registry) => registry.handle(req),
            Role::Cdn(content) => cdn_response(content, req),
        }
    }
}

struct Registry {
    content: Arc<Mutex<Content>>,
    /// Replaced by [`FakeUpstream::set_auth`].
    auth: Mutex<Auth>,
    docker_hub: bool,
    base_url: String,
    redirect_blobs_to: Option<String>,
    tokens: Mutex<HashMap<String, Token>>,
}

struct Token {
    /// Repositories the token may pull.
    repos: HashSet<String>,
    expires: Instant,
}

enum Route<'a> {
    Base,
    Token,
    Repo(&'a str, RepoRoute<'a>),
    Unknown,
}

enum RepoRoute<'a> {
    Manifest(&'a str),
    Blob(&'a str),
    Tags,
}

impl Route<'_> {
    /// Names may contain slashes, so the endpoint is found from the right.
    fn parse(path: &str) -> Route<'_> {
        if path == "/token" {
            return Route::Token;
        }
        let rest = match path.strip_prefix("/v2") {
            Some("" | "/") => return Route::Base,
            Some(rest) => match rest.strip_prefix('/') {
                Some(rest) => rest,
                None => return Route::Unknown,
            },
            None => return Route::Unknown,
        };
        if let Some(name) = rest.strip_suffix("/tags/list") {
            return Route::Repo(name, RepoRoute::Tags);
        }
        if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
            return Route::Repo(name, RepoRoute::Manifest(reference));
        }
        match rest.rsplit_once("/blobs/") {
            Some((name, digest)) => Route::Repo(name, RepoRoute::Blob(digest)),
            None => Route::Unknown,
        }
    }
}

impl Registry {
    fn handle(&self, req: &Request) -> Response {
        let response = if req.method != "GET" && req.method != "HEAD" {
            Response::error(405, "UNSUPPORTED", "the fake upstream is pull-only")
        } else {
            match Route::parse(&req.path) {
                Route::Base => self.authorize(req, None).err().unwrap_or_else(|| Response::new(200).json(json!({}))),
                Route::Token => self.issue_token(req),
                Route::Repo(name, what) => self.serve_repo(req, name, what),
                Route::Unknown => Response::error(404, "NOT_FOUND", "no such endpoint"),
            }
        };
        response.header("Docker-Distribution-API-Version", "registry/2.0")
    }

    fn serve_repo(&self, req: &Request, name: &str, what: RepoRoute) -> Response {
        if let Err(denied) = self.authorize(req, Some(name)) {
            return denied;
        }
        let content = lock(&self.content);
        let Some(repo) = self.visible_repo(&content, name) else {
            return self.unknown_repo(name);
        };
        match what {
            RepoRoute::Manifest(reference) => manifest_response(repo, reference),
            RepoRoute::Tags => tags_response(req, name, repo),
            RepoRoute::Blob(digest) => match (repo.blobs.get(digest), &self.redirect_blobs_to) {
                (None, _) => Response::error(404, "BLOB_UNKNOWN", "blob unknown to registry"),
                (Some(_), Some(cdn)) if req.method == "GET" => redirect(cdn, req),
                (Some(blob), _) => blob_response(req, blob, Some(digest)),
            },
        }
    }

    fn visible_repo<'c>(&self, content: &'c Content, name: &str) -> Option<&'c Repo> {
        if self.docker_hub && !name.contains('/') {
            return None;
        }
        content.repos.get(name)
    }

    /// Docker Hub hides whether a repository exists behind an authorization error.
    fn unknown_repo(&self, name: &str) -> Response {
        if self.docker_hub {
            self.unauthorized(Some(name), Some("insufficient_scope"))
        } else {
            Response::error(404, "NAME_UNKNOWN", "repository name not known to registry")
        }
    }

    fn auth(&self) -> Auth {
        lock(&self.auth).clone()
    }

    /// `name` is the repository the request needs to pull, `None` for `/v2/`.
    fn authorize(&self, req: &Request, name: Option<&str>) -> Result<(), Response> {
        match &self.auth() {
            Auth::None => Ok(()),
            Auth::Basic { user, pass } if req.header("authorization") == Some(&basic_auth(user, pass)) => Ok(()),
            Auth::Basic { .. } => Err(self.unauthorized(name, None)),
            Auth::Bearer { .. } => self.check_bearer(req, name),
        }
    }

    fn check_bearer(&self, req: &Request, name: Option<&str>) -> Result<(), Response> {
        let Some(presented) = req.header("authorization").and_then(|v| v.strip_prefix("Bearer ")) else {
            return Err(self.unauthorized(name, None));
        };
        let tokens = lock(&self.tokens);
        match tokens.get(presented) {
            Some(token) if token.expires <= Instant::now() => Err(self.unauthorized(name, Some("invalid_token"))),
            Some(token) if name.is_none_or(|n| token.repos.contains(n)) => Ok(()),
            Some(_) => Err(self.unauthorized(name, Some("insufficient_scope"))),
            None => Err(self.unauthorized(name, Some("invalid_token"))),
        }
    }

    fn unauthorized(&self, name: Option<&str>, error: Option<&str>) -> Response {
        let response = Response::error(401, "UNAUTHORIZED", "authentication required");
        match self.challenge(name, error) {
            Some(challenge) => response.header("WWW-Authenticate", challenge),
            None => response,
        }
    }

    fn challenge(&self, name: Option<&str>, error: Option<&str>) -> Option<String> {
        match &self.auth() {
            Auth::None => None,
            Auth::Basic { .. } => Some(r#"Basic realm="fake""#.to_owned()),
            Auth::Bearer { .. } => {
                let mut challenge = format!(r#"Bearer realm="{}/token",service="{SERVICE}""#, self.base_url);
                if let Some(name) = name {
                    challenge += &format!(r#",scope="repository:{name}:pull""#);
                }
                if let Some(error) = error {
                    challenge += &format!(r#",error="{error}""#);
                }
                Some(challenge)
            }
        }
    }

    fn issue_token(&self, req: &Request) -> Response {
        let Auth::Bearer { token_ttl_secs, user_pass } = &self.auth() else {
            return Response::error(404, "NOT_FOUND", "no token endpoint in this auth mode");
        };
        if let Some((user, pass)) = user_pass {
            if req.header("authorization") != Some(&basic_auth(user, pass)) {
                return Response::error(401, "UNAUTHORIZED", "incorrect username or password")
                    .header("WWW-Authenticate", r#"Basic realm="fake-token""#);
            }
        }
        let token = random_token();
        let expires = Instant::now() + Duration::from_secs(*token_ttl_secs);
        lock(&self.tokens).insert(token.clone(), Token { repos: pull_scopes(req), expires });
        Response::new(200).json(json!({ "token": token, "access_token": token, "expires_in": token_ttl_secs }))
    }
}

/// Repositories granted pull by the `scope` parameters (repeatable, each space-separated).
fn pull_scopes(req: &Request) -> HashSet<String> {
    let scopes: Vec<String> = req
        .query_params()
        .into_iter()
        .filter(|(key, _)| key == "scope")
        .flat_map(|(_, value)| value.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    scopes
        .iter()
        .filter_map(|scope| {
            let (name, actions) = scope.strip_prefix("repository:")?.rsplit_once(':')?;
            actions.split(',').any(|action| action == "pull" || action == "*").then(|| name.to_owned())
        })
        .collect()
}

fn random_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Each RandomState gets fresh random keys, which is all the randomness an opaque test token needs.
    let state = RandomState::new();
    let high = state.hash_one(COUNTER.fetch_add(1, Ordering::Relaxed));
    let low = state.hash_one(high);
    format!("{high:016x}{low:016x}")
}

fn manifest_response(repo: &Repo, reference: &str) -> Response {
    let digest = if reference.contains(':') { Some(reference) } else { repo.tags.get(reference).map(String::as_str) };
    match digest.and_then(|digest| repo.manifests.get(digest).map(|manifest| (digest, manifest))) {
        Some((digest, manifest)) => Response::new(200)
            .header("Docker-Content-Digest", digest)
            .body(&manifest.media_type, manifest.bytes.clone()),
        None => Response::error(404, "MANIFEST_UNKNOWN", "manifest unknown"),
    }
}

/// `digest` is `None` on the CDN, which, like a real object store, sends no `Docker-Content-Digest`.
fn blob_response(req: &Request, blob: &Bytes, digest: Option<&str>) -> Response {
    let len = blob.len();
    let response = match parse_range(req.header("range"), len) {
        ByteRange::Full => Response::new(200).body(OCTET_STREAM, blob.clone()),
        ByteRange::Part(first, last) => Response::new(206)
            .header("Content-Range", format!("bytes {first}-{last}/{len}"))
            .body(OCTET_STREAM, blob.slice(first..=last)),
        ByteRange::Unsatisfiable => Response::new(416).header("Content-Range", format!("bytes */{len}")),
    };
    let response = response.header("Accept-Ranges", "bytes");
    match digest {
        Some(digest) => response.header("Docker-Content-Digest", digest),
        None => response,
    }
}

fn tags_response(req: &Request, name: &str, repo: &Repo) -> Response {
    let last = req.param("last").unwrap_or_default();
    let limit: Option<usize> = req.param("n").and_then(|n| n.parse().ok());
    let after: Vec<&String> = repo.tags.keys().filter(|tag| tag.as_str() > last.as_str()).collect();
    let page = &after[..limit.unwrap_or(usize::MAX).min(after.len())];
    let response = Response::new(200).json(json!({ "name": name, "tags": page }));
    match (limit, page.last()) {
        (Some(n), Some(shown)) if page.len() < after.len() => {
            response.header("Link", format!(r#"</v2/{name}/tags/list?last={shown}&n={n}>; rel="next""#))
        }
        _ => response,
    }
}

fn cdn_response(content: &Mutex<Content>, req: &Request) -> Response {
    if req.header("authorization").is_some() {
        return Response::error(403, "DENIED", "the CDN refuses requests carrying Authorization");
    }
    if req.method != "GET" && req.method != "HEAD" {
        return Response::error(405, "UNSUPPORTED", "the CDN only serves GET and HEAD");
    }
    let blob = req.path.rsplit_once("/blobs/").and_then(|(_, digest)| lock(content).find_blob(digest));
    match blob {
        Some(blob) => blob_response(req, &blob, None),
        None => Response::error(404, "BLOB_UNKNOWN", "blob unknown to CDN"),
    }
}

fn redirect(base: &str, req: &Request) -> Response {
    let query = if req.query.is_empty() { String::new() } else { format!("?{}", req.query) };
    Response::new(307).header("Location", format!("{base}{}{query}", req.path))
}

fn injected_status(code: u16, headers: &[(String, String)], req: &Request) -> Response {
    let error_code = match code {
        401 => "UNAUTHORIZED",
        403 => "DENIED",
        404 => match Route::parse(&req.path) {
            Route::Repo(_, RepoRoute::Manifest(_)) => "MANIFEST_UNKNOWN",
            Route::Repo(_, RepoRoute::Blob(_)) => "BLOB_UNKNOWN",
            _ => "NAME_UNKNOWN",
        },
        429 => "TOOMANYREQUESTS",
        503 => "UNAVAILABLE",
        _ => "UNKNOWN",
    };
    let response = Response::error(code, error_code, "injected fault");
    headers.iter().fold(response, |response, (name, value)| response.header(name, value.clone()))
}

enum ByteRange {
    Full,
    /// Inclusive byte positions.
    Part(usize, usize),
    Unsatisfiable,
}

/// Single ranges only: a malformed or multi-range header is ignored, as RFC 9110 allows.
fn parse_range(header: Option<&str>, len: usize) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    let Some((first, last)) = spec.split_once('-').filter(|_| !spec.contains(',')) else {
        return ByteRange::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    match (first.parse::<usize>(), last.parse::<usize>()) {
        (Ok(first), _) if first >= len => ByteRange::Unsatisfiable,
        (Ok(first), Ok(last)) if first <= last => ByteRange::Part(first, last.min(len - 1)),
        (Ok(first), Err(_)) if last.is_empty() => ByteRange::Part(first, len - 1),
        (Err(_), Ok(suffix)) if first.is_empty() && suffix > 0 && len > 0 => {
            ByteRange::Part(len - suffix.min(len), len - 1)
        }
        (Err(_), Ok(_)) if first.is_empty() => ByteRange::Unsatisfiable,
        _ => ByteRange::Full,
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 server side
// ---------------------------------------------------------------------------------------------

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Response {
    fn new(status: u16) -> Response {
        Response { status, headers: Vec::new(), body: Bytes::new() }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    fn body(self, content_type: &str, body: Bytes) -> Response {
        let mut response = self.header("Content-Type", content_type);
        response.body = body;
        response
    }

    fn json(self, value: serde_json::Value) -> Response {
        self.body("application/json", Bytes::from(value.to_string()))
    }

    /// OCI distribution error body.
    fn error(status: u16, code: &str, message: &str) -> Response {
        Response::new(status).json(json!({ "errors": [{ "code": code, "message": message, "detail": null }] }))
    }
}

async fn serve_connection(mut stream: TcpStream, role: Arc<Role>, shared: Arc<Shared>) {
    // Headers and body go out in separate writes; Nagle would stall the body behind a delayed ACK.
    let _ = stream.set_nodelay(true);
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let mut buffer = Vec::new();
    for _ in 0..MAX_REQUESTS_PER_CONN {
        let Some((req, keep_alive)) = read_request(&mut stream, &mut buffer, conn).await else {
            return;
        };
        lock(&shared.log).push(req.clone());
        let fault = shared.take_fault(&req);
        let reusable = match answer(&mut stream, &role, &req, fault).await {
            Ok(reusable) => reusable,
            Err(_) => {
                lock(&shared.cut).push(req);
                false
            }
        };
        if !(reusable && keep_alive) {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// Returns whether the connection may serve another request; an error means the client went
/// away before the whole response was written.
async fn answer(stream: &mut TcpStream, role: &Role, req: &Request, fault: Option<Fault>) -> io::Result<bool> {
    match &fault {
        Some(Fault::Hang) => {
            hang(stream).await;
            return Ok(false);
        }
        Some(Fault::Delay(delay)) => tokio::time::sleep(*delay).await,
        Some(Fault::Gate(gate)) if !gate.pass().await => return Ok(false),
        _ => {}
    }
    let mut response = match &fault {
        Some(Fault::Status(code, headers)) => injected_status(*code, headers, req),
        Some(Fault::Redirect(base)) => redirect(base, req),
        _ => role.handle(req),
    };
    if let Some(Fault::Headers(extra)) = &fault {
        response.headers.extend(extra.iter().cloned());
    }
    write_response(stream, response, req.method == "HEAD", fault.as_ref()).await
}

/// Holds the connection without answering; reading is how we notice the client giving up.
async fn hang(stream: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    let drain = async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(HANG_LIMIT, drain).await;
}

async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>, conn: u64) -> Option<(Request, bool)> {
    let head_len = read_head(stream, buffer).await?;
    let head = std::str::from_utf8(&buffer[..head_len]).ok()?;
    let (req, keep_alive, body_len) = parse_request_head(head, conn)?;
    buffer.drain(..head_len);
    discard_body(stream, buffer, body_len).await?;
    Some((req, keep_alive))
}

/// Reads until the buffer holds a complete request head; returns its length.
async fn read_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 8192];
    // Each round adds at least one byte or returns, so MAX_HEAD_BYTES rounds always suffice.
    for _ in 0..=MAX_HEAD_BYTES {
        if let Some(end) = find(buffer, b"\r\n\r\n") {
            return Some(end + 4);
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return None;
        }
        let read = tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut chunk)).await.ok()?.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    None
}

/// Returns the request, whether the client allows keep-alive, and the declared body length.
fn parse_request_head(head: &str, conn: u64) -> Option<(Request, bool, usize)> {
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, target, version) = (request_line.next()?, request_line.next()?, request_line.next()?);
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let req = Request { conn, method: method.to_owned(), path: path.to_owned(), query: query.to_owned(), headers };
    let connection = req.header("connection").unwrap_or_default().to_ascii_lowercase();
    let keep_alive = match version {
        "HTTP/1.0" => connection.contains("keep-alive"),
        _ => !connection.contains("close"),
    };
    let body_len = req.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    Some((req, keep_alive, body_len))
}

/// Pull clients send no bodies; any that arrives is skipped so keep-alive framing stays intact.
async fn discard_body(stream: &mut TcpStream, buffer: &mut Vec<u8>, body_len: usize) -> Option<()> {
    if body_len > MAX_REQUEST_BODY {
        return None;
    }
    let mut chunk = [0u8; 8192];
    // Each round adds at least one byte or returns.
    for _ in 0..=body_len {
        if buffer.len() >= body_len {
            buffer.drain(..body_len);
            return Some(());
        }
        let read = tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut chunk)).await.ok()?.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    None
}

/// Returns whether the connection may serve another request.
async fn write_response(
    stream: &mut TcpStream,
    response: Response,
    head_only: bool,
    fault: Option<&Fault>,
) -> io::Result<bool> {
    let body = match fault {
        Some(Fault::CorruptBody) => corrupt(&response.body),
        _ => response.body.clone(),
    };
    let chunked = matches!(fault, Some(Fault::Chunked));
    stream.write_all(&encode_head(&response, body.len(), chunked)).await?;
    if head_only {
        return Ok(true);
    }
    match fault {
        Some(Fault::Chunked) => write_chunked(stream, &body).await?,
        Some(Fault::Slow { bytes_per_sec }) => write_throttled(stream, &body, *bytes_per_sec).await?,
        Some(Fault::DropAfter(sent)) => {
            stream.write_all(&body[..(*sent).min(body.len())]).await?;
            stream.flush().await?;
            return Ok(false);
        }
        Some(Fault::GateAfter(before, gate)) => {
            let before = (*before).min(body.len());
            stream.write_all(&body[..before]).await?;
            stream.flush().await?;
            if !gate.pass().await {
                return Ok(false);
            }
            stream.write_all(&body[before..]).await?;
        }
        _ => stream.write_all(&body).await?,
    }
    Ok(true)
}

fn encode_head(response: &Response, body_len: usize, chunked: bool) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", response.status, reason(response.status));
    for (name, value) in &response.headers {
        head += &format!("{name}: {value}\r\n");
    }
    if chunked {
        head += "Transfer-Encoding: chunked\r\n\r\n";
    } else {
        head += &format!("Content-Length: {body_len}\r\n\r\n");
    }
    head.into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn corrupt(body: &Bytes) -> Bytes {
    if body.is_empty() {
        return body.clone();
    }
    let mut bytes = body.to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    Bytes::from(bytes)
}

/// About four chunks, so decoders see chunk boundaries even in small bodies.
async fn write_chunked(stream: &mut TcpStream, body: &[u8]) -> io::Result<()> {
    let size = (body.len() / 4).clamp(1, 16 * 1024);
    for chunk in body.chunks(size) {
        stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await?;
        stream.write_all(chunk).await?;
        stream.write_all(b"\r\n").await?;
    }
    stream.write_all(b"0\r\n\r\n").await
}

/// Twenty writes a second: a smooth rate without a timer per byte.
async fn write_throttled(stream: &mut TcpStream, body: &[u8], bytes_per_sec: usize) -> io::Result<()> {
    let bytes_per_sec = bytes_per_sec.max(1);
    let piece = (bytes_per_sec / 20).max(1);
    let pause = Duration::from_secs_f64(piece as f64 / bytes_per_sec as f64);
    for chunk in body.chunks(piece) {
        stream.write_all(chunk).await?;
        stream.flush().await?;
        tokio::time::sleep(pause).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Blocking test client
// ---------------------------------------------------------------------------------------------

/// A response read by `http_request`.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a fresh connection (`Connection: close`); redirects are not followed.
/// A body cut short of its `Content-Length` or final chunk is an `UnexpectedEof` error.
pub fn http_request(method: &str, url: &str, headers: &[(&str, &str)]) -> io::Result<HttpResponse> {
    let (host, path) = split_url(url)?;
    let address = host.to_socket_addrs()?.next().ok_or_else(|| invalid_data("no address for host"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head += &format!("{name}: {value}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw, method == "HEAD")
}

/// `GET` that panics on transport errors, for brevity in tests.
pub fn http_get(url: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_request("GET", url, headers).unwrap_or_else(|error| panic!("GET {url}: {error}"))
}

/// `Authorization` value for HTTP Basic.
pub fn basic_auth(user: &str, pass: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{pass}").as_bytes()))
}

/// `sha256:<hex>` of the bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256:{hex}")
}

/// Splits `http://host:port/path?query` into `host:port` and `/path?query`.
fn split_url(url: &str) -> io::Result<(&str, &str)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| invalid_data("only http:// URLs"))?;
    Ok(match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    })
}

fn parse_response(raw: &[u8], head_only: bool) -> io::Result<HttpResponse> {
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| unexpected_eof("response head incomplete"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| invalid_data("response head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid_data("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = find_header(&headers, "transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
    let length = find_header(&headers, "content-length").and_then(|v| v.parse::<usize>().ok());
    let body = match (head_only, chunked, length) {
        (true, _, _) => Vec::new(),
        (false, true, _) => decode_chunked(rest)?,
        (false, false, Some(len)) if rest.len() < len => {
            return Err(unexpected_eof(&format!("body cut at {} of {len} bytes", rest.len())))
        }
        (false, false, Some(len)) => rest[..len].to_vec(),
        (false, false, None) => rest.to_vec(),
    };
    Ok(HttpResponse { status, headers, body })
}

fn decode_chunked(mut data: &[u8]) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    // Each round consumes at least a size line, so data.len() rounds always suffice.
    for _ in 0..=data.len() {
        let line_end = find(data, b"\r\n").ok_or_else(|| unexpected_eof("chunk size line cut"))?;
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| invalid_data("chunk size"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| invalid_data("chunk size"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if data.len() < size + 2 {
            return Err(unexpected_eof("chunk cut"));
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
    Err(unexpected_eof("no final chunk"))
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// A panicking test thread must not poison the fake for the assertions that follow.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn invalid_data(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

fn unexpected_eof(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, message.to_owned())
}

/// Decodes `%XX` escapes and `+` (form encoding of a space, which clients use in `scope=`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes[i] {
            b'%' => bytes.get(i + 1..i + 3).and_then(|hex| Some(hex_value(hex[0])? * 16 + hex_value(hex[1])?)),
            _ => None,
        };
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (byte, None) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|value| value as u8)
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for group in input.chunks(3) {
        let byte = |i: usize| u32::from(group.get(i).copied().unwrap_or(0));
        let bits = byte(0) << 16 | byte(1) << 8 | byte(2);
        for i in 0..4 {
            let sextet = (bits >> (18 - 6 * i)) & 63;
            out.push(if i <= group.len() { ALPHABET[sextet as usize] as char } else { '=' });
        }
    }
    out
}
