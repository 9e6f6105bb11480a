//! The database schema as ordered, embedded migrations, applied at start (`PRAGMA user_version`).

use rusqlite::Connection;

/// Each entry moves the schema one version up; never edit one that has shipped, add another.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE transactions (
    tguid       TEXT PRIMARY KEY,
    operation   TEXT NOT NULL,
    state       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    next_seq    INTEGER NOT NULL            -- sequence number of its next notification
);
-- the review queues: by state, in registration order (the implicit rowid is the cursor)
CREATE INDEX transactions_by_state ON transactions(state);

-- append-only: every accepted input, who sent it and when
CREATE TABLE transitions (
    id          INTEGER PRIMARY KEY,
    tguid       TEXT NOT NULL,
    from_state  TEXT,                       -- NULL for the registration
    to_state    TEXT NOT NULL,
    input       TEXT NOT NULL,
    uguid       TEXT,
    actor       TEXT NOT NULL,
    event_id    TEXT,
    at          INTEGER NOT NULL
);
CREATE INDEX transitions_by_tguid ON transitions(tguid, id);

-- event_id idempotency keys, scoped to their transaction
CREATE TABLE event_ids (
    tguid       TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (tguid, event_id)
) WITHOUT ROWID;

-- the outbox: exact bodies, numbered per transaction
CREATE TABLE notifications (
    id          INTEGER PRIMARY KEY,
    tguid       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    webhook_id  TEXT NOT NULL UNIQUE,
    operation   TEXT NOT NULL,
    status      TEXT NOT NULL,
    body        BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (tguid, seq)
);

CREATE TABLE endpoints (
    id              TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    active          INTEGER NOT NULL,       -- 1 while the configuration names it
    enabled         INTEGER NOT NULL,       -- 0 after a 410 Gone
    disabled_reason TEXT,
    updated_at      INTEGER NOT NULL
);

-- one row per (notification, endpoint)
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    notification_id INTEGER NOT NULL,
    endpoint_id     TEXT NOT NULL,
    tguid           TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    status          TEXT NOT NULL,          -- pending | delivered | dead
    ready           INTEGER NOT NULL,       -- 1: first pending one of its (tguid, endpoint)
    leased          INTEGER NOT NULL DEFAULT 0, -- 1: claimed; next_attempt_at is the lease end
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_attempt_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    INTEGER,
    UNIQUE (notification_id, endpoint_id)
);
-- what the dispatcher may claim: heads of their queues, by due time
CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE status = 'pending' AND ready = 1;
-- each (tguid, endpoint) queue in order, for promoting the next one
CREATE INDEX deliveries_queue ON deliveries(tguid, endpoint_id, seq) WHERE status = 'pending';
CREATE INDEX deliveries_leased ON deliveries(id) WHERE leased = 1;
CREATE INDEX deliveries_by_notification ON deliveries(notification_id);
"#,
    r#"
-- operator actions and endpoint health
ALTER TABLE endpoints ADD COLUMN source TEXT NOT NULL DEFAULT 'config';  -- config | api
ALTER TABLE endpoints ADD COLUMN secret TEXT;                            -- api endpoints only
ALTER TABLE endpoints ADD COLUMN failing_since INTEGER;                  -- first failure of a run
-- what the dispatcher claims, endpoint by endpoint (replaces deliveries_due)
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due_by_endpoint ON deliveries(endpoint_id, next_attempt_at) WHERE status = 'pending' AND ready = 1;
CREATE INDEX deliveries_dead_by_endpoint ON deliveries(endpoint_id, last_attempt_at) WHERE status = 'dead';
CREATE INDEX deliveries_dead_by_tguid ON deliveries(tguid) WHERE status = 'dead';
CREATE INDEX transactions_by_update ON transactions(updated_at);
"#,
    r#"
-- integrations (issue 6): what each endpoint subscribed to and the body format it takes
ALTER TABLE endpoints ADD COLUMN subscriptions TEXT;                 -- JSON list of patterns; NULL: all
ALTER TABLE endpoints ADD COLUMN format TEXT NOT NULL DEFAULT 'gbds'; -- gbds | cloudevents (api endpoints)
-- notifications.id is the pull feed's cursor, so an id must never be handed out twice: a plain
-- INTEGER PRIMARY KEY reuses the largest id once retention deleted the newest rows, and a
-- consumer holding that cursor would skip the new ones. AUTOINCREMENT never reuses an id.
-- (Rebuilding the table drops any index a migration before this one put on it; there is none.)
CREATE TABLE notifications_v3 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tguid       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    webhook_id  TEXT NOT NULL UNIQUE,
    operation   TEXT NOT NULL,
    status      TEXT NOT NULL,
    body        BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (tguid, seq)
);
INSERT INTO notifications_v3 (id, tguid, seq, webhook_id, operation, status, body, created_at)
    SELECT id, tguid, seq, webhook_id, operation, status, body, created_at FROM notifications ORDER BY id;
DROP TABLE notifications;
ALTER TABLE notifications_v3 RENAME TO notifications;
"#,
    r#"
-- UNIQUE (notification_id, endpoint_id) already serves lookups by notification; one index
-- less to write on every delivery row.
DROP INDEX IF EXISTS deliveries_by_notification;
"#,
];

/// Brings the schema up to date inside one transaction.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(1),
            Some(format!(
                "the database schema is version {version}, newer than this binary knows ({})",
                MIGRATIONS.len()
            )),
        ));
    }
    let tx = conn.transaction()?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_3_keeps_every_notification_and_never_reuses_a_notification_id() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute_batch(
            "INSERT INTO notifications (id, tguid, seq, webhook_id, operation, status, body, created_at)
             VALUES (7, 't', 1, 'msg_a', 'ENROLL', 'ENROLLED', X'7B7D', 1),
                    (9, 't', 2, 'msg_b', 'ENROLL', 'FAILED', X'7B7D', 2);
             INSERT INTO endpoints (id, url, active, enabled, updated_at) VALUES ('e', 'http://x/', 1, 1, 0);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let kept: Vec<(i64, String)> = conn
            .prepare("SELECT id, webhook_id FROM notifications ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(kept, [(7, "msg_a".to_owned()), (9, "msg_b".to_owned())]);
        let (subscriptions, format): (Option<String>, String) = conn
            .query_row("SELECT subscriptions, format FROM endpoints", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((subscriptions, format.as_str()), (None, "gbds"));
        // Retention deleting the newest rows must not hand their ids out again.
        conn.execute_batch("DELETE FROM notifications").unwrap();
        conn.execute(
            "INSERT INTO notifications (tguid, seq, webhook_id, operation, status, body, created_at)
             VALUES ('u', 1, 'msg_c', 'SEARCH', 'MATCH', X'7B7D', 3)",
            [],
        )
        .unwrap();
        assert_eq!(conn.last_insert_rowid(), 10);
    }
}
