//! The admin API's client, for commands run on the same host as a server
//! (`load`, `prune`): find the server through `<image-path>/.admin`, start a
//! job, poll it. Plain HTTP/1.1 over a std `TcpStream`, one request per
//! connection, with connect, read and write timeouts and a cap on what is read.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// How long connecting, and each read or write, may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response read.
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// A server's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    addr: SocketAddr,
    host: String,
    pid: u32,
    token: Option<String>,
}

/// A response: status and body (the head's other fields are not kept).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the server's admin API at {addr}: {source}")]
    Io { addr: SocketAddr, source: io::Error },
    #[error("the server answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("the server's answer is not what was expected: {0}")]
    Unexpected(String),
}

/// A job as `GET /cmd/jobs/<id>` shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct JobStatus {
    pub id: String,
    pub kind: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    #[serde(default)]
    pub counters: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    pub lines: Vec<String>,
    #[serde(default, rename = "linesDropped")]
    pub lines_dropped: u64,
    #[serde(default)]
    pub report: Option<Value>,
    #[serde(default)]
    pub error: Option<String>,
}

impl JobStatus {
    pub fn finished(&self) -> bool {
        self.state != "running"
    }
}

/// The admin API of the server running on `image_path`, if one runs (its
/// `.admin` file is there and not stale).
pub fn find(image_path: &Path) -> Option<AdminClient> {
    let file = super::discovery::find(image_path)?;
    AdminClient::new(&file.url, file.pid).ok()
}

/// [`find`], for a command given the configuration `admin` (the server's):
/// the client sends its token, which the server asks of a peer off loopback
/// (one listening on a single non-loopback address is reached from it). The
/// token goes only to loopback or to one of this host's own addresses: a
/// `.admin` naming any other is refused, naming it.
pub fn find_configured(
    image_path: &Path,
    admin: Option<&crate::config::admin::AdminConfig>,
) -> Result<Option<AdminClient>, String> {
    let Some(client) = find(image_path) else { return Ok(None) };
    let Some(token) = admin.and_then(crate::config::admin::AdminConfig::client_token) else { return Ok(Some(client)) };
    if !super::local_addresses::is_local(client.addr.ip()) {
        return Err(format!(
            "{} names {}, which is not an address of this host: the admin token is not sent there",
            crate::store::Layout::new(image_path).admin_file().display(),
            client.addr
        ));
    }
    Ok(Some(client.with_token(token)))
}

impl AdminClient {
    /// A client for `url` (`http://address:port`, an IP literal: no name is resolved).
    pub fn new(url: &str, pid: u32) -> Result<AdminClient, ClientError> {
        let host = url.strip_prefix("http://").unwrap_or(url).trim_end_matches('/').to_string();
        let addr = host
            .parse::<SocketAddr>()
            .map_err(|_| ClientError::Unexpected(format!("{url:?} is not an http://address:port URL")))?;
        Ok(AdminClient { addr, host, pid, token: None })
    }

    /// Sends `Authorization: Bearer <token>` (the server's `admin.token`).
    pub fn with_token(mut self, token: impl Into<String>) -> AdminClient {
        self.token = Some(token.into());
        self
    }

    /// The server's pid, from its `.admin` file.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// One request; any status is a reply.
    pub fn request(&self, method: &str, path_and_query: &str, body: &[u8]) -> Result<Reply, ClientError> {
        let io_err = |source| ClientError::Io { addr: self.addr, source };
        let mut stream = TcpStream::connect_timeout(&self.addr, TIMEOUT).map_err(io_err)?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(io_err)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(io_err)?;
        let mut head = format!("{method} {path_and_query} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.host);
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if !body.is_empty() || !matches!(method, "GET" | "HEAD") {
            head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body)).map_err(io_err)?;
        let mut raw = Vec::new();
        (&mut stream).take(MAX_RESPONSE as u64 + 1).read_to_end(&mut raw).map_err(io_err)?;
        if raw.len() > MAX_RESPONSE {
            return Err(ClientError::Unexpected(format!("a response over {MAX_RESPONSE} bytes")));
        }
        parse(&raw)
    }

    /// `GET path`, its body when the status is 200.
    pub fn get_text(&self, path_and_query: &str) -> Result<String, ClientError> {
        let reply = self.request("GET", path_and_query, b"")?;
        match reply.status {
            200 => Ok(reply.text()),
            status => Err(ClientError::Refused { status, message: reply.text().trim().to_string() }),
        }
    }

    /// Starts a job of `kind` with `body` (JSON); returns its id.
    pub fn start_job(&self, kind: &str, body: &[u8]) -> Result<String, ClientError> {
        let reply = self.request("POST", &format!("/cmd/{kind}"), body)?;
        if reply.status != 202 {
            return Err(ClientError::Refused { status: reply.status, message: reply.text().trim().to_string() });
        }
        let v: Value = serde_json::from_slice(&reply.body).map_err(|e| ClientError::Unexpected(e.to_string()))?;
        v["id"].as_str().map(str::to_string).ok_or_else(|| ClientError::Unexpected("no job id".into()))
    }

    /// A job's state now.
    pub fn poll(&self, id: &str) -> Result<JobStatus, ClientError> {
        let reply = self.request("GET", &format!("/cmd/jobs/{id}"), b"")?;
        if reply.status != 200 {
            return Err(ClientError::Refused { status: reply.status, message: reply.text().trim().to_string() });
        }
        serde_json::from_slice(&reply.body).map_err(|e| ClientError::Unexpected(e.to_string()))
    }

    /// Polls every `every` until the job finishes, showing each state to `seen`.
    pub fn wait(&self, id: &str, every: Duration, mut seen: impl FnMut(&JobStatus)) -> Result<JobStatus, ClientError> {
        loop {
            let status = self.poll(id)?;
            seen(&status);
            if status.finished() {
                return Ok(status);
            }
            std::thread::sleep(every);
        }
    }
}

/// Parses a whole `Connection: close` response (Content-Length, or to the end).
fn parse(raw: &[u8]) -> Result<Reply, ClientError> {
    let bad = |why: &str| ClientError::Unexpected(why.to_string());
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no response head"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("a response head that is not text"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("no status line"))?;
    let mut body = &raw[end + 4..];
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                let n: usize = value.trim().parse().map_err(|_| bad("a bad Content-Length"))?;
                if body.len() < n {
                    return Err(bad("a body cut short"));
                }
                body = &body[..n];
            }
        }
    }
    Ok(Reply { status, body: body.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let r = parse(b"HTTP/1.1 202 Accepted\r\nContent-Length: 4\r\n\r\nabcdEXTRA").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (202, &b"abcd"[..]));
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_err());
        assert!(parse(b"garbage").is_err());
        assert!(AdminClient::new("http://127.0.0.1:8080", 1).is_ok());
        assert!(AdminClient::new("http://[::1]:8080/", 1).is_ok());
        assert!(AdminClient::new("http://nohost", 1).is_err());
        assert!(AdminClient::new("http://localhost:8080", 1).is_err(), "names are not resolved");
    }
}
