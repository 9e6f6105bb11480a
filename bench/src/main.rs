//! `gbds-bench`: the load generator for gbds-notifier, with the machine's ceilings.
//!
//! - [`args`]: the command line.
//! - [`run`]: one invocation: what it measures in which order, and its outcome.
//! - [`subjects`]: one run of each subject, the service and its ceilings, as a report.
//! - [`mix`]: the realistic mix — which calls each transaction makes, which notifications follow.
//! - [`driver`]: drives the mix through the REST API (closed or open loop), timing every call,
//!   over the keep-alive connections of [`http`].
//! - [`receiver`]: a fast receiver that timestamps each POST and checks per-transaction order.
//! - [`service`]: the service under test — in this process, a child process, or `--target`.
//! - [`baselines`]: a do-nothing HTTP server and a minimal SQLite write loop.
//! - [`store_ceiling`]: the service's own store, driven in this process without HTTP.
//! - [`backlog`]: the 1,000,000-notification backlog scenario (`--backlog N`).
//! - [`stats`] and [`report`]: percentiles, /proc readings, the printed table and the JSON.
//!
//! Everything the benchmark itself runs is on a runtime whose threads are named `bench`; an
//! in-process service runs on threads named `svc`, so their CPU time can be told apart.

mod args;
mod backlog;
mod baselines;
mod context;
mod driver;
mod http;
mod mix;
mod receiver;
mod report;
mod run;
mod service;
mod stats;
mod store_ceiling;
mod subjects;

use std::time::Duration;

use clap::Parser;

use args::BenchArgs;

/// The allocator the `gbds-notifier` binary ships with, so that the service run in this
/// process (`--compare`) is the service as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs the benchmark on its own runtime; prints the table; writes the JSON.
fn main() -> anyhow::Result<()> {
    // The benchmark prints its own progress; an in-process service says only what goes
    // wrong unless RUST_LOG asks for more.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = BenchArgs::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench")
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(run::run(args.clone()))?;
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
