//! Admin jobs: long work a client starts with `POST /cmd/<kind>` (answered
//! 202 with the job's id at once) and follows with `GET /cmd/jobs/<id>`.
//!
//! A job kind is registered by name ([`JobKinds::register`]) as a function
//! that checks the request body and returns the job's future; the future is
//! given a [`JobContext`] (the store, the fetcher, the settings, a
//! [`Progress`] sink, the runtime, the shutdown signal) and ends with a JSON report or an error message. Jobs run
//! on the fetch runtime (their file work on its blocking threads), never on
//! a serving thread.
//!
//! Everything is bounded: at most [`MAX_RUNNING`] jobs run at once (past that
//! a start is refused, 429 with `Retry-After`; `DELETE /cmd/jobs/<id>`
//! cancels one), an exclusive kind runs once at
//! a time (409), a job keeps its last [`MAX_LINES`] lines and [`MAX_COUNTERS`]
//! counters, and finished jobs are kept for [`KEEP_FOR`], at most
//! [`MAX_KEPT`] of them, the oldest dropped first.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::{self, Write as _};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::config::Settings;
use crate::fetch::FetchHandle;
use crate::store::tags::now_secs;
use crate::store::Store;

/// Jobs running at once.
pub const MAX_RUNNING: usize = 4;
/// Finished jobs kept.
pub const MAX_KEPT: usize = 64;
/// How long a finished job is kept.
pub const KEEP_FOR: Duration = Duration::from_secs(3600);
/// Lines a job keeps (the last ones); the others are counted as dropped.
pub const MAX_LINES: usize = 1000;
/// The longest line kept; a longer one is cut.
pub const MAX_LINE: usize = 4096;
/// Counters a job may have.
pub const MAX_COUNTERS: usize = 64;
/// Seconds a client is told to wait when every job slot is taken.
pub const RETRY_AFTER_SECS: u64 = 5;

/// What a job's future yields: its report, or why it failed.
pub type JobFuture = Pin<Box<dyn Future<Output = Result<Value, String>> + Send>>;

/// A kind of job: checks the request body and returns the job to run. It is
/// called on a blocking thread of the fetch runtime, with the job's slot
/// taken but no lock held: it may look at a file or two; the work belongs in
/// the future.
pub trait JobKind: Send + Sync + 'static {
    fn start(&self, ctx: JobContext, body: &[u8]) -> Result<JobFuture, String>;
}

impl<F> JobKind for F
where
    F: Fn(JobContext, &[u8]) -> Result<JobFuture, String> + Send + Sync + 'static,
{
    fn start(&self, ctx: JobContext, body: &[u8]) -> Result<JobFuture, String> {
        self(ctx, body)
    }
}

/// What the server gives every job: the same store, fetcher and settings
/// the serving plane uses.
#[derive(Clone)]
pub struct JobEnv {
    pub store: Arc<Store>,
    /// Pulls through the fetcher, single-flight with the clients' pulls.
    pub fetch: FetchHandle,
    pub settings: Arc<Settings>,
    /// The fetch runtime: `spawn_blocking` file work on it.
    pub runtime: Handle,
    pub shutdown: watch::Receiver<bool>,
}

/// What a running job is given.
#[derive(Clone)]
pub struct JobContext {
    /// The server's store, fetcher, settings and runtime.
    pub env: JobEnv,
    pub progress: Progress,
    cancelled: Arc<AtomicBool>,
}

impl JobContext {
    /// Whether the job was cancelled or the server is shutting down: a job
    /// should stop at its next step (its future is dropped at its next
    /// `.await` anyway; blocking work must look here).
    pub fn stopping(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed) || *self.env.shutdown.borrow()
    }
}

/// Where a job tells how far it got: counters and lines (the last
/// [`MAX_LINES`]). Cheap to clone and to call from any thread.
#[derive(Clone)]
pub struct Progress(Arc<Mutex<Status>>);

impl Progress {
    /// Sets a counter.
    pub fn set(&self, counter: &'static str, value: u64) {
        let mut s = self.0.lock();
        if s.counters.len() < MAX_COUNTERS || s.counters.contains_key(counter) {
            s.counters.insert(counter, value);
        }
    }

    /// Adds to a counter.
    pub fn add(&self, counter: &'static str, n: u64) {
        let mut s = self.0.lock();
        if s.counters.len() < MAX_COUNTERS || s.counters.contains_key(counter) {
            let c = s.counters.entry(counter).or_default();
            *c = c.saturating_add(n);
        }
    }

    /// Adds a line (one item done, one problem found).
    pub fn line(&self, line: impl fmt::Display) {
        let mut text = String::new();
        let _ = write!(text, "{line}");
        if text.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        let mut s = self.0.lock();
        if s.lines.len() >= MAX_LINES {
            s.lines.pop_front();
            s.lines_dropped += 1;
        }
        s.lines.push_back(text);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Done,
    Failed,
}

struct Status {
    id: u64,
    kind: &'static str,
    state: State,
    started: u64,
    finished: Option<u64>,
    finished_at: Option<Instant>,
    counters: BTreeMap<&'static str, u64>,
    lines: VecDeque<String>,
    lines_dropped: u64,
    report: Option<Value>,
    error: Option<String>,
    /// Ends the job's task (`DELETE /cmd/jobs/<id>`).
    abort: Option<tokio::task::AbortHandle>,
    cancelled: Arc<AtomicBool>,
    /// Set once the job has finished (done, failed or cancelled): what [`Jobs::wait`] waits on.
    finished_tx: watch::Sender<bool>,
}

impl Status {
    /// A job of `kind` that starts now.
    fn running(id: u64, kind: &'static str) -> Status {
        Status {
            id,
            kind,
            state: State::Running,
            started: now_secs(),
            finished: None,
            finished_at: None,
            counters: BTreeMap::new(),
            lines: VecDeque::new(),
            lines_dropped: 0,
            report: None,
            error: None,
            abort: None,
            cancelled: Arc::default(),
            finished_tx: watch::Sender::new(false),
        }
    }

    fn finish(&mut self, state: State) {
        self.state = state;
        self.finished = Some(now_secs());
        self.finished_at = Some(Instant::now());
        self.abort = None;
        self.finished_tx.send_replace(true);
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id.to_string(),
            "kind": self.kind,
            "state": match self.state { State::Running => "running", State::Done => "done", State::Failed => "failed" },
            "started": self.started,
            "finished": self.finished,
            "counters": self.counters,
            "lines": self.lines,
            "linesDropped": self.lines_dropped,
            "report": self.report,
            "error": self.error,
        })
    }
}

struct Registered {
    kind: Arc<dyn JobKind>,
    /// Only one job of this kind runs at a time.
    exclusive: bool,
}

/// The job kinds a server offers, by name.
#[derive(Default)]
pub struct JobKinds(HashMap<&'static str, Registered>);

impl JobKinds {
    /// Offers `kind` at `POST /cmd/<name>` (`name`: lower-case letters, digits and `-`).
    /// An `exclusive` kind is refused (409) while a job of it runs.
    pub fn register(&mut self, name: &'static str, exclusive: bool, kind: impl JobKind) -> &mut JobKinds {
        self.0.insert(name, Registered { kind: Arc::new(kind), exclusive });
        self
    }
}

/// Why a job did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    UnknownKind(String),
    /// Every slot is taken.
    Busy,
    /// A job of this exclusive kind runs: its id.
    KindBusy(u64),
    /// The kind refused the request body.
    Body(String),
}

/// The jobs of one server: running, and finished ones kept for a while.
pub struct Jobs {
    kinds: JobKinds,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next: u64,
    jobs: BTreeMap<u64, Arc<Mutex<Status>>>,
    /// Slots reserved by jobs whose kind is checking the body (at most
    /// [`MAX_RUNNING`], counted with the running jobs).
    starting: Vec<(u64, &'static str)>,
}

impl Table {
    /// Drops finished jobs past [`KEEP_FOR`], and the oldest past [`MAX_KEPT`].
    fn prune(&mut self, now: Instant) {
        self.jobs.retain(|_, s| s.lock().finished_at.is_none_or(|t| now.duration_since(t) < KEEP_FOR));
        let finished: Vec<u64> =
            self.jobs.iter().filter(|(_, s)| s.lock().state != State::Running).map(|(id, _)| *id).collect();
        for id in finished.iter().take(finished.len().saturating_sub(MAX_KEPT)) {
            self.jobs.remove(id);
        }
    }
}

/// A slot taken by a job whose kind checks its body.
struct Reserved<'a> {
    table: &'a Mutex<Table>,
    id: u64,
}

impl Reserved<'_> {
    /// The job started: its slot becomes its entry, in one step (no other
    /// start sees the slot free meanwhile).
    fn started(self, status: Arc<Mutex<Status>>) {
        let mut table = self.table.lock();
        table.starting.retain(|(id, _)| *id != self.id);
        table.jobs.insert(self.id, status);
        drop(table);
        std::mem::forget(self);
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.table.lock().starting.retain(|(id, _)| *id != self.id);
    }
}

impl Jobs {
    pub fn new(kinds: JobKinds) -> Jobs {
        Jobs { kinds, table: Mutex::new(Table::default()) }
    }

    /// Starts a job of `kind` on the fetch runtime; returns its id. Call on the runtime.
    ///
    /// The slot is reserved under the lock, then the kind checks the body
    /// (which may look at files) with the lock released; a refused body gives
    /// the slot back. A reserved job is not listed until it has started.
    pub fn start(&self, kind: &str, body: &[u8], env: &JobEnv) -> Result<u64, StartError> {
        let registered = self.kinds.0.get(kind).ok_or_else(|| StartError::UnknownKind(kind.to_string()))?;
        self.start_with(kind, env, |ctx| registered.kind.start(ctx, body))
    }

    /// [`Jobs::start`], for a caller that has the job's parameters typed
    /// already (Go's `DELETE /cmd/prune`): `make` returns the job's future,
    /// which runs as a job of the registered `kind` (its slot, its bounds).
    pub fn start_with(
        &self,
        kind: &str,
        env: &JobEnv,
        make: impl FnOnce(JobContext) -> Result<JobFuture, String>,
    ) -> Result<u64, StartError> {
        let (&name, registered) =
            self.kinds.0.get_key_value(kind).ok_or_else(|| StartError::UnknownKind(kind.to_string()))?;
        let reserved = self.reserve(name, registered.exclusive)?;
        let id = reserved.id;
        let status = Arc::new(Mutex::new(Status::running(id, name)));
        let cancelled = status.lock().cancelled.clone();
        let ctx = JobContext { env: env.clone(), progress: Progress(status.clone()), cancelled };
        let job = make(ctx).map_err(StartError::Body)?;
        reserved.started(status.clone());
        tracing::info!(id, kind = name, "admin job started");
        let task_status = status.clone();
        let task = env.runtime.spawn(async move {
            let status = task_status;
            let outcome = match AssertUnwindSafe(job).catch_unwind().await {
                Ok(outcome) => outcome,
                Err(_) => Err("the job panicked".to_string()),
            };
            let mut s = status.lock();
            if s.state != State::Running {
                return;
            }
            match outcome {
                Ok(report) => {
                    s.report = Some(report);
                    s.finish(State::Done);
                }
                Err(e) => {
                    tracing::warn!(id, kind = name, error = %e, "admin job failed");
                    s.error = Some(e);
                    s.finish(State::Failed);
                }
            }
            tracing::info!(id, kind = name, state = ?s.state, "admin job finished");
        });
        let mut s = status.lock();
        if s.state == State::Running {
            s.abort = Some(task.abort_handle());
        }
        Ok(id)
    }

    /// Takes a slot for a job of `name` (given back when the reservation is
    /// dropped, a panicking kind too), or says why not.
    fn reserve(&self, name: &'static str, exclusive: bool) -> Result<Reserved<'_>, StartError> {
        let mut table = self.table.lock();
        table.prune(Instant::now());
        let mut running: Vec<(u64, &'static str)> = table
            .jobs
            .iter()
            .filter_map(|(id, s)| {
                let s = s.lock();
                (s.state == State::Running).then_some((*id, s.kind))
            })
            .collect();
        running.extend(table.starting.iter().copied());
        if exclusive {
            if let Some((id, _)) = running.iter().find(|(_, k)| *k == name) {
                return Err(StartError::KindBusy(*id));
            }
        }
        if running.len() >= MAX_RUNNING {
            return Err(StartError::Busy);
        }
        table.next += 1;
        let id = table.next;
        table.starting.push((id, name));
        Ok(Reserved { table: &self.table, id })
    }

    /// Cancels a running job: `Some(true)` when it was running, `Some(false)`
    /// when it had finished already, `None` when no such job is kept.
    pub fn cancel(&self, id: u64) -> Option<bool> {
        let table = self.table.lock();
        let mut s = table.jobs.get(&id)?.lock();
        if s.state != State::Running {
            return Some(false);
        }
        s.cancelled.store(true, Ordering::Relaxed);
        if let Some(abort) = s.abort.take() {
            abort.abort();
        }
        s.error = Some("cancelled".to_string());
        s.finish(State::Failed);
        tracing::info!(id, kind = s.kind, "admin job cancelled");
        Some(true)
    }

    /// A job's state as JSON, while it is kept.
    pub fn get(&self, id: u64) -> Option<Value> {
        let mut table = self.table.lock();
        table.prune(Instant::now());
        table.jobs.get(&id).map(|s| s.lock().to_json())
    }

    /// Waits until job `id` has finished, or until `deadline`; then its
    /// state as [`Jobs::get`] gives it (`None` when it is not kept).
    /// The job's status is kept from the start of the wait: one dropped from
    /// the table meanwhile (past [`MAX_KEPT`]) is still answered.
    pub async fn wait(&self, id: u64, deadline: tokio::time::Instant) -> Option<Value> {
        let status = self.table.lock().jobs.get(&id)?.clone();
        let mut finished = status.lock().finished_tx.subscribe();
        let _ = tokio::time::timeout_at(deadline, finished.wait_for(|f| *f)).await;
        let answer = status.lock().to_json();
        Some(answer)
    }

    /// Every job kept: id, kind and state.
    pub fn list(&self) -> Value {
        let mut table = self.table.lock();
        table.prune(Instant::now());
        let jobs: Vec<Value> = table
            .jobs
            .values()
            .map(|s| {
                let v = s.lock().to_json();
                json!({"id": v["id"], "kind": v["kind"], "state": v["state"], "started": v["started"], "finished": v["finished"]})
            })
            .collect();
        json!({ "jobs": jobs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Progress {
        Progress(Arc::new(Mutex::new(Status::running(1, "t"))))
    }

    #[test]
    fn progress_is_bounded() {
        let p = status();
        for i in 0..MAX_LINES + 5 {
            p.line(format_args!("line {i}"));
        }
        p.line("é".repeat(MAX_LINE));
        for i in 0..MAX_COUNTERS + 10 {
            p.add(Box::leak(format!("c{i}").into_boxed_str()), 1);
        }
        p.add("c0", u64::MAX);
        let v = p.0.lock().to_json();
        assert_eq!(v["lines"].as_array().unwrap().len(), MAX_LINES);
        assert_eq!(v["linesDropped"], 6);
        assert_eq!(v["lines"][0], "line 6");
        assert!(v["lines"][MAX_LINES - 1].as_str().unwrap().len() <= MAX_LINE);
        assert_eq!(v["counters"].as_object().unwrap().len(), MAX_COUNTERS);
        assert_eq!(v["counters"]["c0"], u64::MAX);
    }

    #[test]
    fn a_wait_answers_for_a_job_dropped_from_the_table_meanwhile() {
        let jobs = Jobs::new(JobKinds::default());
        let status = status().0;
        jobs.table.lock().jobs.insert(1, status.clone());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let (answer, ()) = runtime.block_on(async {
            tokio::join!(jobs.wait(1, deadline), async {
                tokio::task::yield_now().await; // the wait has subscribed
                jobs.table.lock().jobs.remove(&1); // as the MAX_KEPT cap drops it
                let mut s = status.lock();
                s.report = Some(json!({"removed": 3}));
                s.finish(State::Done);
            })
        });
        let answer = answer.expect("the job's own status answers");
        assert_eq!((answer["state"].as_str(), &answer["report"]["removed"]), (Some("done"), &json!(3)));
    }

    #[test]
    fn finished_jobs_are_dropped_oldest_first() {
        let mut table = Table::default();
        let now = Instant::now();
        for id in 1..=(MAX_KEPT as u64 + 3) {
            let p = status();
            {
                let mut s = p.0.lock();
                s.id = id;
                s.state = if id == 1 { State::Running } else { State::Done };
                s.finished_at = (id != 1).then_some(now);
            }
            table.jobs.insert(id, p.0);
        }
        table.prune(now);
        assert_eq!(table.jobs.len(), MAX_KEPT + 1, "the running job stays");
        assert!(table.jobs.contains_key(&1) && !table.jobs.contains_key(&2) && table.jobs.contains_key(&4));
        table.prune(now + KEEP_FOR);
        assert_eq!(table.jobs.keys().copied().collect::<Vec<_>>(), vec![1]);
    }
}
