//! SIGHUP: the configuration file is read again and, if it is valid, handed to
//! every part of the running server that can take a new one (the reload
//! hooks); if it is not, the running configuration is kept and the problems
//! are logged at ERROR. A hook takes what it owns from the new [`Settings`]
//! and leaves the rest: today the fetcher swaps its `registries` (names,
//! endpoints, scheme, auth, tls, circuit breakers). Other keys take effect at
//! the next start.
//!
//! To make another part reloadable, add a [`Hook`] to the list `server` builds.

use std::sync::Arc;

use crate::config::{ConfigError, Settings};

/// Takes what it owns from new settings: a summary to log, or why it kept its own.
pub type Apply = Box<dyn Fn(&Settings) -> Result<String, String> + Send + Sync>;

/// One reloadable part: its name (for logs) and what it does with new settings.
pub struct Hook {
    pub name: &'static str,
    pub apply: Apply,
}

impl Hook {
    pub fn new(
        name: &'static str,
        apply: impl Fn(&Settings) -> Result<String, String> + Send + Sync + 'static,
    ) -> Hook {
        Hook { name, apply: Box::new(apply) }
    }
}

/// Reads the configuration again, as at startup.
pub type Resolve = Box<dyn Fn() -> Result<Settings, ConfigError> + Send + Sync>;

/// Waits for SIGHUP and reloads, until the process ends. The handler is
/// installed before this returns (a SIGHUP's default action ends the process),
/// so call it before the server announces that it listens; it must run
/// inside the tokio runtime.
pub fn on_sighup(resolve: Resolve, hooks: Vec<Hook>) -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let both = Arc::new((resolve, hooks));
    Ok(async move {
        while hup.recv().await.is_some() {
            // Reading files and building TLS clients blocks: not on a runtime worker.
            let both = both.clone();
            let _ = tokio::task::spawn_blocking(move || reload(&both.0, &both.1)).await;
        }
    })
}

/// One reload: an invalid file changes nothing; a valid one goes to every
/// hook, each of which takes it whole or keeps what it had.
pub fn reload(resolve: &Resolve, hooks: &[Hook]) {
    let settings = match resolve() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: the configuration is not valid; the running configuration is kept");
            return;
        }
    };
    for hook in hooks {
        match (hook.apply)(&settings) {
            Ok(done) => tracing::info!(part = hook.name, "SIGHUP: reloaded: {done}"),
            Err(e) => tracing::error!(part = hook.name, error = %e, "SIGHUP: not reloaded; it keeps its configuration"),
        }
    }
}
