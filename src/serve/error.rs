//! `ApiError`: the one place where failures become HTTP statuses and OCI error
//! codes. Fetch errors are mapped here, with the upstream's cause logged at
//! the mapping point and never its `WWW-Authenticate` passed on.

use crate::fetch::FetchError;
use crate::oci::{ErrorBody, OciCode};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub code: OciCode,
    pub message: String,
    pub detail: Option<String>,
    pub headers: Vec<(&'static str, String)>,
}

/// What was asked for, so "not found" gets the right code.
#[derive(Debug, Clone, Copy)]
pub enum Wanted {
    Manifest,
    Blob,
    Tags,
}

impl ApiError {
    pub fn new(status: u16, code: OciCode, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), detail: None, headers: Vec::new() }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> ApiError {
        self.detail = Some(detail.into());
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(&self) -> Vec<u8> {
        ErrorBody { code: self.code, message: self.message.clone(), detail: self.detail.clone() }.to_json()
    }

    pub fn unsupported() -> ApiError {
        ApiError::new(
            405,
            OciCode::Unsupported,
            "this is a pull-only registry cache: only GET and HEAD of manifests, blobs and tags are served",
        )
        .header("Allow", "GET, HEAD")
    }

    pub fn from_fetch(e: FetchError, wanted: Wanted) -> ApiError {
        let not_found = match wanted {
            Wanted::Manifest => OciCode::ManifestUnknown,
            Wanted::Blob => OciCode::BlobUnknown,
            Wanted::Tags => OciCode::NameUnknown,
        };
        let message = e.to_string();
        match e {
            FetchError::NotFound(_) | FetchError::AirGapped => ApiError::new(404, not_found, message),
            FetchError::Refused(_) => ApiError::new(403, OciCode::Denied, message),
            FetchError::TooManyRequests { retry_after } => {
                let err =
                    ApiError::new(429, OciCode::TooManyRequests, "the upstream registry is rate limiting this cache");
                match retry_after {
                    Some(r) => err.header("Retry-After", r),
                    None => err,
                }
            }
            FetchError::Unreachable(_) | FetchError::Upstream { .. } | FetchError::BadContent(_) => {
                tracing::warn!(error = %message, "upstream failure");
                ApiError::new(502, OciCode::Unavailable, "the upstream registry failed and nothing is cached")
                    .detail(message)
            }
            FetchError::Failing { retry_after_secs, .. } => {
                ApiError::new(502, OciCode::Unavailable, "the upstream registry keeps failing for this object")
                    .detail(message)
                    .header("Retry-After", retry_after_secs.max(1).to_string())
            }
            FetchError::Timeout(_) => {
                ApiError::new(504, OciCode::Unavailable, "the upstream registry timed out").detail(message)
            }
            FetchError::CircuitOpen { retry_after_secs, .. } => {
                ApiError::new(503, OciCode::Unavailable, "the upstream registry keeps failing and nothing is cached")
                    .detail(message)
                    .header("Retry-After", retry_after_secs.max(1).to_string())
            }
            FetchError::ShuttingDown => ApiError::new(503, OciCode::Unavailable, message),
            FetchError::NoSpace(_) => {
                tracing::warn!(error = %message, "download refused");
                ApiError::new(503, OciCode::Unavailable, message).header("Retry-After", "60")
            }
            FetchError::Busy(_) => {
                tracing::warn!(error = %message, "refused: too much in flight");
                ApiError::new(503, OciCode::Unavailable, message).header("Retry-After", "1")
            }
            FetchError::Internal(_) => {
                tracing::error!(error = %message, "internal error");
                ApiError::new(500, OciCode::Unavailable, "internal error").detail(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        let e = ApiError::from_fetch(FetchError::NotFound("x".into()), Wanted::Blob);
        assert_eq!((e.status, e.code), (404, OciCode::BlobUnknown));
        let e = ApiError::from_fetch(FetchError::TooManyRequests { retry_after: Some("7".into()) }, Wanted::Manifest);
        assert_eq!((e.status, e.code), (429, OciCode::TooManyRequests));
        assert_eq!(e.headers, vec![("Retry-After", "7".to_string())]);
        assert_eq!(ApiError::from_fetch(FetchError::Unreachable("x".into()), Wanted::Manifest).status, 502);
        assert_eq!(ApiError::from_fetch(FetchError::Timeout("x".into()), Wanted::Manifest).status, 504);
        assert_eq!(ApiError::from_fetch(FetchError::AirGapped, Wanted::Manifest).status, 404);
        let e = ApiError::from_fetch(
            FetchError::CircuitOpen { registry: "quay.io".into(), retry_after_secs: 0 },
            Wanted::Blob,
        );
        assert_eq!((e.status, e.code), (503, OciCode::Unavailable));
        assert_eq!(e.headers, vec![("Retry-After", "1".to_string())]);
        let e = ApiError::unsupported();
        assert_eq!((e.status, e.headers[0].1.as_str()), (405, "GET, HEAD"));
    }
}
