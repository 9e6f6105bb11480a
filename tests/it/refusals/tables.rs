//! The refusals of CONTRACT §4, one table per situation, in the order of the contract's list:
//! 400, 401/403, 404, 409, 413, 422, then the precedence when several apply.

use serde_json::json;

use super::{
    authorized, drive, each_is, event, event_body, get, only_the_waiting_ones_were_sent, path,
    post, raw, refuse_all, register, register_body_of, review, treatment, Case, ALL_EVENT_TYPES,
    ALL_TREATMENTS, TWO_MB,
};
use crate::harness::{latent_body, spawn_app, status_body, treated_body, ADMIN, INGEST, REVIEW};

// ---- 400 ----

#[tokio::test]
async fn malformed_json_is_400_on_every_call_and_changes_nothing() {
    let app = spawn_app("").await;
    drive(&app, "tg-exc", "ENROLL", &["EXCEPTION"]).await;
    drive(&app, "tg-pend", "ENROLL", &["PENDING"]).await;
    let mut rows: Vec<Case> = Vec::new();
    for body in [
        &b"{\"tguid\": "[..],
        b"not json",
        b"",
        b"{\"tguid\":\"a\",}",
        b"\xff\xfe",
    ] {
        rows.extend([
            raw("/v1/transactions", Some(INGEST), body).is(400, "malformed_json"),
            raw(path("tg-exc", "events"), Some(INGEST), body).is(400, "malformed_json"),
            raw(path("tg-pend", "review"), Some(REVIEW), body).is(400, "malformed_json"),
            raw(path("tg-exc", "treatment"), Some(REVIEW), body).is(400, "malformed_json"),
        ]);
    }
    refuse_all(&app, rows).await;
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
    refuse_all(
        &app,
        vec![
            post("/v1/transactions", None, register).is(401, "unauthorized"),
            post(path("tg-1", "events"), None, json!({"type": "ENROLLED"})).is(401, "unauthorized"),
            post(path("tg-1", "review"), None, json!({"decision": "APPROVE"}))
                .is(401, "unauthorized"),
            post(
                path("tg-1", "treatment"),
                None,
                json!({"treatment": "RECOLLECT"}),
            )
            .is(401, "unauthorized"),
            get("/v1/transactions/tg-1", None).is(401, "unauthorized"),
            get("/v1/transactions?state=PENDING", None).is(401, "unauthorized"),
        ],
    )
    .await;
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
    let mut rows = Vec::new();
    for token in ["wrong", "t-admi", "t-admin2", "T-ADMIN", ""] {
        rows.extend([
            post("/v1/transactions", Some(token), register.clone()).is(401, "unauthorized"),
            post(
                path("tg-1", "review"),
                Some(token),
                json!({"decision": "APPROVE"}),
            )
            .is(401, "unauthorized"),
            get("/v1/transactions/tg-1", Some(token)).is(401, "unauthorized"),
        ]);
    }
    // A right token in the wrong scheme is no bearer token.
    for scheme in ["Basic t-admin", "t-admin", "Bearer", "Bearer  "] {
        rows.push(authorized("/v1/transactions", scheme, register.clone()).is(401, "unauthorized"));
    }
    refuse_all(&app, rows).await;
    app.receiver
        .expect_exactly(&[status_body("ENROLL", "tg-1", "PENDING")])
        .await;
}

#[tokio::test]
async fn the_ingest_role_may_not_review_or_treat() {
    let app = spawn_app("").await;
    drive(&app, "tg-pend", "ENROLL", &["PENDING"]).await;
    drive(&app, "tg-exc", "UPDATE", &["EXCEPTION"]).await;
    let decisions = ["APPROVE", "REJECT"].map(|decision| {
        post(
            path("tg-pend", "review"),
            Some(INGEST),
            json!({"decision": decision}),
        )
        .is(403, "forbidden")
    });
    let treatments = ALL_TREATMENTS.iter().map(|t| {
        post(
            path("tg-exc", "treatment"),
            Some(INGEST),
            json!({"treatment": t}),
        )
        .is(403, "forbidden")
    });
    refuse_all(&app, decisions.into_iter().chain(treatments).collect()).await;
    // Both may read.
    app.api
        .get("/v1/transactions/tg-pend", Some(INGEST))
        .await
        .ok(200);
    app.api
        .get("/v1/transactions?state=PENDING", Some(INGEST))
        .await
        .ok(200);
    only_the_waiting_ones_were_sent(&app).await;
}

#[tokio::test]
async fn the_review_role_may_not_register_or_report_events() {
    let app = spawn_app("").await;
    drive(&app, "tg-1", "ENROLL", &[]).await;
    let registrations = ["ENROLL", "UPDATE", "SEARCH"].map(|op| {
        let body = json!({"tguid": "tg-new", "operation": op});
        post("/v1/transactions", Some(REVIEW), body).is(403, "forbidden")
    });
    // Not even a repeat of an existing registration.
    let repeat = json!({"tguid": "tg-1", "operation": "ENROLL"});
    let events = ALL_EVENT_TYPES.iter().map(|kind| {
        post(path("tg-1", "events"), Some(REVIEW), event_body(kind)).is(403, "forbidden")
    });
    let rows = registrations
        .into_iter()
        .chain([post("/v1/transactions", Some(REVIEW), repeat).is(403, "forbidden")])
        .chain(events)
        .collect();
    refuse_all(&app, rows).await;
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
    let mut rows: Vec<Case> = ALL_EVENT_TYPES
        .iter()
        .map(|kind| event("tg-unknown", event_body(kind)).is(404, "not_found"))
        .collect();
    rows.extend([
        review("tg-unknown", json!({"decision": "REJECT"})).is(404, "not_found"),
        treatment("tg-unknown", json!({"treatment": "RECOLLECT"})).is(404, "not_found"),
        get("/v1/transactions/tg-unknown", Some(ADMIN)).is(404, "not_found"),
        // tguids are exact: no case folding, no prefix match.
        event("TG-KNOWN", json!({"type": "ENROLLED"})).is(404, "not_found"),
        event("tg-know", json!({"type": "ENROLLED"})).is(404, "not_found"),
    ]);
    refuse_all(&app, rows).await;
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
    let invalid =
        |tguid: &str, kind: &str| event(tguid, event_body(kind)).is(409, "invalid_transition");
    // Search results on an enroll; enroll-only events on a search.
    let mut rows: Vec<Case> = ["MATCH", "NOT_MATCH", "PERSON_NOT_FOUND"]
        .iter()
        .map(|kind| invalid("tg-enroll", kind))
        .collect();
    for kind in ["ENROLLED", "PENDING", "EXCEPTION", "REVERSE_LATENT_MATCH"] {
        rows.push(invalid("tg-search", kind));
    }
    // While waiting for a person, the back office cannot move the transaction.
    for kind in ALL_EVENT_TYPES {
        rows.extend([invalid("tg-pend", kind), invalid("tg-exc", kind)]);
    }
    refuse_all(&app, rows).await;
    only_the_waiting_ones_were_sent(&app).await;
}

#[tokio::test]
async fn a_review_or_treatment_in_the_wrong_state_is_409_invalid_transition() {
    let app = spawn_app("").await;
    drive(&app, "tg-proc", "ENROLL", &[]).await;
    drive(&app, "tg-pend", "ENROLL", &["PENDING"]).await;
    drive(&app, "tg-exc", "UPDATE", &["EXCEPTION"]).await;
    drive(&app, "tg-search", "SEARCH", &[]).await;
    let mut rows = Vec::new();
    for decision in ["APPROVE", "REJECT"] {
        // A review while processing, on an exception, or on a search.
        for tguid in ["tg-proc", "tg-exc", "tg-search"] {
            rows.push(review(tguid, json!({"decision": decision})).is(409, "invalid_transition"));
        }
    }
    for t in ALL_TREATMENTS {
        for tguid in ["tg-proc", "tg-pend", "tg-search"] {
            rows.push(treatment(tguid, json!({"treatment": t})).is(409, "invalid_transition"));
        }
    }
    refuse_all(&app, rows).await;
    only_the_waiting_ones_were_sent(&app).await;
}

#[tokio::test]
async fn a_treatment_not_allowed_for_the_operation_is_409_and_sends_nothing() {
    let app = spawn_app("").await;
    drive(&app, "tg-enroll", "ENROLL", &["EXCEPTION"]).await;
    drive(&app, "tg-update", "UPDATE", &["EXCEPTION"]).await;
    refuse_all(
        &app,
        vec![
            treatment("tg-enroll", json!({"treatment": "INCORRECT_ENROLL"}))
                .is(409, "invalid_transition"),
            treatment("tg-update", json!({"treatment": "MERGE_TRANSACTIONS"}))
                .is(409, "invalid_transition"),
        ],
    )
    .await;
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
    let mut rows = Vec::new();
    for tguid in [
        "tg-enrolled",
        "tg-match",
        "tg-notfound",
        "tg-rejected",
        "tg-treated",
    ] {
        for kind in ALL_EVENT_TYPES {
            rows.push(event(tguid, event_body(kind)).is(409, "invalid_transition"));
        }
        for decision in ["APPROVE", "REJECT"] {
            rows.push(review(tguid, json!({"decision": decision})).is(409, "invalid_transition"));
        }
        for t in ALL_TREATMENTS {
            rows.push(treatment(tguid, json!({"treatment": t})).is(409, "invalid_transition"));
        }
    }
    refuse_all(&app, rows).await;
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
    let rows = ["UPDATE", "SEARCH"]
        .map(|op| register("tg-1", op).is(409, "operation_conflict"))
        .into();
    refuse_all(&app, rows).await;
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
    refuse_all(
        &app,
        vec![
            event("tg-1", other_uguid).is(409, "event_id_reused"),
            event("tg-1", json!({"type": "ENROLLED", "event_id": "ev-1"}))
                .is(409, "event_id_reused"),
        ],
    )
    .await;
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
    refuse_all(
        &app,
        vec![event("tg-1", json!({"type": "FAILED", "event_id": "ev-1"}))
            .is(409, "invalid_transition")],
    )
    .await;
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

#[tokio::test]
async fn a_body_over_2_mb_is_413_with_the_error_json() {
    let app = spawn_app("").await;
    drive(&app, "tg-1", "ENROLL", &[]).await;
    let padded_event = format!(
        r#"{{"type":"ENROLLED","event_id":"{}"}}"#,
        "e".repeat(TWO_MB)
    );
    refuse_all(
        &app,
        vec![
            raw(
                "/v1/transactions",
                Some(INGEST),
                register_body_of(TWO_MB + 1),
            )
            .is(413, "payload_too_large"),
            raw(
                "/v1/transactions",
                Some(INGEST),
                register_body_of(3 * TWO_MB),
            )
            .is(413, "payload_too_large"),
            raw(path("tg-1", "events"), Some(INGEST), padded_event).is(413, "payload_too_large"),
            // Exactly 2 MB is read; this one is then refused for its 2 MB tguid, not its size.
            raw("/v1/transactions", Some(INGEST), register_body_of(TWO_MB))
                .is(422, "invalid_request"),
        ],
    )
    .await;
    app.receiver.expect_exactly(&[]).await;
}

// ---- 422 ----

#[tokio::test]
async fn unknown_fields_are_422() {
    let app = spawn_app("").await;
    drive(&app, "tg-pend", "ENROLL", &["PENDING"]).await;
    drive(&app, "tg-exc", "ENROLL", &["EXCEPTION"]).await;
    let register = json!({"tguid": "tg-new", "operation": "ENROLL", "priority": 1});
    let rows = vec![
        post("/v1/transactions", Some(INGEST), register),
        event("tg-exc", json!({"typ": "ENROLLED"})),
        event("tg-exc", json!({"type": "FAILED", "reason": "x"})),
        review("tg-pend", json!({"decision": "APPROVE", "note": "ok"})),
        treatment(
            "tg-exc",
            json!({"treatment": "RECOLLECT", "tguid": "tg-exc"}),
        ),
        // Missing fields and wrong JSON types are shape errors too.
        post("/v1/transactions", Some(INGEST), json!({"tguid": "tg-new"})),
        post(
            "/v1/transactions",
            Some(INGEST),
            json!({"tguid": 7, "operation": "ENROLL"}),
        ),
        event("tg-exc", json!({})),
        review("tg-pend", json!(["APPROVE"])),
        treatment("tg-exc", json!({"treatment": null})),
    ];
    refuse_all(&app, each_is(rows, 422, "invalid_request")).await;
    only_the_waiting_ones_were_sent(&app).await;
}

#[tokio::test]
async fn unknown_operations_event_types_decisions_and_treatments_are_422() {
    let app = spawn_app("").await;
    drive(&app, "tg-pend", "ENROLL", &["PENDING"]).await;
    drive(&app, "tg-exc", "UPDATE", &["EXCEPTION"]).await;
    let mut rows = Vec::new();
    for op in ["DELETE", "enroll", "TREAT_EXCEPTION", ""] {
        rows.push(register("tg-new", op));
    }
    for kind in [
        "EXPLODED",
        "enrolled",
        "OK",
        "PROCESSING",
        "TREAT_EXCEPTION",
        "",
    ] {
        rows.push(event("tg-exc", json!({"type": kind})));
    }
    for decision in ["MAYBE", "approve", ""] {
        rows.push(review("tg-pend", json!({"decision": decision})));
    }
    for t in ["MAYBE", "same_fingers", "OK", ""] {
        rows.push(treatment("tg-exc", json!({"treatment": t})));
    }
    refuse_all(&app, each_is(rows, 422, "invalid_request")).await;
    only_the_waiting_ones_were_sent(&app).await;
}

#[tokio::test]
async fn a_reverse_latent_match_needs_a_well_formed_uguid_and_no_other_type_takes_one() {
    let app = spawn_app("").await;
    drive(&app, "tg-1", "ENROLL", &[]).await;
    let mut rows = vec![
        event("tg-1", json!({"type": "REVERSE_LATENT_MATCH"})),
        event(
            "tg-1",
            json!({"type": "REVERSE_LATENT_MATCH", "uguid": null}),
        ),
    ];
    for bad in [
        String::new(),
        "u 1".to_owned(),
        "u/1".to_owned(),
        "ul-ñ".to_owned(),
        "u".repeat(129),
    ] {
        rows.push(event(
            "tg-1",
            json!({"type": "REVERSE_LATENT_MATCH", "uguid": bad}),
        ));
    }
    for kind in ALL_EVENT_TYPES
        .iter()
        .filter(|k| **k != "REVERSE_LATENT_MATCH")
    {
        rows.push(event("tg-1", json!({"type": kind, "uguid": "ul-1"})));
    }
    refuse_all(&app, each_is(rows, 422, "invalid_request")).await;
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
    let mut rows = Vec::new();
    for bad in [
        String::new(),
        "x".repeat(129),
        "tg 1".to_owned(),
        "tg-ñ".to_owned(),
        "tg/1".to_owned(),
        "tg\t1".to_owned(),
        "tg\u{7f}".to_owned(),
    ] {
        rows.push(register(&bad, "ENROLL"));
    }
    // In the path (percent-encoded on the wire, decoded by the service).
    for bad in [
        String::new(),
        "x".repeat(129),
        "tg%201".to_owned(),
        "tg-%C3%B1".to_owned(),
        "tg%2F1".to_owned(),
        // Not UTF-8 once decoded: still the JSON 422, never the router's plain-text 400.
        "tg-%FF%FE".to_owned(),
    ] {
        rows.extend([
            event(&bad, json!({"type": "ENROLLED"})),
            review(&bad, json!({"decision": "APPROVE"})),
            treatment(&bad, json!({"treatment": "RECOLLECT"})),
        ]);
        // (`GET /v1/transactions/` with an empty tguid is the collection's URL with a
        // trailing slash, not a malformed tguid.)
        if !bad.is_empty() {
            rows.push(get(format!("/v1/transactions/{bad}"), Some(ADMIN)));
        }
    }
    refuse_all(&app, each_is(rows, 422, "invalid_request")).await;
    // The edges that are allowed: 128 characters, and any printable ASCII but space and '/'.
    let longest = "x".repeat(128);
    app.api.register(&longest, "SEARCH").await.ok(201);
    app.api.register("!~:.-_#", "SEARCH").await.ok(201);
    app.api
        .event(&longest, json!({"type": "NOT_MATCH"}))
        .await
        .ok(200);
    // '%' is a character like the others: in a path it is sent percent-encoded, as %25.
    app.api.register("tg%C8", "SEARCH").await.ok(201);
    app.api
        .event("tg%25C8", json!({"type": "MATCH"}))
        .await
        .ok(200);
    app.receiver
        .expect_exactly(&[
            status_body("SEARCH", &longest, "NOT_MATCH"),
            status_body("SEARCH", "tg%C8", "MATCH"),
        ])
        .await;
}

// ---- precedence: when several apply, the first in CONTRACT §4's list wins ----

#[tokio::test]
async fn a_missing_or_wrong_token_beats_every_other_refusal() {
    let app = spawn_app("").await;
    drive(&app, "tg-1", "ENROLL", &["ENROLLED"]).await;
    let mut rows = Vec::new();
    for token in [None, Some("wrong")] {
        // malformed body, unknown tguid, oversized body, invalid transition: still 401.
        rows.extend([
            raw(path("tg-unknown", "events"), token, "{"),
            raw("/v1/transactions", token, register_body_of(TWO_MB + 1)),
            post(path("tg-1", "events"), token, json!({"type": "FAILED"})),
            post(path("tg%201", "review"), token, json!({"decision": "NOPE"})),
            post(path("%FF%FE", "events"), token, json!({"type": "ENROLLED"})),
        ]);
    }
    refuse_all(&app, each_is(rows, 401, "unauthorized")).await;
    app.receiver
        .expect_exactly(&[status_body("ENROLL", "tg-1", "ENROLLED")])
        .await;
}

#[tokio::test]
async fn a_wrong_role_beats_a_malformed_body_an_unknown_tguid_and_a_bad_transition() {
    let app = spawn_app("").await;
    drive(&app, "tg-1", "ENROLL", &[]).await;
    let rows = vec![
        raw(path("tg-1", "review"), Some(INGEST), "{"),
        raw(path("tg-unknown", "events"), Some(REVIEW), "{"),
        post(
            path("tg-1", "treatment"),
            Some(INGEST),
            json!({"treatment": "RECOLLECT"}),
        ),
        raw(
            "/v1/transactions",
            Some(REVIEW),
            register_body_of(TWO_MB + 1),
        ),
    ];
    refuse_all(&app, each_is(rows, 403, "forbidden")).await;
    app.receiver.expect_exactly(&[]).await;
}

#[tokio::test]
async fn a_malformed_body_on_an_unknown_tguid_is_400_not_404() {
    let app = spawn_app("").await;
    let rows = vec![
        raw(path("tg-unknown", "events"), Some(INGEST), "{\"type\":"),
        raw(path("tg-unknown", "review"), Some(REVIEW), "nope"),
        raw(path("tg-unknown", "treatment"), Some(REVIEW), ""),
        // ... and on a malformed tguid, 400 before 422.
        raw(path("tg%201", "events"), Some(INGEST), "{"),
    ];
    refuse_all(&app, each_is(rows, 400, "malformed_json")).await;
    app.receiver.expect_exactly(&[]).await;
}

#[tokio::test]
async fn an_invalid_body_is_422_before_an_unknown_tguid_or_a_bad_transition() {
    let app = spawn_app("").await;
    drive(&app, "tg-done", "SEARCH", &["MATCH"]).await;
    let invalid = |r: super::Row| r.is(422, "invalid_request");
    refuse_all(
        &app,
        vec![
            // 422 beats 404 ...
            invalid(event("tg-unknown", json!({"type": "EXPLODED"}))),
            invalid(event("tg-unknown", json!({"type": "ENROLLED", "x": 1}))),
            invalid(review("tg-unknown", json!({"decision": "MAYBE"}))),
            invalid(event("tg-unknown", json!({"type": "REVERSE_LATENT_MATCH"}))),
            // ... and 409: a finished transaction still gets told its body is wrong.
            invalid(event(
                "tg-done",
                json!({"type": "ENROLLED", "uguid": "ul-1"}),
            )),
            invalid(treatment("tg-done", json!({"treatment": "SOMETHING"}))),
            // A malformed tguid beats an unknown one (it cannot be known).
            invalid(event(&"x".repeat(129), json!({"type": "ENROLLED"}))),
            // 404 beats 409: nothing can be refused as a transition of a transaction that does
            // not exist.
            treatment("tg-unknown", json!({"treatment": "INCORRECT_ENROLL"})).is(404, "not_found"),
        ],
    )
    .await;
    app.receiver
        .expect_exactly(&[status_body("SEARCH", "tg-done", "MATCH")])
        .await;
}
