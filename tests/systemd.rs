//! Running under systemd: the `Type=notify` handshake against a `NOTIFY_SOCKET` the test binds
//! (`STATUS=` lines while starting, `READY=1` only once preloading is done and the server
//! answers, `STOPPING=1` on SIGTERM), and `deploy/systemd/ociregistry.service` passing
//! `systemd-analyze verify` with no complaint about it. Both that unit and the `Containerfile`
//! run the server as an unprivileged user who owns the image path and nothing else: it starts,
//! writes its cache and stops cleanly so. Under a seccomp filter that refuses io_uring with EPERM
//! (the unit's `SystemCallErrorNumber=EPERM` with a filter lacking it; Docker's and containerd's
//! default profiles) `--io-driver auto` serves with epoll and says so, and `uring` refuses to start.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::fake_upstream::{FakeUpstream, Fault, Gate};
use common::{plain_registry, random_bytes, wait_until, Server};

/// The next notification within `limit`, or `None`.
fn next_message(socket: &UnixDatagram, limit: Duration) -> Option<String> {
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Notifications until one contains `wanted` (returned with all before it), within `limit`.
fn messages_until(socket: &UnixDatagram, wanted: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    for _ in 0..1000 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Some(message) = next_message(socket, left) else { break };
        let done = message.lines().any(|l| l == wanted);
        seen.push(message);
        if done {
            return seen;
        }
    }
    panic!("no {wanted} within {limit:?}; received {seen:?}");
}

#[test]
fn ready_is_sent_once_preloaded_and_listening_and_stopping_on_sigterm() {
    let up = FakeUpstream::start();
    let image = up.add_image("notify/app", "v1", &[random_bytes(3, 32 * 1024)]);
    let gate = Gate::new();
    up.set_fault(&image.layer_digests[0], Fault::Gate(gate.clone()), None);
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("preload.txt");
    std::fs::write(&list, format!("{}/notify/app:v1\n", up.host())).unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();

    let env = [("NOTIFY_SOCKET", socket_path.to_str().unwrap())];
    let mut server = Server::spawn(&plain_registry(&up.host()), &["--preload-images", list.to_str().unwrap()], &env);
    let starting = messages_until(&socket, "STATUS=preloading images", Duration::from_secs(20));
    assert!(starting.iter().any(|m| m == "STATUS=indexing the store"), "{starting:?}");
    assert!(!starting.iter().any(|m| m.lines().any(|l| l == "READY=1")), "ready before preloading: {starting:?}");
    assert!(wait_until(Duration::from_secs(20), || gate.held() > 0), "preloading never reached the layer");
    // Held in preloading: nothing more, READY=1 least of all.
    assert_eq!(next_message(&socket, Duration::from_millis(500)), None, "{}", server.log());

    gate.open();
    let ready = messages_until(&socket, "READY=1", Duration::from_secs(20));
    // At READY=1 the server answers at once, at the address it published.
    let admin: serde_json::Value =
        serde_json::from_slice(&std::fs::read(server.image_path.join(".admin")).unwrap()).unwrap();
    let url = admin["url"].as_str().unwrap();
    let answer = common::http_get(&format!("{url}/v2/"), &[]);
    assert_eq!(answer.status, 200);
    assert!(ready.last().unwrap().contains("STATUS=serving on 127.0.0.1:"), "{ready:?}");
    server.wait_started();
    let layer = server.get(&format!("/v2/{}/notify/app/blobs/{}", up.host(), image.layer_digests[0]), &[]);
    assert_eq!(layer.status, 200, "the preloaded layer is not served");

    server.terminate();
    let stopping = messages_until(&socket, "STOPPING=1", Duration::from_secs(10));
    assert!(stopping.last().unwrap().contains("STATUS=stopping"), "{stopping:?}");
    assert!(server.wait_stopped().success(), "{}", server.log());
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/systemd/ociregistry.service"))
        .expect("deploy/systemd/ociregistry.service");
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    if !analyze.is_ok_and(|o| o.status.success()) {
        common::skipped("the_unit_file_passes_systemd_analyze_verify", "systemd-analyze is not installed");
        return;
    }
    // verify wants ExecStart's binary to exist: point a copy of the unit at the one just built.
    assert!(unit.contains("ExecStart=/usr/local/bin/ociregistry "), "the unit's ExecStart moved");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ociregistry.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/ociregistry", env!("CARGO_BIN_EXE_ociregistry"))).unwrap();
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&copy).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on unknown keys and bad values, and only says so: none may name the unit.
    let complaints: Vec<&str> = stderr.lines().filter(|l| l.contains("ociregistry.service")).collect();
    assert!(out.status.success() && complaints.is_empty(), "systemd-analyze verify:\n{stderr}");
    let keys = [
        "Type=notify",
        "DynamicUser=yes",
        "StateDirectory=ociregistry",
        "ProtectSystem=strict",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ];
    for key in keys {
        assert!(unit.lines().any(|l| l == key), "the unit lacks {key}");
    }
    assert!(unit.contains("--image-path /var/lib/ociregistry "), "the image path is not the state directory");
}

/// The uid and gid of the container image's user (distroless `nonroot`).
const NONROOT: u32 = 65532;

#[test]
fn the_server_runs_as_an_unprivileged_user_owning_only_the_image_path() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        common::skipped(
            "the_server_runs_as_an_unprivileged_user_owning_only_the_image_path",
            "needs root to switch user",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    std::os::unix::fs::chown(&images, Some(NONROOT), Some(NONROOT)).unwrap();
    let log_path = dir.path().join("server.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ociregistry"))
        .arg("--image-path")
        .arg(&images)
        .args(["serve", "--host", "127.0.0.1", "--port", "0", "--hello-world", "--air-gapped"])
        .uid(NONROOT)
        .gid(NONROOT)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let addr = || {
        log()
            .lines()
            .find_map(|l| l.split(" listening addr=").nth(1).map(|a| a.split_whitespace().next().unwrap().to_string()))
    };
    let started = wait_until(Duration::from_secs(30), || addr().is_some() || child.try_wait().unwrap().is_some());
    let Some(addr) = addr().filter(|_| started) else {
        let _ = child.kill();
        panic!("did not start as uid {NONROOT}:\n{}", log());
    };
    let manifest = common::http_get(
        &format!("http://{addr}/v2/docker.io/library/hello-world/manifests/latest"),
        &[("Accept", "application/vnd.oci.image.index.v1+json")],
    );
    assert_eq!(manifest.status, 200, "{}", log());
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let exited = wait_until(Duration::from_secs(20), || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    assert!(exited && child.wait().unwrap().success(), "{}", log());
    let records = images.join("index/records.jsonl");
    assert_eq!(std::fs::metadata(&records).unwrap().uid(), NONROOT, "the cache was not written by the user");
}

/// Makes the child refuse `io_uring_setup` with EPERM, as a seccomp profile without io_uring does.
fn refuse_io_uring(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let code = |c: u32| c as u16;
    let filter = [
        // Load the syscall number; io_uring_setup -> EPERM; everything else allowed.
        libc::sock_filter { code: code(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS), jt: 0, jf: 0, k: 0 },
        libc::sock_filter {
            code: code(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K),
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        libc::sock_filter {
            code: code(libc::BPF_RET | libc::BPF_K),
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter { code: code(libc::BPF_RET | libc::BPF_K), jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW },
    ];
    // SAFETY: between fork and exec only prctl runs, on a filter that outlives the call.
    unsafe {
        command.pre_exec(move || {
            let program = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut _ };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program as *const libc::sock_fprog)
                    != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn a_seccomp_filter_refusing_io_uring_means_epoll_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let serve = |driver: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ociregistry"));
        command
            .arg("--image-path")
            .arg(dir.path().join("images"))
            .args(["serve", "--host", "127.0.0.1", "--port", "0", "--air-gapped", "--io-driver", driver])
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap());
        refuse_io_uring(&mut command);
        command.spawn().unwrap()
    };
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let mut child = serve("uring");
    let exited = wait_until(Duration::from_secs(20), || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    assert!(exited && !child.wait().unwrap().success(), "--io-driver uring started without io_uring:\n{}", log());
    assert!(log().contains("io_uring is not available"), "{}", log());

    let mut child = serve("auto");
    let listening = || log().lines().find(|l| l.contains(" listening addr=")).map(str::to_string);
    let started = wait_until(Duration::from_secs(30), || listening().is_some() || child.try_wait().unwrap().is_some());
    let Some(line) = listening().filter(|_| started) else {
        let _ = child.kill();
        panic!("did not start without io_uring:\n{}", log());
    };
    let addr = line.split(" listening addr=").nth(1).unwrap().split_whitespace().next().unwrap();
    assert!(line.contains("driver=\"epoll\""), "{line}");
    assert!(log().contains("serving with the epoll driver"), "no warning:\n{}", log());
    assert_eq!(common::http_get(&format!("http://{addr}/v2/"), &[]).status, 200);
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let exited = wait_until(Duration::from_secs(20), || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    assert!(exited && child.wait().unwrap().success(), "{}", log());
}
