//! Read-only queries of the SQLite store on their own connections (WAL lets them run beside
//! the writer), run on tokio's blocking pool so that they never stall the async workers; and
//! what every store's reads give: the row types, `ReadError`, and the feed's cursor (which on
//! PostgreSQL carries the commit a notification belongs to).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::TxSummary;
use crate::domain::{Operation, State};

/// A pool of read connections, opened on demand and reused.
#[derive(Clone)]
pub struct SqliteReaders {
    path: Arc<PathBuf>,
    idle: Arc<Mutex<Vec<Connection>>>,
}

/// One accepted input of a transaction's history.
#[derive(Debug, Clone)]
pub struct TransitionRow {
    pub from_state: Option<String>,
    pub to_state: String,
    pub input: String,
    pub uguid: Option<String>,
    pub actor: String,
    pub event_id: Option<String>,
    /// A reviewer's decision_id and comment, when the decision carried them.
    pub decision_id: Option<String>,
    pub comment: Option<String>,
    pub at: i64,
}

#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: i64,
    pub endpoint_id: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NotificationRow {
    pub seq: i64,
    pub webhook_id: String,
    pub body: Vec<u8>,
    pub created_at: i64,
    pub deliveries: Vec<DeliveryRow>,
}

#[derive(Debug, Clone)]
pub struct TransactionDetail {
    pub summary: TxSummary,
    pub transitions: Vec<TransitionRow>,
    pub notifications: Vec<NotificationRow>,
}

/// How many transactions of one operation wait in a review queue, and since when the oldest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueCount {
    pub state: State,
    pub operation: Operation,
    pub count: i64,
    /// The earliest `updated_at` (when it entered the queue) among them.
    pub oldest_at: i64,
}

#[derive(Debug, Clone)]
pub struct TransactionPage {
    pub items: Vec<TxSummary>,
    /// Pass back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<i64>,
}

/// A stored value that is not one of its enum's names.
fn bad(what: &str, v: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("bad {what} {v:?}").into(),
    )
}

fn summary_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TxSummary> {
    let op: String = r.get("operation")?;
    let state: String = r.get("state")?;
    Ok(TxSummary {
        tguid: r.get("tguid")?,
        operation: Operation::parse(&op).ok_or_else(|| bad("operation", &op))?,
        state: State::parse(&state).ok_or_else(|| bad("state", &state))?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}

impl SqliteReaders {
    pub(super) fn new(path: PathBuf, _synchronous_full: bool) -> Self {
        Self {
            path: Arc::new(path),
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Runs `f` on a read connection on the blocking pool.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> rusqlite::Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match this.idle.lock().expect("reader pool").pop() {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(
                        this.path.as_ref(),
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    c.pragma_update(None, "busy_timeout", 5000)?;
                    c
                }
            };
            let out = f(&conn);
            this.idle.lock().expect("reader pool").push(conn);
            out
        })
        .await
        .map_err(|e| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(1),
                Some(format!("reader task failed: {e}")),
            )
        })?
    }

    pub async fn transaction(&self, tguid: String) -> rusqlite::Result<Option<TransactionDetail>> {
        self.run(move |c| transaction(c, &tguid)).await
    }

    /// The review queues (PENDING and EXCEPTION) by operation, with counts.
    pub async fn queues(&self) -> rusqlite::Result<Vec<QueueCount>> {
        self.run(queues).await
    }

    pub async fn list(
        &self,
        state: Option<State>,
        operation: Option<Operation>,
        cursor: i64,
        limit: usize,
    ) -> rusqlite::Result<TransactionPage> {
        self.run(move |c| list(c, state, operation, cursor, limit))
            .await
    }
}

/// A delivery from the columns id, endpoint_id, status, attempts, next_attempt_at,
/// last_attempt_at, last_status, last_error, delivered_at (in that order, from column 0).
fn delivery_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRow> {
    let status: String = r.get(2)?;
    Ok(DeliveryRow {
        id: r.get(0)?,
        endpoint_id: r.get(1)?,
        // Only a pending delivery has a next attempt.
        next_attempt_at: if status == "pending" { r.get(4)? } else { None },
        status,
        attempts: r.get(3)?,
        last_attempt_at: r.get(5)?,
        last_status: r.get(6)?,
        last_error: r.get(7)?,
        delivered_at: r.get(8)?,
    })
}

fn transaction(c: &Connection, tguid: &str) -> rusqlite::Result<Option<TransactionDetail>> {
    let Some((summary, tx)) = c
        .prepare_cached("SELECT tguid, operation, state, created_at, updated_at, id FROM transactions WHERE tguid = ?1")?
        .query_row([tguid], |r| Ok((summary_from_row(r)?, r.get::<_, i64>(5)?)))
        .optional()?
    else {
        return Ok(None);
    };
    let transitions = c
        .prepare_cached(
            "SELECT t.from_state, t.to_state, t.input, t.uguid, t.actor, t.event_id, t.at, d.decision_id, d.comment
             FROM transitions t LEFT JOIN decisions d ON d.transition_id = t.id
             WHERE t.tx = ?1 ORDER BY t.id",
        )?
        .query_map([tx], |r| {
            Ok(TransitionRow {
                from_state: r.get(0)?,
                to_state: r.get(1)?,
                input: r.get(2)?,
                uguid: r.get(3)?,
                actor: r.get(4)?,
                event_id: r.get(5)?,
                at: r.get(6)?,
                decision_id: r.get(7)?,
                comment: r.get(8)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut notifications = c
        .prepare_cached("SELECT id, seq, webhook_id, body, created_at FROM notifications WHERE tx = ?1 ORDER BY seq")?
        .query_map([tx], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                NotificationRow {
                    seq: r.get(1)?,
                    webhook_id: r.get(2)?,
                    body: r.get(3)?,
                    created_at: r.get(4)?,
                    deliveries: vec![],
                },
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut deliveries = c.prepare_cached(
        "SELECT id, endpoint_id, status, attempts, next_attempt_at, last_attempt_at, last_status, last_error, delivered_at
         FROM deliveries WHERE notification_id = ?1 ORDER BY endpoint_id",
    )?;
    for (id, n) in &mut notifications {
        n.deliveries = deliveries
            .query_map(params![*id], delivery_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
    }
    Ok(Some(TransactionDetail {
        summary,
        transitions,
        notifications: notifications.into_iter().map(|(_, n)| n).collect(),
    }))
}

fn queues(c: &Connection) -> rusqlite::Result<Vec<QueueCount>> {
    // Each queue walks its own part of the state index; no other transaction is read.
    let mut stmt = c.prepare_cached(
        "SELECT operation, count(*), min(updated_at) FROM transactions INDEXED BY transactions_by_state
         WHERE state = ?1 GROUP BY operation ORDER BY operation",
    )?;
    let mut out = Vec::new();
    for state in [State::Pending, State::Exception] {
        let rows = stmt.query_map([state.as_str()], |r| {
            let op: String = r.get(0)?;
            Ok((op, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })?;
        for row in rows {
            let (op, count, oldest_at) = row?;
            let operation = Operation::parse(&op).ok_or_else(|| bad("operation", &op))?;
            out.push(QueueCount {
                state,
                operation,
                count,
                oldest_at,
            });
        }
    }
    Ok(out)
}

fn list(
    c: &Connection,
    state: Option<State>,
    operation: Option<Operation>,
    cursor: i64,
    limit: usize,
) -> rusqlite::Result<TransactionPage> {
    // With a state, walk that state's index (state, rowid): a review queue page costs its
    // own size, not a scan of every transaction.
    let mut stmt = c.prepare_cached(if state.is_some() {
        "SELECT rowid, tguid, operation, state, created_at, updated_at FROM transactions INDEXED BY transactions_by_state
         WHERE state = ?2 AND rowid > ?1 AND (?3 IS NULL OR operation = ?3)
         ORDER BY rowid LIMIT ?4"
    } else {
        "SELECT rowid, tguid, operation, state, created_at, updated_at FROM transactions
         WHERE rowid > ?1 AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR operation = ?3)
         ORDER BY rowid LIMIT ?4"
    })?;
    let rows = stmt
        .query_map(
            params![
                cursor,
                state.map(State::as_str),
                operation.map(Operation::as_str),
                limit as i64 + 1
            ],
            |r| Ok((r.get::<_, i64>(0)?, summary_from_row(r)?)),
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let more = rows.len() > limit;
    let items: Vec<_> = rows.into_iter().take(limit).collect();
    let next_cursor = if more {
        items.last().map(|(rowid, _)| *rowid)
    } else {
        None
    };
    Ok(TransactionPage {
        items: items.into_iter().map(|(_, s)| s).collect(),
        next_cursor,
    })
}

/// A delivery as the operator API lists it.
#[derive(Debug, Clone)]
pub struct DeliveryListRow {
    pub tguid: String,
    pub seq: i64,
    pub webhook_id: String,
    pub delivery: DeliveryRow,
}

/// Which deliveries to list.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// pending | failing (pending after at least one failed attempt) | dead | delivered
    pub status: Option<String>,
    pub endpoint_id: Option<String>,
    pub tguid: Option<String>,
    pub cursor: i64,
    pub limit: usize,
}

/// What the endpoints list shows of one endpoint, as the database has it: its stored
/// settings (never its secret), whether it is still configured, its health and its backlog.
/// A report for people, not an endpoint: deliveries go by `endpoint::Endpoint`s, in the
/// registry.
#[derive(Debug, Clone)]
pub struct EndpointRow {
    pub id: String,
    pub url: String,
    pub source: String,
    pub active: bool,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<i64>,
    pub backlog: i64,
    pub dead: i64,
    pub oldest_pending_at: Option<i64>,
    pub last_delivered_at: Option<i64>,
    /// The patterns it subscribed to (`None`: everything).
    pub subscriptions: Option<Vec<String>>,
    /// "gbds" or "cloudevents".
    pub format: String,
}

impl SqliteReaders {
    pub async fn deliveries(
        &self,
        filter: DeliveryFilter,
    ) -> rusqlite::Result<(Vec<DeliveryListRow>, Option<i64>)> {
        self.run(move |c| {
            let (status, failing_only) = match filter.status.as_deref() {
                Some("failing") => (Some("pending"), true),
                other => (other, false),
            };
            let mut stmt = c.prepare_cached(
                "SELECT d.id, d.endpoint_id, d.status, d.attempts, d.next_attempt_at, d.last_attempt_at,
                        d.last_status, d.last_error, d.delivered_at, d.tguid, d.seq, n.webhook_id
                 FROM deliveries d JOIN notifications n ON n.id = d.notification_id
                 WHERE d.id > ?1 AND (?2 IS NULL OR d.status = ?2) AND (?3 = 0 OR d.attempts > 0)
                   AND (?4 IS NULL OR d.endpoint_id = ?4) AND (?5 IS NULL OR d.tguid = ?5)
                 ORDER BY d.id LIMIT ?6",
            )?;
            let rows = stmt
                .query_map(
                    params![
                        filter.cursor,
                        status,
                        failing_only,
                        filter.endpoint_id,
                        filter.tguid,
                        filter.limit as i64 + 1
                    ],
                    |r| {
                        Ok(DeliveryListRow {
                            tguid: r.get(9)?,
                            seq: r.get(10)?,
                            webhook_id: r.get(11)?,
                            delivery: delivery_from_row(r)?,
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            let more = rows.len() > filter.limit;
            let rows: Vec<_> = rows.into_iter().take(filter.limit).collect();
            let next = if more { rows.last().map(|r| r.delivery.id) } else { None };
            Ok((rows, next))
        })
        .await
    }

    pub async fn endpoints(&self) -> rusqlite::Result<Vec<EndpointRow>> {
        self.run(|c| {
            c.prepare_cached(
                "SELECT e.id, e.url, e.source, e.active, e.enabled, e.disabled_reason, e.failing_since,
                        (SELECT count(*) FROM deliveries d WHERE d.endpoint_id = e.id AND d.status = 'pending'),
                        (SELECT count(*) FROM deliveries d WHERE d.endpoint_id = e.id AND d.status = 'dead'),
                        (SELECT min(n.created_at) FROM deliveries d JOIN notifications n ON n.id = d.notification_id
                          WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.ready = 1),
                        e.last_delivered_at, e.subscriptions, e.format
                 FROM endpoints e ORDER BY e.id",
            )?
            .query_map([], |r| {
                Ok(EndpointRow {
                    id: r.get(0)?,
                    url: r.get(1)?,
                    source: r.get(2)?,
                    active: r.get(3)?,
                    enabled: r.get(4)?,
                    disabled_reason: r.get(5)?,
                    failing_since: r.get(6)?,
                    backlog: r.get(7)?,
                    dead: r.get(8)?,
                    oldest_pending_at: r.get(9)?,
                    last_delivered_at: r.get(10)?,
                    subscriptions: r
                        .get::<_, Option<String>>(11)?
                        .and_then(|json| serde_json::from_str(&json).ok()),
                    format: r.get(12)?,
                })
            })?
            .collect()
        })
        .await
    }
}

/// One notification of the pull feed.
#[derive(Debug, Clone)]
pub struct FeedRow {
    /// Where the feed continues after it.
    pub cursor: FeedCursor,
    /// `notifications.id`.
    pub id: i64,
    pub tguid: String,
    pub seq: i64,
    pub webhook_id: String,
    pub operation: String,
    pub status: String,
    pub body: Vec<u8>,
    pub created_at: i64,
}

/// Which notifications the feed returns: those after `after`, optionally of one transaction,
/// operation or status, at most `limit`.
#[derive(Debug, Clone, Default)]
pub struct FeedFilter {
    pub after: FeedCursor,
    pub limit: usize,
    pub tguid: Option<String>,
    pub operation: Option<String>,
    pub status: Option<String>,
}

impl SqliteReaders {
    /// Notifications in commit order. Ids are assigned by the single writer inside its
    /// transactions and never reused (AUTOINCREMENT), so a reader never sees an id before a
    /// smaller one: a consumer that resumes after the last id it read misses nothing.
    pub async fn feed(&self, filter: FeedFilter) -> rusqlite::Result<Vec<FeedRow>> {
        self.run(move |c| {
            c.prepare_cached(
                "SELECT id, tguid, seq, webhook_id, operation, status, body, created_at
                 FROM notifications
                 WHERE id > ?1 AND (?2 IS NULL OR tguid = ?2)
                   AND (?3 IS NULL OR operation = ?3) AND (?4 IS NULL OR status = ?4)
                 ORDER BY id LIMIT ?5",
            )?
            .query_map(
                params![
                    filter.after.id,
                    filter.tguid,
                    filter.operation,
                    filter.status,
                    filter.limit as i64
                ],
                |r| {
                    Ok(FeedRow {
                        cursor: FeedCursor {
                            commit: 0,
                            id: r.get(0)?,
                        },
                        id: r.get(0)?,
                        tguid: r.get(1)?,
                        seq: r.get(2)?,
                        webhook_id: r.get(3)?,
                        operation: r.get(4)?,
                        status: r.get(5)?,
                        body: r.get(6)?,
                        created_at: r.get(7)?,
                    })
                },
            )?
            .collect()
        })
        .await
    }
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The database cannot be reached now; the same read may succeed later.
    #[error("the store cannot be read now: {0}")]
    Unavailable(String),
    #[error("storage error: {0}")]
    Internal(String),
}

impl From<rusqlite::Error> for ReadError {
    fn from(e: rusqlite::Error) -> Self {
        ReadError::Internal(e.to_string())
    }
}

/// A position in the pull feed. On SQLite, ids are commit order (one writer, ids never
/// reused) and `commit` is 0; on PostgreSQL, `commit` is the id of the database transaction
/// that wrote the notification (`xid8`), by which the feed is ordered first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedCursor {
    pub commit: i64,
    pub id: i64,
}

impl FeedCursor {
    /// `"<id>"` or `"<commit>.<id>"`, both numbers not negative.
    pub fn parse(text: &str) -> Option<Self> {
        let number = |t: &str| {
            t.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0 && t.bytes().all(|b| b.is_ascii_digit()))
        };
        match text.split_once('.') {
            None => Some(FeedCursor {
                commit: 0,
                id: number(text)?,
            }),
            Some((commit, id)) => Some(FeedCursor {
                commit: number(commit)?,
                id: number(id)?,
            }),
        }
    }
}

impl std::fmt::Display for FeedCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.commit == 0 {
            write!(f, "{}", self.id)
        } else {
            write!(f, "{}.{}", self.commit, self.id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_cursor_reads_back_as_it_was_written() {
        for cursor in [
            FeedCursor { commit: 0, id: 0 },
            FeedCursor { commit: 0, id: 42 },
            FeedCursor {
                commit: 7_000_000_001,
                id: 9,
            },
        ] {
            assert_eq!(FeedCursor::parse(&cursor.to_string()), Some(cursor));
        }
        assert_eq!(
            FeedCursor::parse("3").map(|c| c.to_string()),
            Some("3".into())
        );
        for bad in ["", "-1", "x", "1.", ".1", "1.2.3", "+4", "1.-2"] {
            assert_eq!(FeedCursor::parse(bad), None, "{bad:?}");
        }
    }
}
