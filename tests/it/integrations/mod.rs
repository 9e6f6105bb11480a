//! What integrators plug into, through the real REST API of a service running in-process.
//!
//! - `subscriptions`: an endpoint receives only what its patterns match, in order.
//! - `feed`: `GET /v1/notifications` replays every notification once, in commit order.
//! - `cloudevents`: structured CloudEvents whose `data` is the exact body, signed as sent.
//! - `rabbitmq`: the AMQP sink: routing keys, properties, order, and nothing lost while the
//!   broker is unreachable; its dead letters are recovered like an HTTP endpoint's.
//! - `inbound`: outcomes consumed from RabbitMQ: the document's flows as messages, dead
//!   letters, order, a second instance, broker outages, kill -9 and a failing store.
//! - `scenarios`: every document scenario through the AMQP sink and a CloudEvents endpoint at
//!   once, checked exactly and snapshotted (`snapshots/`) for a person to review.
//!
//! These services have no endpoint but the ones a test configures, and write with
//! `synchronous = NORMAL`: what they check does not depend on fsync.

mod cloudevents;
mod feed;
mod inbound;
mod rabbitmq;
mod scenarios;
mod subscriptions;

use std::sync::Arc;

use crate::harness::{Setup, TestApp};

/// The settings every service of these tests starts with, before the test's own.
const BASE: &str = "[store]\nsynchronous = \"NORMAL\"\n\n[delivery]\nconnect_timeout = \"2s\"\n";

/// Starts a service configured by `extra_toml` (its endpoints, `[amqp]`, more settings).
async fn start(extra_toml: &str) -> TestApp {
    Setup::new(BASE)
        .and(extra_toml)
        .without_test_endpoint()
        .start()
        .await
}

/// Starts a service again on the database in `dir`, kept from one stopped earlier.
async fn start_in(dir: Arc<tempfile::TempDir>, extra_toml: &str) -> TestApp {
    Setup::new(BASE)
        .and(extra_toml)
        .without_test_endpoint()
        .in_dir(dir)
        .start()
        .await
}
