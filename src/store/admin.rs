//! Operator actions on the outbox, run by the writer like any other write: re-queueing dead
//! or delivered notifications, endpoint management, retention and endpoint health. Each keeps
//! the per-(tguid, endpoint) order: after it, only the first pending delivery of a queue is
//! claimable, and never while another delivery of that queue is in flight.

use rusqlite::{params, Connection, OptionalExtension};

use super::endpoints::stored_patterns;
use super::leases::Leases;
use super::{AdminDone, AdminOp, WriteError};
use crate::domain::Subscriptions;
use crate::endpoint::{Destination, Endpoint, Format, Snapshot};
use crate::secret::Secret;

// A transaction's pending deliveries are in `deliveries_queue`; all of them (delivered and
// dead too) are found through its notifications, (tx, seq), then (notification_id,
// endpoint_id): a handful of index lookups, never a scan.

/// The pending deliveries of a (transaction, endpoint), in order.
pub(super) const QUEUE: &str =
    "SELECT id FROM deliveries WHERE tx = ?1 AND endpoint_id = ?2 AND status = 'pending' ORDER BY seq";

/// Re-queues what was sent (or went dead) of a transaction, to all endpoints or one.
pub(super) const REQUEUE_SENT: &str =
    "UPDATE deliveries SET status = 'pending', ready = 0, attempts = 0, next_attempt_at = ?2, delivered_at = NULL
     WHERE notification_id IN (SELECT id FROM notifications WHERE tx = ?1)
       AND status IN ('delivered', 'dead') AND (?3 IS NULL OR endpoint_id = ?3)";

pub(super) const PENDING_ENDPOINTS: &str = "SELECT DISTINCT endpoint_id FROM deliveries
     WHERE tx = ?1 AND status = 'pending' AND (?2 IS NULL OR endpoint_id = ?2)";

pub(super) const PENDING_COUNT: &str = "SELECT count(*) FROM deliveries
     WHERE tx = ?1 AND status = 'pending' AND (?2 IS NULL OR endpoint_id = ?2)";

/// Final transactions last changed before ?1 with nothing pending or dead: what retention may
/// delete. The partial index holds final transactions only; the state test must be its own
/// predicate, word for word, for SQLite to use it.
pub(super) const RETAINABLE: &str =
    "SELECT t.id, t.tguid FROM transactions t INDEXED BY transactions_final_by_update
     WHERE t.updated_at < ?1
       AND (t.state = 'ENROLLED' OR t.state = 'FAILED' OR t.state = 'MATCH' OR t.state = 'NOT_MATCH'
            OR t.state = 'PERSON_NOT_FOUND')
       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.tx = t.id AND d.status = 'pending')
       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.tx = t.id AND d.status = 'dead')
     LIMIT ?2";

/// The database and what the writer knows beside it: which deliveries are in flight, and
/// the endpoints as the open transaction has them.
pub(super) struct Outbox<'a> {
    pub conn: &'a Connection,
    pub leases: &'a Leases,
    pub endpoints: &'a Snapshot,
    pub now: i64,
}

pub(super) fn run(outbox: &Outbox, op: &AdminOp) -> Result<AdminDone, WriteError> {
    let (conn, now) = (outbox.conn, outbox.now);
    match op {
        AdminOp::RetryDelivery { id } => retry_delivery(outbox, *id),
        AdminOp::Recover { endpoint_id, since } => recover(outbox, endpoint_id, *since),
        AdminOp::Renotify { tguid, endpoint_id } => renotify(outbox, tguid, endpoint_id.as_deref()),
        AdminOp::CreateEndpoint(endpoint) => create_endpoint(conn, endpoint, now),
        AdminOp::UpdateEndpoint { id, change } => {
            if change.subscriptions.is_some() || change.format.is_some() {
                endpoint_options(conn, id, change.subscriptions.as_ref(), change.format, now)?;
            }
            update_endpoint(
                conn,
                id,
                change.url.as_ref().map(|u| u.as_str()),
                change
                    .secret
                    .as_ref()
                    .map(|s| s.as_ref().map(Secret::expose)),
                change.enabled,
                now,
            )
        }
        AdminOp::DeleteEndpoint { id } => delete_endpoint(conn, id, now),
        AdminOp::Retention { cutoff, limit } => retention(conn, *cutoff, *limit),
        AdminOp::DisableFailing { cutoff } => disable_failing(conn, *cutoff, now),
    }
}

fn done(affected: usize) -> AdminDone {
    AdminDone { affected }
}

/// Makes the queue of (tguid, endpoint) consistent again: its first pending delivery is the
/// only claimable one, unless one of its deliveries is in flight (that one stays, and its
/// completion promotes the first pending one).
fn recompute_head(outbox: &Outbox, tx: i64, endpoint_id: &str) -> rusqlite::Result<()> {
    let conn = outbox.conn;
    let pending: Vec<i64> = conn
        .prepare_cached(QUEUE)?
        .query_map(params![tx, endpoint_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let in_flight: Vec<i64> = pending
        .iter()
        .copied()
        .filter(|&id| outbox.leases.held(id, outbox.now))
        .collect();
    let heads = if in_flight.is_empty() {
        pending.first().copied().into_iter().collect()
    } else {
        in_flight
    };
    let mut set =
        conn.prepare_cached("UPDATE deliveries SET ready = ?2 WHERE id = ?1 AND ready != ?2")?;
    for id in pending {
        set.execute(params![id, heads.contains(&id)])?;
    }
    Ok(())
}

fn retry_delivery(outbox: &Outbox, id: i64) -> Result<AdminDone, WriteError> {
    let (conn, now) = (outbox.conn, outbox.now);
    let row: Option<(String, String, String, i64)> = conn
        .prepare_cached("SELECT tguid, endpoint_id, status, tx FROM deliveries WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let Some((tguid, endpoint_id, status, tx)) = row else {
        return Err(WriteError::Missing(format!("no delivery with id {id}")));
    };
    let leased = outbox.leases.held(id, now);
    match (status.as_str(), leased) {
        ("delivered", _) => {
            return Err(WriteError::Conflict(format!(
            "delivery {id} was delivered; re-send it with POST /v1/transactions/{tguid}/renotify"
        )))
        }
        ("pending", true) => {
            return Err(WriteError::Conflict(format!(
                "delivery {id} is being attempted right now"
            )))
        }
        _ => {}
    }
    conn.prepare_cached(
        "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?2 WHERE id = ?1",
    )?
    .execute(params![id, now])?;
    recompute_head(outbox, tx, &endpoint_id)?;
    Ok(done(1))
}

fn endpoint_source(conn: &Connection, id: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT source FROM endpoints WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()
}

fn recover(outbox: &Outbox, endpoint_id: &str, since: i64) -> Result<AdminDone, WriteError> {
    let (conn, now) = (outbox.conn, outbox.now);
    if endpoint_source(conn, endpoint_id)?.is_none() {
        return Err(WriteError::Missing(format!(
            "no endpoint with id {endpoint_id}"
        )));
    }
    let txs: Vec<i64> = conn
        .prepare_cached(
            "SELECT DISTINCT tx FROM deliveries WHERE endpoint_id = ?1 AND status = 'dead' AND last_attempt_at >= ?2",
        )?
        .query_map(params![endpoint_id, since], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let n = conn
        .prepare_cached(
            "UPDATE deliveries SET status = 'pending', ready = 0, attempts = 0, next_attempt_at = ?3
             WHERE endpoint_id = ?1 AND status = 'dead' AND last_attempt_at >= ?2",
        )?
        .execute(params![endpoint_id, since, now])?;
    for tx in txs {
        recompute_head(outbox, tx, endpoint_id)?;
    }
    Ok(done(n))
}

fn renotify(
    outbox: &Outbox,
    tguid: &str,
    endpoint_id: Option<&str>,
) -> Result<AdminDone, WriteError> {
    let (conn, now) = (outbox.conn, outbox.now);
    let tx: Option<i64> = conn
        .prepare_cached("SELECT id FROM transactions WHERE tguid = ?1")?
        .query_row([tguid], |r| r.get(0))
        .optional()?;
    let Some(tx) = tx else {
        return Err(WriteError::NotFound(tguid.to_owned()));
    };
    if let Some(e) = endpoint_id {
        if endpoint_source(conn, e)?.is_none() {
            return Err(WriteError::Missing(format!("no endpoint with id {e}")));
        }
    }
    // Endpoints added since the notifications were recorded get them too, when subscribed.
    let endpoints = outbox
        .endpoints
        .iter()
        .map(|e| &e.endpoint)
        .filter(|e| endpoint_id.is_none_or(|id| e.id == id));
    for endpoint in endpoints {
        let missing: Vec<(i64, i64, String, String)> = conn
            .prepare_cached(
                "SELECT n.id, n.seq, n.operation, n.status FROM notifications n
                 WHERE n.tx = ?1
                   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id AND d.endpoint_id = ?2)",
            )?
            .query_map(params![tx, endpoint.id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        for (notification_id, seq, operation, status) in &missing {
            if endpoint.subscriptions.matches(operation, status) {
                conn.prepare_cached(
                    "INSERT INTO deliveries (notification_id, endpoint_id, tx, tguid, seq, status, ready, next_attempt_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6)",
                )?
                .execute(params![notification_id, endpoint.id, tx, tguid, seq, now])?;
            }
        }
    }
    conn.prepare_cached(REQUEUE_SENT)?
        .execute(params![tx, now, endpoint_id])?;
    let endpoints: Vec<String> = conn
        .prepare_cached(PENDING_ENDPOINTS)?
        .query_map(params![tx, endpoint_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for e in &endpoints {
        recompute_head(outbox, tx, e)?;
    }
    let queued: i64 = conn
        .prepare_cached(PENDING_COUNT)?
        .query_row(params![tx, endpoint_id], |r| r.get(0))?;
    Ok(done(queued as usize))
}

/// Sets an API endpoint's subscriptions and body format; a configured endpoint's are the
/// configuration file's.
fn endpoint_options(
    conn: &Connection,
    id: &str,
    subscriptions: Option<&Subscriptions>,
    format: Option<Format>,
    now: i64,
) -> Result<(), WriteError> {
    match endpoint_source(conn, id)?.as_deref() {
        None => return Err(WriteError::Missing(format!("no endpoint with id {id}"))),
        Some("config") => {
            return Err(WriteError::Conflict(format!(
                "endpoint {id} is defined in the configuration file; change its subscriptions or format there"
            )))
        }
        Some(_) => {}
    }
    if let Some(subscriptions) = subscriptions {
        conn.prepare_cached(
            "UPDATE endpoints SET subscriptions = ?2, updated_at = ?3 WHERE id = ?1",
        )?
        .execute(params![id, stored_patterns(subscriptions), now])?;
    }
    if let Some(format) = format {
        conn.prepare_cached("UPDATE endpoints SET format = ?2, updated_at = ?3 WHERE id = ?1")?
            .execute(params![id, format.as_str(), now])?;
    }
    Ok(())
}

fn create_endpoint(conn: &Connection, e: &Endpoint, now: i64) -> Result<AdminDone, WriteError> {
    if endpoint_source(conn, &e.id)?.is_some() {
        return Err(WriteError::Conflict(format!(
            "endpoint {} already exists",
            e.id
        )));
    }
    let secret = match &e.destination {
        Destination::Http(http) => http.secrets.first().map(Secret::expose),
        Destination::Amqp(_) => None,
    };
    conn.prepare_cached(
        "INSERT INTO endpoints (id, url, active, enabled, updated_at, source, secret, subscriptions, format)
         VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        e.id,
        e.shown_url(),
        e.enabled,
        now,
        e.source.as_str(),
        secret,
        stored_patterns(&e.subscriptions),
        e.format().as_str()
    ])?;
    Ok(done(1))
}

fn update_endpoint(
    conn: &Connection,
    id: &str,
    url: Option<&str>,
    secret: Option<Option<&str>>,
    enabled: Option<bool>,
    now: i64,
) -> Result<AdminDone, WriteError> {
    let Some(source) = endpoint_source(conn, id)? else {
        return Err(WriteError::Missing(format!("no endpoint with id {id}")));
    };
    if source == "config" && (url.is_some() || secret.is_some()) {
        return Err(WriteError::Conflict(format!(
            "endpoint {id} is defined in the configuration file; change its url or secret there (only enabled can be set here)"
        )));
    }
    if let Some(url) = url {
        conn.prepare_cached("UPDATE endpoints SET url = ?2, updated_at = ?3 WHERE id = ?1")?
            .execute(params![id, url, now])?;
    }
    if let Some(secret) = secret {
        conn.prepare_cached("UPDATE endpoints SET secret = ?2, updated_at = ?3 WHERE id = ?1")?
            .execute(params![id, secret, now])?;
    }
    match enabled {
        Some(true) => {
            conn.prepare_cached(
                "UPDATE endpoints SET enabled = 1, disabled_reason = NULL, failing_since = NULL, updated_at = ?2 WHERE id = ?1",
            )?
            .execute(params![id, now])?;
            // Its backlog resumes now, in order: the heads of its queues fall due. (One in
            // flight is held by its lease, whatever its due time says.)
            conn.prepare_cached(
                "UPDATE deliveries SET next_attempt_at = ?2
                 WHERE endpoint_id = ?1 AND status = 'pending' AND ready = 1",
            )?
            .execute(params![id, now])?;
        }
        Some(false) => {
            conn.prepare_cached(
                "UPDATE endpoints SET enabled = 0, disabled_reason = 'disabled by an operator', updated_at = ?2 WHERE id = ?1",
            )?
            .execute(params![id, now])?;
        }
        None => {}
    }
    Ok(done(1))
}

fn delete_endpoint(conn: &Connection, id: &str, now: i64) -> Result<AdminDone, WriteError> {
    match endpoint_source(conn, id)?.as_deref() {
        None => return Err(WriteError::Missing(format!("no endpoint with id {id}"))),
        Some("config") => {
            return Err(WriteError::Conflict(format!(
                "endpoint {id} is defined in the configuration file; remove it there"
            )))
        }
        Some(_) => {}
    }
    // What it had not received stays visible as dead (and recoverable if it comes back).
    let n = conn
        .prepare_cached(
            "UPDATE deliveries SET status = 'dead', ready = 0, last_error = 'endpoint deleted', last_attempt_at = ?2
             WHERE endpoint_id = ?1 AND status = 'pending'",
        )?
        .execute(params![id, now])?;
    conn.prepare_cached("DELETE FROM endpoints WHERE id = ?1")?
        .execute([id])?;
    Ok(done(n))
}

/// Deletes up to `limit` final transactions last changed before `cutoff` whose every
/// notification was delivered, with their log and outbox rows. Never an undelivered one.
fn retention(conn: &Connection, cutoff: i64, limit: usize) -> Result<AdminDone, WriteError> {
    let doomed: Vec<(i64, String)> = conn
        .prepare_cached(RETAINABLE)?
        .query_map(params![cutoff, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    for (tx, tguid) in &doomed {
        for sql in [
            "DELETE FROM deliveries WHERE notification_id IN (SELECT id FROM notifications WHERE tx = ?1)",
            "DELETE FROM notifications WHERE tx = ?1",
            "DELETE FROM transitions WHERE tx = ?1",
            "DELETE FROM decisions WHERE tx = ?1",
            "DELETE FROM transactions WHERE id = ?1",
        ] {
            conn.prepare_cached(sql)?.execute([tx])?;
        }
        conn.prepare_cached("DELETE FROM event_ids WHERE tguid = ?1")?
            .execute([tguid])?;
    }
    Ok(done(doomed.len()))
}

/// Disables endpoints that have failed every attempt since before `cutoff`.
fn disable_failing(conn: &Connection, cutoff: i64, now: i64) -> Result<AdminDone, WriteError> {
    let n = conn
        .prepare_cached(
            "UPDATE endpoints SET enabled = 0, updated_at = ?2,
                    disabled_reason = 'failing continuously since ' || strftime('%Y-%m-%dT%H:%M:%SZ', failing_since / 1000, 'unixepoch')
             WHERE enabled = 1 AND active = 1 AND failing_since IS NOT NULL AND failing_since < ?1",
        )?
        .execute(params![cutoff, now])?;
    if n > 0 {
        tracing::warn!(count = n, "endpoints failing for too long were disabled");
    }
    Ok(done(n))
}
