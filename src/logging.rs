//! Logging through `tracing`: to standard error, or appended to `--log-file`.
//! `RUST_LOG` (an env-filter expression) overrides `--log-level` when set.
//! Lines are handed to a background writer thread, so the serving threads
//! never wait on a log write; under a flood faster than the writer, excess
//! lines are dropped rather than slowing requests down.

use std::path::Path;

use anyhow::Context;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::cli::LogLevel;

/// Sets up logging. The returned guard keeps the writer thread alive; dropping
/// it flushes what is queued.
pub fn init(level: LogLevel, file: Option<&Path>) -> anyhow::Result<WorkerGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.as_str()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let (result, guard) = match file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            let (writer, guard) = tracing_appender::non_blocking(f);
            (builder.with_ansi(false).with_writer(writer).try_init(), guard)
        }
        None => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
            (builder.with_ansi(ansi).with_writer(writer).try_init(), guard)
        }
    };
    result.map_err(|e| anyhow::anyhow!("cannot initialise logging: {e}"))?;
    Ok(guard)
}
