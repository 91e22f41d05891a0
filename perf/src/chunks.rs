//! Splitting a layer into parallel `Range` requests, the way containerd 2.x fetches large layers.

/// One byte range `[start, end]` (inclusive, as in a `Range: bytes=start-end` header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub start: u64,
    pub end: u64,
}

impl Chunk {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn header(&self) -> String {
        format!("bytes={}-{}", self.start, self.end)
    }
}

/// The chunks to fetch a blob of `size` bytes with, or `None` to fetch it in one request: chunking is off
/// (`chunk_bytes == 0`), or the blob is smaller than one chunk (or empty). Chunks are `chunk_bytes` long
/// except the last, which holds the remainder; together they cover `[0, size)` exactly once, in order.
pub fn plan(size: u64, chunk_bytes: u64) -> Option<Vec<Chunk>> {
    if chunk_bytes == 0 || size == 0 || size < chunk_bytes {
        return None;
    }
    let mut out = Vec::with_capacity(size.div_ceil(chunk_bytes) as usize);
    let mut start = 0;
    while start < size {
        let end = (start + chunk_bytes).min(size) - 1;
        out.push(Chunk { start, end });
        start = end + 1;
    }
    Some(out)
}

/// Parses a `Content-Range: bytes START-END/TOTAL` value (TOTAL may be `*`).
pub fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (s, e) = range.split_once('-')?;
    let total = if total == "*" { None } else { Some(total.parse().ok()?) };
    Some((s.parse().ok()?, e.parse().ok()?, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_chunks_when_off_or_small() {
        assert_eq!(plan(100, 0), None);
        assert_eq!(plan(0, 10), None);
        assert_eq!(plan(9, 10), None);
    }

    #[test]
    fn exact_and_remainder() {
        assert_eq!(plan(10, 10).unwrap(), vec![Chunk { start: 0, end: 9 }]);
        let c = plan(25, 10).unwrap();
        assert_eq!(c, vec![Chunk { start: 0, end: 9 }, Chunk { start: 10, end: 19 }, Chunk { start: 20, end: 24 }]);
        assert_eq!(c[2].len(), 5);
        assert_eq!(c[1].header(), "bytes=10-19");
    }

    #[test]
    fn chunks_cover_the_blob_exactly() {
        for (size, chunk) in [(1u64, 1u64), (1 << 20, 4096), ((1 << 20) + 1, 4096), (1000, 7), (999_999, 1000)] {
            let c = plan(size, chunk).unwrap();
            assert_eq!(c.first().unwrap().start, 0);
            assert_eq!(c.last().unwrap().end, size - 1);
            assert!(c.windows(2).all(|w| w[1].start == w[0].end + 1));
            assert_eq!(c.iter().map(Chunk::len).sum::<u64>(), size);
            assert!(c.iter().all(|x| x.len() <= chunk));
        }
    }

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 0-9/25"), Some((0, 9, Some(25))));
        assert_eq!(parse_content_range("bytes 10-19/*"), Some((10, 19, None)));
        assert_eq!(parse_content_range("items 0-9/25"), None);
        assert_eq!(parse_content_range("bytes 0-x/25"), None);
    }
}
