//! The pull feed: `GET /v1/notifications?after=<cursor>` gives every notification once, in
//! commit order, behind a cursor that stays valid; a consumer that missed pushes catches up.

use std::collections::{BTreeMap, HashSet};

use crate::harness::{FeedItem, Scenario, INGEST, REVIEW};

/// The document scenarios that run on the default configuration.
fn default_scenarios() -> Vec<Scenario> {
    Scenario::all()
        .into_iter()
        .filter(|s| s.update_operation() == "ENROLL")
        .collect()
}

fn bodies_by_tguid(items: &[FeedItem]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in items {
        out.entry(i.tguid.clone())
            .or_default()
            .push(i.body().to_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_replaying_the_feed_from_cursor_0_sees_every_notification_once_in_order() {
    let app = super::start("").await;
    let scenarios = default_scenarios();
    // All at once, so that transactions' notifications interleave in the commit log.
    let mut runs = tokio::task::JoinSet::new();
    for s in scenarios.clone() {
        let api = app.api.clone();
        runs.spawn(async move { s.run(&api, &format!("tg-{}", s.name)).await });
    }
    while let Some(run) = runs.join_next().await {
        run.expect("a scenario ran");
    }
    let expected: BTreeMap<String, Vec<String>> = scenarios
        .iter()
        .map(|s| {
            (
                format!("tg-{}", s.name),
                s.expected(&format!("tg-{}", s.name)),
            )
        })
        .filter(|(_, e)| !e.is_empty())
        .collect();
    let total: usize = expected.values().map(Vec::len).sum();

    // Small pages, so that paging is exercised.
    let (items, next) = app.api.feed_from("0", 7).await;
    assert_eq!(items.len(), total, "every notification, once");
    assert_eq!(
        bodies_by_tguid(&items),
        expected,
        "each transaction's in order"
    );
    let ids: HashSet<&str> = items.iter().map(|i| i.webhook_id.as_str()).collect();
    assert_eq!(ids.len(), total, "webhook-ids are unique");
    let cursors: HashSet<&str> = items.iter().map(|i| i.cursor.as_str()).collect();
    assert_eq!(cursors.len(), total, "cursors are unique");
    assert_eq!(next, items.last().unwrap().cursor);
    for i in &items {
        let body: serde_json::Value = serde_json::from_str(i.body()).unwrap();
        assert_eq!(
            (body["operation"].as_str(), body["status"].as_str()),
            (Some(i.operation.as_str()), Some(i.status.as_str()))
        );
        assert!(i.created_at.ends_with('Z'), "{}", i.created_at);
    }
    // The feed's order is the order the transactions' own records give (seq per tguid).
    for (tguid, feed_items) in items.iter().fold(BTreeMap::new(), |mut m, i| {
        m.entry(i.tguid.clone()).or_insert_with(Vec::new).push(i);
        m
    }) {
        let seqs: Vec<i64> = feed_items.iter().map(|i| i.seq).collect();
        let want: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, want, "{tguid}");
    }

    // Reading again from any cursor gives exactly what came after it.
    let k = total / 2;
    let (rest, _) = app.api.feed_from(&items[k].cursor, 1000).await;
    let rest_ids: Vec<&str> = rest.iter().map(|i| i.webhook_id.as_str()).collect();
    let want: Vec<&str> = items[k + 1..]
        .iter()
        .map(|i| i.webhook_id.as_str())
        .collect();
    assert_eq!(rest_ids, want);

    // Caught up: nothing new, and the cursor stays where it is.
    let page = app.api.feed_page(&format!("after={next}")).await;
    assert!(page.items.is_empty());
    assert_eq!(page.next_cursor, next);

    // What is committed later comes after the cursor, in order.
    let later = Scenario::named("enroll_exception_merge_transactions");
    later.run(&app.api, "tg-later").await;
    let (new, _) = app.api.feed_from(&next, 100).await;
    let texts: Vec<&str> = new.iter().map(FeedItem::body).collect();
    assert_eq!(texts, later.expected("tg-later"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_filters_by_tguid_operation_and_status_and_refuses_bad_parameters() {
    let app = super::start("").await;
    for name in [
        "enroll_exception_same_fingers",
        "search_failed",
        "enroll_pending_reject",
        "search_match",
    ] {
        Scenario::named(name)
            .run(&app.api, &format!("tg-{name}"))
            .await;
    }
    let page = app
        .api
        .feed_page("tguid=tg-enroll_exception_same_fingers")
        .await;
    let texts: Vec<&str> = page.items.iter().map(FeedItem::body).collect();
    assert_eq!(
        texts,
        Scenario::named("enroll_exception_same_fingers")
            .expected("tg-enroll_exception_same_fingers")
    );
    let page = app.api.feed_page("status=FAILED").await;
    let tguids: Vec<&str> = page.items.iter().map(|i| i.tguid.as_str()).collect();
    assert_eq!(
        tguids,
        [
            "tg-enroll_exception_same_fingers",
            "tg-search_failed",
            "tg-enroll_pending_reject"
        ]
    );
    let page = app.api.feed_page("operation=SEARCH&status=FAILED").await;
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].tguid, "tg-search_failed");
    let page = app.api.feed_page("operation=TREAT_EXCEPTION").await;
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].status, "OK");
    // A filter that matches nothing still says where to continue.
    let page = app.api.feed_page("after=3&operation=UPDATE").await;
    assert!(page.items.is_empty());
    assert_eq!(page.next_cursor, "3");

    for (query, says) in [
        ("after=-1", "after"),
        ("after=x", "after"),
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("operation=ENROLLED", "operation"),
        ("status=ok", "status"),
        ("tguid=a/b", "tguid"),
        ("cursor=1", "unknown query parameter"),
    ] {
        app.api
            .get(&format!("/v1/notifications?{query}"), Some(INGEST))
            .await
            .invalid(says);
    }
    // Any role may read it; no token may not.
    let answer = app.api.get("/v1/notifications", Some("wrong")).await;
    assert_eq!(answer.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_stays_valid_after_retention_deleted_every_notification_it_had_seen() {
    let app = super::start("").await;
    Scenario::named("enroll_enrolled")
        .run(&app.api, "tg-old")
        .await;
    let (seen, cursor) = app.api.feed_from("0", 100).await;
    assert_eq!(seen.len(), 1);

    // The retention job, started with the service and run every second, deletes it with its
    // notification (a final transaction that owes no delivery).
    let dir = app.stop().await;
    let app = super::start_in(
        dir,
        "[retention]\nage = \"0s\"\nschedule = \"* * * * * *\"\n",
    )
    .await;
    crate::harness::eventually("the retention job to delete tg-old", async || {
        let gone = app
            .api
            .get("/v1/transactions/tg-old", Some(REVIEW))
            .await
            .status
            == 404;
        gone.then_some(())
    })
    .await;
    assert!(
        app.api.feed_from("0", 100).await.0.is_empty(),
        "nothing left in the feed"
    );
    // Started again without the job, so that what comes next stays.
    let dir = app.stop().await;
    let app = super::start_in(dir, "").await;
    let fresh = Scenario::named("search_match");
    fresh.run(&app.api, "tg-new").await;
    let (new, _) = app.api.feed_from(&cursor, 100).await;
    let texts: Vec<&str> = new.iter().map(FeedItem::body).collect();
    assert_eq!(
        texts,
        fresh.expected("tg-new"),
        "the new notification is not skipped"
    );
}
