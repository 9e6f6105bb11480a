//! The PostgreSQL schema as ordered, embedded migrations, applied at start under an advisory
//! lock, so that instances starting together migrate once and one at a time.

use tokio_postgres::Client;

/// Taken (for the migrating transaction only) by every instance that starts; any constant
/// that no other application on the database uses.
const MIGRATION_LOCK: i64 = 0x6762_6473_6d69_6772; // "gbdsmigr"

/// Each entry moves the schema one version up; never edit one that has shipped, add another.
///
/// Differences from the SQLite schema, on purpose: leases are columns (`lease_owner`,
/// `lease_gen`: any instance may hold one, and a completion counts only with the generation it
/// was leased under), `next_attempt_at` holds the lease end while a delivery is leased (so
/// that one index finds what is due, orphans of a killed instance included), and every
/// notification keeps the id of the database transaction that wrote it (`xid`), by which the
/// pull feed is ordered: with concurrent writers, ids are not commit order.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE transactions (
    id          bigserial PRIMARY KEY,
    tguid       text NOT NULL UNIQUE,
    operation   text NOT NULL,
    state       text NOT NULL,
    created_at  bigint NOT NULL,
    updated_at  bigint NOT NULL,
    next_seq    bigint NOT NULL
);
CREATE INDEX transactions_by_state ON transactions (state, id);
CREATE INDEX transactions_final_by_update ON transactions (updated_at)
    WHERE state IN ('ENROLLED', 'FAILED', 'MATCH', 'NOT_MATCH', 'PERSON_NOT_FOUND');

CREATE TABLE transitions (
    id          bigserial PRIMARY KEY,
    tx          bigint NOT NULL,
    tguid       text NOT NULL,
    from_state  text,
    to_state    text NOT NULL,
    input       text NOT NULL,
    uguid       text,
    actor       text NOT NULL,
    event_id    text,
    at          bigint NOT NULL
);
CREATE INDEX transitions_by_tx ON transitions (tx, id);

CREATE TABLE event_ids (
    tx          bigint NOT NULL,
    event_id    text NOT NULL,
    fingerprint text NOT NULL,
    PRIMARY KEY (tx, event_id)
);

CREATE TABLE decisions (
    transition_id bigint PRIMARY KEY,
    tx            bigint NOT NULL,
    decision_id   text,
    fingerprint   text,
    comment       text
);
CREATE UNIQUE INDEX decisions_by_id ON decisions (tx, decision_id) WHERE decision_id IS NOT NULL;

CREATE TABLE notifications (
    id          bigserial PRIMARY KEY,
    tx          bigint NOT NULL,
    tguid       text NOT NULL,
    seq         bigint NOT NULL,
    webhook_id  text NOT NULL UNIQUE,
    operation   text NOT NULL,
    status      text NOT NULL,
    body        bytea NOT NULL,
    created_at  bigint NOT NULL,
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (tx, seq)
);
CREATE INDEX notifications_in_commit_order ON notifications (xid, id);

CREATE TABLE endpoints (
    id              text PRIMARY KEY,
    url             text NOT NULL,
    active          boolean NOT NULL,
    enabled         boolean NOT NULL,
    disabled_reason text,
    updated_at      bigint NOT NULL,
    source          text NOT NULL DEFAULT 'config',
    secret          text,
    failing_since   bigint,
    subscriptions   text,
    format          text NOT NULL DEFAULT 'gbds'
);
-- Bumped by every change of the endpoints (under an exclusive advisory lock that every batch
-- holds shared): an instance that reads a new version reloads its endpoints.
CREATE TABLE endpoints_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint NOT NULL
);
INSERT INTO endpoints_version (version) VALUES (0);

CREATE TABLE deliveries (
    id              bigserial PRIMARY KEY,
    notification_id bigint NOT NULL,
    endpoint_id     text NOT NULL,
    tx              bigint NOT NULL,
    tguid           text NOT NULL,
    seq             bigint NOT NULL,
    status          text NOT NULL,
    ready           boolean NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at bigint NOT NULL,
    lease_owner     text,
    lease_gen       bigint NOT NULL DEFAULT 0,
    last_attempt_at bigint,
    last_status     integer,
    last_error      text,
    delivered_at    bigint,
    UNIQUE (notification_id, endpoint_id)
);
CREATE INDEX deliveries_due_by_endpoint ON deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending' AND ready;
CREATE INDEX deliveries_queue ON deliveries (tx, endpoint_id, seq) WHERE status = 'pending';
CREATE INDEX deliveries_dead_by_endpoint ON deliveries (endpoint_id, last_attempt_at) WHERE status = 'dead';
CREATE INDEX deliveries_dead_by_tx ON deliveries (tx) WHERE status = 'dead';
"#];

/// The schema version this binary knows.
pub(super) fn latest() -> usize {
    MIGRATIONS.len()
}

/// Brings the schema up to date in one transaction, holding the migration lock; refuses a
/// database whose schema is newer than this binary knows.
pub(super) async fn migrate(client: &mut Client) -> anyhow::Result<()> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS gbds_schema (
             one     boolean PRIMARY KEY DEFAULT true CHECK (one),
             version integer NOT NULL
         );
         INSERT INTO gbds_schema (version) VALUES (0) ON CONFLICT (one) DO NOTHING;",
    )
    .await?;
    let version: i32 = tx
        .query_one("SELECT version FROM gbds_schema", &[])
        .await?
        .get(0);
    let version = version as usize;
    if version > latest() {
        anyhow::bail!(
            "the database schema is version {version}, newer than this binary knows ({}); \
             run a newer gbds-notifier",
            latest()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.batch_execute(sql).await?;
        tx.execute("UPDATE gbds_schema SET version = $1", &[&(i as i32 + 1)])
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
