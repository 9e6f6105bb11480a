//! The GET routes' queries on PostgreSQL, on a small pool of connections (deadpool) that
//! replaces a broken connection by itself once the database is back; and the pull feed in
//! commit order across instances.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Row;

use crate::domain::{Operation, State};
use crate::store::{
    DeliveryFilter, DeliveryListRow, DeliveryRow, EndpointRow, FeedCursor, FeedFilter, FeedRow,
    NotificationRow, QueueCount, ReadError, TransactionDetail, TransactionPage, TransitionRow,
    TxSummary,
};

/// Connections the readers keep at most (the database's `max_connections` is shared by every
/// instance).
const READERS: usize = 4;

/// The oldest transaction id still running on this database (as a 64-bit `xid8`: the 32-bit
/// `backend_xid` placed in the epoch of the next id), or the next id when none is.
const FEED_BOUND: &str = "WITH s AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next),
     running AS (
         SELECT ((s.next >> 32) << 32) + a.backend_xid::text::bigint AS xid_full, s.next
         FROM s JOIN pg_stat_activity a ON a.datname = current_database() AND a.backend_xid IS NOT NULL
     )
     SELECT coalesce(
         (SELECT min(CASE WHEN xid_full > next THEN xid_full - 4294967296 ELSE xid_full END) FROM running),
         (SELECT next FROM s))";

/// A pool of read connections to the PostgreSQL store.
#[derive(Clone)]
pub struct PgReaders {
    pool: Pool,
}

impl From<tokio_postgres::Error> for ReadError {
    fn from(e: tokio_postgres::Error) -> Self {
        match super::Failure::from(e) {
            super::Failure::Unreachable(why) => ReadError::Unavailable(why),
            other => ReadError::Internal(other.to_string()),
        }
    }
}

fn bad(what: &str, v: &str) -> ReadError {
    ReadError::Internal(format!("bad {what} {v:?} stored"))
}

fn summary(r: &Row, at: usize) -> Result<TxSummary, ReadError> {
    let op: String = r.get(at + 1);
    let state: String = r.get(at + 2);
    Ok(TxSummary {
        tguid: r.get(at),
        operation: Operation::parse(&op).ok_or_else(|| bad("operation", &op))?,
        state: State::parse(&state).ok_or_else(|| bad("state", &state))?,
        created_at: r.get(at + 3),
        updated_at: r.get(at + 4),
    })
}

/// A delivery from the columns id, endpoint_id, status, attempts, next_attempt_at,
/// last_attempt_at, last_status, last_error, delivered_at (from column 0).
fn delivery(r: &Row) -> DeliveryRow {
    let status: String = r.get(2);
    DeliveryRow {
        id: r.get(0),
        endpoint_id: r.get(1),
        next_attempt_at: if status == "pending" { r.get(4) } else { None },
        status,
        attempts: r.get::<_, i32>(3).into(),
        last_attempt_at: r.get(5),
        last_status: r.get::<_, Option<i32>>(6).map(i64::from),
        last_error: r.get(7),
        delivered_at: r.get(8),
    }
}

impl PgReaders {
    pub(super) fn new(config: tokio_postgres::Config) -> Self {
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(READERS)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .expect("a pool with a runtime and a size builds");
        PgReaders { pool }
    }

    async fn client(&self) -> Result<Object, ReadError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => ReadError::Unavailable(format!("no connection to PostgreSQL: {other}")),
        })
    }

    pub async fn transaction(&self, tguid: &str) -> Result<Option<TransactionDetail>, ReadError> {
        let c = self.client().await?;
        let Some(row) = c
            .query_opt(
                "SELECT tguid, operation, state, created_at, updated_at, id FROM transactions WHERE tguid = $1",
                &[&tguid],
            )
            .await?
        else {
            return Ok(None);
        };
        let (summary, tx): (TxSummary, i64) = (summary(&row, 0)?, row.get(5));
        let transitions = c
            .query(
                "SELECT t.from_state, t.to_state, t.input, t.uguid, t.actor, t.event_id, t.at, d.decision_id, d.comment
                 FROM transitions t LEFT JOIN decisions d ON d.transition_id = t.id
                 WHERE t.tx = $1 ORDER BY t.id",
                &[&tx],
            )
            .await?
            .iter()
            .map(|r| TransitionRow {
                from_state: r.get(0),
                to_state: r.get(1),
                input: r.get(2),
                uguid: r.get(3),
                actor: r.get(4),
                event_id: r.get(5),
                at: r.get(6),
                decision_id: r.get(7),
                comment: r.get(8),
            })
            .collect();
        let mut notifications: Vec<(i64, NotificationRow)> = c
            .query(
                "SELECT id, seq, webhook_id, body, created_at FROM notifications WHERE tx = $1 ORDER BY seq",
                &[&tx],
            )
            .await?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    NotificationRow {
                        seq: r.get(1),
                        webhook_id: r.get(2),
                        body: r.get(3),
                        created_at: r.get(4),
                        deliveries: vec![],
                    },
                )
            })
            .collect();
        let deliveries = c
            .query(
                "SELECT id, endpoint_id, status, attempts, next_attempt_at, last_attempt_at, last_status,
                        last_error, delivered_at, notification_id
                 FROM deliveries WHERE tx = $1 ORDER BY endpoint_id",
                &[&tx],
            )
            .await?;
        for r in &deliveries {
            let notification: i64 = r.get(9);
            if let Some((_, n)) = notifications.iter_mut().find(|(id, _)| *id == notification) {
                n.deliveries.push(delivery(r));
            }
        }
        Ok(Some(TransactionDetail {
            summary,
            transitions,
            notifications: notifications.into_iter().map(|(_, n)| n).collect(),
        }))
    }

    pub async fn queues(&self) -> Result<Vec<QueueCount>, ReadError> {
        let c = self.client().await?;
        let mut out = Vec::new();
        for state in [State::Pending, State::Exception] {
            let rows = c
                .query(
                    "SELECT operation, count(*), min(updated_at) FROM transactions
                     WHERE state = $1 GROUP BY operation ORDER BY operation",
                    &[&state.as_str()],
                )
                .await?;
            for r in &rows {
                let op: String = r.get(0);
                out.push(QueueCount {
                    state,
                    operation: Operation::parse(&op).ok_or_else(|| bad("operation", &op))?,
                    count: r.get(1),
                    oldest_at: r.get(2),
                });
            }
        }
        Ok(out)
    }

    pub async fn list(
        &self,
        state: Option<State>,
        operation: Option<Operation>,
        cursor: i64,
        limit: usize,
    ) -> Result<TransactionPage, ReadError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT tguid, operation, state, created_at, updated_at, id FROM transactions
                 WHERE id > $1 AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR operation = $3)
                 ORDER BY id LIMIT $4",
                &[
                    &cursor,
                    &state.map(State::as_str),
                    &operation.map(Operation::as_str),
                    &(limit as i64 + 1),
                ],
            )
            .await?;
        let more = rows.len() > limit;
        let mut items = Vec::with_capacity(limit);
        let mut last = None;
        for r in rows.iter().take(limit) {
            items.push(summary(r, 0)?);
            last = Some(r.get::<_, i64>(5));
        }
        Ok(TransactionPage {
            items,
            next_cursor: if more { last } else { None },
        })
    }

    pub async fn deliveries(
        &self,
        filter: DeliveryFilter,
    ) -> Result<(Vec<DeliveryListRow>, Option<i64>), ReadError> {
        let (status, failing_only) = match filter.status.as_deref() {
            Some("failing") => (Some("pending"), true),
            other => (other, false),
        };
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT d.id, d.endpoint_id, d.status, d.attempts, d.next_attempt_at, d.last_attempt_at,
                        d.last_status, d.last_error, d.delivered_at, d.tguid, d.seq, n.webhook_id
                 FROM deliveries d JOIN notifications n ON n.id = d.notification_id
                 WHERE d.id > $1 AND ($2::text IS NULL OR d.status = $2) AND (NOT $3 OR d.attempts > 0)
                   AND ($4::text IS NULL OR d.endpoint_id = $4) AND ($5::text IS NULL OR d.tguid = $5)
                 ORDER BY d.id LIMIT $6",
                &[
                    &filter.cursor,
                    &status,
                    &failing_only,
                    &filter.endpoint_id,
                    &filter.tguid,
                    &(filter.limit as i64 + 1),
                ],
            )
            .await?;
        let more = rows.len() > filter.limit;
        let rows: Vec<DeliveryListRow> = rows
            .iter()
            .take(filter.limit)
            .map(|r| DeliveryListRow {
                tguid: r.get(9),
                seq: r.get(10),
                webhook_id: r.get(11),
                delivery: delivery(r),
            })
            .collect();
        let next = if more {
            rows.last().map(|r| r.delivery.id)
        } else {
            None
        };
        Ok((rows, next))
    }

    pub async fn endpoints(&self) -> Result<Vec<EndpointRow>, ReadError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT e.id, e.url, e.source, e.active, e.enabled, e.disabled_reason, e.failing_since,
                        (SELECT count(*) FROM deliveries d WHERE d.endpoint_id = e.id AND d.status = 'pending'),
                        (SELECT count(*) FROM deliveries d WHERE d.endpoint_id = e.id AND d.status = 'dead'),
                        (SELECT min(n.created_at) FROM deliveries d JOIN notifications n ON n.id = d.notification_id
                          WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.ready),
                        (SELECT d.delivered_at FROM deliveries d WHERE d.endpoint_id = e.id AND d.status = 'delivered'
                          ORDER BY d.id DESC LIMIT 1),
                        e.subscriptions, e.format
                 FROM endpoints e ORDER BY e.id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| EndpointRow {
                id: r.get(0),
                url: r.get(1),
                source: r.get(2),
                active: r.get(3),
                enabled: r.get(4),
                disabled_reason: r.get(5),
                failing_since: r.get(6),
                backlog: r.get(7),
                dead: r.get(8),
                oldest_pending_at: r.get(9),
                last_delivered_at: r.get(10),
                subscriptions: r
                    .get::<_, Option<String>>(11)
                    .and_then(|json| serde_json::from_str(&json).ok()),
                format: r.get(12),
            })
            .collect())
    }

    /// Notifications in commit order across instances: by the id of the database transaction
    /// that wrote each (then by id), and only those written below the oldest transaction still
    /// running on this database, so that one that commits late is never passed over: it is
    /// read once it has committed, and everything after it in the feed began after it.
    ///
    /// The bound is taken first, in a statement of its own: every transaction below it had
    /// ended when it was taken, so the read that follows (a newer snapshot) sees all of them.
    /// Only this database's transactions count (`pg_stat_activity`), so that a long
    /// transaction elsewhere on the server does not hold the feed back.
    pub async fn feed(&self, filter: FeedFilter) -> Result<Vec<FeedRow>, ReadError> {
        let c = self.client().await?;
        let bound: i64 = c.query_one(FEED_BOUND, &[]).await?.get(0);
        let rows = c
            .query(
                "SELECT xid::text::bigint, id, tguid, seq, webhook_id, operation, status, body, created_at
                 FROM notifications
                 WHERE (xid, id) > ($1::bigint::text::xid8, $2::bigint)
                   AND xid < $7::bigint::text::xid8
                   AND ($3::text IS NULL OR tguid = $3) AND ($4::text IS NULL OR operation = $4)
                   AND ($5::text IS NULL OR status = $5)
                 ORDER BY xid, id LIMIT $6",
                &[
                    &filter.after.commit,
                    &filter.after.id,
                    &filter.tguid,
                    &filter.operation,
                    &filter.status,
                    &(filter.limit as i64),
                    &bound,
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| FeedRow {
                cursor: FeedCursor {
                    commit: r.get(0),
                    id: r.get(1),
                },
                id: r.get(1),
                tguid: r.get(2),
                seq: r.get(3),
                webhook_id: r.get(4),
                operation: r.get(5),
                status: r.get(6),
                body: r.get(7),
                created_at: r.get(8),
            })
            .collect())
    }
}
