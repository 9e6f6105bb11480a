//! Transitions: registering a transaction and applying an input to it, inside the writer's
//! open transaction. The state machine decides (`domain::step`); this records its decision:
//! the transaction's new state, the log row, the idempotency key, and each notification with
//! its exact body and one delivery per subscribed endpoint (`fanout`).

use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::fanout::{fan_out, Recorded};
use super::queue::DeliveryQueue;
use crate::domain::{self, Operation, State, Tguid, UpdateLabel};
use crate::endpoint::Snapshot;
use crate::store::sql::{
    ADVANCE_TRANSACTION, INSERT_NOTIFICATION, INSERT_TRANSACTION, INSERT_TRANSITION,
    TRANSACTION_BY_TGUID,
};
use crate::store::{
    decisions, Applied, DecisionNote, InputRequest, Registered, TxSummary, WriteError,
};

/// The writer's own columns of a transaction row.
struct TxRow {
    /// What child rows reference it by.
    id: i64,
    /// The sequence number of its next notification.
    next_seq: i64,
}

/// A transaction as the writer needs it: its summary, its id and its next sequence number.
fn summary(conn: &Connection, tguid: &str) -> Result<Option<(TxSummary, TxRow)>, WriteError> {
    let mut stmt = conn.prepare_cached(TRANSACTION_BY_TGUID)?;
    let row = stmt
        .query_row([tguid], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .optional()?;
    Ok(match row {
        None => None,
        Some((op, state, created_at, updated_at, next_seq, id)) => Some((
            TxSummary {
                tguid: tguid.to_owned(),
                operation: Operation::parse(&op)
                    .ok_or_else(|| WriteError::Internal(format!("bad operation {op:?} stored")))?,
                state: State::parse(&state)
                    .ok_or_else(|| WriteError::Internal(format!("bad state {state:?} stored")))?,
                created_at,
                updated_at,
            },
            TxRow { id, next_seq },
        )),
    })
}

fn log_transition(
    conn: &Connection,
    (tx, tguid): (i64, &str),
    (from, to): (Option<State>, State),
    input: &str,
    uguid: Option<&str>,
    (actor, event_id): (&str, Option<&str>),
    now: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(INSERT_TRANSITION)?.execute(params![
        tx,
        tguid,
        from.map(State::as_str),
        to.as_str(),
        input,
        uguid,
        actor,
        event_id,
        now
    ])?;
    Ok(())
}

/// Registers a transaction, PROCESSING; the same tguid and operation again is a no-op.
pub(super) fn register(
    conn: &Connection,
    tguid: &Tguid,
    operation: Operation,
    actor: &str,
    now: i64,
) -> Result<Registered, WriteError> {
    if let Some((summary, _)) = summary(conn, tguid.as_str())? {
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
    conn.prepare_cached(INSERT_TRANSACTION)?.execute(params![
        tguid.as_str(),
        operation.as_str(),
        now
    ])?;
    let tx = conn.last_insert_rowid();
    let input = format!("register {operation}");
    log_transition(
        conn,
        (tx, tguid.as_str()),
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

/// Runs the state machine on a transaction and records what the transition emits: its new
/// state, the log row, and each notification with one delivery per endpoint subscribed to it.
/// Every refusal is decided before the first write.
pub(super) fn apply(
    conn: &Connection,
    update_label: UpdateLabel,
    (endpoints, queue): (&Snapshot, &mut DeliveryQueue),
    (request, note): (&InputRequest, &DecisionNote),
    now: i64,
) -> Result<Applied, WriteError> {
    let tguid = request.tguid.as_str();
    let (
        summary,
        TxRow {
            id: tx,
            mut next_seq,
        },
    ) = summary(conn, tguid)?.ok_or_else(|| WriteError::NotFound(tguid.to_owned()))?;

    // An idempotency key used before: (same body?, the refusal for another body).
    let earlier = match &request.event_id {
        Some((event_id, fingerprint)) => conn
            .prepare_cached("SELECT fingerprint FROM event_ids WHERE tguid = ?1 AND event_id = ?2")?
            .query_row([tguid, event_id], |r| r.get::<_, String>(0))
            .optional()?
            .map(|f| {
                (
                    &f == fingerprint,
                    WriteError::EventIdReused(event_id.clone()),
                )
            }),
        None => None,
    };
    let earlier = match earlier {
        Some(e) => Some(e),
        None => decisions::earlier_use(conn, tx, note)?.map(|same| {
            let id = note.decision_id.clone().unwrap_or_default().0;
            (same, WriteError::DecisionIdReused(id))
        }),
    };
    match earlier {
        Some((true, _)) => {
            return Ok(Applied {
                duplicate: true,
                summary,
                notifications: 0,
            });
        }
        Some((false, reused)) => {
            // Contract §4 lists invalid_transition before event_id_reused (and a decision_id
            // is kept like an event_id): when the new body would be refused anyway, that
            // refusal is the answer.
            domain::step(
                summary.operation,
                summary.state,
                &request.input,
                update_label,
            )?;
            return Err(reused);
        }
        None => {}
    }

    let transition = domain::step(
        summary.operation,
        summary.state,
        &request.input,
        update_label,
    )?;

    conn.prepare_cached(ADVANCE_TRANSACTION)?.execute(params![
        tx,
        transition.to.as_str(),
        now,
        next_seq + transition.notifications.len() as i64
    ])?;
    let uguid = match &request.input {
        domain::Input::LatentMatch(u) => Some(u.as_str()),
        _ => None,
    };
    let event_id = request.event_id.as_ref().map(|(id, _)| id.as_str());
    log_transition(
        conn,
        (tx, tguid),
        (Some(summary.state), transition.to),
        &request.input.describe(),
        uguid,
        (&request.actor, event_id),
        now,
    )?;
    decisions::record(conn, tx, conn.last_insert_rowid(), note)?;
    if let Some((event_id, fingerprint)) = &request.event_id {
        conn.prepare_cached(
            "INSERT INTO event_ids (tguid, event_id, fingerprint) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![tguid, event_id, fingerprint])?;
    }

    for notification in &transition.notifications {
        let body: Arc<[u8]> = notification.body(&request.tguid).into();
        let webhook_id = new_webhook_id(now);
        let (operation, status) = (notification.operation(), notification.status());
        conn.prepare_cached(INSERT_NOTIFICATION)?.execute(params![
            tx,
            tguid,
            next_seq,
            webhook_id,
            operation,
            status,
            &body[..],
            now
        ])?;
        let recorded = Recorded {
            id: conn.last_insert_rowid(),
            tx,
            tguid,
            seq: next_seq,
            webhook_id: &webhook_id,
            body: &body,
            operation,
            status,
            created_at: now,
        };
        fan_out(conn, endpoints, &recorded, queue)?;
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

/// A new notification id: the creation time and 64 random bits, unique across databases too.
fn new_webhook_id(now: i64) -> String {
    format!("msg_{:011x}{:016x}", now, fastrand::u64(..))
}
