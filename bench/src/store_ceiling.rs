//! The store ceiling: the service's own writes without HTTP. The service's real `Store` (its
//! migrations, its writer thread with its SQL, group commit and handoff) opened in this
//! process with the configuration the benchmark gives a service it starts, and driven by the
//! mix's calls at the same concurrency as the HTTP runs, through the same `register` and
//! `apply` the API handlers call. A null dispatcher takes every delivery the writer hands over
//! (or that it claims) and reports it delivered at once, one completion per delivery as the
//! real dispatcher does. What the service adds on top of this is its HTTP server, the API's
//! parsing and authentication, and the POSTs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gbds_notifier::domain::{Input, Operation, Outcome, Tguid, Treatment, Uguid};
use gbds_notifier::store::{Completion, Handoff, InputRequest, Store, StoreOptions};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::mix::{self, Call, Kind};
use crate::service::ServiceConfig;

/// The actor the transition log records, as for the admin token the benchmark configures.
const ACTOR: &str = "admin";

/// Most deliveries the null dispatcher claims at once.
const CLAIM_BATCH: usize = 256;

/// What a store-ceiling run did.
#[derive(Debug, Clone)]
pub struct StoreRun {
    /// From the first call of the measured phase to the commit that holds the result of its
    /// last delivery.
    pub elapsed: Duration,
    pub calls: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub notifications: u64,
    /// Deliveries reported delivered in the measured phase.
    pub delivered: u64,
    pub database_bytes: u64,
    pub database_notifications: Option<u64>,
}

/// Opens the store on `config.db` as `serve` would with `config`, runs `warmup` transactions
/// of the mix and waits for their deliveries, then times `count` more, `concurrency` at a
/// time, until the result of the last delivery is committed.
pub async fn store_ceiling(
    config: &ServiceConfig,
    warmup: u64,
    count: u64,
    concurrency: usize,
    drain_timeout: Duration,
) -> anyhow::Result<StoreRun> {
    let settings = config.settings(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let [endpoint] = settings.endpoints.as_slice() else {
        anyhow::bail!("a benchmark service has one endpoint, the receiver");
    };
    let options = StoreOptions {
        synchronous_full: settings.store.synchronous_full,
        update_label: settings.update_label,
        endpoints: vec![endpoint.clone()],
        delivery: (&settings.delivery).into(),
    };
    let db = config.db.clone();
    let opened = tokio::task::spawn_blocking(move || Store::open(&db, options)).await??;
    let store = opened.store;
    let handoff = store
        .take_handoff()
        .ok_or_else(|| anyhow::anyhow!("the store's handoff was already taken"))?;
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = watch::channel(false);
    let dispatcher = tokio::spawn(null_dispatcher(
        store.clone(),
        handoff,
        delivered.clone(),
        stopped,
    ));

    let result = async {
        if warmup > 0 {
            let driven = drive(&store, "sw", 0, warmup, concurrency).await;
            if let Some(e) = driven.first_error {
                anyhow::bail!("warm-up failed: {e}");
            }
            let (_, notes) = mix::totals(0, warmup);
            wait_delivered(&delivered, notes, drain_timeout).await?;
        }
        let before = delivered.load(Ordering::SeqCst);
        let started = Instant::now();
        let driven = drive(&store, "sm", 0, count, concurrency).await;
        wait_delivered(&delivered, before + driven.notifications, drain_timeout).await?;
        // Answered after the commit that holds every completion sent before it.
        store.release(Vec::new()).await;
        let elapsed = started.elapsed();
        Ok(StoreRun {
            elapsed,
            calls: driven.calls,
            errors: driven.errors,
            first_error: driven.first_error,
            notifications: driven.notifications,
            delivered: delivered.load(Ordering::SeqCst) - before,
            // Measured open, WAL included, as the service's database is.
            database_bytes: crate::stats::database_bytes(&config.db),
            database_notifications: crate::stats::database_notifications(&config.db),
        })
    }
    .await;

    let _ = stop.send(true);
    let _ = dispatcher.await;
    store.shutdown().await;
    drop(store);
    tokio::task::spawn_blocking(move || opened.writer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the store's writer thread panicked"))?;
    result
}

/// Waits until `delivered` reaches `count`, or fails after `timeout`.
async fn wait_delivered(
    delivered: &AtomicU64,
    count: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while delivered.load(Ordering::SeqCst) < count {
        if Instant::now() > deadline {
            anyhow::bail!(
                "{} of {count} deliveries reported after {timeout:?}",
                delivered.load(Ordering::SeqCst)
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// The dispatcher's part without the POSTs: everything the writer hands over, and everything
/// it leaves to be claimed (no free slot when it was committed), is reported delivered.
async fn null_dispatcher(
    store: Store,
    mut handoff: Handoff,
    delivered: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    let report = |id: i64| {
        let store = store.clone();
        let delivered = delivered.clone();
        async move {
            store
                .complete(vec![Completion::Delivered {
                    id,
                    http_status: 200,
                }])
                .await;
            delivered.fetch_add(1, Ordering::SeqCst);
        }
    };
    let mut claim = true;
    while !*stop.borrow() {
        if claim {
            claim = false;
            loop {
                let claimed = store.claim(CLAIM_BATCH).await;
                let short = claimed.deliveries.len() < CLAIM_BATCH;
                for d in claimed.deliveries {
                    report(d.id).await;
                }
                if short {
                    break;
                }
            }
        }
        tokio::select! {
            handed = handoff.deliveries.recv() => match handed {
                Some(d) => report(d.id).await,
                None => return,
            },
            _ = store.deliveries_ready.notified() => claim = true,
            // Retries never fall due here, but a claim the writer did not wake us for would.
            _ = tokio::time::sleep(Duration::from_millis(50)) => claim = true,
            _ = stop.changed() => {}
        }
    }
}

/// What driving a phase through the store came to.
#[derive(Debug, Default)]
struct Driven {
    calls: u64,
    errors: u64,
    first_error: Option<String>,
    /// Notifications recorded by the calls that succeeded.
    notifications: u64,
}

/// Runs transactions `first..first + count` of the mix (tguids named by `prefix`),
/// `concurrency` at a time, each one's calls in order; a transaction stops at its first error.
async fn drive(store: &Store, prefix: &str, first: u64, count: u64, concurrency: usize) -> Driven {
    let next = Arc::new(AtomicU64::new(first));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (store, next, prefix) = (store.clone(), next.clone(), prefix.to_owned());
        workers.spawn(async move {
            let mut driven = Driven::default();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= first + count {
                    return driven;
                }
                let tguid = mix::tguid(&prefix, i);
                for &(call, notifications) in Kind::for_index(i).calls() {
                    match one_call(&store, call, &tguid).await {
                        Ok(()) => {
                            driven.calls += 1;
                            driven.notifications += notifications as u64;
                        }
                        Err(e) => {
                            driven.errors += 1;
                            driven.first_error.get_or_insert(format!("{tguid}: {e}"));
                            break;
                        }
                    }
                }
            }
        });
    }
    let mut all = Driven::default();
    while let Some(done) = workers.join_next().await {
        let w = done.unwrap_or_else(|e| Driven {
            errors: 1,
            first_error: Some(format!("a worker panicked: {e}")),
            ..Driven::default()
        });
        all.calls += w.calls;
        all.errors += w.errors;
        all.notifications += w.notifications;
        if all.first_error.is_none() {
            all.first_error = w.first_error;
        }
    }
    all
}

/// One call of the mix, as the API handler would make it of the same request.
async fn one_call(store: &Store, call: Call, tguid: &str) -> anyhow::Result<()> {
    let tguid = Tguid::parse(tguid)?;
    let input = match call {
        Call::Register(op) => {
            let operation =
                Operation::parse(op).ok_or_else(|| anyhow::anyhow!("{op} is not an operation"))?;
            store.register(tguid, operation, ACTOR.to_owned()).await?;
            return Ok(());
        }
        Call::Event("REVERSE_LATENT_MATCH") => {
            // The uguid the HTTP driver sends (`mix::request`).
            Input::LatentMatch(Uguid::parse(&format!("u-{}", tguid.as_str()))?)
        }
        Call::Event("PENDING") => Input::SentToReview,
        Call::Event("EXCEPTION") => Input::Exception,
        Call::Event(kind) => Input::Outcome(
            Outcome::parse(kind).ok_or_else(|| anyhow::anyhow!("{kind} is not an outcome"))?,
        ),
        Call::Treatment(t) => Input::Treat(
            Treatment::parse(t.as_str())
                .ok_or_else(|| anyhow::anyhow!("{} is not a treatment", t.as_str()))?,
        ),
    };
    store
        .apply(InputRequest {
            tguid,
            input,
            event_id: None,
            actor: ACTOR.to_owned(),
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_ceiling_leaves_what_the_service_would_for_the_mix() {
        let dir = tempfile::tempdir().unwrap();
        let config = ServiceConfig {
            db: dir.path().join("store.db"),
            receiver_url: "http://127.0.0.1:9/".to_owned(),
            synchronous: "FULL".to_owned(),
            extra: Vec::new(),
        };
        // 20 warm-up and 40 measured transactions (three rounds of the mix), 7 at a time.
        let run = store_ceiling(&config, 20, 40, 7, Duration::from_secs(60))
            .await
            .unwrap();
        let (calls, notifications) = mix::totals(0, 40);
        assert_eq!((run.calls, run.errors), (calls, 0), "{:?}", run.first_error);
        assert_eq!(run.notifications, notifications);
        assert_eq!(run.delivered, notifications);

        let conn = Connection::open(&config.db).unwrap();
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64;
        let (warm_calls, warm_notes) = mix::totals(0, 20);
        assert_eq!(count("SELECT count(*) FROM transactions"), 60);
        // One transition per call, as the service logs them.
        assert_eq!(
            count("SELECT count(*) FROM transitions"),
            calls + warm_calls
        );
        assert_eq!(
            count("SELECT count(*) FROM notifications"),
            notifications + warm_notes
        );
        // Every delivery recorded delivered, each queue in order: none left pending.
        assert_eq!(
            count("SELECT count(*) FROM deliveries WHERE status = 'delivered'"),
            notifications + warm_notes
        );
        assert_eq!(
            count("SELECT count(*) FROM deliveries WHERE status <> 'delivered'"),
            0
        );
        // A later notification of a transaction is never recorded delivered before an earlier.
        assert_eq!(
            count(
                "SELECT count(*) FROM deliveries a JOIN deliveries b
                 ON a.tguid = b.tguid AND a.endpoint_id = b.endpoint_id AND a.seq < b.seq
                 WHERE b.delivered_at < a.delivered_at"
            ),
            0
        );
        // The service's schema, migrations and all.
        assert!(count("PRAGMA user_version") > 1);
        assert_eq!(run.database_notifications, Some(notifications + warm_notes));
    }
}
