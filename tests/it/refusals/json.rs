//! The JSON every body is read as, and the error body every answer has: a key given twice
//! in any object of any body, however deeply nested, is 422 naming the key (and nothing
//! changes); the router's own refusals (no such route, a method the route does not take)
//! answer with `{"error","message"}` too.

use super::{drive, raw, refuse_all, Row};
use crate::harness::{spawn_app, status_body, ADMIN, INGEST, REVIEW};

fn patch(path: &str, body: &str) -> Row {
    Row {
        method: "PATCH",
        ..raw(path.to_owned(), Some(ADMIN), body)
    }
}

#[tokio::test]
async fn a_key_given_twice_anywhere_in_any_body_is_422_naming_it_and_changes_nothing() {
    let app = spawn_app("").await;
    drive(&app, "tg-exc", "ENROLL", &["EXCEPTION"]).await;
    drive(&app, "tg-pend", "ENROLL", &["PENDING"]).await;
    let events = "/v1/transactions/tg-exc/events";
    let rows = vec![
        // Each call, the key repeated at the top level.
        raw("/v1/transactions", Some(INGEST), r#"{"tguid":"tg-new","operation":"SEARCH","operation":"ENROLL"}"#)
            .is(422, "invalid_request").naming("operation"),
        raw("/v1/transactions", Some(INGEST), r#"{"tguid":"tg-a","tguid":"tg-b","operation":"SEARCH"}"#)
            .is(422, "invalid_request").naming("tguid"),
        raw(events, Some(INGEST), r#"{"type":"FAILED","type":"ENROLLED"}"#)
            .is(422, "invalid_request").naming("type"),
        raw(events, Some(INGEST), r#"{"type":"ENROLLED","event_id":"e-1","event_id":"e-2"}"#)
            .is(422, "invalid_request").naming("event_id"),
        raw("/v1/transactions/tg-pend/review", Some(REVIEW), r#"{"decision":"APPROVE","decision":"REJECT"}"#)
            .is(422, "invalid_request").naming("decision"),
        raw("/v1/transactions/tg-exc/treatment", Some(REVIEW), r#"{"treatment":"RECOLLECT","comment":"a","comment":"b"}"#)
            .is(422, "invalid_request").naming("comment"),
        raw("/v1/endpoints", Some(ADMIN), r#"{"id":"ep-dup","url":"http://127.0.0.1:9/a","url":"http://127.0.0.1:9/b"}"#)
            .is(422, "invalid_request").naming("url"),
        patch("/v1/endpoints/ep-any", r#"{"enabled":false,"enabled":true}"#)
            .is(422, "invalid_request").naming("enabled"),
        raw("/v1/endpoints/ep-any/recover", Some(ADMIN), r#"{"since":"2020-01-01T00:00:00Z","since":"2030-01-01T00:00:00Z"}"#)
            .is(422, "invalid_request").naming("since"),
        raw("/v1/transactions/tg-exc/renotify", Some(ADMIN), r#"{"endpoint":"a","endpoint":"b"}"#)
            .is(422, "invalid_request").naming("endpoint"),
        // Nested: in an object inside an array inside an object, in a field the call does
        // not even take; the repetition is what is named.
        raw("/v1/transactions", Some(INGEST), r#"{"tguid":"tg-new","operation":"SEARCH","x":[[{"k":{"deep":1,"deep":2}}]]}"#)
            .is(422, "invalid_request").naming("deep"),
        raw(events, Some(INGEST), r#"{"type":"ENROLLED","event_id":{"a":1,"a":1}}"#)
            .is(422, "invalid_request").naming("a"),
        raw("/v1/endpoints", Some(ADMIN), r#"{"id":"ep-dup","url":"http://127.0.0.1:9/a","subscriptions":["*.FAILED",{"p":1,"p":2}]}"#)
            .is(422, "invalid_request").naming("p"),
        // The same key in two different objects is no repetition: refused for its shape.
        raw("/v1/transactions", Some(INGEST), r#"{"tguid":"tg-new","operation":"SEARCH","x":{"tguid":1}}"#)
            .is(422, "invalid_request"),
    ];
    refuse_all(&app, rows).await;
    assert_eq!(
        app.api
            .get("/v1/transactions/tg-new", Some(ADMIN))
            .await
            .status,
        404
    );
    assert_eq!(
        app.api.get("/v1/endpoints", Some(ADMIN)).await.json()["items"]
            .as_array()
            .map(|i| i.iter().any(|e| e["id"] == "ep-dup")),
        Some(false)
    );
    app.receiver
        .expect_exactly(&[
            status_body("ENROLL", "tg-exc", "EXCEPTION"),
            status_body("ENROLL", "tg-pend", "PENDING"),
        ])
        .await;
}

#[tokio::test]
async fn the_routers_own_refusals_answer_with_the_error_json() {
    let app = spawn_app("").await;
    let no_route = |method: &'static str| Row {
        method,
        ..raw("/v1/no-such-thing", Some(ADMIN), "{}")
    };
    let wrong_method = |method: &'static str, path: &str| Row {
        method,
        body: None,
        ..raw(path.to_owned(), Some(ADMIN), "")
    };
    refuse_all(
        &app,
        vec![
            no_route("GET").is(404, "not_found"),
            no_route("POST").is(404, "not_found"),
            Row {
                auth: super::Auth::Nothing,
                ..no_route("DELETE")
            }
            .is(404, "not_found"),
            wrong_method("DELETE", "/v1/transactions").is(405, "method_not_allowed"),
            wrong_method("PUT", "/v1/transactions/tg-1/events").is(405, "method_not_allowed"),
            wrong_method("GET", "/v1/deliveries/1/retry").is(405, "method_not_allowed"),
        ],
    )
    .await;
    // A 405 says what the route does take.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for (method, path, allowed) in [
        (
            reqwest::Method::DELETE,
            "/v1/transactions",
            &["GET", "POST"][..],
        ),
        (
            reqwest::Method::PUT,
            "/v1/transactions/tg-1/events",
            &["POST"][..],
        ),
        (
            reqwest::Method::POST,
            "/v1/endpoints/ep-1",
            &["PATCH", "DELETE"][..],
        ),
    ] {
        let answer = client
            .request(method.clone(), format!("{}{path}", app.api.base))
            .header("authorization", format!("Bearer {ADMIN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 405, "{method} {path}");
        let allow = answer
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        let allow = allow.unwrap_or_else(|| panic!("{method} {path}: no Allow header"));
        for m in allowed {
            assert!(allow.contains(m), "{method} {path}: Allow: {allow}");
        }
    }
    app.stop().await;
}
