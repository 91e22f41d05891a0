//! The container image's run stage, without a container engine (none runs where the tests do):
//! a root filesystem holding what `gcr.io/distroless/cc-debian12:nonroot` gives the binary on
//! this Debian bookworm machine (the loader, glibc, libgcc and the libraries `ldd` names, the CA
//! bundle, `/etc/passwd` and `/etc/group` with `nonroot` 65532) and what the Containerfile copies
//! in (the binary at `/usr/local/bin/ociregistry`, `/var/lib/ociregistry` owned by 65532). The
//! server is started in it with `chroot` as 65532:65532, in a network namespace of its own (so the
//! Containerfile's fixed ports cannot clash), with the Containerfile's `ENTRYPOINT` and `CMD` as
//! written; then its ports, a `list` through the same entrypoint, and a graceful `SIGTERM` stop
//! (the Containerfile's `STOPSIGNAL`) are checked. Needs root (chroot, unshare), as the suite does.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A JSON-array instruction (`ENTRYPOINT [...]`, `CMD [...]`) of the Containerfile's last stage.
fn instruction(containerfile: &str, name: &str) -> Vec<String> {
    let last_stage = containerfile.rsplit("\nFROM ").next().unwrap();
    let line = last_stage
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in the Containerfile's last stage"));
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{name} {line}: not a JSON array: {e}"))
}

/// The shared libraries `ldd` names for `binary`, and the loader.
fn libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().expect("ldd runs");
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/'))).map(PathBuf::from).collect()
}

/// Copies `from` to the same path under `root`.
fn copy_in(root: &Path, from: &Path) {
    let to = root.join(from.strip_prefix("/").unwrap());
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(std::fs::canonicalize(from).unwrap(), &to).unwrap();
}

#[test]
fn the_images_run_stage_serves_as_nonroot_with_the_containerfiles_entrypoint_and_cmd() {
    let containerfile = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Containerfile")).unwrap();
    let entrypoint = instruction(&containerfile, "ENTRYPOINT");
    let cmd = instruction(&containerfile, "CMD");
    assert!(containerfile.contains("USER 65532:65532"), "the image runs as nonroot");
    assert_eq!(entrypoint[0], "/usr/local/bin/ociregistry");
    let port = cmd.iter().skip_while(|a| *a != "--port").nth(1).expect("CMD gives --port").clone();
    let health = cmd.iter().skip_while(|a| *a != "--health").nth(1).expect("CMD gives --health").clone();

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    let binary = Path::new(env!("CARGO_BIN_EXE_ociregistry"));
    for lib in libraries(binary) {
        copy_in(&root, &lib);
    }
    copy_in(&root, Path::new("/etc/ssl/certs/ca-certificates.crt"));
    let bin = root.join("usr/local/bin/ociregistry");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(binary, &bin).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnonroot:x:65532:\n").unwrap();
    let volume = root.join("var/lib/ociregistry");
    std::fs::create_dir_all(&volume).unwrap();
    std::os::unix::fs::chown(&volume, Some(65532), Some(65532)).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    // The temp dir is 0700 root: the server, as 65532, must be able to reach its root.
    for d in [dir.path(), root.as_path()] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }

    let quote = |args: &[String]| args.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(" ");
    let run = format!("chroot --userspec=65532:65532 '{}' {}", root.display(), quote(&entrypoint));
    let script = format!(
        r#"set -u
ip link set lo up
{run} {cmd} > '{log}' 2>&1 &
server=$!
up=no
for i in $(seq 1 100); do
  if curl -fsS -o /dev/null http://127.0.0.1:{health}/ready; then up=yes; break; fi
  sleep 0.1
done
echo "ready: $up"
echo "v2: $(curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{port}/v2/)"
echo "health: $(curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{health}/health)"
echo "uid: $(awk '/^Uid:/ {{print $2}}' /proc/$server/status)"
kill -TERM $server
wait $server
echo "exit: $?"
echo "list: $({run} list 2>&1 | head -c 300 | tr '\n' ' ')"
"#,
        cmd = quote(&cmd),
        log = dir.path().join("server.log").display(),
    );
    let out = Command::new("timeout")
        .args(["60", "unshare", "--net", "--", "sh", "-c", &script])
        .output()
        .expect("unshare runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    let context = format!("{text}\nstderr: {}\nserver log:\n{log}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("ready: yes"), "{context}");
    assert!(text.contains("v2: 200") && text.contains("health: 200"), "{context}");
    assert!(text.contains("uid: 65532\n"), "chroot exec'd the server as nonroot: {context}");
    assert!(text.contains("exit: 0"), "a graceful stop on SIGTERM: {context}");
    assert!(log.contains("listening") && log.contains("stopped"), "{context}");
    assert!(!text.contains("list: error"), "list through the entrypoint: {context}");
    // Everything it wrote is the non-root user's, inside the volume.
    let mut owners = Vec::new();
    for entry in walk(&volume) {
        owners.push(std::os::unix::fs::MetadataExt::uid(&std::fs::symlink_metadata(&entry).unwrap()));
    }
    assert!(!owners.is_empty() && owners.iter().all(|&u| u == 65532), "{owners:?}\n{context}");
}

/// Every path under `dir` (not `dir` itself).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}
