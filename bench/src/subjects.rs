//! One run of each subject: the service end to end, and the ceilings it is compared with
//! (an HTTP server that does nothing, the service's store without HTTP, a minimal SQLite
//! write loop), each turned into a `RunReport`.

use std::path::Path;

use crate::context::{load_label, measured_load, Context, Observer};
use crate::driver::{self, Load, Phase, Target};
use crate::report::{RunReport, Subject};
use crate::service::{self, Service, ServiceConfig};
use crate::stats::{self, Percentiles};
use crate::{baselines, mix};

/// One run against gbds-notifier: warm-up, then the measured phase, then the figures.
pub(crate) async fn service_run(
    ctx: &Context,
    observer: &Observer,
    run: usize,
) -> anyhow::Result<RunReport> {
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
                    &args.service_binary()?,
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
pub(crate) async fn http_ceiling(ctx: &Context, run: usize) -> anyhow::Result<RunReport> {
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

/// The service's own writes without HTTP: its store driven in this process at the same
/// concurrency, on a database of its own (see `store_ceiling`).
pub(crate) async fn store_ceiling(ctx: &Context, run: usize) -> anyhow::Result<RunReport> {
    let args = &ctx.args;
    let load_average_before = stats::load_average();
    let config = ServiceConfig {
        db: ctx.dir.join(format!("store-{run}.db")),
        // Never called: the null dispatcher reports every delivery delivered.
        receiver_url: "http://127.0.0.1:9/".to_owned(),
        synchronous: args.synchronous.as_str().to_owned(),
        extra: Vec::new(),
    };
    let threads_before = stats::thread_cpu();
    let s = crate::store_ceiling::store_ceiling(
        &config,
        args.warmup,
        args.transactions,
        args.concurrency,
        args.drain_timeout,
    )
    .await?;
    let threads_after = stats::thread_cpu();
    remove_database(&config.db);
    let secs = s.elapsed.as_secs_f64();
    Ok(RunReport {
        subject: Some(Subject::Store),
        run,
        load: format!("in process, no HTTP, closed loop c={}", args.concurrency),
        synchronous: args.synchronous.as_str().to_owned(),
        transactions: args.transactions,
        api_calls: s.calls,
        api_errors: s.errors,
        first_error: s.first_error,
        notifications_expected: s.notifications,
        notifications_delivered: s.delivered,
        notifications_missing: s.notifications.saturating_sub(s.delivered),
        api_seconds: secs,
        e2e_seconds: secs,
        api_calls_per_s: Some(s.calls as f64 / secs),
        notifications_per_s: Some(s.delivered as f64 / secs),
        database_bytes: Some(s.database_bytes),
        database_notifications: s.database_notifications,
        database_bytes_per_notification: s
            .database_notifications
            .filter(|n| *n > 0)
            .map(|n| s.database_bytes as f64 / n as f64),
        cpu_attribution: "per thread: the store's writer and readers, and the `bench` runtime \
            driving the calls and reporting the deliveries, over the warm-up and measured phases"
            .to_owned(),
        threads_cpu_s: stats::threads_by_name(&threads_before, &threads_after),
        load_average_before,
        load_average_after: stats::load_average(),
        ..RunReport::default()
    })
}

/// What a notification needs, for the same transactions, written by one thread in a minimal
/// schema, a batch per commit.
pub(crate) async fn disk_ceiling(ctx: &Context, run: usize) -> anyhow::Result<RunReport> {
    let args = &ctx.args;
    let load_average_before = stats::load_average();
    let path = ctx.dir.join(format!("disk-minimal-{run}.db"));
    let (sync, count, batch) = (
        args.synchronous.as_str(),
        args.transactions,
        args.concurrency,
    );
    let p = path.clone();
    let d = tokio::task::spawn_blocking(move || baselines::disk_ceiling(&p, sync, count, batch))
        .await??;
    remove_database(&path);
    let secs = d.elapsed.as_secs_f64();
    Ok(RunReport {
        subject: Some(Subject::DiskNull),
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
