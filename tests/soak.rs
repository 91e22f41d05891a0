//! Soak: the real binary (`--io-driver auto`) under mixed warm and cold pulls
//! for `OCIREGISTRY_SOAK_SECS` seconds (default 60, what CI runs;
//! `bench-scripts/soak` runs 600), with 500 keep-alive client connections,
//! 200 slow ones (150 that drip a request head a byte every 2 s and must be
//! closed by `--header-timeout`, 50 that read their answers 32 bytes a second
//! and must be served), new images added upstream all along (so some pulls
//! are cold), and upstream faults (corrupt body, connection dropped mid-body,
//! 500) on a fifth of the images' large layers. It proves: no failed request
//! beyond those on the faulted blobs, no slow connection left hanging, the
//! server's RSS and open fds flat after warm-up (the largest sample of the
//! last third at most 1.25 times that of the second third, plus a small
//! constant), and records p50/p99 latency. With `OCIREGISTRY_SOAK_OUT` set,
//! the samples (CSV) and a summary (markdown) are written there.

mod common;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use common::fake_upstream::{sha256_digest, FakeUpstream, Fault, OCI_MANIFEST};
use common::{random_bytes, Server};

const CLIENT_THREADS: usize = 20;
/// Client threads that pull the newest (cold) images; the rest pull settled ones.
const COLD_PULLERS: usize = 2;
/// The newest images the other client threads leave alone (ten seconds' worth).
const SETTLE_IMAGES: usize = 10 * NEW_IMAGES_PER_SEC as usize;
const CONNS_PER_THREAD: usize = 25;
const DRIPPERS: usize = 150;
const SLOW_READERS: usize = 50;
const HEADER_TIMEOUT_SECS: u64 = 5;
const DRIP_EVERY: Duration = Duration::from_secs(2);
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
const WARM_IMAGES: usize = 40;
/// Images added upstream per second during the run (each cold until first pulled).
const NEW_IMAGES_PER_SEC: u64 = 1;
const SMALL_LAYER: usize = 8 * 1024;
const LARGE_LAYER: usize = 256 * 1024;
/// One request's bound, however the server behaves.
const REQUEST_LIMIT: Duration = Duration::from_secs(20);
/// Flatness: last third's peak ≤ FACTOR × second third's peak + slack.
const FLAT_FACTOR: f64 = 1.25;
const RSS_SLACK_KIB: u64 = 16 * 1024;
const FD_SLACK: u64 = 64;

struct Blob {
    digest: String,
    len: usize,
    /// The fault injected upstream on this blob, if any: errors on it are expected.
    fault: Option<&'static str>,
}

struct Image {
    repo: String,
    manifest_digest: String,
    blobs: Vec<Blob>,
}

/// Images the clients may ask for; grows while the soak runs.
#[derive(Default)]
struct Catalog {
    images: RwLock<Vec<Arc<Image>>>,
}

fn add_image(up: &FakeUpstream, n: usize) -> Image {
    let repo = format!("soak/img-{n}");
    let small = random_bytes(n as u64 * 2 + 1, SMALL_LAYER);
    let large = random_bytes(n as u64 * 2 + 2, LARGE_LAYER);
    let fake = up.add_image(&repo, "v1", &[small, large]);
    // A fifth of the images have a faulty large layer, the three kinds in turn.
    let fault = (n % 5 == 4).then(|| match (n / 5) % 3 {
        0 => ("corrupt body", Fault::CorruptBody),
        1 => ("dropped mid-body", Fault::DropAfter(LARGE_LAYER / 3)),
        _ => ("upstream 500", Fault::status(500)),
    });
    let large_digest = fake.layer_digests[1].clone();
    if let Some((_, f)) = &fault {
        up.set_fault(&large_digest[7..], f.clone(), None);
    }
    let config_len = 0; // checked by digest only
    Image {
        repo,
        manifest_digest: fake.manifest_digest,
        blobs: vec![
            Blob { digest: fake.config_digest, len: config_len, fault: None },
            Blob { digest: fake.layer_digests[0].clone(), len: SMALL_LAYER, fault: None },
            Blob { digest: large_digest, len: LARGE_LAYER, fault: fault.map(|(name, _)| name) },
        ],
    }
}

/// A keep-alive HTTP/1.1 client connection with its read buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "request took too long")
}

impl Conn {
    fn open(addr: &str) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: Vec::with_capacity(64 * 1024) })
    }

    fn fill(&mut self, started: Instant) -> io::Result<()> {
        if started.elapsed() > REQUEST_LIMIT {
            return Err(timed_out());
        }
        let mut tmp = [0u8; 64 * 1024];
        let n = self.stream.read(&mut tmp)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed mid-answer"));
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(())
    }

    fn take_line(&mut self, started: Instant) -> io::Result<String> {
        for _ in 0..10_000 {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 2);
                return Ok(line);
            }
            self.fill(started)?;
        }
        Err(timed_out())
    }

    fn take(&mut self, n: usize, started: Instant) -> io::Result<Vec<u8>> {
        for _ in 0..1_000_000 {
            if self.buf.len() >= n {
                return Ok(self.buf.drain(..n).collect());
            }
            self.fill(started)?;
        }
        Err(timed_out())
    }

    fn get(&mut self, path: &str) -> io::Result<Answer> {
        let started = Instant::now();
        let head = format!("GET {path} HTTP/1.1\r\nHost: soak\r\nAccept: {OCI_MANIFEST}\r\n\r\n");
        self.stream.write_all(head.as_bytes())?;
        let status_line = self.take_line(started)?;
        let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut headers = Vec::new();
        for _ in 0..200 {
            let line = self.take_line(started)?;
            if line.is_empty() {
                break;
            }
            if let Some((n, v)) = line.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let mut answer = Answer { status, headers, body: Vec::new() };
        if answer.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            for _ in 0..1_000_000 {
                let size_line = self.take_line(started)?;
                let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
                let chunk = self.take(size + 2, started)?;
                if size == 0 {
                    break;
                }
                answer.body.extend_from_slice(&chunk[..size]);
            }
        } else {
            let len = answer.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            answer.body = self.take(len, started)?;
        }
        Ok(answer)
    }
}

#[derive(Default)]
struct Tally {
    requests: u64,
    /// Answered from the cache (`X-Cache: HIT`), and everything else (a miss, or streamed while it downloads).
    hits: u64,
    misses: u64,
    injected_errors: u64,
    unexpected: Vec<String>,
    /// (ms since start, µs latency) of each successful request.
    latencies: Vec<(u32, u32)>,
}

/// A small xorshift generator: the test needs variety, not quality.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

fn client_thread(id: usize, addr: String, host: String, catalog: Arc<Catalog>, t0: Instant, end: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((id as u64 + 1) * 0x1234_5678_9ABC_DEF1));
    let mut conns: Vec<Option<Conn>> = (0..CONNS_PER_THREAD).map(|_| Conn::open(&addr).ok()).collect();
    let mut i = 0;
    // Bounded in count as well as by the clock.
    for _ in 0..50_000_000u64 {
        if Instant::now() >= end {
            break;
        }
        i = (i + 1) % conns.len();
        if conns[i].is_none() {
            match Conn::open(&addr) {
                Ok(c) => conns[i] = Some(c),
                Err(e) => {
                    tally.unexpected.push(format!("connect: {e}"));
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            }
        }
        let image = {
            let images = catalog.images.read().unwrap();
            // Cold pullers ask for the newest few images (cold, or still
            // downloading); the others for any image old enough to be settled,
            // so that one slow cold download (a resumed faulty layer takes
            // ~3 s) holds only the connections that asked for it, as with
            // real nodes, not every closed-loop client in turn.
            let k = if id < COLD_PULLERS {
                images.len() - 1 - rng.below(3.min(images.len()))
            } else {
                rng.below(images.len().saturating_sub(SETTLE_IMAGES).max(WARM_IMAGES).min(images.len()))
            };
            images[k].clone()
        };
        let blob = rng.below(4);
        let path = match image.blobs.get(blob) {
            Some(b) => format!("/v2/{host}/{}/blobs/{}", image.repo, b.digest),
            None => format!("/v2/{host}/{}/manifests/v1", image.repo),
        };
        let started = Instant::now();
        let conn = conns[i].as_mut().unwrap();
        let result = conn.get(&path);
        let micros = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
        tally.requests += 1;
        let verdict: Result<(), String> = match &result {
            Err(e) => Err(format!("{e}")),
            Ok(a) if a.status != 200 => Err(format!("status {}", a.status)),
            Ok(a) => match image.blobs.get(blob) {
                None if a.header("docker-content-digest") != Some(image.manifest_digest.as_str()) => {
                    Err(format!("manifest digest {:?}", a.header("docker-content-digest")))
                }
                Some(b) if (b.len != 0 && a.body.len() != b.len) => Err(format!("{} bytes", a.body.len())),
                Some(b) if sha256_digest(&a.body) != b.digest => Err("digest mismatch".into()),
                _ => Ok(()),
            },
        };
        let close = match &result {
            Ok(a) => a.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")),
            Err(_) => true,
        };
        if close {
            conns[i] = None;
        }
        match verdict {
            Ok(()) => {
                let a = result.as_ref().unwrap();
                match a.header("x-cache") {
                    Some("HIT") => tally.hits += 1,
                    _ => tally.misses += 1,
                }
                tally.latencies.push((t0.elapsed().as_millis() as u32, micros));
            }
            Err(_) if image.blobs.get(blob).is_some_and(|b| b.fault.is_some()) => tally.injected_errors += 1,
            Err(why) => {
                if tally.unexpected.len() < 20 {
                    tally.unexpected.push(format!("GET {path}: {why}"));
                } else {
                    tally.unexpected.push(String::new());
                }
            }
        }
    }
    tally
}

#[derive(Default)]
struct SlowTally {
    /// Drippers the server closed, and the longest a closed one lived after its first byte.
    closed_by_server: u64,
    longest_open: Duration,
    /// Drippers still open at the end that had outlived the header timeout by far.
    hanging: u64,
    /// Answers the slow readers finished.
    slow_answers: u64,
    slow_reader_errors: Vec<String>,
}

const DRIP_HEAD: &[u8] = b"GET /v2/ HTTP/1.1\r\nHost: soak\r\nUser-Agent: a-very-slow-client-that-never-ends\r\n\r\n";

/// 150 connections that send a request head a byte every 2 s, and 50 that ask
/// for a manifest and read 32 bytes a second.
fn slow_thread(addr: String, manifest_path: String, end: Instant) -> SlowTally {
    let mut t = SlowTally::default();
    let open_dripper = || -> Option<(TcpStream, Instant, usize)> {
        let s = TcpStream::connect(&addr).ok()?;
        s.set_nonblocking(true).ok()?;
        Some((s, Instant::now(), 0))
    };
    let mut drippers: Vec<Option<(TcpStream, Instant, usize)>> = (0..DRIPPERS).map(|_| open_dripper()).collect();
    let request = format!("GET {manifest_path} HTTP/1.1\r\nHost: soak\r\nAccept: {OCI_MANIFEST}\r\n\r\n");
    let open_reader = || -> Option<(TcpStream, Vec<u8>)> {
        let mut s = TcpStream::connect(&addr).ok()?;
        s.write_all(request.as_bytes()).ok()?;
        s.set_nonblocking(true).ok()?;
        Some((s, Vec::new()))
    };
    let mut readers: Vec<Option<(TcpStream, Vec<u8>)>> = (0..SLOW_READERS).map(|_| open_reader()).collect();
    let limit = Duration::from_secs(HEADER_TIMEOUT_SECS) + DRIP_EVERY * 2 + Duration::from_secs(3);
    let mut last_drip = Instant::now() - DRIP_EVERY;
    for _ in 0..100_000u64 {
        if Instant::now() >= end {
            break;
        }
        let drip = last_drip.elapsed() >= DRIP_EVERY;
        if drip {
            last_drip = Instant::now();
        }
        for slot in drippers.iter_mut() {
            let Some((s, first, sent)) = slot else {
                *slot = open_dripper();
                continue;
            };
            let mut buf = [0u8; 4096];
            let closed = match s.read(&mut buf) {
                Ok(0) => true,
                Ok(_) => false, // the 408 (or 400) before the close
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                Err(_) => true,
            };
            let closed = closed
                || (drip
                    && *sent < DRIP_HEAD.len()
                    && s.write(&DRIP_HEAD[*sent..*sent + 1]).map(|_| *sent += 1).is_err());
            if closed {
                t.closed_by_server += 1;
                t.longest_open = t.longest_open.max(first.elapsed());
                *slot = open_dripper();
            }
        }
        for slot in readers.iter_mut() {
            let Some((s, got)) = slot else {
                *slot = open_reader();
                continue;
            };
            let mut buf = [0u8; 32];
            match s.read(&mut buf) {
                Ok(0) => {
                    t.slow_reader_errors.push(format!("closed after {} bytes", got.len()));
                    *slot = open_reader();
                }
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(got);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                            })
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(usize::MAX);
                        if body.len() >= len {
                            if !head.starts_with("HTTP/1.1 200") {
                                t.slow_reader_errors.push(head.lines().next().unwrap_or("").to_string());
                            }
                            t.slow_answers += 1;
                            got.clear();
                            let _ = s.set_nonblocking(false);
                            let ok = s.write_all(request.as_bytes()).is_ok();
                            let _ = s.set_nonblocking(true);
                            if !ok {
                                *slot = open_reader();
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    t.slow_reader_errors.push(format!("{e}"));
                    *slot = open_reader();
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    t.hanging =
        drippers.iter().flatten().filter(|(_, first, sent)| *sent > 0 && first.elapsed() > limit).count() as u64;
    t
}

struct Sample {
    t: Duration,
    rss_kib: u64,
    fds: u64,
    /// Heap bytes the server holds (`ociregistry_heap_live_bytes`), in KiB.
    heap_kib: u64,
}

/// The server's live heap, from its metrics page (test builds count it).
fn heap_kib(metrics_url: &str) -> u64 {
    common::http_request("GET", metrics_url, &[])
        .ok()
        .and_then(|r| {
            r.text()
                .lines()
                .find_map(|l| l.strip_prefix("ociregistry_heap_live_bytes ").and_then(|v| v.parse::<u64>().ok()))
        })
        .map_or(0, |b| b / 1024)
}

fn sample(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn raise_fd_limit() {
    // SAFETY: plain getrlimit/setrlimit on this process.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[test]
fn soak_mixed_pulls_with_slow_clients_and_upstream_faults() {
    let secs: u64 = std::env::var("OCIREGISTRY_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60).max(15);
    let duration = Duration::from_secs(secs);
    raise_fd_limit();

    let up = FakeUpstream::start();
    let host = up.host();
    let catalog = Arc::new(Catalog::default());
    for n in 0..WARM_IMAGES {
        catalog.images.write().unwrap().push(Arc::new(add_image(&up, n)));
    }
    let mut config = format!("registries:\n  - name: \"{host}\"\n    scheme: http\n");
    // A smaller memory cache fills within the first minute, so the RSS curve shows whether memory levels off.
    let memory_cache = std::env::var("OCIREGISTRY_SOAK_MEMORY_CACHE").ok().and_then(|s| s.parse::<usize>().ok());
    if let Some(bytes) = memory_cache {
        config += &format!("memoryCacheBytes: {bytes}\n");
    }
    let header_timeout = HEADER_TIMEOUT_SECS.to_string();
    let metrics_port = common::free_port().to_string();
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let server = Server::start(
        &config,
        &["--io-driver", "auto", "--header-timeout", &header_timeout, "--metrics", &metrics_port],
    );
    let pid = server.pid();

    // Warm-up: every initial image pulled once.
    {
        let mut c = Conn::open(&server.addr).unwrap();
        for image in catalog.images.read().unwrap().iter() {
            let a = c.get(&format!("/v2/{host}/{}/manifests/v1", image.repo)).unwrap();
            assert_eq!(a.status, 200);
            for b in image.blobs.iter().filter(|b| b.fault.is_none()) {
                let a = c.get(&format!("/v2/{host}/{}/blobs/{}", image.repo, b.digest)).unwrap();
                assert_eq!(a.status, 200);
            }
        }
    }

    let t0 = Instant::now();
    let end = t0 + duration;
    let stop = Arc::new(AtomicBool::new(false));
    // New images keep arriving upstream (bounded by the clock and a count).
    let adder_stop = stop.clone();
    let adder_catalog = catalog.clone();
    let added_images = std::thread::scope(|scope| {
        let adder = scope.spawn(|| {
            let mut n = WARM_IMAGES;
            for _ in 0..(secs * NEW_IMAGES_PER_SEC + 1) {
                if adder_stop.load(Ordering::Relaxed) || Instant::now() >= end {
                    break;
                }
                let image = Arc::new(add_image(&up, n));
                adder_catalog.images.write().unwrap().push(image);
                n += 1;
                std::thread::sleep(Duration::from_millis(1000 / NEW_IMAGES_PER_SEC));
            }
            n - WARM_IMAGES
        });
        let clients: Vec<_> = (0..CLIENT_THREADS)
            .map(|id| {
                let (addr, host, catalog) = (server.addr.clone(), host.clone(), catalog.clone());
                scope.spawn(move || client_thread(id, addr, host, catalog, t0, end))
            })
            .collect();
        let slow = {
            let first = catalog.images.read().unwrap()[0].repo.clone();
            let (addr, path) = (server.addr.clone(), format!("/v2/{host}/{first}/manifests/v1"));
            scope.spawn(move || slow_thread(addr, path, end))
        };
        let mut samples = Vec::new();
        for _ in 0..(secs / SAMPLE_EVERY.as_secs() + 2) {
            if let Some((rss_kib, fds)) = sample(pid) {
                samples.push(Sample { t: t0.elapsed(), rss_kib, fds, heap_kib: heap_kib(&metrics_url) });
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(SAMPLE_EVERY.min(left));
        }
        stop.store(true, Ordering::Relaxed);
        let tallies: Vec<Tally> = clients.into_iter().map(|h| h.join().unwrap()).collect();
        let slow = slow.join().unwrap();
        (adder.join().unwrap(), tallies, slow, samples)
    });
    let (added, tallies, slow, samples) = added_images;
    let elapsed = t0.elapsed();

    // Aggregate.
    let requests: u64 = tallies.iter().map(|t| t.requests).sum();
    let hits: u64 = tallies.iter().map(|t| t.hits).sum();
    let misses: u64 = tallies.iter().map(|t| t.misses).sum();
    let injected: u64 = tallies.iter().map(|t| t.injected_errors).sum();
    let unexpected: Vec<&String> = tallies.iter().flat_map(|t| &t.unexpected).collect();
    let mut all: Vec<(u32, u32)> = tallies.iter().flat_map(|t| t.latencies.iter().copied()).collect();
    all.sort_by_key(|&(t, _)| t);
    let mut lat: Vec<u32> = all.iter().map(|&(_, l)| l).collect();
    lat.sort_unstable();
    let (p50, p99, p999) = (percentile(&lat, 0.50), percentile(&lat, 0.99), percentile(&lat, 0.999));

    // Per-sample-window latency, for the chart.
    let mut windows: HashMap<usize, Vec<u32>> = HashMap::new();
    for &(t, l) in &all {
        let w = samples.iter().position(|s| s.t.as_millis() as u32 >= t).unwrap_or(samples.len().saturating_sub(1));
        windows.entry(w).or_default().push(l);
    }
    let mut csv = String::from("t_s,rss_kib,heap_kib,fds,requests,p50_ms,p99_ms\n");
    for (i, s) in samples.iter().enumerate() {
        let mut w = windows.remove(&i).unwrap_or_default();
        w.sort_unstable();
        csv += &format!(
            "{:.1},{},{},{},{},{:.3},{:.3}\n",
            s.t.as_secs_f64(),
            s.rss_kib,
            s.heap_kib,
            s.fds,
            w.len(),
            percentile(&w, 0.5),
            percentile(&w, 0.99)
        );
    }

    let third = samples.len() / 3;
    let peak = |range: &[Sample], f: fn(&Sample) -> u64| range.iter().map(f).max().unwrap_or(0);
    let (mid, last) = (&samples[third..2 * third], &samples[2 * third..]);
    let (rss_mid, rss_last) = (peak(mid, |s| s.rss_kib), peak(last, |s| s.rss_kib));
    let (fds_mid, fds_last) = (peak(mid, |s| s.fds), peak(last, |s| s.fds));
    let (heap_mid, heap_last) = (peak(mid, |s| s.heap_kib), peak(last, |s| s.heap_kib));
    let heap_ok = heap_last as f64 <= heap_mid as f64 * FLAT_FACTOR + RSS_SLACK_KIB as f64;
    let rss_ok = rss_last as f64 <= rss_mid as f64 * FLAT_FACTOR + RSS_SLACK_KIB as f64;
    let fds_ok = fds_last as f64 <= fds_mid as f64 * FLAT_FACTOR + FD_SLACK as f64;
    let log = server.log();
    let error_lines: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();

    let summary = format!(
        "# Soak summary\n\n\
         - duration: {secs} s requested, {:.1} s measured; {} client connections ({} on {COLD_PULLERS} threads pulling the newest images), {DRIPPERS} drip-feeding and {SLOW_READERS} slow-reading connections; `--header-timeout {HEADER_TIMEOUT_SECS}`\n\
         - images: {WARM_IMAGES} warm at start, {added} added during the run; a fifth with a faulty {} KiB layer\n\
         - requests: {requests} ({:.0}/s), {hits} cache hits, {misses} misses or streamed downloads; {injected} failed on injected faults, {} unexpected failures\n\
         - latency of successful requests: p50 {p50:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms\n\
         - slow connections: {} drippers closed by the server (longest open {:.1} s after its first byte), {} left hanging; {} slow answers completed, {} slow-reader errors\n\
         - RSS peak KiB: second third {rss_mid}, last third {rss_last} (flat: {rss_ok}); live heap peak KiB: second third {heap_mid}, last third {heap_last} (flat: {heap_ok}); open fds peak: second third {fds_mid}, last third {fds_last} (flat: {fds_ok})\n\
         - memoryCacheBytes: {}\n\
         - ERROR lines in the server log: {}\n",
        elapsed.as_secs_f64(),
        CLIENT_THREADS * CONNS_PER_THREAD,
        COLD_PULLERS * CONNS_PER_THREAD,
        LARGE_LAYER / 1024,
        requests as f64 / elapsed.as_secs_f64(),
        unexpected.len(),
        slow.closed_by_server,
        slow.longest_open.as_secs_f64(),
        slow.hanging,
        slow.slow_answers,
        slow.slow_reader_errors.len(),
        memory_cache.map_or("default (32 MiB)".to_string(), |b| b.to_string()),
        error_lines.len(),
    );
    if let Ok(dir) = std::env::var("OCIREGISTRY_SOAK_OUT") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/samples.csv"), &csv).unwrap();
        std::fs::write(format!("{dir}/summary.md"), &summary).unwrap();
    }
    // To the process's standard error, which the harness does not capture.
    let _ = writeln!(io::stderr(), "{summary}");

    assert!(samples.len() >= 6, "too few samples: {}", samples.len());
    let shown: Vec<&&String> = unexpected.iter().filter(|s| !s.is_empty()).take(20).collect();
    assert!(unexpected.is_empty(), "unexpected failures:\n{shown:#?}\n{summary}");
    assert!(requests > 1000, "the clients made progress:\n{summary}");
    assert!(slow.closed_by_server > 0, "the header timeout closed drippers:\n{summary}");
    assert_eq!(slow.hanging, 0, "drippers left open past the header timeout:\n{summary}");
    let limit = Duration::from_secs(HEADER_TIMEOUT_SECS) + DRIP_EVERY * 2 + Duration::from_secs(3);
    assert!(slow.longest_open <= limit, "a dripper lived too long:\n{summary}");
    assert!(slow.slow_reader_errors.is_empty(), "slow readers: {:?}\n{summary}", slow.slow_reader_errors);
    assert!(rss_ok, "RSS grew:\n{csv}\n{summary}");
    assert!(heap_mid > 0, "the test build reports its live heap:\n{summary}");
    assert!(heap_ok, "the live heap grew:\n{csv}\n{summary}");
    assert!(fds_ok, "open fds grew:\n{csv}\n{summary}");
    assert!(error_lines.is_empty(), "ERROR lines:\n{}\n{summary}", error_lines.join("\n"));
    let r = server.get(&format!("/v2/{host}/soak/img-0/manifests/v1"), &[]);
    assert_eq!(r.status, 200, "still serving after the soak");
}
