//! What every integration test stands on, in one place:
//!
//! - `config`: the test configuration (a token per role, fast retries, endpoint `test` at the
//!   app's receiver) and the test's own TOML merged over it (`Setup`);
//! - `service`: the service in-process on port 0 with its own SQLite file (`TestApp`), and the
//!   real binary as a child process that can be killed (`ServiceProcess`);
//! - `receiver`: a recording HTTP receiver whose answers the test can change (`Receiver`);
//! - `api`: a REST client (`Api`) and the assertions on answers (`Answer`);
//! - `scenario`: the document scenarios of `fixtures/scenarios`;
//! - `rabbitmq`: the broker on 127.0.0.1:5672, test queues and a proxy the test can cut;
//! - `database`: the store opened directly, without the service around it;
//! - `postgres`: with `GBDS_TEST_STORE=postgres`, a PostgreSQL database of its own for every
//!   service (instead of a SQLite file), dropped after its test.
//!
//! Waits poll or watch against a deadline; nothing sleeps a fixed time for a result, and
//! "nothing more arrives" is read from the service's record (no delivery left pending), never
//! from a quiet window.

mod api;
mod config;
mod database;
mod deliverers;
pub mod postgres;
mod rabbitmq;
mod receiver;
mod scenario;
mod service;

use std::time::{Duration, Instant};

pub use api::{Answer, Api, Detail, FeedItem};
pub use config::{database_in, Setup};
pub use database::{execute_sql, store_with_label, store_with_one_endpoint};
pub use rabbitmq::{broker_url, unique, Consumed, Proxy, TestQueue};
pub use receiver::{Arrival, Received, Receiver, Reply};
pub use scenario::{Call, Scenario};
pub use service::{spawn_app, ServiceProcess, TestApp};

/// Bearer tokens configured on every service the tests start, one per role.
pub const ADMIN: &str = "t-admin";
pub const INGEST: &str = "t-ingest";
pub const REVIEW: &str = "t-review";

/// Longest a test waits for something that should happen (only a guard against hanging).
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `check` until it gives a value, or panics after `DEADLINE` naming what was awaited.
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port nobody listens on right now (for a process or receiver that binds it later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// The compact JSON body of a status notification, as CONTRACT §3 writes it.
pub fn status_body(operation: &str, tguid: &str, status: &str) -> String {
    format!(r#"{{"operation":"{operation}","tguid":"{tguid}","status":"{status}"}}"#)
}

/// The compact JSON body of a treatment notification, as CONTRACT §3 writes it.
pub fn treated_body(tguid: &str, treatment: &str) -> String {
    format!(
        r#"{{"operation":"TREAT_EXCEPTION","tguid":"{tguid}","status":"OK","treatment":"{treatment}"}}"#
    )
}

/// The compact JSON body of a reverse latent match notification.
pub fn latent_body(operation: &str, tguid: &str, uguid: &str) -> String {
    format!(
        r#"{{"operation":"{operation}","tguid":"{tguid}","status":"REVERSE_LATENT_MATCH","uguid":"{uguid}"}}"#
    )
}

/// The `operation` and `status` fields of a body.
pub fn operation_status(body: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    (
        v["operation"].as_str().expect("operation").to_owned(),
        v["status"].as_str().expect("status").to_owned(),
    )
}
