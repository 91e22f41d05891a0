//! The id a request's log lines share: the `request` span around its answer
//! carries it, so its access line and whatever the serving thread logs while
//! answering it name it, in text (`request{id=…}`) and JSON (`"span":{"id":…}`)
//! alike. Generated on the serving thread as `<thread>-<n>` (its index and a
//! per-thread count: no shared counter, nothing formatted unless a line is
//! written), or the client's own `X-Request-Id` (a proxy's, for one id end to
//! end) when that passes [`client_supplied`]. It is not echoed in responses:
//! the kept answers of repeated requests are sent as stored bytes.

use std::fmt;

/// Longest `X-Request-Id` taken from a client.
pub const MAX_CLIENT_ID: usize = 64;

/// One request's id.
#[derive(Debug)]
pub enum RequestId<'a> {
    Generated { thread: usize, n: u64 },
    Client(&'a str),
}

impl fmt::Display for RequestId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Generated { thread, n } => write!(f, "{thread}-{n}"),
            RequestId::Client(id) => f.write_str(id),
        }
    }
}

/// A client's `X-Request-Id` value when it is safe to log as is: 1 to
/// [`MAX_CLIENT_ID`] characters of `A-Z a-z 0-9 . _ -`. Anything else is
/// ignored (the request gets a generated id).
pub fn client_supplied(value: &[u8]) -> Option<&str> {
    let ok = (1..=MAX_CLIENT_ID).contains(&value.len())
        && value.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then(|| std::str::from_utf8(value).expect("ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_taken_only_when_short_and_plain() {
        assert_eq!(client_supplied(b"req-1.a_B"), Some("req-1.a_B"));
        assert_eq!(client_supplied(&[b'a'; 64]).map(str::len), Some(64));
        for bad in [&b""[..], &[b'a'; 65], b"a b", b"a\"b", b"a\nb", b"caf\xc3\xa9", b"a=b"] {
            assert_eq!(client_supplied(bad), None, "{bad:?}");
        }
        assert_eq!(RequestId::Generated { thread: 1, n: 42 }.to_string(), "1-42");
    }
}
