//! The standard `process_*` series that Prometheus's client libraries export
//! (the Go version's among them, so its dashboards and alerts find them):
//! CPU seconds, resident and virtual memory, open and maximum file
//! descriptors, and the start time, read from `/proc/self` at scrape time.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// The collector (registered without the `ociregistry_` prefix).
#[derive(Debug)]
pub struct Process;

/// One reading of this process.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    start_time_seconds: f64,
    open_fds: u64,
    max_fds: u64,
}

impl Collector for Process {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Some(s) = read() else { return Ok(()) };
        let e = &mut enc;
        e.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, f64, u64>(&s.cpu_seconds, None)?;
        gauge(e, "process_resident_memory_bytes", "Resident memory size in bytes.", s.resident_bytes as f64)?;
        gauge(e, "process_virtual_memory_bytes", "Virtual memory size in bytes.", s.virtual_bytes as f64)?;
        gauge(
            e,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            s.start_time_seconds,
        )?;
        gauge(e, "process_open_fds", "Number of open file descriptors.", s.open_fds as f64)?;
        gauge(e, "process_max_fds", "Maximum number of open file descriptors.", s.max_fds as f64)
    }
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Gauge)?.encode_gauge(&v)
}

/// Reads this process's figures; `None` where `/proc` is not mounted.
fn read() -> Option<Sample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| boot_time(&s))?;
    // SAFETY: sysconf and getrlimit only read system values into the given struct.
    let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: as above.
    let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 { limit.rlim_cur } else { 0 };
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let fields = StatFields::parse(&stat)?;
    let (ticks, page) = (ticks.max(1) as f64, page.max(1) as u64);
    Some(Sample {
        cpu_seconds: (fields.utime + fields.stime) as f64 / ticks,
        resident_bytes: fields.rss_pages * page,
        virtual_bytes: fields.vsize,
        start_time_seconds: boot_time as f64 + fields.start_ticks as f64 / ticks,
        open_fds,
        max_fds,
    })
}

/// The fields of `/proc/<pid>/stat` used here (proc(5): utime 14, stime 15,
/// starttime 22, vsize 23, rss 24, counting from 1).
#[derive(Debug, PartialEq, Eq)]
struct StatFields {
    utime: u64,
    stime: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

impl StatFields {
    fn parse(stat: &str) -> Option<StatFields> {
        // The command name (field 2) is in parentheses and may hold spaces: count from after the last ')'.
        let rest = &stat[stat.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (the state), so field n is f[n - 3].
        let n = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
        Some(StatFields { utime: n(14)?, stime: n(15)?, start_ticks: n(22)?, vsize: n(23)?, rss_pages: n(24)? })
    }
}

/// `btime` of `/proc/stat`: when the system booted, in seconds since the epoch.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_past_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (fetch (er) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 125 0 0 20 0 7 0 9876 \
                    123456789 321 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let f = StatFields::parse(stat).unwrap();
        assert_eq!(f, StatFields { utime: 250, stime: 125, start_ticks: 9876, vsize: 123456789, rss_pages: 321 });
        assert_eq!(StatFields::parse("1 (x) S 1 2"), None, "too short");
        assert_eq!(boot_time("cpu  1 2 3\nbtime 1733480000\nprocesses 9\n"), Some(1_733_480_000));
    }

    #[test]
    fn this_process_reads_as_running() {
        let s = read().expect("/proc is mounted where the tests run");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(s.start_time_seconds <= now + 1.0 && s.start_time_seconds > now - 24.0 * 3600.0, "{s:?}");
        assert!(s.resident_bytes > 0 && s.virtual_bytes >= s.resident_bytes, "{s:?}");
        assert!(s.open_fds > 0 && s.open_fds <= s.max_fds, "{s:?}");
        assert!(s.cpu_seconds >= 0.0, "{s:?}");
    }
}
