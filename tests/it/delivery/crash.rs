//! SIGKILL in the middle of delivering a backlog, restart on the same database: nothing lost,
//! nothing out of order per transaction, duplicates only for what was in flight. "Lost" is
//! counted once the restarted service's store has nothing left pending, from what the
//! receiver got, so it is not implied by the wait.
//! `GBDS_CRASH_TRANSACTIONS` sets the size (default 1,200 transactions ≈ 2,200 notifications;
//! the figures in the README come from 6,000 ≈ 11,000).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{
    status_body, Api, Received, Receiver, Reply, ServiceProcess, ADMIN, INGEST, REVIEW,
};

/// Deliveries the service may have in flight; bounds the duplicates a kill can cause.
const MAX_IN_FLIGHT: usize = 64;

/// One transaction of the mix: its operation, its calls and the bodies it must produce.
fn flow(
    i: usize,
) -> (
    String,
    &'static str,
    Vec<(&'static str, serde_json::Value)>,
    Vec<String>,
) {
    let t = format!("tg-crash-{i}");
    let treated = |tr: &str| {
        format!(
            r#"{{"operation":"TREAT_EXCEPTION","tguid":"{t}","status":"OK","treatment":"{tr}"}}"#
        )
    };
    let (op, calls, bodies) = match i % 5 {
        0 => (
            "ENROLL",
            vec![("events", json!({"type": "ENROLLED"}))],
            vec![status_body("ENROLL", &t, "ENROLLED")],
        ),
        1 => (
            "ENROLL",
            vec![
                ("events", json!({"type": "EXCEPTION"})),
                ("treatment", json!({"treatment": "DIFFERENT_FINGERS"})),
            ],
            vec![
                status_body("ENROLL", &t, "EXCEPTION"),
                treated("DIFFERENT_FINGERS"),
                status_body("ENROLL", &t, "ENROLLED"),
            ],
        ),
        2 => (
            "UPDATE",
            vec![
                (
                    "events",
                    json!({"type": "REVERSE_LATENT_MATCH", "uguid": "ul-7"}),
                ),
                ("events", json!({"type": "ENROLLED"})),
            ],
            vec![
                format!(
                    r#"{{"operation":"ENROLL","tguid":"{t}","status":"REVERSE_LATENT_MATCH","uguid":"ul-7"}}"#
                ),
                status_body("ENROLL", &t, "ENROLLED"),
            ],
        ),
        3 => (
            "SEARCH",
            vec![("events", json!({"type": "MATCH"}))],
            vec![status_body("SEARCH", &t, "MATCH")],
        ),
        _ => (
            "ENROLL",
            vec![
                ("events", json!({"type": "PENDING"})),
                ("review", json!({"decision": "APPROVE"})),
                ("events", json!({"type": "ENROLLED"})),
            ],
            vec![
                status_body("ENROLL", &t, "PENDING"),
                status_body("ENROLL", &t, "ENROLLED"),
            ],
        ),
    };
    (t, op, calls, bodies)
}

async fn drive(api: Api, range: std::ops::Range<usize>) {
    for i in range {
        let (t, op, calls, _) = flow(i);
        api.register(&t, op).await.ok(201);
        for (path, body) in calls {
            let token = if path == "events" { INGEST } else { REVIEW };
            api.post(&format!("/v1/transactions/{t}/{path}"), Some(token), &body)
                .await
                .ok(200);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_restarted_on_its_database_delivers_everything_in_order() {
    let transactions: usize = std::env::var("GBDS_CRASH_TRANSACTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1200);
    let want: HashMap<String, Vec<String>> = (0..transactions)
        .map(|i| {
            let (t, _, _, b) = flow(i);
            (t, b)
        })
        .collect();
    let total: usize = want.values().map(Vec::len).sum();
    // Acknowledges a third of the backlog quickly, then slowly (50 ms an answer): the kill
    // lands while acknowledgements are flowing and with most of the backlog still owed
    // (checked below), whatever the machine's speed.
    let stop_at = total / 3;
    let answered = Arc::new(AtomicUsize::new(0));
    let resumed = Arc::new(AtomicBool::new(false));
    let rx = Receiver::start().await;
    let (count, go) = (answered.clone(), resumed.clone());
    rx.script(move |_| {
        let fast = go.load(Ordering::SeqCst) || count.fetch_add(1, Ordering::SeqCst) < stop_at;
        Reply {
            status: 200,
            retry_after: None,
            delay: Duration::from_millis(if fast { 1 } else { 50 }),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let schedule = vec!["\"1s\""; 60].join(", ");
    let extra = format!(
        "[delivery]\nretry_schedule = [{schedule}]\njitter = 0.0\nmax_in_flight = {MAX_IN_FLIGHT}\nendpoint_concurrency = 16\n"
    );
    let service = ServiceProcess::start(dir.path(), &db, &rx.url, &extra).await;

    // The backlog builds up while the endpoint is disabled: nothing is attempted, so no retry
    // schedule runs out however long the calls take.
    let enable = |on: bool| {
        let api = service.api.clone();
        async move {
            api.call(
                "PATCH",
                "/v1/endpoints/test",
                Some(ADMIN),
                Some(&json!({ "enabled": on })),
            )
            .await
            .ok(200);
        }
    };
    enable(false).await;
    let mut tasks = Vec::new();
    let per = transactions.div_ceil(8);
    for k in 0..8 {
        let range = (k * per).min(transactions)..((k + 1) * per).min(transactions);
        tasks.push(tokio::spawn(drive(service.api.clone(), range)));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        rx.all().is_empty(),
        "nothing was sent to the disabled endpoint"
    );
    enable(true).await;

    // Acknowledged: answered 200 (an answer still held is not).
    let ok = |h: &Received| h.answered && h.status == 200;
    let distinct = |h: &[Received]| {
        h.iter()
            .filter(|h| ok(h))
            .map(|h| &h.body)
            .collect::<HashSet<_>>()
            .len()
    };
    rx.wait_until("a third of the backlog", |h| {
        h.iter().filter(|h| ok(h)).count() >= stop_at
    })
    .await;
    service.kill_9();
    let killed_at = rx.all().len();
    let at_kill = distinct(&rx.all());
    assert!(
        at_kill < total,
        "the kill landed mid-backlog: {at_kill} of {total} acknowledged"
    );

    resumed.store(true, Ordering::SeqCst);
    let restarted = Instant::now();
    let service = ServiceProcess::start(dir.path(), &db, &rx.url, &extra).await;
    let healthy = restarted.elapsed();
    // Drained as the store sees it: nothing pending, nothing dead. What the receiver got is
    // then compared with what it should have got.
    service.api.settled_within(Duration::from_secs(300)).await;
    let dead = service
        .api
        .get("/v1/deliveries?status=dead", Some(ADMIN))
        .await
        .ok(200);
    assert_eq!(dead["items"], json!([]), "no delivery went dead");
    let received = rx.all();
    // What was answered: (tguid, body, webhook-id, status).
    let hits: Vec<(String, String, String, u16)> = received
        .iter()
        .filter(|h| h.answered)
        .map(|h| {
            let id = h.header("webhook-id").unwrap_or_default().to_owned();
            (h.tguid().unwrap_or_default(), h.text(), id, h.status)
        })
        .collect();
    let drain = restarted.elapsed();
    let (status, _) = service.terminate().await;
    assert!(status.success(), "SIGTERM exits 0, got {status}");

    let mut lost = 0;
    let mut out_of_order = 0;
    let mut by_tguid: HashMap<&str, Vec<&str>> = HashMap::new();
    for (tguid, body, _, status) in &hits {
        if *status == 200 {
            by_tguid.entry(tguid).or_default().push(body);
        }
    }
    let mut acknowledged = 0;
    for (t, bodies) in &want {
        let got = by_tguid.get(t.as_str()).cloned().unwrap_or_default();
        acknowledged += got.len();
        let mut firsts: Vec<&str> = Vec::new();
        for g in &got {
            if !firsts.contains(g) {
                firsts.push(g);
            }
        }
        if bodies.iter().any(|b| !firsts.contains(&b.as_str())) {
            lost += 1;
        } else if firsts != bodies.iter().map(String::as_str).collect::<Vec<_>>() {
            out_of_order += 1;
        }
    }
    let duplicates = acknowledged.saturating_sub(total);
    let mut ids: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (_, body, id, _) in &hits {
        ids.entry(body).or_default().insert(id);
    }
    let unstable_ids = ids.values().filter(|v| v.len() != 1).count();
    println!(
        "crash test: {transactions} transactions, {total} notifications; killed after {at_kill} acknowledged ({killed_at} requests); \
         lost {lost}, out of order {out_of_order}, duplicates {duplicates} (bound {MAX_IN_FLIGHT} in flight + uncommitted), \
         healthy {healthy:?} after restart, drained {:?} after restart",
        drain
    );
    assert_eq!(lost, 0, "transactions that lost a notification");
    assert_eq!(
        out_of_order, 0,
        "transactions whose notifications arrived out of order"
    );
    assert_eq!(
        unstable_ids, 0,
        "notifications re-sent under another webhook-id"
    );
    // A duplicate is a delivery acknowledged whose result was not committed before the kill:
    // at most the POSTs in flight plus the completions queued behind them.
    assert!(duplicates <= 2 * MAX_IN_FLIGHT, "{duplicates} duplicates");
}
