//! Operator actions through the REST API: recover, renotify, runtime endpoints, retention,
//! and endpoint health (through the store directly, since its job runs once a minute).

use std::time::Duration;

use serde_json::json;

use crate::faults::{call, endpoint, enroll, WAIT};
use crate::harness::{status_body, INGEST, REVIEW};
use crate::receiver::{FaultReceiver, Reply};
use crate::service::spawn;

#[tokio::test]
async fn recover_sends_again_everything_that_went_dead_since_a_time_in_order_with_the_same_ids() {
    let rx = FaultReceiver::start(|_, _| Reply::status(500)).await;
    let svc = spawn(&rx.url, "[delivery]\nretry_schedule = [\"10ms\"]\n").await;
    let api = &svc.api;
    for i in 0..5 {
        enroll(api, &format!("tg-rec-{i}"), "ENROLLED").await;
    }
    crate::service::eventually("five dead deliveries", || async {
        let dead = call(
            api,
            "GET",
            "/v1/deliveries?status=dead&endpoint=test",
            None,
            None,
        )
        .await
        .ok(200);
        dead["items"].as_array().unwrap().len() == 5
    })
    .await;
    assert_eq!(endpoint(api, "test").await["dead"], 5);
    let ids_before: Vec<String> = rx.hits().iter().map(|h| h.webhook_id.clone()).collect();

    rx.script(|_, _| Reply::ok());
    let r = call(
        api,
        "POST",
        "/v1/endpoints/test/recover",
        Some(REVIEW),
        Some(json!({"since": "2000-01-01T00:00:00Z"})),
    )
    .await
    .ok(200);
    assert_eq!(r["affected"], 5);
    rx.wait_until("the five", WAIT, |h| {
        h.iter().filter(|h| h.answered == 200).count() == 5
    })
    .await;
    for i in 0..5 {
        let t = format!("tg-rec-{i}");
        assert_eq!(
            rx.delivered(&t),
            vec![status_body("ENROLL", &t, "ENROLLED")]
        );
    }
    for h in rx.hits().iter().filter(|h| h.answered == 200) {
        assert!(
            ids_before.contains(&h.webhook_id),
            "recovered with a new id {}",
            h.webhook_id
        );
    }
    // Nothing went dead after a time in the future.
    let r = call(
        api,
        "POST",
        "/v1/endpoints/test/recover",
        None,
        Some(json!({"since": "2999-01-01T00:00:00Z"})),
    )
    .await
    .ok(200);
    assert_eq!(r["affected"], 0);
    call(
        api,
        "POST",
        "/v1/endpoints/nope/recover",
        None,
        Some(json!({"since": "2000-01-01T00:00:00Z"})),
    )
    .await
    .refused(404, "not_found");
    call(
        api,
        "POST",
        "/v1/endpoints/test/recover",
        None,
        Some(json!({"since": "yesterday"})),
    )
    .await
    .refused(422, "invalid_request");
    call(
        api,
        "POST",
        "/v1/endpoints/test/recover",
        Some(INGEST),
        Some(json!({"since": "2000-01-01T00:00:00Z"})),
    )
    .await
    .refused(403, "forbidden");
}

#[tokio::test]
async fn renotify_sends_a_transactions_whole_sequence_again_in_order_with_the_same_ids() {
    let rx = FaultReceiver::start(|_, _| Reply::ok()).await;
    let svc = spawn(&rx.url, "").await;
    let api = &svc.api;
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
    let first = rx.wait_until("the sequence", WAIT, |h| h.len() == 2).await;
    let r = call(
        api,
        "POST",
        "/v1/transactions/tg-again/renotify",
        Some(REVIEW),
        None,
    )
    .await
    .ok(200);
    assert_eq!(r["affected"], 2);
    let all = rx
        .wait_until("the sequence again", WAIT, |h| h.len() == 4)
        .await;
    let bodies: Vec<&str> = all.iter().map(|h| h.body.as_str()).collect();
    assert_eq!(bodies[0..2], bodies[2..4]);
    assert_eq!(all[2].webhook_id, first[0].webhook_id);
    assert_eq!(all[3].webhook_id, first[1].webhook_id);
    call(api, "POST", "/v1/transactions/tg-nope/renotify", None, None)
        .await
        .refused(404, "not_found");
    call(
        api,
        "POST",
        "/v1/transactions/tg-again/renotify",
        None,
        Some(json!({"endpoint": "nope"})),
    )
    .await
    .refused(404, "not_found");
}

#[tokio::test]
async fn endpoints_can_be_added_changed_and_removed_at_runtime_beside_the_configured_one() {
    let rx = FaultReceiver::start(|_, _| Reply::ok()).await;
    let other = FaultReceiver::start(|_, _| Reply::ok()).await;
    let svc = spawn(&rx.url, "").await;
    let api = &svc.api;
    enroll(api, "tg-before", "ENROLLED").await;

    let body = json!({"id": "extra", "url": other.url, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"});
    call(
        api,
        "POST",
        "/v1/endpoints",
        Some(REVIEW),
        Some(body.clone()),
    )
    .await
    .refused(403, "forbidden");
    let created = call(api, "POST", "/v1/endpoints", None, Some(body.clone()))
        .await
        .ok(201);
    assert_eq!(created["source"], "api");
    assert!(created.get("secret").is_none(), "secrets are never shown");
    call(api, "POST", "/v1/endpoints", None, Some(body))
        .await
        .refused(409, "conflict");
    call(
        api,
        "POST",
        "/v1/endpoints",
        None,
        Some(json!({"id": "bad", "url": "ftp://x/"})),
    )
    .await
    .refused(422, "invalid_request");

    enroll(api, "tg-after", "FAILED").await;
    other
        .wait_until("the new endpoint's first", WAIT, |h| !h.is_empty())
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
    call(
        api,
        "POST",
        "/v1/transactions/tg-before/renotify",
        None,
        Some(json!({"endpoint": "extra"})),
    )
    .await
    .ok(200);
    other
        .wait_until("the backfill", WAIT, |h| h.len() == 2)
        .await;

    call(
        api,
        "PATCH",
        "/v1/endpoints/test",
        None,
        Some(json!({"url": other.url})),
    )
    .await
    .refused(409, "conflict");
    call(
        api,
        "PATCH",
        "/v1/endpoints/test",
        None,
        Some(json!({"colour": "red"})),
    )
    .await
    .refused(422, "invalid_request");
    call(api, "DELETE", "/v1/endpoints/test", None, None)
        .await
        .refused(409, "conflict");
    let ok = call(api, "DELETE", "/v1/endpoints/extra", None, None)
        .await
        .ok(200);
    assert_eq!(ok["affected"], 0);
    assert!(endpoint(api, "extra").await.is_null());
    enroll(api, "tg-gone", "ENROLLED").await;
    rx.wait_until("the configured endpoint still gets it", WAIT, |h| {
        h.iter().any(|h| h.tguid == "tg-gone")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(other.delivered("tg-gone").is_empty());
}

#[tokio::test]
async fn retention_deletes_delivered_final_transactions_and_keeps_everything_undelivered_or_open() {
    let rx = FaultReceiver::start(|body, _| {
        if body.contains("tg-keep-failing") {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    })
    .await;
    let svc = spawn(
        &rx.url,
        "[retention]\nage = \"0s\"\nschedule = \"* * * * * *\"\n",
    )
    .await;
    let api = &svc.api;
    enroll(api, "tg-old", "ENROLLED").await;
    enroll(api, "tg-keep-failing", "ENROLLED").await;
    api.register("tg-keep-open", "ENROLL").await.ok(201);
    api.event("tg-keep-open", json!({"type": "PENDING"}))
        .await
        .ok(200);
    crate::service::eventually("retention to delete tg-old", || async {
        api.get("/v1/transactions/tg-old", Some(REVIEW))
            .await
            .status
            == 404
    })
    .await;
    assert_eq!(api.detail("tg-keep-failing").await["state"], "ENROLLED");
    assert_eq!(api.detail("tg-keep-open").await["state"], "PENDING");
}

#[tokio::test]
async fn an_endpoint_failing_longer_than_disable_after_is_disabled_and_a_success_clears_its_failing_time(
) {
    use gbds_notifier::domain::{Input, Operation, Outcome, Tguid, UpdateLabel};
    use gbds_notifier::endpoint::Endpoint;
    use gbds_notifier::store::{Completion, InputRequest, Store, StoreOptions};

    let dir = tempfile::tempdir().unwrap();
    let opened = Store::open(
        &dir.path().join("n.db"),
        StoreOptions {
            synchronous_full: false,
            update_label: UpdateLabel::Enroll,
            endpoints: vec![Endpoint::http("e", "http://127.0.0.1:9/".parse().unwrap())],
            delivery: Default::default(),
        },
    )
    .unwrap();
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
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        gbds_notifier::jobs::run_endpoint_health(&store, Duration::from_millis(1)).await,
        1
    );
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
    // The receiver holds the first POST: the delivery stays in flight (leased) meanwhile.
    let rx = FaultReceiver::start(|_, attempt| Reply {
        delay: if attempt == 1 {
            Duration::from_secs(2)
        } else {
            Duration::ZERO
        },
        ..Reply::ok()
    })
    .await;
    let svc = spawn(&rx.url, "").await;
    let api = &svc.api;
    enroll(api, "tg-held", "ENROLLED").await;
    crate::service::eventually("the POST to arrive", || async { rx.arrivals() == 1 }).await;
    let pending = call(api, "GET", "/v1/deliveries?status=pending", None, None)
        .await
        .ok(200);
    let id = pending["items"][0]["id"].as_i64().unwrap();
    let message = call(
        api,
        "POST",
        &format!("/v1/deliveries/{id}/retry"),
        Some(REVIEW),
        None,
    )
    .await
    .refused(409, "conflict");
    assert!(message.contains("being attempted"), "{message}");
    // The held POST then completes as any other: delivered once.
    rx.wait_until("the held POST", WAIT, |h| h.len() == 1).await;
    assert_eq!(rx.delivered("tg-held").len(), 1);
}
