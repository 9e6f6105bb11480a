//! Integration tests of issue 6, one binary: what integrators plug into, through the real REST
//! API of a service running in-process.
//!
//! - `harness`: the service, recording receivers, a REST client, the document scenarios, and
//!   RabbitMQ helpers (a test queue bound as a consumer would, a proxy the test can cut).
//! - `subscriptions`: an endpoint receives only what its patterns match, in order.
//! - `feed`: `GET /v1/notifications` replays every notification once, in commit order.
//! - `cloudevents`: structured CloudEvents whose `data` is the exact body, signed as sent.
//! - `rabbitmq`: the AMQP sink: routing keys, properties, order, and nothing lost while the
//!   broker is unreachable; its dead letters are recovered like an HTTP endpoint's.
//! - `inbound`: outcomes consumed from RabbitMQ: the document's flows as messages, dead
//!   letters, order, a second instance, a broker-side close, kill -9 and a failing store.
//! - `scenarios`: every document scenario through the AMQP sink and a CloudEvents endpoint at
//!   once, checked exactly and snapshotted (`snapshots/`) for a person to review.

mod cloudevents;
#[path = "../common/mod.rs"]
#[allow(dead_code)]
mod common;
mod feed;
mod harness;
mod inbound;
/// The real binary as a child process (`ServiceProcess`), shared with `tests/it`.
#[path = "../it/harness.rs"]
#[allow(dead_code)]
mod it_harness;
mod rabbitmq;
mod scenarios;
mod subscriptions;
