//! The machine's raw ceilings (`bench --baseline`), measured with the same driver and mix:
//!
//! - HTTP: a hyper server that answers 200 to every call and does nothing else;
//! - disk: one thread writing, in SQLite, the rows the service must write for the same
//!   transactions (WAL, the same `synchronous`), committing a batch at a time, in two
//!   schemas: the service's own, with its writer's statements ([`DiskSchema::Service`]: the
//!   same writes, no HTTP, no state machine), and a minimal one that holds only what a
//!   notification needs ([`DiskSchema::Minimal`]: what any design would have to write).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::sync::oneshot;

use super::mix::{Call, Kind};

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

/// Which rows the disk ceiling writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskSchema {
    /// The service's schema (its migrations) and its writer's statements: for each call the
    /// rows, indexes and history the service writes, and each delivery's result.
    Service,
    /// Three tables and the indexes a notification needs, nothing else.
    Minimal,
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

/// Writes, for transactions `0..count` of the mix, what the service must make durable, in
/// the given schema: registration, each outcome call, and each delivery's result (in the
/// commit after the one that created it, as the dispatcher's report would be). Commands are
/// committed `batch` at a time: with C clients, group commit cannot gather more than about C
/// calls per commit. Both schemas go through [`commit_in_batches`], so they commit alike.
pub fn disk_ceiling(
    path: &Path,
    synchronous: &str,
    count: u64,
    batch: usize,
    schema: DiskSchema,
) -> anyhow::Result<DiskRun> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    let (call, result): (WriteCall, WriteResult) = match schema {
        DiskSchema::Service => {
            conn.set_prepared_statement_cache_capacity(64);
            crate::store::statements::migrate(&mut conn)?;
            conn.execute(
                "INSERT INTO endpoints (id, url, active, enabled, updated_at) VALUES ('bench', 'http://127.0.0.1:9/', 1, 1, 0)",
                [],
            )?;
            (service_call, service_result)
        }
        DiskSchema::Minimal => {
            conn.execute_batch(SCHEMA)?;
            (minimal_call, minimal_result)
        }
    };
    let ops = ops_of(count);

    let started = Instant::now();
    let tally = commit_in_batches(&mut conn, ops, batch, call, result)?;
    let elapsed = started.elapsed();
    // Measured open, WAL included, as the service's database is.
    let database_bytes = super::stats::database_bytes(path);
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

/// Writes one call in the open transaction at time `now`; pushes the deliveries it creates.
type WriteCall = fn(&Transaction, i64, Op, &mut Tally, &mut Vec<i64>) -> anyhow::Result<()>;
/// Records a delivery's result (delivered) in the open transaction at time `now`.
type WriteResult = fn(&Transaction, i64, i64, &mut Tally) -> anyhow::Result<()>;

/// The loop both schemas share: each transaction records the results of the deliveries the
/// previous one created, then writes the next `batch` calls, then commits.
fn commit_in_batches(
    conn: &mut Connection,
    ops: Vec<Op>,
    batch: usize,
    call: WriteCall,
    result: WriteResult,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let mut pending_deliveries: Vec<i64> = Vec::new();
    let mut ops = ops.into_iter().peekable();
    while ops.peek().is_some() || !pending_deliveries.is_empty() {
        let tx = conn.transaction()?;
        let now = crate::clock::now_ms();
        let mut created = Vec::new();
        for id in pending_deliveries.drain(..) {
            result(&tx, now, id, &mut tally)?;
        }
        for op in ops.by_ref().take(batch) {
            tally.calls += 1;
            call(&tx, now, op, &mut tally, &mut created)?;
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
        let tguid = super::mix::tguid("disk", i);
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

/// A call in the service's schema, with the statements its writer runs, in the same order: a
/// registration looks the tguid up, inserts the transaction and its first transition; an
/// outcome looks it up, advances it, logs the transition, and inserts each notification
/// with its delivery (asking first whether it heads its queue). What the service adds on
/// top of these writes is its HTTP, its state machine, its threads and the handing over of
/// deliveries.
fn service_call(
    tx: &Transaction,
    now: i64,
    op: Op,
    tally: &mut Tally,
    created: &mut Vec<i64>,
) -> anyhow::Result<()> {
    use crate::store::statements as sql;
    let tguid = match &op {
        Op::Register(tguid, _) | Op::Outcome(tguid, ..) => tguid.as_str(),
    };
    // (id, state), as the writer's summary reads them.
    let found: Option<(i64, String)> = tx
        .prepare_cached(sql::TRANSACTION_BY_TGUID)?
        .query_row([tguid], |r| Ok((r.get(5)?, r.get(1)?)))
        .optional()?;
    let transition = |id: i64, from: Option<&str>, to: &str, input: String| {
        tx.prepare_cached(sql::INSERT_TRANSITION)?.execute(params![
            id,
            tguid,
            from,
            to,
            input,
            None::<String>,
            "bench",
            None::<String>,
            now
        ])
    };
    match &op {
        Op::Register(_, operation) => {
            tx.prepare_cached(sql::INSERT_TRANSACTION)?
                .execute(params![tguid, operation, now])?;
            let id = tx.last_insert_rowid();
            transition(id, None, "PROCESSING", format!("register {operation}"))?;
            tally.rows += 2;
        }
        Op::Outcome(_, first_seq, statuses) => {
            let (id, from) = found.ok_or_else(|| anyhow::anyhow!("{tguid} not registered"))?;
            let last = statuses.last().copied().unwrap_or("PROCESSING");
            tx.prepare_cached(sql::ADVANCE_TRANSACTION)?
                .execute(params![id, last, now, first_seq + statuses.len() as i64])?;
            transition(id, Some(&from), last, format!("event {last}"))?;
            tally.rows += 2;
            for (k, status) in statuses.iter().enumerate() {
                let seq = first_seq + k as i64;
                let (body, webhook_id) = notification_of(tguid, status, now);
                tx.prepare_cached(sql::INSERT_NOTIFICATION)?
                    .execute(params![
                        id,
                        tguid,
                        seq,
                        webhook_id,
                        "ENROLL",
                        status,
                        body.as_bytes(),
                        now
                    ])?;
                let notification = tx.last_insert_rowid();
                let head: bool = tx
                    .prepare_cached(sql::DELIVERY_IS_HEAD)?
                    .query_row(params![id, "bench"], |r| r.get(0))?;
                tx.prepare_cached(sql::INSERT_DELIVERY)?.execute(params![
                    notification,
                    "bench",
                    id,
                    tguid,
                    seq,
                    head,
                    now
                ])?;
                created.push(tx.last_insert_rowid());
                tally.rows += 2;
                tally.notifications += 1;
            }
        }
    }
    Ok(())
}

/// A delivery's result in the service's schema, as the writer records it: checked pending,
/// finished, and its queue's next one made ready.
fn service_result(tx: &Transaction, now: i64, id: i64, tally: &mut Tally) -> anyhow::Result<()> {
    use crate::store::statements as sql;
    let pending: Option<(i64, String)> = tx
        .prepare_cached(sql::PENDING_DELIVERY)?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((txid, endpoint)) = pending else {
        return Ok(());
    };
    tx.prepare_cached(sql::FINISH_DELIVERY)?.execute(params![
        id,
        "delivered",
        200,
        None::<String>,
        now
    ])?;
    tally.rows += 1;
    let next: Option<i64> = tx
        .prepare_cached(sql::NEXT_PENDING)?
        .query_row(params![txid, endpoint], |r| r.get(0))
        .optional()?;
    if let Some(next) = next {
        tx.prepare_cached(sql::MAKE_READY)?.execute([next])?;
        tally.rows += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(conn: &Connection, sql: &str) -> u64 {
        conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64
    }

    /// Runs 40 transactions (two rounds of the mix's 20), committed 7 calls at a time so that
    /// outcomes meet their registrations in later commits; checks the run's own counts and
    /// returns the database with the mix's calls and notifications.
    fn run_40(synchronous: &str, schema: DiskSchema) -> (tempfile::TempDir, Connection, u64, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.db");
        let run = disk_ceiling(&path, synchronous, 40, 7, schema).unwrap();
        let (calls, notifications) = crate::bench::mix::totals(0, 40);
        assert_eq!((run.calls, run.notifications), (calls, notifications));
        let conn = Connection::open(&path).unwrap();
        (dir, conn, calls, notifications)
    }

    #[test]
    fn the_same_writes_ceiling_leaves_what_the_service_would_for_the_mix() {
        let (_dir, conn, calls, notifications) = run_40("FULL", DiskSchema::Service);
        assert_eq!(count(&conn, "SELECT count(*) FROM transactions"), 40);
        // One transition per call, as the service logs them.
        assert_eq!(count(&conn, "SELECT count(*) FROM transitions"), calls);
        assert_eq!(
            count(&conn, "SELECT count(*) FROM notifications"),
            notifications
        );
        // Every delivery reported delivered, in its transaction's order: none left pending.
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM deliveries WHERE status = 'delivered'"
            ),
            notifications
        );
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM deliveries WHERE status <> 'delivered'"
            ),
            0
        );
        // The service's schema, migrations and all.
        assert!(count(&conn, "PRAGMA user_version") > 1);
    }

    #[test]
    fn the_minimal_schema_run_writes_the_same_notifications() {
        let (_dir, conn, _, notifications) = run_40("NORMAL", DiskSchema::Minimal);
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM deliveries WHERE status = 'delivered'"
            ),
            notifications
        );
    }
}
