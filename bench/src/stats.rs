//! Measurements: clocks, percentiles, and what Linux says about CPU time, memory and files.

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Nanoseconds since the Unix epoch: the one clock of acks and deliveries, so that a receiver
/// in another process on the same machine can be compared with the driver.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Percentiles of a set of durations, in microseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of microsecond samples; None when there are none.
    pub fn of(mut us: Vec<u64>) -> Option<Percentiles> {
        if us.is_empty() {
            return None;
        }
        us.sort_unstable();
        // Nearest rank, in integers (per mille) so that 99.9 % of 1000 is exactly 999.
        let rank = |per_mille: usize| {
            let i = (per_mille * us.len()).div_ceil(1000);
            us[i.clamp(1, us.len()) - 1] as f64
        };
        Some(Percentiles {
            count: us.len(),
            p50: rank(500),
            p99: rank(990),
            p999: rank(999),
            max: *us.last().expect("not empty") as f64,
        })
    }
}

/// The median of some figures (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Clock ticks per second of `/proc/*/stat` times (USER_HZ, 100 on every Linux ABI in use).
const TICKS_PER_S: f64 = 100.0;

/// User + system CPU seconds a process has used, its exited threads included.
pub fn process_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    ticks(&stat).map(|t| t as f64 / TICKS_PER_S)
}

/// utime + stime of a `stat` line (fields 14 and 15, counted after the `(comm)` field).
fn ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU nanoseconds of each live thread of this process, by thread id, with its name.
/// `schedstat` gives nanoseconds; `stat` ticks are the fallback.
pub fn thread_cpu() -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let base = entry.path();
        let name = std::fs::read_to_string(base.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        let ns = std::fs::read_to_string(base.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .or_else(|| {
                let stat = std::fs::read_to_string(base.join("stat")).ok()?;
                ticks(&stat).map(|t| t * (1e9 / TICKS_PER_S) as u64)
            });
        if let Some(ns) = ns {
            out.insert(tid, (name, ns));
        }
    }
    out
}

/// CPU seconds, between two `thread_cpu` readings, of the threads `belongs` picks by name.
pub fn threads_cpu_s(
    before: &HashMap<u32, (String, u64)>,
    after: &HashMap<u32, (String, u64)>,
    belongs: impl Fn(&str) -> bool,
) -> f64 {
    after
        .iter()
        .filter(|(_, (name, _))| belongs(name))
        .map(|(tid, (_, ns))| ns - before.get(tid).map_or(0, |(_, b)| *b).min(*ns))
        .sum::<u64>() as f64
        / 1e9
}

/// CPU seconds per thread name between two `thread_cpu` readings, largest first.
pub fn threads_by_name(
    before: &HashMap<u32, (String, u64)>,
    after: &HashMap<u32, (String, u64)>,
) -> Vec<(String, f64)> {
    let mut by_name: HashMap<&str, u64> = HashMap::new();
    for (tid, (name, ns)) in after {
        let earlier = before.get(tid).map_or(0, |(_, b)| *b).min(*ns);
        *by_name.entry(name).or_default() += ns - earlier;
    }
    let mut out: Vec<(String, f64)> = by_name
        .into_iter()
        .map(|(n, ns)| (n.to_owned(), ns as f64 / 1e9))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// A `kB` line of `/proc/<pid>/status` (`VmHWM`: peak resident set; `VmRSS`: current), in bytes.
pub fn status_bytes(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The database file with its `-wal` and `-shm` companions, in bytes.
pub fn database_bytes(path: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            std::fs::metadata(p).ok().map(|m| m.len())
        })
        .sum()
}

/// How many notifications a service database holds (read-only; None if it cannot be read).
pub fn database_notifications(path: &Path) -> Option<u64> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).ok()?;
    conn.query_row("SELECT count(*) FROM notifications", [], |r| r.get(0))
        .ok()
}

/// The one-minute load average, from `/proc/loadavg`.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let p = Percentiles::of((1..=1000).collect()).unwrap();
        assert_eq!((p.p50, p.p99, p.p999, p.max), (500.0, 990.0, 999.0, 1000.0));
        assert_eq!(Percentiles::of(vec![]), None);
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn stat_times_are_read_after_the_command_name() {
        let line = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        assert_eq!(ticks(line), Some(300));
    }
}
