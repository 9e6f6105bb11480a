//! Delivery against a live receiver (CONTRACT §3): retries keep the webhook-id and the order,
//! the `success` rule decides what counts as acknowledged, 410 Gone disables the endpoint, and
//! signatures verify with the endpoint's secret.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::harness::{spawn_app, status_body, treated_body, Received};

#[tokio::test]
async fn a_failing_receiver_gets_retries_with_the_same_webhook_id_and_nothing_overtakes() {
    let app = spawn_app("").await;
    app.receiver.answer_with(500);
    app.api.register("tg-1", "ENROLL").await.ok(201);
    app.api
        .event("tg-1", json!({"type": "EXCEPTION"}))
        .await
        .ok(200);
    app.api
        .treatment("tg-1", json!({"treatment": "SAME_FINGERS"}))
        .await
        .ok(200);
    let expected = vec![
        status_body("ENROLL", "tg-1", "EXCEPTION"),
        treated_body("tg-1", "SAME_FINGERS"),
        status_body("ENROLL", "tg-1", "FAILED"),
    ];
    let failing = app
        .receiver
        .wait_until("three attempts of the first notification", |all| {
            all.len() >= 3
        })
        .await;
    // Only the first notification is tried while it is not acknowledged.
    for r in &failing {
        assert_eq!(r.text(), expected[0]);
        assert_eq!(r.webhook_id(), failing[0].webhook_id());
    }

    app.receiver.answer_with(200);
    app.receiver
        .wait_until("all three acknowledged", |all| {
            all.iter().filter(|r| r.acknowledged()).count() >= 3
        })
        .await;
    app.receiver.assert_quiet().await;
    let all = app.receiver.all();
    let acknowledged: Vec<String> = all
        .iter()
        .filter(|r| r.acknowledged())
        .map(Received::text)
        .collect();
    assert_eq!(acknowledged, expected);
    // After the first failures, each notification went out once, in order.
    let first_ok = all
        .iter()
        .position(Received::acknowledged)
        .expect("acknowledged");
    assert!(all[..first_ok].iter().all(|r| r.text() == expected[0]));
    assert_eq!(all.len() - first_ok, 3, "no duplicates once acknowledged");
    let ids: Vec<String> = all[first_ok..].iter().map(Received::webhook_id).collect();
    assert_eq!(
        ids[0],
        failing[0].webhook_id(),
        "a retry keeps its webhook-id"
    );
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );
}

#[tokio::test]
async fn any_2xx_acknowledges_by_default() {
    let app = spawn_app("").await;
    app.receiver.answer_with(204);
    app.api.register("tg-1", "SEARCH").await.ok(201);
    app.api
        .event("tg-1", json!({"type": "MATCH"}))
        .await
        .ok(200);
    app.receiver
        .expect_exactly(&[status_body("SEARCH", "tg-1", "MATCH")])
        .await;
}

#[tokio::test]
async fn with_success_200_only_a_200_acknowledges() {
    let app = spawn_app("[delivery]\nsuccess = \"200\"\n").await;
    app.receiver.answer_with(202);
    app.api.register("tg-1", "SEARCH").await.ok(201);
    app.api
        .event("tg-1", json!({"type": "NOT_MATCH"}))
        .await
        .ok(200);
    let tried = app
        .receiver
        .wait_until("a retry after a 202", |all| all.len() >= 2)
        .await;
    assert_eq!(tried[0].webhook_id(), tried[1].webhook_id());
    app.receiver.answer_with(200);
    app.receiver
        .wait_until("a 200", |all| all.iter().any(|r| r.status == 200))
        .await;
    app.receiver.assert_quiet().await;
    let all = app.receiver.all();
    assert_eq!(all.last().expect("a POST").status, 200);
    assert!(all
        .iter()
        .all(|r| r.text() == status_body("SEARCH", "tg-1", "NOT_MATCH")));
    let detail = app.api.recorded("tg-1").await;
    assert_eq!(detail.notifications[0].deliveries[0]["status"], "delivered");
}

#[tokio::test]
async fn a_410_gone_disables_the_endpoint_instead_of_retrying() {
    let app = spawn_app("").await;
    app.receiver.answer_with(410);
    app.api.register("tg-1", "ENROLL").await.ok(201);
    app.api
        .event("tg-1", json!({"type": "ENROLLED"}))
        .await
        .ok(200);
    app.receiver
        .wait_until("the attempt answered 410", |all| !all.is_empty())
        .await;
    // The test schedule would retry within 50 ms, and the receiver would now acknowledge it;
    // a disabled endpoint gets nothing more.
    app.receiver.answer_with(200);
    app.receiver.assert_quiet().await;
    assert_eq!(app.receiver.all().len(), 1);
    let endpoint = app.api.endpoint("test").await;
    assert_eq!(endpoint["enabled"], false, "{endpoint}");
    assert_eq!(endpoint["disabled_reason"], "410 Gone", "{endpoint}");
    let detail = app.api.recorded("tg-1").await;
    let delivery = &detail.notifications[0].deliveries[0];
    assert_eq!(
        delivery["status"], "pending",
        "kept for when it is enabled: {delivery}"
    );
    assert_eq!(delivery["attempts"], 1, "{delivery}");
    assert_eq!(delivery["last_status"], 410, "{delivery}");
}

#[tokio::test]
async fn every_post_is_signed_with_the_endpoint_secret() {
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let app = spawn_app(&format!(
        "[[endpoints]]\nid = \"test\"\nurl = \"{{receiver}}\"\nsecret = \"{SECRET}\"\n"
    ))
    .await;
    app.api.register("tg-sig", "UPDATE").await.ok(201);
    app.api
        .event(
            "tg-sig",
            json!({"type": "REVERSE_LATENT_MATCH", "uguid": "ul-1"}),
        )
        .await
        .ok(200);
    app.api
        .event("tg-sig", json!({"type": "ENROLLED"}))
        .await
        .ok(200);
    app.receiver
        .wait_until("two notifications", |all| all.len() >= 2)
        .await;

    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .expect("the secret is base64");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    for r in app.receiver.all() {
        let id = r.webhook_id();
        let timestamp = r.header("webhook-timestamp").expect("webhook-timestamp");
        let ts: i64 = timestamp.parse().expect("integer unix seconds");
        assert!(
            (ts - now).abs() < 300,
            "timestamp {ts} is far from now {now}"
        );

        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(&r.body);
        let expected = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        );
        let signatures = r.header("webhook-signature").expect("webhook-signature");
        assert!(
            signatures.split(' ').any(|s| s == expected),
            "webhook-signature {signatures} does not verify for {}",
            r.text()
        );

        let mut plain = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
        plain.update(&r.body);
        let expected_plain = hex::encode(plain.finalize().into_bytes());
        assert_eq!(
            r.header("x-signature").map(str::to_ascii_lowercase),
            Some(expected_plain),
            "X-Signature of {}",
            r.text()
        );
    }
}
