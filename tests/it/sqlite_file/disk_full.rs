//! A full disk (injected: the writer's COMMITs fail with SQLITE_FULL, a debug-build hook):
//! writes get 503 `store_unavailable` and the store is not ready; a receiver's 200 that could
//! not be recorded is kept, recorded once space returns, and its delivery is not handed out
//! (sent) again; writes are taken again without a restart.

#![cfg(debug_assertions)]

use gbds_notifier::domain::{Input, Operation, Outcome};
use gbds_notifier::health::Component;
use gbds_notifier::store::{fault, Completion, InputRequest};

use super::{app_with_one_write, tguid, writes_get_503, StoreOnFile};
use crate::harness::{database_in, status_body};

#[tokio::test]
async fn writes_on_a_full_disk_get_503_and_are_taken_again_once_there_is_space() {
    if super::skipped() {
        return;
    }
    let app = app_with_one_write().await;
    let db = database_in(app.dir.path());
    fault::set_disk_full(&db, true);
    writes_get_503(&app, "tg-refused", "full").await;

    fault::set_disk_full(&db, false);
    app.api
        .event("tg-before", serde_json::json!({"type": "ENROLLED"}))
        .await
        .ok(200);
    app.receiver
        .expect_exactly(&[status_body("ENROLL", "tg-before", "ENROLLED")])
        .await;
    assert_eq!(
        app.api
            .get("/v1/transactions/tg-refused", Some(crate::harness::ADMIN))
            .await
            .status,
        404,
        "a refused write left nothing"
    );
}

#[tokio::test]
async fn a_200_that_could_not_be_recorded_is_kept_and_its_delivery_is_not_handed_out_again() {
    if super::skipped() {
        return;
    }
    let on_file = StoreOnFile::open().await;
    let (store, db) = (&on_file.store, &on_file.db);
    store
        .apply(InputRequest {
            tguid: tguid("a"),
            input: Input::Outcome(Outcome::Enrolled),
            event_id: None,
            actor: "test".into(),
        })
        .await
        .expect("applied");
    let claimed = store.claim(10).await.deliveries;
    assert_eq!(claimed.len(), 1);
    let sent = &claimed[0];

    // The receiver answered 200; the disk is full when the result is to be recorded.
    fault::set_disk_full(db, true);
    store
        .complete(vec![Completion::Delivered {
            id: sent.id,
            http_status: 200,
        }])
        .await;
    // Commands run in order: once this is answered, the result above has met the full disk.
    on_file.register_is_refused("b").await;
    let reason = store.health.reason(Component::Store).expect("not ready");
    assert!(reason.contains("full"), "{reason}");

    fault::set_disk_full(db, false);
    let again = store.claim(10).await.deliveries;
    assert!(
        again.is_empty(),
        "a delivery its receiver acknowledged was handed out again: {:?}",
        again.iter().map(|d| d.id).collect::<Vec<_>>()
    );
    store
        .register(tguid("b"), Operation::Enroll, "test".into())
        .await
        .expect("written once there is space");
    assert!(store.health.is_ready());
    let delivered: i64 = rusqlite::Connection::open(db)
        .and_then(|c| {
            c.query_row(
                "SELECT count(*) FROM deliveries WHERE status = 'delivered'",
                [],
                |r| r.get(0),
            )
        })
        .expect("the database reads");
    assert_eq!(delivered, 1, "the kept result was recorded");
    store.shutdown().await;
}
