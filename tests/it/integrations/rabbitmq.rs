//! The RabbitMQ sink against the real broker on 127.0.0.1:5672: it is an endpoint like an HTTP
//! one (same outbox, retries, order per transaction and dead letters), so nothing is lost while
//! the broker cannot be reached. Outages are made with a proxy the test cuts, never by touching
//! the broker.

use std::collections::BTreeMap;

use serde_json::json;

use crate::harness::{
    eventually, operation_status, unique, Consumed, Proxy, Scenario, TestApp, TestQueue, ADMIN,
    REVIEW,
};

/// A sink at `url` publishing to `exchange`, retrying for ~15 s before a delivery is dead.
fn sink_config(url: &str, exchange: &str) -> String {
    let schedule = vec!["\"100ms\""; 150].join(", ");
    format!(
        r#"
[amqp]
enabled = true
url = "{url}"
exchange = "{exchange}"

[delivery]
retry_schedule = [{schedule}]
"#
    )
}

/// The ENROLL-labelled bodies of each transaction, in order.
fn enroll_sequences(runs: &[(String, Scenario)]) -> BTreeMap<String, Vec<String>> {
    runs.iter()
        .map(|(tguid, s)| {
            let bodies = s
                .expected(tguid)
                .into_iter()
                .filter(|b| operation_status(b).0 == "ENROLL")
                .collect();
            (tguid.clone(), bodies)
        })
        .collect()
}

fn by_correlation(messages: &[Consumed]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in messages {
        out.entry(m.correlation_id()).or_default().push(m.text());
    }
    out
}

/// Waits until the sink has failed at least `n` attempts with a connection error.
async fn wait_for_failed_attempts(app: &TestApp, n: i64) {
    eventually(&format!("{n} failed attempts to the broker"), async || {
        let page = app
            .api
            .get(
                "/v1/deliveries?endpoint=rabbitmq&status=failing",
                Some(REVIEW),
            )
            .await
            .ok(200);
        let items = page["items"].as_array().unwrap().clone();
        let attempts: i64 = items.iter().map(|d| d["attempts"].as_i64().unwrap()).sum();
        let all_connection_errors = items.iter().all(|d| {
            let e = d["last_error"].as_str().unwrap_or_default();
            e.contains("connection") || e.contains("timed out") || e.contains("publish failed")
        });
        (attempts >= n && all_connection_errors).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_while_the_broker_is_unreachable_and_everything_arrives_in_order_after() {
    let exchange = unique("gbds.test.outage");
    let mut queue = TestQueue::bind(&exchange, "gbds.enroll.*").await;
    let mut proxy = Proxy::closed();
    let app = super::start(&sink_config(&proxy.url(), &exchange)).await;

    // The endpoint list shows the sink, never the broker password.
    let listed = app.api.get("/v1/endpoints", Some(ADMIN)).await.ok(200);
    let sink = &listed["items"][0];
    assert_eq!(sink["id"], "rabbitmq");
    let url = sink["url"].as_str().unwrap();
    assert!(url.starts_with("amqp://guest:***@127.0.0.1:"), "{url}");

    let names = [
        "enroll_exception_merge_transactions",
        "enroll_pending_approve_enrolled",
        "enroll_reverse_latent_match_twice",
        "update_enrolled",
        "search_match",
    ];
    let first: Vec<(String, Scenario)> = names
        .iter()
        .map(|n| (format!("tg-1-{n}"), Scenario::named(n)))
        .collect();
    for (tguid, s) in &first {
        s.run(&app.api, tguid).await;
    }
    // Refused: attempts fail and are retried on schedule; nothing reached the exchange.
    wait_for_failed_attempts(&app, 8).await;
    assert!(queue.now().await.is_empty());

    proxy.open().await;
    let want = enroll_sequences(&first);
    let total: usize = want.values().map(Vec::len).sum();
    let got = queue.wait_for(&app.api, total).await;
    assert_eq!(got.len(), total, "each once");
    let mut want_nonempty = want.clone();
    want_nonempty.retain(|_, v| !v.is_empty());
    assert_eq!(by_correlation(&got), want_nonempty);
    for m in &got {
        let (op, status) = operation_status(&m.text());
        assert_eq!(
            m.routing_key,
            format!("gbds.{}.{}", op.to_lowercase(), status.to_lowercase())
        );
    }

    // Cut our connection to the broker (the broker runs on), send more, then let it through.
    proxy.cut().await;
    let second: Vec<(String, Scenario)> = names
        .iter()
        .map(|n| (format!("tg-2-{n}"), Scenario::named(n)))
        .collect();
    for (tguid, s) in &second {
        s.run(&app.api, tguid).await;
    }
    wait_for_failed_attempts(&app, 4).await;
    assert_eq!(
        queue.now().await.len(),
        total,
        "nothing got through the cut"
    );
    proxy.open().await;
    let want2 = enroll_sequences(&second);
    let total2: usize = want2.values().map(Vec::len).sum();
    let got = queue.wait_for(&app.api, total + total2).await;
    assert_eq!(got.len(), total + total2, "each once");
    let mut want_all = want_nonempty;
    want_all.extend(want2.into_iter().filter(|(_, v)| !v.is_empty()));
    assert_eq!(by_correlation(&got), want_all);

    // Every delivery to the sink is recorded as delivered; none pending or dead.
    eventually("no pending deliveries to the sink", async || {
        let page = app
            .api
            .get(
                "/v1/deliveries?endpoint=rabbitmq&status=pending",
                Some(REVIEW),
            )
            .await
            .ok(200);
        page["items"].as_array().unwrap().is_empty().then_some(())
    })
    .await;
    let dead = app
        .api
        .get("/v1/deliveries?endpoint=rabbitmq&status=dead", Some(REVIEW))
        .await
        .ok(200);
    assert!(dead["items"].as_array().unwrap().is_empty());
    queue.delete_exchange().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_up_schedule_leaves_dead_letters_that_recover_publishes_in_order() {
    let exchange = unique("gbds.test.dead");
    let mut queue = TestQueue::bind(&exchange, "gbds.#").await;
    let mut proxy = Proxy::closed();
    let app = super::start(&format!(
        r#"
[amqp]
enabled = true
url = "{}"
exchange = "{exchange}"
id = "broker"

[delivery]
retry_schedule = ["50ms", "50ms"]
"#,
        proxy.url()
    ))
    .await;
    let s = Scenario::named("enroll_exception_merge_transactions");
    s.run(&app.api, "tg-dead").await;
    eventually("three dead deliveries", async || {
        let page = app
            .api
            .get("/v1/deliveries?endpoint=broker&status=dead", Some(REVIEW))
            .await
            .ok(200);
        let items = page["items"].as_array().unwrap().clone();
        (items.len() == 3).then_some(items)
    })
    .await
    .iter()
    .for_each(|d| {
        assert_eq!(d["attempts"], 3, "{d}");
        let e = d["last_error"].as_str().unwrap();
        assert!(e.contains("connection"), "{e}");
    });

    proxy.open().await;
    let recovered = app
        .api
        .call(
            "POST",
            "/v1/endpoints/broker/recover",
            Some(REVIEW),
            Some(&json!({ "since": "2000-01-01T00:00:00Z" })),
        )
        .await
        .ok(200);
    assert_eq!(recovered["affected"], 3);
    let got = queue.wait_for(&app.api, 3).await;
    let texts: Vec<String> = got.iter().map(Consumed::text).collect();
    assert_eq!(texts, s.expected("tg-dead"));
    let keys: Vec<&str> = got.iter().map(|m| m.routing_key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "gbds.enroll.exception",
            "gbds.treat_exception.ok",
            "gbds.enroll.enrolled"
        ]
    );
    queue.delete_exchange().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_publishes_only_what_its_subscriptions_match() {
    let exchange = unique("gbds.test.subs");
    let mut queue = TestQueue::bind(&exchange, "#").await;
    let url = crate::harness::broker_url().await;
    let app = super::start(&format!(
        r#"
[amqp]
enabled = true
url = "{url}"
exchange = "{exchange}"
subscriptions = ["*.FAILED", "TREAT_EXCEPTION.*"]
"#
    ))
    .await;
    for name in [
        "enroll_exception_same_fingers",
        "search_match",
        "search_failed",
    ] {
        Scenario::named(name)
            .run(&app.api, &format!("tg-{name}"))
            .await;
    }
    let got = queue.wait_for(&app.api, 3).await;
    let keys: Vec<&str> = got.iter().map(|m| m.routing_key.as_str()).collect();
    assert_eq!(got.len(), 3, "{keys:?}");
    let by = by_correlation(&got);
    assert_eq!(
        by["tg-enroll_exception_same_fingers"],
        Scenario::named("enroll_exception_same_fingers")
            .expected("tg-enroll_exception_same_fingers")[1..]
    );
    assert_eq!(
        by["tg-search_failed"],
        Scenario::named("search_failed").expected("tg-search_failed")
    );
    queue.delete_exchange().await;
}
