//! The one 5xx a caller's input can meet: a storage failure is an opaque 500 with the error
//! JSON (no SQL, no path in it), changes nothing, and leaves the service answering.

use serde_json::json;

use crate::harness::{database_in, execute_sql, spawn_app, status_body, ADMIN};

#[tokio::test]
async fn a_storage_failure_is_an_opaque_500_that_changes_nothing_and_the_service_goes_on() {
    let app = spawn_app("").await;
    app.api.register("tg-500", "SEARCH").await.ok(201);
    app.api.register("tg-fine", "SEARCH").await.ok(201);
    // Behind the service's back, the table of idempotency keys goes: an event that carries
    // an event_id cannot be recorded.
    execute_sql(&database_in(app.dir.path()), "DROP TABLE event_ids;");
    let answer = app
        .api
        .event("tg-500", json!({"type": "MATCH", "event_id": "e-1"}))
        .await;
    let message = answer.refused(500, "internal");
    assert!(!message.contains("event_ids"), "{message}");
    assert!(!message.to_lowercase().contains("sql"), "{message}");
    let detail = app.api.detail("tg-500").await;
    assert_eq!(detail["state"], "PROCESSING", "{detail}");
    assert_eq!(detail["notifications"], json!([]), "{detail}");

    // Calls that do not need the table still work, and what they cause is delivered.
    app.api
        .event("tg-fine", json!({"type": "NOT_MATCH"}))
        .await
        .ok(200);
    app.receiver
        .expect_exactly(&[status_body("SEARCH", "tg-fine", "NOT_MATCH")])
        .await;
    assert_eq!(
        app.api.get("/v1/transactions", Some(ADMIN)).await.status,
        200
    );
}
