//! The database file deleted under a running service: no write is acknowledged after that
//! (each gets 503 `store_unavailable`), and the store reports itself not ready, saying why.

use gbds_notifier::health::Component;

use super::{app_with_one_write, writes_get_503, StoreOnFile};
use crate::harness::database_in;

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
    let app = app_with_one_write().await;
    remove_database(&database_in(app.dir.path()));

    writes_get_503(&app, "tg-after", "deleted").await;
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
    let on_file = StoreOnFile::open().await;
    let store = &on_file.store;
    assert!(store.health.is_ready());

    remove_database(&on_file.db);
    on_file.register_is_refused("b").await;
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
