//! The review queue: `GET /v1/transactions?state=…` pages through every matching transaction
//! exactly once, in registration order, and refuses bad queries.

use serde_json::{json, Value};

use super::{drive, get, refuse_all};
use crate::harness::{spawn_app, status_body, TestApp, REVIEW};

/// Walks `GET /v1/transactions?{query}` page by page with `limit`, returning every tguid.
async fn walk(app: &TestApp, query: &str, limit: usize) -> (Vec<String>, usize) {
    let mut tguids = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/transactions?{query}&limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = app.api.get(&path, Some(REVIEW)).await.ok(200);
        pages += 1;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= limit, "a page is longer than its limit");
        for item in items {
            tguids.push(item["tguid"].as_str().expect("tguid").to_owned());
        }
        match &page["next_cursor"] {
            Value::String(c) => {
                assert!(!items.is_empty(), "an empty page with a next cursor");
                cursor = Some(c.clone());
            }
            Value::Null => return (tguids, pages),
            other => panic!("next_cursor is neither a string nor null: {other}"),
        }
        assert!(pages < 100, "the pages never end");
    }
}

#[tokio::test]
async fn the_pending_queue_pages_through_every_pending_transaction_exactly_once() {
    let app = spawn_app("").await;
    let mut pending = Vec::new();
    let mut sent = Vec::new();
    for i in 0..9 {
        // Interleave PENDING with every other kind of state.
        let tguid = format!("tg-pend-{i}");
        let op = if i % 2 == 0 { "ENROLL" } else { "UPDATE" };
        drive(&app, &tguid, op, &["PENDING"]).await;
        sent.push(status_body("ENROLL", &tguid, "PENDING"));
        pending.push(tguid);
        let other = format!("tg-other-{i}");
        match i % 4 {
            0 => drive(&app, &other, "SEARCH", &[]).await,
            1 => {
                drive(&app, &other, "ENROLL", &["EXCEPTION"]).await;
                sent.push(status_body("ENROLL", &other, "EXCEPTION"));
            }
            2 => {
                // Was PENDING, approved: back in PROCESSING, out of the queue.
                drive(&app, &other, "UPDATE", &["PENDING"]).await;
                app.api
                    .review(&other, json!({"decision": "APPROVE"}))
                    .await
                    .ok(200);
                sent.push(status_body("ENROLL", &other, "PENDING"));
            }
            _ => {
                drive(&app, &other, "ENROLL", &["PENDING"]).await;
                app.api
                    .review(&other, json!({"decision": "REJECT"}))
                    .await
                    .ok(200);
                sent.push(status_body("ENROLL", &other, "PENDING"));
                sent.push(status_body("ENROLL", &other, "FAILED"));
            }
        }
    }
    for limit in [1, 2, 4, 9, 100] {
        let (seen, pages) = walk(&app, "state=PENDING", limit).await;
        assert_eq!(
            seen, pending,
            "limit {limit}: every PENDING transaction once, in registration order"
        );
        assert_eq!(
            pages,
            9usize.div_ceil(limit).max(1),
            "limit {limit}: page count"
        );
    }
    let (updates, _) = walk(&app, "state=PENDING&operation=UPDATE", 2).await;
    let want: Vec<String> = pending
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, t)| t.clone())
        .collect();
    assert_eq!(updates, want);
    let (exceptions, _) = walk(&app, "state=EXCEPTION", 2).await;
    assert_eq!(
        exceptions,
        vec!["tg-other-1".to_owned(), "tg-other-5".to_owned()]
    );

    // Deciding one takes it out of the queue; the rest are still walked exactly once.
    app.api
        .review("tg-pend-4", json!({"decision": "REJECT"}))
        .await
        .ok(200);
    sent.push(status_body("ENROLL", "tg-pend-4", "FAILED"));
    let (seen, _) = walk(&app, "state=PENDING", 3).await;
    let rest: Vec<String> = pending
        .iter()
        .filter(|t| *t != "tg-pend-4")
        .cloned()
        .collect();
    assert_eq!(seen, rest);

    // Bad queries are 422 and list nothing.
    let bad_queries = [
        "state=WAITING",
        "operation=DELETE",
        "limit=0",
        "limit=1001",
        "limit=x",
        "cursor=-1",
        "cursor=abc",
        "sort=tguid",
    ];
    let rows = bad_queries
        .iter()
        .map(|bad| get(format!("/v1/transactions?{bad}"), Some(REVIEW)).is(422, "invalid_request"))
        .collect();
    refuse_all(&app, rows).await;
    app.receiver.expect_exactly(&sent).await;
}
