//! The serving plane: one monoio runtime per thread, each with its own
//! `SO_REUSEPORT` listener on the same address, io_uring where allowed and
//! epoll otherwise. Workers share only `Arc<Shared>`; each owns its counters,
//! its file mappings, its kept answers and its shutdown signal (`Worker`). A
//! repeated request is answered from the kept answers with no lock and no
//! allocation; a first hit reads the store's index under its read locks.
//! Misses go to the fetcher through its `FetchHandle`.
//!
//! I/O follows monoio's ownership-passing style (a buffer goes into each
//! operation and comes back). Timeouts and shutdown drop pending operations,
//! which monoio allows: the driver keeps their buffers until the kernel is done.
//! On io_uring it also asks the kernel to cancel them (its `async-cancel`
//! feature): an operation left pending holds its socket open after we drop it.

mod body;
mod cmd;
pub mod conn;
pub mod error;
mod handler;
mod hot;
pub mod http;
mod ktls;
pub mod mapped;
mod pulls;
pub mod range;
pub mod request_id;
pub mod response;
pub mod route;
pub mod sendfile;
mod signal;
mod tags;
mod tls;
pub mod warm;
pub mod x_registry;

use std::cell::Cell;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::io::FromRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use monoio::net::TcpStream;
use tokio::sync::watch;
use tracing::Instrument;

use crate::config::{BlobSend, Settings, SHUTDOWN_GRACE};
use crate::fetch::FetchHandle;
use crate::metrics::{Block, Counter, Metrics, PerUpstream, UpstreamId};
use crate::store::Store;
use body::SendVia;
use conn::Conn;
use hot::HotResponses;
use http::{Method, ReadError};
use mapped::MappedFiles;
use request_id::RequestId;
use response::{CacheStatus, Kind, Response, Reuse};
use signal::LocalSignal;

/// Open connections on one serving thread above which it counts as crowded:
/// request heads that begin then get at most [`CROWDED_HEADER_TIMEOUT`], so
/// a flood of slow heads is shed sooner. Far above what the clients of a
/// registry cache (a node's runtime, a CI runner) open per core.
pub const CROWDED_CONNECTIONS: usize = 1024;
/// The longest a request head may take on a crowded serving thread.
pub const CROWDED_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What every serving thread shares.
pub struct Shared {
    pub settings: Arc<Settings>,
    pub store: Arc<Store>,
    pub fetch: FetchHandle,
    pub shutdown: watch::Receiver<bool>,
    /// The fetch runtime, whose blocking threads read cold file chunks in (see `warm`).
    pub blocking: tokio::runtime::Handle,
    /// Set at shutdown (before `shutdown` changes): read per request without a lock.
    pub stopping: AtomicBool,
    pub metrics: Arc<Metrics>,
    /// This thread's share of `maxConnections`.
    pub connections_per_thread: usize,
    /// The admin API (`/cmd/`).
    pub admin: Arc<crate::admin::Admin>,
    /// HTTPS: the certificates new connections' handshakes use (`serverTlsConfig`).
    pub tls: Option<Arc<crate::tls::ServerCertificates>>,
    /// Whether HTTPS connections are handed to the kernel's TLS after their handshake.
    pub kernel_tls: crate::tls::offload::Offload,
    /// Each serving thread counts itself in once it accepts connections.
    pub readiness: Arc<crate::health::Readiness>,
}

/// What one serving thread owns besides the shared state.
struct Worker {
    shared: Arc<Shared>,
    counters: Arc<Block>,
    mapped: MappedFiles,
    hot: HotResponses,
    /// Manifests this thread answered since its last tick, for their last-pulled times.
    pulls: pulls::Pulls,
    /// Fired by the accept loop at shutdown: wakes this thread's idle connections.
    stop: LocalSignal,
    /// Files this thread recently found wholly in the page cache.
    cached: warm::RecentlyCached,
    /// Connections this thread holds open: shutdown waits for them, and
    /// request heads get less time when there are many.
    connections: Cell<usize>,
    /// This thread's index, and the requests it has read: a request's generated id.
    index: usize,
    requests: Cell<u64>,
}

impl Worker {
    /// The id of the request just read: the client's when it sent a usable one.
    fn request_id<'r>(&self, req: &'r http::Request) -> RequestId<'r> {
        let n = self.requests.get() + 1;
        self.requests.set(n);
        match &req.request_id {
            Some(id) => RequestId::Client(id),
            None => RequestId::Generated { thread: self.index, n },
        }
    }

    /// How file bodies go to a client at `peer` reached at `local`.
    fn send_via(&self, peer: SocketAddr, local: Option<SocketAddr>) -> SendVia<'_> {
        let map = match self.shared.settings.blob_send {
            BlobSend::Sendfile => false,
            BlobSend::Mmap => true,
            BlobSend::Auto => same_host(peer, local),
        };
        SendVia {
            counters: &self.counters,
            mapped: map.then_some(&self.mapped),
            warmer: warm::Warmer { runtime: &self.shared.blocking, counters: &self.counters, recent: &self.cached },
        }
    }

    /// Answers one request: from this thread's kept answers when it has the
    /// same request's answer, else through the handler (keeping the answer
    /// when it may be reused). Returns the status, how it was served, and the
    /// body bytes sent.
    async fn answer(
        &self,
        stream: &mut Conn,
        req: &http::Request,
        framing: http::Framing,
        via: &SendVia<'_>,
    ) -> (u16, CacheStatus, io::Result<u64>) {
        let reusable = framing.keep_alive && HotResponses::eligible(req);
        // Read before any lookup, so an answer built from an older tag is never kept as current.
        let generation = self.shared.store.generation();
        if let Some(kept) = reusable.then(|| self.hot.get(req, generation, &self.pulls)).flatten() {
            self.count(&req.path, 200, Some(kept.kind), CacheStatus::Hit, kept.upstream, false);
            self.counters.inc(Counter::KeptAnswers);
            let sent = body::send_kept(stream, kept.response, kept.head_len, framing, via).await;
            return (200, CacheStatus::Hit, self.served(kept.upstream, sent));
        }
        let resp: Response = handler::handle(&self.shared, req).await;
        let (status, cache, reuse, upstream) = (resp.status, resp.cache, resp.reuse, resp.upstream);
        self.count(&req.path, status, resp.kind, cache, upstream, resp.joined);
        if let Some(digest) = &resp.pulled {
            self.pulls.note(digest);
        }
        if reusable && reuse != Reuse::No {
            if let Some((response, head_len)) = body::in_memory(&resp, framing) {
                let kind = resp.kind.unwrap_or(Kind::Blob);
                let pulled = resp.pulled.clone().map(|d| (d, self.pulls.now()));
                self.hot.insert(req, response.clone(), head_len, (kind, upstream), reuse, generation, pulled);
                let sent = body::send_kept(stream, response, head_len, framing, via).await;
                return (status, cache, self.served(upstream, sent));
            }
        }
        (status, cache, self.served(upstream, body::send(stream, resp, framing, via).await))
    }

    /// Counts the body bytes `sent` for `upstream`'s content.
    fn served(&self, upstream: Option<UpstreamId>, sent: io::Result<u64>) -> io::Result<u64> {
        if let (Some(up), Ok(n)) = (upstream, &sent) {
            self.counters.add_upstream(up, PerUpstream::BytesServed, *n);
        }
        sent
    }

    /// How long a request head beginning now may take.
    fn head_timeout(&self) -> Duration {
        head_timeout(self.shared.settings.header_timeout, self.connections.get())
    }

    /// Counts one answered request (for `upstream`'s content, when it carried
    /// some); `joined`: a manifest miss without an upstream request of its own.
    fn count(
        &self,
        path: &str,
        status: u16,
        kind: Option<Kind>,
        cache: CacheStatus,
        upstream: Option<UpstreamId>,
        joined: bool,
    ) {
        if path.starts_with("/v2") {
            self.counters.inc(Counter::ApiRequests);
            if status >= 400 {
                self.counters.inc(Counter::ApiErrors);
            }
        }
        let hit = cache == CacheStatus::Hit;
        let (total, per_upstream) = match kind {
            Some(Kind::Manifest) if hit => (Counter::ManifestHit, PerUpstream::ManifestHits),
            Some(Kind::Manifest) if joined => (Counter::ManifestMiss, PerUpstream::ManifestJoined),
            Some(Kind::Manifest) => (Counter::ManifestMiss, PerUpstream::ManifestMisses),
            Some(Kind::Blob) if hit => (Counter::BlobHit, PerUpstream::BlobHits),
            Some(Kind::Blob) => (Counter::BlobMiss, PerUpstream::BlobMisses),
            None => return,
        };
        self.counters.inc(total);
        if let Some(up) = upstream {
            self.counters.add_upstream(up, per_upstream, 1);
        }
    }
}

/// How long a request head may take: as configured, or at most
/// [`CROWDED_HEADER_TIMEOUT`] while more than [`CROWDED_CONNECTIONS`] are open.
fn head_timeout(configured: Duration, open: usize) -> Duration {
    if open > CROWDED_CONNECTIONS {
        configured.min(CROWDED_HEADER_TIMEOUT)
    } else {
        configured
    }
}

/// Whether a connection comes from this host: loopback, or from the very
/// address it reached us at.
fn same_host(peer: SocketAddr, local: Option<SocketAddr>) -> bool {
    let peer = peer.ip().to_canonical();
    peer.is_loopback() || local.is_some_and(|l| l.ip().to_canonical() == peer)
}

/// Which driver a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Uring,
    Epoll,
}

/// Binds `threads` listeners on one address with `SO_REUSEPORT`; with port 0
/// the first one picks the port and the others join it.
pub fn bind(host: &str, port: u16, threads: usize) -> io::Result<(Vec<TcpListener>, SocketAddr)> {
    let ip: std::net::IpAddr = host
        .trim_matches(|c| c == '[' || c == ']')
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("--host {host:?} is not an IP address")))?;
    let mut addr = SocketAddr::new(ip, port);
    let mut listeners = Vec::with_capacity(threads);
    for _ in 0..threads {
        let l = bind_reuseport(addr)?;
        addr = l.local_addr()?;
        listeners.push(l);
    }
    Ok((listeners, addr))
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = if addr.is_ipv6() { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain socket syscalls on an fd we own; the fd is wrapped before any early return.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let listener = TcpListener::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let zero: libc::c_int = 0;
        let set = |level, name, v: &libc::c_int| {
            libc::setsockopt(
                fd,
                level,
                name,
                v as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        set(libc::SOL_SOCKET, libc::SO_REUSEADDR, &one);
        set(libc::SOL_SOCKET, libc::SO_REUSEPORT, &one);
        if addr.is_ipv6() {
            // `::` serves IPv4 too.
            set(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &zero);
        }
        let (storage, len) = sockaddr(addr);
        if libc::bind(fd, &storage as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::listen(fd, 4096) != 0 {
            return Err(io::Error::last_os_error());
        }
        listener.set_nonblocking(true)?;
        Ok(listener)
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Runs one worker thread's runtime until shutdown has drained it.
pub fn run_worker(id: usize, driver: Driver, listener: TcpListener, shared: Arc<Shared>) -> io::Result<()> {
    match driver {
        Driver::Uring => {
            let (mut rt, flags) = uring_runtime()?;
            tracing::debug!(worker = id, driver = "io_uring", ring = flags, "worker started");
            rt.block_on(accept_loop(id, listener, shared))
        }
        Driver::Epoll => {
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build()?;
            tracing::debug!(worker = id, driver = "epoll", "worker started");
            rt.block_on(accept_loop(id, listener, shared))
        }
    }
}

/// This thread's io_uring runtime. Its ring is set up for a thread that owns it
/// alone: `SINGLE_ISSUER` (only this thread submits, kernel 6.0+) and
/// `COOP_TASKRUN` (5.19+: the kernel does not interrupt the thread to post
/// completions; they are posted on its next entry, which monoio makes on every
/// turn of its loop). Without the latter, every socket wake-up on a busy worker
/// cost an interrupt and a return to user mode (perf/NOTES.md, small requests).
/// A kernel that refuses them (before 6.0) gets a plain ring.
fn uring_runtime() -> io::Result<(monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>, &'static str)> {
    let build = |ring: io_uring::Builder| {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(1024)
            .uring_builder(ring)
            .enable_timer()
            .build()
    };
    let mut ring = io_uring::IoUring::builder();
    ring.setup_single_issuer().setup_coop_taskrun();
    match build(ring) {
        Ok(rt) => Ok((rt, "single-issuer,coop-taskrun")),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok((build(io_uring::IoUring::builder())?, "plain")),
        Err(e) => Err(e),
    }
}

/// Whether io_uring can be used by this process (kernel, sysctl and seccomp allowing).
pub fn uring_available() -> bool {
    monoio::utils::detect_uring()
}

async fn accept_loop(index: usize, listener: TcpListener, shared: Arc<Shared>) -> io::Result<()> {
    let listener = monoio::net::TcpListener::from_std(listener)?;
    shared.readiness.worker_accepting();
    let worker = Rc::new(Worker {
        counters: shared.metrics.block(),
        shared,
        mapped: MappedFiles::default(),
        hot: HotResponses::default(),
        pulls: pulls::Pulls::default(),
        stop: LocalSignal::default(),
        cached: warm::RecentlyCached::default(),
        connections: Cell::new(0),
        index,
        requests: Cell::new(0),
    });
    let sweeper = worker.clone();
    monoio::spawn(async move {
        let mut swept = Instant::now();
        loop {
            monoio::select! {
                _ = monoio::time::sleep(pulls::TICK) => {
                    sweeper.pulls.tick(&sweeper.shared.store);
                    let now = Instant::now();
                    if now.duration_since(swept) >= mapped::SWEEP_EVERY {
                        swept = now;
                        sweeper.mapped.sweep(now);
                        sweeper.cached.sweep(now);
                    }
                }
                _ = sweeper.stop.wait() => break,
            }
        }
    });
    let shared = &worker.shared;
    let mut shutdown = shared.shutdown.clone();
    let mut backoff = Duration::from_millis(5);
    loop {
        if *shutdown.borrow() {
            break;
        }
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => continue,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                if worker.connections.get() >= shared.connections_per_thread {
                    worker.counters.inc(Counter::ConnectionsRefused);
                    // A TLS client could not read a plain 503, and a handshake
                    // costs most when the thread is busiest: it is just closed.
                    if shared.tls.is_none() {
                        monoio::spawn(refuse(stream));
                    }
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let worker = worker.clone();
                worker.connections.set(worker.connections.get() + 1);
                monoio::spawn(async move {
                    let served = std::panic::AssertUnwindSafe(connection(stream, peer, &worker)).catch_unwind().await;
                    if served.is_err() {
                        tracing::error!(%peer, "a request handler panicked; closed that connection only");
                    }
                    worker.connections.set(worker.connections.get() - 1);
                });
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off instead of spinning on the listener.
                tracing::warn!(error = %e, wait_ms = backoff.as_millis() as u64, "accept failed");
                monoio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    drop(listener);
    worker.stop.fire();
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while worker.connections.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    if worker.connections.get() > 0 {
        tracing::warn!(connections = worker.connections.get(), "grace period over; closing connections still busy");
    }
    worker.pulls.tick(&worker.shared.store);
    Ok(())
}

/// How long a refused connection is given to take its 503.
const REFUSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Answers a connection past the cap with a canned 503 (`Retry-After: 1`) and
/// closes it: the client learns at once to retry, and the server holds nothing
/// for it beyond this short write.
async fn refuse(mut stream: TcpStream) {
    use monoio::io::AsyncWriteRentExt;
    const BODY: &str = r#"{"errors":[{"code":"UNAVAILABLE","message":"too many connections; retry shortly"}]}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nDocker-Distribution-Api-Version: registry/2.0\r\n\
         Content-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    if let Ok((Ok(_), _)) = monoio::time::timeout(REFUSE_WRITE_TIMEOUT, stream.write_all(answer.into_bytes())).await {
        // The client's request may be unread: drain it, or closing would reset the answer away.
        drain_and_close(Conn::Plain(stream)).await;
    }
}

/// Closes a connection whose request body (or, after a refused head, whose
/// following bytes) was never read without losing the response: closing with
/// unread data queued would send RST, and the client could lose the answer
/// (its writes fail, and many clients stop there). Shuts the write side, then
/// discards what arrives for a short while.
async fn drain_and_close(mut conn: Conn) {
    use monoio::io::AsyncReadRent;
    conn.shutdown().await;
    let mut stream = conn.into_tcp();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = vec![0u8; 16 * 1024];
    let mut drained = 0usize;
    while drained < 1024 * 1024 {
        let wait = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(wait, stream.read(buf)).await {
            Ok((Ok(n), b)) if n > 0 => {
                drained += n;
                buf = b;
            }
            _ => return,
        }
    }
}

async fn connection(tcp: TcpStream, peer: SocketAddr, worker: &Worker) {
    let shared = &*worker.shared;
    let via = worker.send_via(peer, tcp.local_addr().ok());
    let mut stream = match &shared.tls {
        None => Conn::Plain(tcp),
        Some(certs) => {
            // Bounded as a request head is: a stalled client cannot hold a slot.
            let handshake = tls::TlsConn::accept(tcp, certs.current(), worker.head_timeout());
            let done = monoio::select! {
                r = handshake => r,
                _ = worker.stop.wait() => return,
            };
            let conn = match done {
                Ok(conn) => conn,
                Err(e) => {
                    worker.counters.inc(Counter::TlsHandshakeFailures);
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            if shared.kernel_tls.on() {
                match conn.into_kernel(&shared.kernel_tls).await {
                    tls::Offloaded::Kernel(k) => {
                        worker.counters.inc(Counter::TlsKernelOffloads);
                        Conn::KernelTls(k)
                    }
                    tls::Offloaded::Declined(conn, why) => {
                        worker.counters.inc(Counter::TlsKernelDeclined);
                        tracing::debug!(%peer, reason = %why, "kernel TLS declined; rustls keeps this connection");
                        Conn::Tls(conn)
                    }
                    tls::Offloaded::Lost(e) => {
                        worker.counters.inc(Counter::TlsKernelFailures);
                        tracing::debug!(%peer, error = %e, "kernel TLS hand-over failed; connection closed");
                        return;
                    }
                }
            } else {
                Conn::Tls(Box::new(conn))
            }
        }
    };
    let mut reader = http::Reader::default();
    let mut req = http::Request::default();
    loop {
        let next = monoio::select! {
            r = reader.next(&mut stream, shared.settings.idle_timeout, || worker.head_timeout(), &mut req) => r,
            _ = worker.stop.wait() => return,
        };
        match next {
            Ok(()) => {}
            Err(ReadError::Closed) => return,
            Err(ReadError::Bad(status, why)) => {
                tracing::debug!(%peer, status, reason = why, "refused a request head");
                let e = error::ApiError::new(status, crate::oci::OciCode::Unsupported, why);
                let close = http::Framing { head_only: false, keep_alive: false, http10: false };
                if body::send(&mut stream, e.into(), close, &via).await.is_ok() {
                    // What follows the head (a body, a smuggled request) stays unread.
                    drain_and_close(stream).await;
                }
                return;
            }
        }
        // The access log's duration; no clock read when that log is off.
        let started = tracing::enabled!(target: "access", tracing::Level::INFO).then(Instant::now);
        let keep_alive =
            req.keep_alive && !req.has_body && !stream.worn_out() && !shared.stopping.load(Ordering::Relaxed);
        let framing = http::Framing { head_only: req.method == Method::Head, keep_alive, http10: req.http10 };
        // Lines logged while answering carry the request's id. The span goes with the access log
        // (its target): with `access=off`, as the benchmarks run, nothing is built per request.
        let span = tracing::info_span!(target: "access", "request", id = %worker.request_id(&req));
        let answered = async {
            let (status, cache, sent) = if crate::admin::is_admin_path(&req.path) {
                cmd::answer(shared, &mut stream, &mut reader, &req, peer, framing, &via).await
            } else {
                worker.answer(&mut stream, &req, framing, &via).await
            };
            tracing::info!(
                target: "access",
                %peer,
                method = req.method.as_str(),
                path = %req.path,
                status,
                bytes = sent.as_ref().copied().unwrap_or(0),
                ms = started.map_or(0.0, |t| t.elapsed().as_secs_f64() * 1000.0),
                cache = cache.as_str(),
                error = sent.as_ref().err().map(|e| e.to_string()),
            );
            sent
        };
        let sent = answered.instrument(span).await;
        if req.has_body && sent.is_ok() {
            drain_and_close(stream).await;
            return;
        }
        if sent.is_err() || !keep_alive {
            return;
        }
        if stream.worn_out() {
            // Kernel TLS keys that crossed their limit with this answer: closed now.
            stream.shutdown().await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_get_less_time_on_a_crowded_thread() {
        let configured = Duration::from_secs(60);
        assert_eq!(head_timeout(configured, 0), configured);
        assert_eq!(head_timeout(configured, CROWDED_CONNECTIONS), configured);
        assert_eq!(head_timeout(configured, CROWDED_CONNECTIONS + 1), CROWDED_HEADER_TIMEOUT);
        // A configured time already shorter stays.
        assert_eq!(head_timeout(Duration::from_secs(2), CROWDED_CONNECTIONS + 1), Duration::from_secs(2));
    }
}
