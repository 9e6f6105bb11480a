//! The API the console stands on, over HTTP: decisions carry `decision_id` (idempotent like
//! `event_id`) and `comment`; a transaction says which decisions it takes now; the queues have
//! counts; and the console's own responses carry their security headers without a token.

use serde_json::{json, Value};

use crate::harness::{spawn_app, status_body, Api, TestApp, ADMIN, INGEST, REVIEW};

/// A tguid as a path segment (and in the page's own addresses).
pub fn encoded(tguid: &str) -> String {
    tguid
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A transaction of `operation` moved into `state` ("PENDING" or "EXCEPTION").
pub async fn waiting(api: &Api, tguid: &str, operation: &str, state: &str) {
    let body = json!({"tguid": tguid, "operation": operation});
    api.post("/v1/transactions", Some(INGEST), &body)
        .await
        .ok(201);
    let path = format!("/v1/transactions/{}/events", encoded(tguid));
    api.post(&path, Some(INGEST), &json!({ "type": state }))
        .await
        .ok(200);
}

fn transitions(detail: &Value) -> &Vec<Value> {
    detail["transitions"].as_array().expect("transitions")
}

#[tokio::test]
async fn a_repeated_decision_id_with_the_same_body_is_a_no_op_whatever_the_state_is_now() {
    let app = spawn_app("").await;
    waiting(&app.api, "tg-dup", "ENROLL", "PENDING").await;
    let body = json!({"decision": "REJECT", "decision_id": "d-1", "comment": "blurred photo", "reviewer": "ana"});
    let first = app.api.review("tg-dup", body.clone()).await.ok(200);
    assert_eq!(
        (first["state"].as_str(), first["duplicate"].as_bool()),
        (Some("FAILED"), Some(false))
    );
    // The answer was lost; the console sends the same body again. Nothing changes.
    let again = app.api.review("tg-dup", body).await.ok(200);
    assert_eq!(
        (again["state"].as_str(), again["duplicate"].as_bool()),
        (Some("FAILED"), Some(true))
    );
    app.receiver
        .expect_exactly(&[
            status_body("ENROLL", "tg-dup", "PENDING"),
            status_body("ENROLL", "tg-dup", "FAILED"),
        ])
        .await;
    let detail = app.api.detail("tg-dup").await;
    let log = transitions(&detail);
    assert_eq!(log.len(), 3, "{log:?}");
    let decided = &log[2];
    assert_eq!(decided["decision_id"], "d-1");
    assert_eq!(decided["comment"], "blurred photo");
    assert_eq!(decided["actor"], "review (reviewer ana)");
    assert!(decided["at"].as_str().is_some_and(|t| t.ends_with('Z')));
    // A decision without either keeps no note.
    assert!(log[1].get("comment").is_none() && log[1].get("decision_id").is_none());
}

#[tokio::test]
async fn a_decision_id_reused_with_another_body_is_409_and_changes_nothing() {
    let app = spawn_app("").await;
    waiting(&app.api, "tg-reuse", "UPDATE", "PENDING").await;
    app.api
        .review(
            "tg-reuse",
            json!({"decision": "APPROVE", "decision_id": "d-7"}),
        )
        .await
        .ok(200);
    // Back to review; the same id on another decision is refused, and refused first by the
    // state machine when the new body is not allowed now anyway.
    app.api
        .event("tg-reuse", json!({"type": "PENDING"}))
        .await
        .ok(200);
    let before = app.api.world().await;
    app.api
        .review(
            "tg-reuse",
            json!({"decision": "REJECT", "decision_id": "d-7"}),
        )
        .await
        .refused(409, "decision_id_reused");
    app.api
        .review(
            "tg-reuse",
            json!({"decision": "APPROVE", "decision_id": "d-7", "comment": "again"}),
        )
        .await
        .refused(409, "decision_id_reused");
    app.api
        .treatment(
            "tg-reuse",
            json!({"treatment": "RECOLLECT", "decision_id": "d-7"}),
        )
        .await
        .refused(409, "invalid_transition");
    assert_eq!(app.api.world().await, before);
    // The same id on another transaction is another key.
    waiting(&app.api, "tg-other", "UPDATE", "PENDING").await;
    app.api
        .review(
            "tg-other",
            json!({"decision": "REJECT", "decision_id": "d-7"}),
        )
        .await
        .ok(200);
}

#[tokio::test]
async fn decision_ids_and_comments_out_of_bounds_are_422_and_change_nothing() {
    let app = spawn_app("").await;
    waiting(&app.api, "tg-bounds", "ENROLL", "EXCEPTION").await;
    let before = app.api.world().await;
    let long_id = "d".repeat(129);
    // 129 characters in fewer bytes than 2 × 129: the bound counts characters.
    let long_wide_id = "é".repeat(129);
    let long_comment = "é".repeat(1001);
    // A decision_id is checked like an event_id: no control character, C0, DEL or C1.
    for (body, says) in [
        (
            json!({"treatment": "SAME_FINGERS", "decision_id": ""}),
            "decision_id",
        ),
        (
            json!({"treatment": "SAME_FINGERS", "decision_id": long_id}),
            "decision_id",
        ),
        (
            json!({"treatment": "SAME_FINGERS", "decision_id": long_wide_id}),
            "decision_id",
        ),
        (
            json!({"treatment": "SAME_FINGERS", "decision_id": "a\tb"}),
            "decision_id",
        ),
        (
            json!({"treatment": "SAME_FINGERS", "decision_id": "d-\u{7f}"}),
            "decision_id",
        ),
        (
            json!({"treatment": "SAME_FINGERS", "decision_id": "d-\u{9b}1"}),
            "decision_id",
        ),
        (
            json!({"treatment": "SAME_FINGERS", "comment": long_comment}),
            "comment",
        ),
        (
            json!({"treatment": "SAME_FINGERS", "comment": "bell\u{7}"}),
            "comment",
        ),
        (
            json!({"treatment": "SAME_FINGERS", "comment": 5}),
            "expected a string",
        ),
        (json!({"treatment": "SAME_FINGERS", "note": "x"}), "note"),
    ] {
        app.api.treatment("tg-bounds", body).await.invalid(says);
    }
    assert_eq!(app.api.world().await, before);
    // The largest of each is accepted: 128 characters (every printable ASCII one, then
    // non-ASCII ones, so more than 128 bytes), and 1,000 characters.
    let comment = format!("{}\nline two", "ç".repeat(991));
    assert_eq!(comment.chars().count(), 1000);
    let id: String = (b' '..=b'~')
        .map(char::from)
        .chain("né-ü✓决定".chars().cycle())
        .take(128)
        .collect();
    assert_eq!((id.chars().count(), id.len() > 128), (128, true));
    let body = json!({"treatment": "MERGE_TRANSACTIONS", "decision_id": id, "comment": comment});
    let first = app.api.treatment("tg-bounds", body.clone()).await.ok(200);
    assert_eq!(first["duplicate"], false);
    let detail = app.api.detail("tg-bounds").await;
    let last = transitions(&detail).last().cloned().unwrap_or_default();
    assert_eq!(
        (last["decision_id"].as_str(), last["comment"].as_str()),
        (Some(id.as_str()), Some(comment.as_str()))
    );
    // And it is a key like any other: the same body again is a no-op.
    let after = app.api.world().await;
    let again = app.api.treatment("tg-bounds", body).await.ok(200);
    assert_eq!(again["duplicate"], true);
    assert_eq!(app.api.world().await, after);
}

/// The `allowed` of a transaction, as (review, treatment) name lists.
async fn allowed(app: &TestApp, tguid: &str) -> (Vec<String>, Vec<String>) {
    let detail = app.api.detail(tguid).await;
    let names = |key: &str| -> Vec<String> {
        detail["allowed"][key]
            .as_array()
            .unwrap_or_else(|| panic!("allowed.{key} in {detail}"))
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect()
    };
    (names("review"), names("treatment"))
}

#[tokio::test]
async fn a_transaction_says_which_decisions_it_takes_now_and_each_is_accepted() {
    let app = spawn_app("").await;
    waiting(&app.api, "tg-mir", "ENROLL", "PENDING").await;
    waiting(&app.api, "tg-upd", "UPDATE", "EXCEPTION").await;
    waiting(&app.api, "tg-enr", "ENROLL", "EXCEPTION").await;
    app.api.register("tg-search", "SEARCH").await.ok(201);
    let none: Vec<String> = vec![];
    let list = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        allowed(&app, "tg-mir").await,
        (list(&["APPROVE", "REJECT"]), none.clone())
    );
    assert_eq!(
        allowed(&app, "tg-upd").await,
        (
            none.clone(),
            list(&[
                "SAME_FINGERS",
                "DIFFERENT_FINGERS",
                "RECOLLECT",
                "INCORRECT_ENROLL"
            ])
        )
    );
    assert_eq!(
        allowed(&app, "tg-enr").await,
        (
            none.clone(),
            list(&[
                "SAME_FINGERS",
                "DIFFERENT_FINGERS",
                "MERGE_TRANSACTIONS",
                "RECOLLECT"
            ])
        )
    );
    assert_eq!(
        allowed(&app, "tg-search").await,
        (none.clone(), none.clone())
    );
    // What is offered is what the machine takes: the one not offered is refused.
    app.api
        .treatment("tg-upd", json!({"treatment": "MERGE_TRANSACTIONS"}))
        .await
        .refused(409, "invalid_transition");
    app.api
        .treatment("tg-upd", json!({"treatment": "INCORRECT_ENROLL"}))
        .await
        .ok(200);
    assert_eq!(allowed(&app, "tg-upd").await, (none.clone(), none));
}

#[tokio::test]
async fn the_queues_count_what_waits_in_review_by_operation() {
    let app = spawn_app("").await;
    let empty = app.api.get("/v1/queues", Some(REVIEW)).await.ok(200);
    assert_eq!(empty, json!({"items": []}));
    for (tg, op, state) in [
        ("q-1", "ENROLL", "PENDING"),
        ("q-2", "ENROLL", "PENDING"),
        ("q-3", "UPDATE", "PENDING"),
        ("q-4", "UPDATE", "EXCEPTION"),
    ] {
        waiting(&app.api, tg, op, state).await;
    }
    app.api.register("q-5", "ENROLL").await.ok(201);
    let counts = app.api.get("/v1/queues", Some(INGEST)).await.ok(200);
    let rows: Vec<(String, String, i64)> = counts["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|q| {
            assert!(
                q["oldest_at"].as_str().is_some_and(|t| t.ends_with('Z')),
                "{q}"
            );
            (
                q["state"].as_str().unwrap_or_default().to_owned(),
                q["operation"].as_str().unwrap_or_default().to_owned(),
                q["count"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let row = |s: &str, o: &str, n: i64| (s.to_owned(), o.to_owned(), n);
    assert_eq!(
        rows,
        [
            row("PENDING", "ENROLL", 2),
            row("PENDING", "UPDATE", 1),
            row("EXCEPTION", "UPDATE", 1)
        ]
    );
    app.api
        .get("/v1/queues", None)
        .await
        .refused(401, "unauthorized");
    app.api
        .get("/v1/queues?state=PENDING", Some(ADMIN))
        .await
        .invalid("unknown query parameter");
}

#[tokio::test]
async fn the_console_loads_without_a_token_under_a_strict_content_security_policy() {
    let app = spawn_app("").await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client");
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
        ("/console/icon.svg", "image/svg+xml"),
    ] {
        let r = client
            .get(format!("{}{path}", app.api.base))
            .send()
            .await
            .expect("the service answers");
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            header("content-type").starts_with(kind),
            "{path}: {}",
            header("content-type")
        );
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "img-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'none'",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: {directive} missing from {csp:?}"
            );
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
    }
    // The API the page calls still wants its token.
    app.api
        .get("/v1/transactions", None)
        .await
        .refused(401, "unauthorized");
}
