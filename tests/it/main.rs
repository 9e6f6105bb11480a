//! The integration tests: one binary (as in svix-server's `tests/it`), one module per concern.
//!
//! - `harness`: the service in-process or as a child process, a recording receiver, a client.
//! - `scenarios`: every flow of the GBDS document, byte for byte, from `fixtures/scenarios`.
//! - `refusals`: every 4xx of CONTRACT §4 changes nothing and sends nothing; the review queue.
//! - `delivery`: retries, webhook-ids, the success rule, 410 Gone and signatures.
//! - `restart`: the real binary killed (SIGKILL) or stopped (SIGTERM) with deliveries owed.
//! - `states`: the generated `states/` directory is up to date.

#[path = "../common/mod.rs"]
#[allow(dead_code)]
mod common;
mod delivery;
mod harness;
mod refusals;
mod restart;
mod scenarios;
mod states;
