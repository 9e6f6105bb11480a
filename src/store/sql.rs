//! The writer's hot-path SQL: every statement a call or a delivery result runs, by name, so
//! that a test can EXPLAIN each one (`sql/tests.rs`).

/// Whether a new delivery of a (transaction, endpoint) would be its queue's head: no earlier
/// one is pending (`deliveries_queue`). Asked before the insert, rather than inside it with
/// `RETURNING`: SQLite gathers a `RETURNING` statement's rows in an ephemeral table, a b-tree
/// created and destroyed per statement, which cost the writer more than this second lookup.
pub(crate) const DELIVERY_IS_HEAD: &str =
    "SELECT NOT EXISTS (SELECT 1 FROM deliveries WHERE tx = ?1 AND endpoint_id = ?2 AND status = 'pending')";

/// A new delivery, claimable (`ready`) only when it is its queue's head (`DELIVERY_IS_HEAD`).
pub(crate) const INSERT_DELIVERY: &str =
    "INSERT INTO deliveries (notification_id, endpoint_id, tx, tguid, seq, status, ready, next_attempt_at)
     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7)";

/// The first pending delivery of a (transaction, endpoint): the one to make claimable next.
pub(crate) const NEXT_PENDING: &str = "SELECT id FROM deliveries
     WHERE tx = ?1 AND endpoint_id = ?2 AND status = 'pending'
     ORDER BY seq LIMIT 1";

/// A pending delivery's queue, looked up before its result is recorded (not with `RETURNING`:
/// see `DELIVERY_IS_HEAD`).
pub(crate) const PENDING_DELIVERY: &str =
    "SELECT tx, endpoint_id FROM deliveries WHERE id = ?1 AND status = 'pending'";

/// A transaction's row, found by its tguid: what every call reads first.
pub(crate) const TRANSACTION_BY_TGUID: &str =
    "SELECT operation, state, created_at, updated_at, next_seq, id FROM transactions WHERE tguid = ?1";

/// One step of a transaction's history.
pub(crate) const INSERT_TRANSITION: &str =
    "INSERT INTO transitions (tx, tguid, from_state, to_state, input, uguid, actor, event_id, at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// A registered transaction, PROCESSING.
pub(crate) const INSERT_TRANSACTION: &str =
    "INSERT INTO transactions (tguid, operation, state, created_at, updated_at, next_seq)
     VALUES (?1, ?2, 'PROCESSING', ?3, ?3, 1)";

/// A transaction's new state and next notification number.
pub(crate) const ADVANCE_TRANSACTION: &str =
    "UPDATE transactions SET state = ?2, updated_at = ?3, next_seq = ?4 WHERE id = ?1";

/// A notification, numbered in its transaction.
pub(crate) const INSERT_NOTIFICATION: &str =
    "INSERT INTO notifications (tx, tguid, seq, webhook_id, operation, status, body, created_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// A delivery's last result: delivered or dead.
pub(crate) const FINISH_DELIVERY: &str =
    "UPDATE deliveries SET status = ?2, ready = 0, leased = 0, attempts = attempts + 1,
     last_status = ?3, last_error = ?4, last_attempt_at = ?5,
     delivered_at = CASE WHEN ?2 = 'delivered' THEN ?5 END
     WHERE id = ?1";

/// A failed attempt, to be retried at `next_attempt_at`.
pub(crate) const RETRY_DELIVERY: &str =
    "UPDATE deliveries SET leased = 0, attempts = attempts + 1, next_attempt_at = ?2,
     last_status = ?3, last_error = ?4, last_attempt_at = ?5
     WHERE id = ?1";

/// A queue's new head, claimable now.
pub(crate) const MAKE_READY: &str = "UPDATE deliveries SET ready = 1 WHERE id = ?1";

/// The queue heads of an endpoint by due time, from the index alone (id and due time are in
/// it). No `LIMIT ?`: SQLite re-prepares a statement whose LIMIT is a bound parameter each
/// time it changes; a claim stops reading early instead.
pub(crate) const DUE_HEADS: &str =
    "SELECT id, next_attempt_at FROM deliveries INDEXED BY deliveries_due_by_endpoint
     WHERE endpoint_id = ?1 AND status = 'pending' AND ready = 1
     ORDER BY next_attempt_at";

#[cfg(test)]
mod tests;
