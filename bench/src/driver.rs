//! The load: benchmark transactions driven through the REST API over keep-alive connections
//! (`http::Pool`), in a closed loop (C workers, each running one transaction's calls after
//! another) or an open loop (transactions started on a fixed schedule, whatever the answers).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::http::Pool;
use crate::mix::{self, Kind, MAX_NOTIFICATIONS};
use crate::receiver::Times;
use crate::stats::now_ns;

/// Where the calls go.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port`, without a trailing slash.
    pub base: String,
    pub token: Option<String>,
}

/// A contiguous range of benchmark transactions, named by a tguid prefix unique to the phase.
#[derive(Debug, Clone)]
pub struct Phase {
    pub prefix: String,
    pub first: u64,
    pub count: u64,
}

/// How the calls are paced.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// `concurrency` workers; each starts its next transaction when the last one is done.
    Closed { concurrency: usize },
    /// Transactions started at `per_s`, whatever the service's answers, for `count` of them.
    Open { per_s: f64 },
}

/// What driving a phase came to.
#[derive(Debug, Default)]
pub struct Driven {
    /// When the first call was sent and the last answer read (Unix ns).
    pub started_ns: i64,
    pub finished_ns: i64,
    /// Calls answered 2xx.
    pub calls: u64,
    /// Calls that failed (non-2xx or transport); a transaction stops at its first failure.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Latency of every successful call, µs, from sending to the whole answer read.
    pub latencies_us: Vec<u64>,
    /// Per transaction (index − first): when each of its notifications was acknowledged,
    /// i.e. when the answer of the call whose commit recorded it was read (Unix ns).
    pub acks: Vec<Times>,
    /// Open loop: the latest a transaction started after its scheduled time, µs.
    pub schedule_lag_max_us: u64,
}

impl Driven {
    fn absorb(&mut self, w: Worker, first: u64) {
        self.calls += w.calls;
        self.errors += w.errors;
        if self.first_error.is_none() {
            self.first_error = w.first_error;
        }
        self.latencies_us.extend(w.latencies_us);
        for (i, t) in w.acks {
            self.acks[(i - first) as usize] = t;
        }
        self.finished_ns = self.finished_ns.max(w.last_ns);
    }
}

#[derive(Default)]
struct Worker {
    calls: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_us: Vec<u64>,
    acks: Vec<(u64, Times)>,
    last_ns: i64,
}

/// How long one call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Drives every transaction of `phase` to its end.
pub async fn drive(target: &Target, phase: &Phase, load: Load) -> Driven {
    let client = match Pool::new(&target.base) {
        Ok(pool) => Arc::new(pool),
        Err(e) => {
            return Driven {
                errors: phase.count,
                first_error: Some(e.to_string()),
                acks: vec![[0; MAX_NOTIFICATIONS]; phase.count as usize],
                ..Driven::default()
            }
        }
    };
    let target = Arc::new(target.clone());
    let prefix: Arc<str> = phase.prefix.as_str().into();
    let mut out = Driven {
        acks: vec![[0; MAX_NOTIFICATIONS]; phase.count as usize],
        started_ns: now_ns(),
        ..Driven::default()
    };
    let end = phase.first + phase.count;
    match load {
        Load::Closed { concurrency } => {
            let next = Arc::new(AtomicU64::new(phase.first));
            let mut workers = JoinSet::new();
            for _ in 0..concurrency.max(1) {
                let (client, target, prefix, next) =
                    (client.clone(), target.clone(), prefix.clone(), next.clone());
                workers.spawn(async move {
                    let mut w = Worker::default();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= end {
                            break;
                        }
                        transaction(&client, &target, &prefix, i, &mut w).await;
                    }
                    w
                });
            }
            while let Some(w) = workers.join_next().await {
                out.absorb(w.expect("a worker does not panic"), phase.first);
            }
        }
        Load::Open { per_s } => {
            let interval = Duration::from_secs_f64(1.0 / per_s.max(1e-3));
            let start = Instant::now();
            let mut running = JoinSet::new();
            for (k, i) in (phase.first..end).enumerate() {
                let due = start + interval.mul_f64(k as f64);
                tokio::time::sleep_until(due.into()).await;
                let lag = due.elapsed().as_micros() as u64;
                out.schedule_lag_max_us = out.schedule_lag_max_us.max(lag);
                let (client, target, prefix) = (client.clone(), target.clone(), prefix.clone());
                running.spawn(async move {
                    let mut w = Worker::default();
                    transaction(&client, &target, &prefix, i, &mut w).await;
                    w
                });
                while let Some(done) = running.try_join_next() {
                    out.absorb(done.expect("a transaction does not panic"), phase.first);
                }
            }
            while let Some(done) = running.join_next().await {
                out.absorb(done.expect("a transaction does not panic"), phase.first);
            }
        }
    }
    out
}

/// One transaction's calls, in order; stops at the first failure.
async fn transaction(client: &Pool, target: &Target, prefix: &str, i: u64, w: &mut Worker) {
    let kind = Kind::for_index(i);
    let tguid = mix::tguid(prefix, i);
    let mut acks = [0; MAX_NOTIFICATIONS];
    let mut recorded = 0;
    for &(call, notifications) in kind.calls() {
        let (path, body) = mix::request(call, &tguid);
        let sent = Instant::now();
        let call = client.post(&path, target.token.as_deref(), body.as_bytes());
        let failure = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(answer)) if (200..300).contains(&answer.status) => None,
            Ok(Ok(answer)) => Some(format!(
                "HTTP {} on POST {path}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            )),
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("POST {path}: no answer in {CALL_TIMEOUT:?}")),
        };
        let at = now_ns();
        w.last_ns = at;
        if let Some(f) = failure {
            w.errors += 1;
            w.first_error.get_or_insert(f);
            break;
        }
        w.calls += 1;
        w.latencies_us.push(sent.elapsed().as_micros() as u64);
        for slot in &mut acks[recorded..recorded + notifications] {
            *slot = at;
        }
        recorded += notifications;
    }
    w.acks.push((i, acks));
}
