//! Blob downloads: one per digest whatever the fan-out. The network side runs
//! on the runtime and hands chunks to a writer on a blocking thread, which
//! appends, hashes and publishes progress in steps (every [`PUBLISH_STEP`]
//! bytes, or every [`PUBLISH_INTERVAL`] once it has caught up with the
//! network). A broken transfer resumes with `Range`; a stall longer than the
//! pull timeout counts as broken. The download finishes even when every reader
//! has left, up to [`MAX_ORPHANS`] such downloads at once. At shutdown an
//! orphaned download stops at once and one with readers gets the grace period.
//!
//! Each download's writer holds one of the runtime's blocking threads while it
//! lasts; the runtime allows enough of them (see `server`) for a boot storm's
//! distinct layers plus the short store operations.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, RANGE,
};
use reqwest::{Method, StatusCode};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::download::{Download, State};
use super::upstream::Upstream;
use super::{BlobSource, FetchError, Fetcher, Source};
use crate::metrics::upstream::InFlight;
use crate::metrics::Counter;
use crate::oci::Digest;
use crate::store::{writer::CommitError, BlobWriter};

/// Progress is published every this many bytes while data arrives…
const PUBLISH_STEP: u64 = 256 * 1024;
/// …or when the writer has caught up, at most this often: 50 readers must
/// not cost a cross-thread wake-up per network chunk.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(2);
/// Resumptions of a broken transfer before giving up.
const MAX_RESUMES: u32 = 4;
/// Downloads allowed to go on with no reader left.
const MAX_ORPHANS: usize = 16;
const MISMATCH_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Distinct blob downloads in flight at once (each holds a blocking thread
/// for its writer); past this a request is answered 503 at once.
pub const MAX_DOWNLOADS: usize = 1024;

impl Fetcher {
    /// Finds a committed blob, joins its download in flight, or starts one.
    pub(super) async fn blob(self: Arc<Self>, source: Source, digest: Digest) -> Result<BlobSource, FetchError> {
        if self.store.record(&digest).is_some() {
            return Ok(BlobSource::Committed);
        }
        let joined = self.downloads.lock().get(&digest).map(|d| d.reader());
        if let Some(reader) = joined {
            self.upstreams.series(&source.registry).coalesced.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%source, %digest, from = %reader.download.source, "joined the download in flight");
            return Ok(BlobSource::Downloading(reader));
        }
        self.check_online()?;
        if let Some(until) = self.mismatch_backoff.lock().get(&digest).map(|b| b.0) {
            if until > Instant::now() {
                return Err(FetchError::BadContent(format!(
                    "{digest} did not match its content at the last try; retrying later"
                )));
            }
        }
        self.check_remembered(&source, &format!("blob {digest}"))?;
        let expected = self.store.expected_size(&source.to_string(), &digest).unwrap_or(0);
        self.check_space(expected)?;
        let d = digest.clone();
        let (writer, reader) = self.blocking(move |store| BlobWriter::create(store, &d)).await?;
        let download = Arc::new(Download::new(digest.clone(), source.to_string(), reader));
        let lost_race = {
            let mut downloads = self.downloads.lock();
            if self.store.record(&digest).is_some() {
                Some(Ok(BlobSource::Committed))
            } else if let Some(existing) = downloads.get(&digest) {
                self.upstreams.series(&source.registry).coalesced.fetch_add(1, Ordering::Relaxed);
                Some(Ok(BlobSource::Downloading(existing.reader())))
            } else if downloads.len() >= MAX_DOWNLOADS {
                Some(Err(FetchError::Busy(format!("{MAX_DOWNLOADS} blob downloads are in flight; try again shortly"))))
            } else {
                downloads.insert(digest.clone(), download.clone());
                None
            }
        };
        if let Some(other) = lost_race {
            discard(writer);
            return other;
        }
        let reader = download.reader();
        self.prefetch_siblings(&source, &digest);
        // The download keeps the span of the request that started it, whoever joins it later.
        tokio::spawn(self.clone().run_download(source, download.clone(), writer).in_current_span());
        Ok(BlobSource::Downloading(reader))
    }

    /// A blob's size without downloading it: from the cache or a download in
    /// flight, else the upstream's `HEAD` (or a one-byte ranged GET where a
    /// presigned redirect refuses HEAD).
    pub(super) async fn blob_size(self: Arc<Self>, source: Source, digest: Digest) -> Result<u64, FetchError> {
        if let Some(r) = self.store.record(&digest) {
            return Ok(r.size);
        }
        if let Some(total) = self.downloads.lock().get(&digest).and_then(|d| d.current().total) {
            return Ok(total);
        }
        self.check_online()?;
        self.check_remembered(&source, &format!("blob {digest}"))?;
        let up = self.upstreams.get(&source.registry).await?;
        let url = up.url(&source.repo, &format!("blobs/{digest}"));
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        self.counters.inc(Counter::UpstreamBlobHead);
        let resp = up.send(Method::HEAD, &source.repo, url.clone(), headers.clone()).await?;
        if resp.status().is_success() {
            // Read the header itself: for a HEAD response the body's size hint is 0.
            let announced =
                resp.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
            if let Some(n) = announced {
                return Ok(n);
            }
        } else if !matches!(
            resp.status(),
            StatusCode::FORBIDDEN | StatusCode::METHOD_NOT_ALLOWED | StatusCode::BAD_REQUEST
        ) {
            self.check_status(resp, &source, &format!("blob {digest}")).await?;
        }
        headers.insert(RANGE, HeaderValue::from_static("bytes=0-0"));
        self.counters.inc(Counter::UpstreamBlobHead);
        let resp = up.send(Method::GET, &source.repo, url, headers).await?;
        let resp = self.check_status(resp, &source, &format!("blob {digest}")).await?;
        let total = match resp.status() {
            StatusCode::PARTIAL_CONTENT => resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range)
                .and_then(|(_, total)| total),
            _ => resp.content_length(),
        };
        total
            .ok_or_else(|| FetchError::Upstream { status: 502, message: format!("upstream gave no size for {digest}") })
    }

    async fn run_download(self: Arc<Self>, source: Source, download: Arc<Download>, writer: BlobWriter) {
        let mut end = DownloadEnd { fetcher: self.clone(), download: download.clone(), reached: false };
        let _in_flight = InFlight::new(self.upstreams.series(&source.registry));
        crate::faults::panic_point("download", &download.digest.to_string());
        let started = Instant::now();
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        let dl = download.clone();
        let writing = tokio::task::spawn_blocking(move || write_loop(writer, rx, &dl));
        let transfer = self.transfer(&source, &download, tx).await;
        let written = writing.await.map_err(|e| FetchError::Internal(e.to_string())).and_then(|r| {
            r.map_err(|e| match e.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => FetchError::NoSpace(e.to_string()),
                _ => FetchError::Internal(format!("cache write failed: {e}")),
            })
        });
        let result = match (transfer, written) {
            (Ok(()), Ok(mut w)) => match w.verify() {
                Ok(()) => Ok(w),
                Err(err) => {
                    discard(w);
                    Err(match err {
                        CommitError::DigestMismatch { actual, .. } => {
                            self.note_mismatch(&download.digest);
                            FetchError::BadContent(format!(
                                "blob from {source} hashes to {actual}, not {}",
                                download.digest
                            ))
                        }
                        CommitError::Io(e) => FetchError::Internal(e.to_string()),
                    })
                }
            },
            (Err(e), Ok(w)) => {
                discard(w);
                Err(e)
            }
            (Err(e), Err(_)) | (Ok(()), Err(e)) => Err(e),
        };
        match result {
            Ok(writer) => {
                self.counters.inc(Counter::DownloadsCommitted);
                download.publish(|p| p.state = State::Verified);
                self.mismatch_backoff.lock().remove(&download.digest);
                let src = source.to_string();
                if let Err(e) = self.blocking(move |store| writer.commit(store, &src)).await {
                    tracing::error!(digest = %download.digest, error = %e, "verified blob could not be committed");
                }
                self.downloads.lock().remove(&download.digest);
                end.reached = true;
                let size = download.current().published;
                tracing::info!(%source, digest = %download.digest, size, ms = started.elapsed().as_millis() as u64, "blob cached");
            }
            Err(e) => {
                self.counters.inc(Counter::DownloadsFailed);
                self.downloads.lock().remove(&download.digest);
                tracing::warn!(%source, digest = %download.digest, error = %e, "blob download failed");
                download.publish(|p| p.state = State::Failed(e));
                end.reached = true;
            }
        }
    }

    /// Refuses a download of `size` bytes that would take the image path below its floor.
    fn check_space(&self, size: u64) -> Result<(), FetchError> {
        let floor = self.settings.min_free_bytes;
        if crate::store::space::fits(self.store.layout().root(), size, floor) {
            return Ok(());
        }
        Err(FetchError::NoSpace(format!(
            "{size} more bytes would leave less than the {floor} bytes minFreeBytes keeps free"
        )))
    }

    fn note_mismatch(&self, digest: &Digest) {
        let mut map = self.mismatch_backoff.lock();
        let now = Instant::now();
        super::make_room(&mut map, 1024, |(until, _)| *until <= now);
        let streak = map.get(digest).map_or(0, |b| b.1) + 1;
        let wait = Duration::from_secs(1 << streak.min(6)).min(MISMATCH_BACKOFF_MAX) / 2;
        map.insert(digest.clone(), (Instant::now() + wait, streak));
    }

    /// Moves the blob's bytes from upstream to the writer, resuming on breaks.
    async fn transfer(&self, source: &Source, download: &Download, tx: mpsc::Sender<Bytes>) -> Result<(), FetchError> {
        let up = self.upstreams.get(&source.registry).await?;
        let digest = &download.digest;
        let expected = self.store.expected_size(&source.to_string(), digest);
        let mut received: u64 = 0;
        let mut breaks: u32 = 0;
        let mut orphan = OrphanGuard { fetcher: self, counted: false };
        let mut shutdown = self.shutdown.clone();
        loop {
            let attempt = async {
                let (mut resp, skip, total) = self.open_blob(&up, source, digest, received, expected).await?;
                if received == 0 {
                    if let Some(t) = total {
                        self.check_space(t).map_err(Broken::Fatal)?;
                    }
                    download.publish(|p| {
                        p.total = total;
                        p.state = State::Streaming;
                    });
                }
                let mut skip = skip;
                loop {
                    let chunk = tokio::time::timeout(self.settings.pull_timeout, resp.chunk())
                        .await
                        .map_err(|_| Broken::Transport(format!("no data for {:?}", self.settings.pull_timeout)))?
                        .map_err(|e| Broken::Transport(super::error::error_chain(&e)))?;
                    let Some(mut chunk) = chunk else {
                        return match total {
                            Some(t) if received < t => {
                                Err(Broken::Transport(format!("body ended at {received} of {t} bytes")))
                            }
                            _ => Ok(()),
                        };
                    };
                    if skip > 0 {
                        let n = skip.min(chunk.len() as u64);
                        skip -= n;
                        chunk = chunk.slice(n as usize..);
                    }
                    received += chunk.len() as u64;
                    self.counters.add(Counter::UpstreamBlobBytes, chunk.len() as u64);
                    up.series().bytes_fetched.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    if total.is_some_and(|t| received > t) {
                        return Err(Broken::Fatal(FetchError::BadContent(format!(
                            "upstream sent more than the {} bytes it announced",
                            total.unwrap_or(0)
                        ))));
                    }
                    tx.send(chunk)
                        .await
                        .map_err(|_| Broken::Fatal(FetchError::Internal("cache write failed".into())))?;
                    if !orphan.allowed(download) {
                        return Err(Broken::Fatal(FetchError::Internal(
                            "abandoned: too many downloads without readers".into(),
                        )));
                    }
                }
            };
            let outcome = tokio::select! {
                r = attempt => r,
                _ = until_abandoned_at_shutdown(&mut shutdown, download) => return Err(FetchError::ShuttingDown),
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(Broken::Fatal(e)) => return Err(e),
                Err(Broken::Transport(why)) if breaks < MAX_RESUMES => {
                    breaks += 1;
                    tracing::info!(%source, %digest, received, attempt = breaks, why, "blob transfer broke; resuming");
                    tokio::time::sleep(Duration::from_millis(200 << breaks)).await;
                }
                Err(Broken::Transport(why)) => {
                    return Err(FetchError::Unreachable(format!("blob transfer from {source} kept breaking: {why}")))
                }
            }
        }
    }

    /// Requests the blob from byte `from`. Returns the response, how many
    /// leading bytes of its body to skip (an upstream that ignored `Range`), and the total size.
    async fn open_blob(
        &self,
        up: &Upstream,
        source: &Source,
        digest: &Digest,
        from: u64,
        expected: Option<u64>,
    ) -> Result<(reqwest::Response, u64, Option<u64>), Broken> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        if from > 0 {
            headers.insert(RANGE, HeaderValue::from_str(&format!("bytes={from}-")).expect("ascii"));
        }
        let url = up.url(&source.repo, &format!("blobs/{digest}"));
        self.counters.inc(Counter::UpstreamBlob);
        let resp = match up.send(Method::GET, &source.repo, url, headers).await {
            Ok(r) => r,
            Err(e @ (FetchError::Unreachable(_) | FetchError::Timeout(_))) if from > 0 => {
                return Err(Broken::Transport(e.to_string()))
            }
            Err(e) => return Err(Broken::Fatal(e)),
        };
        let resp = self.check_status(resp, source, &format!("blob {digest}")).await.map_err(Broken::Fatal)?;
        if let Some(enc) = resp.headers().get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
            if !enc.eq_ignore_ascii_case("identity") {
                return Err(Broken::Fatal(FetchError::BadContent(format!(
                    "upstream sent the blob with Content-Encoding {enc}"
                ))));
            }
        }
        let (skip, total) = if resp.status() == StatusCode::PARTIAL_CONTENT {
            let range = resp.headers().get(CONTENT_RANGE).and_then(|v| v.to_str().ok()).and_then(parse_content_range);
            match range {
                Some((start, total)) if start == from => (0, total),
                _ => return Err(Broken::Transport("upstream answered the resume with a wrong Content-Range".into())),
            }
        } else {
            (from, resp.content_length())
        };
        if let (Some(t), Some(e)) = (total, expected) {
            if t != e {
                return Err(Broken::Fatal(FetchError::BadContent(format!(
                    "upstream announces {t} bytes for {digest}, the manifest says {e}"
                ))));
            }
        }
        Ok((resp, skip, total.or(expected)))
    }
}

/// The end of a download task. Dropped before the task reached its end (a
/// panic), it takes the download out of the table and fails it, so its
/// readers stop waiting and cut their connections, and the next request
/// starts a fresh download.
struct DownloadEnd {
    fetcher: Arc<Fetcher>,
    download: Arc<Download>,
    reached: bool,
}

impl Drop for DownloadEnd {
    fn drop(&mut self) {
        if self.reached {
            return;
        }
        let digest = &self.download.digest;
        tracing::error!(%digest, "blob download task ended without an outcome");
        let mut downloads = self.fetcher.downloads.lock();
        if downloads.get(digest).is_some_and(|d| Arc::ptr_eq(d, &self.download)) {
            downloads.remove(digest);
        }
        drop(downloads);
        self.download.publish(|p| p.state = State::Failed(FetchError::Internal("the download task failed".into())));
    }
}

enum Broken {
    /// Worth resuming.
    Transport(String),
    Fatal(FetchError),
}

/// Drops an unused writer (unlinking its temp file) off the runtime.
fn discard(writer: BlobWriter) {
    tokio::task::spawn_blocking(move || drop(writer));
}

/// `bytes <start>-<end>/<total|*>` → (start, total).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// Completes once shutdown has begun and the download has no reader left, or
/// the grace period is over: responses in progress may finish, orphans stop.
async fn until_abandoned_at_shutdown(shutdown: &mut tokio::sync::watch::Receiver<bool>, download: &Download) {
    let _ = shutdown.wait_for(|s| *s).await;
    let deadline = Instant::now() + crate::config::SHUTDOWN_GRACE;
    while download.readers() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Counts this download among the orphans while it has no reader.
struct OrphanGuard<'a> {
    fetcher: &'a Fetcher,
    counted: bool,
}

impl OrphanGuard<'_> {
    fn allowed(&mut self, download: &Download) -> bool {
        let orphaned = download.readers() == 0;
        if orphaned && !self.counted {
            self.counted = true;
            return self.fetcher.orphans.fetch_add(1, Ordering::Relaxed) < MAX_ORPHANS;
        }
        if !orphaned && self.counted {
            self.counted = false;
            self.fetcher.orphans.fetch_sub(1, Ordering::Relaxed);
        }
        true
    }
}

impl Drop for OrphanGuard<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.fetcher.orphans.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The blocking side: append, hash, publish. Publishes whenever it has caught
/// up with the network or [`PUBLISH_STEP`] bytes have landed since the last time.
fn write_loop(
    mut writer: BlobWriter,
    mut rx: mpsc::Receiver<Bytes>,
    download: &Download,
) -> std::io::Result<BlobWriter> {
    let mut published = 0;
    let mut last_publish = Instant::now();
    let publish = |n: u64| download.publish(|p| p.published = n);
    loop {
        let chunk = match rx.try_recv() {
            Ok(c) => c,
            Err(mpsc::error::TryRecvError::Empty) => {
                if writer.written() > published {
                    // Caught up with the network: publish, but not more often than every PUBLISH_INTERVAL.
                    let since = last_publish.elapsed();
                    if since < PUBLISH_INTERVAL {
                        std::thread::sleep(PUBLISH_INTERVAL - since);
                        continue;
                    }
                    published = writer.written();
                    publish(published);
                    last_publish = Instant::now();
                }
                match rx.blocking_recv() {
                    Some(c) => c,
                    None => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        writer.write(&chunk)?;
        if writer.written() - published >= PUBLISH_STEP {
            published = writer.written();
            publish(published);
            last_publish = Instant::now();
        }
    }
    if writer.written() > published {
        publish(writer.written());
    }
    Ok(writer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
