//! Security, end to end against real local servers on 127.0.0.1:0:
//!
//! - `signatures`: during a secret rotation, signatures verify with either secret;
//! - `endpoint_auth`: API-key and OAuth 2.0 client-credentials endpoints get authenticated
//!   POSTs (one shared token request, renewal on expiry, one immediate retry after a 401);
//!   `block_private_targets` refuses a name that resolves to loopback;
//! - `api_auth`: every API route refuses a missing or wrong token (401) and a role without the
//!   right (403) and changes nothing; reviews and treatments record who decided;
//! - `hostile_input`: header and request timeouts, the concurrency limit;
//! - `fuzz`: proptest over the whole API (every route, valid tokens, paths, queries, bodies)
//!   with the contract's table as the oracle of accepted calls;
//! - `fuzz_pure`: proptest over identifiers, the state machine against that table, signature
//!   checks and configuration loading.
//!
//! These services start from nothing but `listen` and the database (`Setup::bare`): each test
//! configures the tokens, endpoints and limits it is about.

mod api_auth;
mod endpoint_auth;
mod fuzz;
mod fuzz_pure;
mod hostile_input;
mod signatures;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{Api, Received, Setup, TestApp, ADMIN};

/// Starts the service with only `config` (TOML) besides its address and database.
async fn start(config: &str) -> TestApp {
    Setup::new(config).bare().start().await
}

/// One endpoint, `rx`, at `url`, with `extra` keys; retries far apart.
fn endpoint(url: &str, extra: &str) -> String {
    format!("[delivery]\nretry_schedule = [\"5s\"]\nrequest_timeout = \"5s\"\nlease = \"10s\"\n[[endpoints]]\nid = \"rx\"\nurl = \"{url}\"\n{extra}\n")
}

/// A header of a received POST, or "" when it has none.
fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.header(name).unwrap_or("")
}

/// Registers an ENROLL transaction and reports it ENROLLED (as admin): one notification.
async fn enrolled(api: &Api, tguid: &str) {
    let answer = api
        .post(
            "/v1/transactions",
            Some(ADMIN),
            &json!({"tguid": tguid, "operation": "ENROLL"}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.json_or_null());
    let answer = api
        .post(
            &format!("/v1/transactions/{tguid}/events"),
            Some(ADMIN),
            &json!({"type": "ENROLLED"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.json_or_null());
}

/// The first delivery of the transaction's first notification, once it has been tried.
async fn first_attempt(api: &Api, tguid: &str) -> Value {
    let deadline = Instant::now() + crate::harness::DEADLINE;
    loop {
        let d = api.detail(tguid).await;
        let delivery = d["notifications"][0]["deliveries"][0].clone();
        if delivery["attempts"].as_i64().unwrap_or(0) > 0 || delivery["status"] != "pending" {
            return delivery;
        }
        assert!(Instant::now() < deadline, "never tried: {d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
