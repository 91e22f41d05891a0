//! ECR authorization tokens for a registry configured with `auth.token.provider: ecr`.
//! A token is asked for (`api`) when the registry first wants credentials, kept
//! until Go's `expiry` or shortly before ECR's own `expiresAt`, whichever is
//! first, and renewed then by the first request that needs it. One request to
//! ECR is in flight at a time: others wait for it, or keep using the current
//! token while it is still valid. A failure is logged without any secret and
//! backs off (1 s doubling to 5 min), answering pulls with the failure meanwhile.
//!
//! A token the registry refuses before it is due (a 401 to it: revoked, or
//! ECR rotated it early) is renewed at once by [`EcrTokens::renew_refused`]:
//! one renewal for every request refused at the same time, and at most one
//! such forced renewal per [`FORCED_RENEWAL_INTERVAL`], so a registry that
//! refuses every token cannot make each pull ask ECR again.

#[cfg(feature = "ecr")]
mod api;

use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use super::error::FetchError;
use crate::config::EcrSource;
use crate::oci::RegistryName;

/// How long before ECR's `expiresAt` a token is renewed (at most a quarter of its life).
const RENEW_MARGIN: Duration = Duration::from_secs(5 * 60);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);
/// A refused token is renewed before it is due at most this often per registry.
pub(crate) const FORCED_RENEWAL_INTERVAL: Duration = Duration::from_secs(30);
/// Bytes of a token accepted: ECR's are about 2 KiB.
pub(crate) const MAX_TOKEN: usize = 16 * 1024;

/// What ECR answered: the base64 of `AWS:<password>`, and when it stops working.
pub(crate) struct Issued {
    pub token: String,
    pub expires_at: Option<SystemTime>,
}

#[derive(Clone)]
struct Current {
    /// `Basic <token>`.
    authorization: String,
    renew_at: Instant,
    /// Past this the token is not used at all, even while a renewal fails.
    invalid_at: Instant,
}

/// The failure state between requests to ECR.
struct Backoff {
    until: Option<Instant>,
    next: Duration,
    last_error: String,
    /// When a refused token was last renewed before it was due.
    last_forced: Option<Instant>,
}

/// The ECR token of one registry.
pub struct EcrTokens {
    registry: RegistryName,
    source: EcrSource,
    current: Mutex<Option<Current>>,
    /// Held while a request to ECR is in flight.
    renewing: tokio::sync::Mutex<Backoff>,
    timeout: Duration,
}

impl EcrTokens {
    pub fn new(registry: RegistryName, source: EcrSource, timeout: Duration) -> EcrTokens {
        EcrTokens {
            registry,
            source,
            current: Mutex::new(None),
            renewing: tokio::sync::Mutex::new(Backoff {
                until: None,
                next: FIRST_BACKOFF,
                last_error: String::new(),
                last_forced: None,
            }),
            timeout,
        }
    }

    /// The `Authorization` value (`Basic <token>`) to present to the registry
    /// or its token endpoint, asking ECR for a token when there is none or it is due.
    pub async fn authorization(&self) -> Result<String, FetchError> {
        let current = self.current.lock().clone();
        if let Some(c) = &current {
            let now = Instant::now();
            if now < c.renew_at {
                return Ok(c.authorization.clone());
            }
            if now < c.invalid_at {
                // Due, still valid: renew unless another request already is (then use this one).
                return match self.renewing.try_lock() {
                    Ok(mut backoff) => match self.renew(&mut backoff).await {
                        Ok(a) => Ok(a),
                        Err(_) => Ok(c.authorization.clone()),
                    },
                    Err(_) => Ok(c.authorization.clone()),
                };
            }
        }
        let mut backoff = self.renewing.lock().await;
        // A renewal that finished while this request waited is used as it is.
        if let Some(c) = self.current.lock().clone() {
            if Instant::now() < c.renew_at {
                return Ok(c.authorization);
            }
        }
        self.renew(&mut backoff).await
    }

    /// After the registry answered 401 to `refused` (an `Authorization` this
    /// gave): the token to retry with, renewed now unless another request
    /// already renewed it while this one waited (then that one). `None` when
    /// there is nothing new to retry with: the last forced renewal was less
    /// than [`FORCED_RENEWAL_INTERVAL`] ago, so the refusal stands.
    pub async fn renew_refused(&self, refused: &str) -> Result<Option<String>, FetchError> {
        let mut backoff = self.renewing.lock().await;
        let now = Instant::now();
        if let Some(c) = self.current.lock().clone() {
            if c.authorization != refused && now < c.invalid_at {
                return Ok(Some(c.authorization));
            }
        }
        if let Some(at) = backoff.last_forced.filter(|at| now.saturating_duration_since(*at) < FORCED_RENEWAL_INTERVAL)
        {
            tracing::warn!(
                registry = %self.registry,
                renewed_s_ago = now.saturating_duration_since(at).as_secs(),
                "the registry refused the ECR authorization token; it was renewed too recently to renew again"
            );
            return Ok(None);
        }
        backoff.last_forced = Some(now);
        tracing::warn!(registry = %self.registry, "the registry refused the ECR authorization token before it was due; renewing it");
        self.renew(&mut backoff).await.map(Some)
    }

    /// One request to ECR, unless a recent failure is still backing off.
    async fn renew(&self, backoff: &mut Backoff) -> Result<String, FetchError> {
        // 401: credentials could not be had. Not a 5xx, so the registry's breaker does not count it.
        let failed = |message: String| FetchError::Upstream {
            status: 401,
            message: format!("no ECR authorization token for {}: {message}", self.registry),
        };
        if let Some(until) = backoff.until.filter(|u| Instant::now() < *u) {
            let wait = until.saturating_duration_since(Instant::now());
            return Err(failed(format!("{} (asked again in {} s)", backoff.last_error, wait.as_secs() + 1)));
        }
        let asked = Instant::now();
        let result = match tokio::time::timeout(self.timeout, request(&self.source)).await {
            Ok(r) => r.and_then(checked),
            Err(_) => Err(format!("ECR did not answer within {:?}", self.timeout)),
        };
        match result {
            Ok(issued) => {
                let (renew_at, invalid_at) = deadlines(asked, SystemTime::now(), self.source.expiry, issued.expires_at);
                let authorization = format!("Basic {}", issued.token);
                *self.current.lock() = Some(Current { authorization: authorization.clone(), renew_at, invalid_at });
                *backoff = Backoff {
                    until: None,
                    next: FIRST_BACKOFF,
                    last_error: String::new(),
                    last_forced: backoff.last_forced,
                };
                tracing::info!(
                    registry = %self.registry,
                    renew_in_s = renew_at.saturating_duration_since(Instant::now()).as_secs(),
                    "ECR authorization token obtained"
                );
                Ok(authorization)
            }
            Err(e) => {
                // ECR's own error text is in it: made printable before it is logged or sent on.
                let e = crate::printable::printable(&e);
                tracing::warn!(registry = %self.registry, error = %e, retry_in_s = backoff.next.as_secs(), "ECR authorization token request failed");
                backoff.until = Some(Instant::now() + backoff.next);
                backoff.next = (backoff.next * 2).min(MAX_BACKOFF);
                backoff.last_error = e.clone();
                Err(failed(e))
            }
        }
    }
}

#[cfg(feature = "ecr")]
async fn request(source: &EcrSource) -> Result<Issued, String> {
    api::get_authorization_token(source).await
}

#[cfg(not(feature = "ecr"))]
async fn request(_: &EcrSource) -> Result<Issued, String> {
    Err("this build has no ECR support (the `ecr` cargo feature)".to_string())
}

/// A token that can go into a header: base64 characters only, bounded.
fn checked(issued: Issued) -> Result<Issued, String> {
    let t = &issued.token;
    let base64 = t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if t.is_empty() || t.len() > MAX_TOKEN || !base64 {
        return Err("ECR answered an authorization token that is not base64 of at most 16 KiB".to_string());
    }
    Ok(issued)
}

/// When a token obtained at `asked` (wall clock `now`) is renewed, and when it is no longer used.
fn deadlines(asked: Instant, now: SystemTime, expiry: Duration, expires_at: Option<SystemTime>) -> (Instant, Instant) {
    let by_expiry = asked + expiry;
    let Some(life) = expires_at.map(|e| e.duration_since(now).unwrap_or(Duration::ZERO)) else {
        return (by_expiry, by_expiry);
    };
    let invalid_at = asked + life;
    let renew_at = invalid_at - RENEW_MARGIN.min(life / 4);
    (renew_at.min(by_expiry), invalid_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_renewed_at_expiry_or_before_ecr_expires_it_whichever_is_first() {
        let asked = Instant::now();
        let now = SystemTime::now();
        let hours = |h: u64| Duration::from_secs(h * 3600);
        // ECR's 12 h tokens with Go's 6 h expiry: renewed at 6 h, valid until 12 h.
        assert_eq!(deadlines(asked, now, hours(6), Some(now + hours(12))), (asked + hours(6), asked + hours(12)));
        // expiry past ECR's expiresAt: renewed 5 min before ECR expires it.
        let (renew, invalid) = deadlines(asked, now, hours(24), Some(now + hours(12)));
        assert_eq!((renew, invalid), (asked + hours(12) - RENEW_MARGIN, asked + hours(12)));
        // A short-lived token is renewed with a quarter of its life left.
        let (renew, _) = deadlines(asked, now, hours(12), Some(now + Duration::from_secs(8)));
        assert_eq!(renew, asked + Duration::from_secs(6));
        // Already expired (a skewed clock): due at once, never used after a failed renewal.
        assert_eq!(deadlines(asked, now, hours(12), Some(now - hours(1))), (asked, asked));
        // No expiresAt: Go's expiry alone.
        assert_eq!(deadlines(asked, now, hours(1), None), (asked + hours(1), asked + hours(1)));
    }

    #[test]
    fn only_bounded_base64_is_taken_as_a_token() {
        let issued = |t: &str| Issued { token: t.to_string(), expires_at: None };
        assert!(checked(issued("QVdTOnB3")).is_ok());
        for bad in ["", "QVdT OnB3", "QVdT\r\nX: y", &"A".repeat(MAX_TOKEN + 1)] {
            assert!(checked(issued(bad)).is_err(), "{bad:?}");
        }
    }
}
