//! A guest booted with the host's systemd as PID 1, for running units for real. Besides the base
//! initramfs ([`super::initramfs`]) it holds systemd, systemctl, journald and journalctl (with
//! their libraries), the targets a minimal boot walks through and journald's units, copied from
//! the host's `/usr/lib/systemd/system`, an `/etc/machine-id` and `os-release`, the caller's
//! units, binaries and files, and one unit of its own: `ociregistry-guest-test.service`, a
//! oneshot in `multi-user.target` that runs the caller's sh script, prints the marker line with
//! its exit status on the console and powers the guest off (it does so on a failure or a timeout
//! of that unit too). `/init` only `exec`s systemd, so systemd is PID 1 in a root it sees as the
//! real one (no `/etc/initrd-release`).
//!
//! Needs the Debian package systemd on the host besides what [`super`] needs.

use std::path::Path;
use std::time::Duration;

use super::{boot_and_collect, initramfs, kernel, new_marker, VmOutcome};

/// What to run under systemd in the guest.
pub struct SystemdRun<'a> {
    /// Units placed in `/etc/systemd/system`, as (file name, contents); not enabled (start them
    /// from the script).
    pub units: &'a [(&'a str, &'a str)],
    /// Executables placed at a guest path with their libraries, as (guest path, host path).
    pub binaries: &'a [(&'a str, &'a Path)],
    /// Files placed in the guest, as (absolute guest path, contents, mode).
    pub files: &'a [(&'a str, &'a [u8], u32)],
    /// The sh script the test unit runs (as root, once `basic.target` is reached); its exit
    /// status is [`VmOutcome::exit_code`].
    pub script: &'a str,
    /// The limit with KVM; under TCG the guest gets four times as long.
    pub timeout: Duration,
}

/// systemd's own programs, at the paths its units and `systemctl` use (Debian's).
const PROGRAMS: [&str; 5] = [
    "/lib/systemd/systemd",
    "/lib/systemd/systemd-journald",
    "/lib/systemd/systemd-shutdown",
    "/bin/systemctl",
    "/bin/journalctl",
];

/// The host's unit files a minimal boot needs: the targets on the way to `multi-user.target`
/// (and to power-off), and journald, so `journalctl` shows what services logged.
const HOST_UNITS: [&str; 21] = [
    "sysinit.target",
    "basic.target",
    "sockets.target",
    "timers.target",
    "paths.target",
    "slices.target",
    "local-fs-pre.target",
    "local-fs.target",
    "swap.target",
    "network-pre.target",
    "network.target",
    "network-online.target",
    "multi-user.target",
    "shutdown.target",
    "umount.target",
    "final.target",
    "poweroff.target",
    "emergency.target",
    "systemd-journald.service",
    "systemd-journald.socket",
    "systemd-journald-dev-log.socket",
];

/// journald's units and the targets that pull them in at boot.
const JOURNALD_WANTED_BY: [(&str, &str); 3] = [
    ("sysinit.target", "systemd-journald.service"),
    ("sockets.target", "systemd-journald.socket"),
    ("sockets.target", "systemd-journald-dev-log.socket"),
];

const HOST_UNIT_DIR: &str = "/usr/lib/systemd/system";
const TEST_UNIT: &str = "ociregistry-guest-test.service";
const SCRIPT: &str = "/etc/ociregistry-guest/test.sh";
const RUNNER: &str = "/etc/ociregistry-guest/run.sh";

/// Boots a guest with systemd as PID 1 that runs `run.script` from a oneshot unit, and returns
/// the script's exit status and the console. Panics (naming the cause) when the guest cannot be
/// built or qemu cannot start.
pub fn run_under_systemd(run: &SystemdRun) -> VmOutcome {
    match try_run_under_systemd(run) {
        Ok(outcome) => outcome,
        Err(e) => panic!("cannot run the systemd guest: {e}"),
    }
}

fn try_run_under_systemd(run: &SystemdRun) -> Result<VmOutcome, String> {
    let kernel = kernel::debian_kernel()?;
    let marker = new_marker();
    let mut fs = initramfs::Initramfs::new(&kernel, "#!/bin/sh\nexec /lib/systemd/systemd\n")?;
    for program in PROGRAMS {
        if !Path::new(program).is_file() {
            return Err(format!("{program} is missing (Debian package systemd)"));
        }
        fs.add_binary(Path::new(program))?;
    }
    for unit in HOST_UNITS {
        let path = Path::new(HOST_UNIT_DIR).join(unit);
        fs.add_host_file_at(&path, &path, 0o644)?;
    }
    // Enabled as Debian enables them (the host's `.wants` links are not copied: they name units
    // the guest lacks).
    for (wants, unit) in JOURNALD_WANTED_BY {
        let link = Path::new(HOST_UNIT_DIR).join(format!("{wants}.wants")).join(unit);
        fs.add_symlink(&link, &format!("../{unit}"))?;
    }
    let os_release = Path::new("/usr/lib/os-release");
    fs.add_host_file_at(os_release, os_release, 0o644)?;
    fs.add_symlink(Path::new("/etc/os-release"), "../usr/lib/os-release")?;
    // A fixed id: the journal's directory is named after it.
    fs.add_bytes(Path::new("/etc/machine-id"), b"0c1e9a0f5d0e4b7fa7f3c1de0f5e7a11\n", 0o444)?;
    let etc = Path::new("/etc/systemd/system");
    fs.add_symlink(&etc.join("default.target"), "/usr/lib/systemd/system/multi-user.target")?;
    for (name, contents) in run.units {
        if name.contains('/') || name.starts_with('.') {
            return Err(format!("{name:?} is not a unit file name"));
        }
        fs.add_bytes(&etc.join(name), contents.as_bytes(), 0o644)?;
    }
    for (guest, host) in run.binaries {
        fs.add_binary_at(Path::new(guest), host)?;
    }
    for (guest, data, mode) in run.files {
        fs.add_bytes(Path::new(guest), data, *mode)?;
    }
    fs.add_bytes(Path::new(SCRIPT), run.script.as_bytes(), 0o755)?;
    let runner = format!("#!/bin/sh\n/bin/sh {SCRIPT}\nstatus=$?\necho \"{marker}$status\"\n");
    fs.add_bytes(Path::new(RUNNER), runner.as_bytes(), 0o755)?;
    fs.add_bytes(&etc.join(TEST_UNIT), test_unit(run.timeout * 4).as_bytes(), 0o644)?;
    fs.add_symlink(&etc.join("multi-user.target.wants").join(TEST_UNIT), &format!("../{TEST_UNIT}"))?;
    boot_and_collect(&kernel, &fs, &marker, run.timeout)
}

/// The unit that runs the script once the system is up, its output on the console, and powers
/// off when it ends, however it ends.
fn test_unit(limit: Duration) -> String {
    format!(
        "[Unit]
Description=the test the host asked for
After=basic.target
SuccessAction=poweroff-immediate
FailureAction=poweroff-immediate

[Service]
Type=oneshot
ExecStart=/bin/sh {RUNNER}
StandardOutput=tty
StandardError=tty
TTYPath=/dev/console
TTYReset=no
TTYVHangup=no
TimeoutStartSec={}
",
        limit.as_secs().max(1)
    )
}
