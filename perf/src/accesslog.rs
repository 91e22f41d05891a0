//! Counting an upstream's blob downloads from its access log (CNCF distribution writes the combined log
//! format: `127.0.0.1 - - [date] "GET /v2/x/blobs/sha256:… HTTP/1.1" 200 12345 "referer" "agent"`).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// One request line of an access log.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    /// Response body bytes (`-` counts as 0).
    pub bytes: u64,
}

/// Parses one combined/common log format line; `None` for anything else (other log output mixed in).
pub fn parse_line(line: &str) -> Option<Entry<'_>> {
    let open = line.find('"')?;
    let rest = &line[open + 1..];
    let close = rest.find('"')?;
    let mut request = rest[..close].split(' ');
    let method = request.next()?;
    let path = request.next()?;
    if method.is_empty() || !path.starts_with('/') {
        return None;
    }
    let mut after = rest[close + 1..].split_whitespace();
    let status = after.next()?.parse().ok()?;
    let bytes = match after.next()? {
        "-" => 0,
        b => b.parse().ok()?,
    };
    Some(Entry { method, path, status, bytes })
}

/// Upstream blob traffic seen in a log.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UpstreamCounts {
    /// `GET` lines whose path contains the pattern, any status.
    pub gets: u64,
    /// Of those, the ones answered 200 or 206.
    pub gets_ok: u64,
    /// Body bytes of those GETs.
    pub bytes: u64,
    /// `HEAD` lines whose path contains the pattern.
    pub heads: u64,
}

/// Counts the requests in `text` whose path contains `pattern`.
pub fn count(text: &str, pattern: &str) -> UpstreamCounts {
    let mut c = UpstreamCounts::default();
    for e in text.lines().filter_map(parse_line).filter(|e| e.path.contains(pattern)) {
        match e.method {
            "GET" => {
                c.gets += 1;
                c.bytes += e.bytes;
                if matches!(e.status, 200 | 206) {
                    c.gets_ok += 1;
                }
            }
            "HEAD" => c.heads += 1,
            _ => {}
        }
    }
    c
}

/// The current length of the log, so a run counts only what it caused.
pub fn current_len(path: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.len())
}

/// Counts what was appended to the log at `path` after byte `from`.
pub fn count_since(path: &Path, from: u64, pattern: &str) -> std::io::Result<UpstreamCounts> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(count(&String::from_utf8_lossy(&buf), pattern))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"127.0.0.1 - - [01/Feb/2025:10:00:00 +0000] "HEAD /v2/test/app/manifests/v1 HTTP/1.1" 200 0 "" "ociregistry"
time="2025-02-01T10:00:00Z" level=info msg="response completed" http.request.method=GET
127.0.0.1 - - [01/Feb/2025:10:00:00 +0000] "GET /v2/test/app/blobs/sha256:aaaa HTTP/1.1" 200 12345 "" "ociregistry"
127.0.0.1 - - [01/Feb/2025:10:00:01 +0000] "GET /v2/test/app/blobs/sha256:bbbb HTTP/1.1" 206 100 "" "ociregistry"
127.0.0.1 - - [01/Feb/2025:10:00:01 +0000] "HEAD /v2/test/app/blobs/sha256:bbbb HTTP/1.1" 200 - "" "ociregistry"
127.0.0.1 - - [01/Feb/2025:10:00:02 +0000] "GET /v2/test/app/blobs/sha256:cccc HTTP/1.1" 404 157 "" "ociregistry"
127.0.0.1 - - [01/Feb/2025:10:00:02 +0000] "GET /v2/test/app/manifests/sha256:dddd HTTP/1.1" 200 528 "" "x"
"#;

    #[test]
    fn parses_a_line() {
        let e = parse_line(r#"::1 - - [d] "GET /v2/x/blobs/sha256:ab HTTP/1.1" 200 12345 "" "ua""#).unwrap();
        assert_eq!(e, Entry { method: "GET", path: "/v2/x/blobs/sha256:ab", status: 200, bytes: 12345 });
        let e = parse_line(r#"::1 - - [d] "HEAD /v2/x/blobs/sha256:ab HTTP/1.1" 200 -"#).unwrap();
        assert_eq!(e.bytes, 0);
        assert_eq!(parse_line("time=\"x\" level=info msg=\"hello\""), None);
        assert_eq!(parse_line(r#"[d] "GET /x HTTP/1.1" abc 1"#), None);
        assert_eq!(parse_line(""), None);
    }

    #[test]
    fn counts_blob_gets_and_bytes() {
        let c = count(LOG, "blobs/");
        assert_eq!(c, UpstreamCounts { gets: 3, gets_ok: 2, bytes: 12345 + 100 + 157, heads: 1 });
        assert_eq!(count(LOG, "manifests/").gets, 1);
    }

    #[test]
    fn counts_only_what_was_appended() {
        let log = std::env::temp_dir().join(format!("ociregistry-perf-log-{}", std::process::id()));
        std::fs::write(&log, LOG.lines().take(3).collect::<Vec<_>>().join("\n") + "\n").unwrap();
        let from = current_len(&log).unwrap();
        std::fs::write(&log, LOG).unwrap();
        let c = count_since(&log, from, "blobs/").unwrap();
        std::fs::remove_file(&log).unwrap();
        assert_eq!((c.gets, c.gets_ok, c.bytes, c.heads), (2, 1, 100 + 157, 1));
    }
}
