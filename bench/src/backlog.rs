//! The backlog scenario (`gbds-bench --backlog N`): with the receiver down, accumulate N
//! undelivered notifications while sampling the service's memory; stop the service; restart it
//! on that database and time it to healthy; bring the receiver back and time the drain, checking
//! per-transaction order.
//!
//! "Down" is a black hole (connections accepted, never answered) so that the service's
//! attempts end in its request timeout rather than spinning on refused connections, and the
//! retry schedule is a constant short delay so that, once the receiver is back, the drain is
//! limited by the service and not by a retry timer hours away. Both are set for this scenario
//! only and reported.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::args::BenchArgs;
use crate::driver::{self, Load, Phase, Target};
use crate::mix;
use crate::receiver::{BlackHole, Receiver};
use crate::service::{self, Service, ServiceConfig};
use crate::stats::{self, now_ns};

/// The retry delay while the receiver is down, and how many retries the schedule allows.
const RETRY_DELAY: &str = "1s";
const RETRIES: usize = 3600;
const REQUEST_TIMEOUT: &str = "5s";

#[derive(Debug, Clone, Serialize, Default)]
pub struct BacklogReport {
    pub notifications_target: u64,
    pub transactions: u64,
    pub settings: Vec<(String, String)>,
    /// Notifications in the database when the service was stopped.
    pub accumulated: u64,
    pub accumulate_seconds: f64,
    pub accumulate_api_calls_per_s: f64,
    pub accumulate_api_errors: u64,
    /// (seconds since the start, VmRSS bytes) of the service while accumulating.
    pub rss_accumulating: Vec<(f64, u64)>,
    pub peak_rss_accumulating_bytes: Option<u64>,
    pub database_bytes: u64,
    pub stop_seconds: f64,
    /// From spawning the process on the full database to `/healthz` answering 200.
    pub restart_to_healthy_ms: f64,
    pub rss_draining: Vec<(f64, u64)>,
    pub peak_rss_draining_bytes: Option<u64>,
    pub drained: u64,
    /// From the receiver coming back to the last delivery.
    pub drain_seconds: f64,
    pub drain_per_s: f64,
    /// From the first delivery to the last (excludes waiting for the retry timer).
    pub drain_steady_per_s: f64,
    pub missing: u64,
    pub duplicates: u64,
    pub order_violations: u64,
    pub order_examples: Vec<String>,
    pub service_cpu_draining_s: Option<f64>,
}

impl BacklogReport {
    pub fn table(&self) -> String {
        let mb = |b: Option<u64>| b.map_or("–".to_owned(), |b| format!("{:.1}", b as f64 / 1e6));
        let rows = [
            (
                "notifications accumulated (in the database)",
                self.accumulated.to_string(),
            ),
            (
                "accumulating: seconds / API calls/s",
                format!(
                    "{:.1} / {:.0}",
                    self.accumulate_seconds, self.accumulate_api_calls_per_s
                ),
            ),
            (
                "peak RSS accumulating (MB)",
                mb(self.peak_rss_accumulating_bytes),
            ),
            ("database size (MB)", mb(Some(self.database_bytes))),
            (
                "restart → healthy (ms)",
                format!("{:.0}", self.restart_to_healthy_ms),
            ),
            ("peak RSS draining (MB)", mb(self.peak_rss_draining_bytes)),
            (
                "drain: seconds / notifications/s (steady)",
                format!(
                    "{:.1} / {:.0} ({:.0})",
                    self.drain_seconds, self.drain_per_s, self.drain_steady_per_s
                ),
            ),
            (
                "missing / duplicates / order violations",
                format!(
                    "{} / {} / {}",
                    self.missing, self.duplicates, self.order_violations
                ),
            ),
        ];
        let w = rows
            .iter()
            .map(|(n, _)| n.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = format!("backlog of {} notifications\n", self.notifications_target);
        for (n, v) in rows {
            out.push_str(&format!(
                "| {n}{} | {v} |\n",
                " ".repeat(w - n.chars().count())
            ));
        }
        out
    }
}

/// Samples a process's VmRSS every `every` until `stop` is set.
fn sample_rss(
    pid: u32,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(f64, u64)>> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Some(rss) = stats::status_bytes(pid, "VmRSS:") {
                samples.push((start.elapsed().as_secs_f64(), rss));
            }
            tokio::time::sleep(every).await;
        }
        samples
    })
}

/// The receiver's port must be outside the ephemeral range: while it is down, the service's
/// many refused connects could otherwise pick it as their own source port and connect to
/// themselves (TCP simultaneous open), keeping it busy when the receiver comes back.
async fn black_hole_below_ephemeral_ports() -> anyhow::Result<BlackHole> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    for _ in 0..200 {
        let port = fastrand::u16(10_000..low.max(10_001));
        if let Ok(h) = BlackHole::start(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await {
            return Ok(h);
        }
    }
    anyhow::bail!("no free port below the ephemeral range for the receiver")
}

/// Starts the receiver on the address the black hole had, retrying while the port is
/// still held by closing sockets.
async fn bind_again(addr: std::net::SocketAddr) -> anyhow::Result<Receiver> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Receiver::start(addr).await {
            Ok(r) => return Ok(r),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "the receiver cannot listen on {addr} again: {e}"
                ))
            }
        }
    }
}

/// Transactions of the mix needed for at least `notifications` notifications.
fn transactions_for(notifications: u64) -> u64 {
    let (_, per20) = mix::totals(0, 20);
    let mut n = notifications * 20 / per20;
    while mix::totals(0, n).1 < notifications {
        n += 1;
    }
    n
}

pub async fn run(
    args: &BenchArgs,
    client: &reqwest::Client,
    dir: &Path,
    run_id: &str,
    notifications: u64,
) -> anyhow::Result<BacklogReport> {
    let transactions = transactions_for(notifications);
    let binary = args.service_binary()?;
    let hole = black_hole_below_ephemeral_ports().await?;
    let receiver_addr = hole.addr;
    let schedule = format!(
        "[{}]",
        vec![format!("\"{RETRY_DELAY}\""); RETRIES].join(",")
    );
    let settings = vec![
        ("GBDS_DELIVERY_RETRY_SCHEDULE".to_owned(), schedule),
        (
            "GBDS_DELIVERY_REQUEST_TIMEOUT".to_owned(),
            REQUEST_TIMEOUT.to_owned(),
        ),
    ];
    let config = ServiceConfig {
        db: dir.join("backlog.db"),
        receiver_url: format!("http://{receiver_addr}/notify"),
        synchronous: args.synchronous.as_str().to_owned(),
        extra: settings.clone(),
    };
    let mut report = BacklogReport {
        notifications_target: notifications,
        transactions,
        settings: settings
            .iter()
            .map(|(k, v)| {
                let shown = if k.ends_with("RETRY_SCHEDULE") {
                    format!("[\"{RETRY_DELAY}\" × {RETRIES}]")
                } else {
                    v.clone()
                };
                (k.clone(), shown)
            })
            .chain([(
                "GBDS_STORE_SYNCHRONOUS".to_owned(),
                args.synchronous.as_str().to_owned(),
            )])
            .collect(),
        ..BacklogReport::default()
    };

    // 1. Accumulate with the receiver down.
    let log = dir.join("backlog-service.log");
    let (first, _) = Service::child(client, &binary, &config, &log).await?;
    let pid = first.pid().expect("a child has a pid");
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(pid, Duration::from_secs(2), stop_sampling.clone());
    let target = Target {
        base: first.base().to_owned(),
        token: Some(service::TOKEN.to_owned()),
    };
    let phase = Phase {
        prefix: format!("{run_id}-bl"),
        first: 0,
        count: transactions,
    };
    eprintln!(
        "backlog: driving {transactions} transactions ({notifications} notifications) with the receiver down"
    );
    let started = Instant::now();
    let progress = {
        let db = config.db.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(15)).await;
                eprintln!(
                    "backlog: {:.0} s, {} notifications stored, service RSS {:.1} MB",
                    started.elapsed().as_secs_f64(),
                    stats::database_notifications(&db).unwrap_or(0),
                    stats::status_bytes(pid, "VmRSS:").unwrap_or(0) as f64 / 1e6
                );
            }
        })
    };
    let driven = driver::drive(
        &target,
        &phase,
        Load::Closed {
            concurrency: args.concurrency,
        },
    )
    .await;
    progress.abort();
    report.accumulate_seconds = started.elapsed().as_secs_f64();
    report.accumulate_api_calls_per_s = driven.calls as f64 / report.accumulate_seconds;
    report.accumulate_api_errors = driven.errors;
    if let Some(e) = &driven.first_error {
        eprintln!("backlog: first error while accumulating: {e}");
    }
    stop_sampling.store(true, Ordering::Relaxed);
    report.rss_accumulating = sampler.await?;
    report.peak_rss_accumulating_bytes = stats::status_bytes(pid, "VmHWM:");
    report.accumulated = stats::database_notifications(&config.db).unwrap_or(0);

    // 2. Stop it (in-flight POSTs sit in the black hole until the shutdown grace ends).
    let stopping = Instant::now();
    first.stop().await?;
    report.stop_seconds = stopping.elapsed().as_secs_f64();
    report.database_bytes = stats::database_bytes(&config.db);
    hole.close().await;
    eprintln!(
        "backlog: {} notifications stored ({:.0} MB); restarting the service",
        report.accumulated,
        report.database_bytes as f64 / 1e6
    );

    // 3. Restart on the full database: time to healthy.
    let (second, healthy_after) = Service::child(client, &binary, &config, &log).await?;
    report.restart_to_healthy_ms = healthy_after.as_secs_f64() * 1000.0;
    let pid = second.pid().expect("a child has a pid");
    let cpu_before = stats::process_cpu_s(pid);

    // 4. The receiver comes back: drain.
    let receiver = bind_again(receiver_addr).await?;
    let back = now_ns();
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(pid, Duration::from_secs(2), stop_sampling.clone());
    let acked: u64 = driven
        .acks
        .iter()
        .map(|t| t.iter().filter(|a| **a != 0).count() as u64)
        .sum();
    let deadline = Instant::now() + args.drain_timeout.max(Duration::from_secs(1800));
    let mut last_report = Instant::now();
    while receiver.shared.unique() < acked && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if last_report.elapsed() > Duration::from_secs(15) {
            last_report = Instant::now();
            eprintln!(
                "backlog: draining, {} of {acked} delivered, service RSS {:.1} MB",
                receiver.shared.unique(),
                stats::status_bytes(pid, "VmRSS:").unwrap_or(0) as f64 / 1e6
            );
        }
    }
    stop_sampling.store(true, Ordering::Relaxed);
    report.rss_draining = sampler.await?;
    report.peak_rss_draining_bytes = stats::status_bytes(pid, "VmHWM:");
    report.service_cpu_draining_s = match (cpu_before, stats::process_cpu_s(pid)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let snapshot = receiver
        .shared
        .snapshot(Some(&format!("{}-", phase.prefix)));
    let (mut first_at, mut last_at) = (i64::MAX, 0i64);
    for times in snapshot.records.values() {
        for &t in times.iter().filter(|t| **t != 0) {
            first_at = first_at.min(t);
            last_at = last_at.max(t);
        }
    }
    report.drained = snapshot.unique;
    report.missing = acked.saturating_sub(snapshot.unique);
    report.duplicates = snapshot.duplicates;
    report.order_violations = snapshot.order_violations;
    report.order_examples = snapshot.examples;
    if last_at > back {
        report.drain_seconds = (last_at - back) as f64 / 1e9;
        report.drain_per_s = report.drained as f64 / report.drain_seconds;
    }
    if last_at > first_at {
        report.drain_steady_per_s = report.drained as f64 / ((last_at - first_at) as f64 / 1e9);
    }
    second.stop().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    #[test]
    fn enough_transactions_are_driven_for_the_asked_notifications() {
        let n = super::transactions_for(1_000_000);
        assert!(super::mix::totals(0, n).1 >= 1_000_000);
        assert!(super::mix::totals(0, n - 1).1 < 1_000_000);
    }
}
