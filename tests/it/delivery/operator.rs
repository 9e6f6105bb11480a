//! Operator actions through the REST API: recover, renotify, runtime endpoints, retention,
//! and endpoint health (through the store directly, since its job runs once a minute).

use std::time::Duration;

use serde_json::json;

use crate::harness::{
    eventually, spawn_app, status_body, store_with_one_endpoint, Receiver, Reply, ADMIN, INGEST,
    REVIEW,
};

#[tokio::test]
async fn recover_sends_again_everything_that_went_dead_since_a_time_in_order_with_the_same_ids() {
    let app = spawn_app("[delivery]\nretry_schedule = [\"10ms\"]\n").await;
    let (api, rx) = (&app.api, &app.receiver);
    rx.answer_with(500);
    for i in 0..5 {
        api.enroll(&format!("tg-rec-{i}"), "ENROLLED").await;
    }
    eventually("five dead deliveries", async || {
        let dead = api
            .get("/v1/deliveries?status=dead&endpoint=test", Some(ADMIN))
            .await
            .ok(200);
        (dead["items"].as_array().unwrap().len() == 5).then_some(())
    })
    .await;
    assert_eq!(api.endpoint("test").await["dead"], 5);
    let ids_before: Vec<String> = rx.all().iter().map(|h| h.webhook_id()).collect();

    rx.answer_with(200);
    let since = |t: &str| json!({ "since": t });
    let r = api
        .call(
            "POST",
            "/v1/endpoints/test/recover",
            Some(REVIEW),
            Some(&since("2000-01-01T00:00:00Z")),
        )
        .await
        .ok(200);
    assert_eq!(r["affected"], 5);
    rx.wait_until("the five", |h| {
        h.iter().filter(|h| h.acknowledged()).count() == 5
    })
    .await;
    for i in 0..5 {
        let t = format!("tg-rec-{i}");
        assert_eq!(
            rx.delivered(&t),
            vec![status_body("ENROLL", &t, "ENROLLED")]
        );
    }
    for h in rx.all().iter().filter(|h| h.acknowledged()) {
        assert!(
            ids_before.contains(&h.webhook_id()),
            "recovered with a new id {}",
            h.webhook_id()
        );
    }
    // Nothing went dead after a time in the future.
    let recover = |path: &'static str, token: &'static str, body: serde_json::Value| {
        let api = api.clone();
        async move { api.call("POST", path, Some(token), Some(&body)).await }
    };
    let r = recover(
        "/v1/endpoints/test/recover",
        ADMIN,
        since("2999-01-01T00:00:00Z"),
    )
    .await
    .ok(200);
    assert_eq!(r["affected"], 0);
    recover(
        "/v1/endpoints/nope/recover",
        ADMIN,
        since("2000-01-01T00:00:00Z"),
    )
    .await
    .refused(404, "not_found");
    recover("/v1/endpoints/test/recover", ADMIN, since("yesterday"))
        .await
        .refused(422, "invalid_request");
    recover(
        "/v1/endpoints/test/recover",
        INGEST,
        since("2000-01-01T00:00:00Z"),
    )
    .await
    .refused(403, "forbidden");
}

#[tokio::test]
async fn renotify_sends_a_transactions_whole_sequence_again_in_order_with_the_same_ids() {
    let app = spawn_app("").await;
    let (api, rx) = (&app.api, &app.receiver);
    api.register("tg-again", "UPDATE").await.ok(201);
    api.event(
        "tg-again",
        json!({"type": "REVERSE_LATENT_MATCH", "uguid": "ul-1"}),
    )
    .await
    .ok(200);
    api.event("tg-again", json!({"type": "ENROLLED"}))
        .await
        .ok(200);
    let first = rx.wait_until("the sequence", |h| h.len() == 2).await;
    let r = api
        .call(
            "POST",
            "/v1/transactions/tg-again/renotify",
            Some(REVIEW),
            None,
        )
        .await
        .ok(200);
    assert_eq!(r["affected"], 2);
    let all = rx.wait_until("the sequence again", |h| h.len() == 4).await;
    let bodies: Vec<String> = all.iter().map(|h| h.text()).collect();
    assert_eq!(bodies[0..2], bodies[2..4]);
    assert_eq!(all[2].webhook_id(), first[0].webhook_id());
    assert_eq!(all[3].webhook_id(), first[1].webhook_id());
    api.call(
        "POST",
        "/v1/transactions/tg-nope/renotify",
        Some(ADMIN),
        None,
    )
    .await
    .refused(404, "not_found");
    api.call(
        "POST",
        "/v1/transactions/tg-again/renotify",
        Some(ADMIN),
        Some(&json!({"endpoint": "nope"})),
    )
    .await
    .refused(404, "not_found");
}

#[tokio::test]
async fn endpoints_can_be_added_changed_and_removed_at_runtime_beside_the_configured_one() {
    let app = spawn_app("").await;
    let (api, rx) = (&app.api, &app.receiver);
    let other = Receiver::start().await;
    api.enroll("tg-before", "ENROLLED").await;

    let body = json!({"id": "extra", "url": other.url, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"});
    api.call("POST", "/v1/endpoints", Some(REVIEW), Some(&body))
        .await
        .refused(403, "forbidden");
    let created = api
        .call("POST", "/v1/endpoints", Some(ADMIN), Some(&body))
        .await
        .ok(201);
    assert_eq!(created["source"], "api");
    assert!(created.get("secret").is_none(), "secrets are never shown");
    api.call("POST", "/v1/endpoints", Some(ADMIN), Some(&body))
        .await
        .refused(409, "conflict");
    api.call(
        "POST",
        "/v1/endpoints",
        Some(ADMIN),
        Some(&json!({"id": "bad", "url": "ftp://x/"})),
    )
    .await
    .refused(422, "invalid_request");
    // Outside the URL grammar `/openapi.json` publishes, though a URL parser takes each: the
    // document and the service agree (the configuration file takes the wider set).
    for url in [
        "https://x.io*",
        "http://u:p@x.io/",
        "http://[::1]:9/",
        "http://x.io/#f",
    ] {
        api.call(
            "POST",
            "/v1/endpoints",
            Some(ADMIN),
            Some(&json!({"id": "outside", "url": url})),
        )
        .await
        .invalid("is not one the API takes");
    }

    api.enroll("tg-after", "FAILED").await;
    other
        .wait_until("the new endpoint's first", |h| !h.is_empty())
        .await;
    assert_eq!(
        other.delivered("tg-after"),
        vec![status_body("ENROLL", "tg-after", "FAILED")]
    );
    assert!(
        other.delivered("tg-before").is_empty(),
        "only notifications recorded after it was added"
    );

    // Backfill one transaction to the new endpoint.
    api.call(
        "POST",
        "/v1/transactions/tg-before/renotify",
        Some(ADMIN),
        Some(&json!({"endpoint": "extra"})),
    )
    .await
    .ok(200);
    other.wait_until("the backfill", |h| h.len() == 2).await;

    api.call(
        "PATCH",
        "/v1/endpoints/test",
        Some(ADMIN),
        Some(&json!({"url": other.url})),
    )
    .await
    .refused(409, "conflict");
    api.call(
        "PATCH",
        "/v1/endpoints/test",
        Some(ADMIN),
        Some(&json!({"colour": "red"})),
    )
    .await
    .refused(422, "invalid_request");
    api.call("DELETE", "/v1/endpoints/test", Some(ADMIN), None)
        .await
        .refused(409, "conflict");
    let ok = api
        .call("DELETE", "/v1/endpoints/extra", Some(ADMIN), None)
        .await
        .ok(200);
    assert_eq!(ok["affected"], 0);
    assert!(api.endpoint("extra").await.is_null());
    api.enroll("tg-gone", "ENROLLED").await;
    rx.wait_until("the configured endpoint still gets it", |h| {
        h.iter().any(|h| h.tguid().as_deref() == Some("tg-gone"))
    })
    .await;
    // A deleted endpoint gets no delivery row, so nothing can ever be sent to it.
    let gone = api.recorded("tg-gone").await;
    let to: Vec<&serde_json::Value> = gone.notifications[0]
        .deliveries
        .iter()
        .map(|d| &d["endpoint"])
        .collect();
    assert_eq!(to, ["test"]);
    assert!(other.delivered("tg-gone").is_empty());
}

#[tokio::test]
async fn retention_deletes_delivered_final_transactions_and_keeps_everything_undelivered_or_open() {
    let app = spawn_app("[retention]\nage = \"0s\"\nschedule = \"* * * * * *\"\n").await;
    let api = &app.api;
    app.receiver.script(|r| {
        if r.body.contains("tg-keep-failing") {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });
    api.enroll("tg-old", "ENROLLED").await;
    api.enroll("tg-keep-failing", "ENROLLED").await;
    api.register("tg-keep-open", "ENROLL").await.ok(201);
    api.event("tg-keep-open", json!({"type": "PENDING"}))
        .await
        .ok(200);
    eventually("retention to delete tg-old", async || {
        let status = api
            .get("/v1/transactions/tg-old", Some(REVIEW))
            .await
            .status;
        (status == 404).then_some(())
    })
    .await;
    assert_eq!(api.detail("tg-keep-failing").await["state"], "ENROLLED");
    assert_eq!(api.detail("tg-keep-open").await["state"], "PENDING");
}
#[tokio::test]
async fn an_endpoint_failing_longer_than_disable_after_is_disabled_and_a_success_clears_its_failing_time(
) {
    use gbds_notifier::domain::{Input, Operation, Outcome, Tguid};
    use gbds_notifier::store::{Completion, InputRequest};

    let dir = tempfile::tempdir().unwrap();
    let opened = store_with_one_endpoint(&dir.path().join("n.db")).await;
    let store = opened.store;
    for t in ["tg-a", "tg-b"] {
        let tguid = Tguid::parse(t).unwrap();
        store
            .register(tguid.clone(), Operation::Enroll, "test".into())
            .await
            .unwrap();
        store
            .apply(InputRequest {
                tguid,
                input: Input::Outcome(Outcome::Enrolled),
                event_id: None,
                actor: "test".into(),
            })
            .await
            .unwrap();
    }
    let claimed = store.claim(10).await.deliveries;
    assert_eq!(claimed.len(), 2);
    // One success clears the failing time that the other's failure started.
    store
        .complete(vec![Completion::Retry {
            id: claimed[0].id,
            http_status: Some(503),
            error: "HTTP 503".into(),
            next_attempt_at: 0,
        }])
        .await;
    store
        .complete(vec![Completion::Delivered {
            id: claimed[1].id,
            http_status: 200,
        }])
        .await;
    store.release(vec![]).await; // answered after the commit that holds the completions
    let e = &store.readers.endpoints().await.unwrap()[0];
    assert_eq!(e.failing_since, None);
    assert_eq!(
        gbds_notifier::jobs::run_endpoint_health(&store, Duration::ZERO).await,
        0
    );

    let again = store.claim(10).await.deliveries;
    assert_eq!(again.len(), 1);
    store
        .complete(vec![Completion::Retry {
            id: again[0].id,
            http_status: None,
            error: "refused".into(),
            next_attempt_at: 0,
        }])
        .await;
    store.release(vec![]).await;
    // A long threshold leaves it enabled; a passed one disables it.
    assert_eq!(
        gbds_notifier::jobs::run_endpoint_health(&store, Duration::from_secs(3600)).await,
        0
    );
    // Once a millisecond has passed since the failure, it is disabled (0 until then).
    eventually("the endpoint failing for longer than 1 ms", async || {
        match gbds_notifier::jobs::run_endpoint_health(&store, Duration::from_millis(1)).await {
            0 => None,
            n => {
                assert_eq!(n, 1, "one endpoint to disable");
                Some(())
            }
        }
    })
    .await;
    let e = &store.readers.endpoints().await.unwrap()[0];
    assert!(!e.enabled);
    assert!(
        e.disabled_reason
            .as_deref()
            .unwrap_or("")
            .starts_with("failing continuously since"),
        "{e:?}"
    );
    assert!(
        store.claim(10).await.deliveries.is_empty(),
        "a disabled endpoint's deliveries wait"
    );
    store.shutdown().await;
    opened.writer.join().unwrap();
}

#[tokio::test]
async fn a_delivery_being_attempted_cannot_be_retried_by_an_operator() {
    // The receiver holds the POST until the test releases it: the delivery stays in flight
    // (leased) meanwhile, however long the calls below take.
    let app = spawn_app("[delivery]\nrequest_timeout = \"60s\"\nlease = \"120s\"\n").await;
    let (api, rx) = (&app.api, &app.receiver);
    rx.hold_until_released();
    api.enroll("tg-held", "ENROLLED").await;
    rx.wait_until("the POST to arrive", |h| h.len() == 1).await;
    let pending = api
        .get("/v1/deliveries?status=pending", Some(ADMIN))
        .await
        .ok(200);
    let id = pending["items"][0]["id"].as_i64().unwrap();
    let message = api
        .call(
            "POST",
            &format!("/v1/deliveries/{id}/retry"),
            Some(REVIEW),
            None,
        )
        .await
        .refused(409, "conflict");
    assert!(message.contains("being attempted"), "{message}");
    // The held POST then completes as any other: delivered once.
    rx.release();
    rx.wait_until("the held POST", |h| h.len() == 1 && h[0].answered)
        .await;
    rx.assert_quiet().await;
    assert_eq!(rx.delivered("tg-held").len(), 1);
    assert_eq!(api.first_delivery("tg-held").await["attempts"], 1);
}
