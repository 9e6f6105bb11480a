//! The command line: what to measure, against what, and how hard.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The command line.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "gbds-bench",
    version,
    about = "Load generator for gbds-notifier: drives the realistic mix through the REST API and \
             prints throughput, latency, CPU, memory and database size beside the machine's \
             ceilings; see BENCHMARKS.md"
)]
pub struct BenchArgs {
    /// Closed loop: transactions per run, after the warm-up.
    #[arg(long, default_value_t = 20_000)]
    pub transactions: u64,
    /// Closed loop: transactions in flight (workers), and the size of the HTTP pool.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Open loop instead: start transactions at this rate (see --rate-unit) for --duration.
    #[arg(long)]
    pub rate: Option<f64>,
    /// What --rate counts.
    #[arg(long, value_enum, default_value = "notifications")]
    pub rate_unit: RateUnit,
    /// Open loop: how long to keep the rate.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Transactions run (closed loop, same concurrency) and delivered before measuring.
    #[arg(long, default_value_t = 1000)]
    pub warmup: u64,
    /// Repetitions; the table shows medians, the JSON every run.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// A running service to drive (its endpoint must point at the receiver) instead of
    /// starting one in this process on a temporary database.
    #[arg(long)]
    pub target: Option<String>,
    /// Bearer token for --target (services the benchmark starts get their own).
    #[arg(long, env = "GBDS_BENCH_TOKEN")]
    pub token: Option<String>,
    /// --target's process id, to read its CPU time and peak RSS from /proc.
    #[arg(long)]
    pub service_pid: Option<u32>,
    /// --target's database file, to measure bytes per notification.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// A receiver already running (`gbds-bench --serve-receiver ADDR`), instead of
    /// the in-process one; its `/_bench/records` gives the delivery times.
    #[arg(long)]
    pub receiver: Option<String>,
    /// Where the in-process receiver listens (default: a free port; 127.0.0.1:9000 with --target).
    #[arg(long)]
    pub receiver_listen: Option<SocketAddr>,
    /// The durability of the service the benchmark starts (and of the ceilings' databases).
    #[arg(long, value_enum, default_value = "FULL")]
    pub synchronous: Synchronous,
    /// Start the service as a child process (`gbds-notifier serve`) instead of in-process.
    #[arg(long)]
    pub spawn: bool,
    /// The `gbds-notifier` binary that --spawn and --backlog start (default: the one beside
    /// this executable, built by `cargo build --release`).
    #[arg(long)]
    pub service_bin: Option<PathBuf>,
    /// Measure only the ceilings: an HTTP server that does nothing, the service's store
    /// without HTTP, and a minimal SQLite write loop.
    #[arg(long)]
    pub baseline: bool,
    /// Measure the ceilings and the service in each run, and print service ÷ lower ceiling.
    #[arg(long)]
    pub compare: bool,
    /// Write every figure of every run here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// How long to wait, after the last call, for the last notification.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Only run the receiver on this address until interrupted (for --receiver elsewhere).
    #[arg(long)]
    pub serve_receiver: Option<SocketAddr>,
    /// The backlog scenario: accumulate this many notifications with the receiver down,
    /// restart the service, bring the receiver back and time the drain.
    #[arg(long)]
    pub backlog: Option<u64>,
    /// Keep the temporary directory (databases, child-process logs).
    #[arg(long)]
    pub keep: bool,
    /// Do not print the table (the JSON is still written).
    #[arg(long)]
    pub quiet: bool,
}

impl BenchArgs {
    /// The `gbds-notifier` binary to start as a child process.
    pub fn service_binary(&self) -> anyhow::Result<PathBuf> {
        if let Some(bin) = &self.service_bin {
            return Ok(bin.clone());
        }
        let beside = std::env::current_exe()?.with_file_name("gbds-notifier");
        if beside.is_file() {
            return Ok(beside);
        }
        anyhow::bail!(
            "no gbds-notifier binary at {}: build it (`cargo build --release`) or give --service-bin",
            beside.display()
        )
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateUnit {
    Notifications,
    Calls,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[clap(rename_all = "UPPER")]
pub enum Synchronous {
    Full,
    Normal,
}

impl Synchronous {
    pub fn as_str(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// `500ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("{s:?} needs a unit: ms, s, m or h"))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("{s:?} is not a duration"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("30").is_err());
    }
}
