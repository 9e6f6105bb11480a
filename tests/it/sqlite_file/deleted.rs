//! The database file deleted under a running service: no write is acknowledged after that
//! (each gets 503 `store_unavailable`), and the store reports itself not ready, saying why.

use gbds_notifier::domain::{Operation, Tguid};
use gbds_notifier::health::Component;
use gbds_notifier::store::WriteError;

use crate::harness::{database_in, spawn_app, store_with_one_endpoint};

fn remove_database(db: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        let _ = std::fs::remove_file(path);
    }
}

#[tokio::test]
async fn after_the_file_is_deleted_every_write_gets_503_and_nothing_is_acknowledged() {
    if super::skipped() {
        return;
    }
    let app = spawn_app("").await;
    app.api.register("tg-before", "ENROLL").await.ok(201);
    remove_database(&database_in(app.dir.path()));

    let message = app
        .api
        .register("tg-after", "ENROLL")
        .await
        .refused(503, "store_unavailable");
    assert!(message.contains("deleted"), "{message}");
    app.api
        .event("tg-before", serde_json::json!({"type": "ENROLLED"}))
        .await
        .refused(503, "store_unavailable");
    // The probe an orchestrator reads says so, and why.
    let ready = app.api.get("/readyz", None).await;
    assert_eq!(ready.status, 503);
    let reason = ready.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.starts_with("store:") && reason.contains("deleted"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_store_whose_file_was_deleted_refuses_writes_and_is_not_ready() {
    if super::skipped() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("n.db");
    let opened = store_with_one_endpoint(&db).await;
    let store = opened.store;
    let tguid = |t: &str| Tguid::parse(t).expect("a tguid");
    store
        .register(tguid("a"), Operation::Enroll, "test".into())
        .await
        .expect("written while the file is there");
    assert!(store.health.is_ready());

    remove_database(&db);
    let refused = store
        .register(tguid("b"), Operation::Enroll, "test".into())
        .await;
    assert!(
        matches!(refused, Err(WriteError::Unavailable(_))),
        "{refused:?}"
    );
    let reason = store
        .health
        .reason(Component::Store)
        .expect("the store is not ready");
    assert!(
        reason.contains("deleted") && reason.contains("n.db"),
        "{reason}"
    );
    store.shutdown().await;
}
