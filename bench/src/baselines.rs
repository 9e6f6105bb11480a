//! The machine's raw ceilings (`--baseline`), measured with the same driver and mix:
//!
//! - HTTP: a hyper server that answers 200 to every call and does nothing else;
//! - disk: one thread writing, in SQLite, only what a notification needs (three tables, WAL,
//!   the same `synchronous`), committing a batch at a time: what any design would have to
//!   write. The service's own writes without HTTP are the store ceiling (`store_ceiling`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rusqlite::{params, Connection, Transaction};
use tokio::sync::oneshot;

use crate::mix::{Call, Kind};

/// A do-nothing HTTP server on its own runtime (threads named `null`), so that its CPU is not
/// mixed with the driver's.
pub struct NullServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NullServer {
    pub fn start() -> anyhow::Result<NullServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("null")
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("null-main".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("a bound listener");
                    tokio::pin!(stopped);
                    loop {
                        let stream = tokio::select! {
                            r = listener.accept() => match r {
                                Ok((s, _)) => s,
                                Err(_) => continue,
                            },
                            _ = &mut stopped => return,
                        };
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(
                                |req: hyper::Request<hyper::body::Incoming>| async move {
                                    // Read the body, as any server must, then answer.
                                    let _ = req.into_body().collect().await;
                                    Ok::<_, Infallible>(hyper::Response::new(Full::new(
                                        Bytes::from_static(b"{}"),
                                    )))
                                },
                            );
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                });
                runtime.shutdown_background();
            })?;
        Ok(NullServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for NullServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the disk ceiling run did.
#[derive(Debug, Clone)]
pub struct DiskRun {
    pub elapsed: Duration,
    pub calls: u64,
    pub notifications: u64,
    pub commits: u64,
    pub rows_written: u64,
    pub database_bytes: u64,
}

/// The service's tables, reduced to what one notification needs.
const SCHEMA: &str = r#"
CREATE TABLE transactions (
    id INTEGER PRIMARY KEY, tguid TEXT NOT NULL UNIQUE, operation TEXT NOT NULL, state TEXT NOT NULL,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, next_seq INTEGER NOT NULL);
CREATE INDEX transactions_by_state ON transactions(state);
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY, tx INTEGER NOT NULL, tguid TEXT NOT NULL, seq INTEGER NOT NULL,
    webhook_id TEXT NOT NULL UNIQUE, operation TEXT NOT NULL, status TEXT NOT NULL,
    body BLOB NOT NULL, created_at INTEGER NOT NULL, UNIQUE (tx, seq));
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY, notification_id INTEGER NOT NULL, endpoint_id TEXT NOT NULL,
    tx INTEGER NOT NULL, tguid TEXT NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL,
    ready INTEGER NOT NULL, next_attempt_at INTEGER NOT NULL, delivered_at INTEGER);
CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE status = 'pending' AND ready = 1;
"#;

/// Writes, for transactions `0..count` of the mix, what a notification needs made durable:
/// registration, each outcome call, and each delivery's result (in the commit after the one
/// that created it, as the dispatcher's report would be). Calls are committed `batch` at a
/// time: with C clients, group commit cannot gather more than about C calls per commit.
pub fn disk_ceiling(
    path: &Path,
    synchronous: &str,
    count: u64,
    batch: usize,
) -> anyhow::Result<DiskRun> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.execute_batch(SCHEMA)?;
    let ops = ops_of(count);

    let started = Instant::now();
    let tally = commit_in_batches(&mut conn, ops, batch)?;
    let elapsed = started.elapsed();
    // Measured open, WAL included, as the service's database is.
    let database_bytes = crate::stats::database_bytes(path);
    drop(conn);
    Ok(DiskRun {
        elapsed,
        calls: tally.calls,
        notifications: tally.notifications,
        commits: tally.commits,
        rows_written: tally.rows,
        database_bytes,
    })
}

/// What the writes of a run added up to.
#[derive(Debug, Default)]
struct Tally {
    calls: u64,
    notifications: u64,
    commits: u64,
    rows: u64,
}

/// Each transaction records the results of the deliveries the previous one created, then
/// writes the next `batch` calls, then commits.
fn commit_in_batches(conn: &mut Connection, ops: Vec<Op>, batch: usize) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let mut pending_deliveries: Vec<i64> = Vec::new();
    let mut ops = ops.into_iter().peekable();
    while ops.peek().is_some() || !pending_deliveries.is_empty() {
        let tx = conn.transaction()?;
        let now = gbds_notifier::clock::now_ms();
        let mut created = Vec::new();
        for id in pending_deliveries.drain(..) {
            minimal_result(&tx, now, id, &mut tally)?;
        }
        for op in ops.by_ref().take(batch) {
            tally.calls += 1;
            minimal_call(&tx, now, op, &mut tally, &mut created)?;
        }
        tx.commit()?;
        tally.commits += 1;
        pending_deliveries = created;
    }
    Ok(tally)
}

/// A notification's body and webhook id, of the service's sizes.
fn notification_of(tguid: &str, status: &str, now: i64) -> (String, String) {
    (
        format!(r#"{{"operation":"ENROLL","tguid":"{tguid}","status":"{status}"}}"#),
        format!("msg_{:011x}{:016x}", now, fastrand::u64(..)),
    )
}

/// One call of the mix, as the disk ceiling writes it.
enum Op {
    Register(String, &'static str),
    /// The tguid, the first notification's sequence number, the notifications' statuses.
    Outcome(String, i64, Vec<&'static str>),
}

/// The calls of transactions `0..count` of the mix, in the order one client makes them.
fn ops_of(count: u64) -> Vec<Op> {
    let mut ops: Vec<Op> = Vec::new();
    for i in 0..count {
        let kind = Kind::for_index(i);
        let tguid = crate::mix::tguid("disk", i);
        let mut seq = 0;
        for &(call, n) in kind.calls() {
            match call {
                Call::Register(op) => ops.push(Op::Register(tguid.clone(), op)),
                _ => {
                    let statuses = kind.expected()[seq..seq + n].to_vec();
                    ops.push(Op::Outcome(tguid.clone(), seq as i64 + 1, statuses));
                    seq += n;
                }
            }
        }
    }
    ops
}

/// A call in the minimal schema: a registration inserts the transaction; an outcome finds
/// it, updates it, and inserts its notifications and their deliveries.
fn minimal_call(
    tx: &Transaction,
    now: i64,
    op: Op,
    tally: &mut Tally,
    created: &mut Vec<i64>,
) -> anyhow::Result<()> {
    match op {
        Op::Register(tguid, operation) => {
            tx.prepare_cached(
                "INSERT INTO transactions (tguid, operation, state, created_at, updated_at, next_seq)
                 VALUES (?1, ?2, 'PROCESSING', ?3, ?3, 1)",
            )?
            .execute(params![tguid, operation, now])?;
            tally.rows += 1;
        }
        Op::Outcome(tguid, first_seq, statuses) => {
            let last = statuses.last().copied().unwrap_or("PROCESSING");
            // Found first, then updated by rowid: `RETURNING` would cost an ephemeral table.
            let id: i64 = tx
                .prepare_cached("SELECT id FROM transactions WHERE tguid = ?1")?
                .query_row([&tguid], |r| r.get(0))?;
            tx.prepare_cached(
                "UPDATE transactions SET state = ?2, updated_at = ?3, next_seq = next_seq + ?4
                 WHERE id = ?1",
            )?
            .execute(params![id, last, now, statuses.len() as i64])?;
            tally.rows += 1;
            for (k, status) in statuses.iter().enumerate() {
                let seq = first_seq + k as i64;
                let (body, webhook_id) = notification_of(&tguid, status, now);
                tx.prepare_cached(
                    "INSERT INTO notifications (tx, tguid, seq, webhook_id, operation, status, body, created_at)
                     VALUES (?7, ?1, ?2, ?3, 'ENROLL', ?4, ?5, ?6)",
                )?
                .execute(params![tguid, seq, webhook_id, status, body.as_bytes(), now, id])?;
                let notification = tx.last_insert_rowid();
                tx.prepare_cached(
                    "INSERT INTO deliveries (notification_id, endpoint_id, tx, tguid, seq, status, ready, next_attempt_at)
                     VALUES (?1, 'bench', ?5, ?2, ?3, 'pending', 1, ?4)",
                )?
                .execute(params![notification, tguid, seq, now, id])?;
                created.push(tx.last_insert_rowid());
                tally.rows += 2;
                tally.notifications += 1;
            }
        }
    }
    Ok(())
}

/// A delivery's result in the minimal schema: marked delivered.
fn minimal_result(tx: &Transaction, now: i64, id: i64, tally: &mut Tally) -> anyhow::Result<()> {
    tx.prepare_cached(
        "UPDATE deliveries SET status = 'delivered', ready = 0, delivered_at = ?2 WHERE id = ?1",
    )?
    .execute(params![id, now])?;
    tally.rows += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimal_schema_run_writes_the_same_notifications() {
        // 40 transactions (two rounds of the mix's 20), committed 7 calls at a time so that
        // outcomes meet their registrations in later commits.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.db");
        let run = disk_ceiling(&path, "NORMAL", 40, 7).unwrap();
        let (calls, notifications) = crate::mix::totals(0, 40);
        assert_eq!((run.calls, run.notifications), (calls, notifications));
        let conn = Connection::open(&path).unwrap();
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64;
        assert_eq!(count("SELECT count(*) FROM transactions"), 40);
        assert_eq!(
            count("SELECT count(*) FROM deliveries WHERE status = 'delivered'"),
            notifications
        );
        assert_eq!(
            count("SELECT count(*) FROM deliveries WHERE status <> 'delivered'"),
            0
        );
    }
}
