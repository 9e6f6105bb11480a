//! Delivery: what the receiving side sees and what the service does about it.
//!
//! - `retries`: retries keep the webhook-id and the order, the `success` rule, 410 Gone and
//!   signatures (CONTRACT §3).
//! - `faults`: receivers failing in every way a real one does, and what each must (and must
//!   not) do to other deliveries.
//! - `operator`: recover, renotify, runtime endpoints, retention and endpoint health.
//! - `endpoint_registry`: endpoints created and changed while notifications flow.
//! - `restart`: the real binary killed (SIGKILL) or stopped (SIGTERM) with notifications owed.
//! - `crash`: SIGKILL in the middle of delivering a backlog.
//! - `model`: a model of CONTRACT §2 written as data (also the fuzzers' oracle), and random
//!   interleavings of inputs, event_ids and both UPDATE labels through the real store
//!   against it.

mod crash;
mod endpoint_registry;
mod faults;
pub(crate) mod model;
mod operator;
mod restart;
mod retries;
