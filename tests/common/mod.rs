//! Test support shared by the integration and e2e tests: the real
//! `ociregistry` binary started on a free loopback port with its own image
//! path, plus fake and real upstreams and real clients (see the submodules).
#![allow(dead_code)]

pub mod certs;
pub mod containerd;
pub mod distribution;
pub mod fake_ecr;
pub mod fake_upstream;
pub mod https;
pub mod images;
pub mod token_server;
pub mod vm;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use fake_upstream::{http_get, http_request, HttpResponse};

/// A running `ociregistry serve`, stopped (SIGKILL) on drop.
pub struct Server {
    child: Option<Child>,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub image_path: PathBuf,
    /// The config file it was started with (tests may rewrite it and send SIGHUP).
    pub config: PathBuf,
    log: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts the server with a fresh image path, the given YAML config, and extra `serve` flags.
    pub fn start(config_yaml: &str, serve_args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let image_path = dir.path().join("images");
        let mut s = Server::start_in(&image_path, config_yaml, serve_args);
        s._dir = Some(dir);
        s
    }

    /// Starts the server on an existing image path (restarts keep their cache).
    pub fn start_in(image_path: &Path, config_yaml: &str, serve_args: &[&str]) -> Server {
        Server::launch(image_path, config_yaml, serve_args, &[])
    }

    /// Like [`Server::start`], with extra environment variables for the server process.
    pub fn start_with_env(config_yaml: &str, serve_args: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Server::launch(&dir.path().join("images"), config_yaml, serve_args, env);
        s._dir = Some(dir);
        s
    }

    /// Starts the server like [`Server::start_with_env`] and returns at once, before it listens
    /// (`addr` is empty until [`Server::wait_started`]), so a test can watch its start-up.
    pub fn spawn(config_yaml: &str, serve_args: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Server::spawn_in(&dir.path().join("images"), config_yaml, serve_args, env);
        s._dir = Some(dir);
        s
    }

    /// Waits (at most 30 s) for a server from [`Server::spawn`] to log that it listens; sets `addr`.
    pub fn wait_started(&mut self) {
        self.addr = self.wait_listening();
    }

    fn launch(image_path: &Path, config_yaml: &str, serve_args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut server = Server::spawn_in(image_path, config_yaml, serve_args, env);
        server.addr = server.wait_listening();
        server
    }

    /// Starts the server without the `--host 127.0.0.1` the other starts add (unless given), so it
    /// listens where the binary does by default: for the tests of that default.
    pub fn start_on_default_host(config_yaml: &str, serve_args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Server::spawn_with(&dir.path().join("images"), config_yaml, serve_args, &[], false);
        s._dir = Some(dir);
        s.addr = s.wait_listening();
        s
    }

    fn spawn_in(image_path: &Path, config_yaml: &str, serve_args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::spawn_with(image_path, config_yaml, serve_args, env, true)
    }

    fn spawn_with(
        image_path: &Path,
        config_yaml: &str,
        serve_args: &[&str],
        env: &[(&str, &str)],
        loopback: bool,
    ) -> Server {
        let work = image_path.parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&work).unwrap();
        let config = work.join(format!("config-{}.yaml", unique()));
        std::fs::write(&config, config_yaml).unwrap();
        let log = work.join(format!("server-{}.log", unique()));
        let child = Command::new(env!("CARGO_BIN_EXE_ociregistry"))
            .arg("--image-path")
            .arg(image_path)
            .arg("--config-file")
            .arg(&config)
            .args(["--log-level", "debug", "serve", "--port", "0"])
            .args(if !loopback || serve_args.contains(&"--host") { &[][..] } else { &["--host", "127.0.0.1"][..] })
            .args(serve_args)
            .env_remove("RUST_LOG")
            .env("NO_PROXY", "*")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start ociregistry");
        Server {
            child: Some(child),
            addr: String::new(),
            image_path: image_path.to_path_buf(),
            config,
            log,
            _dir: None,
        }
    }

    fn wait_listening(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let log = self.log();
            if let Some(addr) = log.lines().find_map(listening_addr) {
                return addr;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ociregistry exited with {status} before listening:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ociregistry did not start listening within 30 s:\n{}", self.log());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_get(&self.url(path), headers)
    }

    pub fn head(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_request("HEAD", &self.url(path), headers).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits (at most 20 s) for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.terminate();
        self.wait_stopped()
    }

    /// Kills the process with SIGKILL (a crash: nothing runs at exit) and reaps it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends SIGTERM and returns at once, so a test can watch the shutdown; see [`Server::wait_stopped`].
    pub fn terminate(&self) {
        // SAFETY: signalling the child we started.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) and returns at once.
    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling the child we started.
        unsafe { libc::kill(self.pid() as i32, signal) };
    }

    /// Whether the process is still running (false once it has exited, or after `stop`).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| child.try_wait().unwrap().is_none())
    }

    /// Waits (at most 20 s) for the exit that [`Server::terminate`] started.
    pub fn wait_stopped(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ociregistry did not stop within 20 s of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The names of the files in the image path's `tmp/` (downloads in progress) right now.
    pub fn temp_files(&self) -> Vec<String> {
        let entries = std::fs::read_dir(self.image_path.join("tmp")).unwrap();
        entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The address of a "listening" log line, text (`… listening addr=…`) or JSON (`--log-format json`).
fn listening_addr(line: &str) -> Option<String> {
    if line.starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(line).ok()?;
        return (json["message"] == "listening").then(|| json["addr"].as_str().map(str::to_string)).flatten();
    }
    let rest = line.split(" listening ").nth(1)?;
    Some(rest.split("addr=").nth(1)?.split_whitespace().next()?.to_string())
}

/// Config for a plain-HTTP upstream on loopback. Prefetch is off so that
/// upstream request counts depend only on what the test asks for.
pub fn plain_registry(host: &str) -> String {
    format!("prefetch: false\nregistries:\n  - name: \"{host}\"\n    scheme: http\n")
}

pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) * 1_000_000 + std::process::id() as u64
}

/// Deterministic incompressible bytes.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs `f` on `n` threads at once and collects the results in order.
pub fn concurrently<T: Send + 'static>(n: usize, f: impl Fn(usize) -> T + Send + Sync + 'static) -> Vec<T> {
    let f = std::sync::Arc::new(f);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (f, barrier) = (f.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                f(i)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Polls `done` every 10 ms until it holds or `limit` has passed; returns whether it held.
/// Bounded in rounds as well as in time, whatever the clock does.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    for _ in 0..=limit.as_millis() / 10 {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

/// Tells whoever reads the test output that `test` checked nothing here, and why; the test then
/// returns and passes. Written to the process's standard error itself rather than with
/// `eprintln!`, which the test harness captures and shows only for failing tests.
pub fn skipped(test: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
}

/// A loopback port that was free a moment ago (for a second listener of the server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The value of one series (`name` with its labels, as exposed) in a Prometheus text page.
pub fn metric(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} is not in the metrics page:\n{page}"))
        .trim()
        .parse()
        .unwrap()
}

/// The image path's lock held by this test process, with a `.admin` naming this
/// process and a loopback port nothing listens on: a server whose admin API does
/// not answer. Released when dropped.
pub struct DeafServer {
    _lock: std::fs::File,
}

impl DeafServer {
    pub fn hold(image_path: &Path) -> DeafServer {
        use std::io::Write;
        use std::os::unix::io::AsRawFd;
        std::fs::create_dir_all(image_path).unwrap();
        let mut lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(image_path.join(".lock"))
            .unwrap();
        // SAFETY: flock on a valid, owned fd.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0, "lock taken");
        write!(lock, "{}", std::process::id()).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let admin = format!(r#"{{"url":"http://127.0.0.1:{port}","pid":{}}}"#, std::process::id());
        std::fs::write(image_path.join(".admin"), admin).unwrap();
        DeafServer { _lock: lock }
    }
}

/// Splits a stream of pipelined responses; `heads` marks the answers to HEAD requests (no body).
pub fn split_responses(mut all: &[u8], heads: &[bool]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for &head_only in heads {
        let end = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head") + 4;
        let head = String::from_utf8_lossy(&all[..end]).into_owned();
        let len: usize =
            head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).map_or(0, |v| v.trim().parse().unwrap());
        let body_len = if head_only { 0 } else { len };
        out.push((head, all[end..end + body_len].to_vec()));
        all = &all[end + body_len..];
    }
    assert!(all.is_empty(), "{} bytes after the last response", all.len());
    out
}
