//! Receivers that fail in every way a real one does: 503, 429 with Retry-After, 410, slow
//! answers, refused connections; and what each must (and must not) do to other deliveries.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{free_port, status_body, Api, ADMIN};
use crate::receiver::{FaultReceiver, Reply};
use crate::service::spawn;

pub const WAIT: Duration = Duration::from_secs(20);

pub async fn enroll(api: &Api, tguid: &str, outcome: &str) {
    api.register(tguid, "ENROLL").await.ok(201);
    api.event(tguid, json!({ "type": outcome })).await.ok(200);
}

/// Any method, as admin unless a token is given.
pub async fn call(
    api: &Api,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> crate::harness::Answer {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = client
        .request(method.parse().unwrap(), format!("{}{path}", api.base))
        .bearer_auth(token.unwrap_or(ADMIN));
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&b).unwrap());
    }
    let r = req.send().await.unwrap();
    crate::harness::Answer {
        status: r.status().as_u16(),
        body: r.bytes().await.unwrap(),
    }
}

/// The first delivery of the first notification of `tguid`, as GET shows it.
pub async fn first_delivery(api: &Api, tguid: &str) -> Value {
    api.detail(tguid).await["notifications"][0]["deliveries"][0].clone()
}

pub async fn endpoint(api: &Api, id: &str) -> Value {
    let all = call(api, "GET", "/v1/endpoints", None, None).await.ok(200);
    all["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_503_is_retried_until_acknowledged_and_every_attempt_keeps_the_webhook_id() {
    let rx = FaultReceiver::start(|_, attempt| {
        if attempt < 3 {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    })
    .await;
    let svc = spawn(&rx.url, "").await;
    enroll(&svc.api, "tg-503", "ENROLLED").await;
    let hits = rx
        .wait_until("an acknowledged attempt", WAIT, |h| {
            h.iter().any(|h| h.answered == 200)
        })
        .await;
    assert_eq!(hits.len(), 3);
    assert!(hits
        .iter()
        .all(|h| h.webhook_id == hits[0].webhook_id && !h.webhook_id.is_empty()));
    crate::service::eventually("GET to show it delivered after 3 attempts", || async {
        let d = first_delivery(&svc.api, "tg-503").await;
        d["status"] == "delivered" && d["attempts"] == 3
    })
    .await;
}

#[tokio::test]
async fn a_429_with_retry_after_waits_as_long_as_the_receiver_asked() {
    let rx = FaultReceiver::start(|_, attempt| {
        if attempt == 1 {
            Reply {
                status: 429,
                retry_after: Some(1),
                delay: Duration::ZERO,
            }
        } else {
            Reply::ok()
        }
    })
    .await;
    let svc = spawn(&rx.url, "").await;
    enroll(&svc.api, "tg-429", "ENROLLED").await;
    let hits = rx.wait_until("the retry", WAIT, |h| h.len() >= 2).await;
    let gap = hits[1].at - hits[0].at;
    // The schedule alone would retry after 50 ms.
    assert!(
        gap >= Duration::from_millis(900),
        "retried after {gap:?}, not after the 1 s asked for"
    );
}

#[tokio::test]
async fn a_410_disables_the_endpoint_and_enabling_it_sends_its_backlog_in_order() {
    let rx = FaultReceiver::start(|_, _| Reply::status(410)).await;
    let svc = spawn(&rx.url, "").await;
    let api = &svc.api;
    api.register("tg-gone", "ENROLL").await.ok(201);
    api.event("tg-gone", json!({"type": "EXCEPTION"}))
        .await
        .ok(200);
    rx.wait_until("the 410", WAIT, |h| !h.is_empty()).await;
    crate::service::eventually("the endpoint to be disabled", || async {
        let e = endpoint(api, "test").await;
        e["enabled"] == false && e["disabled_reason"] == "410 Gone"
    })
    .await;
    api.treatment("tg-gone", json!({"treatment": "DIFFERENT_FINGERS"}))
        .await
        .ok(200);
    enroll(api, "tg-gone-2", "FAILED").await;
    tokio::time::sleep(Duration::from_millis(500)).await; // watching for what must not happen
    assert_eq!(rx.hits().len(), 1, "a disabled endpoint gets nothing");
    assert_eq!(endpoint(api, "test").await["backlog"], 4);

    rx.script(|_, _| Reply::ok());
    call(
        api,
        "PATCH",
        "/v1/endpoints/test",
        None,
        Some(json!({"enabled": true})),
    )
    .await
    .ok(200);
    rx.wait_until("the backlog", WAIT, |h| {
        h.iter().filter(|h| h.answered == 200).count() == 4
    })
    .await;
    assert_eq!(
        rx.delivered("tg-gone"),
        vec![
            status_body("ENROLL", "tg-gone", "EXCEPTION"),
            r#"{"operation":"TREAT_EXCEPTION","tguid":"tg-gone","status":"OK","treatment":"DIFFERENT_FINGERS"}"#.to_owned(),
            status_body("ENROLL", "tg-gone", "ENROLLED"),
        ]
    );
    assert_eq!(
        rx.delivered("tg-gone-2"),
        vec![status_body("ENROLL", "tg-gone-2", "FAILED")]
    );
}

#[tokio::test]
async fn a_receiver_slower_than_the_request_timeout_is_tried_again() {
    let rx = FaultReceiver::start(|_, attempt| Reply {
        status: 200,
        retry_after: None,
        delay: if attempt == 1 {
            Duration::from_millis(1500)
        } else {
            Duration::ZERO
        },
    })
    .await;
    let svc = spawn(
        &rx.url,
        "[delivery]\nrequest_timeout = \"300ms\"\nlease = \"5s\"\n",
    )
    .await;
    enroll(&svc.api, "tg-slow", "ENROLLED").await;
    crate::service::eventually("delivery on the second attempt", || async {
        let d = first_delivery(&svc.api, "tg-slow").await;
        d["status"] == "delivered" && d["attempts"] == 2
    })
    .await;
}

#[tokio::test]
async fn a_refused_connection_is_retried_until_the_receiver_is_up() {
    let port = free_port();
    let svc = spawn(&format!("http://127.0.0.1:{port}/notify"), "").await;
    enroll(&svc.api, "tg-down", "ENROLLED").await;
    crate::service::eventually("a failed attempt", || async {
        let d = first_delivery(&svc.api, "tg-down").await;
        d["attempts"].as_i64().unwrap_or(0) >= 1
            && d["last_error"].as_str().unwrap_or("").contains("connect")
    })
    .await;
    let rx = FaultReceiver::start_on(port, |_, _| Reply::ok()).await;
    rx.wait_until("the delivery", WAIT, |h| !h.is_empty()).await;
    assert_eq!(
        rx.delivered("tg-down"),
        vec![status_body("ENROLL", "tg-down", "ENROLLED")]
    );
}

#[tokio::test]
async fn a_used_up_schedule_makes_the_delivery_dead_and_the_next_notification_goes_on() {
    let rx = FaultReceiver::start(|body, _| {
        if body.contains("\"EXCEPTION\"") {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let svc = spawn(
        &rx.url,
        "[delivery]\nretry_schedule = [\"20ms\", \"20ms\"]\n",
    )
    .await;
    let api = &svc.api;
    api.register("tg-dead", "ENROLL").await.ok(201);
    api.event("tg-dead", json!({"type": "EXCEPTION"}))
        .await
        .ok(200);
    api.treatment("tg-dead", json!({"treatment": "SAME_FINGERS"}))
        .await
        .ok(200);
    let treated = r#"{"operation":"TREAT_EXCEPTION","tguid":"tg-dead","status":"OK","treatment":"SAME_FINGERS"}"#.to_owned();
    let failed = status_body("ENROLL", "tg-dead", "FAILED");
    rx.wait_until("the two after the dead one", WAIT, |h| {
        h.iter().filter(|h| h.answered == 200).count() == 2
    })
    .await;
    assert_eq!(
        rx.delivered("tg-dead"),
        vec![treated.clone(), failed.clone()]
    );
    assert_eq!(
        rx.hits().iter().filter(|h| h.answered == 500).count(),
        3,
        "first attempt and two retries"
    );

    let dead = call(api, "GET", "/v1/deliveries?status=dead", None, None)
        .await
        .ok(200);
    let items = dead["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{dead}");
    assert_eq!(items[0]["tguid"], "tg-dead");
    assert_eq!(items[0]["attempts"], 3);
    assert_eq!(items[0]["last_status"], 500);

    rx.script(|_, _| Reply::ok());
    let id = items[0]["id"].as_i64().unwrap();
    let r = call(
        api,
        "POST",
        &format!("/v1/deliveries/{id}/retry"),
        Some(crate::harness::REVIEW),
        None,
    )
    .await
    .ok(200);
    assert_eq!(r["affected"], 1);
    rx.wait_until("the retried one", WAIT, |h| {
        h.iter().filter(|h| h.answered == 200).count() == 3
    })
    .await;
    let ids: Vec<String> = rx
        .hits()
        .iter()
        .filter(|h| h.body.contains("\"EXCEPTION\""))
        .map(|h| h.webhook_id.clone())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "a retry keeps the webhook-id"
    );
    call(
        api,
        "POST",
        &format!("/v1/deliveries/{id}/retry"),
        None,
        None,
    )
    .await
    .refused(409, "conflict");
    call(api, "POST", "/v1/deliveries/999999/retry", None, None)
        .await
        .refused(404, "not_found");
}

#[tokio::test]
async fn a_failing_transaction_does_not_hold_up_other_transactions_to_the_same_endpoint() {
    let rx = FaultReceiver::start(|body, _| {
        if body.contains("tg-stuck") {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    })
    .await;
    let svc = spawn(&rx.url, "").await;
    enroll(&svc.api, "tg-stuck", "ENROLLED").await;
    for i in 0..20 {
        enroll(&svc.api, &format!("tg-free-{i}"), "ENROLLED").await;
    }
    rx.wait_until("the 20 others", WAIT, |h| {
        h.iter().filter(|h| h.answered == 200).count() == 20
    })
    .await;
    assert!(rx.delivered("tg-stuck").is_empty());
}

#[tokio::test]
async fn a_slow_endpoint_does_not_hold_up_another_endpoint() {
    let slow = FaultReceiver::start(|_, _| Reply {
        status: 200,
        retry_after: None,
        delay: Duration::from_secs(2),
    })
    .await;
    let fast = FaultReceiver::start(|_, _| Reply::ok()).await;
    let extra = format!(
        "[delivery]\nendpoint_concurrency = 2\nrequest_timeout = \"10s\"\nlease = \"30s\"\n\n\
         [[endpoints]]\nid = \"slow\"\nurl = \"{}\"\n\n[[endpoints]]\nid = \"fast\"\nurl = \"{}\"\n",
        slow.url, fast.url
    );
    let svc = spawn(&slow.url, &extra).await;
    for i in 0..40 {
        enroll(&svc.api, &format!("tg-both-{i}"), "ENROLLED").await;
    }
    fast.wait_until("all 40 at the fast endpoint", Duration::from_secs(5), |h| {
        h.len() == 40
    })
    .await;
    assert!(
        slow.hits().len() <= 4,
        "the slow one took {} already",
        slow.hits().len()
    );
}
