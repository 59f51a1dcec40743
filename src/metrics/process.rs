//! The standard `process_*` metrics of Prometheus' client libraries (CPU seconds,
//! memory, file descriptors, start time), read from `/proc/self` at scrape time, as Go's
//! client exports them for etcd. Linux only; elsewhere, or if `/proc` cannot be read, the
//! families are left out rather than reported wrong.

use crate::metrics::text::Text;

/// Append the process families to `out`.
pub(crate) fn render(out: &mut Text) {
    let Some(stat) = SelfStat::read() else {
        return;
    };
    let ticks = sysconf(libc::_SC_CLK_TCK).unwrap_or(100) as f64;
    let page = sysconf(libc::_SC_PAGESIZE).unwrap_or(4096) as f64;
    out.single(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        (stat.utime + stat.stime) as f64 / ticks,
    );
    out.single(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        stat.rss_pages as f64 * page,
    );
    out.single(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        stat.vsize as f64,
    );
    if let Some(boot) = boot_time_seconds() {
        out.single(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            boot + stat.start_ticks as f64 / ticks,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.single(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    if let Some(max) = max_fds() {
        out.single(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max as f64,
        );
    }
}

/// The fields of `/proc/self/stat` the metrics need.
struct SelfStat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

impl SelfStat {
    fn read() -> Option<SelfStat> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
        let after_name = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Field n of proc(5) is fields[n - 3] here (state, field 3, is fields[0]).
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(SelfStat {
            utime: field(14)?,
            stime: field(15)?,
            start_ticks: field(22)?,
            vsize: field(23)?,
            rss_pages: field(24)?,
        })
    }
}

fn boot_time_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|v| v as f64)
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf reads a configuration value; no memory is passed.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).ok().filter(|v| *v > 0)
}

fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    Some(limit.rlim_cur)
}
