//! `gbds-notifier bench`: the load generator of issue 5, with the machine's null baselines.
//!
//! - [`mix`]: the realistic mix — which calls each transaction makes, which notifications follow.
//! - [`driver`]: drives the mix through the REST API (closed or open loop), timing every call.
//! - [`receiver`]: a fast receiver that timestamps each POST and checks per-transaction order.
//! - [`service`]: the service under test — in this process, a child process, or `--target`.
//! - [`baselines`]: the ceilings — a do-nothing HTTP server and a bare SQLite write loop.
//! - [`backlog`]: the 1,000,000-notification backlog scenario (`--backlog N`).
//! - [`stats`] and [`report`]: percentiles, /proc readings, the printed table and the JSON.
//!
//! Everything the benchmark itself runs is on a runtime whose threads are named `bench`; an
//! in-process service runs on threads named `svc`, so their CPU time can be told apart.

pub mod backlog;
pub mod baselines;
pub mod driver;
pub mod http;
pub mod mix;
pub mod receiver;
pub mod report;
pub mod service;
pub mod stats;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use baselines::DiskSchema;
use driver::{Load, Phase, Target};
use receiver::{Receiver, Snapshot};
use report::{RunReport, Subject};
use service::{Service, ServiceConfig};
use stats::{now_ns, Percentiles};

/// The `bench` subcommand's options.
#[derive(clap::Args, Debug, Clone)]
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
    /// A receiver already running (`gbds-notifier bench --serve-receiver ADDR`), instead of
    /// the in-process one; its `/_bench/records` gives the delivery times.
    #[arg(long)]
    pub receiver: Option<String>,
    /// Where the in-process receiver listens (default: a free port; 127.0.0.1:9000 with --target).
    #[arg(long)]
    pub receiver_listen: Option<SocketAddr>,
    /// The durability of the service the benchmark starts (and of the disk ceiling).
    #[arg(long, value_enum, default_value = "FULL")]
    pub synchronous: Synchronous,
    /// Start the service as a child process (`gbds-notifier serve`) instead of in-process.
    #[arg(long)]
    pub spawn: bool,
    /// Measure only the machine's ceilings (HTTP null server, SQLite write loop).
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

/// The machine the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub load_average_start: Option<f64>,
    pub load_average_end: Option<f64>,
}

impl Machine {
    fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            load_average_start: stats::load_average(),
            load_average_end: None,
        }
    }
}

/// Everything one invocation measured (what `--json` writes).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub tool: String,
    pub command: Vec<String>,
    pub machine: Machine,
    pub runs: Vec<RunReport>,
    pub medians: Vec<report::Medians>,
    /// Service ÷ the lower of the HTTP ceiling and the disk ceiling (the same writes).
    pub ratio: Option<report::Ratio>,
    /// Service ÷ the lower of the HTTP ceiling and the minimal-schema disk run.
    pub ratio_minimal_schema: Option<report::Ratio>,
    pub backlog: Option<backlog::BacklogReport>,
    pub table: String,
}

/// Runs the benchmark on its own runtime; prints the table; writes the JSON.
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench")
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(run(args.clone()))?;
    let Some(outcome) = outcome else {
        return Ok(());
    };
    if !args.quiet {
        println!("{}", outcome.table);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&outcome)?)?;
        eprintln!("wrote {}", path.display());
    }
    let problems = outcome
        .runs
        .iter()
        .map(|r| r.api_errors + r.notifications_missing + r.order_violations)
        .sum::<u64>();
    if problems > 0 {
        anyhow::bail!("the run had errors, missing notifications or order violations (see above)");
    }
    Ok(())
}

/// Where deliveries are observed.
enum Observer {
    Local(Receiver),
    /// A receiver in another process, read over HTTP.
    Remote(String),
}

impl Observer {
    fn url(&self) -> String {
        match self {
            Observer::Local(r) => r.url(),
            Observer::Remote(u) => u.clone(),
        }
    }

    async fn snapshot(
        &self,
        client: &reqwest::Client,
        prefix: Option<&str>,
    ) -> anyhow::Result<Snapshot> {
        match self {
            Observer::Local(r) => Ok(r.shared.snapshot(prefix)),
            Observer::Remote(u) => receiver::fetch(client, u, prefix).await,
        }
    }

    async fn unique(&self, client: &reqwest::Client) -> anyhow::Result<u64> {
        match self {
            Observer::Local(r) => Ok(r.shared.unique()),
            Observer::Remote(_) => Ok(self.snapshot(client, None).await?.unique),
        }
    }

    /// Waits until `count` distinct notifications have arrived, or `timeout` passed.
    async fn wait_for(
        &self,
        client: &reqwest::Client,
        count: u64,
        timeout: Duration,
    ) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        let pause = match self {
            Observer::Local(_) => Duration::from_millis(2),
            Observer::Remote(_) => Duration::from_millis(50),
        };
        loop {
            if self.unique(client).await? >= count {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            tokio::time::sleep(pause).await;
        }
    }
}

/// What every run of an invocation shares.
struct Context {
    args: BenchArgs,
    /// For what is not the load: health checks, the receiver's records (the load goes
    /// through `driver`'s own connections).
    client: reqwest::Client,
    dir: PathBuf,
    /// Distinguishes this invocation's tguids from any other's in the same database.
    run_id: String,
}

/// The benchmark proper; None when it only served a receiver.
pub async fn run(args: BenchArgs) -> anyhow::Result<Option<Outcome>> {
    if let Some(listen) = args.serve_receiver {
        let r = Receiver::start(listen).await?;
        eprintln!(
            "bench receiver on {} (records: GET /_bench/records?prefix=…); Ctrl-C stops it",
            r.url()
        );
        tokio::signal::ctrl_c().await?;
        let s = r.shared.snapshot(None);
        eprintln!(
            "received {} POSTs, {} distinct, {} duplicates, {} order violations",
            s.posts, s.unique, s.duplicates, s.order_violations
        );
        return Ok(None);
    }
    if args.rate.is_some() && (args.baseline || args.compare) {
        anyhow::bail!(
            "the ceilings are measured in a closed loop: drop --rate, or --baseline/--compare"
        );
    }
    if args.target.is_some() && args.backlog.is_some() {
        anyhow::bail!("--backlog starts and restarts its own service; it cannot use --target");
    }
    let mut machine = Machine::read();
    let dir = std::env::temp_dir().join(format!(
        "gbds-bench-{}-{}",
        std::process::id(),
        now_ns() % 1_000_000_000
    ));
    std::fs::create_dir_all(&dir)?;
    let ctx = Context {
        client: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()?,
        dir: dir.clone(),
        run_id: format!("b{:x}", now_ns() / 1_000_000 % 0xff_ffff),
        args,
    };
    let result = measure(&ctx).await;
    if ctx.args.keep {
        eprintln!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (runs, backlog) = result?;
    machine.load_average_end = stats::load_average();
    let medians = Subject::ALL
        .into_iter()
        .filter_map(|s| report::medians(&runs, s))
        .collect();
    let mut table = if runs.is_empty() {
        String::new()
    } else {
        report::table(&runs)
    };
    if let Some(b) = &backlog {
        table.push_str(&b.table());
    }
    for r in &runs {
        if let Some(e) = &r.first_error {
            table.push_str(&format!(
                "run {} {}: first error: {e}\n",
                r.run,
                r.subject.map_or("", |s| s.label())
            ));
        }
        for e in &r.order_examples {
            table.push_str(&format!("run {}: order violation: {e}\n", r.run));
        }
    }
    table.push_str(&format!(
        "machine: {} × {}, Linux {}, load average {} → {}\n",
        machine.nproc,
        machine.cpu_model,
        machine.kernel,
        machine
            .load_average_start
            .map_or("?".into(), |l| format!("{l:.2}")),
        machine
            .load_average_end
            .map_or("?".into(), |l| format!("{l:.2}")),
    ));
    Ok(Some(Outcome {
        tool: concat!("gbds-notifier ", env!("CARGO_PKG_VERSION")).to_owned(),
        command: std::env::args().collect(),
        machine,
        ratio: report::ratio(&runs, Subject::DiskSame),
        ratio_minimal_schema: report::ratio(&runs, Subject::DiskNull),
        medians,
        runs,
        backlog,
        table,
    }))
}

async fn measure(
    ctx: &Context,
) -> anyhow::Result<(Vec<RunReport>, Option<backlog::BacklogReport>)> {
    if let Some(n) = ctx.args.backlog {
        let b = backlog::run(&ctx.args, &ctx.client, &ctx.dir, &ctx.run_id, n).await?;
        return Ok((Vec::new(), Some(b)));
    }
    let observer = match (&ctx.args.receiver, ctx.args.baseline && !ctx.args.compare) {
        (_, true) => None,
        (Some(url), _) => Some(Observer::Remote(url.clone())),
        (None, _) => {
            let listen = ctx.args.receiver_listen.unwrap_or_else(|| {
                if ctx.args.target.is_some() {
                    SocketAddr::from(([127, 0, 0, 1], 9000))
                } else {
                    SocketAddr::from(([127, 0, 0, 1], 0))
                }
            });
            let r = Receiver::start(listen).await?;
            if ctx.args.target.is_some() {
                eprintln!(
                    "bench receiver on {}: the target's endpoint must point there",
                    r.url()
                );
            }
            Some(Observer::Local(r))
        }
    };
    let mut runs = Vec::new();
    for run in 0..ctx.args.runs.max(1) {
        if ctx.args.baseline || ctx.args.compare {
            eprintln!("run {run}: HTTP ceiling");
            runs.push(http_ceiling(ctx, run).await?);
            eprintln!("run {run}: disk ceiling (the service's writes)");
            runs.push(disk_ceiling(ctx, run, DiskSchema::Service).await?);
            eprintln!("run {run}: disk, minimal schema");
            runs.push(disk_ceiling(ctx, run, DiskSchema::Minimal).await?);
        }
        if let Some(observer) = &observer {
            eprintln!("run {run}: gbds-notifier");
            runs.push(service_run(ctx, observer, run).await?);
            if let Observer::Local(r) = observer {
                r.shared.forget();
            }
        }
    }
    Ok((runs, None))
}

fn load_label(args: &BenchArgs) -> String {
    match args.rate {
        Some(r) => format!(
            "open loop {r} {}/s for {:?}",
            match args.rate_unit {
                RateUnit::Notifications => "notifications",
                RateUnit::Calls => "calls",
            },
            args.duration
        ),
        None => format!("closed loop c={}", args.concurrency),
    }
}

/// The measured phase's size and pacing.
fn measured_load(args: &BenchArgs) -> (u64, Load) {
    match args.rate {
        None => (
            args.transactions,
            Load::Closed {
                concurrency: args.concurrency,
            },
        ),
        Some(rate) => {
            // Per transaction of the mix: 2.25 calls, 1.35 notifications.
            let (calls, notes) = mix::totals(0, 20);
            let per_tx = match args.rate_unit {
                RateUnit::Notifications => notes as f64 / 20.0,
                RateUnit::Calls => calls as f64 / 20.0,
            };
            let per_s = rate / per_tx;
            let count = (per_s * args.duration.as_secs_f64()).round().max(1.0) as u64;
            (count, Load::Open { per_s })
        }
    }
}

/// One run against gbds-notifier: warm-up, then the measured phase, then the figures.
async fn service_run(ctx: &Context, observer: &Observer, run: usize) -> anyhow::Result<RunReport> {
    let args = &ctx.args;
    let load_average_before = stats::load_average();
    let db = ctx.dir.join(format!("service-{run}.db"));
    let config = ServiceConfig {
        db: db.clone(),
        receiver_url: observer.url(),
        synchronous: args.synchronous.as_str().to_owned(),
        extra: Vec::new(),
    };
    // Peak RSS from here on (Linux ≥ 4.0: writing 5 to clear_refs resets VmHWM).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (service, target) = match &args.target {
        Some(url) => (
            Service::External {
                base: url.trim_end_matches('/').to_owned(),
                pid: args.service_pid,
                db: args.db.clone(),
            },
            Target {
                base: url.trim_end_matches('/').to_owned(),
                token: args.token.clone(),
            },
        ),
        None => {
            let service = if args.spawn {
                Service::child(
                    &ctx.client,
                    &config,
                    &ctx.dir.join(format!("service-{run}.log")),
                )
                .await?
                .0
            } else {
                Service::in_process(&ctx.client, &config).await?
            };
            let base = service.base().to_owned();
            (
                service,
                Target {
                    base,
                    token: Some(service::TOKEN.to_owned()),
                },
            )
        }
    };
    let result = measured_service_phase(ctx, observer, run, &service, &target).await;
    let stopped = service.stop().await;
    let mut report = result?;
    stopped?;
    report.load_average_before = load_average_before;
    report.load_average_after = stats::load_average();
    Ok(report)
}

async fn measured_service_phase(
    ctx: &Context,
    observer: &Observer,
    run: usize,
    service: &Service,
    target: &Target,
) -> anyhow::Result<RunReport> {
    let args = &ctx.args;
    let client = &ctx.client;
    if args.warmup > 0 {
        let phase = Phase {
            prefix: format!("{}-{run}w", ctx.run_id),
            first: 0,
            count: args.warmup,
        };
        let before = observer.unique(client).await?;
        let driven = driver::drive(
            target,
            &phase,
            Load::Closed {
                concurrency: args.concurrency,
            },
        )
        .await;
        if let Some(e) = driven.first_error {
            anyhow::bail!("warm-up failed: {e}");
        }
        let (_, notes) = mix::totals(0, args.warmup);
        observer
            .wait_for(client, before + notes, args.drain_timeout)
            .await?;
    }

    let (count, load) = measured_load(args);
    let phase = Phase {
        prefix: format!("{}-{run}m", ctx.run_id),
        first: 0,
        count,
    };
    let pid = service.pid();
    let cpu_before = pid.and_then(stats::process_cpu_s);
    let threads_before = stats::thread_cpu();
    let unique_before = observer.unique(client).await?;

    let driven = driver::drive(target, &phase, load).await;

    let acked: u64 = driven
        .acks
        .iter()
        .map(|t| t.iter().filter(|a| **a != 0).count() as u64)
        .sum();
    observer
        .wait_for(client, unique_before + acked, args.drain_timeout)
        .await?;
    let cpu_after = pid.and_then(stats::process_cpu_s);
    let threads_after = stats::thread_cpu();
    let snapshot = observer
        .snapshot(client, Some(&format!("{}-", phase.prefix)))
        .await?;

    let mut report = RunReport {
        subject: Some(Subject::Service),
        run,
        load: load_label(args),
        synchronous: args.synchronous.as_str().to_owned(),
        transactions: count,
        schedule_lag_max_us: matches!(load, Load::Open { .. })
            .then_some(driven.schedule_lag_max_us),
        ..RunReport::default()
    };
    fill_api(&mut report, &driven);
    report.notifications_expected = mix::totals(0, count).1;

    // Deliveries matched to acks by tguid + status (= position in the transaction's script).
    let mut delays = Vec::new();
    let mut last_delivery = driven.started_ns;
    let mut delivered = 0u64;
    for (k, acks) in driven.acks.iter().enumerate() {
        let tguid = mix::tguid(&phase.prefix, k as u64);
        let times = snapshot.records.get(&tguid);
        for (j, ack) in acks.iter().enumerate() {
            let at = times.map_or(0, |t| t[j]);
            if at != 0 {
                delivered += 1;
                last_delivery = last_delivery.max(at);
            }
            match (*ack, at) {
                (0, _) => {}
                (_, 0) => report.notifications_missing += 1,
                (ack, at) => {
                    if at < ack {
                        report.delivered_before_ack_read += 1;
                    }
                    delays.push(((at - ack).max(0) / 1000) as u64);
                }
            }
        }
    }
    report.notifications_delivered = delivered;
    report.duplicates = snapshot.duplicates;
    report.order_violations = snapshot.order_violations;
    report.order_examples = snapshot.examples.clone();
    report.ack_to_delivery_us = Percentiles::of(delays);
    report.e2e_seconds = (last_delivery - driven.started_ns) as f64 / 1e9;
    if report.e2e_seconds > 0.0 {
        report.notifications_per_s = Some(delivered as f64 / report.e2e_seconds);
    }

    // CPU: see `cpu_attribution`.
    if service.is_in_process() {
        let is_bench = |name: &str| name.starts_with("bench") || name == main_thread_name();
        let service_s = stats::threads_cpu_s(&threads_before, &threads_after, |n| !is_bench(n));
        report.service_cpu_s = Some(service_s);
        report.bench_cpu_s = Some(stats::threads_cpu_s(
            &threads_before,
            &threads_after,
            is_bench,
        ));
        report.cpu_attribution = "in-process: CPU time over the measured phase of every thread of this process except the \
            benchmark's (the `bench` runtime running driver and receiver, and the main thread), from \
            /proc/self/task/*/schedstat; threads that exit mid-phase would be missed (runtimes keep them 1 h)"
            .to_owned();
        let by_name = stats::threads_by_name(&threads_before, &threads_after);
        report.threads_cpu_s = by_name;
        report.rss_note =
            "VmHWM of this process since the service started: service + driver + receiver"
                .to_owned();
    } else if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        report.service_cpu_s = Some(b - a);
        report.cpu_attribution = format!(
            "the service process ({}): utime + stime from /proc/{}/stat over the measured phase",
            pid.unwrap_or(0),
            pid.unwrap_or(0)
        );
        report.rss_note = "VmHWM of the service process".to_owned();
    } else {
        report.cpu_attribution = "not measured: give --service-pid for a --target".to_owned();
    }
    if let (Some(cpu), true) = (report.service_cpu_s, delivered > 0) {
        report.service_cpu_us_per_notification = Some(cpu * 1e6 / delivered as f64);
    }
    report.peak_rss_bytes = pid.and_then(|p| stats::status_bytes(p, "VmHWM:"));
    if let Some(db) = service.db() {
        let bytes = stats::database_bytes(db);
        let notes = stats::database_notifications(db);
        report.database_bytes = Some(bytes);
        report.database_notifications = notes;
        report.database_bytes_per_notification =
            notes.filter(|n| *n > 0).map(|n| bytes as f64 / n as f64);
    }
    Ok(report)
}

/// The main thread is named after the executable.
fn main_thread_name() -> String {
    std::fs::read_to_string(format!("/proc/self/task/{}/comm", std::process::id()))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn fill_api(report: &mut RunReport, driven: &driver::Driven) {
    report.api_calls = driven.calls;
    report.api_errors = driven.errors;
    report.first_error = driven.first_error.clone();
    report.api_seconds = (driven.finished_ns - driven.started_ns) as f64 / 1e9;
    if report.api_seconds > 0.0 {
        report.api_calls_per_s = Some(driven.calls as f64 / report.api_seconds);
    }
    report.api_latency_us = Percentiles::of(driven.latencies_us.clone());
}

/// The same calls against a server that answers 200 and does nothing else.
async fn http_ceiling(ctx: &Context, run: usize) -> anyhow::Result<RunReport> {
    let args = &ctx.args;
    let load_average_before = stats::load_average();
    let server = baselines::NullServer::start()?;
    let target = Target {
        base: server.base(),
        token: Some(service::TOKEN.to_owned()),
    };
    let load = Load::Closed {
        concurrency: args.concurrency,
    };
    if args.warmup > 0 {
        let phase = Phase {
            prefix: format!("{}-{run}hw", ctx.run_id),
            first: 0,
            count: args.warmup,
        };
        driver::drive(&target, &phase, load).await;
    }
    let phase = Phase {
        prefix: format!("{}-{run}h", ctx.run_id),
        first: 0,
        count: args.transactions,
    };
    let driven = driver::drive(&target, &phase, load).await;
    tokio::task::spawn_blocking(move || drop(server)).await?;
    let (calls, notes) = mix::totals(0, args.transactions);
    let mut report = RunReport {
        subject: Some(Subject::HttpNull),
        run,
        load: load_label(args),
        synchronous: args.synchronous.as_str().to_owned(),
        transactions: args.transactions,
        notifications_expected: notes,
        load_average_before,
        load_average_after: stats::load_average(),
        ..RunReport::default()
    };
    fill_api(&mut report, &driven);
    report.notifications_per_s = report
        .api_calls_per_s
        .map(|c| c * notes as f64 / calls as f64);
    Ok(report)
}

/// The service's rows for the same transactions, written by one thread, a batch per commit,
/// in its own schema or in the minimal one.
async fn disk_ceiling(ctx: &Context, run: usize, schema: DiskSchema) -> anyhow::Result<RunReport> {
    let args = &ctx.args;
    let load_average_before = stats::load_average();
    let (name, subject) = match schema {
        DiskSchema::Service => ("disk", Subject::DiskSame),
        DiskSchema::Minimal => ("disk-minimal", Subject::DiskNull),
    };
    let path = ctx.dir.join(format!("{name}-{run}.db"));
    let (sync, count, batch) = (
        args.synchronous.as_str(),
        args.transactions,
        args.concurrency,
    );
    let p = path.clone();
    let d = tokio::task::spawn_blocking(move || {
        baselines::disk_ceiling(&p, sync, count, batch, schema)
    })
    .await??;
    remove_database(&path);
    let secs = d.elapsed.as_secs_f64();
    Ok(RunReport {
        subject: Some(subject),
        run,
        load: format!("one thread, {batch} calls per commit"),
        synchronous: sync.to_owned(),
        transactions: count,
        api_calls: d.calls,
        notifications_expected: d.notifications,
        notifications_delivered: d.notifications,
        api_seconds: secs,
        e2e_seconds: secs,
        api_calls_per_s: Some(d.calls as f64 / secs),
        notifications_per_s: Some(d.notifications as f64 / secs),
        database_bytes: Some(d.database_bytes),
        database_notifications: Some(d.notifications),
        database_bytes_per_notification: Some(
            d.database_bytes as f64 / d.notifications.max(1) as f64,
        ),
        cpu_attribution: format!("{} commits, {} rows", d.commits, d.rows_written),
        load_average_before,
        load_average_after: stats::load_average(),
        ..RunReport::default()
    })
}

fn remove_database(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
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
