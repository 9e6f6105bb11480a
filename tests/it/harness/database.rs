//! The store opened directly, without the service around it: for tests that drive the writer
//! through its own API (a model check, a job that runs once a minute in the service); and SQL
//! run on a service's database behind its back.

use std::path::Path;

use gbds_notifier::domain::UpdateLabel;
use gbds_notifier::endpoint::Endpoint;
use gbds_notifier::store::{Opened, PgTarget, Store, StoreOptions};

use super::postgres;

/// Opens (creating and migrating) a store at `path` (the SQLite file, or the PostgreSQL
/// database it names) with one configured endpoint, `e`, that nothing sends to: deliveries are
/// made and wait for a claim.
pub async fn store_with_one_endpoint(path: &Path) -> Opened {
    store_with_label(path, UpdateLabel::Enroll).await
}

/// `store_with_one_endpoint`, labelling UPDATE transactions' notifications `update_label`.
pub async fn store_with_label(path: &Path, update_label: UpdateLabel) -> Opened {
    let options = StoreOptions {
        synchronous_full: false,
        update_label,
        endpoints: vec![Endpoint::http("e", "http://127.0.0.1:9/".parse().unwrap())],
        delivery: Default::default(),
    };
    if postgres::enabled() {
        let target = PgTarget {
            url: postgres::url_for(path),
            instance: format!("test-{}", fastrand::u64(..)),
        };
        Store::open_postgres(&target, options)
            .await
            .expect("the store opens")
    } else {
        Store::open(path, options).expect("the store opens")
    }
}

/// Runs `sql` on the database at `path`, whichever store it is (the statements must be valid
/// for both).
pub fn execute_sql(path: &Path, sql: &str) {
    if postgres::enabled() {
        postgres::execute(path, sql);
    } else {
        rusqlite::Connection::open(path)
            .and_then(|db| db.execute_batch(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}
