//! Every 4xx of CONTRACT §4, as tables. Each refused call is a row: what is sent (method,
//! path, Authorization, body) and the refusal it must get (status and error code). One loop,
//! `refuse_all`, runs the rows in order and checks each the same way: the status, the
//! `{"error","message"}` body, and that every transaction's state, history and notifications
//! are as they were before the call. Each test then checks that the receiver got only what
//! the accepted calls caused. Also the precedence between refusals, the review queue, and
//! the opaque 500 of a storage failure (`internal`).

mod internal;
mod json;
mod queue;
mod tables;

use std::fmt;

use serde_json::{json, Value};

use crate::harness::{status_body, TestApp, INGEST, REVIEW};

/// The Authorization a row sends.
#[derive(Debug, Clone, Copy)]
enum Auth {
    Nothing,
    Bearer(&'static str),
    /// The whole header, as written.
    Header(&'static str),
}

/// A call that must be refused.
struct Row {
    method: &'static str,
    path: String,
    auth: Auth,
    body: Option<Vec<u8>>,
}

/// A row with the refusal it must get.
struct Case {
    row: Row,
    status: u16,
    code: &'static str,
    /// A key the message must name (quoted).
    naming: Option<&'static str>,
}

impl Row {
    fn is(self, status: u16, code: &'static str) -> Case {
        Case {
            row: self,
            status,
            code,
            naming: None,
        }
    }
}

impl Case {
    fn naming(self, key: &'static str) -> Case {
        Case {
            naming: Some(key),
            ..self
        }
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = &self.row;
        write!(f, "{} {} ", row.method, row.path)?;
        match row.auth {
            Auth::Nothing => write!(f, "without a token")?,
            Auth::Bearer(t) => write!(f, "as Bearer {t:?}")?,
            Auth::Header(h) => write!(f, "with Authorization {h:?}")?,
        }
        if let Some(body) = &row.body {
            let text = String::from_utf8_lossy(body);
            let shown: String = text.chars().take(80).collect();
            let more = if text.chars().count() > 80 { "…" } else { "" };
            write!(f, ", body {shown:?}{more} ({} bytes)", body.len())?;
        }
        write!(f, ": wants {} {}", self.status, self.code)
    }
}

/// Sends each row in order; each must get its refusal and leave every transaction as it was.
/// A failure names the row.
async fn refuse_all(app: &TestApp, cases: Vec<Case>) {
    assert!(!cases.is_empty(), "an empty table checks nothing");
    for (n, case) in cases.iter().enumerate() {
        let before = app.api.world().await;
        let row = &case.row;
        let authorization = match row.auth {
            Auth::Nothing => None,
            Auth::Bearer(t) => Some(format!("Bearer {t}")),
            Auth::Header(h) => Some(h.to_owned()),
        };
        let answer = app
            .api
            .send(
                row.method,
                &row.path,
                authorization.as_deref(),
                row.body.clone(),
            )
            .await;
        match answer.refusal(case.status, case.code) {
            Err(why) => panic!("row {n} ({case}): {why}"),
            Ok(message) => {
                if let Some(key) = case.naming {
                    let quoted = format!("{key:?}");
                    assert!(
                        message.contains(&quoted),
                        "row {n} ({case}): the message does not name {quoted}: {message}"
                    );
                }
            }
        }
        assert_eq!(
            app.api.world().await,
            before,
            "row {n} ({case}) changed something"
        );
    }
}

// ---- rows ----

/// The same refusal for every row.
fn each_is(rows: Vec<Row>, status: u16, code: &'static str) -> Vec<Case> {
    rows.into_iter().map(|r| r.is(status, code)).collect()
}

fn token(token: Option<&'static str>) -> Auth {
    token.map_or(Auth::Nothing, Auth::Bearer)
}

fn path(tguid: &str, call: &str) -> String {
    format!("/v1/transactions/{tguid}/{call}")
}

/// POST `body` (JSON) to `path`.
fn post(path: impl Into<String>, bearer: Option<&'static str>, body: Value) -> Row {
    raw(path, bearer, body.to_string())
}

/// POST raw bytes to `path`.
fn raw(path: impl Into<String>, bearer: Option<&'static str>, body: impl Into<Vec<u8>>) -> Row {
    Row {
        method: "POST",
        path: path.into(),
        auth: token(bearer),
        body: Some(body.into()),
    }
}

/// POST `body` with `authorization` as the whole Authorization header.
fn authorized(path: &str, authorization: &'static str, body: Value) -> Row {
    Row {
        auth: Auth::Header(authorization),
        ..post(path, None, body)
    }
}

fn get(path: impl Into<String>, bearer: Option<&'static str>) -> Row {
    Row {
        method: "GET",
        path: path.into(),
        auth: token(bearer),
        body: None,
    }
}

/// A registration, as the back office makes it.
fn register(tguid: &str, operation: &str) -> Row {
    let body = json!({ "tguid": tguid, "operation": operation });
    post("/v1/transactions", Some(INGEST), body)
}

/// An event, as the back office reports it.
fn event(tguid: &str, body: Value) -> Row {
    post(path(tguid, "events"), Some(INGEST), body)
}

/// A MIR decision, as a reviewer makes it.
fn review(tguid: &str, body: Value) -> Row {
    post(path(tguid, "review"), Some(REVIEW), body)
}

/// An ETR decision, as a reviewer makes it.
fn treatment(tguid: &str, body: Value) -> Row {
    post(path(tguid, "treatment"), Some(REVIEW), body)
}

// ---- set-up ----

/// Registers `tguid` and reports `events` (their types), all of which must be accepted.
async fn drive(app: &TestApp, tguid: &str, operation: &str, events: &[&str]) {
    app.api.register(tguid, operation).await.ok(201);
    for e in events {
        let body = if *e == "REVERSE_LATENT_MATCH" {
            json!({ "type": e, "uguid": format!("ul-{tguid}") })
        } else {
            json!({ "type": e })
        };
        app.api.event(tguid, body).await.ok(200);
    }
}

/// Asserts that the receiver got exactly what `tg-pend` (sent to review) and `tg-exc` (an
/// exception), the set-up of most tables, caused: nothing of the refused calls.
async fn only_the_waiting_ones_were_sent(app: &TestApp) {
    app.receiver
        .expect_exactly(&[
            status_body("ENROLL", "tg-pend", "PENDING"),
            status_body("ENROLL", "tg-exc", "EXCEPTION"),
        ])
        .await;
}

const ALL_EVENT_TYPES: &[&str] = &[
    "ENROLLED",
    "FAILED",
    "MATCH",
    "NOT_MATCH",
    "PERSON_NOT_FOUND",
    "PENDING",
    "EXCEPTION",
    "REVERSE_LATENT_MATCH",
];
const ALL_TREATMENTS: &[&str] = &[
    "SAME_FINGERS",
    "DIFFERENT_FINGERS",
    "MERGE_TRANSACTIONS",
    "RECOLLECT",
    "INCORRECT_ENROLL",
];

fn event_body(kind: &str) -> Value {
    if kind == "REVERSE_LATENT_MATCH" {
        json!({ "type": kind, "uguid": "ul-x" })
    } else {
        json!({ "type": kind })
    }
}

const TWO_MB: usize = 2 * 1024 * 1024;

/// A registration body of exactly `size` bytes (the tguid pads it).
fn register_body_of(size: usize) -> Vec<u8> {
    let frame = br#"{"tguid":"","operation":"ENROLL"}"#.len();
    let body = format!(
        r#"{{"tguid":"{}","operation":"ENROLL"}}"#,
        "x".repeat(size - frame)
    );
    assert_eq!(body.len(), size);
    body.into_bytes()
}
