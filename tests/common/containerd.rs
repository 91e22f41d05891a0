//! Real-client harness for integration tests: a private containerd 1.6 driven through `ctr`, and skopeo
//! (path-addressed mirror and `registries.conf` mirror), so tests can prove that real clients pull through
//! ociregistry. Every external command runs with a deadline and is killed when it passes it.
//!
//! Facts this relies on (containerd 1.6.20, skopeo 1.9.3, Debian 12):
//! - `ctr images pull` / `ctr content fetch` resolve and download in the `ctr` process itself, reading
//!   `--hosts-dir`; the daemon only stores content and unpacks. So the hosts dir is per call, not per daemon.
//! - containerd appends `?ns=<registry host>` (percent-encoded) to every request it sends to a mirror
//!   whose host differs from the registry's; it HEADs the tag, then GETs the manifest by digest.
//! - skopeo cannot parse a reference whose path holds a `host:port` (`MIRROR/127.0.0.1:5001/app` is an
//!   "invalid reference format"): path-addressed upstreams used with skopeo must be portless names.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a single `ctr` or `skopeo` command may run before it is killed.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long containerd may take to answer on its socket after start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);
/// overlayfs works on this machine's ext4 and is what `ctr` uses by default; passed explicitly so a
/// `CONTAINERD_SNAPSHOTTER` in the environment cannot change it.
const SNAPSHOTTER: &str = "overlayfs";
/// A port nothing listens on: the push-only `server` in hosts.toml and the dead primary in registries.conf.
const DEAD_ENDPOINT: &str = "127.0.0.1:9";

/// Flags shared by [`Containerd::pull`] and [`Containerd::content_fetch`].
#[derive(Clone, Debug)]
pub struct PullOpts {
    /// `--plain-http`: the default scheme for hosts without one. Mirrors written by [`write_hosts_dir`]
    /// carry their scheme, so this matters only for refs whose host has no hosts.toml.
    pub plain_http: bool,
    /// `--platform P`, e.g. `linux/arm64`.
    pub platform: Option<String>,
    /// `--all-metadata`: needed to pull a non-host platform into a fresh namespace.
    pub all_metadata: bool,
    /// `--all-platforms`: use it with `content_fetch`; ctr 1.6 `images pull --all-platforms` fails on
    /// attestation manifests (`application/vnd.in-toto+json`).
    pub all_platforms: bool,
    /// Kill `ctr` after this long.
    pub timeout: Duration,
}

impl Default for PullOpts {
    fn default() -> Self {
        PullOpts {
            plain_http: false,
            platform: None,
            all_metadata: false,
            all_platforms: false,
            timeout: CLIENT_TIMEOUT,
        }
    }
}

impl PullOpts {
    fn ctr_flags(&self, hosts_dir: &Path) -> Vec<String> {
        let mut flags = vec!["--hosts-dir".to_string(), hosts_dir.display().to_string()];
        if self.plain_http {
            flags.push("--plain-http".into());
        }
        if let Some(platform) = &self.platform {
            flags.extend(["--platform".into(), platform.clone()]);
        }
        if self.all_metadata {
            flags.push("--all-metadata".into());
        }
        if self.all_platforms {
            flags.push("--all-platforms".into());
        }
        flags
    }
}

/// A private containerd (own root, state, socket and config; CRI disabled) killed on drop.
pub struct Containerd {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    // Dropped after `child` is killed: holds root, state, socket and log.
    dir: tempfile::TempDir,
}

impl Containerd {
    /// Starts containerd and waits until `ctr version` answers on its socket; panics with its log if not.
    pub fn start() -> Containerd {
        // Under /tmp whatever TMPDIR says: the socket path must stay under the 108-byte sun_path limit.
        let dir = tempfile::Builder::new().prefix("ctrd-").tempdir_in("/tmp").expect("containerd temp dir");
        let config = write_config(dir.path());
        let log = dir.path().join("containerd.log");
        let log_file = fs::File::create(&log).expect("containerd log file");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log file"))
            .stderr(log_file)
            .spawn()
            .expect("spawn containerd");
        let mut containerd = Containerd { child, socket: dir.path().join("containerd.sock"), log, dir };
        containerd.wait_ready();
        containerd
    }

    /// The gRPC socket, for tests that call `ctr` themselves.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's log so far, to put in a failing assertion's message.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `ctr -n NS images pull --hosts-dir DIR [flags] REF`, which also unpacks into overlayfs.
    /// Ok(stdout) on exit 0, else Err(why + stderr).
    pub fn pull(&self, namespace: &str, reference: &str, hosts_dir: &Path, opts: &PullOpts) -> Result<String, String> {
        let mut args = vec!["images".to_string(), "pull".into(), "--snapshotter".into(), SNAPSHOTTER.into()];
        args.extend(opts.ctr_flags(hosts_dir));
        args.push(reference.into());
        self.ctr(namespace, &args, opts.timeout)
    }

    /// `ctr -n NS content fetch --hosts-dir DIR [flags] REF`: downloads and records the image without
    /// unpacking, and (unlike `images pull`) works with `all_platforms` on indexes that carry
    /// attestation manifests.
    pub fn content_fetch(
        &self,
        namespace: &str,
        reference: &str,
        hosts_dir: &Path,
        opts: &PullOpts,
    ) -> Result<String, String> {
        let mut args = vec!["content".to_string(), "fetch".into()];
        args.extend(opts.ctr_flags(hosts_dir));
        args.push(reference.into());
        self.ctr(namespace, &args, opts.timeout)
    }

    /// The digest of the manifest or index that image `reference` points to in `namespace`.
    pub fn image_digest(&self, namespace: &str, reference: &str) -> Result<String, String> {
        let listing = self.ctr(namespace, &["images", "ls"], CLIENT_TIMEOUT)?;
        // Columns: REF TYPE DIGEST SIZE PLATFORMS LABELS.
        listing
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.first() == Some(&reference))
            .and_then(|cols| cols.get(2).map(|digest| digest.to_string()))
            .ok_or_else(|| format!("no image {reference} in namespace {namespace}:\n{listing}"))
    }

    /// Digests of every blob (manifests, configs, layers) stored in `namespace`. With
    /// `content_sharing_policy = "isolated"` a blob fetched in another namespace does not show up here.
    pub fn list_content(&self, namespace: &str) -> Result<Vec<String>, String> {
        let listing = self.ctr(namespace, &["content", "ls", "-q"], CLIENT_TIMEOUT)?;
        Ok(listing.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
    }

    /// `ctr -n NS run --rm REF ID CMD...` on an image already pulled (and so unpacked); Ok(its stdout).
    /// A container still running at the deadline outlives this containerd: keep `cmd` short.
    pub fn run(&self, namespace: &str, reference: &str, container_id: &str, cmd: &[&str]) -> Result<String, String> {
        // runc's state dir and the cgroup default to /run/containerd/runc/NS/ID and /NS/ID, shared by every
        // containerd on the machine: make both private so parallel tests may reuse namespace and ID.
        let runc_root = self.dir.path().join("runc");
        let cgroup = format!("/{}-{container_id}", self.instance_name());
        let mut args = vec!["run", "--rm", "--snapshotter", SNAPSHOTTER, "--cgroup", &cgroup, "--runc-root"];
        args.extend([runc_root.to_str().expect("utf-8 temp dir"), reference, container_id]);
        args.extend_from_slice(cmd);
        self.ctr(namespace, &args, CLIENT_TIMEOUT)
    }

    /// `ctr --address SOCK -n NS ARGS...` with a deadline: the escape hatch for anything not wrapped above.
    pub fn ctr<S: AsRef<std::ffi::OsStr>>(
        &self,
        namespace: &str,
        args: &[S],
        timeout: Duration,
    ) -> Result<String, String> {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.socket).args(["--namespace", namespace]).args(args);
        run_bounded(&mut cmd, timeout)
    }

    /// The temp dir's unique name (`ctrd-XXXXXX`), to name machine-wide resources after this instance.
    fn instance_name(&self) -> String {
        self.dir.path().file_name().expect("temp dir name").to_string_lossy().into_owned()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("containerd exited ({status}) during start:\n{}", self.log());
            }
            if self.ctr("default", &["version"], Duration::from_secs(5)).is_ok() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "containerd did not answer on {} within {START_TIMEOUT:?}:\n{}",
                    self.socket.display(),
                    self.log()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // SIGKILL is enough: the bolt database and content store are thrown away with the temp dir.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the version-2 config for a containerd whose every path lives under `dir`; returns its path.
fn write_config(dir: &Path) -> PathBuf {
    let d = dir.display();
    // The `opt` plugin would otherwise install into the shared /opt/containerd. "isolated" content sharing
    // makes every namespace download its own blobs, so a fresh namespace proves the mirror served them.
    let toml = format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{d}/containerd.sock"

[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "isolated"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
    );
    let path = dir.join("config.toml");
    fs::write(&path, toml).expect("write containerd config");
    path
}

/// Writes `dir/<registry_host>/hosts.toml` sending pulls of `registry_host` (e.g. `127.0.0.1:5001` or
/// `docker.io`; the directory is named exactly so) only to `mirror` (e.g. `http://127.0.0.1:PORT`).
/// Returns `dir`, the value for `--hosts-dir`.
///
/// The `server` is a dead push-only endpoint: without it containerd falls back to the real registry when
/// the mirror fails, and a broken mirror would pass the test.
pub fn write_hosts_dir(dir: &Path, registry_host: &str, mirror: &str) -> PathBuf {
    let host_dir = dir.join(registry_host);
    fs::create_dir_all(&host_dir).expect("create hosts dir");
    let toml = format!(
        r#"server = "https://{DEAD_ENDPOINT}"
capabilities = ["push"]

[host."{mirror}"]
  capabilities = ["pull", "resolve"]
"#
    );
    fs::write(host_dir.join("hosts.toml"), toml).expect("write hosts.toml");
    dir.to_path_buf()
}

/// Like [`write_hosts_dir`] for an HTTPS `mirror`: containerd trusts `ca` for it and, when `client`
/// is given, presents that certificate and key (`client = [[cert, key]]`).
pub fn write_tls_hosts_dir(
    dir: &Path,
    registry_host: &str,
    mirror: &str,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> PathBuf {
    write_hosts_dir(dir, registry_host, mirror);
    let mut toml = fs::read_to_string(dir.join(registry_host).join("hosts.toml")).expect("read hosts.toml");
    toml += &format!("  ca = \"{}\"\n", ca.display());
    if let Some((cert, key)) = client {
        toml += &format!("  client = [[\"{}\", \"{}\"]]\n", cert.display(), key.display());
    }
    fs::write(dir.join(registry_host).join("hosts.toml"), toml).expect("write hosts.toml");
    dir.to_path_buf()
}

/// `skopeo copy docker://MIRROR/UPSTREAM_REF dir:DEST`: the upstream named in the path, as podman and
/// CRI-O address a mirror configured with a path. `upstream_in_path_ref` must not carry a port (see the
/// module docs), e.g. `quay.io/calico/node:v3.28.0`.
pub fn skopeo_copy_through(mirror_host_port: &str, upstream_in_path_ref: &str, dest_dir: &Path) -> Result<(), String> {
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{mirror_host_port}/{upstream_in_path_ref}"))
        .arg(format!("dir:{}", dest_dir.display()));
    run_bounded(&mut cmd, CLIENT_TIMEOUT).map(drop)
}

/// `skopeo inspect --raw docker://MIRROR/UPSTREAM_REF`: the manifest or index bytes as served.
pub fn skopeo_inspect_raw(mirror_host_port: &str, upstream_in_path_ref: &str) -> Result<String, String> {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{mirror_host_port}/{upstream_in_path_ref}"));
    run_bounded(&mut cmd, CLIENT_TIMEOUT)
}

/// `skopeo copy docker://REGISTRY/REPO:TAG dir:DEST` under a `registries.conf` whose only route for
/// `registry` (a portless name, e.g. `upstream.test`) is the insecure mirror `mirror_location` (e.g.
/// `127.0.0.1:PORT/upstream.test`); the registry's own location is dead, so nothing bypasses the mirror.
///
/// skopeo 1.9 ignores `CONTAINERS_REGISTRIES_CONF`, so the file is bind-mounted over
/// /etc/containers/registries.conf in a private mount namespace (root only).
pub fn skopeo_copy_via_registries_conf(
    registry: &str,
    mirror_location: &str,
    repo_tag: &str,
    dest_dir: &Path,
) -> Result<(), String> {
    let conf_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let conf = conf_dir.path().join("registries.conf");
    let toml = format!(
        r#"[[registry]]
prefix = "{registry}"
location = "{DEAD_ENDPOINT}"
insecure = true

[[registry.mirror]]
location = "{mirror_location}"
insecure = true
"#
    );
    fs::write(&conf, toml).map_err(|e| e.to_string())?;
    // `exec` keeps skopeo on unshare's PID, so the deadline's kill reaches it.
    let script = r#"mount --bind "$1" /etc/containers/registries.conf && exec skopeo copy "$2" "$3""#;
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&conf)
        .arg(format!("docker://{registry}/{repo_tag}"))
        .arg(format!("dir:{}", dest_dir.display()));
    run_bounded(&mut cmd, CLIENT_TIMEOUT).map(drop)
}

/// Runs `cmd` to completion or kills it at `timeout`. Ok(stdout) on exit 0, else Err(what happened +
/// stderr). Output goes to anonymous files rather than pipes so a chatty child cannot block on a full pipe.
fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<String, String> {
    let (mut out, mut err) = (tempfile::tempfile().expect("stdout file"), tempfile::tempfile().expect("stderr file"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone stdout file"))
        .stderr(err.try_clone().expect("clone stderr file"))
        .spawn()
        .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    let status = wait_deadline(&mut child, timeout);
    let (stdout, stderr) = (read_all(&mut out), read_all(&mut err));
    match status {
        Some(status) if status.success() => Ok(stdout),
        Some(status) => Err(format!("{cmd:?} failed ({status}):\n{stderr}")),
        None => Err(format!("{cmd:?} killed after {timeout:?}:\n{stderr}")),
    }
}

/// Waits for `child` until `timeout`; on expiry kills and reaps it and returns None.
fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            break;
        }
        sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn read_all(file: &mut fs::File) -> String {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).expect("rewind output file");
    let _ = file.read_to_string(&mut text);
    text
}
