//! ociregistry: a pull-only, pull-through, caching OCI Distribution registry.
//!
//! # Layout
//! - [`oci`]: pure types (digests, names, references, media types, platforms, error bodies).
//! - [`config`] and [`cli`]: the command line and YAML file, merged and validated.
//! - [`store`]: the image path on disk: committed blobs, records, tags, temp files.
//! - [`fetch`]: the tokio fetch plane that owns every upstream connection and fills the store.
//! - [`serve`]: the monoio serving plane: HTTP/1.1, routing, handlers, streaming bodies.
//! - [`metrics`]: per-thread counters and their Prometheus exposition.
//! - [`health`]: liveness and readiness probes on their own port.
//! - [`printable`]: outside text made fit for a log line (controls replaced, length bounded).
//! - [`query`]: URL query strings as the Go ociregistry reads them (`key=`, `count=`).
//! - [`go_time`]: the Go ociregistry's date format, read and printed.
//! - [`side_port`]: the one-request HTTP/1.1 exchange of the metrics and health ports.
//! - [`systemd`]: readiness and stop notifications for `Type=notify` units.
//! - [`server`]: `serve` start-up and shutdown, tying the planes together.
//! - [`reload`]: SIGHUP: the configuration read again and handed to the parts that can take it.
//! - [`ops`]: the operator's commands over the store (`verify`, `list`, `prune`, `load`, `export`, `migrate`).
//! - [`admin`]: the admin API under `/cmd/` (lists, stop, jobs) and its client.
//! - [`faults`]: test-only fault hooks (the `fault-injection` feature).
//! - [`heap`]: live heap bytes counted in test builds, for soak runs.
//! - `fuzzing`: one entry point per fuzz target (`fuzz/`), replayed by `tests/fuzz_corpus.rs`.

pub mod admin;
pub mod cli;
pub mod config;
pub mod faults;
pub mod fetch;
#[doc(hidden)]
pub mod fuzzing;
pub mod go_time;
pub mod health;
pub mod heap;
pub mod logging;
pub mod metrics;
pub mod oci;
pub mod ops;
pub mod printable;
pub mod query;
pub mod reload;
pub mod serve;
pub mod server;
pub mod side_port;
pub mod store;
pub mod systemd;
pub mod tls;
