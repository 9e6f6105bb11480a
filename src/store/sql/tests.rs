//! The writer's statements, EXPLAINed: each reads through indexes and builds no ephemeral
//! table. (SQLite makes one for every `RETURNING` and every `IN` list of more than two
//! constants, a partial index's predicate included: a b-tree created and destroyed per
//! execution.)

use rusqlite::Connection;

use super::*;
use crate::store::{admin, schema};

fn migrated() -> Connection {
    let mut conn = Connection::open_in_memory().unwrap();
    schema::migrate(&mut conn).unwrap();
    conn
}

/// Runs `explain` over `sql` with every parameter NULL; column `column` of each row.
fn explained(conn: &Connection, explain: &str, sql: &str, column: usize) -> Vec<String> {
    let mut explained = conn.prepare(&format!("{explain} {sql}")).unwrap();
    let nulls = vec![rusqlite::types::Null; explained.parameter_count()];
    explained
        .query_map(rusqlite::params_from_iter(nulls), |r| r.get(column))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn the_claim_scan_reads_the_due_index_alone() {
    let plan = explained(&migrated(), "EXPLAIN QUERY PLAN", DUE_HEADS, 3);
    assert!(
        plan.iter()
            .any(|step| step.contains("COVERING INDEX deliveries_due_by_endpoint")),
        "{plan:#?}"
    );
}

/// Every lookup of a transaction's deliveries goes through indexes: none scans a table.
#[test]
fn the_queue_lookups_search_indexes_and_scan_no_table() {
    let conn = migrated();
    for sql in [
        DELIVERY_IS_HEAD,
        NEXT_PENDING,
        PENDING_DELIVERY,
        admin::QUEUE,
        admin::REQUEUE_SENT,
        admin::PENDING_ENDPOINTS,
        admin::PENDING_COUNT,
        admin::RETAINABLE,
    ] {
        let plan = explained(&conn, "EXPLAIN QUERY PLAN", sql, 3);
        assert!(
            // A SELECT without FROM "scans" its one constant row.
            plan.iter()
                .all(|step| !step.starts_with("SCAN") || step == "SCAN CONSTANT ROW"),
            "{sql}\n{plan:#?}"
        );
    }
}

/// No statement a call or a delivery result runs builds an ephemeral table.
#[test]
fn the_hot_path_statements_build_no_ephemeral_table() {
    let conn = migrated();
    for sql in [
        DELIVERY_IS_HEAD,
        INSERT_DELIVERY,
        NEXT_PENDING,
        PENDING_DELIVERY,
        INSERT_TRANSITION,
        INSERT_TRANSACTION,
        ADVANCE_TRANSACTION,
        INSERT_NOTIFICATION,
        FINISH_DELIVERY,
        RETRY_DELIVERY,
        MAKE_READY,
    ] {
        let opcodes = explained(&conn, "EXPLAIN", sql, 1);
        assert!(
            !opcodes.iter().any(|op| op == "OpenEphemeral"),
            "{sql}\n{opcodes:?}"
        );
    }
}
