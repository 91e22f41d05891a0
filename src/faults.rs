//! Test-only fault hooks. Built with the `fault-injection` cargo feature (the
//! test suite enables it), a hook panics when the `OCIREGISTRY_FAULTS`
//! environment variable names its point and the subject contains the given
//! text: `OCIREGISTRY_FAULTS=manifest=poison-tag,download=sha256:ab12,serve=/boom`.
//! Without the feature every hook compiles to nothing, so release builds carry
//! no trace of them.
//!
//! Points: `serve` (a request path, on a serving thread), `manifest` (a tag or
//! digest being stored, inside the store's tag lock), `download` (a blob
//! digest, in its download task).

/// Panics when the fault `point` is armed for a subject contained in `subject`.
#[cfg(feature = "fault-injection")]
pub fn panic_point(point: &str, subject: &str) {
    if armed().iter().any(|(p, s)| p == point && subject.contains(s.as_str())) {
        panic!("injected fault at {point} for {subject}");
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn panic_point(_point: &str, _subject: &str) {}

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
