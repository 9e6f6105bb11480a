//! Several instances on one PostgreSQL database (CONTRACT §5): conflicting calls at two
//! instances, a new delivery racing the completion of its queue's head at another instance,
//! an instance killed with deliveries in flight, the database cut off and back, and the pull
//! feed in commit order when commits come out of id order, and the writer analyzing its tables
//! as they grow. Run with `GBDS_TEST_STORE=postgres` (`.ci/run` does); on SQLite each says
//! SKIPPED and passes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::postgres::{self, TestDatabase};
use crate::harness::{
    database_in, eventually, latent_body, status_body, Received, Receiver, ServiceProcess, Setup,
    TestApp, DEADLINE, REVIEW,
};

fn skipped() -> bool {
    if postgres::enabled() {
        return false;
    }
    println!("SKIPPED: a PostgreSQL scale-out test; run with GBDS_TEST_STORE=postgres");
    true
}

/// An instance in this process on the database of `dir`, sending to `receiver` only.
async fn instance(dir: &Arc<tempfile::TempDir>, receiver: &str, extra: &str) -> TestApp {
    Setup::new(&format!(
        "{extra}\n[[endpoints]]\nid = \"shared\"\nurl = \"{receiver}\"\n"
    ))
    .in_dir(dir.clone())
    .start()
    .await
}

async fn two_instances(receiver: &str) -> (TestApp, TestApp) {
    let dir = Arc::new(tempfile::tempdir().expect("a temporary directory"));
    let a = instance(&dir, receiver, "").await;
    let b = instance(&dir, receiver, "").await;
    (a, b)
}

/// The distinct acknowledged bodies of `tguid`, in the order each first arrived.
fn firsts(all: &[Received], tguid: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in all {
        if r.acknowledged() && r.tguid().as_deref() == Some(tguid) && !out.contains(&r.text()) {
            out.push(r.text());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_decisions_at_two_instances_get_exactly_one_200_and_one_409() {
    if skipped() {
        return;
    }
    let rx = Receiver::start().await;
    let (a, b) = two_instances(&rx.url).await;
    for i in 0..20 {
        let t = format!("tg-race-{i}");
        a.api.register(&t, "ENROLL").await.ok(201);
        b.api.event(&t, json!({"type": "PENDING"})).await.ok(200);
        let (reject, approve) = tokio::join!(
            a.api.review(&t, json!({"decision": "REJECT"})),
            b.api.review(&t, json!({"decision": "APPROVE"})),
        );
        let mut statuses = [reject.status, approve.status];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "{t}: {reject:?} / {approve:?}");
        let loser = if reject.status == 409 {
            &reject
        } else {
            &approve
        };
        loser.refused(409, "invalid_transition");
        let state = a.api.detail(&t).await["state"].clone();
        let won = if reject.status == 200 {
            "FAILED"
        } else {
            "PROCESSING"
        };
        assert_eq!(state, won, "{t}: the state follows the winner");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_id_at_two_instances_at_once_is_applied_once() {
    if skipped() {
        return;
    }
    let rx = Receiver::start().await;
    let (a, b) = two_instances(&rx.url).await;
    let mut want = Vec::new();
    for i in 0..20 {
        let t = format!("tg-dup-{i}");
        a.api.register(&t, "SEARCH").await.ok(201);
        let event = json!({"type": "NOT_MATCH", "event_id": "e-1"});
        let (x, y) = tokio::join!(a.api.event(&t, event.clone()), b.api.event(&t, event));
        assert_eq!((x.status, y.status), (200, 200), "{t}: {x:?} / {y:?}");
        let detail = b.api.recorded(&t).await;
        assert_eq!(detail.notifications.len(), 1, "{t}: one notification");
        want.push(t);
    }
    rx.wait_until("every notification", |all| {
        want.iter().all(|t| !firsts(all, t).is_empty())
    })
    .await;
    rx.assert_quiet().await;
    for t in &want {
        let bodies: Vec<String> = rx
            .all()
            .iter()
            .filter(|r| r.tguid().as_deref() == Some(t))
            .map(Received::text)
            .collect();
        assert_eq!(bodies, [status_body("SEARCH", t, "NOT_MATCH")], "{t}");
    }
}

/// The race of `the new delivery of a queue beside the completion of its head`: each event
/// of a transaction goes to the other instance than the one before, while the receiver
/// acknowledges at once, so that one instance queues a notification while the other records
/// the result of the one before it and promotes the next. None may be stranded (never sent)
/// and none may overtake another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_delivery_racing_the_completion_of_its_queue_head_is_never_stranded_nor_overtakes() {
    if skipped() {
        return;
    }
    const TRANSACTIONS: usize = 40;
    const MATCHES: usize = 6;
    let rx = Receiver::start().await;
    let (a, b) = two_instances(&rx.url).await;
    let apis = [a.api.clone(), b.api.clone()];
    let mut tasks = Vec::new();
    for i in 0..TRANSACTIONS {
        let apis = apis.clone();
        tasks.push(tokio::spawn(async move {
            let t = format!("tg-head-{i}");
            apis[i % 2].register(&t, "UPDATE").await.ok(201);
            let mut want = Vec::new();
            for k in 0..MATCHES {
                let uguid = format!("u-{k}");
                apis[(i + k) % 2]
                    .event(&t, json!({"type": "REVERSE_LATENT_MATCH", "uguid": uguid}))
                    .await
                    .ok(200);
                want.push(latent_body("ENROLL", &t, &uguid));
            }
            apis[(i + MATCHES) % 2]
                .event(&t, json!({"type": "ENROLLED"}))
                .await
                .ok(200);
            want.push(status_body("ENROLL", &t, "ENROLLED"));
            (t, want)
        }));
    }
    let mut want: HashMap<String, Vec<String>> = HashMap::new();
    for task in tasks {
        let (t, bodies) = task.await.expect("a flow");
        want.insert(t, bodies);
    }
    let all = rx
        .wait_until("every notification of every transaction", |all| {
            want.iter().all(|(t, w)| firsts(all, t).len() >= w.len())
        })
        .await;
    for (t, w) in &want {
        assert_eq!(&firsts(&all, t), w, "{t}: in order, none missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_never_passes_over_a_notification_that_commits_late() {
    if skipped() {
        return;
    }
    let app = Setup::new("").start().await;
    // Answered once the store is open (its schema made).
    app.api.register("tg-warm-up", "SEARCH").await.ok(201);
    let url = postgres::url_for(&database_in(app.dir.path()));
    // Another writer's transaction takes the lower id and commits last.
    let (late, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("a connection of the test's own");
    tokio::spawn(connection);
    late.batch_execute(
        "BEGIN;
         INSERT INTO notifications (tx, tguid, seq, webhook_id, operation, status, body, created_at)
         VALUES (-2, 'tg-late', 1, 'msg_late', 'SEARCH', 'MATCH',
                 convert_to('{\"operation\":\"SEARCH\",\"tguid\":\"tg-late\",\"status\":\"MATCH\"}', 'UTF8'), 0);",
    )
    .await
    .unwrap();
    app.api.register("tg-early", "SEARCH").await.ok(201);
    app.api
        .event("tg-early", json!({"type": "MATCH"}))
        .await
        .ok(200);
    let (seen, cursor) = app.api.feed_from("0", 100).await;
    assert!(
        seen.is_empty(),
        "nothing after a transaction still open may be read yet: {:?}",
        seen.iter().map(|i| i.body().to_owned()).collect::<Vec<_>>()
    );
    late.batch_execute("COMMIT").await.unwrap();
    // (A write transaction still open anywhere on the server holds the feed back a while.)
    let (seen, cursor) = eventually("the late commit in the feed", async || {
        let page = app.api.feed_from(&cursor, 100).await;
        (!page.0.is_empty()).then_some(page)
    })
    .await;
    let bodies: Vec<&str> = seen.iter().map(|i| i.body()).collect();
    assert_eq!(
        bodies,
        [
            status_body("SEARCH", "tg-late", "MATCH"),
            status_body("SEARCH", "tg-early", "MATCH")
        ],
        "the late commit is read, before what committed after it began"
    );

    // The other way round: a transaction that began first (an older xid) inserts after the
    // service did (a higher id): read first, once committed.
    late.batch_execute("BEGIN; SELECT pg_current_xact_id();")
        .await
        .unwrap();
    app.api.register("tg-middle", "SEARCH").await.ok(201);
    app.api
        .event("tg-middle", json!({"type": "NOT_MATCH"}))
        .await
        .ok(200);
    late.batch_execute(
        "INSERT INTO notifications (tx, tguid, seq, webhook_id, operation, status, body, created_at)
         VALUES (-1, 'tg-began-first', 1, 'msg_first', 'SEARCH', 'MATCH',
                 convert_to('{\"operation\":\"SEARCH\",\"tguid\":\"tg-began-first\",\"status\":\"MATCH\"}', 'UTF8'), 0);",
    )
    .await
    .unwrap();
    let (held_back, same) = app.api.feed_from(&cursor, 100).await;
    assert!(held_back.is_empty() && same == cursor);
    late.batch_execute("COMMIT").await.unwrap();
    let (seen, _) = eventually("the commit that began first in the feed", async || {
        let page = app.api.feed_from(&cursor, 100).await;
        (!page.0.is_empty()).then_some(page)
    })
    .await;
    let bodies: Vec<&str> = seen.iter().map(|i| i.body()).collect();
    assert_eq!(
        bodies,
        [
            status_body("SEARCH", "tg-began-first", "MATCH"),
            status_body("SEARCH", "tg-middle", "NOT_MATCH")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instances_deliveries_are_sent_by_another_once_its_leases_end() {
    if skipped() {
        return;
    }
    const LEASE: &str =
        "[delivery]\nlease = \"3s\"\nrequest_timeout = \"1s\"\nconnect_timeout = \"1s\"\n";
    let rx = Receiver::start().await;
    // Every POST is held past the request timeout until the kill: the first instance has its
    // deliveries in flight when it dies.
    rx.hold_answers_for(Duration::from_secs(60));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("cluster.db");
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(ServiceProcess::start(dir.path(), &db, &rx.url, LEASE).await);
    }
    let doomed = instances.remove(0);
    let mut want = HashMap::new();
    for i in 0..10 {
        let t = format!("tg-orphan-{i}");
        doomed.api.register(&t, "ENROLL").await.ok(201);
        doomed
            .api
            .event(&t, json!({"type": "EXCEPTION"}))
            .await
            .ok(200);
        doomed
            .api
            .post(
                &format!("/v1/transactions/{t}/treatment"),
                Some(REVIEW),
                &json!({"treatment": "DIFFERENT_FINGERS"}),
            )
            .await
            .ok(200);
        want.insert(
            t.clone(),
            vec![
                status_body("ENROLL", &t, "EXCEPTION"),
                crate::harness::treated_body(&t, "DIFFERENT_FINGERS"),
                status_body("ENROLL", &t, "ENROLLED"),
            ],
        );
    }
    rx.wait_until("a POST of every transaction in flight", |all| {
        want.keys()
            .all(|t| all.iter().any(|r| r.tguid().as_deref() == Some(t)))
    })
    .await;
    doomed.kill_9();
    let killed = Instant::now();
    rx.hold_answers_for(Duration::ZERO);
    let all = rx
        .wait_until("every notification, sent by the others", |all| {
            want.iter().all(|(t, w)| firsts(all, t).len() >= w.len())
        })
        .await;
    let resent = killed.elapsed();
    for (t, w) in &want {
        assert_eq!(&firsts(&all, t), w, "{t}: in order, none missing");
    }
    println!("scale-out: a killed instance's deliveries were all delivered {resent:?} after the kill (lease 3 s)");
    for instance in instances {
        let (status, log) = instance.terminate().await;
        assert!(status.success(), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgresql_unreachable_calls_get_503_nothing_acknowledged_is_lost_and_it_recovers() {
    if skipped() {
        return;
    }
    let rx = Receiver::start().await;
    let database = TestDatabase::new();
    let (mut proxy, url) = database.behind_proxy().await;
    let app = Setup::new(&format!(
        "[store]\npostgres_url = \"{url}\"\n[[endpoints]]\nid = \"shared\"\nurl = \"{}\"\n",
        rx.url
    ))
    .start()
    .await;
    let mut acknowledged: Vec<String> = Vec::new();
    let mut refused = 0;
    let call = |i: usize| {
        let api = app.api.clone();
        async move {
            let t = format!("tg-outage-{i}");
            let answer = api.register(&t, "SEARCH").await;
            if answer.status != 201 {
                return (t, answer);
            }
            (t.clone(), api.event(&t, json!({"type": "MATCH"})).await)
        }
    };
    for i in 0..10 {
        let (t, answer) = call(i).await;
        answer.ok(200);
        acknowledged.push(t);
    }
    proxy.cut().await;
    let cut = Instant::now();
    let mut i = 10;
    // Until the outage shows: every answer is a success (committed) or a 503.
    loop {
        let (t, answer) = call(i).await;
        i += 1;
        match answer.status {
            200 => acknowledged.push(t),
            503 => {
                answer.refused(503, "store_unavailable");
                refused += 1;
                if refused >= 5 {
                    break;
                }
            }
            other => panic!("{t}: HTTP {other} while the database is cut off: {answer:?}"),
        }
        assert!(
            cut.elapsed() < DEADLINE,
            "no 503 while the database was cut off"
        );
    }
    proxy.open().await;
    let back = Instant::now();
    loop {
        let (t, answer) = call(i).await;
        i += 1;
        if answer.status == 200 {
            acknowledged.push(t);
            break;
        }
        answer.refused(503, "store_unavailable");
        assert!(back.elapsed() < DEADLINE, "the instance did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "outage: {refused} calls refused with 503; recovered {:?} after the database came back",
        back.elapsed()
    );
    for t in &acknowledged {
        app.api.recorded(t).await;
    }
    let all = rx
        .wait_until("every acknowledged notification", |all| {
            acknowledged.iter().all(|t| !firsts(all, t).is_empty())
        })
        .await;
    for t in &acknowledged {
        assert_eq!(firsts(&all, t), [status_body("SEARCH", t, "MATCH")], "{t}");
    }
    app.stop().await;
    drop(database);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_taken_by_a_commit_whose_answer_was_lost_are_given_back_on_reconnection() {
    if skipped() {
        return;
    }
    // Far longer than any wait here: were the lease not given back, the notification would
    // not be sent for an hour.
    const LONG_LEASE: &str = "[delivery]\nlease = \"1h\"\n";
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("lost-answer.db");
    // The fault hook of debug builds: the batch holding an event of tg-lost commits, then the
    // writer acts as if the connection broke while COMMIT's answer was on its way.
    let env = [("GBDS_FAULT_PG_COMMIT_ANSWER_LOST_ON", "tg-lost")];
    let service = ServiceProcess::start_with_env(dir.path(), &db, &rx.url, LONG_LEASE, &env).await;
    service.api.register("tg-lost", "SEARCH").await.ok(201);
    let event = json!({"type": "MATCH", "event_id": "ev-lost-1"});
    let message = service
        .api
        .event("tg-lost", event.clone())
        .await
        .refused(503, "store_unavailable");
    assert!(message.contains("unknown"), "{message}");

    // It did commit, with the delivery leased to this instance, which never held it.
    let got = rx.at_least(1).await;
    assert_eq!(got[0].text(), status_body("SEARCH", "tg-lost", "MATCH"));
    assert!(
        service
            .log()
            .contains("gave back leases taken by a COMMIT whose outcome was unknown"),
        "{}",
        service.log()
    );
    // Repeating the call, as the 503 says, is safe: its event_id makes it a no-op.
    let repeat = eventually("the repeated call answered", async || {
        let answer = service.api.event("tg-lost", event.clone()).await;
        (answer.status != 503).then_some(answer)
    })
    .await;
    repeat.ok(200);
    rx.settled().await;
    assert_eq!(rx.all().len(), 1, "sent once");
    let (status, log) = service.terminate().await;
    assert!(status.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_analyzes_its_tables_once_it_has_committed_a_thousand_commands() {
    if skipped() {
        return;
    }
    let app = Setup::new("").start().await;
    app.api.register("tg-first", "SEARCH").await.ok(201);
    let url = postgres::url_for(&database_in(app.dir.path()));
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("a connection of the test's own");
    tokio::spawn(connection);
    // `last_analyze` records an explicit ANALYZE only (autovacuum's go to `last_autoanalyze`).
    let analyzed = async || -> i64 {
        client
            .query_one(
                "SELECT count(last_analyze) FROM pg_stat_user_tables
                 WHERE relname IN ('transactions', 'notifications', 'deliveries', 'transitions')",
                &[],
            )
            .await
            .expect("the statistics views answer")
            .get(0)
    };
    assert_eq!(analyzed().await, 0, "nothing analyzed its tables yet");
    for chunk in (0..1000).collect::<Vec<_>>().chunks(50) {
        let calls = chunk.iter().map(|i| {
            let api = app.api.clone();
            async move {
                api.register(&format!("tg-grow-{i}"), "SEARCH")
                    .await
                    .ok(201)
            }
        });
        futures_util::future::join_all(calls).await;
    }
    eventually("the writer's four tables analyzed", async || {
        (analyzed().await == 4).then_some(())
    })
    .await;
}
