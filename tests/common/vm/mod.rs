//! Runs a test binary inside a qemu guest booted from Debian's kernel, for features the host
//! kernel lacks (kernel TLS: the `tls` module). The guest is an initramfs ([`initramfs`]) holding
//! busybox, the kernel's TLS and crypto modules, the binary and `ociregistry` at their host paths
//! (so compile-time paths such as `CARGO_BIN_EXE_ociregistry` hold) and any extra host files.
//! Its `/init` mounts the usual filesystems, brings up loopback, loads `tls`, runs the binary
//! and prints a marker line with its exit status on the serial console, which qemu writes to a
//! file read back here. qemu runs with KVM when it can boot a stock kernel, else (slower) with
//! TCG. [`systemd`] boots the same kind of guest with the host's systemd as PID 1 instead, to
//! run units for real.
//!
//! Needs qemu-system-x86, busybox-static, apt-get, dpkg-deb, xz and zstd (the kernel is fetched once, see
//! [`kernel`]); a missing one is an error naming it, never a skip.

mod cpio;
mod initramfs;
mod kernel;
pub mod modules;
pub mod systemd;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a guest run ended with.
pub struct VmOutcome {
    /// The binary's exit status, from the marker line; `None` when the guest never printed it
    /// (it crashed, hung past the timeout, or the binary could not start).
    pub exit_code: Option<i32>,
    /// Everything on the guest's serial console (kernel messages, init's lines, the binary's output).
    pub output: String,
    /// Whether qemu was killed at the timeout.
    pub timed_out: bool,
    /// How long qemu ran, boot to power-off.
    pub elapsed: Duration,
    /// `kvm` or `tcg`: how qemu ran the guest.
    pub accelerator: &'static str,
}

/// What to run in the guest, and what else to put in it.
pub struct GuestRun<'a> {
    pub binary: &'a Path,
    pub args: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
    /// Host files or directories copied into the guest at the same paths (e.g. certificates);
    /// not under a directory the guest mounts over ([`MOUNTED`]).
    pub files: &'a [&'a Path],
    /// The limit with KVM; under TCG the guest gets four times as long.
    pub timeout: Duration,
}

/// Directories `/init` mounts filesystems on, hiding what the initramfs has there.
const MOUNTED: [&str; 6] = ["/proc", "/sys", "/dev", "/tmp", "/root", "/run"];

/// Held for a whole guest run (kernel fetch, initramfs, qemu): under TCG on two cores, two
/// guests at once (the test harness runs tests in parallel) each take more than twice as long,
/// and two first runs would both fetch the kernel.
static ONE_GUEST_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Boots a guest that runs `run.binary` with its arguments and environment, and returns its
/// exit status and console output. Panics (naming the cause) when the guest cannot be built
/// or qemu cannot start; a binary that fails or hangs is reported in the [`VmOutcome`].
pub fn run_in_vm(run: &GuestRun) -> VmOutcome {
    // A test that panicked while holding the lock left nothing half done that matters here.
    let _one_guest = ONE_GUEST_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match try_run_in_vm(run) {
        Ok(outcome) => outcome,
        Err(e) => panic!("cannot run the guest: {e}"),
    }
}

fn try_run_in_vm(run: &GuestRun) -> Result<VmOutcome, String> {
    let kernel = kernel::debian_kernel()?;
    let marker = new_marker();
    let mut fs = initramfs::Initramfs::new(&kernel, &init_script(run, &marker)?)?;
    fs.add_binary(run.binary)?;
    fs.add_binary(Path::new(env!("CARGO_BIN_EXE_ociregistry")))?;
    for path in run.files {
        if let Some(dir) = MOUNTED.iter().find(|dir| path.starts_with(dir)) {
            return Err(format!("{} would be hidden by the guest's mount on {dir}", path.display()));
        }
        fs.add_host_path(path)?;
    }
    boot_and_collect(&kernel, &fs, &marker, run.timeout)
}

/// A fresh marker line prefix, `@@ociregistry-guest-exit <nonce> `, that the guest prints
/// before its exit status (a nonce, so no other line is mistaken for it).
fn new_marker() -> String {
    let nonce = format!("{:016x}", crate::common::unique() ^ random_u64());
    format!("@@ociregistry-guest-exit {nonce} ")
}

/// Writes `fs`, boots it, and reads the console back: the exit status is the number after the
/// first line starting with `marker`.
fn boot_and_collect(
    kernel: &kernel::GuestKernel,
    fs: &initramfs::Initramfs,
    marker: &str,
    timeout: Duration,
) -> Result<VmOutcome, String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let image = work.path().join("initramfs.cpio");
    fs.write(&image)?;
    // The archive is unpacked into RAM next to its own copy; leave room for both and the test.
    let memory_mib = 1024.max(512 + 2 * fs.payload_bytes() / (1 << 20));
    let console = work.path().join("console.log");
    let kvm = kvm_runs_stock_kernels();
    let timeout = if kvm { timeout } else { timeout * 4 };
    let (timed_out, elapsed) = boot(&kernel.image, &image, &console, memory_mib, kvm, timeout)?;
    let raw = std::fs::read(&console).map_err(|e| format!("read {}: {e}", console.display()))?;
    let output = String::from_utf8_lossy(&raw).replace("\r\n", "\n");
    let exit_code = output.lines().find_map(|l| l.strip_prefix(marker)?.trim().parse().ok());
    let accelerator = if kvm { "kvm" } else { "tcg" };
    Ok(VmOutcome { exit_code, output, timed_out, elapsed, accelerator })
}

/// Whether KVM can boot Debian's kernel here: `/dev/kvm` opens and the CPU has hardware
/// virtualisation (`vmx`/`svm`). Without it, a `/dev/kvm` is a paravirtual one (e.g. PVM's
/// `kvm_pvm`, on which qemu starts but an unmodified kernel hangs before its first line), so
/// the guest runs under TCG instead.
fn kvm_runs_stock_kernels() -> bool {
    let opens = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hardware = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    opens && hardware
}

/// Runs qemu until the guest powers off or `timeout` passes (then kills it).
fn boot(
    kernel: &Path,
    image: &Path,
    console: &Path,
    memory_mib: u64,
    kvm: bool,
    timeout: Duration,
) -> Result<(bool, Duration), String> {
    let log = std::fs::File::create(console).map_err(|e| format!("create {}: {e}", console.display()))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args(["-accel", if kvm { "kvm" } else { "tcg" }, "-cpu", if kvm { "host" } else { "max" }])
        .args([
            "-m",
            &memory_mib.to_string(),
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(image)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
    die_with_parent(&mut command);
    let mut qemu = QemuGuard(
        command.spawn().map_err(|e| format!("start qemu-system-x86_64 (Debian package qemu-system-x86): {e}"))?,
    );
    let rounds = timeout.as_millis() / 50 + 1;
    for _ in 0..rounds {
        if qemu.0.try_wait().map_err(|e| e.to_string())?.is_some() {
            return Ok((false, started.elapsed()));
        }
        if started.elapsed() > timeout {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(qemu);
    Ok((true, started.elapsed()))
}

/// Kills and reaps qemu when dropped: a guest that hangs never outlives its test, whether the
/// run ends, returns early with an error or panics.
struct QemuGuard(std::process::Child);

impl Drop for QemuGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Has the kernel send the child SIGKILL when the thread that started it dies (cargo killed,
/// the test process ended), where no `Drop` runs. The check of the parent closes the race with
/// a parent that died before `prctl`.
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid), no allocation
    // on success.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the parent died before exec"));
            }
            Ok(())
        });
    }
}

/// `/init`: set the guest up, run the binary, print the marker with its status, power off.
fn init_script(run: &GuestRun, marker: &str) -> Result<String, String> {
    let mut exports = String::new();
    for (name, value) in run.env {
        let valid = name
            .bytes()
            .enumerate()
            .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()));
        if !valid || name.is_empty() {
            return Err(format!("{name:?} is not an environment variable name"));
        }
        exports.push_str(&format!("export {name}={}\n", shell_quote(value)));
    }
    let binary = run.binary.to_str().ok_or("the binary's path is not UTF-8")?;
    let command: Vec<String> = std::iter::once(binary).chain(run.args.iter().copied()).map(shell_quote).collect();
    Ok(format!(
        r#"#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /root
mount -t tmpfs tmpfs /run
ip link set lo up
modprobe tls || echo "guest: modprobe tls failed"
echo "guest: kernel $(uname -r), tcp_available_ulp: $(cat /proc/sys/net/ipv4/tcp_available_ulp)"
{exports}cd /tmp
{command}
status=$?
echo "guest: modules loaded: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
echo "{marker}$status"
poweroff -f
"#,
        command = command.join(" "),
    ))
}

/// `value` in single quotes for sh.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(std::process::id() as u64);
    hasher.finish()
}

/// Runs `command` with output captured, killed past `limit` (by coreutils' `timeout`); an
/// error names the command and carries its output.
fn run_bounded(command: &mut Command, limit: Duration) -> Result<Vec<u8>, String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let args: Vec<String> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut bounded = Command::new("timeout");
    bounded.args(["--kill-after=10", &limit.as_secs().max(1).to_string(), &program]).args(&args);
    if let Some(dir) = command.get_current_dir() {
        bounded.current_dir(dir);
    }
    die_with_parent(&mut bounded);
    let out = bounded.stdin(Stdio::null()).output().map_err(|e| format!("run {program}: {e}"))?;
    match out.status.code() {
        Some(0) => Ok(out.stdout),
        Some(124) | Some(137) => Err(format!("{program} {args:?} did not finish within {limit:?}")),
        Some(127) => Err(format!("{program} is not installed")),
        _ => Err(format!(
            "{program} {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// The first `tool` on `PATH`.
pub fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(tool)).find(|p| p.is_file())
}
