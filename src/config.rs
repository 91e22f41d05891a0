//! Configuration: the YAML file (the Go ociregistry's keys plus a few of ours),
//! merged with the command line into one validated [`Settings`]. Command line
//! beats file beats default. Every problem in a file is reported at once, each
//! naming its key, and the server does not start with any of them.

pub mod admin;
pub mod auth;
pub mod breaker;
pub mod duration;
pub mod patterns;
pub mod prune;
pub mod server_tls;
pub mod size;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::{Cli, IoDriver, LogFormat, LogLevel, ServeArgs};
use crate::oci::RegistryName;

mod policies;
pub use auth::{AuthConfig, Credentials, EcrSource};
pub use breaker::{BreakerConfig, Policy as BreakerPolicy};
pub use duration::parse as parse_duration;
pub use policies::{DurationValue, TagPolicy};

pub const DEFAULT_IMAGE_PATH: &str = "/var/lib/ociregistry";
pub const DEFAULT_HOST: &str = "0.0.0.0";
pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_PULL_TIMEOUT_MS: u64 = 60_000;
/// Seconds an idle keep-alive connection is kept, and a write may make no
/// progress, by default (`idleTimeout`, `writeTimeout`): nginx's keepalive and send timeouts.
pub const DEFAULT_CONNECTION_TIMEOUT_SECS: u64 = 60;
/// Free space a download may not take the image path below by default: room
/// for manifests, records and tags when blobs have filled the disk.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;
/// Client connections open at once by default: well under the file descriptor
/// limit the server raises itself to, with room for files and upstream sockets.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// How long a request head may take once begun (nginx's `client_header_timeout`).
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 60;
/// The longest `headerTimeout` accepted: a day, far above any client's need
/// and far from where a deadline computed from it could overflow.
pub const MAX_HEADER_TIMEOUT_SECS: u64 = 86_400;
/// How long shutdown lets responses (and the downloads feeding them) go on.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How committed blobs of 4 MiB and more go to the socket (`blobSend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobSend {
    /// From a memory mapping to clients on the same host (loopback or one of
    /// this host's addresses), where the kernel copies the bytes anyway;
    /// `sendfile` to everyone else. The default.
    Auto,
    /// `sendfile(2)` to every client: the least CPU for this process.
    Sendfile,
    /// From a memory mapping to every client.
    Mmap,
}

/// The configuration file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct FileConfig {
    /// Go writes the `--config-file` path here; in a file it has no effect (in Go
    /// either: the flag's value replaces it). Accepted so Go files load.
    pub config_file: Option<PathBuf>,
    pub image_path: Option<PathBuf>,
    pub log_level: Option<LogLevel>,
    /// `text` or `json` (ours).
    pub log_format: Option<LogFormat>,
    pub log_file: Option<PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub default_ns: Option<String>,
    pub air_gapped: Option<bool>,
    pub always_pull_latest: Option<bool>,
    pub pull_timeout: Option<u64>,
    /// Seconds a request head may take once its first byte arrived (ours).
    pub header_timeout: Option<u64>,
    /// Client connections open at once; past this a new one is answered 503 and closed (ours).
    pub max_connections: Option<usize>,
    /// Free bytes a download may not take the image path's file system below (ours).
    pub min_free_bytes: Option<u64>,
    /// Seconds an idle keep-alive connection is kept (ours).
    pub idle_timeout: Option<u64>,
    /// Seconds a write may make no progress before the connection is cut (ours).
    pub write_timeout: Option<u64>,
    pub threads: Option<usize>,
    pub io_driver: Option<IoDriver>,
    /// Refuse every upstream that is not listed under `registries` (ours).
    pub deny_unlisted: Option<bool>,
    /// Extra manifest media types (artifacts) to request from upstreams (ours).
    pub artifact_types: Vec<String>,
    /// Bytes of manifests and small blobs kept in memory (ours).
    pub memory_cache_bytes: Option<usize>,
    /// Fetch an image's other blobs when a client starts downloading one of them (ours).
    pub prefetch: Option<bool>,
    /// Blobs up to this size are served from memory (ours).
    pub memory_blob_max_bytes: Option<u64>,
    /// How large cached blobs are sent (ours; see [`BlobSend`]).
    pub blob_send: Option<BlobSend>,
    /// Port of the Prometheus exposition at `/metrics`; 0 or absent: none.
    pub metrics: Option<u16>,
    /// Every upstream's circuit breaker, unless its entry says otherwise (ours).
    pub circuit_breaker: Option<BreakerConfig>,
    /// How often cached tags are re-checked upstream, unless an entry says otherwise (ours).
    pub tag_policy: Option<DurationValue>,
    /// Who may use the admin API under `/cmd/` besides loopback peers (ours).
    pub admin: Option<admin::AdminConfig>,
    pub registries: Vec<RegistryConfig>,
    /// Images prune never removes: regular expressions matched like `--pattern` (ours).
    pub pinned: Vec<String>,
    /// Platform taken from multi-platform indexes by `load` (and preloading), as `--os`.
    pub os: Option<String>,
    /// As `--arch`: `amd64`, `arm64/v8`.
    pub arch: Option<String>,
    /// What `serve` loads before it serves (as `--preload-images`).
    pub preload_images: Option<String>,
    /// What `load` loads when `--image-file` is not given.
    pub image_file: Option<String>,
    /// The name `load` gives the one image of a tarball without a usable name (as `--resolve-ref`).
    pub resolve_ref: Option<String>,
    /// Defaults of `list`'s `--header`, `--pattern` and `--short-digest`.
    pub list_config: Option<ListConfig>,
    /// Serve the built-in hello-world image (as `--hello-world`).
    pub hello_world: Option<bool>,
    /// Port of the liveness and readiness probes (`/health`, `/ready`); 0 or absent: none.
    pub health: Option<u16>,
    /// Background pruning (see `prune`).
    pub prune_config: Option<prune::PruneConfig>,
    /// HTTPS on the serving port (see `server_tls`).
    pub server_tls_config: Option<server_tls::ServerTlsConfig>,
}

/// `listConfig:` (Go's keys): what `list` does when its flags do not say.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ListConfig {
    pub header: bool,
    /// As `--pattern`.
    pub expr: Option<String>,
    pub short_digest: bool,
}

/// One upstream registry entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryConfig {
    /// The registry as clients name it: `docker.io`, `quay.io`, `127.0.0.1:5001`.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// `http` or `https` (default https).
    #[serde(default)]
    pub scheme: Option<String>,
    /// Where requests for `name` really go: a URL, optionally with a path prefix
    /// (a corporate or regional mirror). Its scheme wins over `scheme`.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// This upstream's circuit breaker; absent fields come from the global key (ours).
    #[serde(default)]
    pub circuit_breaker: Option<BreakerConfig>,
    /// How often this upstream's cached tags are re-checked (ours).
    #[serde(default)]
    pub tag_policy: Option<DurationValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsConfig {
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    #[serde(default, alias = "insecure_skip_verify")]
    pub insecure_skip_verify: bool,
}

/// A validated upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Registry {
    pub name: RegistryName,
    /// Scheme, host and optional path prefix requests go to, without a trailing `/`.
    pub base_url: String,
    /// Whether requests carry `?ns=<name>` (they do when `endpoint` is set).
    pub send_ns: bool,
    pub credentials: Option<Credentials>,
    pub tls: TlsConfig,
    /// Its circuit breaker's thresholds.
    pub breaker: BreakerPolicy,
    /// How often its cached tags are re-checked.
    pub tag_policy: TagPolicy,
}

impl Registry {
    /// The built-in way to reach an upstream nobody configured: HTTPS to the
    /// host itself, Docker Hub's API at registry-1.docker.io.
    pub fn implicit(name: RegistryName) -> Registry {
        let host = if name.is_docker_hub() { "registry-1.docker.io" } else { name.as_str() };
        Registry {
            base_url: format!("https://{host}"),
            name,
            send_ns: false,
            credentials: None,
            tls: TlsConfig::default(),
            breaker: BreakerPolicy::default(),
            tag_policy: TagPolicy::Never,
        }
    }

    /// Whether `other` reaches the same upstream as the same client: URL,
    /// credentials and TLS alike (its breaker and tag policy may differ).
    /// What was obtained with one (a bearer token) holds for the other.
    pub fn same_access(&self, other: &Registry) -> bool {
        self.name == other.name
            && self.base_url == other.base_url
            && self.send_ns == other.send_ns
            && self.credentials == other.credentials
            && self.tls == other.tls
    }
}

/// Everything the server runs with, after merging and validation.
#[derive(Debug, Clone)]
pub struct Settings {
    pub image_path: PathBuf,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    pub log_file: Option<PathBuf>,
    pub host: String,
    pub port: u16,
    pub default_ns: Option<RegistryName>,
    pub air_gapped: bool,
    pub always_pull_latest: bool,
    pub pull_timeout: Duration,
    /// How long a request head may take once its first byte arrived, when
    /// the serving thread is not crowded (a crowded one, as the serving plane
    /// counts it, allows at most its own shorter limit).
    pub header_timeout: Duration,
    /// Client connections open at once (all serving threads together).
    pub max_connections: usize,
    /// Free bytes a download may not take the image path's file system below.
    pub min_free_bytes: u64,
    /// How long an idle keep-alive connection is kept.
    pub idle_timeout: Duration,
    /// How long a write may make no progress (a client that stopped reading).
    pub write_timeout: Duration,
    pub threads: Option<usize>,
    pub io_driver: IoDriver,
    pub deny_unlisted: bool,
    pub artifact_types: Vec<String>,
    pub memory: crate::store::MemoryLimits,
    pub prefetch: bool,
    pub blob_send: BlobSend,
    /// Port of the Prometheus exposition, if any.
    pub metrics_port: Option<u16>,
    /// Port of the liveness and readiness probes, if any.
    pub health_port: Option<u16>,
    /// The circuit breaker of upstreams that are not listed (listed ones carry their own).
    pub circuit_breaker: BreakerPolicy,
    /// The tag policy of upstreams that are not listed (listed ones carry their own).
    pub tag_policy: TagPolicy,
    /// Who may use the admin API besides loopback peers.
    pub admin: admin::Access,
    pub registries: Vec<Registry>,
    /// Background pruning, if `pruneConfig` enables it.
    pub prune: Option<prune::BackgroundPrune>,
    /// Size-based eviction, if `pruneConfig.maxSize` asks for it.
    pub evict: Option<prune::Watermarks>,
    /// `pinned`: patterns of images no prune removes.
    pub pinned: Vec<String>,
    /// Image lists and tarballs to load before serving (`--preload-images`).
    pub preload_images: Option<String>,
    /// The platform preloading takes from an index (`--os`, `--arch`).
    pub platform: crate::oci::Platform,
    /// Serve the built-in hello-world image (`--hello-world`).
    pub hello_world: bool,
    /// HTTPS on the serving port (`serverTlsConfig`), if asked for.
    pub tls: Option<server_tls::ServerTls>,
}

/// What every command needs, from the global flags over the file over the
/// defaults, without any of `serve`'s options: where the image path is and
/// how to log.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    pub image_path: PathBuf,
    /// The flag's or the file's level; each command has its own default.
    pub log_level: Option<LogLevel>,
    pub log_format: LogFormat,
    pub log_file: Option<PathBuf>,
}

impl CommonSettings {
    /// Reads `--config-file` (if given) for the keys every command shares.
    pub fn resolve(cli: &Cli) -> Result<CommonSettings, ConfigError> {
        Ok(CommonSettings::merge(cli, &FileConfig::of(cli)?))
    }

    /// As [`CommonSettings::resolve`], for a command that reads other keys of the file too.
    pub fn merge(cli: &Cli, file: &FileConfig) -> CommonSettings {
        CommonSettings {
            image_path: cli.image_path.clone().or(file.image_path.clone()).unwrap_or_else(|| DEFAULT_IMAGE_PATH.into()),
            log_level: cli.log_level.or(file.log_level),
            log_format: cli.log_format.or(file.log_format).unwrap_or_default(),
            log_file: cli.log_file.clone().or(file.log_file.clone()),
        }
    }
}

impl Settings {
    /// Settings for `serve`: defaults, overlaid by the file, overlaid by flags.
    pub fn resolve(cli: &Cli, serve: &ServeArgs) -> Result<Settings, ConfigError> {
        let file = FileConfig::of(cli)?;
        let common = CommonSettings::merge(cli, &file);
        let mut problems = Vec::new();
        let default_ns = serve.default_ns.clone().or(file.default_ns.clone());
        let default_ns = default_ns.and_then(|ns| match ns.parse::<RegistryName>() {
            Ok(n) => Some(n),
            Err(e) => {
                problems.push(format!("defaultNs: {e}"));
                None
            }
        });
        let pull_timeout = serve.pull_timeout.or(file.pull_timeout).unwrap_or(DEFAULT_PULL_TIMEOUT_MS);
        if pull_timeout == 0 {
            problems.push("pullTimeout: must be greater than 0 milliseconds".to_string());
        }
        let header_timeout = serve.header_timeout.or(file.header_timeout).unwrap_or(DEFAULT_HEADER_TIMEOUT_SECS);
        if !(1..=MAX_HEADER_TIMEOUT_SECS).contains(&header_timeout) {
            problems.push(format!("headerTimeout: must be between 1 and {MAX_HEADER_TIMEOUT_SECS} seconds"));
        }
        let idle_timeout = file.idle_timeout.unwrap_or(DEFAULT_CONNECTION_TIMEOUT_SECS);
        let write_timeout = file.write_timeout.unwrap_or(DEFAULT_CONNECTION_TIMEOUT_SECS);
        for (key, secs) in [("idleTimeout", idle_timeout), ("writeTimeout", write_timeout)] {
            if !(1..=MAX_HEADER_TIMEOUT_SECS).contains(&secs) {
                problems.push(format!("{key}: must be between 1 and {MAX_HEADER_TIMEOUT_SECS} seconds"));
            }
        }
        let max_connections = serve.max_connections.or(file.max_connections).unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            problems.push("maxConnections: must be at least 1".to_string());
        }
        if serve.threads.or(file.threads) == Some(0) {
            problems.push("threads: must be at least 1".to_string());
        }
        for (i, t) in file.artifact_types.iter().enumerate() {
            if let Err(e) = t.parse::<crate::oci::MediaType>() {
                problems.push(format!("artifactTypes[{i}]: {e}"));
            }
        }
        let circuit_breaker = match &file.circuit_breaker {
            Some(c) => c.resolve(BreakerPolicy::default(), "circuitBreaker", &mut problems),
            None => BreakerPolicy::default(),
        };
        let tag_policy = match &file.tag_policy {
            Some(v) => TagPolicy::parse(v, "tagPolicy").unwrap_or_else(|e| {
                problems.push(e);
                TagPolicy::Never
            }),
            None => TagPolicy::Never,
        };
        let registries = validate_registries(&file.registries, (circuit_breaker, tag_policy), &mut problems);
        let prune = prune::validate(file.prune_config.as_ref(), &mut problems);
        let evict = prune::watermarks(file.prune_config.as_ref(), &mut problems);
        if let Err(e) = patterns::Patterns::from_entries(file.pinned.iter().map(String::as_str)) {
            problems.push(format!("pinned: {e}"));
        }
        let os = serve.os.as_deref().or(file.os.as_deref());
        let platform =
            crate::oci::Platform::parse(os, serve.arch.as_deref().or(file.arch.as_deref())).unwrap_or_else(|e| {
                problems.push(format!("os/arch: {e}"));
                crate::oci::Platform::parse(None, None).expect("this host's platform")
            });
        let admin = admin::Access::from_config(file.admin.as_ref(), &mut problems);
        let tls = server_tls::validate(file.server_tls_config.as_ref(), &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        Ok(Settings {
            image_path: common.image_path,
            log_level: common.log_level.unwrap_or(LogLevel::Info),
            log_format: common.log_format,
            log_file: common.log_file,
            host: serve.host.clone().or(file.host.clone()).unwrap_or_else(|| DEFAULT_HOST.into()),
            port: serve.port.or(file.port).unwrap_or(DEFAULT_PORT),
            default_ns,
            air_gapped: serve.air_gapped || file.air_gapped.unwrap_or(false),
            always_pull_latest: serve.always_pull_latest || file.always_pull_latest.unwrap_or(false),
            pull_timeout: Duration::from_millis(pull_timeout),
            header_timeout: Duration::from_secs(header_timeout),
            max_connections,
            min_free_bytes: file.min_free_bytes.unwrap_or(DEFAULT_MIN_FREE_BYTES),
            idle_timeout: Duration::from_secs(idle_timeout),
            write_timeout: Duration::from_secs(write_timeout),
            threads: serve.threads.or(file.threads),
            io_driver: serve.io_driver.or(file.io_driver).unwrap_or(IoDriver::Auto),
            deny_unlisted: file.deny_unlisted.unwrap_or(false),
            artifact_types: file.artifact_types.clone(),
            memory: {
                let d = crate::store::MemoryLimits::default();
                crate::store::MemoryLimits {
                    budget: file.memory_cache_bytes.unwrap_or(d.budget),
                    blob_max: file.memory_blob_max_bytes.unwrap_or(d.blob_max),
                }
            },
            prefetch: file.prefetch.unwrap_or(true),
            blob_send: file.blob_send.unwrap_or(BlobSend::Auto),
            metrics_port: serve.metrics.or(file.metrics).filter(|&p| p != 0),
            health_port: serve.health.or(file.health).filter(|&p| p != 0),
            circuit_breaker,
            tag_policy,
            admin,
            registries,
            prune,
            evict,
            pinned: file.pinned.clone(),
            tls,
            preload_images: serve.preload_images.clone().or(file.preload_images.clone()),
            platform,
            hello_world: serve.hello_world || file.hello_world.unwrap_or(false),
        })
    }

    /// How often `registry:tag` is re-checked upstream: its entry's
    /// `tagPolicy` (or the global one), and always for `latest` with `alwaysPullLatest`.
    pub fn tag_policy(&self, registry: &RegistryName, tag: &str) -> TagPolicy {
        if self.always_pull_latest && tag == "latest" {
            return TagPolicy::Always;
        }
        self.registry(registry).map_or(self.tag_policy, |r| r.tag_policy)
    }

    /// The configured entry for `name`, if any.
    pub fn registry(&self, name: &RegistryName) -> Option<&Registry> {
        self.registries.iter().find(|r| &r.name == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// (`error` rather than `source`: the message already says it, and a
    /// `source` would be printed again by the error chain.)
    #[error("cannot read config file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl FileConfig {
    /// The file named by `--config-file`, or an empty one.
    pub fn of(cli: &Cli) -> Result<FileConfig, ConfigError> {
        match &cli.config_file {
            Some(path) => FileConfig::load(path),
            None => Ok(FileConfig::default()),
        }
    }

    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.into(), error })?;
        FileConfig::parse(&text).map_err(|message| ConfigError::Parse { path: path.into(), message })
    }

    pub fn parse(text: &str) -> Result<FileConfig, String> {
        if text.trim().is_empty() {
            return Ok(FileConfig::default());
        }
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
    }
}

fn validate_registries(
    entries: &[RegistryConfig],
    (breaker, tag_policy): (BreakerPolicy, TagPolicy),
    problems: &mut Vec<String>,
) -> Vec<Registry> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("registries[{i}]");
        let name = match entry.name.parse::<RegistryName>() {
            Ok(n) => n,
            Err(e) => {
                problems.push(format!("{at}.name: {e}"));
                continue;
            }
        };
        let at = format!("registries[{i}] ({name})");
        if !seen.insert(name.clone()) {
            problems.push(format!("{at}.name: listed more than once"));
        }
        let base_url = match base_url(entry, &name) {
            Ok(u) => u,
            Err(e) => {
                problems.push(format!("{at}.{e}"));
                continue;
            }
        };
        let credentials = entry.auth.as_ref().and_then(|a| auth::credentials(a, &at, problems));
        let tls = entry.tls.clone().unwrap_or_default();
        check_tls(&tls, &at, problems);
        let breaker = match &entry.circuit_breaker {
            Some(c) => c.resolve(breaker, &format!("registries[{i}].circuitBreaker"), problems),
            None => breaker,
        };
        let tag_policy = match &entry.tag_policy {
            Some(v) => TagPolicy::parse(v, &format!("registries[{i}].tagPolicy")).unwrap_or_else(|e| {
                problems.push(e);
                tag_policy
            }),
            None => tag_policy,
        };
        let send_ns = entry.endpoint.is_some();
        out.push(Registry { name, base_url, send_ns, credentials, tls, breaker, tag_policy });
    }
    out
}

fn base_url(entry: &RegistryConfig, name: &RegistryName) -> Result<String, String> {
    let scheme = entry.scheme.as_deref().unwrap_or("https");
    if scheme != "http" && scheme != "https" {
        return Err(format!("scheme: {scheme:?} is neither http nor https"));
    }
    match &entry.endpoint {
        Some(endpoint) => {
            let url = reqwest::Url::parse(endpoint).map_err(|e| format!("endpoint: {endpoint:?} is not a URL: {e}"))?;
            if url.scheme() != "http" && url.scheme() != "https" {
                return Err(format!("endpoint: {endpoint:?} must be an http or https URL"));
            }
            if url.query().is_some() || url.host_str().is_none() {
                return Err(format!("endpoint: {endpoint:?} must be scheme://host[:port][/path] without a query"));
            }
            Ok(endpoint.trim_end_matches('/').to_string())
        }
        None => {
            let host = if name.is_docker_hub() { "registry-1.docker.io" } else { name.as_str() };
            Ok(format!("{scheme}://{host}"))
        }
    }
}

fn check_tls(tls: &TlsConfig, at: &str, problems: &mut Vec<String>) {
    for (key, path) in [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)] {
        if let Some(p) = path {
            if let Err(e) = std::fs::metadata(p) {
                problems.push(format!("{at}.tls.{key}: cannot read {}: {e}", p.display()));
            }
        }
    }
    if tls.cert.is_some() != tls.key.is_some() {
        problems.push(format!("{at}.tls: cert and key must be given together"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn settings(yaml: &str, args: &[&str]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut argv = vec!["ociregistry", "--config-file", path.to_str().unwrap(), "serve"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).unwrap();
        let Some(crate::cli::Command::Serve(serve)) = &cli.command else { panic!() };
        Settings::resolve(&cli, serve)
    }

    #[test]
    fn defaults_without_a_file() {
        let cli = Cli::try_parse_from(["ociregistry", "serve"]).unwrap();
        let Some(crate::cli::Command::Serve(serve)) = &cli.command else { panic!() };
        let s = Settings::resolve(&cli, serve).unwrap();
        assert_eq!(s.image_path, PathBuf::from(DEFAULT_IMAGE_PATH));
        assert_eq!((s.host.as_str(), s.port), ("0.0.0.0", 8080));
        assert_eq!(s.pull_timeout, Duration::from_secs(60));
        assert_eq!(s.header_timeout, Duration::from_secs(60));
        assert!(!s.air_gapped && s.default_ns.is_none());
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let s = settings("port: 9000\npullTimeout: 5000\nairGapped: true\nheaderTimeout: 7\n", &["--port", "9100"])
            .unwrap();
        assert_eq!(s.port, 9100);
        assert_eq!(s.pull_timeout, Duration::from_millis(5000));
        assert!(s.air_gapped);
        assert_eq!(s.header_timeout, Duration::from_secs(7));
        let s = settings("headerTimeout: 7\n", &["--header-timeout", "3"]).unwrap();
        assert_eq!(s.header_timeout, Duration::from_secs(3));
    }

    #[test]
    fn other_commands_find_the_image_path_like_serve() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "imagePath: /from/file\nlogLevel: debug\nport: 9000\n").unwrap();
        let common = |args: &[&str]| {
            let mut argv = vec!["ociregistry", "--config-file", path.to_str().unwrap()];
            argv.extend_from_slice(args);
            CommonSettings::resolve(&Cli::try_parse_from(argv).unwrap()).unwrap()
        };
        let c = common(&["verify"]);
        assert_eq!((c.image_path, c.log_level), (PathBuf::from("/from/file"), Some(LogLevel::Debug)));
        assert_eq!(common(&["--image-path", "/flag", "verify"]).image_path, PathBuf::from("/flag"));
        let c = CommonSettings::resolve(&Cli::try_parse_from(["ociregistry", "verify"]).unwrap()).unwrap();
        assert_eq!((c.image_path, c.log_level), (PathBuf::from(DEFAULT_IMAGE_PATH), None));
    }

    #[test]
    fn registries_are_parsed() {
        std::env::set_var("OCIREG_TEST_PW", "s3cret");
        let yaml = r#"
registries:
  - name: index.docker.io
    endpoint: https://mirror.corp:5000/dockerhub/
  - name: 127.0.0.1:5001
    scheme: http
    auth: {user: u, passwordFromEnv: OCIREG_TEST_PW}
    tls: {insecure_skip_verify: true}
"#;
        let s = settings(yaml, &[]).unwrap();
        let hub = s.registry(&"docker.io".parse().unwrap()).unwrap();
        assert_eq!(hub.base_url, "https://mirror.corp:5000/dockerhub");
        assert!(hub.send_ns);
        let local = &s.registries[1];
        assert_eq!(local.base_url, "http://127.0.0.1:5001");
        assert!(!local.send_ns);
        assert!(local.tls.insecure_skip_verify);
        assert_eq!(local.credentials, Some(Credentials::Basic { user: "u".into(), password: "s3cret".into() }));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = settings("registries:\n  - name: quay.io\n    shceme: http\n", &[]).unwrap_err();
        assert!(err.to_string().contains("shceme"), "{err}");
        let err = settings("prot: 1\n", &[]).unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
    }

    #[test]
    fn every_problem_is_reported() {
        let yaml = r#"
pullTimeout: 0
headerTimeout: 0
idleTimeout: 0
admin: {allow: [10.0.0.0/8, not-a-network]}
artifactTypes: ["application/x; evil=1"]
registries:
  - name: quay.io
    scheme: ftp
  - name: ghcr.io
    auth: {user: u}
    tls: {cert: /nonexistent/cert.pem}
  - name: ghcr.io
  - name: docker.io
    auth: {password: x}
  - name: a:b:c
"#;
        let err = settings(yaml, &[]).unwrap_err().to_string();
        for needle in [
            "pullTimeout",
            "headerTimeout",
            "idleTimeout",
            "artifactTypes[0]",
            "scheme",
            "no password",
            "tls.cert",
            "cert and key",
            "more than once",
            "without a user",
            "registries[4].name",
            "admin.allow[1]",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
    }

    #[test]
    fn header_timeout_is_bounded() {
        for bad in ["0", "86401", "18446744073709551615"] {
            let err = settings("", &["--header-timeout", bad]).unwrap_err().to_string();
            assert!(err.contains("headerTimeout"), "{bad}: {err}");
        }
        assert_eq!(settings("headerTimeout: 86400\n", &[]).unwrap().header_timeout, Duration::from_secs(86_400));
    }

    #[test]
    fn circuit_breakers_are_set_globally_and_per_registry() {
        let yaml = r#"
circuitBreaker: {failures: 3, coolDown: 2s}
registries:
  - name: quay.io
    circuitBreaker: {failures: 2, maxCoolDown: 10s}
  - name: ghcr.io
  - name: docker.io
    circuitBreaker: {failures: 0}
"#;
        let s = settings(yaml, &[]).unwrap();
        let secs = Duration::from_secs;
        let p = s.circuit_breaker;
        assert_eq!((p.failures, p.cool_down, p.max_cool_down), (3, secs(2), secs(60)));
        let p = s.registries[0].breaker;
        assert_eq!((p.failures, p.cool_down, p.max_cool_down), (2, secs(2), secs(10)));
        assert_eq!(s.registries[1].breaker, s.circuit_breaker);
        assert_eq!(s.registries[2].breaker.failures, 0);
        assert_eq!(settings("", &[]).unwrap().circuit_breaker, BreakerPolicy::default());
        let yaml = r#"
circuitBreaker: {coolDown: 5}
registries:
  - name: quay.io
    circuitBreaker: {failures: 2, maxCoolDown: 1y}
  - name: ghcr.io
    circuitBreaker: {coolDown: 2m, maxCoolDown: 1m}
"#;
        let err = settings(yaml, &[]).unwrap_err().to_string();
        for needle in [
            "circuitBreaker.coolDown",
            "registries[0].circuitBreaker.maxCoolDown",
            "registries[1].circuitBreaker.maxCoolDown",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
        let err = settings("circuitBreaker: {failure: 2}\n", &[]).unwrap_err().to_string();
        assert!(err.contains("failure"), "{err}");
    }

    #[test]
    fn tag_policies_are_set_globally_and_per_registry() {
        let yaml = r#"
tagPolicy: 12h
registries:
  - name: quay.io
    tagPolicy: always
  - name: ghcr.io
  - name: docker.io
    tagPolicy: never
"#;
        let s = settings(yaml, &["--always-pull-latest"]).unwrap();
        let every_12h = TagPolicy::Every(Duration::from_secs(43_200));
        let policy = |r: &str, tag: &str| s.tag_policy(&r.parse().unwrap(), tag);
        assert_eq!(policy("quay.io", "v1"), TagPolicy::Always);
        assert_eq!(policy("ghcr.io", "v1"), every_12h);
        assert_eq!(policy("docker.io", "v1"), TagPolicy::Never);
        assert_eq!(policy("docker.io", "latest"), TagPolicy::Always, "--always-pull-latest");
        assert_eq!(policy("unlisted.example", "v1"), every_12h);
        let s = settings("", &[]).unwrap();
        assert_eq!(s.tag_policy(&"docker.io".parse().unwrap(), "latest"), TagPolicy::Never, "the Go default");
        let yaml = "tagPolicy: 30\nregistries:\n  - name: quay.io\n    tagPolicy: hourly\n";
        let err = settings(yaml, &[]).unwrap_err().to_string();
        for needle in ["tagPolicy: ", "registries[0].tagPolicy: "] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
    }

    #[test]
    fn server_tls_config_is_validated_with_the_key_named() {
        let yaml = "serverTlsConfig:\n  cert: /c.pem\n  key: /k.pem\n  clientAuth: verify\n";
        let tls = settings(yaml, &[]).unwrap().tls.unwrap();
        assert_eq!(tls.client_auth, server_tls::ClientAuth::Verify);
        let err = settings("serverTlsConfig:\n  cert: /c.pem\n", &[]).unwrap_err().to_string();
        assert!(err.contains("serverTlsConfig.key"), "{err}");
        assert!(settings("serverTlsConfig:\n", &[]).unwrap().tls.is_none(), "an empty key asks for nothing");
    }

    #[test]
    fn log_formats_are_read_in_any_case() {
        let s = settings("logLevel: DEBUG\nlogFormat: JSON\n", &[]).unwrap();
        assert_eq!((s.log_level, s.log_format), (LogLevel::Debug, LogFormat::Json));
        let cli = Cli::try_parse_from(["ociregistry", "--log-format", "Text", "serve"]).unwrap();
        assert_eq!(cli.log_format, Some(LogFormat::Text));
        let err = settings("logFormat: xml\n", &[]).unwrap_err().to_string();
        assert!(err.contains("xml") && err.contains("text or json"), "{err}");
        assert_eq!(settings("", &[]).unwrap().log_format, LogFormat::Text);
    }

    #[test]
    fn health_port_comes_from_the_flag_over_the_go_key() {
        assert_eq!(settings("health: 8081\n", &[]).unwrap().health_port, Some(8081));
        assert_eq!(settings("health: 8081\n", &["--health", "9000"]).unwrap().health_port, Some(9000));
        assert_eq!(settings("health: 0\n", &[]).unwrap().health_port, None);
        assert_eq!(settings("", &[]).unwrap().health_port, None);
    }

    #[test]
    fn prune_config_is_read_with_the_go_keys_and_checked() {
        let s = settings("pruneConfig:\n  enabled: true\n  type: accessed\n  duration: 15d\n  dryrun: true\n", &[])
            .unwrap();
        let p = s.prune.unwrap();
        assert!(matches!(p.select, prune::Select::Accessed(1_296_000)) && p.dry_run && p.count.is_none());
        assert_eq!(p.every, prune::DEFAULT_FREQUENCY);
        let s = settings("pruneConfig:\n  enabled: false\n  type: nonsense\n", &[]).unwrap();
        assert!(s.prune.is_none(), "a disabled pruneConfig is not checked");
        let yaml = "pinned: ['(']\npruneConfig:\n  enabled: true\n  type: pattern\n  frequency: 0\n  count: -3\n";
        let err = settings(yaml, &[]).unwrap_err().to_string();
        for needle in ["pinned", "pruneConfig.expr", "pruneConfig.frequency", "pruneConfig.count"] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
    }

    #[test]
    fn go_token_maps_load() {
        let yaml = r#"
registries:
  - name: quay.io
    auth: {user: u, password: p, token: {static: QVdTOnNlY3JldA==}}
  - name: ghcr.io
    auth: {token: ours-bearer}
  - name: docker.io
    auth: {user: u, password: p, token: {provider: "", static: ""}}
"#;
        let s = settings(yaml, &[]).unwrap();
        let quay = &s.registries[0].credentials;
        assert_eq!(quay, &Some(Credentials::StaticBasic("QVdTOnNlY3JldA==".into())), "static wins, as in Go");
        assert_eq!(quay.as_ref().unwrap().fixed_authorization().unwrap(), "Basic QVdTOnNlY3JldA==");
        let ghcr = s.registries[1].credentials.as_ref().unwrap();
        assert_eq!(ghcr.fixed_authorization().unwrap(), "Bearer ours-bearer");
        assert!(
            matches!(s.registries[2].credentials, Some(Credentials::Basic { .. })),
            "an empty map asks for nothing"
        );
    }

    #[test]
    fn ecr_provider_is_parsed_with_its_options_or_refused_naming_the_feature() {
        let yaml = r#"
registries:
  - name: 111122223333.dkr.ecr.us-south-1.amazonaws.com
    auth:
      token: {provider: ecr, providerOpts: "profile=Build-Bot,region=us-south-1", expiry: 6h}
  - name: 444455556666.dkr.ecr.eu-west-1.amazonaws.com
    auth:
      token: {provider: ecr}
"#;
        if cfg!(feature = "ecr") {
            let s = settings(yaml, &[]).unwrap();
            let source = |profile: Option<&str>, region: Option<&str>, hours: u64| {
                Some(Credentials::Ecr(EcrSource {
                    profile: profile.map(str::to_string),
                    region: region.map(str::to_string),
                    expiry: std::time::Duration::from_secs(hours * 3600),
                }))
            };
            assert_eq!(s.registries[0].credentials, source(Some("Build-Bot"), Some("us-south-1"), 6));
            assert_eq!(s.registries[1].credentials, source(None, None, 12), "Go's default expiry is 12h");
            assert_eq!(s.registries[0].credentials.as_ref().unwrap().fixed_authorization(), None);
        } else {
            let err = settings(yaml, &[]).unwrap_err().to_string();
            assert!(err.contains("(111122223333.dkr.ecr.us-south-1.amazonaws.com).auth.token.provider: ecr"));
            assert!(err.contains("built without the `ecr` cargo feature"), "{err}");
        }
        let err = settings(
            "registries:\n  - name: quay.io\n    auth: {token: {provider: ecr, providerOpts: \"profile=../x\"}}\n",
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("providerOpts: the value of \"profile\""), "{err}");
        let yaml = r#"
registries:
  - name: quay.io
    auth:
      token: {provider: gcr, providerOpts: "zone=x,region=", expiry: soon}
  - name: ghcr.io
    auth:
      token: {provider: ecr, static: tok, expiry: 1h}
"#;
        let err = settings(yaml, &[]).unwrap_err().to_string();
        for needle in [
            "auth.token.provider: \"gcr\"",
            "auth.token.providerOpts: \"zone=x\"",
            "auth.token.providerOpts: \"region\" has no value",
            "auth.token.expiry",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
        assert!(!err.contains("registries[1]"), "a static token is used, as in Go: {err}");
        let err = settings("registries:\n  - name: quay.io\n    auth: {token: {provder: ecr}}\n", &[]).unwrap_err();
        assert!(err.to_string().contains("registries[0].auth: unknown field `provder`"), "{err}");
    }

    #[test]
    fn passwords_come_from_env_then_file_then_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("password");
        std::fs::write(&secret, "  from-file\n").unwrap();
        std::env::set_var("OCIREG_TEST_PW_WINS", "from-env");
        let basic = |password: &str| Some(Credentials::Basic { user: "u".into(), password: password.into() });
        let yaml = format!(
            "registries:\n  - name: quay.io\n    auth: {{user: u, password: key, passwordFromEnv: OCIREG_TEST_PW_WINS, passwordFile: {f}}}\n  - name: ghcr.io\n    auth: {{user: u, password: key, passwordFile: {f}}}\n  - name: docker.io\n    auth: {{user: u, password: key}}\n",
            f = secret.display()
        );
        let s = settings(&yaml, &[]).unwrap();
        assert_eq!(s.registries[0].credentials, basic("from-env"), "passwordFromEnv wins, as in Go");
        assert_eq!(s.registries[1].credentials, basic("from-file"), "read at load, trimmed");
        assert_eq!(s.registries[2].credentials, basic("key"));
        let missing = dir.path().join("absent");
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let yaml = format!(
            "registries:\n  - name: quay.io\n    auth: {{user: u, passwordFile: {}}}\n  - name: ghcr.io\n    auth: {{user: u, passwordFile: {}}}\n",
            missing.display(),
            dir.path().join("empty").display()
        );
        let err = settings(&yaml, &[]).unwrap_err().to_string();
        assert!(err.contains("registries[0] (quay.io).auth.passwordFile") && err.contains("absent"), "{err}");
        assert!(err.contains("registries[1] (ghcr.io).auth.passwordFile") && err.contains("empty"), "{err}");
    }

    #[test]
    fn log_levels_are_read_in_any_case() {
        assert_eq!(settings("logLevel: INFO\n", &[]).unwrap().log_level, LogLevel::Info);
        assert_eq!(settings("logLevel: Debug\n", &[]).unwrap().log_level, LogLevel::Debug);
        let err = settings("logLevel: LOUD\n", &[]).unwrap_err().to_string();
        assert!(err.contains("LOUD"), "{err}");
        let cli = Cli::try_parse_from(["ociregistry", "--log-level", "ERROR", "serve"]).unwrap();
        assert_eq!(cli.log_level, Some(LogLevel::Error));
    }

    #[test]
    fn go_keys_of_other_commands_load() {
        let yaml = "configFile: /etc/other.yaml\nresolveRef: quay.io/a/b:v1\nlistConfig: {header: true, expr: 'a,b', shortDigest: true}\n";
        settings(yaml, &[]).unwrap();
        let file = FileConfig::parse(yaml).unwrap();
        assert_eq!(file.resolve_ref.as_deref(), Some("quay.io/a/b:v1"));
        let list = file.list_config.unwrap();
        assert!(list.header && list.short_digest && list.expr.as_deref() == Some("a,b"));
        assert!(FileConfig::parse("listConfig: {headers: true}\n").unwrap_err().contains("headers"));
    }
}
