//! Every 4xx of CONTRACT §4: the status, the `{"error","message"}` body with the right code,
//! and that the refused call changed nothing (every transaction's state, history and
//! notifications are as before) and sent nothing (the receiver gets only what the accepted
//! calls caused). Also the precedence between refusals, and the review queue's pages.

use serde_json::{json, Value};

use crate::harness::{
    latent_body, spawn_app, status_body, treated_body, Answer, TestApp, ADMIN, INGEST, REVIEW,
};

/// Makes `$call` (a future of an `Answer`), asserts it is refused with `$status`/`$code`, and
/// that every transaction is exactly as it was before the call.
macro_rules! refused {
    ($app:expr, $call:expr, $status:expr, $code:expr) => {{
        let before = $app.api.world().await;
        let answer: Answer = $call.await;
        answer.refused($status, $code);
        assert_eq!(
            $app.api.world().await,
            before,
            "the refused call `{}` changed something",
            stringify!($call)
        );
    }};
}

fn path(tguid: &str, call: &str) -> String {
    format!("/v1/transactions/{tguid}/{call}")
}

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

// ---- 400 ----

#[tokio::test]
async fn malformed_json_is_400_on_every_call_and_changes_nothing() {
    let app = spawn_app("").await;
    drive(&app, "tg-exc", "ENROLL", &["EXCEPTION"]).await;
    drive(&app, "tg-pend", "ENROLL", &["PENDING"]).await;
    for raw in [
        &b"{\"tguid\": "[..],
        b"not json",
        b"",
        b"{\"tguid\":\"a\",}",
        b"\xff\xfe",
    ] {
        refused!(
            app,
            app.api.post_raw("/v1/transactions", Some(INGEST), raw),
            400,
            "malformed_json"
        );
        refused!(
            app,
            app.api
                .post_raw(&path("tg-exc", "events"), Some(INGEST), raw),
            400,
            "malformed_json"
        );
        refused!(
            app,
            app.api
                .post_raw(&path("tg-pend", "review"), Some(REVIEW), raw),
            400,
            "malformed_json"
        );
        refused!(
            app,
            app.api
                .post_raw(&path("tg-exc", "treatment"), Some(REVIEW), raw),
            400,
            "malformed_json"
        );
    }
    app.receiver
        .expect_exactly(&[
            status_body("ENROLL", "tg-exc", "EXCEPTION"),
            status_body("ENROLL", "tg-pend", "PENDING"),
        ])
        .await;
}

// ---- 401 / 403 ----

#[tokio::test]
async fn a_call_without_a_token_is_401() {
    let app = spawn_app("").await;
    drive(&app, "tg-1", "ENROLL", &["EXCEPTION"]).await;
    let register = json!({ "tguid": "tg-2", "operation": "ENROLL" });
    refused!(
        app,
        app.api.post("/v1/transactions", None, &register),
        401,
        "unauthorized"
    );
    refused!(
        app,
        app.api
            .post(&path("tg-1", "events"), None, &json!({"type": "ENROLLED"})),
        401,
        "unauthorized"
    );
    refused!(
        app,
        app.api.post(
            &path("tg-1", "review"),
            None,
            &json!({"decision": "APPROVE"})
        ),
        401,
        "unauthorized"
    );
    refused!(
        app,
        app.api.post(
            &path("tg-1", "treatment"),
            None,
            &json!({"treatment": "RECOLLECT"})
        ),
        401,
        "unauthorized"
    );
    app.api
        .get("/v1/transactions/tg-1", None)
        .await
        .refused(401, "unauthorized");
    app.api
        .get("/v1/transactions?state=PENDING", None)
        .await
        .refused(401, "unauthorized");
    // Liveness needs no token.
    app.api.get("/healthz", None).await.ok(200);
    app.receiver
        .expect_exactly(&[status_body("ENROLL", "tg-1", "EXCEPTION")])
        .await;
}

#[tokio::test]
async fn a_call_with_a_wrong_token_is_401() {
    let app = spawn_app("").await;
    drive(&app, "tg-1", "ENROLL", &["PENDING"]).await;
    let register = json!({ "tguid": "tg-2", "operation": "ENROLL" });
    for token in ["wrong", "t-admi", "t-admin2", "T-ADMIN", ""] {
        refused!(
            app,
            app.api.post("/v1/transactions", Some(token), &register),
            401,
            "unauthorized"
        );
        refused!(
            app,
            app.api.post(
                &path("tg-1", "review"),
                Some(token),
                &json!({"decision": "APPROVE"})
            ),
            401,
            "unauthorized"
        );
        app.api
            .get("/v1/transactions/tg-1", Some(token))
            .await
            .refused(401, "unauthorized");
    }
    // A right token in the wrong scheme is no bearer token.
    for scheme in ["Basic t-admin", "t-admin", "Bearer", "Bearer  "] {
        refused!(
            app,
            app.api
                .post_with_authorization("/v1/transactions", scheme, &register),
            401,
            "unauthorized"
        );
    }
    app.receiver
        .expect_exactly(&[status_body("ENROLL", "tg-1", "PENDING")])
        .await;
}

#[tokio::test]
async fn the_ingest_role_may_not_review_or_treat() {
    let app = spawn_app("").await;
    drive(&app, "tg-pend", "ENROLL", &["PENDING"]).await;
    drive(&app, "tg-exc", "UPDATE", &["EXCEPTION"]).await;
    for decision in ["APPROVE", "REJECT"] {
        refused!(
            app,
            app.api.post(
                &path("tg-pend", "review"),
                Some(INGEST),
                &json!({"decision": decision})
            ),
            403,
            "forbidden"
        );
    }
    for t in ALL_TREATMENTS {
        refused!(
            app,
            app.api.post(
                &path("tg-exc", "treatment"),
                Some(INGEST),
                &json!({"treatment": t})
            ),
            403,
            "forbidden"
        );
    }
    // Both may read.
    app.api
        .get("/v1/transactions/tg-pend", Some(INGEST))
        .await
        .ok(200);
    app.api
        .get("/v1/transactions?state=PENDING", Some(INGEST))
        .await
        .ok(200);
    app.receiver
        .expect_exactly(&[
            status_body("ENROLL", "tg-pend", "PENDING"),
            status_body("ENROLL", "tg-exc", "EXCEPTION"),
        ])
        .await;
}

#[tokio::test]
async fn the_review_role_may_not_register_or_report_events() {
    let app = spawn_app("").await;
    drive(&app, "tg-1", "ENROLL", &[]).await;
    for op in ["ENROLL", "UPDATE", "SEARCH"] {
        refused!(
            app,
            app.api.post(
                "/v1/transactions",
                Some(REVIEW),
                &json!({"tguid": "tg-new", "operation": op})
            ),
            403,
            "forbidden"
        );
    }
    // Not even a repeat of an existing registration.
    refused!(
        app,
        app.api.post(
            "/v1/transactions",
            Some(REVIEW),
            &json!({"tguid": "tg-1", "operation": "ENROLL"})
        ),
        403,
        "forbidden"
    );
    for kind in ALL_EVENT_TYPES {
        refused!(
            app,
            app.api
                .post(&path("tg-1", "events"), Some(REVIEW), &event_body(kind)),
            403,
            "forbidden"
        );
    }
    app.api
        .get("/v1/transactions/tg-1", Some(REVIEW))
        .await
        .ok(200);
    assert_eq!(app.api.detail("tg-1").await["state"], "PROCESSING");
    app.receiver.expect_exactly(&[]).await;
}

// ---- 404 ----

#[tokio::test]
async fn an_unknown_tguid_is_404_on_every_call() {
    let app = spawn_app("").await;
    drive(&app, "tg-known", "ENROLL", &[]).await;
    for kind in ALL_EVENT_TYPES {
        refused!(
            app,
            app.api.event("tg-unknown", event_body(kind)),
            404,
            "not_found"
        );
    }
    refused!(
        app,
        app.api.review("tg-unknown", json!({"decision": "REJECT"})),
        404,
        "not_found"
    );
    refused!(
        app,
        app.api
            .treatment("tg-unknown", json!({"treatment": "RECOLLECT"})),
        404,
        "not_found"
    );
    app.api
        .get("/v1/transactions/tg-unknown", Some(ADMIN))
        .await
        .refused(404, "not_found");
    // tguids are exact: no case folding, no prefix match.
    refused!(
        app,
        app.api.event("TG-KNOWN", json!({"type": "ENROLLED"})),
        404,
        "not_found"
    );
    refused!(
        app,
        app.api.event("tg-know", json!({"type": "ENROLLED"})),
        404,
        "not_found"
    );
    app.receiver.expect_exactly(&[]).await;
}

// ---- 409 invalid_transition ----

#[tokio::test]
async fn an_event_from_the_wrong_state_is_409_invalid_transition() {
    let app = spawn_app("").await;
    drive(&app, "tg-enroll", "ENROLL", &[]).await;
    drive(&app, "tg-search", "SEARCH", &[]).await;
    drive(&app, "tg-pend", "UPDATE", &["PENDING"]).await;
    drive(&app, "tg-exc", "ENROLL", &["EXCEPTION"]).await;
    // Search results on an enroll; enroll-only events on a search.
    for kind in ["MATCH", "NOT_MATCH", "PERSON_NOT_FOUND"] {
        refused!(
            app,
            app.api.event("tg-enroll", event_body(kind)),
            409,
            "invalid_transition"
        );
    }
    for kind in ["ENROLLED", "PENDING", "EXCEPTION", "REVERSE_LATENT_MATCH"] {
        refused!(
            app,
            app.api.event("tg-search", event_body(kind)),
            409,
            "invalid_transition"
        );
    }
    // While waiting for a person, the back office cannot move the transaction.
    for kind in ALL_EVENT_TYPES {
        refused!(
            app,
            app.api.event("tg-pend", event_body(kind)),
            409,
            "invalid_transition"
        );
        refused!(
            app,
            app.api.event("tg-exc", event_body(kind)),
            409,
            "invalid_transition"
        );
    }
    app.receiver
        .expect_exactly(&[
            status_body("ENROLL", "tg-pend", "PENDING"),
            status_body("ENROLL", "tg-exc", "EXCEPTION"),
        ])
        .await;
}

#[tokio::test]
async fn a_review_or_treatment_in_the_wrong_state_is_409_invalid_transition() {
    let app = spawn_app("").await;
    drive(&app, "tg-proc", "ENROLL", &[]).await;
    drive(&app, "tg-pend", "ENROLL", &["PENDING"]).await;
    drive(&app, "tg-exc", "UPDATE", &["EXCEPTION"]).await;
    drive(&app, "tg-search", "SEARCH", &[]).await;
    for decision in ["APPROVE", "REJECT"] {
        // A review while processing, on an exception, or on a search.
        refused!(
            app,
            app.api.review("tg-proc", json!({"decision": decision})),
            409,
            "invalid_transition"
        );
        refused!(
            app,
            app.api.review("tg-exc", json!({"decision": decision})),
            409,
            "invalid_transition"
        );
        refused!(
            app,
            app.api.review("tg-search", json!({"decision": decision})),
            409,
            "invalid_transition"
        );
    }
    for t in ALL_TREATMENTS {
        refused!(
            app,
            app.api.treatment("tg-proc", json!({"treatment": t})),
            409,
            "invalid_transition"
        );
        refused!(
            app,
            app.api.treatment("tg-pend", json!({"treatment": t})),
            409,
            "invalid_transition"
        );
        refused!(
            app,
            app.api.treatment("tg-search", json!({"treatment": t})),
            409,
            "invalid_transition"
        );
    }
    app.receiver
        .expect_exactly(&[
            status_body("ENROLL", "tg-pend", "PENDING"),
            status_body("ENROLL", "tg-exc", "EXCEPTION"),
        ])
        .await;
}

#[tokio::test]
async fn a_treatment_not_allowed_for_the_operation_is_409_and_sends_nothing() {
    let app = spawn_app("").await;
    drive(&app, "tg-enroll", "ENROLL", &["EXCEPTION"]).await;
    drive(&app, "tg-update", "UPDATE", &["EXCEPTION"]).await;
    refused!(
        app,
        app.api
            .treatment("tg-enroll", json!({"treatment": "INCORRECT_ENROLL"})),
        409,
        "invalid_transition"
    );
    refused!(
        app,
        app.api
            .treatment("tg-update", json!({"treatment": "MERGE_TRANSACTIONS"})),
        409,
        "invalid_transition"
    );
    // Still in EXCEPTION: an allowed treatment goes through afterwards.
    app.api
        .treatment("tg-enroll", json!({"treatment": "MERGE_TRANSACTIONS"}))
        .await
        .ok(200);
    app.api
        .treatment("tg-update", json!({"treatment": "INCORRECT_ENROLL"}))
        .await
        .ok(200);
    app.receiver
        .expect_exactly(&[
            status_body("ENROLL", "tg-enroll", "EXCEPTION"),
            treated_body("tg-enroll", "MERGE_TRANSACTIONS"),
            status_body("ENROLL", "tg-enroll", "ENROLLED"),
            status_body("ENROLL", "tg-update", "EXCEPTION"),
            treated_body("tg-update", "INCORRECT_ENROLL"),
            status_body("ENROLL", "tg-update", "ENROLLED"),
        ])
        .await;
}

#[tokio::test]
async fn nothing_is_accepted_after_a_final_state() {
    let app = spawn_app("").await;
    drive(&app, "tg-enrolled", "ENROLL", &["ENROLLED"]).await;
    drive(&app, "tg-match", "SEARCH", &["MATCH"]).await;
    drive(&app, "tg-notfound", "SEARCH", &["PERSON_NOT_FOUND"]).await;
    drive(&app, "tg-rejected", "UPDATE", &["PENDING"]).await;
    app.api
        .review("tg-rejected", json!({"decision": "REJECT"}))
        .await
        .ok(200);
    drive(&app, "tg-treated", "UPDATE", &["EXCEPTION"]).await;
    app.api
        .treatment("tg-treated", json!({"treatment": "SAME_FINGERS"}))
        .await
        .ok(200);
    for tguid in [
        "tg-enrolled",
        "tg-match",
        "tg-notfound",
        "tg-rejected",
        "tg-treated",
    ] {
        for kind in ALL_EVENT_TYPES {
            refused!(
                app,
                app.api.event(tguid, event_body(kind)),
                409,
                "invalid_transition"
            );
        }
        for decision in ["APPROVE", "REJECT"] {
            refused!(
                app,
                app.api.review(tguid, json!({"decision": decision})),
                409,
                "invalid_transition"
            );
        }
        for t in ALL_TREATMENTS {
            refused!(
                app,
                app.api.treatment(tguid, json!({"treatment": t})),
                409,
                "invalid_transition"
            );
        }
    }
    app.receiver
        .expect_exactly(&[
            status_body("ENROLL", "tg-enrolled", "ENROLLED"),
            status_body("SEARCH", "tg-match", "MATCH"),
            status_body("SEARCH", "tg-notfound", "PERSON_NOT_FOUND"),
            status_body("ENROLL", "tg-rejected", "PENDING"),
            status_body("ENROLL", "tg-rejected", "FAILED"),
            status_body("ENROLL", "tg-treated", "EXCEPTION"),
            treated_body("tg-treated", "SAME_FINGERS"),
            status_body("ENROLL", "tg-treated", "ENROLLED"),
        ])
        .await;
}

// ---- 409 operation_conflict, event_id ----

#[tokio::test]
async fn registering_a_known_tguid_with_another_operation_is_409_operation_conflict() {
    let app = spawn_app("").await;
    drive(&app, "tg-1", "ENROLL", &["PENDING"]).await;
    for op in ["UPDATE", "SEARCH"] {
        refused!(app, app.api.register("tg-1", op), 409, "operation_conflict");
    }
    // The same registration again is a 200 that changes nothing.
    let before = app.api.world().await;
    let again = app.api.register("tg-1", "ENROLL").await.ok(200);
    assert_eq!(again["tguid"], "tg-1");
    assert_eq!(
        again["state"], "PENDING",
        "a repeat does not reset the transaction"
    );
    assert_eq!(app.api.world().await, before);
    app.receiver
        .expect_exactly(&[status_body("ENROLL", "tg-1", "PENDING")])
        .await;
}

#[tokio::test]
async fn reusing_an_event_id_with_another_body_is_409_event_id_reused() {
    let app = spawn_app("").await;
    drive(&app, "tg-1", "ENROLL", &[]).await;
    let first = json!({"type": "REVERSE_LATENT_MATCH", "uguid": "ul-1", "event_id": "ev-1"});
    app.api.event("tg-1", first).await.ok(200);
    // Each of these would be accepted without the event_id; with it they are a reuse.
    let other_uguid = json!({"type": "REVERSE_LATENT_MATCH", "uguid": "ul-2", "event_id": "ev-1"});
    refused!(
        app,
        app.api.event("tg-1", other_uguid),
        409,
        "event_id_reused"
    );
    refused!(
        app,
        app.api
            .event("tg-1", json!({"type": "ENROLLED", "event_id": "ev-1"})),
        409,
        "event_id_reused"
    );
    // event_ids are scoped to their transaction: another one may use the same id.
    drive(&app, "tg-2", "ENROLL", &[]).await;
    app.api
        .event("tg-2", json!({"type": "ENROLLED", "event_id": "ev-1"}))
        .await
        .ok(200);
    app.receiver
        .expect_exactly(&[
            latent_body("ENROLL", "tg-1", "ul-1"),
            status_body("ENROLL", "tg-2", "ENROLLED"),
        ])
        .await;
}

#[tokio::test]
async fn a_reused_event_id_whose_new_body_is_not_allowed_now_is_409_invalid_transition() {
    // Contract §4: when several refusals apply, invalid_transition comes before event_id_reused.
    let app = spawn_app("").await;
    drive(&app, "tg-1", "ENROLL", &[]).await;
    app.api
        .event("tg-1", json!({"type": "ENROLLED", "event_id": "ev-1"}))
        .await
        .ok(200);
    refused!(
        app,
        app.api
            .event("tg-1", json!({"type": "FAILED", "event_id": "ev-1"})),
        409,
        "invalid_transition"
    );
    app.receiver
        .expect_exactly(&[status_body("ENROLL", "tg-1", "ENROLLED")])
        .await;
}

#[tokio::test]
async fn repeating_an_event_id_with_the_same_body_is_a_200_no_op_even_after_the_state_moved_on() {
    let app = spawn_app("").await;
    drive(&app, "tg-1", "UPDATE", &[]).await;
    let latent = json!({"type": "REVERSE_LATENT_MATCH", "uguid": "ul-1", "event_id": "ev-1"});
    let applied = app.api.event("tg-1", latent.clone()).await.ok(200);
    assert_eq!(applied["duplicate"], false);
    // The same delivery of the same event, still in PROCESSING: nothing happens.
    let before = app.api.world().await;
    let repeat = app.api.event("tg-1", latent.clone()).await.ok(200);
    assert_eq!(repeat["duplicate"], true);
    assert_eq!(app.api.world().await, before);

    let exception = json!({"type": "EXCEPTION", "event_id": "ev-2"});
    app.api.event("tg-1", exception.clone()).await.ok(200);
    app.api
        .treatment("tg-1", json!({"treatment": "RECOLLECT"}))
        .await
        .ok(200);
    // FAILED now; late repeats of both events are still 200 no-ops, not 409s.
    let before = app.api.world().await;
    for body in [latent, exception] {
        let repeat = app.api.event("tg-1", body).await.ok(200);
        assert_eq!(repeat["duplicate"], true);
        assert_eq!(repeat["state"], "FAILED");
    }
    assert_eq!(app.api.world().await, before);
    app.receiver
        .expect_exactly(&[
            latent_body("ENROLL", "tg-1", "ul-1"),
            status_body("ENROLL", "tg-1", "EXCEPTION"),
            treated_body("tg-1", "RECOLLECT"),
            status_body("ENROLL", "tg-1", "FAILED"),
        ])
        .await;
}

// ---- 413 ----

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

#[tokio::test]
async fn a_body_over_2_mb_is_413_with_the_error_json() {
    let app = spawn_app("").await;
    drive(&app, "tg-1", "ENROLL", &[]).await;
    refused!(
        app,
        app.api.post_raw(
            "/v1/transactions",
            Some(INGEST),
            register_body_of(TWO_MB + 1)
        ),
        413,
        "payload_too_large"
    );
    refused!(
        app,
        app.api.post_raw(
            "/v1/transactions",
            Some(INGEST),
            register_body_of(3 * TWO_MB)
        ),
        413,
        "payload_too_large"
    );
    let padded_event = format!(
        r#"{{"type":"ENROLLED","event_id":"{}"}}"#,
        "e".repeat(TWO_MB)
    );
    refused!(
        app,
        app.api
            .post_raw(&path("tg-1", "events"), Some(INGEST), padded_event),
        413,
        "payload_too_large"
    );
    // Exactly 2 MB is read; this one is then refused for its 2 MB tguid, not its size.
    refused!(
        app,
        app.api
            .post_raw("/v1/transactions", Some(INGEST), register_body_of(TWO_MB)),
        422,
        "invalid_request"
    );
    app.receiver.expect_exactly(&[]).await;
}

// ---- 422 ----

#[tokio::test]
async fn unknown_fields_are_422() {
    let app = spawn_app("").await;
    drive(&app, "tg-pend", "ENROLL", &["PENDING"]).await;
    drive(&app, "tg-exc", "ENROLL", &["EXCEPTION"]).await;
    let register = json!({"tguid": "tg-new", "operation": "ENROLL", "priority": 1});
    refused!(
        app,
        app.api.post("/v1/transactions", Some(INGEST), &register),
        422,
        "invalid_request"
    );
    refused!(
        app,
        app.api.event("tg-exc", json!({"typ": "ENROLLED"})),
        422,
        "invalid_request"
    );
    refused!(
        app,
        app.api
            .event("tg-exc", json!({"type": "FAILED", "reason": "x"})),
        422,
        "invalid_request"
    );
    refused!(
        app,
        app.api
            .review("tg-pend", json!({"decision": "APPROVE", "comment": "ok"})),
        422,
        "invalid_request"
    );
    refused!(
        app,
        app.api.treatment(
            "tg-exc",
            json!({"treatment": "RECOLLECT", "tguid": "tg-exc"})
        ),
        422,
        "invalid_request"
    );
    // Missing fields and wrong JSON types are shape errors too.
    refused!(
        app,
        app.api.post(
            "/v1/transactions",
            Some(INGEST),
            &json!({"tguid": "tg-new"})
        ),
        422,
        "invalid_request"
    );
    refused!(
        app,
        app.api.post(
            "/v1/transactions",
            Some(INGEST),
            &json!({"tguid": 7, "operation": "ENROLL"})
        ),
        422,
        "invalid_request"
    );
    refused!(
        app,
        app.api.event("tg-exc", json!({})),
        422,
        "invalid_request"
    );
    refused!(
        app,
        app.api.review("tg-pend", json!(["APPROVE"])),
        422,
        "invalid_request"
    );
    refused!(
        app,
        app.api.treatment("tg-exc", json!({"treatment": null})),
        422,
        "invalid_request"
    );
    app.receiver
        .expect_exactly(&[
            status_body("ENROLL", "tg-pend", "PENDING"),
            status_body("ENROLL", "tg-exc", "EXCEPTION"),
        ])
        .await;
}

#[tokio::test]
async fn unknown_operations_event_types_decisions_and_treatments_are_422() {
    let app = spawn_app("").await;
    drive(&app, "tg-pend", "ENROLL", &["PENDING"]).await;
    drive(&app, "tg-exc", "UPDATE", &["EXCEPTION"]).await;
    for op in ["DELETE", "enroll", "TREAT_EXCEPTION", ""] {
        refused!(app, app.api.register("tg-new", op), 422, "invalid_request");
    }
    for kind in [
        "EXPLODED",
        "enrolled",
        "OK",
        "PROCESSING",
        "TREAT_EXCEPTION",
        "",
    ] {
        refused!(
            app,
            app.api.event("tg-exc", json!({"type": kind})),
            422,
            "invalid_request"
        );
    }
    for decision in ["MAYBE", "approve", ""] {
        refused!(
            app,
            app.api.review("tg-pend", json!({"decision": decision})),
            422,
            "invalid_request"
        );
    }
    for t in ["MAYBE", "same_fingers", "OK", ""] {
        refused!(
            app,
            app.api.treatment("tg-exc", json!({"treatment": t})),
            422,
            "invalid_request"
        );
    }
    app.receiver
        .expect_exactly(&[
            status_body("ENROLL", "tg-pend", "PENDING"),
            status_body("ENROLL", "tg-exc", "EXCEPTION"),
        ])
        .await;
}

#[tokio::test]
async fn a_reverse_latent_match_needs_a_well_formed_uguid_and_no_other_type_takes_one() {
    let app = spawn_app("").await;
    drive(&app, "tg-1", "ENROLL", &[]).await;
    refused!(
        app,
        app.api
            .event("tg-1", json!({"type": "REVERSE_LATENT_MATCH"})),
        422,
        "invalid_request"
    );
    refused!(
        app,
        app.api.event(
            "tg-1",
            json!({"type": "REVERSE_LATENT_MATCH", "uguid": null})
        ),
        422,
        "invalid_request"
    );
    for bad in [
        String::new(),
        "u 1".to_owned(),
        "u/1".to_owned(),
        "ul-ñ".to_owned(),
        "u".repeat(129),
    ] {
        refused!(
            app,
            app.api.event(
                "tg-1",
                json!({"type": "REVERSE_LATENT_MATCH", "uguid": bad})
            ),
            422,
            "invalid_request"
        );
    }
    for kind in ALL_EVENT_TYPES
        .iter()
        .filter(|k| **k != "REVERSE_LATENT_MATCH")
    {
        refused!(
            app,
            app.api
                .event("tg-1", json!({"type": kind, "uguid": "ul-1"})),
            422,
            "invalid_request"
        );
    }
    // 128 characters is the longest uguid.
    let longest = "u".repeat(128);
    app.api
        .event(
            "tg-1",
            json!({"type": "REVERSE_LATENT_MATCH", "uguid": longest}),
        )
        .await
        .ok(200);
    app.receiver
        .expect_exactly(&[latent_body("ENROLL", "tg-1", &longest)])
        .await;
}

#[tokio::test]
async fn malformed_tguids_are_422_in_the_body_and_in_the_path() {
    let app = spawn_app("").await;
    for bad in [
        String::new(),
        "x".repeat(129),
        "tg 1".to_owned(),
        "tg-ñ".to_owned(),
        "tg/1".to_owned(),
        "tg\t1".to_owned(),
        "tg\u{7f}".to_owned(),
    ] {
        refused!(
            app,
            app.api.register(&bad, "ENROLL"),
            422,
            "invalid_request"
        );
    }
    // In the path (percent-encoded on the wire, decoded by the service).
    for bad in [
        String::new(),
        "x".repeat(129),
        "tg%201".to_owned(),
        "tg-%C3%B1".to_owned(),
        "tg%2F1".to_owned(),
    ] {
        refused!(
            app,
            app.api.event(&bad, json!({"type": "ENROLLED"})),
            422,
            "invalid_request"
        );
        refused!(
            app,
            app.api.review(&bad, json!({"decision": "APPROVE"})),
            422,
            "invalid_request"
        );
        refused!(
            app,
            app.api.treatment(&bad, json!({"treatment": "RECOLLECT"})),
            422,
            "invalid_request"
        );
        // (`GET /v1/transactions/` with an empty tguid is the collection's URL with a
        // trailing slash, not a malformed tguid.)
        if !bad.is_empty() {
            app.api
                .get(&format!("/v1/transactions/{bad}"), Some(ADMIN))
                .await
                .refused(422, "invalid_request");
        }
    }
    // The edges that are allowed: 128 characters, and any printable ASCII but space and '/'.
    let longest = "x".repeat(128);
    app.api.register(&longest, "SEARCH").await.ok(201);
    app.api.register("!~:.-_#", "SEARCH").await.ok(201);
    app.api
        .event(&longest, json!({"type": "NOT_MATCH"}))
        .await
        .ok(200);
    app.receiver
        .expect_exactly(&[status_body("SEARCH", &longest, "NOT_MATCH")])
        .await;
}

// ---- precedence: when several apply, the first in CONTRACT §4's list wins ----

#[tokio::test]
async fn a_missing_or_wrong_token_beats_every_other_refusal() {
    let app = spawn_app("").await;
    drive(&app, "tg-1", "ENROLL", &["ENROLLED"]).await;
    for token in [None, Some("wrong")] {
        // malformed body, unknown tguid, oversized body, invalid transition: still 401.
        refused!(
            app,
            app.api.post_raw(&path("tg-unknown", "events"), token, "{"),
            401,
            "unauthorized"
        );
        refused!(
            app,
            app.api
                .post_raw("/v1/transactions", token, register_body_of(TWO_MB + 1)),
            401,
            "unauthorized"
        );
        refused!(
            app,
            app.api
                .post(&path("tg-1", "events"), token, &json!({"type": "FAILED"})),
            401,
            "unauthorized"
        );
        refused!(
            app,
            app.api.post(
                &path("tg%201", "review"),
                token,
                &json!({"decision": "NOPE"})
            ),
            401,
            "unauthorized"
        );
    }
    app.receiver
        .expect_exactly(&[status_body("ENROLL", "tg-1", "ENROLLED")])
        .await;
}

#[tokio::test]
async fn a_wrong_role_beats_a_malformed_body_an_unknown_tguid_and_a_bad_transition() {
    let app = spawn_app("").await;
    drive(&app, "tg-1", "ENROLL", &[]).await;
    refused!(
        app,
        app.api.post_raw(&path("tg-1", "review"), Some(INGEST), "{"),
        403,
        "forbidden"
    );
    refused!(
        app,
        app.api
            .post_raw(&path("tg-unknown", "events"), Some(REVIEW), "{"),
        403,
        "forbidden"
    );
    refused!(
        app,
        app.api.post(
            &path("tg-1", "treatment"),
            Some(INGEST),
            &json!({"treatment": "RECOLLECT"})
        ),
        403,
        "forbidden"
    );
    refused!(
        app,
        app.api.post_raw(
            "/v1/transactions",
            Some(REVIEW),
            register_body_of(TWO_MB + 1)
        ),
        403,
        "forbidden"
    );
    app.receiver.expect_exactly(&[]).await;
}

#[tokio::test]
async fn a_malformed_body_on_an_unknown_tguid_is_400_not_404() {
    let app = spawn_app("").await;
    refused!(
        app,
        app.api
            .post_raw(&path("tg-unknown", "events"), Some(INGEST), "{\"type\":"),
        400,
        "malformed_json"
    );
    refused!(
        app,
        app.api
            .post_raw(&path("tg-unknown", "review"), Some(REVIEW), "nope"),
        400,
        "malformed_json"
    );
    refused!(
        app,
        app.api
            .post_raw(&path("tg-unknown", "treatment"), Some(REVIEW), ""),
        400,
        "malformed_json"
    );
    // ... and on a malformed tguid, 400 before 422.
    refused!(
        app,
        app.api
            .post_raw(&path("tg%201", "events"), Some(INGEST), "{"),
        400,
        "malformed_json"
    );
    app.receiver.expect_exactly(&[]).await;
}

#[tokio::test]
async fn an_invalid_body_is_422_before_an_unknown_tguid_or_a_bad_transition() {
    let app = spawn_app("").await;
    drive(&app, "tg-done", "SEARCH", &["MATCH"]).await;
    // 422 beats 404 ...
    refused!(
        app,
        app.api.event("tg-unknown", json!({"type": "EXPLODED"})),
        422,
        "invalid_request"
    );
    refused!(
        app,
        app.api
            .event("tg-unknown", json!({"type": "ENROLLED", "x": 1})),
        422,
        "invalid_request"
    );
    refused!(
        app,
        app.api.review("tg-unknown", json!({"decision": "MAYBE"})),
        422,
        "invalid_request"
    );
    refused!(
        app,
        app.api
            .event("tg-unknown", json!({"type": "REVERSE_LATENT_MATCH"})),
        422,
        "invalid_request"
    );
    // ... and 409: a finished transaction still gets told its body is wrong.
    refused!(
        app,
        app.api
            .event("tg-done", json!({"type": "ENROLLED", "uguid": "ul-1"})),
        422,
        "invalid_request"
    );
    refused!(
        app,
        app.api
            .treatment("tg-done", json!({"treatment": "SOMETHING"})),
        422,
        "invalid_request"
    );
    // A malformed tguid beats an unknown one (it cannot be known).
    refused!(
        app,
        app.api.event(&"x".repeat(129), json!({"type": "ENROLLED"})),
        422,
        "invalid_request"
    );
    // 404 beats 409: nothing can be refused as a transition of a transaction that does not exist.
    refused!(
        app,
        app.api
            .treatment("tg-unknown", json!({"treatment": "INCORRECT_ENROLL"})),
        404,
        "not_found"
    );
    app.receiver
        .expect_exactly(&[status_body("SEARCH", "tg-done", "MATCH")])
        .await;
}

// ---- the review queue ----

/// Walks `GET /v1/transactions?{query}` page by page with `limit`, returning every tguid.
async fn walk(app: &TestApp, query: &str, limit: usize) -> (Vec<String>, usize) {
    let mut tguids = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/transactions?{query}&limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = app.api.get(&path, Some(REVIEW)).await.ok(200);
        pages += 1;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= limit, "a page is longer than its limit");
        for item in items {
            tguids.push(item["tguid"].as_str().expect("tguid").to_owned());
        }
        match &page["next_cursor"] {
            Value::String(c) => {
                assert!(!items.is_empty(), "an empty page with a next cursor");
                cursor = Some(c.clone());
            }
            Value::Null => return (tguids, pages),
            other => panic!("next_cursor is neither a string nor null: {other}"),
        }
        assert!(pages < 100, "the pages never end");
    }
}

#[tokio::test]
async fn the_pending_queue_pages_through_every_pending_transaction_exactly_once() {
    let app = spawn_app("").await;
    let mut pending = Vec::new();
    let mut sent = Vec::new();
    for i in 0..9 {
        // Interleave PENDING with every other kind of state.
        let tguid = format!("tg-pend-{i}");
        let op = if i % 2 == 0 { "ENROLL" } else { "UPDATE" };
        drive(&app, &tguid, op, &["PENDING"]).await;
        sent.push(status_body("ENROLL", &tguid, "PENDING"));
        pending.push(tguid);
        let other = format!("tg-other-{i}");
        match i % 4 {
            0 => drive(&app, &other, "SEARCH", &[]).await,
            1 => {
                drive(&app, &other, "ENROLL", &["EXCEPTION"]).await;
                sent.push(status_body("ENROLL", &other, "EXCEPTION"));
            }
            2 => {
                // Was PENDING, approved: back in PROCESSING, out of the queue.
                drive(&app, &other, "UPDATE", &["PENDING"]).await;
                app.api
                    .review(&other, json!({"decision": "APPROVE"}))
                    .await
                    .ok(200);
                sent.push(status_body("ENROLL", &other, "PENDING"));
            }
            _ => {
                drive(&app, &other, "ENROLL", &["PENDING"]).await;
                app.api
                    .review(&other, json!({"decision": "REJECT"}))
                    .await
                    .ok(200);
                sent.push(status_body("ENROLL", &other, "PENDING"));
                sent.push(status_body("ENROLL", &other, "FAILED"));
            }
        }
    }
    for limit in [1, 2, 4, 9, 100] {
        let (seen, pages) = walk(&app, "state=PENDING", limit).await;
        assert_eq!(
            seen, pending,
            "limit {limit}: every PENDING transaction once, in registration order"
        );
        assert_eq!(
            pages,
            9usize.div_ceil(limit).max(1),
            "limit {limit}: page count"
        );
    }
    let (updates, _) = walk(&app, "state=PENDING&operation=UPDATE", 2).await;
    let want: Vec<String> = pending
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, t)| t.clone())
        .collect();
    assert_eq!(updates, want);
    let (exceptions, _) = walk(&app, "state=EXCEPTION", 2).await;
    assert_eq!(
        exceptions,
        vec!["tg-other-1".to_owned(), "tg-other-5".to_owned()]
    );

    // Deciding one takes it out of the queue; the rest are still walked exactly once.
    app.api
        .review("tg-pend-4", json!({"decision": "REJECT"}))
        .await
        .ok(200);
    sent.push(status_body("ENROLL", "tg-pend-4", "FAILED"));
    let (seen, _) = walk(&app, "state=PENDING", 3).await;
    let rest: Vec<String> = pending
        .iter()
        .filter(|t| *t != "tg-pend-4")
        .cloned()
        .collect();
    assert_eq!(seen, rest);

    // Bad queries are 422 and list nothing.
    for bad in [
        "state=WAITING",
        "operation=DELETE",
        "limit=0",
        "limit=1001",
        "limit=x",
        "cursor=-1",
        "cursor=abc",
        "sort=tguid",
    ] {
        app.api
            .get(&format!("/v1/transactions?{bad}"), Some(REVIEW))
            .await
            .refused(422, "invalid_request");
    }
    app.receiver.expect_exactly(&sent).await;
}
