//! Logging through `tracing`: to standard error, or appended to `--log-file`,
//! as text or as one JSON object a line (`--log-format`). `RUST_LOG` (an
//! env-filter expression) overrides `--log-level` when set. Lines are handed
//! to a background writer thread, so the serving threads never wait on a log
//! write; under a flood faster than the writer, excess lines are dropped
//! rather than slowing requests down.
//!
//! A request's lines are logged inside its `request` span (`serve`), whose
//! `id` text lines show as `request{id=…}:` and JSON lines as
//! `"span":{"id":…,"name":"request"}`. The fetcher runs what a request
//! starts inside that same span (see `fetch`), so its lines for the fetch
//! carry the id of the request that led it.
//!
//! AWS's SDK (the `ecr` feature) logs response bodies and outputs, an ECR
//! token among them, at TRACE: whatever the filter, its crates stop at DEBUG.

use std::path::Path;

use anyhow::Context;
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cli::{LogFormat, LogLevel};

/// Sets up logging. The returned guard keeps the writer thread alive; dropping
/// it flushes what is queued.
pub fn init(level: LogLevel, format: LogFormat, file: Option<&Path>) -> anyhow::Result<WorkerGuard> {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(from_env) => from_env,
        Err(_) => without_peer_warnings(EnvFilter::new(level.as_str()), level),
    };
    let filter = without_sdk_trace(filter);
    let (writer, guard, ansi): (NonBlocking, WorkerGuard, bool) = match file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            let (writer, guard) = tracing_appender::non_blocking(f);
            (writer, guard, false)
        }
        None => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
            (writer, guard, ansi)
        }
    };
    let lines = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(writer).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot initialise logging: {e}"))?;
    Ok(guard)
}

/// Targets of AWS's SDK (by prefix: `aws_smithy_runtime` covers `aws_smithy_runtime_api`).
const SDK_TARGETS: &[&str] = &[
    "aws_config",
    "aws_credential_types",
    "aws_runtime",
    "aws_sdk_ecr",
    "aws_sdk_sso",
    "aws_sdk_ssooidc",
    "aws_sdk_sts",
    "aws_sigv4",
    "aws_smithy_http",
    "aws_smithy_runtime",
    "aws_smithy_types",
];

/// `filter` (from `--log-level`), with rustls's WARN lines left out at `info`
/// and above: rustls warns about what a peer sent (an IP address as the
/// server name, as wrk sends), one line per connection any client can make.
/// At `debug` and `trace` they are kept; `RUST_LOG` decides for itself.
fn without_peer_warnings(filter: EnvFilter, level: LogLevel) -> EnvFilter {
    match level {
        LogLevel::Trace | LogLevel::Debug => filter,
        _ => filter.add_directive("rustls=error".parse().expect("a valid directive")),
    }
}

/// `filter`, with the SDK's targets at DEBUG at most when it would let TRACE through.
fn without_sdk_trace(mut filter: EnvFilter) -> EnvFilter {
    if filter.max_level_hint().is_none_or(|max| max == LevelFilter::TRACE) {
        for target in SDK_TARGETS {
            filter = filter.add_directive(format!("{target}=debug").parse().expect("a valid directive"));
        }
    }
    filter
}
