//! Receivers that fail in every way a real one does: 503, 429 with Retry-After, 410, slow
//! answers, refused connections; and what each must (and must not) do to other deliveries.

use std::time::Duration;

use serde_json::json;

use crate::harness::{
    eventually, free_port, spawn_app, status_body, treated_body, Receiver, Reply, ADMIN, REVIEW,
};

#[tokio::test]
async fn a_503_is_retried_until_acknowledged_and_every_attempt_keeps_the_webhook_id() {
    let app = spawn_app("").await;
    let rx = &app.receiver;
    rx.script(|r| {
        if r.attempt < 3 {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });
    app.api.enroll("tg-503", "ENROLLED").await;
    let hits = rx
        .wait_until("an acknowledged attempt", |h| {
            h.iter().any(|h| h.acknowledged())
        })
        .await;
    assert_eq!(hits.len(), 3);
    assert!(hits
        .iter()
        .all(|h| h.webhook_id() == hits[0].webhook_id() && !h.webhook_id().is_empty()));
    eventually("GET to show it delivered after 3 attempts", async || {
        let d = app.api.first_delivery("tg-503").await;
        (d["status"] == "delivered" && d["attempts"] == 3).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_429_with_retry_after_waits_as_long_as_the_receiver_asked() {
    let app = spawn_app("").await;
    let rx = &app.receiver;
    rx.script(|r| {
        if r.attempt == 1 {
            Reply {
                status: 429,
                retry_after: Some(1),
                delay: Duration::ZERO,
            }
        } else {
            Reply::ok()
        }
    });
    app.api.enroll("tg-429", "ENROLLED").await;
    let hits = rx.wait_until("the retry", |h| h.len() >= 2).await;
    let gap = hits[1].at - hits[0].at;
    // The schedule alone would retry after 50 ms.
    assert!(
        gap >= Duration::from_millis(900),
        "retried after {gap:?}, not after the 1 s asked for"
    );
}

#[tokio::test]
async fn a_410_disables_the_endpoint_and_enabling_it_sends_its_backlog_in_order() {
    let app = spawn_app("").await;
    let (api, rx) = (&app.api, &app.receiver);
    rx.answer_with(410);
    api.register("tg-gone", "ENROLL").await.ok(201);
    api.event("tg-gone", json!({"type": "EXCEPTION"}))
        .await
        .ok(200);
    rx.wait_until("the 410", |h| !h.is_empty()).await;
    eventually("the endpoint to be disabled", async || {
        let e = api.endpoint("test").await;
        (e["enabled"] == false && e["disabled_reason"] == "410 Gone").then_some(())
    })
    .await;
    api.treatment("tg-gone", json!({"treatment": "DIFFERENT_FINGERS"}))
        .await
        .ok(200);
    api.enroll("tg-gone-2", "FAILED").await;
    // The receiver still answers 410: a POST while the endpoint is disabled would show up
    // below as a second 410 and as an attempt too many in the store.
    assert_eq!(api.endpoint("test").await["backlog"], 4);

    rx.answer_with(200);
    api.call(
        "PATCH",
        "/v1/endpoints/test",
        Some(ADMIN),
        Some(&json!({"enabled": true})),
    )
    .await
    .ok(200);
    rx.wait_until("the backlog", |h| {
        h.iter().filter(|h| h.acknowledged()).count() == 4
    })
    .await;
    app.api.settled().await;
    assert_eq!(
        rx.delivered("tg-gone"),
        vec![
            status_body("ENROLL", "tg-gone", "EXCEPTION"),
            treated_body("tg-gone", "DIFFERENT_FINGERS"),
            status_body("ENROLL", "tg-gone", "ENROLLED"),
        ]
    );
    assert_eq!(
        rx.delivered("tg-gone-2"),
        vec![status_body("ENROLL", "tg-gone-2", "FAILED")]
    );
    let gone: Vec<u16> = rx.all().iter().map(|h| h.status).collect();
    assert_eq!(
        gone,
        [410, 200, 200, 200, 200],
        "a disabled endpoint gets nothing"
    );
    // Attempts as the store counts them: the first notification's 410 and its success; every
    // other one sent once, after the endpoint was enabled.
    let mut attempts = Vec::new();
    for t in ["tg-gone", "tg-gone-2"] {
        for n in api.recorded(t).await.notifications {
            attempts.push(n.deliveries[0]["attempts"].as_i64().expect("attempts"));
        }
    }
    assert_eq!(attempts, [2, 1, 1, 1]);
}

#[tokio::test]
async fn a_receiver_slower_than_the_request_timeout_is_tried_again() {
    let app = spawn_app("[delivery]\nrequest_timeout = \"300ms\"\nlease = \"5s\"\n").await;
    app.receiver.script(|r| Reply {
        status: 200,
        retry_after: None,
        delay: if r.attempt == 1 {
            Duration::from_millis(1500)
        } else {
            Duration::ZERO
        },
    });
    app.api.enroll("tg-slow", "ENROLLED").await;
    eventually("delivery on the second attempt", async || {
        let d = app.api.first_delivery("tg-slow").await;
        (d["status"] == "delivered" && d["attempts"] == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_refused_connection_is_retried_until_the_receiver_is_up() {
    let port = free_port();
    let app = spawn_app(&format!(
        "[[endpoints]]\nid = \"test\"\nurl = \"http://127.0.0.1:{port}/notify\"\n"
    ))
    .await;
    app.api.enroll("tg-down", "ENROLLED").await;
    eventually("a failed attempt", async || {
        let d = app.api.first_delivery("tg-down").await;
        (d["attempts"].as_i64().unwrap_or(0) >= 1
            && d["last_error"].as_str().unwrap_or("").contains("connect"))
        .then_some(())
    })
    .await;
    let rx = Receiver::start_on(port).await;
    rx.wait_until("the delivery", |h| !h.is_empty()).await;
    assert_eq!(
        rx.delivered("tg-down"),
        vec![status_body("ENROLL", "tg-down", "ENROLLED")]
    );
}

#[tokio::test]
async fn a_used_up_schedule_makes_the_delivery_dead_and_the_next_notification_goes_on() {
    let app = spawn_app("[delivery]\nretry_schedule = [\"20ms\", \"20ms\"]\n").await;
    let (api, rx) = (&app.api, &app.receiver);
    rx.script(|r| {
        if r.body.contains("\"EXCEPTION\"") {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    api.register("tg-dead", "ENROLL").await.ok(201);
    api.event("tg-dead", json!({"type": "EXCEPTION"}))
        .await
        .ok(200);
    api.treatment("tg-dead", json!({"treatment": "SAME_FINGERS"}))
        .await
        .ok(200);
    let treated = treated_body("tg-dead", "SAME_FINGERS");
    let failed = status_body("ENROLL", "tg-dead", "FAILED");
    rx.wait_until("the two after the dead one", |h| {
        h.iter().filter(|h| h.acknowledged()).count() == 2
    })
    .await;
    assert_eq!(
        rx.delivered("tg-dead"),
        vec![treated.clone(), failed.clone()]
    );
    assert_eq!(
        rx.all().iter().filter(|h| h.status == 500).count(),
        3,
        "first attempt and two retries"
    );

    let dead = api
        .get("/v1/deliveries?status=dead", Some(ADMIN))
        .await
        .ok(200);
    let items = dead["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{dead}");
    assert_eq!(items[0]["tguid"], "tg-dead");
    assert_eq!(items[0]["attempts"], 3);
    assert_eq!(items[0]["last_status"], 500);

    rx.script(|_| Reply::ok());
    let id = items[0]["id"].as_i64().unwrap();
    let retry = format!("/v1/deliveries/{id}/retry");
    let r = api.call("POST", &retry, Some(REVIEW), None).await.ok(200);
    assert_eq!(r["affected"], 1);
    rx.wait_until("the retried one", |h| {
        h.iter().filter(|h| h.acknowledged()).count() == 3
    })
    .await;
    let ids: Vec<String> = rx
        .all()
        .iter()
        .filter(|h| h.text().contains("\"EXCEPTION\""))
        .map(|h| h.webhook_id())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "a retry keeps the webhook-id"
    );
    api.call("POST", &retry, Some(ADMIN), None)
        .await
        .refused(409, "conflict");
    api.call("POST", "/v1/deliveries/999999/retry", Some(ADMIN), None)
        .await
        .refused(404, "not_found");
}

#[tokio::test]
async fn a_failing_transaction_does_not_hold_up_other_transactions_to_the_same_endpoint() {
    let app = spawn_app("").await;
    let rx = &app.receiver;
    rx.script(|r| {
        if r.body.contains("tg-stuck") {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });
    app.api.enroll("tg-stuck", "ENROLLED").await;
    // Registered after tg-stuck: each of these comes after a notification that is failing.
    for i in 0..20 {
        app.api.enroll(&format!("tg-free-{i}"), "ENROLLED").await;
    }
    let got = rx
        .wait_until("the 20 others, and tg-stuck tried twice", |h| {
            h.iter().filter(|h| h.acknowledged()).count() == 20
                && h.iter().filter(|h| h.status == 503).count() >= 2
        })
        .await;
    assert!(rx.delivered("tg-stuck").is_empty());
    assert!(got
        .iter()
        .filter(|h| h.status == 503)
        .all(|h| h.tguid().as_deref() == Some("tg-stuck")));
    let stuck = app.api.first_delivery("tg-stuck").await;
    assert_eq!(stuck["status"], "pending", "{stuck}");
    assert_eq!(stuck["last_status"], 503, "{stuck}");
}

#[tokio::test]
async fn a_slow_endpoint_does_not_hold_up_another_endpoint() {
    // The slow receiver answers nothing until the test releases it: its endpoint's two slots
    // stay taken for as long as the test looks.
    let slow = Receiver::start().await;
    slow.hold_until_released();
    let fast = Receiver::start().await;
    let extra = format!(
        "[delivery]\nendpoint_concurrency = 2\nrequest_timeout = \"60s\"\nlease = \"120s\"\n\n\
         [[endpoints]]\nid = \"slow\"\nurl = \"{}\"\n\n[[endpoints]]\nid = \"fast\"\nurl = \"{}\"\n",
        slow.url, fast.url
    );
    let app = spawn_app(&extra).await;
    for i in 0..40 {
        app.api.enroll(&format!("tg-both-{i}"), "ENROLLED").await;
    }
    fast.wait_until("all 40 at the fast endpoint", |h| {
        h.iter().filter(|h| h.acknowledged()).count() == 40
    })
    .await;
    let held = slow
        .wait_until("the slow endpoint's two slots taken", |h| h.len() == 2)
        .await;
    assert!(
        held.iter().all(|h| !h.answered),
        "the slow endpoint answered nothing meanwhile: {held:?}"
    );
    slow.release();
    slow.wait_until("all 40 at the slow endpoint once it answers", |h| {
        h.iter().filter(|h| h.acknowledged()).count() == 40
    })
    .await;
}
