//! What operators' machinery sees (CONTRACT §6), on the real binary so that the metrics are
//! this service's alone: `/readyz` turning red when the writer or the dispatcher dies and the
//! process exiting for a restart, `/metrics` counting what happened, JSON logs; and readiness while
//! PostgreSQL is cut off.

use std::process::Command;

use serde_json::{json, Value};

use crate::harness::postgres::{self, TestDatabase};
use crate::harness::{eventually, Receiver, ServiceProcess, Setup};

/// The value of the series `series` (name and labels exactly as rendered), if shown.
pub fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

pub async fn scrape(service: &ServiceProcess) -> String {
    let answer = service.api.get("/metrics", None).await;
    assert_eq!(answer.status, 200, "GET /metrics without a token");
    String::from_utf8(answer.body.to_vec()).expect("UTF-8 text")
}

/// Waits for `/readyz` to answer 503 and returns its reason, then for the process to exit
/// with status 3 (for its supervisor to restart it) with the panic in its log.
async fn dies_not_ready_with_status_3(service: ServiceProcess) -> String {
    let reason = eventually("/readyz to turn 503", async || {
        let answer = service.api.get("/readyz", None).await;
        (answer.status == 503).then(|| answer.refused(503, "not_ready"))
    })
    .await;
    let (status, log) = service.exited().await;
    assert_eq!(
        status.code(),
        Some(3),
        "exit status 3 for a restart:\n{log}"
    );
    assert!(log.contains("panicked"), "the panic is logged:\n{log}");
    reason
}

#[tokio::test]
async fn a_writer_that_dies_turns_readiness_red_and_the_process_exits_with_status_3() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("notifier.db");
    // The fault hook of debug builds: a registration of this tguid makes the writer panic.
    let env = [("GBDS_FAULT_WRITER_PANIC_ON", "tg-fatal")];
    let service = ServiceProcess::start_with_env(dir.path(), &db, &receiver.url, "", &env).await;
    service.api.get("/readyz", None).await.ok(200);
    service.api.register("tg-alive", "ENROLL").await.ok(201);

    let answer = service.api.register("tg-fatal", "ENROLL").await;
    let message = answer.refused(503, "store_unavailable");
    assert!(message.contains("unknown"), "{message}");
    let reason = dies_not_ready_with_status_3(service).await;
    assert!(
        reason.contains("writer") && reason.contains("fault hook"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_dispatcher_that_dies_turns_readiness_red_and_the_process_exits_with_status_3() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("notifier.db");
    // The fault hook of debug builds: the task about to send a notification of this tguid
    // panics, as a bug in an attempt would.
    let env = [("GBDS_FAULT_DISPATCHER_PANIC_ON", "tg-fatal")];
    let service = ServiceProcess::start_with_env(dir.path(), &db, &receiver.url, "", &env).await;
    let api = &service.api;
    api.register("tg-alive", "SEARCH").await.ok(201);
    api.event("tg-alive", json!({"type": "MATCH"}))
        .await
        .ok(200);
    receiver
        .wait_until("tg-alive's notification", |all| {
            all.iter().any(|r| r.tguid().as_deref() == Some("tg-alive"))
        })
        .await;
    api.get("/readyz", None).await.ok(200);

    // The writer is unharmed: the write is committed, and only its sending kills.
    api.register("tg-fatal", "SEARCH").await.ok(201);
    api.event("tg-fatal", json!({"type": "MATCH"}))
        .await
        .ok(200);
    let reason = dies_not_ready_with_status_3(service).await;
    assert!(
        reason.starts_with("dispatcher: ") && reason.contains("fault hook"),
        "{reason}"
    );
    assert!(
        receiver.delivered("tg-fatal").is_empty(),
        "the hook fires before the POST"
    );
}

#[tokio::test]
async fn metrics_count_notifications_attempts_and_calls_by_route_template_and_show_backlogs() {
    let receiver = Receiver::start().await;
    let down = Receiver::start().await;
    down.answer_with(500);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("notifier.db");
    // A failed attempt is retried an hour later: the failing endpoint's backlog stays put.
    let endpoints = format!(
        "[delivery]\nretry_schedule = [\"1h\"]\n\
         [[endpoints]]\nid = \"test\"\nurl = \"{{receiver}}\"\n\
         [[endpoints]]\nid = \"down\"\nurl = \"{}\"\n",
        down.url
    );
    let service = ServiceProcess::start(dir.path(), &db, &receiver.url, &endpoints).await;
    let api = &service.api;
    let mut notifications = 0;
    for i in 0..3 {
        let t = format!("tg-metrics-{i}");
        api.register(&t, "ENROLL").await.ok(201);
        api.event(&t, json!({"type": "EXCEPTION"})).await.ok(200);
        api.treatment(&t, json!({"treatment": "DIFFERENT_FINGERS"}))
            .await
            .ok(200);
        notifications += api.recorded(&t).await.notifications.len();
    }
    assert!(notifications >= 3);
    assert_eq!(api.get("/no/such/route", None).await.status, 404);

    let delivered = "gbds_deliveries_total{endpoint=\"test\",outcome=\"delivered\"}";
    let text = eventually(
        "every notification counted as delivered to test",
        async || {
            let text = scrape(&service).await;
            (value(&text, delivered) == Some(notifications as f64)).then_some(text)
        },
    )
    .await;
    assert_eq!(
        value(&text, "gbds_notifications_total"),
        Some(notifications as f64)
    );
    let calls = |text: &str, route: &str, status: u16| {
        value(
            text,
            &format!("gbds_http_requests_total{{route=\"{route}\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(calls(&text, "/v1/transactions", 201), Some(3.0));
    assert_eq!(
        calls(&text, "/v1/transactions/{tguid}/events", 200),
        Some(3.0)
    );
    assert_eq!(
        calls(&text, "/v1/transactions/{tguid}/treatment", 200),
        Some(3.0)
    );
    assert_eq!(calls(&text, "unmatched", 404), Some(1.0));
    assert!(
        !text.contains("tg-metrics"),
        "no label holds a raw path:\n{text}"
    );
    assert!(
        value(
            &text,
            "gbds_deliveries_total{endpoint=\"down\",outcome=\"retry\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "gbds_delivery_backlog{endpoint=\"down\"}"),
        Some(notifications as f64),
        "every notification waits for the failing endpoint, in its queue"
    );
    assert!(
        value(
            &text,
            "gbds_delivery_oldest_pending_age_seconds{endpoint=\"down\"}"
        )
        .is_some_and(|age| age > 0.0),
        "{text}"
    );
    assert!(
        value(&text, "gbds_endpoint_failing_seconds{endpoint=\"down\"}").is_some_and(|s| s > 0.0),
        "{text}"
    );
    let text = eventually("test's backlog to drain", async || {
        let text = scrape(&service).await;
        (value(&text, "gbds_delivery_backlog{endpoint=\"test\"}") == Some(0.0)).then_some(text)
    })
    .await;
    assert_eq!(
        value(
            &text,
            "gbds_delivery_duration_seconds_count{endpoint=\"test\"}"
        ),
        Some(notifications as f64)
    );
    assert!(value(&text, "gbds_store_commit_duration_seconds_count").is_some_and(|n| n >= 1.0));
    assert!(value(&text, "gbds_store_batch_commands_count").is_some_and(|n| n >= 1.0));
    assert_eq!(value(&text, "gbds_ready"), Some(1.0));
    let (status, _) = service.terminate().await;
    assert!(status.success());
}

#[tokio::test]
async fn with_json_logs_every_line_is_an_object_and_a_dead_delivery_names_its_tguid_endpoint_and_webhook_id(
) {
    let receiver = Receiver::start().await;
    receiver.answer_with(500);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("notifier.db");
    let env = [("GBDS_LOG_FORMAT", "json")];
    let one_retry = "[delivery]\nretry_schedule = [\"50ms\"]\n";
    let service =
        ServiceProcess::start_with_env(dir.path(), &db, &receiver.url, one_retry, &env).await;
    service.api.register("tg-json", "SEARCH").await.ok(201);
    service
        .api
        .event("tg-json", json!({"type": "MATCH"}))
        .await
        .ok(200);
    eventually("the delivery to go dead", async || {
        let delivery = service.api.first_delivery("tg-json").await;
        (delivery["status"] == "dead").then_some(())
    })
    .await;
    let webhook_id = receiver.all()[0].webhook_id();
    let (status, log) = service.terminate().await;
    assert!(status.success());

    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) if v.is_object() => v,
            _ => panic!("not a JSON object: {l}"),
        })
        .collect();
    assert!(lines.len() >= 3, "{log}");
    for line in &lines {
        assert!(
            line["timestamp"].is_string()
                && line["level"].is_string()
                && line["message"].is_string(),
            "{line}"
        );
    }
    let dead = lines
        .iter()
        .find(|l| l["message"].as_str().is_some_and(|m| m.contains("dead")))
        .unwrap_or_else(|| panic!("no line about the dead delivery:\n{log}"));
    assert_eq!(
        (
            &dead["tguid"],
            &dead["endpoint"],
            &dead["webhook_id"],
            &dead["level"]
        ),
        (
            &json!("tg-json"),
            &json!("test"),
            &json!(webhook_id),
            &json!("WARN")
        ),
        "{dead}"
    );
}

#[test]
fn a_log_format_that_is_not_text_or_json_is_a_configuration_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = Command::new(env!("CARGO_BIN_EXE_gbds-notifier"))
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("GBDS_LOG_FORMAT", "yaml")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("log.format") && stderr.contains("yaml"),
        "{stderr}"
    );
}

#[tokio::test]
async fn readiness_is_red_while_postgresql_is_unreachable_and_green_again_once_it_is_back() {
    if !postgres::enabled() {
        println!("SKIPPED: a PostgreSQL test; run with GBDS_TEST_STORE=postgres");
        return;
    }
    let database = TestDatabase::new();
    let (mut proxy, url) = database.behind_proxy().await;
    let app = Setup::new(&format!("[store]\npostgres_url = \"{url}\"\n"))
        .start()
        .await;
    app.api.register("tg-ready-1", "SEARCH").await.ok(201);
    app.api.get("/readyz", None).await.ok(200);

    proxy.cut().await;
    // A write meets the outage (the first may still go through a connection being cut).
    eventually("a write to be refused with 503", async || {
        let answer = app.api.register("tg-ready-cut", "SEARCH").await;
        (answer.status == 503).then_some(())
    })
    .await;
    let reason = app.api.get("/readyz", None).await.refused(503, "not_ready");
    assert!(reason.starts_with("store: "), "{reason}");

    proxy.open().await;
    eventually("a write to succeed again", async || {
        let answer = app.api.register("tg-ready-2", "SEARCH").await;
        (answer.status == 201).then_some(())
    })
    .await;
    app.api.get("/readyz", None).await.ok(200);
    app.stop().await;
    drop(database);
}
