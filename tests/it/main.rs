//! The integration tests: one binary, one harness, one module per area. Every test runs the
//! real service (in this process on port 0 with its own database, or the real binary as a
//! child process) against real receiving servers.
//!
//! - `harness`: the service, the recording receiver, the REST client, the document
//!   scenarios, RabbitMQ and database helpers.
//! - `scenarios`: every flow of the GBDS document, byte for byte, from `fixtures/scenarios`.
//! - `refusals`: every 4xx of CONTRACT §4 changes nothing and sends nothing, as tables; the
//!   review queue.
//! - `states`: the generated `states/` directory is up to date.
//! - `commands`: the `states` and `receive` subcommands, and `serve` refusing a tokenless API
//!   on an address other than loopback.
//! - `delivery`: retries, the success rule, 410 Gone and signatures; receivers failing in
//!   every way; operator actions; the real binary killed (SIGKILL) or stopped (SIGTERM) with
//!   deliveries owed; a model check of CONTRACT §2 through the store.
//! - `integrations`: subscriptions, the pull feed, CloudEvents and RabbitMQ, with snapshots
//!   of every document scenario's renderings.
//! - `console`: the review console's API, and its page in headless Chromium.
//! - `operability`: `/readyz` turning red when the writer dies and the process exiting 3,
//!   `/metrics` counting what happened, JSON logs, readiness during a PostgreSQL outage.
//! - `scale_out`: several instances on one PostgreSQL database (`GBDS_TEST_STORE=postgres`):
//!   racing calls, the head race, kill -9, an outage, the feed in commit order.
//! - `openapi`: the OpenAPI document against the router that serves it.
//! - `sqlite_file`: the SQLite file under the service: one process per file, the file
//!   deleted, a full disk, damage found by `check` and at start, the endpoints' list.
//! - `security`: signatures during a secret rotation, authentication towards endpoints, the
//!   API's tokens and roles, hostile clients, and property-based fuzzing.

mod commands;
mod console;
mod delivery;
mod harness;
mod integrations;
mod openapi;
mod operability;
mod refusals;
mod scale_out;
mod scenarios;
mod security;
mod sqlite_file;
mod states;
