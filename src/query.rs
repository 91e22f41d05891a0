//! URL query strings as the Go ociregistry reads them: percent-decoding, the
//! first `key=` of a query, and `count=N`. A leaf: the request router, the
//! admin commands and the jobs that take Go's parameters (`DELETE
//! /cmd/prune`) all read queries with it.

/// How many items a list shows when `count` is not given (the Go default).
pub const DEFAULT_COUNT: usize = 50;

/// How many items a list shows: `count=N`, `count=-1` for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count(pub Option<usize>);

impl Count {
    pub fn take(self) -> usize {
        self.0.unwrap_or(usize::MAX)
    }
}

/// The percent-decoded value of the first `key=` in `query` (Go's
/// `DELETE /cmd/prune` parameters are read with it too).
pub fn param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

/// `count=N` as every Go command reads it (the lists and `DELETE /cmd/prune`):
/// `-1` for all, [`DEFAULT_COUNT`] when absent.
pub fn count(query: &str) -> Result<Count, String> {
    match param(query, "count") {
        None => Ok(Count(Some(DEFAULT_COUNT))),
        Some(v) => match v.trim().parse::<i64>() {
            Ok(-1) => Ok(Count(None)),
            Ok(n) if n >= 0 => Ok(Count(Some(usize::try_from(n).unwrap_or(usize::MAX)))),
            _ => Err(format!("count {v:?}: a number of items, or -1 for all")),
        },
    }
}

/// `%XX` and `+` decoded; invalid UTF-8 replaced.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
