//! What `GET /v1/endpoints` and the start-up line say about endpoints: `last_delivered_at` is
//! the last delivery, also when an older notification succeeds on a retry after a newer one;
//! the start-up line counts every endpoint, the RabbitMQ sink included.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::harness::{
    database_in, eventually, spawn_app, status_body, Receiver, Reply, ServiceProcess,
};

#[tokio::test]
async fn last_delivered_at_follows_a_retry_that_succeeds_after_a_newer_delivery() {
    if super::skipped() {
        return;
    }
    let app = spawn_app("").await;
    // "old" fails until "new" was recorded as delivered, then succeeds on a retry.
    let open = Arc::new(AtomicBool::new(false));
    let may_succeed = open.clone();
    app.receiver.script(move |arrival| {
        if arrival.body.contains("tg-old") && !may_succeed.load(Ordering::SeqCst) {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });
    app.api.register("tg-old", "ENROLL").await.ok(201);
    app.api
        .event("tg-old", serde_json::json!({"type": "ENROLLED"}))
        .await
        .ok(200);
    app.receiver.at_least(1).await;
    app.api.register("tg-new", "ENROLL").await.ok(201);
    app.api
        .event("tg-new", serde_json::json!({"type": "ENROLLED"}))
        .await
        .ok(200);
    let new_at = eventually("tg-new recorded as delivered", async || {
        let d = app.api.first_delivery("tg-new").await;
        (d["status"] == "delivered").then(|| d["delivered_at"].as_str().map(str::to_owned))?
    })
    .await;
    open.store(true, Ordering::SeqCst);
    let old_at = eventually("tg-old recorded as delivered", async || {
        let d = app.api.first_delivery("tg-old").await;
        (d["status"] == "delivered").then(|| d["delivered_at"].as_str().map(str::to_owned))?
    })
    .await;
    assert!(
        old_at > new_at,
        "the retry succeeded last: {old_at} vs {new_at}"
    );
    let endpoint = app.api.endpoint("test").await;
    assert_eq!(endpoint["last_delivered_at"], old_at.as_str(), "{endpoint}");
    app.receiver
        .wait_until("both delivered", |all| {
            [
                status_body("ENROLL", "tg-old", "ENROLLED"),
                status_body("ENROLL", "tg-new", "ENROLLED"),
            ]
            .iter()
            .all(|b| all.iter().any(|r| r.acknowledged() && r.text() == *b))
        })
        .await;
}

#[tokio::test]
async fn the_start_up_line_counts_the_rabbitmq_sink() {
    if super::skipped() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let receiver = Receiver::start().await;
    let service = ServiceProcess::start(
        dir.path(),
        &database_in(dir.path()),
        &receiver.url,
        "[amqp]\nenabled = true\n",
    )
    .await;
    let log = service.log();
    let line = log
        .lines()
        .find(|l| l.contains("gbds-notifier serving"))
        .unwrap_or_else(|| panic!("no start-up line:\n{log}"));
    assert!(
        line.contains("endpoints=2"),
        "endpoint test and the sink: {line}"
    );
    assert!(line.contains("amqp_sinks=1"), "{line}");
}
