//! Test-only fault hooks. Built with the `fault-injection` cargo feature (the
//! test suite enables it), a hook panics when the `OCIREGISTRY_FAULTS`
//! environment variable names its point and the subject contains the given
//! text: `OCIREGISTRY_FAULTS=manifest=poison-tag,download=sha256:ab12,serve=/boom`.
//! Without the feature every hook compiles to nothing, so release builds carry
//! no trace of them.
//!
//! Points that panic: `serve` (a request path, on a serving thread),
//! `manifest` (a tag or digest being stored, inside the store's tag lock),
//! `download` (a blob digest, in its download task), `migrate` (a file of a
//! Go cache: `blobs/<hex>` once renamed into the store by
//! `Store::commit_verified_file` and before its journal line, `img/<hex>`,
//! `lts/<hex>` or `fat/<hex>` once committed and before it is moved aside).
//!
//! `kernel-tls=attempt` is not a fault either: HTTPS connections try the
//! kernel TLS hand-over even where the startup probe found no `tls` module,
//! so the per-connection fallback (`TCP_ULP` refused, rustls keeps the
//! connection) runs on kernels without it.
//!
//! `go-prune-wait=MS` is not a fault: it shortens how long Go's `DELETE
//! /cmd/prune` waits before its 202 (see [`go_prune_wait`]).
//!
//! `tls-check=MS` makes every periodic check of `serverTlsConfig`'s files
//! take that long (see [`stall`]), as a stat on a hung disk or mount does.
//!
//! Points that slow down: `cold-read` (a committed file's path): the serving
//! threads treat every chunk of that file as not in the page cache, and
//! reading a chunk in takes [`SLOW_READ`] longer, as on a failing SD card.
//! Nothing else makes a cold read observable here, where the page cache
//! keeps whatever was just written and a throttled block device cannot be made.

/// How long Go's `DELETE /cmd/prune` waits before answering 202: `normal`,
/// or with the feature the milliseconds `OCIREGISTRY_FAULTS=go-prune-wait=MS`
/// names (a test of the 202 cannot wait the normal 5 minutes).
#[cfg(feature = "fault-injection")]
pub fn go_prune_wait(normal: std::time::Duration) -> std::time::Duration {
    armed()
        .iter()
        .find(|(p, _)| p == "go-prune-wait")
        .and_then(|(_, ms)| ms.parse().ok())
        .map_or(normal, std::time::Duration::from_millis)
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn go_prune_wait(normal: std::time::Duration) -> std::time::Duration {
    normal
}

/// How long the point armed as `point=MS` stalls, when it is armed.
#[cfg(feature = "fault-injection")]
pub fn stall(point: &str) -> Option<std::time::Duration> {
    armed().iter().find(|(p, _)| p == point).and_then(|(_, ms)| ms.parse().ok()).map(std::time::Duration::from_millis)
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn stall(_point: &str) -> Option<std::time::Duration> {
    None
}

/// Panics when the fault `point` is armed for a subject contained in `subject`.
#[cfg(feature = "fault-injection")]
pub fn panic_point(point: &str, subject: &str) {
    if armed_for(point, subject) {
        panic!("injected fault at {point} for {subject}");
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn panic_point(_point: &str, _subject: &str) {}

/// What a slowed-down read (the `cold-read` point) costs.
pub const SLOW_READ: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether the fault `point` is armed for a subject contained in `subject`.
#[cfg(feature = "fault-injection")]
pub fn armed_for(point: &str, subject: &str) -> bool {
    armed().iter().any(|(p, s)| p == point && subject.contains(s.as_str()))
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn armed_for(_point: &str, _subject: &str) -> bool {
    false
}

#[cfg(feature = "fault-injection")]
fn armed() -> &'static [(String, String)] {
    static ARMED: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("OCIREGISTRY_FAULTS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|f| f.split_once('='))
            .filter(|(_, s)| !s.is_empty())
            .map(|(p, s)| (p.trim().to_string(), s.trim().to_string()))
            .collect()
    })
}
