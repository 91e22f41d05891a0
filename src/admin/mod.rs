//! The admin API, under `/cmd/` on the main port: the Go ociregistry's
//! commands (`stop`, `manifest/list`, `blob/list`, `image/list`) and jobs that
//! local commands hand to a running server (`POST /cmd/<kind>`, then
//! `GET /cmd/jobs/<id>`).
//!
//! The serving plane sends a request here after one prefix check
//! ([`is_admin_path`]); nothing else on the `/v2/` path changes. On the
//! serving thread only the cheap parts run: access ([`access`]), the body's
//! size, the command's parse ([`command`]). Everything else runs on the fetch
//! runtime (file work on its blocking threads) while the serving thread
//! awaits the reply.
//!
//! # Layout
//! - [`access`]: who may ask (loopback, `admin.allow`, the bearer token), under
//!   the rules [`crate::config::admin`] parsed.
//! - [`command`]: method, path and query → a typed command.
//! - [`listing`]: the list commands, from the store's records and tags.
//! - [`jobs`]: the bounded registry of jobs and the `JobKind` plug-in point.
//! - [`verify_job`]: `POST /cmd/verify`, the store checked while serving.
//! - `crate::ops::load::job`: `POST /cmd/load`, what `ociregistry load` hands to a running server.
//! - [`discovery`]: `<image-path>/.admin`, how a local command finds the server.
//! - [`client`]: the client those commands use.

pub mod access;
pub mod client;
pub mod command;
pub mod discovery;
pub mod jobs;
pub mod listing;
pub mod local_addresses;
#[cfg(feature = "fault-injection")]
mod test_jobs;
pub mod verify_job;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::config::admin::Access;
use crate::oci::{ErrorBody, OciCode};
use command::{Command, Refused};
pub use jobs::{JobContext, JobEnv, JobFuture, JobKind, JobKinds, Progress};
use jobs::{Jobs, StartError};
use listing::Selector;

/// How long Go's `DELETE /cmd/prune` waits for its prune before answering 202.
pub const GO_PRUNE_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// The largest request body taken (a job's parameters).
pub const MAX_BODY: u64 = 1024 * 1024;

/// Whether a request path is the admin API's: the one check the serving plane makes.
#[inline]
pub fn is_admin_path(path: &str) -> bool {
    path.as_bytes().starts_with(b"/cmd/") || path == "/cmd"
}

/// What the admin API answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn text(status: u16, text: impl Into<String>) -> Reply {
        let mut text = text.into();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        Reply { status, content_type: "text/plain; charset=utf-8", body: Bytes::from(text), headers: Vec::new() }
    }

    pub fn json(status: u16, value: &Value) -> Reply {
        let body = Bytes::from(serde_json::to_vec(value).unwrap_or_default());
        Reply { status, content_type: "application/json", body, headers: Vec::new() }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

/// The parts of a request head the admin API reads.
#[derive(Debug, Clone, Copy)]
pub struct AdminRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub peer: SocketAddr,
    /// The `Content-Length`, when one was sent.
    pub content_length: Option<u64>,
    /// Whether a body was announced (by `Content-Length` above 0, or chunked).
    pub has_body: bool,
}

/// The admin API of one server.
pub struct Admin {
    access: Access,
    env: JobEnv,
    jobs: Jobs,
    stop: Notify,
}

/// The job kinds every server offers. A new kind is one line here, e.g.
/// `kinds.register("load", true, crate::ops::load::job::start);` with
/// `fn job(ctx: JobContext, body: &[u8]) -> Result<JobFuture, String>`: parse
/// the body (an `Err` is the 400's message), return the work as a future
/// that reports through `ctx.progress` and ends with a JSON report.
pub fn builtin_kinds() -> JobKinds {
    let mut kinds = JobKinds::default();
    kinds.register("verify", true, verify_job::start);
    kinds.register("load", true, crate::ops::load::job::start);
    kinds.register("prune", true, crate::ops::prune::job::start);
    #[cfg(feature = "fault-injection")]
    test_jobs::register(&mut kinds);
    kinds
}

impl Admin {
    pub fn new(access: Access, env: JobEnv, kinds: JobKinds) -> Admin {
        Admin { access, env, jobs: Jobs::new(kinds), stop: Notify::new() }
    }

    /// Resolves once `GET /cmd/stop` was answered (or is being answered).
    pub async fn stop_requested(&self) {
        self.stop.notified().await
    }

    /// Checks a request before its body is read: who asks, and whether its
    /// body may be taken. `Ok(Some(n))`: read `n` bytes of body; `Ok(None)`:
    /// it has none; `Err`: answer this (the body, if any, is left unread).
    pub fn admit(&self, req: &AdminRequest<'_>) -> Result<Option<u64>, Reply> {
        if access::check(&self.access, req.peer.ip(), req.authorization).is_none() {
            tracing::debug!(peer = %req.peer, path = req.path, "admin request refused: peer not allowed");
            let body = ErrorBody {
                code: OciCode::Denied,
                message: format!("the admin API is not open to {}", req.peer.ip()),
                detail: Some("it answers loopback peers, the networks in admin.allow, and the admin token".into()),
            };
            return Err(Reply {
                status: 403,
                content_type: "application/json",
                body: body.to_json().into(),
                headers: vec![],
            });
        }
        if !req.has_body {
            return Ok(None);
        }
        if !matches!(req.method, "POST" | "DELETE") {
            return Err(Reply::text(400, format!("{} {} takes no request body", req.method, req.path)));
        }
        match req.content_length {
            None => Err(Reply::text(411, "a request body needs a Content-Length (chunked bodies are not taken)")),
            Some(n) if n > MAX_BODY => Err(Reply::text(413, format!("the request body is over {MAX_BODY} bytes"))),
            Some(n) => Ok(Some(n)),
        }
    }

    /// Answers an admitted request, running it on the fetch runtime.
    pub async fn handle(self: &Arc<Self>, req: &AdminRequest<'_>, body: Vec<u8>) -> Reply {
        let command = match Command::parse(req.method, req.path, req.query) {
            Ok(c) => c,
            Err(Refused::NotFound(m)) => return Reply::text(404, m),
            Err(Refused::Method { allow }) => {
                return Reply::text(405, format!("{} is not allowed on {}", req.method, req.path))
                    .header("Allow", allow)
            }
            Err(Refused::Bad(m)) => return Reply::text(400, format!("invalid parameters: {m}")),
        };
        let admin = self.clone();
        match self.env.runtime.spawn(async move { admin.run(command, body).await }).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::error!(error = %e, "an admin command failed");
                Reply::text(500, "the admin command failed")
            }
        }
    }

    async fn run(self: Arc<Self>, command: Command, body: Vec<u8>) -> Reply {
        let store = self.env.store.clone();
        match command {
            Command::Stop => {
                tracing::info!("shutdown asked for through /cmd/stop");
                self.stop.notify_one();
                Reply::text(200, "stopping")
            }
            Command::ManifestList { filter, count } => {
                self.blocking(move || Ok(listing::list_images(&store, &Selector::compile(&filter)?, count, false)))
                    .await
            }
            Command::ImageList { filter, count } => {
                self.blocking(move || Ok(listing::list_images(&store, &Selector::compile(&filter)?, count, true))).await
            }
            Command::BlobList { substr, count } => {
                self.blocking(move || Ok(listing::list_blobs(&store, &substr, count))).await
            }
            Command::Jobs => Reply::json(200, &self.jobs.list()),
            Command::Job(id) => match self.jobs.get(id) {
                Some(v) => Reply::json(200, &v),
                None => Reply::text(
                    404,
                    format!(
                        "no job {id} (finished jobs are kept for {} minutes, at most {})",
                        jobs::KEEP_FOR.as_secs() / 60,
                        jobs::MAX_KEPT
                    ),
                ),
            },
            Command::Cancel(id) => match self.jobs.cancel(id) {
                Some(true) => Reply::text(200, format!("job {id} cancelled")),
                Some(false) => Reply::text(409, format!("job {id} has finished already")),
                None => Reply::text(404, format!("no job {id}")),
            },
            Command::Start { kind } => {
                // On a blocking thread: a kind checks its body there (load looks at its staged
                // files), never on the runtime's worker, which the fetches share.
                let (admin, name) = (self.clone(), kind.clone());
                match self.env.runtime.spawn_blocking(move || admin.jobs.start(&name, &body, &admin.env)).await {
                    Ok(Ok(id)) => {
                        let location = format!("/cmd/jobs/{id}");
                        Reply::json(202, &json!({"id": id.to_string(), "kind": kind, "location": location}))
                            .header("Location", location)
                    }
                    Ok(Err(e)) => start_refused(&kind, e),
                    Err(e) => {
                        tracing::error!(error = %e, kind, "starting an admin job failed");
                        Reply::text(500, "the admin command failed")
                    }
                }
            }
            Command::GoPrune { query } => self.go_prune(&query).await,
        }
    }

    /// Go's `DELETE /cmd/prune?type=…&dur=…&expr=…&count=…&dryRun=…`: a prune
    /// job, awaited (at most [`GO_PRUNE_WAIT`]; past that a 202 names the job)
    /// and answered with its lines as text, as Go answers its log.
    async fn go_prune(self: Arc<Self>, query: &str) -> Reply {
        use crate::ops::prune::job;
        // On a blocking thread, as `Command::Start`: the checks compile the client's
        // expressions and read the pins, never on the runtime's worker.
        let (admin, query) = (self.clone(), query.to_string());
        let started = self.env.runtime.spawn_blocking(move || {
            let request =
                job::from_go_query(&query, crate::store::tags::now_secs()).map_err(|m| Reply::text(400, m))?;
            admin
                .jobs
                .start_with("prune", &admin.env, |ctx| job::run(ctx, request))
                .map_err(|e| start_refused("prune", e))
        });
        let id = match started.await {
            Ok(Ok(id)) => id,
            Ok(Err(refused)) => return refused,
            Err(e) => {
                tracing::error!(error = %e, "starting Go's prune failed");
                return Reply::text(500, "the admin command failed");
            }
        };
        let deadline = tokio::time::Instant::now() + crate::faults::go_prune_wait(GO_PRUNE_WAIT);
        let status = self.jobs.wait(id, deadline).await.unwrap_or_default();
        match status["state"].as_str() {
            Some("done") => Reply::text(200, job::report_text(&status["report"])),
            Some("running") => {
                let location = format!("/cmd/jobs/{id}");
                Reply::text(202, format!("the prune is still running: {location}")).header("Location", location)
            }
            _ => Reply::text(500, format!("the prune failed: {}", status["error"].as_str().unwrap_or(""))),
        }
    }

    /// Runs a list command on a blocking thread; a bad pattern is a 400.
    async fn blocking(&self, f: impl FnOnce() -> Result<String, listing::BadPattern> + Send + 'static) -> Reply {
        match self.env.runtime.spawn_blocking(f).await {
            Ok(Ok(text)) => Reply::text(200, text),
            Ok(Err(e)) => Reply::text(400, e.to_string()),
            Err(e) => {
                tracing::error!(error = %e, "an admin list failed");
                Reply::text(500, "the admin command failed")
            }
        }
    }
}

/// The answer to a job that did not start.
fn start_refused(kind: &str, e: StartError) -> Reply {
    match e {
        StartError::UnknownKind(k) => Reply::text(404, format!("no admin job kind {k:?}")),
        StartError::Busy => {
            Reply::text(429, format!("{} admin jobs are running already; retry later", jobs::MAX_RUNNING))
                .header("Retry-After", jobs::RETRY_AFTER_SECS.to_string())
        }
        StartError::KindBusy(id) => Reply::text(409, format!("a {kind} job runs already: /cmd/jobs/{id}"))
            .header("Location", format!("/cmd/jobs/{id}")),
        StartError::Body(m) => Reply::text(400, format!("invalid parameters: {m}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cmd_paths_are_admin_paths() {
        for p in ["/cmd/stop", "/cmd/", "/cmd", "/cmd/jobs/1"] {
            assert!(is_admin_path(p), "{p}");
        }
        for p in ["/v2/", "/cmdx", "/cmd-stop", "/v2/cmd/stop", "/", ""] {
            assert!(!is_admin_path(p), "{p}");
        }
    }
}
