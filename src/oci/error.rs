//! OCI error codes and the `{"errors":[{code,message,detail}]}` body, rendered
//! with serde. Which code and status a failure maps to is decided in one place,
//! `serve::error`.

use serde::Serialize;

/// Error codes of the OCI Distribution specification (plus Docker's `TOOMANYREQUESTS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OciCode {
    BlobUnknown,
    DigestInvalid,
    ManifestUnknown,
    ManifestInvalid,
    NameInvalid,
    NameUnknown,
    RangeInvalid,
    Unsupported,
    Unauthorized,
    Denied,
    TooManyRequests,
    Unavailable,
}

impl OciCode {
    pub fn as_str(self) -> &'static str {
        match self {
            OciCode::BlobUnknown => "BLOB_UNKNOWN",
            OciCode::DigestInvalid => "DIGEST_INVALID",
            OciCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            OciCode::ManifestInvalid => "MANIFEST_INVALID",
            OciCode::NameInvalid => "NAME_INVALID",
            OciCode::NameUnknown => "NAME_UNKNOWN",
            OciCode::RangeInvalid => "RANGE_INVALID",
            OciCode::Unsupported => "UNSUPPORTED",
            OciCode::Unauthorized => "UNAUTHORIZED",
            OciCode::Denied => "DENIED",
            OciCode::TooManyRequests => "TOOMANYREQUESTS",
            OciCode::Unavailable => "UNAVAILABLE",
        }
    }
}

#[derive(Serialize)]
struct ErrorEntry<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

#[derive(Serialize)]
struct Errors<'a> {
    errors: [ErrorEntry<'a>; 1],
}

/// One OCI error, ready to render as a response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: OciCode,
    pub message: String,
    pub detail: Option<String>,
}

impl ErrorBody {
    pub fn to_json(&self) -> Vec<u8> {
        let body = Errors {
            errors: [ErrorEntry { code: self.code.as_str(), message: &self.message, detail: self.detail.as_deref() }],
        };
        serde_json::to_vec(&body).expect("error body serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_json_with_escaping() {
        let e = ErrorBody {
            code: OciCode::ManifestUnknown,
            message: "manifest \"x\" unknown".into(),
            detail: Some("media type a/b".into()),
        };
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["errors"][0]["code"], "MANIFEST_UNKNOWN");
        assert_eq!(v["errors"][0]["message"], "manifest \"x\" unknown");
        assert_eq!(v["errors"][0]["detail"], "media type a/b");
    }
}
