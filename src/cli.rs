//! The command line, compatible with the Go ociregistry: global flags, then a
//! subcommand. Every global and `serve` flag is also a config-file key (see
//! `config`); the command line beats the file, which beats the built-in
//! default. `verify`'s flags are for one run only.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "ociregistry",
    version,
    about = "A pull-only, pull-through, caching OCI Distribution registry",
    long_about = "A pull-only, pull-through, caching OCI Distribution registry for Kubernetes edge, \
air-gapped and development clusters. One instance serves images from many upstream registries \
(docker.io, quay.io, registry.k8s.io, ghcr.io, private registries) to containerd, CRI-O, podman, \
skopeo and Docker, and keeps every manifest and blob it served under one directory, so the second \
pull of anything needs no upstream.\n\n\
Upstream traffic honours HTTP_PROXY, HTTPS_PROXY and NO_PROXY."
)]
pub struct Cli {
    /// Directory holding all cached state (blobs, manifests, tags). Default /var/lib/ociregistry
    #[arg(long, global = true, value_name = "DIR")]
    pub image_path: Option<PathBuf>,

    /// YAML configuration file (keys as in the Go ociregistry; see README)
    #[arg(long, global = true, value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    /// Log verbosity (any case: INFO as info). Default info (warn for verify, whose output is its report)
    #[arg(long, global = true, value_enum, ignore_case = true)]
    pub log_level: Option<LogLevel>,

    /// Log line format: text, or json (one object a line; a request's lines share span.id). Default text
    #[arg(long, global = true, value_enum, ignore_case = true)]
    pub log_format: Option<LogFormat>,

    /// Append logs to this file instead of standard error
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// Without one, the help is printed (exit 0), as the Go ociregistry does.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the registry server
    ///
    /// HTTPS, with client certificates if asked, when the config file has serverTlsConfig.
    /// SIGINT or SIGTERM stop it gracefully. SIGHUP reads --config-file again: when it is valid, its
    /// registries section (names, endpoints, auth, tls, circuit breakers) is used for the requests that
    /// come next; when it is not, the running configuration is kept and the problems are logged. SIGHUP
    /// also re-reads the serverTlsConfig certificates (kept as they were if the new files do not load).
    Serve(ServeArgs),
    /// Check every cached object against its digest; with --repair, remove what is damaged
    ///
    /// Every committed blob and manifest is checked: its file exists, has the recorded size and
    /// hashes to its digest; manifests must also parse. Files under blobs/ that no record names
    /// (orphans) are counted. With --repair, what is damaged or missing is removed from the
    /// cache (a manifest with the tags that name it) and orphans are deleted, so the next pull
    /// fetches it again. Needs the image path's lock: stop the server first.
    ///
    /// Exit status: 0 when everything is intact (or everything damaged was removed), 1 when
    /// damage was found and not removed, 2 when verify could not run (usage, config, lock).
    Verify(VerifyArgs),
    /// List the cached images, with their times, sizes and completeness
    ///
    /// One line per image: a tag, or a manifest pulled by digest that no tag names (an index's
    /// cached platform manifests count as part of its image). Columns: image, tag or digest, type
    /// (list or image), created (first fetched), last pulled, size in MB (manifests and cached
    /// blobs, each counted once) and completeness (every cached platform manifest has all its
    /// blobs). Times are local, in the format --date of prune reads.
    ///
    /// Works while a server runs on the image path: it reads the files without taking the lock.
    /// The server writes last-pulled times out every 30 s (and at shutdown), so they may lag by
    /// that much.
    List(ListArgs),
    /// Remove images from the cache (by pattern, date, last pull or to fit a size)
    ///
    /// Every filter given must match. An index takes its cached platform manifests with it, and
    /// a manifest or blob goes only when no image that stays uses it (a layer shared by two
    /// images stays with the other). The tags of removed images go; the next pull fetches the
    /// image again. Pinned images (the pins file, the pinned: config list) are never removed.
    /// While a server runs on the image path, the prune runs inside it (an admin job, sent with
    /// the config's admin.token if it sets one; pulls go on) and its report is printed here; otherwise it takes the image path's lock. A server
    /// keeps its cache under a size by itself with the config's pruneConfig.maxSize and
    /// lowWatermark (the least recently pulled unpinned images go).
    Prune(PruneArgs),
    /// Load images into the cache from image lists (pulled from their upstreams) or tarballs
    ///
    /// --image-file takes an image list (one fully qualified reference per line, by tag or digest,
    /// e.g. quay.io/prometheus/busybox:latest or docker.io/library/alpine@sha256:…; `#` starts a
    /// comment), a `docker save` or OCI layout tarball (gzipped or not), a glob, or a comma list of
    /// them: 'lists/*.txt,images.tar.gz'. Each file's kind is told by its content. What is already
    /// cached is not fetched again. When a server runs on the image path, load finds it through
    /// <image-path>/.admin and hands the lists' images to it as an admin job (on its loopback
    /// admin endpoint, /cmd/load, sending the config's admin.token if it sets one): the server
    /// pulls them into its store, serves them at once, and load prints its progress and summary. A tarball is staged for it in <image-path>/tmp/ (a
    /// hard link or a copy) and read there by the server. With no server, load takes the image
    /// path's lock itself. --pin pins what loaded.
    ///
    /// Exit status: 0 when every image loaded, 1 when some image failed (each is named; the
    /// others are loaded), 2 when load could not run (usage, config, lock, unreadable files).
    Load(LoadArgs),
    /// Write cached images to an OCI image layout tarball, for load or ctr import elsewhere
    ///
    /// Chooses images by --pattern (as list matches them) or by --image-file (image lists as load
    /// reads them: references by tag or digest, `#` comments). Each image goes with its cached
    /// platform manifests, configs and layers, and with the cosign-style referrers-tag artifacts of
    /// its repository that are cached (sha256-<hex>.sig, .att, .sbom). The tarball holds
    /// oci-layout, index.json (each image named by io.containerd.image.name and
    /// org.opencontainers.image.ref.name, both the full reference) and blobs/<alg>/<hex>, each blob
    /// once; load --image-file, ctr import and skopeo's oci-archive: read it. Manifests are checked
    /// against their digests and blobs hashed as they are written. An incomplete image (a platform
    /// manifest, config or layer not cached) is refused unless --allow-incomplete. Works while a
    /// server runs on the image path (no lock); the tarball is written to a temp file beside FILE and
    /// renamed over it when complete.
    ///
    /// Exit status: 0 when every chosen image was written, 1 when some were refused (each is named;
    /// the others are written), 2 when export could not run (usage, config, unreadable image path,
    /// a write failure).
    Export(ExportArgs),
    /// Import a Go ociregistry cache (img/, lts/, fat/, blobs/<hex>) found in the image path, in place
    ///
    /// serve does this by itself at startup; this runs it by hand. Each Go manifest file is checked
    /// (its manifest bytes against their digest, its media type, its image name) and indexed under
    /// the image name and tag or digest Go pulled it as (lts/ holds Go's `latest` tags: they become
    /// ordinary `latest` tags). Each Go blob is hashed and renamed into blobs/sha256/. Imported
    /// manifest files go to go-migrated/img and go-migrated/lts once the import is durable;
    /// refused files (a blob not matching its name, a manifest not matching its digest, a file
    /// that is not the Go format) go to go-migrated/refused/, other files to go-migrated/unknown/,
    /// each named in a WARN line with why. Running it again after an interruption finishes the
    /// job; on a migrated path it does nothing. Needs the image path's lock: stop the server first.
    ///
    /// Exit status: 0 when everything was imported (or there was nothing to import), 1 when some
    /// file was refused or unknown, 2 when migrate could not run.
    Migrate(MigrateArgs),
    /// Print the version and build date (to standard error, as the Go ociregistry does) and exit
    Version,
}

/// A log level; upper case (`INFO`, as Go accepts it) or lower case, on the command line and in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl<'de> serde::Deserialize<'de> for LogLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<LogLevel, D::Error> {
        let text = String::deserialize(d)?;
        LogLevel::from_str(&text, true).map_err(|_| {
            serde::de::Error::custom(format!("unknown log level {text:?}: trace, debug, info, warn or error"))
        })
    }
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines: time, level, the request's span, target, message, fields
    #[default]
    Text,
    /// One JSON object a line: timestamp, level, target, message and fields at the top level,
    /// and the request's span (`{"id":…,"name":"request"}`) under `span`
    Json,
}

impl<'de> serde::Deserialize<'de> for LogFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<LogFormat, D::Error> {
        let text = String::deserialize(d)?;
        LogFormat::from_str(&text, true)
            .map_err(|_| serde::de::Error::custom(format!("unknown log format {text:?}: text or json")))
    }
}

/// Which monoio driver the serving threads run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoDriver {
    /// io_uring where the kernel and seccomp profile allow it, else epoll (logged)
    Auto,
    /// io_uring only: refuse to start without it
    Uring,
    /// epoll only (the normal case inside pods whose seccomp profile blocks io_uring)
    Epoll,
}

#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on; `::` listens on IPv6 and IPv4. Default 0.0.0.0
    #[arg(long)]
    pub host: Option<String>,

    /// Port to listen on (0 picks a free port, logged at startup). Default 8080
    #[arg(long)]
    pub port: Option<u16>,

    /// Upstream for requests that name none (no `?ns=`, no registry host in the path),
    /// e.g. docker.io for Docker Engine's registry-mirrors. Default: none (such requests get 404)
    #[arg(long, value_name = "REGISTRY")]
    pub default_ns: Option<String>,

    /// Never contact an upstream: serve only what is cached; a miss is an immediate 404
    #[arg(long)]
    pub air_gapped: bool,

    /// Re-check `:latest` tags upstream (a HEAD) on every pull, whatever `tagPolicy` says; the cached
    /// manifest is served if the upstream fails
    #[arg(long)]
    pub always_pull_latest: bool,

    /// Milliseconds to wait for an upstream's response headers, and for progress while a
    /// body streams (never a limit on the whole transfer). Default 60000
    #[arg(long, value_name = "MS")]
    pub pull_timeout: Option<u64>,

    /// Seconds a client may take to send a request head once its first byte has arrived;
    /// a connection whose head is not complete by then is closed. A head that begins while its
    /// serving thread holds more than 1024 connections gets at most 10 s. Default 60
    #[arg(long, value_name = "SECS")]
    pub header_timeout: Option<u64>,

    /// Client connections open at once, all serving threads together (each thread takes an equal
    /// share). A connection past the cap is answered 503 with Retry-After and closed at once,
    /// so clients retry instead of waiting. Default 16384
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Serving threads (one monoio runtime each). Default: the CPUs this process may use
    #[arg(long)]
    pub threads: Option<usize>,

    /// I/O driver for the serving threads. Default auto
    #[arg(long, value_enum)]
    pub io_driver: Option<IoDriver>,

    /// Serve Prometheus metrics at http://<host>:PORT/metrics, on the --host address (default every
    /// IPv4 interface, as the Go version). Default 0: off
    #[arg(long, value_name = "PORT")]
    pub metrics: Option<u16>,

    /// Serve liveness (GET /health, 200 while the process runs) and readiness (GET /ready: 200 once
    /// the store is indexed, preloading is done and the serving threads accept; 503 with the reason
    /// otherwise, and during a graceful stop) over plain HTTP at http://<host>:PORT. Default 0: off
    #[arg(long, value_name = "PORT")]
    pub health: Option<u16>,

    /// Before serving, load these image lists and tarballs (as `load --image-file`: a file, a glob
    /// or a comma list). Failures are logged and counted; the server starts anyway
    #[arg(long, value_name = "SPEC")]
    pub preload_images: Option<String>,

    /// Operating system of the images --preload-images takes from an index. Default: this host's
    #[arg(long, value_name = "OS")]
    pub os: Option<String>,

    /// Architecture (and variant: arm64/v8) of the images --preload-images takes from an index.
    /// Default: this host's
    #[arg(long, value_name = "ARCH[/VARIANT]")]
    pub arch: Option<String>,

    /// Serve a built-in docker.io/library/hello-world:latest (linux/amd64, printing a greeting),
    /// committed into the image path at startup, so a cluster's wiring can be tried with no upstream
    #[arg(long)]
    pub hello_world: bool,
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Remove what is damaged or missing (and orphan files), so the next pull fetches it again
    #[arg(long)]
    pub repair: bool,

    /// Files hashed in parallel. Default: the CPUs this process may use
    #[arg(long, value_name = "N")]
    pub jobs: Option<NonZeroUsize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListOutput {
    /// Aligned columns
    Table,
    /// One JSON array of objects
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// List only images matching any of these comma-separated regular expressions (unanchored),
    /// matched against registry/repo:tag and registry/repo@digest, e.g. --pattern cilium,coredns
    #[arg(long, value_name = "REGEX,...")]
    pub pattern: Option<String>,

    /// Print a header line (table output)
    #[arg(long)]
    pub header: bool,

    /// Show digests by their first 10 hex characters
    #[arg(long)]
    pub short_digest: bool,

    /// Output format. Default table
    #[arg(long, value_enum, default_value_t = ListOutput::Table)]
    pub output: ListOutput,
}

#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// Prune images matching any of these comma-separated regular expressions (unanchored),
    /// matched against registry/repo:tag and registry/repo@digest, e.g. --pattern cilium,coredns
    #[arg(long, value_name = "REGEX,...")]
    pub pattern: Option<String>,

    /// Prune images created (first fetched) before this local time, e.g. 2025-02-28T12:59:59
    /// (a trailing Z means UTC)
    #[arg(long, value_name = "YYYY-MM-DDTHH:MM:SS")]
    pub date: Option<String>,

    /// Prune images not pulled for this long (never pulled: created that long ago): 30m, 12h, 7d
    #[arg(long, value_name = "DURATION")]
    pub accessed_before: Option<String>,

    /// Remove the least recently pulled images (of those the other filters select) until the
    /// cache holds at most this much: bytes, or 500MiB, 20GB
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,

    /// Show what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Read and check the Go cache and say what would be imported or refused; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Image list files and tarballs to load: a file, a glob, or a comma list of them
    /// (config key imageFile)
    #[arg(long, value_name = "SPEC")]
    pub image_file: Option<String>,

    /// Operating system of the image to take from a multi-platform index (config key os).
    /// Default: this host's (linux)
    #[arg(long, value_name = "OS")]
    pub os: Option<String>,

    /// Architecture of the image to take from a multi-platform index, with an optional variant:
    /// amd64, arm64, arm64/v8, arm/v7 (config key arch). Default: this host's, in Go's names
    #[arg(long, value_name = "ARCH[/VARIANT]")]
    pub arch: Option<String>,

    /// The name (registry/repository:tag) to give the image of a single-image tarball, instead of
    /// the name it carries or lacks (crane's `…:i-was-a-digest`, an unnamed OCI layout); config key
    /// resolveRef. Refused for a tarball holding more than one image; ignored for image lists
    #[arg(long, value_name = "REF")]
    pub resolve_ref: Option<String>,

    /// Load every platform of a multi-platform index, not just --os/--arch
    #[arg(long)]
    pub all_platforms: bool,

    /// Images loaded at once, and blob downloads at once. Default 4
    #[arg(long, value_name = "N")]
    pub jobs: Option<NonZeroUsize>,

    /// Pin the images loaded (index/pins): prune never removes a pinned image
    #[arg(long)]
    pub pin: bool,

    /// Milliseconds to wait for an upstream's response headers, and for progress while a
    /// body streams (never a limit on the whole transfer). Default 60000
    #[arg(long, value_name = "MS")]
    pub pull_timeout: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Export images matching any of these comma-separated regular expressions (unanchored),
    /// matched against registry/repo:tag and registry/repo@digest, as list and prune match them
    #[arg(long, value_name = "REGEX,...", required_unless_present = "image_file", conflicts_with = "image_file")]
    pub pattern: Option<String>,

    /// Export the images named in these image lists (a file, a glob, or a comma list of them): one
    /// fully qualified reference per line, by tag or digest, as load reads them
    #[arg(long, value_name = "LIST")]
    pub image_file: Option<String>,

    /// The tarball to write (replaced atomically when complete), or - for standard output; a name
    /// ending in .tar.gz or .tgz is written gzipped
    #[arg(long, value_name = "FILE.tar")]
    pub output: String,

    /// Gzip the tarball whatever its name (load reads both)
    #[arg(long)]
    pub gzip: bool,

    /// Write incomplete images too (what of them is cached), flagged in the output, instead of
    /// refusing them
    #[arg(long)]
    pub allow_incomplete: bool,
}
