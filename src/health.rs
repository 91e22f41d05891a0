//! Liveness and readiness, on their own plain-HTTP port (`--health PORT`, the
//! config key `health`, as the Go ociregistry), away from the serving threads.
//!
//! - `GET /health` (also `/healthz`, `/livez`): liveness. `200` with an empty
//!   body, as the Go version answers, as soon as the port is open, which is
//!   before the store is indexed: a long index or preload never gets the
//!   process restarted by a liveness probe.
//! - `GET /ready` (also `/readyz`): readiness. `200 ready` once the store is
//!   indexed, `--preload-images` is done and every serving thread accepts
//!   connections; `503` with the first unmet condition otherwise, and again
//!   from the moment a graceful stop begins (so a load balancer drains first).
//!
//! The Go version opens its health port only after preloading and its
//! listener, so its `/health` means both; ours splits them (see README).
//! [`Readiness`] is also what `systemd`'s `READY=1` waits for.

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::side_port;

/// What readiness waits for. Each step is set once by `server`; the serving
/// threads count themselves in as they start accepting.
#[derive(Debug)]
pub struct Readiness {
    indexed: AtomicBool,
    preloaded: AtomicBool,
    /// Serving threads that have started their accept loop, and how many there are.
    accepting: AtomicUsize,
    workers: AtomicUsize,
    stopping: AtomicBool,
}

impl Readiness {
    /// A server that has done nothing yet; `preload` says whether it has images to preload.
    pub fn new(preload: bool) -> Readiness {
        Readiness {
            indexed: AtomicBool::new(false),
            preloaded: AtomicBool::new(!preload),
            accepting: AtomicUsize::new(0),
            workers: AtomicUsize::new(usize::MAX),
            stopping: AtomicBool::new(false),
        }
    }

    pub fn store_indexed(&self) {
        self.indexed.store(true, Ordering::Release);
    }

    pub fn preload_done(&self) {
        self.preloaded.store(true, Ordering::Release);
    }

    /// How many serving threads are being started.
    pub fn expect_workers(&self, n: usize) {
        self.workers.store(n, Ordering::Release);
    }

    /// Called by each serving thread once it accepts connections.
    pub fn worker_accepting(&self) {
        self.accepting.fetch_add(1, Ordering::AcqRel);
    }

    pub fn listening(&self) -> bool {
        self.accepting.load(Ordering::Acquire) >= self.workers.load(Ordering::Acquire)
    }

    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// `Ok` when ready, or the first condition that is not met.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.stopping.load(Ordering::Acquire) {
            Err("shutting down")
        } else if !self.indexed.load(Ordering::Acquire) {
            Err("indexing the store")
        } else if !self.preloaded.load(Ordering::Acquire) {
            Err("preloading images")
        } else if !self.listening() {
            Err("starting the serving threads")
        } else {
            Ok(())
        }
    }
}

/// Probes answered at once; a connection past this is closed unanswered.
const MAX_PROBES: usize = 16;

/// Serves liveness and readiness on `listener` until the process ends: the
/// calling thread accepts, and each probe is answered on a short-lived thread
/// of its own, so a client that connects and sends nothing delays no other
/// probe (a kubelet gives a probe one second by default).
pub fn serve(listener: TcpListener, readiness: Arc<Readiness>) {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if open.fetch_add(1, Ordering::AcqRel) >= MAX_PROBES {
            open.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let (readiness, done) = (readiness.clone(), open.clone());
        let probe = move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
            if let Err(e) = answer(&mut stream, &readiness) {
                tracing::debug!(error = %e, "health probe failed");
            }
            done.fetch_sub(1, Ordering::AcqRel);
        };
        if std::thread::Builder::new().name("health-probe".into()).spawn(probe).is_err() {
            // The closure (and its count) went with the failed spawn.
            open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The probe's status line and body, from its method and path (query ignored).
fn respond(method: &[u8], path: &[u8], readiness: &Readiness) -> (&'static str, &'static str) {
    match (method, path) {
        (b"GET" | b"HEAD", b"/health" | b"/healthz" | b"/livez") => ("200 OK", ""),
        (b"GET" | b"HEAD", b"/ready" | b"/readyz") => match readiness.check() {
            Ok(()) => ("200 OK", "ready\n"),
            Err(why) => ("503 Service Unavailable", why),
        },
        (b"GET" | b"HEAD", _) => ("404 Not Found", "liveness at /health, readiness at /ready\n"),
        _ => ("405 Method Not Allowed", "GET or HEAD\n"),
    }
}

fn answer(stream: &mut std::net::TcpStream, readiness: &Readiness) -> io::Result<()> {
    let Some(request) = side_port::read_request(stream)? else { return Ok(()) };
    let (status, body) = respond(&request.method, &request.path, readiness);
    // A reason ends with a newline on the wire, whichever kind it is.
    let body = if body.is_empty() || body.ends_with('\n') { body.to_string() } else { format!("{body}\n") };
    side_port::answer(stream, &request, status, "text/plain; charset=utf-8", "Cache-Control: no-store\r\n", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_the_first_unmet_step() {
        let r = Readiness::new(true);
        assert_eq!(r.check(), Err("indexing the store"));
        r.store_indexed();
        assert_eq!(r.check(), Err("preloading images"));
        r.preload_done();
        assert_eq!(r.check(), Err("starting the serving threads"));
        r.expect_workers(2);
        r.worker_accepting();
        assert_eq!(r.check(), Err("starting the serving threads"));
        r.worker_accepting();
        assert_eq!(r.check(), Ok(()));
        r.stopping();
        assert_eq!(r.check(), Err("shutting down"));
    }

    #[test]
    fn liveness_answers_whatever_readiness_says() {
        let r = Readiness::new(false);
        assert_eq!(respond(b"GET", b"/health", &r), ("200 OK", ""));
        assert_eq!(respond(b"GET", b"/ready", &r).0, "503 Service Unavailable");
        assert_eq!(respond(b"POST", b"/health", &r).0, "405 Method Not Allowed");
        assert_eq!(respond(b"GET", b"/metrics", &r).0, "404 Not Found");
    }
}
