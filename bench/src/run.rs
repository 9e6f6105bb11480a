//! One invocation: what it measures in which order (`measure`) and the outcome it prints
//! and writes as JSON.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::args::BenchArgs;
use crate::context::{Context, Observer};
use crate::receiver::Receiver;
use crate::report::{self, RunReport, Subject};
use crate::stats::{self, now_ns};
use crate::{backlog, subjects};

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
    /// Service ÷ the lower of the HTTP ceiling and the store ceiling (its own writes, no HTTP).
    pub ratio: Option<report::Ratio>,
    /// Service ÷ the lower of the HTTP ceiling and the minimal-schema disk run.
    pub ratio_minimal_schema: Option<report::Ratio>,
    pub backlog: Option<backlog::BacklogReport>,
    pub table: String,
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
        tool: concat!("gbds-bench ", env!("CARGO_PKG_VERSION")).to_owned(),
        command: std::env::args().collect(),
        machine,
        ratio: report::ratio(&runs, Subject::Store),
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
            runs.push(subjects::http_ceiling(ctx, run).await?);
            eprintln!("run {run}: store ceiling (the service's own writes, no HTTP)");
            runs.push(subjects::store_ceiling(ctx, run).await?);
            eprintln!("run {run}: disk, minimal schema");
            runs.push(subjects::disk_ceiling(ctx, run).await?);
        }
        if let Some(observer) = &observer {
            eprintln!("run {run}: gbds-notifier");
            runs.push(subjects::service_run(ctx, observer, run).await?);
            if let Observer::Local(r) = observer {
                r.shared.forget();
            }
        }
    }
    Ok((runs, None))
}
