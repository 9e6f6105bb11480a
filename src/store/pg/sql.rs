//! The PostgreSQL writer's hot-path SQL by name, prepared once per connection (`Statements`),
//! so that a batch's statements go out pipelined, without a round trip to prepare them. Each
//! takes whole arrays (`unnest`): one statement per table per batch, whatever its size.

use tokio_postgres::{Client, Statement};

/// Held (shared) until COMMIT by every batch, and exclusively by every change of the
/// endpoints: no endpoint changes between the list a batch fans out by and its commit. An
/// advisory lock rather than a row lock: a row locked FOR SHARE by several instances at once
/// is rewritten with a new MultiXact on every batch, a hot spot that made two instances slower
/// than one.
pub const ENDPOINTS_SHARED: &str = "SELECT pg_advisory_xact_lock_shared(7450937502838862195)";

/// The exclusive side of `ENDPOINTS_SHARED`, taken by whatever changes an endpoint.
pub const ENDPOINTS_EXCLUSIVE: &str = "SELECT pg_advisory_xact_lock(7450937502838862195)";

/// The endpoints' version, read after `ENDPOINTS_SHARED` is held (a statement of its own, so
/// that its snapshot is taken once the lock is).
pub const ENDPOINTS_VERSION: &str = "SELECT version FROM endpoints_version";

/// New transactions, in tguid order (the order every lock is taken in); a tguid registered
/// meanwhile by another instance is left alone (and waited for, if it has not committed).
pub const REGISTER: &str = "INSERT INTO transactions (tguid, operation, state, created_at, updated_at, next_seq)
     SELECT t, o, 'PROCESSING', $3::bigint, $3::bigint, 1 FROM unnest($1::text[], $2::text[]) AS u(t, o) ORDER BY t
     ON CONFLICT (tguid) DO NOTHING RETURNING tguid";

/// Every transaction the batch decides on, locked in tguid order until COMMIT: instances
/// serialise per transaction here (conflicting decisions, one event_id twice, a new delivery
/// beside the completion of its queue's head).
pub const LOCK: &str = "SELECT id, tguid, operation, state, created_at, updated_at, next_seq
     FROM transactions WHERE tguid = ANY($1::text[]) ORDER BY tguid FOR UPDATE";

/// The event_ids among the batch's that were used before (read under the transactions' locks).
pub const EVENT_IDS: &str = "SELECT u.tguid, u.event_id, e.fingerprint
     FROM unnest($1::text[], $2::text[]) AS u(tguid, event_id)
     JOIN transactions t ON t.tguid = u.tguid
     JOIN event_ids e ON e.tx = t.id AND e.event_id = u.event_id";

/// The decision_ids among the batch's that were used before.
pub const DECISION_IDS: &str = "SELECT u.tguid, u.decision_id, d.fingerprint
     FROM unnest($1::text[], $2::text[]) AS u(tguid, decision_id)
     JOIN transactions t ON t.tguid = u.tguid
     JOIN decisions d ON d.tx = t.id AND d.decision_id = u.decision_id";

/// The (transaction, endpoint) queues that have a pending delivery: a new delivery of one of
/// them is not its head.
pub const PENDING_QUEUES: &str = "SELECT DISTINCT t.tguid, d.endpoint_id
     FROM transactions t JOIN deliveries d ON d.tx = t.id AND d.status = 'pending'
     WHERE t.tguid = ANY($1::text[])";

/// The transactions' new states and next notification numbers.
pub const ADVANCE: &str =
    "UPDATE transactions t SET state = u.state, updated_at = u.at, next_seq = u.next_seq
     FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) AS u(id, state, at, next_seq)
     WHERE t.id = u.id";

/// The transition log's rows, and the decision notes beside them.
pub const TRANSITIONS: &str = "WITH u AS (
         SELECT nextval('transitions_id_seq') AS id, u.*
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[], $12::text[])
              AS u(tx, tguid, from_state, to_state, input, uguid, actor, event_id, at,
                   decision_id, fingerprint, comment)
     ), logged AS (
         INSERT INTO transitions (id, tx, tguid, from_state, to_state, input, uguid, actor, event_id, at)
         SELECT id, tx, tguid, from_state, to_state, input, uguid, actor, event_id, at FROM u
     )
     INSERT INTO decisions (transition_id, tx, decision_id, fingerprint, comment)
     SELECT id, tx, decision_id, fingerprint, comment FROM u
     WHERE decision_id IS NOT NULL OR comment IS NOT NULL";

/// The batch's new event_ids.
pub const INSERT_EVENT_IDS: &str = "INSERT INTO event_ids (tx, event_id, fingerprint)
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])";

/// The notifications (exact bodies) and one delivery per subscribed endpoint: a queue's head
/// is `ready`, and leased to this instance at once when it has a slot for it.
pub const NOTIFY: &str = "WITH n AS (
         SELECT nextval('notifications_id_seq') AS id, n.*
         FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                     $7::bytea[], $8::bigint[])
              AS n(tx, tguid, seq, webhook_id, operation, status, body, created_at)
     ), recorded AS (
         INSERT INTO notifications (id, tx, tguid, seq, webhook_id, operation, status, body, created_at)
         SELECT * FROM n
     )
     INSERT INTO deliveries (notification_id, endpoint_id, tx, tguid, seq, status, ready,
                             next_attempt_at, lease_owner, lease_gen)
     SELECT n.id, d.endpoint_id, d.tx, n.tguid, d.seq, 'pending', d.ready, d.due, d.owner, d.gen
     FROM unnest($9::bigint[], $10::bigint[], $11::text[], $12::bool[], $13::bigint[],
                 $14::text[], $15::bigint[])
          AS d(tx, seq, endpoint_id, ready, due, owner, gen)
     JOIN n ON n.tx = d.tx AND n.seq = d.seq
     RETURNING id, tx, seq, endpoint_id";

/// Delivered or dead, fenced by the lease's generation (a late result of a lease that ran
/// out and was taken by another attempt changes nothing), and the next pending delivery of
/// each finished queue made its head in the same statement; leased to this instance when the
/// finished one's slot passes to it. Returns the promoted heads with what they send.
pub const FINISH: &str = "WITH c AS (
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::int[], $5::text[], $6::bool[])
              AS c(id, gen, status, http, error, pass_slot)
     ), done AS (
         UPDATE deliveries d SET status = c.status, ready = false, attempts = d.attempts + 1,
                last_status = c.http, last_error = c.error, last_attempt_at = $7::bigint,
                delivered_at = CASE WHEN c.status = 'delivered' THEN $7::bigint END, lease_owner = NULL
         FROM c WHERE d.id = c.id AND d.lease_gen = c.gen AND d.status = 'pending'
         RETURNING d.tx, d.endpoint_id, d.seq, c.pass_slot
     ), next AS (
         SELECT DISTINCT ON (p.tx, p.endpoint_id) p.id, done.pass_slot AND p.next_attempt_at <= $7::bigint AS lease
         FROM done JOIN deliveries p
           ON p.tx = done.tx AND p.endpoint_id = done.endpoint_id AND p.status = 'pending' AND p.seq > done.seq
         ORDER BY p.tx, p.endpoint_id, p.seq
     ), promoted AS (
         UPDATE deliveries p SET ready = true,
                lease_owner = CASE WHEN next.lease THEN $8::text END,
                lease_gen = CASE WHEN next.lease THEN p.lease_gen + 1 ELSE p.lease_gen END,
                next_attempt_at = CASE WHEN next.lease THEN $9::bigint ELSE p.next_attempt_at END
         FROM next WHERE p.id = next.id
         RETURNING p.id, p.endpoint_id, p.tguid, p.seq, p.attempts, p.lease_gen, next.lease,
                   p.notification_id
     )
     SELECT pr.id, pr.endpoint_id, pr.tguid, pr.seq, pr.attempts, pr.lease_gen, pr.lease,
            n.webhook_id, n.body, n.operation, n.status, n.created_at
     FROM promoted pr JOIN notifications n ON n.id = pr.notification_id";

/// Failed attempts, to be tried again at their times (fenced like `FINISH`).
pub const RETRY: &str = "UPDATE deliveries d SET lease_owner = NULL, attempts = d.attempts + 1,
            next_attempt_at = c.at, last_status = c.http, last_error = c.error, last_attempt_at = $6::bigint
     FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::int[], $5::text[])
          AS c(id, gen, at, http, error)
     WHERE d.id = c.id AND d.lease_gen = c.gen AND d.status = 'pending'";

/// Since when each endpoint has failed every attempt; only a change writes.
pub const HEALTH: &str = "UPDATE endpoints e SET failing_since = CASE WHEN h.ok THEN NULL ELSE $3::bigint END
     FROM unnest($1::text[], $2::bool[]) AS h(id, ok)
     WHERE e.id = h.id AND (CASE WHEN h.ok THEN e.failing_since IS NOT NULL ELSE e.failing_since IS NULL END)";

/// Leases the due queue heads of each endpoint, up to its free slots, skipping rows another
/// instance has locked: retries that fell due, heads no one had a slot for, and the orphans
/// of a killed instance once their leases ran out.
pub const CLAIM: &str = "WITH c AS (
         SELECT due.id FROM unnest($1::text[], $2::bigint[]) AS e(endpoint_id, room)
         CROSS JOIN LATERAL (
             SELECT id FROM deliveries
             WHERE endpoint_id = e.endpoint_id AND status = 'pending' AND ready AND next_attempt_at <= $3::bigint
             ORDER BY next_attempt_at LIMIT e.room
             FOR UPDATE SKIP LOCKED
         ) due
     )
     UPDATE deliveries d SET lease_owner = $4::text, lease_gen = d.lease_gen + 1, next_attempt_at = $5::bigint
     FROM c, notifications n WHERE d.id = c.id AND n.id = d.notification_id
     RETURNING d.id, d.endpoint_id, d.tguid, d.seq, d.attempts, d.lease_gen, true,
               n.webhook_id, n.body, n.operation, n.status, n.created_at";

/// When the next queue head of these endpoints falls due (a lease's end counts).
pub const NEXT_DUE: &str = "SELECT min(due.at) FROM unnest($1::text[]) AS e(id)
     CROSS JOIN LATERAL (
         SELECT next_attempt_at AS at FROM deliveries
         WHERE endpoint_id = e.id AND status = 'pending' AND ready AND next_attempt_at > $2::bigint
         ORDER BY next_attempt_at LIMIT 1
     ) due";

/// Leases given back (at shutdown): claimable at once.
pub const RELEASE: &str = "UPDATE deliveries d SET lease_owner = NULL, next_attempt_at = $3::bigint
     FROM unnest($1::bigint[], $2::bigint[]) AS r(id, gen)
     WHERE d.id = r.id AND d.lease_gen = r.gen AND d.status = 'pending'";

/// The hot path's statements, prepared on one connection.
pub struct Statements {
    pub endpoints_shared: Statement,
    pub endpoints_version: Statement,
    pub register: Statement,
    pub lock: Statement,
    pub event_ids: Statement,
    pub decision_ids: Statement,
    pub pending_queues: Statement,
    pub advance: Statement,
    pub transitions: Statement,
    pub insert_event_ids: Statement,
    pub notify: Statement,
    pub finish: Statement,
    pub retry: Statement,
    pub health: Statement,
    pub claim: Statement,
    pub next_due: Statement,
    pub release: Statement,
}

impl Statements {
    /// Prepares every statement (pipelined: one round trip).
    pub async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        let (
            endpoints_shared,
            endpoints_version,
            register,
            lock,
            event_ids,
            decision_ids,
            pending_queues,
            advance,
            transitions,
        ) = tokio::try_join!(
            biased;
            client.prepare(ENDPOINTS_SHARED),
            client.prepare(ENDPOINTS_VERSION),
            client.prepare(REGISTER),
            client.prepare(LOCK),
            client.prepare(EVENT_IDS),
            client.prepare(DECISION_IDS),
            client.prepare(PENDING_QUEUES),
            client.prepare(ADVANCE),
            client.prepare(TRANSITIONS),
        )?;
        let (insert_event_ids, notify, finish, retry, health, claim, next_due, release) = tokio::try_join!(
            biased;
            client.prepare(INSERT_EVENT_IDS),
            client.prepare(NOTIFY),
            client.prepare(FINISH),
            client.prepare(RETRY),
            client.prepare(HEALTH),
            client.prepare(CLAIM),
            client.prepare(NEXT_DUE),
            client.prepare(RELEASE),
        )?;
        Ok(Statements {
            endpoints_shared,
            endpoints_version,
            register,
            lock,
            event_ids,
            decision_ids,
            pending_queues,
            advance,
            transitions,
            insert_event_ids,
            notify,
            finish,
            retry,
            health,
            claim,
            next_due,
            release,
        })
    }
}
