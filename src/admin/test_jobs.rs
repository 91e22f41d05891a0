//! Job kinds for the tests only (the `fault-injection` feature): `test-hold`
//! (and the exclusive `test-hold-one`) runs until a `test-release` job is started, so a test can fill every job
//! slot and watch the bounds, without any timing. `test-hold-start` is held
//! in its kind's start (where a kind checks its body) until a release, at
//! most [`START_HOLD`]: the rest of the admin API must go on meanwhile.

use std::sync::{Condvar, LazyLock, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use super::jobs::{JobContext, JobFuture, JobKinds};

/// Bumped by every `test-release`.
static RELEASES: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);
/// The same count, for a start that blocks.
static RELEASED: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());
/// The longest a `test-hold-start` holds its start.
const START_HOLD: Duration = Duration::from_secs(30);

pub fn register(kinds: &mut JobKinds) {
    kinds.register("test-hold", false, hold);
    kinds.register("test-hold-one", true, hold);
    kinds.register("test-release", false, release);
    kinds.register("test-hold-start", false, hold_start);
}

fn hold_start(_ctx: JobContext, _body: &[u8]) -> Result<JobFuture, String> {
    let (count, released) = &RELEASED;
    let count = count.lock().unwrap_or_else(|e| e.into_inner());
    let seen = *count;
    tracing::info!("test-hold-start: holding its start until a release");
    let (_count, waited) =
        released.wait_timeout_while(count, START_HOLD, |n| *n == seen).unwrap_or_else(|e| e.into_inner());
    if waited.timed_out() {
        return Err("not released within 30 s".into());
    }
    Ok(Box::pin(async { Ok(json!({"startReleased": true})) }))
}

fn hold(ctx: JobContext, _body: &[u8]) -> Result<JobFuture, String> {
    let mut released = RELEASES.subscribe();
    Ok(Box::pin(async move {
        ctx.progress.line("holding");
        let _ = released.changed().await;
        Ok(json!({"released": true}))
    }))
}

fn release(_ctx: JobContext, _body: &[u8]) -> Result<JobFuture, String> {
    RELEASES.send_modify(|n| *n += 1);
    let (count, released) = &RELEASED;
    *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    released.notify_all();
    Ok(Box::pin(async { Ok(json!({})) }))
}
