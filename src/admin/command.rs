//! An admin request's method, path and query → a typed [`Command`], on the
//! serving thread and without I/O. The paths and parameters are the Go
//! ociregistry's (`/cmd/stop`, `/cmd/{manifest,blob,image}/list`), plus the
//! job endpoints of this one (`POST /cmd/<kind>`, `GET /cmd/jobs[/<id>]`).
//! Regular expressions are only checked for size here; they are compiled
//! where the command runs, off the serving thread.

pub use crate::query::Count;
use crate::query::{count, param};

/// The longest query string taken; a longer one is refused.
pub const MAX_QUERY: usize = 4096;
/// The most comma-separated patterns in `pattern=`.
pub const MAX_PATTERNS: usize = 32;
/// The longest job kind name.
const MAX_KIND: usize = 32;

/// What `image/list` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageFilter {
    All,
    /// Images whose URL matches any of these regular expressions.
    Patterns(Vec<String>),
    /// Images with a blob whose digest contains this.
    Digest(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `GET /cmd/stop`: answer, then shut down as SIGTERM does.
    Stop,
    /// `GET /cmd/manifest/list?pattern=RE,RE&count=N`
    ManifestList { filter: ImageFilter, count: Count },
    /// `GET /cmd/blob/list?substr=S&count=N`
    BlobList { substr: String, count: Count },
    /// `GET /cmd/image/list?pattern=RE,RE|digest=S&count=N`: images with their blobs.
    ImageList { filter: ImageFilter, count: Count },
    /// `GET /cmd/jobs`: every job kept.
    Jobs,
    /// `GET /cmd/jobs/<id>`
    Job(u64),
    /// `DELETE /cmd/jobs/<id>`: cancels a running job.
    Cancel(u64),
    /// `POST` (or `DELETE`) `/cmd/<kind>`: starts a job of that kind with the request body.
    Start { kind: String },
    /// Go's `DELETE /cmd/prune?type=…&dur=…&expr=…&count=…&dryRun=…` (a query
    /// naming a `type`): a prune job, awaited and answered with its lines. The
    /// query is read where the command runs (its `expr` is a regular expression).
    GoPrune { query: String },
}

/// Why a request names no command; each becomes a status with a plain-text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    NotFound(String),
    Method { allow: &'static str },
    Bad(String),
}

impl Command {
    /// Parses `method path?query` (the path starts with `/cmd/`).
    pub fn parse(method: &str, path: &str, query: Option<&str>) -> Result<Command, Refused> {
        let query = query.unwrap_or("");
        if query.len() > MAX_QUERY {
            return Err(Refused::Bad(format!("the query is longer than {MAX_QUERY} bytes")));
        }
        let rest =
            path.strip_prefix("/cmd/").ok_or_else(|| Refused::NotFound(format!("no admin command at {path}")))?;
        let read = matches!(method, "GET" | "HEAD");
        let get = |c: Command| if read { Ok(c) } else { Err(Refused::Method { allow: "GET, HEAD" }) };
        match rest {
            // GET only: a HEAD (a link checker, a monitor) must not stop the server.
            "stop" if method == "GET" => Ok(Command::Stop),
            "stop" => Err(Refused::Method { allow: "GET" }),
            "manifest/list" => get(Command::ManifestList { filter: filter(query, false)?, count: bad(count(query))? }),
            "blob/list" => {
                get(Command::BlobList { substr: param(query, "substr").unwrap_or_default(), count: bad(count(query))? })
            }
            "image/list" => get(Command::ImageList { filter: filter(query, true)?, count: bad(count(query))? }),
            "jobs" => get(Command::Jobs),
            "prune" if method == "DELETE" && param(query, "type").is_some() => {
                Ok(Command::GoPrune { query: query.to_string() })
            }
            _ => {
                if let Some(id) = rest.strip_prefix("jobs/") {
                    let id = id.parse().map_err(|_| Refused::NotFound(format!("no job {id:?}")))?;
                    return match method {
                        "DELETE" => Ok(Command::Cancel(id)),
                        _ if read => Ok(Command::Job(id)),
                        _ => Err(Refused::Method { allow: "GET, HEAD, DELETE" }),
                    };
                }
                let kind_ok = !rest.is_empty()
                    && rest.len() <= MAX_KIND
                    && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if !kind_ok {
                    return Err(Refused::NotFound(format!("no admin command at {path}")));
                }
                match method {
                    "POST" | "DELETE" => Ok(Command::Start { kind: rest.to_string() }),
                    _ => Err(Refused::Method { allow: "POST, DELETE" }),
                }
            }
        }
    }
}

fn bad<T>(parsed: Result<T, String>) -> Result<T, Refused> {
    parsed.map_err(Refused::Bad)
}

/// `pattern=RE,RE` (first), else with `digest_allowed`, `digest=S`, else everything.
fn filter(query: &str, digest_allowed: bool) -> Result<ImageFilter, Refused> {
    if let Some(p) = param(query, "pattern") {
        let patterns: Vec<String> = p.split(',').map(str::to_string).collect();
        if patterns.len() > MAX_PATTERNS {
            return Err(Refused::Bad(format!("pattern: at most {MAX_PATTERNS} expressions")));
        }
        return Ok(ImageFilter::Patterns(patterns));
    }
    match param(query, "digest") {
        Some(d) if digest_allowed => Ok(ImageFilter::Digest(d)),
        _ => Ok(ImageFilter::All),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, query: &str) -> Result<Command, Refused> {
        Command::parse("GET", path, Some(query))
    }

    #[test]
    fn go_paths_and_parameters() {
        assert_eq!(get("/cmd/stop", ""), Ok(Command::Stop));
        assert_eq!(
            get("/cmd/manifest/list", "pattern=nginx%2C.*pause.*&count=3"),
            Ok(Command::ManifestList {
                filter: ImageFilter::Patterns(vec!["nginx".into(), ".*pause.*".into()]),
                count: Count(Some(3))
            })
        );
        assert_eq!(
            get("/cmd/manifest/list", ""),
            Ok(Command::ManifestList { filter: ImageFilter::All, count: Count(Some(50)) })
        );
        assert_eq!(
            get("/cmd/blob/list", "substr=4c9126d4&count=-1"),
            Ok(Command::BlobList { substr: "4c9126d4".into(), count: Count(None) })
        );
        assert_eq!(
            get("/cmd/image/list", "digest=abc"),
            Ok(Command::ImageList { filter: ImageFilter::Digest("abc".into()), count: Count(Some(50)) })
        );
        assert_eq!(
            get("/cmd/manifest/list", "digest=abc"),
            Ok(Command::ManifestList { filter: ImageFilter::All, count: Count(Some(50)) })
        );
        assert_eq!(get("/cmd/jobs/17", ""), Ok(Command::Job(17)));
        assert_eq!(Command::parse("DELETE", "/cmd/jobs/17", None), Ok(Command::Cancel(17)));
        assert_eq!(get("/cmd/jobs", ""), Ok(Command::Jobs));
        assert_eq!(Command::parse("POST", "/cmd/verify", None), Ok(Command::Start { kind: "verify".into() }));
        assert_eq!(Command::parse("DELETE", "/cmd/prune", None), Ok(Command::Start { kind: "prune".into() }));
        assert_eq!(
            Command::parse("DELETE", "/cmd/prune", Some("dryRun=true&type=pattern")),
            Ok(Command::GoPrune { query: "dryRun=true&type=pattern".into() })
        );
        assert_eq!(Command::parse("POST", "/cmd/prune", Some("type=x")), Ok(Command::Start { kind: "prune".into() }));
    }

    #[test]
    fn refusals() {
        assert!(matches!(get("/cmd/manifest/list", "count=-2"), Err(Refused::Bad(_))));
        assert!(matches!(get("/cmd/manifest/list", "count=x"), Err(Refused::Bad(_))));
        assert!(matches!(get("/cmd/blob/list", &"x".repeat(MAX_QUERY + 1)), Err(Refused::Bad(_))));
        assert!(matches!(
            get("/cmd/image/list", &format!("pattern={}", ",".repeat(MAX_PATTERNS))),
            Err(Refused::Bad(_))
        ));
        assert!(matches!(get("/cmd/jobs/x", ""), Err(Refused::NotFound(_))));
        assert!(matches!(get("/cmd/verify", ""), Err(Refused::Method { allow: "POST, DELETE" })));
        assert!(matches!(Command::parse("POST", "/cmd/stop", None), Err(Refused::Method { allow: "GET" })));
        assert!(matches!(Command::parse("HEAD", "/cmd/stop", None), Err(Refused::Method { allow: "GET" })));
        assert!(matches!(Command::parse("POST", "/cmd/Verify", None), Err(Refused::NotFound(_))));
        assert!(matches!(Command::parse("POST", "/cmd/a/b", None), Err(Refused::NotFound(_))));
        assert!(matches!(Command::parse("POST", "/cmd/", None), Err(Refused::NotFound(_))));
        assert!(matches!(get("/cmd", ""), Err(Refused::NotFound(_))));
    }
}
