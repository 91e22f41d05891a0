//! `deploy/systemd/ociregistry.service` run for real: a qemu guest boots with the host's systemd
//! as PID 1 (`common::vm::systemd`), with the binary, the unit (unchanged) and an empty
//! config file installed as README's systemd section says. A oneshot unit then drives it with
//! `systemctl` and prints one `guest-check` line per check: `start` returns once `READY=1` came
//! (the unit is `active` and `/ready` answers 200 at once), the registry and health ports answer,
//! the process runs as a dynamic user with no capabilities, no new privileges and a seccomp filter
//! yet keeps io_uring, `ociregistry load` of an OCI tarball made on the host goes through the
//! running service and its manifest and layer are served, everything under `/var/lib/ociregistry`
//! belongs to the service's user and nothing outside it is writable in its namespace, `reload`
//! keeps it active, killed it is restarted (`Restart=on-failure`) and serves its cache, and `stop`
//! ends it gracefully (a download in progress finishes, `inactive`, `Result=success`, exit status
//! 0, `STOPPING=1` received by systemd, as its debug log shows).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::images::{host_arch, write_image, LayerSpec};
use common::vm::systemd::{run_under_systemd, SystemdRun};

const UNIT: &str = include_str!("../deploy/systemd/ociregistry.service");
/// Where README's install section puts the binary (the unit's `ExecStart=`).
const BINARY: &str = "/usr/local/bin/ociregistry";
const TARBALL: &str = "/srv/ociregistry-guest/app.tar";
const REPOSITORY: &str = "sysd.test/guest/app";

#[test]
fn the_unit_runs_under_systemd_as_pid_1() {
    assert!(UNIT.contains(&format!("ExecStart={BINARY} ")), "the unit's ExecStart moved");
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let layers = [LayerSpec::text("hello.txt", "hello from the guest\n"), LayerSpec::random(7, 24 << 20)];
    let image = write_image(&layout, &format!("{REPOSITORY}:v1"), ("linux", host_arch()), &layers);
    let tarball = dir.path().join("app.tar");
    let tar = Command::new("tar").arg("-cf").arg(&tarball).arg("-C").arg(&layout).arg(".").status().unwrap();
    assert!(tar.success(), "tar (Debian package tar) failed");
    let tarball_bytes = std::fs::read(&tarball).unwrap();

    let script = SCRIPT
        .replace("@REPOSITORY@", REPOSITORY)
        .replace("@MANIFEST@", &image.manifest_digest)
        .replace("@LAYER@", &image.layers[1].0)
        .replace("@TARBALL@", TARBALL)
        .replace("@BINARY@", BINARY);
    let outcome = run_under_systemd(&SystemdRun {
        units: &[("ociregistry.service", UNIT)],
        binaries: &[
            (BINARY, Path::new(env!("CARGO_BIN_EXE_ociregistry"))),
            // util-linux's, which switches user (busybox's cannot).
            ("/usr/bin/setpriv", Path::new("/usr/bin/setpriv")),
            // busybox's wget crashes in the guest.
            ("/usr/bin/curl", Path::new("/usr/bin/curl")),
        ],
        files: &[("/etc/ociregistry/config.yaml", &b""[..], 0o644), (TARBALL, &tarball_bytes[..], 0o644)],
        script: &script,
        timeout: Duration::from_secs(90),
    });
    let output = &outcome.output;
    eprintln!("the systemd guest ({}) ran for {:?}", outcome.accelerator, outcome.elapsed);
    assert!(!outcome.timed_out, "the guest did not finish within the timeout; its console:\n{output}");
    let failed: Vec<&str> = output.lines().filter(|l| l.contains("guest-check FAILED")).collect();
    assert!(failed.is_empty(), "checks failed in the guest: {failed:#?}\nits console:\n{output}");
    assert_eq!(outcome.exit_code, Some(0), "the script in the guest failed; its console:\n{output}");
    let passed = output.lines().filter(|l| l.starts_with("guest-check ok: ")).count();
    assert_eq!(passed, CHECKS, "not every check ran; its console:\n{output}");
    eprintln!("{output}");
}

/// How many `check` lines [`SCRIPT`] has (each prints one `guest-check` line).
const CHECKS: usize = 36;

/// Run by the guest's test unit as root once the system is up. Every check prints one line;
/// the exit status is the number that failed.
const SCRIPT: &str = r#"#!/bin/sh
set -u
failures=0
check() {
  what=$1; shift
  if "$@"; then echo "guest-check ok: $what"; else echo "guest-check FAILED: $what"; failures=$((failures + 1)); fi
}
fails() { ! "$@"; }
# Whether $1 matches the basic regular expression $2 from its start.
matches() { expr "$1" : "$2" >/dev/null; }
# The status of a GET (curl, bounded); the body is left in /tmp/body.
status_of() {
  rm -f /tmp/body
  curl -s --max-time 10 -o /tmp/body -w '%{http_code}' ${2:+-H "$2"} "$1"
}
sha256_of_body() { echo "sha256:$(sha256sum /tmp/body | cut -d' ' -f1)"; }
unit_property() { systemctl show -p "$1" --value ociregistry; }

echo "guest: $(systemctl --version | head -n 1); PID 1 is $(cat /proc/1/comm); $(systemctl is-system-running)"
echo "guest: failed units: $(systemctl list-units --failed --plain --no-legend | tr '\n' ';')"
check "journald runs (for the service's log)" [ "$(systemctl is-active systemd-journald)" = active ]
check "PID 1 is systemd" [ "$(cat /proc/1/comm)" = systemd ]

began=$(date +%s)
timeout 120 systemctl start ociregistry
rc=$?
echo "guest: systemctl start ociregistry: exit $rc after $(($(date +%s) - began)) s"
check "systemctl start ociregistry exits 0" [ "$rc" -eq 0 ]
# Nothing waited for: with Type=notify start returns once READY=1 came, which the server sends
# when /ready turns 200.
active=$(systemctl is-active ociregistry)
ready=$(status_of http://127.0.0.1:8081/ready)
status_text=$(unit_property StatusText)
check "active as soon as start returns (is-active: $active)" [ "$active" = active ]
check "/ready answers 200 as soon as start returns (got $ready)" [ "$ready" = 200 ]
check "the unit's status says it serves ($status_text)" matches "$status_text" 'serving on '
check "/v2/ answers 200 on port 8080" [ "$(status_of http://127.0.0.1:8080/v2/)" = 200 ]
check "/health answers 200 on port 8081" [ "$(status_of http://127.0.0.1:8081/health)" = 200 ]

pid=$(unit_property MainPID)
uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
echo "guest: main pid $pid:$(grep -E '^(Uid|Gid|CapEff|CapBnd|NoNewPrivs|Seccomp):' "/proc/$pid/status" | tr -s '\t ' ' ' | tr '\n' ';')"
check "runs as a dynamic user (uid $uid)" [ "$uid" -ge 61184 -a "$uid" -le 65519 ]
check "no effective capabilities" grep -q '^CapEff:[[:space:]]*0000000000000000$' "/proc/$pid/status"
check "no capabilities in the bounding set" grep -q '^CapBnd:[[:space:]]*0000000000000000$' "/proc/$pid/status"
check "no new privileges" grep -q '^NoNewPrivs:[[:space:]]*1$' "/proc/$pid/status"
check "under a seccomp filter" grep -q '^Seccomp:[[:space:]]*2$' "/proc/$pid/status"
check "the open-file limit is the unit's" grep -q '^Max open files *1048576 *1048576' "/proc/$pid/limits"
listening=$(journalctl -u ociregistry -o cat | grep ' listening addr=' | head -n 1)
echo "guest: $listening"
check "io_uring allowed by the unit's system call filter" matches "$listening" '.*driver="io_uring"'

timeout 60 @BINARY@ --image-path /var/lib/ociregistry --config-file /etc/ociregistry/config.yaml load --image-file @TARBALL@
rc=$?
check "ociregistry load of the tarball (handed to the running service) exits 0" [ "$rc" -eq 0 ]
code=$(status_of http://127.0.0.1:8080/v2/@REPOSITORY@/manifests/v1 "Accept: application/vnd.oci.image.manifest.v1+json")
check "the loaded manifest is served ($code)" [ "$code" = 200 -a "$(sha256_of_body)" = @MANIFEST@ ]
code=$(status_of http://127.0.0.1:8080/v2/@REPOSITORY@/blobs/@LAYER@)
check "the loaded layer is served ($code)" [ "$code" = 200 -a "$(sha256_of_body)" = @LAYER@ ]

state=/var/lib/ociregistry
echo "guest: $(ls -ld "$state" /var/lib/private /var/lib/private/ociregistry 2>&1 | tr '\n' ';')"
files=$(find "$state/" -type f | wc -l)
strangers=$(find "$state/" ! -user "$uid" && echo "(find ran)")
check "the state directory holds the cache ($files files)" [ "$files" -gt 2 ]
check "everything in it belongs to uid $uid (not: $strangers)" [ "$strangers" = "(find ran)" ]
in_service() { timeout 10 nsenter -t "$pid" -m /usr/bin/setpriv --reuid="$uid" --regid="$uid" --clear-groups "$@"; }
check "the service's user may write its state directory" in_service touch "$state/.probe"
rm -f "$state/.probe"
for dir in /etc/ociregistry /usr/local/bin /var/lib /srv/ociregistry-guest /; do
  check "nothing is writable at $dir in its namespace (read-only, even for root)" fails timeout 10 nsenter -t "$pid" -m touch "$dir/.probe"
done

timeout 60 systemctl reload ociregistry
rc=$?
check "systemctl reload exits 0 and it stays active" [ "$rc" -eq 0 -a "$(systemctl is-active ociregistry)" = active ]

# Restart=on-failure: killed, it is started again (after RestartSec=2s) and serves its cache.
kill -9 "$pid"
for _ in $(seq 120); do
  now=$(unit_property MainPID)
  [ "$(systemctl is-active ociregistry)" = active -a "$now" != 0 -a "$now" != "$pid" ] && break
  sleep 0.5
done
check "killed, it is restarted (main pid $pid, then $now; NRestarts=$(unit_property NRestarts))" [ "$now" != "$pid" -a "$(unit_property NRestarts)" = 1 ]
code=$(status_of http://127.0.0.1:8080/v2/@REPOSITORY@/manifests/v1 "Accept: application/vnd.oci.image.manifest.v1+json")
check "after the restart the cached manifest is served ($code)" [ "$code" = 200 -a "$(sha256_of_body)" = @MANIFEST@ ]

# A download in progress when the stop begins (24 MiB at 4 MiB/s, more than socket buffers hold)
# is finished, not cut.
rm -f /tmp/slow
curl -s --max-time 60 --limit-rate 4M -o /tmp/slow http://127.0.0.1:8080/v2/@REPOSITORY@/blobs/@LAYER@ &
slow=$!
for _ in $(seq 100); do [ -s /tmp/slow ] && break; sleep 0.1; done
# At debug level the manager logs each notification it receives.
systemctl log-level debug
began=$(date +%s)
timeout 60 systemctl stop ociregistry
rc=$?
echo "guest: systemctl stop ociregistry: exit $rc after $(($(date +%s) - began)) s"
systemctl log-level info
check "systemctl stop exits 0" [ "$rc" -eq 0 ]
wait "$slow"
rc=$?
check "the download in progress finished whole (curl exit $rc)" [ "$rc" -eq 0 -a "sha256:$(sha256sum /tmp/slow | cut -d' ' -f1)" = @LAYER@ ]
echo "guest: systemctl show: $(systemctl show -p NRestarts,Result,ExecMainCode,ExecMainStatus,ActiveState,SubState ociregistry | tr '\n' ' ')"
active=$(systemctl is-active ociregistry)
echo "guest: systemctl is-active ociregistry: $active"
check "inactive after stop, not failed" [ "$active" = inactive ]
check "Result=success (not timeout or signal)" [ "$(unit_property Result)" = success ]
check "it exited 0" [ "$(unit_property ExecMainStatus)" = 0 ]
check "NRestarts=0 (a stop resets the count of the restart above)" [ "$(unit_property NRestarts)" = 0 ]
check "systemd received STOPPING=1" sh -c 'journalctl -b -o cat | grep "Got notification message" | grep -q "STOPPING=1"'

echo "guest: the service's journal:"
journalctl -u ociregistry -o short-monotonic --no-pager | tail -n 40
echo "guest: $failures checks failed"
exit "$failures"
"#;
