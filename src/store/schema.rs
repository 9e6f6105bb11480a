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
-- integrations: what each endpoint subscribed to and the body format it takes
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
    r#"
-- Child rows reference their transaction by an integer id instead of its tguid. Tguids are
-- UUIDs in no order, so every index led by one was written at a random page on every insert;
-- ids grow with registration, so the transactions in flight share the last pages of each index.
-- The tguid columns stay, for reading. An explicit INTEGER PRIMARY KEY keeps ids (and the review
-- queues' cursors, which were rowids) stable through VACUUM.
CREATE TABLE transactions_v5 (
    id          INTEGER PRIMARY KEY,
    tguid       TEXT NOT NULL UNIQUE,
    operation   TEXT NOT NULL,
    state       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    next_seq    INTEGER NOT NULL
);
INSERT INTO transactions_v5 (id, tguid, operation, state, created_at, updated_at, next_seq)
    SELECT rowid, tguid, operation, state, created_at, updated_at, next_seq FROM transactions ORDER BY rowid;
DROP TABLE transactions;
ALTER TABLE transactions_v5 RENAME TO transactions;
CREATE INDEX transactions_by_state ON transactions(state);
CREATE INDEX transactions_by_update ON transactions(updated_at);

ALTER TABLE transitions ADD COLUMN tx INTEGER NOT NULL DEFAULT 0;
UPDATE transitions SET tx = coalesce((SELECT id FROM transactions t WHERE t.tguid = transitions.tguid), 0);
DROP INDEX transitions_by_tguid;
CREATE INDEX transitions_by_tx ON transitions(tx, id);

-- (tguid, seq) was UNIQUE; (tx, seq) is. Rebuilt as in migration 3, carrying the
-- AUTOINCREMENT high-water mark over so that no feed cursor is ever handed out twice.
CREATE TABLE notifications_v5 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tx          INTEGER NOT NULL,
    tguid       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    webhook_id  TEXT NOT NULL UNIQUE,
    operation   TEXT NOT NULL,
    status      TEXT NOT NULL,
    body        BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (tx, seq)
);
INSERT INTO notifications_v5 (id, tx, tguid, seq, webhook_id, operation, status, body, created_at)
    SELECT n.id, coalesce(t.id, -n.id), n.tguid, n.seq, n.webhook_id, n.operation, n.status, n.body, n.created_at
    FROM notifications n LEFT JOIN transactions t ON t.tguid = n.tguid ORDER BY n.id;
UPDATE sqlite_sequence SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'notifications'), 0))
    WHERE name = 'notifications_v5';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'notifications_v5', seq FROM sqlite_sequence WHERE name = 'notifications'
    AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'notifications_v5');
DROP TABLE notifications;
ALTER TABLE notifications_v5 RENAME TO notifications;

ALTER TABLE deliveries ADD COLUMN tx INTEGER NOT NULL DEFAULT 0;
UPDATE deliveries SET tx = coalesce((SELECT id FROM transactions t WHERE t.tguid = deliveries.tguid), 0);
DROP INDEX deliveries_queue;
CREATE INDEX deliveries_queue ON deliveries(tx, endpoint_id, seq) WHERE status = 'pending';
DROP INDEX deliveries_dead_by_tguid;
CREATE INDEX deliveries_dead_by_tx ON deliveries(tx) WHERE status = 'dead';
"#,
    r#"
-- Fewer index writes per call.
-- Leases live in the writer's memory now and the column stays 0: void the last ones an older
-- version wrote (while their index still finds them), due now rather than at their lease end,
-- and stop maintaining the index. Start-up no longer looks for leases in the file.
UPDATE deliveries SET leased = 0, next_attempt_at = min(next_attempt_at, CAST(strftime('%s', 'now') AS INTEGER) * 1000)
    WHERE leased = 1;
DROP INDEX deliveries_leased;
-- Retention's index moves off the hot path: migration 7 builds its replacement. (Earlier
-- builds of this version created transactions_final_by_update here, with an IN list;
-- migration 7 replaces it, so that an upgrade from 0.1.0 builds the index only once.)
DROP INDEX transactions_by_update;
"#,
    r#"
-- Retention looks for final transactions only: index those alone, so that a transaction enters
-- this index once, when it ends, instead of moving in it on every call. The predicate is
-- written without IN: SQLite tests a value against an IN list of more than two constants by
-- building an ephemeral b-tree of the list, and it evaluates a partial index's predicate on
-- every insert and update of the table: two such trees per call.
DROP INDEX IF EXISTS transactions_final_by_update;
CREATE INDEX transactions_final_by_update ON transactions(updated_at)
    WHERE state = 'ENROLLED' OR state = 'FAILED' OR state = 'MATCH' OR state = 'NOT_MATCH'
       OR state = 'PERSON_NOT_FOUND';
"#,
    r#"
-- A reviewer's decision as the transition log keeps it, beside its transition: the decision_id
-- that makes a repeat a no-op (scoped to its transaction, apart from event_ids) with its body's
-- fingerprint, and the reviewer's comment. Only decisions that carry one of them have a row, so
-- the hot path (events) writes nothing more.
CREATE TABLE decisions (
    transition_id INTEGER PRIMARY KEY,      -- transitions.id
    tx            INTEGER NOT NULL,
    decision_id   TEXT,
    fingerprint   TEXT,
    comment       TEXT
);
CREATE UNIQUE INDEX decisions_by_id ON decisions(tx, decision_id) WHERE decision_id IS NOT NULL;
"#,
    r#"
-- When an endpoint last took a delivery, kept on its row by the batch that records it (once
-- per batch and endpoint). Reading it from the deliveries took the newest delivery that was
-- delivered, which is not the last one delivered when an older one succeeded on a retry.
ALTER TABLE endpoints ADD COLUMN last_delivered_at INTEGER;
UPDATE endpoints SET last_delivered_at =
    (SELECT max(d.delivered_at) FROM deliveries d WHERE d.endpoint_id = endpoints.id AND d.status = 'delivered');
"#,
];

/// Brings the schema up to date inside one transaction.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    migrate_to(conn, MIGRATIONS.len())
}

/// Applies the migrations up to schema version `target` (tests stop at one to check it).
fn migrate_to(conn: &mut Connection, target: usize) -> rusqlite::Result<()> {
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
    for (i, sql) in MIGRATIONS.iter().enumerate().take(target).skip(version) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory database with the first `version` migrations applied.
    fn database_at(version: usize) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..version] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", version).unwrap();
        conn
    }

    /// The two columns of every row a query returns.
    fn pairs<A: rusqlite::types::FromSql, B: rusqlite::types::FromSql>(
        conn: &Connection,
        sql: &str,
    ) -> Vec<(A, B)> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn migration_3_keeps_every_notification_and_never_reuses_a_notification_id() {
        let mut conn = database_at(2);
        conn.execute_batch(
            "INSERT INTO notifications (id, tguid, seq, webhook_id, operation, status, body, created_at)
             VALUES (7, 't', 1, 'msg_a', 'ENROLL', 'ENROLLED', X'7B7D', 1),
                    (9, 't', 2, 'msg_b', 'ENROLL', 'FAILED', X'7B7D', 2);
             INSERT INTO endpoints (id, url, active, enabled, updated_at) VALUES ('e', 'http://x/', 1, 1, 0);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let kept: Vec<(i64, String)> = pairs(
            &conn,
            "SELECT id, webhook_id FROM notifications ORDER BY id",
        );
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
            "INSERT INTO notifications (tx, tguid, seq, webhook_id, operation, status, body, created_at)
             VALUES (1, 'u', 1, 'msg_c', 'SEARCH', 'MATCH', X'7B7D', 3)",
            [],
        )
        .unwrap();
        assert_eq!(conn.last_insert_rowid(), 10);
    }

    #[test]
    fn migration_5_links_child_rows_to_their_transaction_by_id_and_keeps_every_id() {
        let mut conn = database_at(4);
        conn.execute_batch(
            "INSERT INTO transactions (rowid, tguid, operation, state, created_at, updated_at, next_seq)
             VALUES (3, 'b', 'ENROLL', 'ENROLLED', 1, 2, 2), (8, 'a', 'SEARCH', 'PROCESSING', 1, 1, 1);
             INSERT INTO transitions (tguid, to_state, input, actor, at) VALUES ('b', 'PROCESSING', 'register', 'x', 1),
                                                                               ('a', 'PROCESSING', 'register', 'x', 1),
                                                                               ('b', 'ENROLLED', 'ENROLLED', 'x', 2);
             INSERT INTO endpoints (id, url, active, enabled, updated_at) VALUES ('e', 'http://x/', 1, 1, 0);
             INSERT INTO notifications (id, tguid, seq, webhook_id, operation, status, body, created_at)
             VALUES (5, 'b', 1, 'msg_a', 'ENROLL', 'ENROLLED', X'7B7D', 2),
                    (6, 'b', 2, 'msg_b', 'ENROLL', 'ENROLLED', X'7B7D', 2);
             INSERT INTO deliveries (notification_id, endpoint_id, tguid, seq, status, ready, next_attempt_at)
             VALUES (5, 'e', 'b', 1, 'dead', 0, 2), (6, 'e', 'b', 2, 'pending', 0, 2);
             DELETE FROM notifications WHERE id = 6;  -- retention took the newest: 6 stays used",
        )
        .unwrap();
        migrate_to(&mut conn, 5).unwrap();
        let ids: Vec<(i64, String)> =
            pairs(&conn, "SELECT id, tguid FROM transactions ORDER BY id");
        assert_eq!(ids, [(3, "b".to_owned()), (8, "a".to_owned())]);
        let tx_of = |table: &str| -> Vec<(String, i64)> {
            pairs(
                &conn,
                &format!("SELECT tguid, tx FROM {table} ORDER BY rowid"),
            )
        };
        let b = |n| vec![("b".to_owned(), 3); n];
        assert_eq!(
            tx_of("transitions"),
            [
                ("b".to_owned(), 3),
                ("a".to_owned(), 8),
                ("b".to_owned(), 3)
            ]
        );
        assert_eq!(tx_of("notifications"), b(1));
        assert_eq!(tx_of("deliveries"), b(2));
        // After the migration, the queue and dead-letter indexes lead with the id.
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT id FROM deliveries WHERE tx = 3 AND endpoint_id = 'e' AND status = 'pending' ORDER BY seq",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("deliveries_queue"), "{plan}");
        // (tx, seq) is unique, and no notification id is handed out twice.
        assert!(conn
            .execute(
                "INSERT INTO notifications (tx, tguid, seq, webhook_id, operation, status, body, created_at)
                 VALUES (3, 'b', 1, 'msg_c', 'ENROLL', 'ENROLLED', X'7B7D', 3)",
                [],
            )
            .is_err());
        conn.execute(
            "INSERT INTO notifications (tx, tguid, seq, webhook_id, operation, status, body, created_at)
             VALUES (8, 'a', 1, 'msg_c', 'SEARCH', 'MATCH', X'7B7D', 3)",
            [],
        )
        .unwrap();
        assert_eq!(conn.last_insert_rowid(), 7);
    }

    /// How many transactions updated before 100 the retention index holds: the query repeats
    /// the index's predicate, without which SQLite cannot use it (`INDEXED BY` then fails).
    fn rows_in_retention_index(conn: &Connection) -> i64 {
        conn.query_row(
            "SELECT count(*) FROM transactions INDEXED BY transactions_final_by_update
             WHERE updated_at < 100 AND (state = 'ENROLLED' OR state = 'FAILED' OR state = 'MATCH'
                 OR state = 'NOT_MATCH' OR state = 'PERSON_NOT_FOUND')",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// A file an earlier build took to version 6 has the retention index with an IN list;
    /// migration 7 replaces it with the same rows and a predicate without one.
    #[test]
    fn migration_7_replaces_the_in_list_index_of_an_earlier_version_6() {
        let mut conn = database_at(6);
        conn.execute_batch(
            "CREATE INDEX transactions_final_by_update ON transactions(updated_at)
                 WHERE state IN ('ENROLLED', 'FAILED', 'MATCH', 'NOT_MATCH', 'PERSON_NOT_FOUND');
             INSERT INTO transactions (id, tguid, operation, state, created_at, updated_at, next_seq)
             VALUES (1, 'done', 'ENROLL', 'ENROLLED', 1, 2, 2), (2, 'open', 'ENROLL', 'PENDING', 1, 3, 1);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let sql: String = conn
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE name = 'transactions_final_by_update'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!sql.contains(" IN "), "{sql}");
        assert_eq!(rows_in_retention_index(&conn), 1);
    }

    #[test]
    fn a_version_7_database_upgrades_with_its_log_intact_and_takes_decision_notes() {
        let mut conn = database_at(7);
        conn.execute_batch(
            "INSERT INTO transactions (id, tguid, operation, state, created_at, updated_at, next_seq)
             VALUES (1, 'p', 'ENROLL', 'PENDING', 1, 2, 2);
             INSERT INTO transitions (tx, tguid, to_state, input, actor, at)
             VALUES (1, 'p', 'PROCESSING', 'register ENROLL', 'x', 1);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let version: usize = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());
        let kept: Vec<(String, String)> = pairs(&conn, "SELECT tguid, input FROM transitions");
        assert_eq!(kept, [("p".to_owned(), "register ENROLL".to_owned())]);
        // A decision_id is unique within its transaction, and free in another.
        let note = |transition: i64, tx: i64, id: &str| {
            conn.execute(
                "INSERT INTO decisions (transition_id, tx, decision_id, fingerprint, comment)
                 VALUES (?1, ?2, ?3, 'f', 'why')",
                rusqlite::params![transition, tx, id],
            )
        };
        note(2, 1, "d-1").unwrap();
        assert!(note(3, 1, "d-1").is_err());
        note(4, 2, "d-1").unwrap();
    }

    #[test]
    fn migration_6_keeps_every_row_and_moves_the_indexes_off_the_hot_path() {
        let mut conn = database_at(5);
        conn.execute_batch(
            "INSERT INTO transactions (id, tguid, operation, state, created_at, updated_at, next_seq)
             VALUES (1, 'done', 'ENROLL', 'ENROLLED', 1, 2, 2), (2, 'open', 'ENROLL', 'PENDING', 1, 3, 1);
             INSERT INTO endpoints (id, url, active, enabled, updated_at) VALUES ('e', 'http://x/', 1, 1, 0);
             INSERT INTO notifications (id, tx, tguid, seq, webhook_id, operation, status, body, created_at)
             VALUES (1, 1, 'done', 1, 'msg_a', 'ENROLL', 'ENROLLED', X'7B7D', 2);
             INSERT INTO deliveries (notification_id, endpoint_id, tx, tguid, seq, status, ready, leased, next_attempt_at)
             VALUES (1, 'e', 1, 'done', 1, 'pending', 1, 1, 9999999999999);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let indexes: Vec<(String, String)> = pairs(
            &conn,
            "SELECT name, tbl_name FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
        );
        let names: Vec<&str> = indexes.iter().map(|(n, _)| n.as_str()).collect();
        for gone in ["deliveries_leased", "transactions_by_update"] {
            assert!(!names.contains(&gone), "{gone} in {names:?}");
        }
        assert!(names.contains(&"transactions_final_by_update"), "{names:?}");
        // Only final transactions are in the retention index.
        assert_eq!(rows_in_retention_index(&conn), 1);
        // Rows are all there, and no lease is left in the column; the one an older version
        // left is due now, not at its lease end.
        let kept: Vec<(i64, i64)> = pairs(&conn, "SELECT id, leased FROM deliveries");
        assert_eq!(kept, [(1, 0)]);
        let due: i64 = conn
            .query_row("SELECT next_attempt_at FROM deliveries", [], |r| r.get(0))
            .unwrap();
        assert!(due <= crate::clock::now_ms(), "due at {due}");
    }
}
