//! The single writer: drains queued commands into one SQLite transaction (group commit), runs
//! the state machine inside it, and answers every caller only after COMMIT returns.

use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot, Notify};

use super::{
    admin, AdminDone, ApiEndpoint, Applied, ClaimBudget, Claimed, ClaimedDelivery, Command,
    Completion, ConfigEndpointOptions, InputRequest, Registered, StoreOptions, TxSummary,
    WriteError,
};
use crate::clock::now_ms;
use crate::domain::{self, Operation, State, Subscriptions, Tguid};

/// Most commands in one SQLite transaction; bounds the latency a batch adds to its first caller.
const MAX_BATCH: usize = 1024;

/// An answer held back until the batch commits.
enum Reply {
    Register(
        oneshot::Sender<Result<Registered, WriteError>>,
        Result<Registered, WriteError>,
    ),
    Apply(
        oneshot::Sender<Result<Applied, WriteError>>,
        Result<Applied, WriteError>,
    ),
    Claim(oneshot::Sender<Claimed>, Claimed),
    Release(oneshot::Sender<()>),
    Admin(
        oneshot::Sender<Result<AdminDone, WriteError>>,
        Result<AdminDone, WriteError>,
    ),
}

impl Reply {
    /// Sends the answer; when the commit failed, every write becomes an error instead.
    fn send(self, commit_error: Option<&str>) {
        let failed =
            |_: ()| WriteError::Internal(format!("commit failed: {}", commit_error.unwrap_or("")));
        match self {
            Reply::Register(tx, r) => {
                let _ = tx.send(if commit_error.is_some() {
                    Err(failed(()))
                } else {
                    r
                });
            }
            Reply::Apply(tx, r) => {
                let _ = tx.send(if commit_error.is_some() {
                    Err(failed(()))
                } else {
                    r
                });
            }
            Reply::Claim(tx, c) => {
                let _ = tx.send(if commit_error.is_some() {
                    Claimed::default()
                } else {
                    c
                });
            }
            Reply::Release(tx) => {
                let _ = tx.send(());
            }
            Reply::Admin(tx, r) => {
                let _ = tx.send(if commit_error.is_some() {
                    Err(failed(()))
                } else {
                    r
                });
            }
        }
    }
}

struct Writer {
    conn: Connection,
    options: StoreOptions,
    /// The endpoints a new notification may be queued for (config and API ones), each with
    /// what it subscribed to: it gets a delivery only when its subscriptions match.
    fanout: Vec<(String, Subscriptions)>,
}

/// Reads the active endpoints and their subscriptions (a JSON list of patterns; NULL: all).
fn load_fanout(conn: &Connection) -> rusqlite::Result<Vec<(String, Subscriptions)>> {
    conn.prepare("SELECT id, subscriptions FROM endpoints WHERE active = 1 ORDER BY id")?
        .query_map([], |r| {
            let id: String = r.get(0)?;
            let patterns: Option<String> = r.get(1)?;
            Ok((id.clone(), stored_subscriptions(&id, patterns.as_deref())))
        })?
        .collect()
}

/// Patterns were checked before they were stored; should one not parse now, the endpoint
/// gets everything rather than silently missing notifications.
pub(super) fn stored_subscriptions(endpoint: &str, json: Option<&str>) -> Subscriptions {
    let Some(json) = json else {
        return Subscriptions::All;
    };
    let parsed = serde_json::from_str::<Vec<String>>(json)
        .map_err(|e| e.to_string())
        .and_then(|list| Subscriptions::parse(&list).map_err(|(_, e)| e.to_string()));
    parsed.unwrap_or_else(|why| {
        tracing::error!(%endpoint, %why, "stored subscriptions are invalid; the endpoint receives every notification");
        Subscriptions::All
    })
}

/// Startup work on the write connection: record the configured endpoints, release leases.
pub(super) fn prepare(
    conn: &mut Connection,
    endpoints: &[(String, String)],
    options: &ConfigEndpointOptions,
) -> rusqlite::Result<Vec<ApiEndpoint>> {
    let now = now_ms();
    let tx = conn.transaction()?;
    tx.execute(
        "UPDATE endpoints SET active = 0 WHERE source = 'config'",
        [],
    )?;
    for (id, url) in endpoints {
        let o = options.get(id);
        let patterns = o
            .and_then(|o| o.subscriptions.as_ref())
            .map(|p| serde_json::to_string(p).expect("strings serialize"));
        let format = o
            .map(|o| o.format.as_str())
            .filter(|f| !f.is_empty())
            .unwrap_or("gbds");
        tx.execute(
            "INSERT INTO endpoints (id, url, active, enabled, updated_at, subscriptions, format) VALUES (?1, ?2, 1, 1, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET url = excluded.url, active = 1, source = 'config', secret = NULL,
                                           updated_at = excluded.updated_at, subscriptions = excluded.subscriptions,
                                           format = excluded.format",
            params![id, url, now, patterns, format],
        )?;
    }
    // One process owns a database file: leases left by a previous (killed) process are void.
    tx.execute(
        "UPDATE deliveries SET leased = 0, next_attempt_at = ?1 WHERE leased = 1",
        params![now],
    )?;
    let api: Vec<ApiEndpoint> = tx
        .prepare(
            "SELECT id, url, secret, format FROM endpoints WHERE source = 'api' AND active = 1",
        )?
        .query_map([], |r| {
            Ok(ApiEndpoint {
                id: r.get(0)?,
                url: r.get(1)?,
                secret: r
                    .get::<_, Option<String>>(2)?
                    .map(crate::config::Secret::new),
                format: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    tx.commit()?;
    Ok(api)
}

pub(super) fn spawn(
    conn: Connection,
    mut commands: mpsc::Receiver<Command>,
    options: StoreOptions,
    ready: Arc<Notify>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            let fanout = load_fanout(&conn).unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read the endpoint list");
                Vec::new()
            });
            let mut writer = Writer {
                conn,
                options,
                fanout,
            };
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while let Some(first) = commands.blocking_recv() {
                batch.push(first);
                drain(&mut commands, &mut batch);
                let stop = batch.iter().any(|c| matches!(c, Command::Shutdown));
                let woke = writer.run_batch(&mut batch);
                if woke {
                    ready.notify_one();
                }
                if stop {
                    break;
                }
            }
            tracing::debug!("store writer stopped");
        })
}

/// Moves what is queued into the batch, up to `MAX_BATCH`.
fn drain(commands: &mut mpsc::Receiver<Command>, batch: &mut Vec<Command>) {
    while batch.len() < MAX_BATCH {
        match commands.try_recv() {
            Ok(c) => batch.push(c),
            Err(_) => break,
        }
    }
}

impl Writer {
    /// Runs a batch in one transaction; returns whether deliveries became claimable.
    fn run_batch(&mut self, batch: &mut Vec<Command>) -> bool {
        let mut replies = Vec::with_capacity(batch.len());
        let mut woke = false;
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "cannot begin a write transaction");
            for c in batch.drain(..) {
                self.refuse(c, &e.to_string());
            }
            return false;
        }
        let now = now_ms();
        tracing::trace!(commands = batch.len(), "write batch");
        for command in batch.drain(..) {
            woke |= self.execute(command, now, &mut replies);
        }
        let commit_error = self.conn.execute_batch("COMMIT").err().map(|e| {
            tracing::error!(error = %e, "commit failed; the batch is rolled back");
            let _ = self.conn.execute_batch("ROLLBACK");
            e.to_string()
        });
        for r in replies {
            r.send(commit_error.as_deref());
        }
        woke && commit_error.is_none()
    }

    fn refuse(&self, command: Command, why: &str) {
        let e = || WriteError::Internal(why.to_owned());
        match command {
            Command::Register { reply, .. } => drop(reply.send(Err(e()))),
            Command::Apply { reply, .. } => drop(reply.send(Err(e()))),
            Command::Claim { reply, .. } => drop(reply.send(Claimed::default())),
            Command::Release { reply, .. } => drop(reply.send(())),
            Command::Admin { reply, .. } => drop(reply.send(Err(e()))),
            Command::Complete { .. } | Command::Shutdown => {}
        }
    }

    /// Runs one command inside a savepoint, so that a failure undoes only its own writes.
    fn execute(&mut self, command: Command, now: i64, replies: &mut Vec<Reply>) -> bool {
        // Prepared once and cached: these run twice per command, on the hot path.
        self.savepoint("SAVEPOINT command");
        let (ok, woke) = match command {
            Command::Register {
                tguid,
                operation,
                actor,
                reply,
            } => {
                let r = self.register(&tguid, operation, &actor, now);
                let ok = r.is_ok();
                replies.push(Reply::Register(reply, r));
                (ok, false)
            }
            Command::Apply { request, reply } => {
                let r = self.apply(&request, now);
                let (ok, woke) = match &r {
                    Ok(a) => (true, a.notifications > 0),
                    Err(_) => (false, false),
                };
                replies.push(Reply::Apply(reply, r));
                (ok, woke)
            }
            Command::Shutdown => (true, false),
            Command::Admin { op, reply } => {
                let r = admin::run(&self.conn, &op, now);
                let ok = r.is_ok();
                if ok
                    && matches!(
                        op,
                        super::AdminOp::CreateEndpoint { .. }
                            | super::AdminOp::UpdateEndpoint { .. }
                            | super::AdminOp::DeleteEndpoint { .. }
                    )
                {
                    match load_fanout(&self.conn) {
                        Ok(f) => self.fanout = f,
                        Err(e) => tracing::error!(error = %e, "cannot reload the endpoint list"),
                    }
                }
                replies.push(Reply::Admin(reply, r));
                (ok, ok)
            }
            Command::Claim {
                limit,
                lease_ms,
                budget,
                reply,
            } => match self.claim(limit, lease_ms, &budget, now) {
                Ok(c) => {
                    replies.push(Reply::Claim(reply, c));
                    (true, false)
                }
                Err(e) => {
                    tracing::error!(error = %e, "claim failed");
                    replies.push(Reply::Claim(reply, Claimed::default()));
                    (false, false)
                }
            },
            Command::Complete { completions } => match self.complete(&completions, now) {
                Ok(woke) => (true, woke),
                Err(e) => {
                    // The leases expire and the deliveries are attempted again: at-least-once.
                    tracing::error!(error = %e, "recording delivery results failed");
                    (false, false)
                }
            },
            Command::Release { ids, reply } => {
                let r = self.release(&ids, now);
                replies.push(Reply::Release(reply));
                (r.is_ok(), r.is_ok())
            }
        };
        if !ok {
            self.savepoint("ROLLBACK TO command");
        }
        self.savepoint("RELEASE command");
        woke
    }

    /// Runs a savepoint statement; inside the batch's transaction these cannot fail short of
    /// a broken connection, which the batch's COMMIT then reports to every caller.
    fn savepoint(&self, sql: &str) {
        if let Err(e) = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
        {
            tracing::error!(error = %e, sql, "savepoint statement failed");
        }
    }

    fn summary(&self, tguid: &str) -> Result<Option<(TxSummary, i64)>, WriteError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT operation, state, created_at, updated_at, next_seq FROM transactions WHERE tguid = ?1",
        )?;
        let row = stmt
            .query_row([tguid], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                ))
            })
            .optional()?;
        Ok(match row {
            None => None,
            Some((op, state, created_at, updated_at, next_seq)) => Some((
                TxSummary {
                    tguid: tguid.to_owned(),
                    operation: Operation::parse(&op).ok_or_else(|| {
                        WriteError::Internal(format!("bad operation {op:?} stored"))
                    })?,
                    state: State::parse(&state).ok_or_else(|| {
                        WriteError::Internal(format!("bad state {state:?} stored"))
                    })?,
                    created_at,
                    updated_at,
                },
                next_seq,
            )),
        })
    }

    fn log_transition(
        &self,
        tguid: &str,
        (from, to): (Option<State>, State),
        input: &str,
        uguid: Option<&str>,
        (actor, event_id): (&str, Option<&str>),
        now: i64,
    ) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO transitions (tguid, from_state, to_state, input, uguid, actor, event_id, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![tguid, from.map(State::as_str), to.as_str(), input, uguid, actor, event_id, now])?;
        Ok(())
    }

    fn register(
        &self,
        tguid: &Tguid,
        operation: Operation,
        actor: &str,
        now: i64,
    ) -> Result<Registered, WriteError> {
        if let Some((summary, _)) = self.summary(tguid.as_str())? {
            return if summary.operation == operation {
                Ok(Registered {
                    created: false,
                    summary,
                })
            } else {
                Err(WriteError::OperationConflict {
                    tguid: tguid.to_string(),
                    existing: summary.operation,
                })
            };
        }
        self.conn
            .prepare_cached(
                "INSERT INTO transactions (tguid, operation, state, created_at, updated_at, next_seq)
                 VALUES (?1, ?2, 'PROCESSING', ?3, ?3, 1)",
            )?
            .execute(params![tguid.as_str(), operation.as_str(), now])?;
        let input = format!("register {operation}");
        self.log_transition(
            tguid.as_str(),
            (None, State::Processing),
            &input,
            None,
            (actor, None),
            now,
        )?;
        Ok(Registered {
            created: true,
            summary: TxSummary {
                tguid: tguid.to_string(),
                operation,
                state: State::Processing,
                created_at: now,
                updated_at: now,
            },
        })
    }

    fn apply(&self, request: &InputRequest, now: i64) -> Result<Applied, WriteError> {
        let tguid = request.tguid.as_str();
        let (summary, mut next_seq) = self
            .summary(tguid)?
            .ok_or_else(|| WriteError::NotFound(tguid.to_owned()))?;

        if let Some((event_id, fingerprint)) = &request.event_id {
            let seen: Option<String> = self
                .conn
                .prepare_cached(
                    "SELECT fingerprint FROM event_ids WHERE tguid = ?1 AND event_id = ?2",
                )?
                .query_row([tguid, event_id], |r| r.get(0))
                .optional()?;
            match seen {
                Some(f) if &f == fingerprint => {
                    return Ok(Applied {
                        duplicate: true,
                        summary,
                        notifications: 0,
                    });
                }
                Some(_) => {
                    // Contract §4 lists invalid_transition before event_id_reused: when the
                    // new body would be refused anyway, that refusal is the answer.
                    domain::step(
                        summary.operation,
                        summary.state,
                        &request.input,
                        self.options.update_label,
                    )?;
                    return Err(WriteError::EventIdReused(event_id.clone()));
                }
                None => {}
            }
        }

        let transition = domain::step(
            summary.operation,
            summary.state,
            &request.input,
            self.options.update_label,
        )?;

        self.conn
            .prepare_cached("UPDATE transactions SET state = ?2, updated_at = ?3, next_seq = ?4 WHERE tguid = ?1")?
            .execute(params![tguid, transition.to.as_str(), now, next_seq + transition.notifications.len() as i64])?;
        let uguid = match &request.input {
            domain::Input::LatentMatch(u) => Some(u.as_str()),
            _ => None,
        };
        let event_id = request.event_id.as_ref().map(|(id, _)| id.as_str());
        self.log_transition(
            tguid,
            (Some(summary.state), transition.to),
            &request.input.describe(),
            uguid,
            (&request.actor, event_id),
            now,
        )?;
        if let Some((event_id, fingerprint)) = &request.event_id {
            self.conn
                .prepare_cached(
                    "INSERT INTO event_ids (tguid, event_id, fingerprint) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![tguid, event_id, fingerprint])?;
        }

        for notification in &transition.notifications {
            let body = notification.body(&request.tguid);
            let webhook_id = new_webhook_id(now);
            self.conn
                .prepare_cached(
                    "INSERT INTO notifications (tguid, seq, webhook_id, operation, status, body, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![tguid, next_seq, webhook_id, notification.operation(), notification.status(), body, now])?;
            let notification_id = self.conn.last_insert_rowid();
            let (operation, status) = (notification.operation(), notification.status());
            for (endpoint_id, subscribed) in &self.fanout {
                if !subscribed.matches(operation, status) {
                    continue;
                }
                // Only the first pending notification of a (tguid, endpoint) may be sent.
                self.conn
                    .prepare_cached(
                        "INSERT INTO deliveries (notification_id, endpoint_id, tguid, seq, status, ready, next_attempt_at)
                         VALUES (?1, ?2, ?3, ?4, 'pending',
                                 NOT EXISTS (SELECT 1 FROM deliveries WHERE tguid = ?3 AND endpoint_id = ?2 AND status = 'pending'),
                                 ?5)",
                    )?
                    .execute(params![notification_id, endpoint_id, tguid, next_seq, now])?;
            }
            next_seq += 1;
        }

        Ok(Applied {
            duplicate: false,
            notifications: transition.notifications.len(),
            summary: TxSummary {
                state: transition.to,
                updated_at: now,
                ..summary
            },
        })
    }

    fn claim(
        &self,
        limit: usize,
        lease_ms: i64,
        budget: &ClaimBudget,
        now: i64,
    ) -> rusqlite::Result<Claimed> {
        let mut deliveries = Vec::new();
        // One query per enabled endpoint, each bounded by that endpoint's free slots: a slow
        // endpoint's backlog cannot fill a claim, and a disabled one's is never even read.
        let endpoints: Vec<String> = self
            .conn
            .prepare_cached(
                "SELECT id FROM endpoints WHERE active = 1 AND enabled = 1 ORDER BY id",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut next_due: Option<i64> = None;
        let mut due = self.conn.prepare_cached(
            "SELECT d.id, d.endpoint_id, d.tguid, d.seq, d.attempts, n.webhook_id, n.body,
                    n.operation, n.status, n.created_at
             FROM deliveries d INDEXED BY deliveries_due_by_endpoint
             JOIN notifications n ON n.id = d.notification_id
             WHERE d.endpoint_id = ?1 AND d.status = 'pending' AND d.ready = 1 AND d.next_attempt_at <= ?2
             ORDER BY d.next_attempt_at LIMIT ?3",
        )?;
        let mut first_due = self.conn.prepare_cached(
            "SELECT min(next_attempt_at) FROM deliveries INDEXED BY deliveries_due_by_endpoint
             WHERE endpoint_id = ?1 AND status = 'pending' AND ready = 1",
        )?;
        // Start at a different endpoint each time, so none is always served first.
        let start = if endpoints.is_empty() {
            0
        } else {
            fastrand::usize(..endpoints.len())
        };
        for endpoint in endpoints.iter().cycle().skip(start).take(endpoints.len()) {
            let slots = budget.busy.get(endpoint).copied().unwrap_or(budget.default);
            let take = slots.min(limit - deliveries.len());
            if take > 0 {
                let rows = due.query_map(params![endpoint, now, take as i64], |r| {
                    Ok(ClaimedDelivery {
                        id: r.get(0)?,
                        endpoint_id: r.get(1)?,
                        tguid: r.get(2)?,
                        seq: r.get(3)?,
                        attempts: r.get(4)?,
                        webhook_id: r.get(5)?,
                        body: Arc::from(r.get::<_, Vec<u8>>(6)?),
                        operation: r.get(7)?,
                        status: r.get(8)?,
                        created_at: r.get(9)?,
                    })
                })?;
                for row in rows {
                    deliveries.push(row?);
                }
            }
        }
        let mut lease = self.conn.prepare_cached(
            "UPDATE deliveries SET leased = 1, next_attempt_at = ?2 WHERE id = ?1",
        )?;
        for d in &deliveries {
            lease.execute(params![d.id, now + lease_ms])?;
        }
        // After the leases above, so that what was just claimed counts at its lease end.
        for endpoint in &endpoints {
            let first: Option<i64> = first_due.query_row([endpoint], |r| r.get(0))?;
            next_due = match (next_due, first) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(Claimed {
            deliveries,
            next_due,
        })
    }

    /// Makes the next pending delivery of the same (tguid, endpoint) claimable.
    fn promote_next(&self, tguid: &str, endpoint_id: &str, now: i64) -> rusqlite::Result<bool> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE deliveries SET ready = 1, next_attempt_at = max(next_attempt_at, ?3)
                 WHERE id = (SELECT id FROM deliveries
                             WHERE tguid = ?1 AND endpoint_id = ?2 AND status = 'pending'
                             ORDER BY seq LIMIT 1)",
            )?
            .execute(params![tguid, endpoint_id, now])?;
        Ok(n > 0)
    }

    fn finish(
        &self,
        id: i64,
        status: &str,
        http_status: Option<u16>,
        error: Option<&str>,
        now: i64,
    ) -> rusqlite::Result<bool> {
        let done: Option<(String, String)> = self
            .conn
            .prepare_cached(
                "UPDATE deliveries SET status = ?2, ready = 0, leased = 0, attempts = attempts + 1,
                        last_status = ?3, last_error = ?4, last_attempt_at = ?5,
                        delivered_at = CASE WHEN ?2 = 'delivered' THEN ?5 END
                 WHERE id = ?1 AND status = 'pending'
                 RETURNING tguid, endpoint_id",
            )?
            .query_row(params![id, status, http_status, error, now], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        match done {
            Some((tguid, endpoint)) => {
                self.note_endpoint_health(&endpoint, status == "delivered", now)?;
                self.promote_next(&tguid, &endpoint, now)
            }
            None => Ok(false),
        }
    }

    /// Tracks since when an endpoint has failed every attempt (cleared by any success).
    fn note_endpoint_health(&self, endpoint_id: &str, ok: bool, now: i64) -> rusqlite::Result<()> {
        let sql = if ok {
            "UPDATE endpoints SET failing_since = NULL WHERE id = ?1 AND failing_since IS NOT NULL AND ?2 >= 0"
        } else {
            "UPDATE endpoints SET failing_since = ?2 WHERE id = ?1 AND failing_since IS NULL"
        };
        self.conn
            .prepare_cached(sql)?
            .execute(params![endpoint_id, now])?;
        Ok(())
    }

    fn complete(&self, completions: &[Completion], now: i64) -> rusqlite::Result<bool> {
        let mut woke = false;
        for c in completions {
            match c {
                Completion::Delivered { id, http_status } => {
                    woke |= self.finish(*id, "delivered", Some(*http_status), None, now)?;
                }
                Completion::Dead {
                    id,
                    http_status,
                    error,
                } => {
                    woke |= self.finish(*id, "dead", *http_status, Some(error), now)?;
                }
                Completion::Retry {
                    id,
                    http_status,
                    error,
                    next_attempt_at,
                } => {
                    let endpoint: Option<String> = self
                        .conn
                        .prepare_cached(
                            "UPDATE deliveries SET leased = 0, attempts = attempts + 1, next_attempt_at = ?2,
                                    last_status = ?3, last_error = ?4, last_attempt_at = ?5
                             WHERE id = ?1 AND status = 'pending'
                             RETURNING endpoint_id",
                        )?
                        .query_row(params![id, next_attempt_at, http_status, error, now], |r| {
                            r.get(0)
                        })
                        .optional()?;
                    if let Some(endpoint) = endpoint {
                        self.note_endpoint_health(&endpoint, false, now)?;
                    }
                    woke = true;
                }
                Completion::Gone { id, endpoint_id } => {
                    self.conn
                        .prepare_cached(
                            "UPDATE deliveries SET leased = 0, attempts = attempts + 1, next_attempt_at = ?2,
                                    last_status = 410, last_error = '410 Gone: endpoint disabled', last_attempt_at = ?2
                             WHERE id = ?1 AND status = 'pending'",
                        )?
                        .execute(params![id, now])?;
                    self.conn
                        .prepare_cached(
                            "UPDATE endpoints SET enabled = 0, disabled_reason = '410 Gone', updated_at = ?2 WHERE id = ?1",
                        )?
                        .execute(params![endpoint_id, now])?;
                    tracing::warn!(endpoint = %endpoint_id, "endpoint answered 410 Gone: disabled");
                }
            }
        }
        Ok(woke)
    }

    fn release(&self, ids: &[i64], now: i64) -> rusqlite::Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE deliveries SET leased = 0, next_attempt_at = ?2 WHERE id = ?1 AND leased = 1",
        )?;
        for id in ids {
            stmt.execute(params![id, now])?;
        }
        Ok(())
    }
}

/// A new notification id: the creation time and 64 random bits, unique across databases too.
fn new_webhook_id(now: i64) -> String {
    format!("msg_{:011x}{:016x}", now, fastrand::u64(..))
}
