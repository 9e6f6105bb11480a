//! The inbound benchmark, run by hand (it prints figures and asserts only that nothing was
//! lost):
//!
//! ```text
//! cargo test --release --test it inbound::bench -- --ignored --nocapture
//! ```
//!
//! N SEARCH transactions (register + MATCH: two inputs, one notification each) reach the
//! real binary three ways, each on a fresh database: published to the queue while the service
//! consumes; queued before it starts (a backlog); and through REST at concurrency C. Each
//! figure runs from the first input to the moment the receiver has all N notifications.
//! `GBDS_INBOUND_BENCH_N` (20,000), `GBDS_INBOUND_BENCH_CONCURRENCY` (a list, "16,256": the
//! load generator's headline concurrency, and as many calls in flight as the default
//! prefetch lets messages be) and `GBDS_INBOUND_BENCH_PREFETCH` (the default) change it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::queue::{InboundQueue, Message};
use crate::harness::{Api, ServiceProcess, INGEST};

/// A receiver that only counts, so that recording costs the measurement nothing.
struct Counter {
    url: String,
    seen: watch::Receiver<usize>,
}

impl Counter {
    async fn start() -> Counter {
        let (tx, seen) = watch::channel(0);
        let count = Arc::new((AtomicUsize::new(0), tx));
        let app = axum::Router::new()
            .fallback(
                |axum::extract::State(c): axum::extract::State<
                    Arc<(AtomicUsize, watch::Sender<usize>)>,
                >| async move {
                    let n = c.0.fetch_add(1, Ordering::SeqCst) + 1;
                    c.1.send_replace(n);
                    StatusCode::OK
                },
            )
            .with_state(count);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/notify", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Counter { url, seen }
    }

    /// Waits until `n` POSTs arrived (at most ten minutes); returns when.
    async fn reach(&self, n: usize) -> Instant {
        let mut seen = self.seen.clone();
        tokio::time::timeout(Duration::from_secs(600), seen.wait_for(|s| *s >= n))
            .await
            .unwrap_or_else(|_| panic!("{n} notifications not reached; {}", *self.seen.borrow()))
            .unwrap();
        Instant::now()
    }
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn messages(run: &str, n: usize) -> Vec<Message> {
    (0..n)
        .flat_map(|i| {
            let tguid = format!("tg-bench-{run}-{i}");
            [
                Message::register(&tguid, "SEARCH"),
                Message::event(&tguid, &json!({"type": "MATCH"})),
            ]
        })
        .collect()
}

/// A service consuming `queue` and notifying `counter`, on a fresh database in `dir`.
async fn service(dir: &std::path::Path, queue: &InboundQueue, counter: &Counter) -> ServiceProcess {
    let prefetch = std::env::var("GBDS_INBOUND_BENCH_PREFETCH")
        .map(|p| format!("inbound_prefetch = {p}\n"))
        .unwrap_or_default();
    let extra = format!(
        "{}{prefetch}\n[delivery]\nmax_in_flight = 256\nendpoint_concurrency = 64\n",
        queue.config()
    );
    ServiceProcess::start(dir, &dir.join("bench.db"), &counter.url, &extra).await
}

fn line(what: &str, inputs: usize, notifications: usize, took: Duration) -> String {
    let s = took.as_secs_f64();
    format!(
        "{what:<34} {inputs:>7} inputs {notifications:>7} notifications  {s:>7.2} s  {:>8.0} inputs/s  {:>8.0} notifications/s",
        inputs as f64 / s,
        notifications as f64 / s
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by hand with --release --ignored --nocapture"]
async fn inbound_benchmark_messages_to_notifications_beside_rest() {
    let n = setting("GBDS_INBOUND_BENCH_N", 20_000);
    let concurrencies: Vec<usize> = std::env::var("GBDS_INBOUND_BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "16,256".to_owned())
        .split(',')
        .map(|c| c.trim().parse().expect("a list of client counts"))
        .collect();
    let mut report = Vec::new();

    // 1. Streaming: published while the service consumes.
    {
        let queue = InboundQueue::new().await;
        let counter = Counter::start().await;
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path(), &queue, &counter).await;
        queue.wait_consumed().await;
        let batch = messages("stream", n);
        let start = Instant::now();
        queue.publish(&batch).await;
        let published = start.elapsed();
        let done = counter.reach(n).await;
        report.push(format!(
            "{}  (published in {:.2} s: {:.0} messages/s)",
            line(
                "AMQP, published while consumed",
                batch.len(),
                n,
                done - start
            ),
            published.as_secs_f64(),
            batch.len() as f64 / published.as_secs_f64()
        ));
        queue.wait_acknowledged().await;
        assert!(queue.dead_letters().await.is_empty());
        svc.terminate().await;
        queue.delete().await;
    }

    // 2. Backlog: queued before the service starts.
    {
        let queue = InboundQueue::new().await;
        let counter = Counter::start().await;
        let dir = tempfile::tempdir().unwrap();
        // Started once so that it declares the queue as it wants it, then stopped.
        let svc = service(dir.path(), &queue, &counter).await;
        queue.wait_consumed().await;
        svc.terminate().await;
        let batch = messages("backlog", n);
        queue.publish(&batch).await;
        let start = Instant::now();
        let svc = service(dir.path(), &queue, &counter).await;
        let done = counter.reach(n).await;
        report.push(line(
            "AMQP, a backlog drained",
            batch.len(),
            n,
            done - start,
        ));
        queue.wait_acknowledged().await;
        assert!(queue.dead_letters().await.is_empty());
        svc.terminate().await;
        queue.delete().await;
    }

    // 3. REST: the same inputs as calls, `concurrency` clients.
    for &concurrency in &concurrencies {
        let queue = InboundQueue::new().await;
        let counter = Counter::start().await;
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path(), &queue, &counter).await;
        let start = Instant::now();
        let mut clients = Vec::new();
        for c in 0..concurrency {
            let api = Api::new(svc.api.base.clone());
            clients.push(tokio::spawn(async move {
                for i in (c..n).step_by(concurrency) {
                    let tguid = format!("tg-bench-rest{concurrency}-{i}");
                    api.register(&tguid, "SEARCH").await.ok(201);
                    api.post(
                        &format!("/v1/transactions/{tguid}/events"),
                        Some(INGEST),
                        &json!({"type": "MATCH"}),
                    )
                    .await
                    .ok(200);
                }
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
        let answered = start.elapsed();
        let done = counter.reach(n).await;
        report.push(format!(
            "{}  (all answered in {:.2} s)",
            line(
                &format!("REST, {concurrency} clients"),
                2 * n,
                n,
                done - start
            ),
            answered.as_secs_f64()
        ));
        svc.terminate().await;
        queue.delete().await;
    }

    println!(
        "\ninbound benchmark: {n} SEARCH transactions each way, release binary {}, synchronous FULL, one endpoint",
        env!("CARGO_BIN_EXE_gbds-notifier")
    );
    for l in &report {
        println!("  {l}");
    }
}
