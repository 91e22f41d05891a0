//! Job kinds for the tests only (the `fault-injection` feature): `test-hold`
//! (and the exclusive `test-hold-one`) runs until a `test-release` job is started, so a test can fill every job
//! slot and watch the bounds, without any timing.

use std::sync::LazyLock;

use serde_json::json;
use tokio::sync::watch;

use super::jobs::{JobContext, JobFuture, JobKinds};

/// Bumped by every `test-release`.
static RELEASES: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

pub fn register(kinds: &mut JobKinds) {
    kinds.register("test-hold", false, hold);
    kinds.register("test-hold-one", true, hold);
    kinds.register("test-release", false, release);
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
    Ok(Box::pin(async { Ok(json!({})) }))
}
