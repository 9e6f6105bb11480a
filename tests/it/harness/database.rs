//! The store opened directly, without the service around it: for tests that drive the writer
//! through its own API (a model check, a job that runs once a minute in the service).

use std::path::Path;

use gbds_notifier::domain::UpdateLabel;
use gbds_notifier::endpoint::Endpoint;
use gbds_notifier::store::{Opened, Store, StoreOptions};

/// Opens (creating and migrating) a store at `path` with one configured endpoint, `e`, that
/// nothing sends to: deliveries are made and wait for a claim.
pub fn store_with_one_endpoint(path: &Path) -> Opened {
    Store::open(
        path,
        StoreOptions {
            synchronous_full: false,
            update_label: UpdateLabel::Enroll,
            endpoints: vec![Endpoint::http("e", "http://127.0.0.1:9/".parse().unwrap())],
            delivery: Default::default(),
        },
    )
    .expect("the store opens")
}
