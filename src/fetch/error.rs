//! What can go wrong fetching from an upstream, tagged so the serving side can
//! answer with the right status and so a shared download can tell a failure
//! that belongs to one requester's source from one that concerns everybody.

/// A fetch failure. Cheap to clone: every waiter of a shared fetch gets a copy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The upstream says the thing does not exist (404, or 401/403 that persists after a fresh token).
    #[error("{0}")]
    NotFound(String),
    #[error("upstream rate limit reached")]
    TooManyRequests { retry_after: Option<String> },
    /// Could not connect or the connection failed.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream timed out: {0}")]
    Timeout(String),
    /// The upstream answered with an unexpected status.
    #[error("upstream answered {status}: {message}")]
    Upstream { status: u16, message: String },
    /// The upstream recently answered a 5xx about this object (not about
    /// itself): not asked again yet; try again in `retry_after_secs`.
    #[error("upstream answered {status} for this recently and is not asked again for {retry_after_secs} s: {message}")]
    Failing { status: u16, message: String, retry_after_secs: u64 },
    /// The upstream's circuit breaker is open (it kept failing): not contacted;
    /// try again in `retry_after_secs`.
    #[error(
        "upstream {registry} kept failing and is left alone for now (circuit open); retry in {retry_after_secs} s"
    )]
    CircuitOpen { registry: String, retry_after_secs: u64 },
    /// The upstream's content is unusable (digest mismatch, schema 1, too large, …).
    #[error("{0}")]
    BadContent(String),
    /// This server's policy refuses the upstream (private address, unlisted).
    #[error("{0}")]
    Refused(String),
    #[error("the cache is in air-gapped mode and does not hold this")]
    AirGapped,
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The image path's file system is (or would be) below its free-space floor.
    #[error("the cache is short of disk space: {0}")]
    NoSpace(String),
    /// A bound on work in flight is reached; the client may retry shortly.
    #[error("busy: {0}")]
    Busy(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl FetchError {
    /// Whether the failure is about the requester's source (its registry and
    /// repository), so a waiter who came from another source should try its own.
    pub fn is_source_specific(&self) -> bool {
        matches!(self, FetchError::NotFound(_) | FetchError::Refused(_))
    }

    pub fn from_reqwest(e: &reqwest::Error) -> FetchError {
        if super::guard::is_refusal(e) {
            FetchError::Refused(error_chain(e))
        } else if e.is_timeout() {
            FetchError::Timeout(e.to_string())
        } else {
            FetchError::Unreachable(error_chain(e))
        }
    }
}

/// The error with its causes, which is where reqwest puts the useful part.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
