//! The SQLite file under the service: one process per file (a second `serve` exits 2), the
//! file deleted under a running service (writes refused with 503), a full disk (503, results
//! kept and never sent again, recovery without a restart), damage found by `check` and at
//! start, and what `GET /v1/endpoints` and the start-up line say. SQLite only: with
//! `GBDS_TEST_STORE=postgres` each says SKIPPED and passes.

mod damage;
mod deleted;
mod disk_full;
mod endpoints;
mod single;

use std::path::PathBuf;

use gbds_notifier::domain::{Operation, Tguid};
use gbds_notifier::store::{Store, WriteError};

use crate::harness::{postgres, spawn_app, store_with_one_endpoint, TestApp};

fn skipped() -> bool {
    if !postgres::enabled() {
        return false;
    }
    println!("SKIPPED: a test of the SQLite file; it runs without GBDS_TEST_STORE=postgres");
    true
}

/// Runs the binary with `args` until it exits (bounded by the harness deadline); its status,
/// stdout and stderr.
fn run_binary(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    run_binary_with_env(args, &[])
}

/// `run_binary` with the variables `env` set.
fn run_binary_with_env(
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, String, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gbds-notifier"))
        .args(args)
        .env_clear()
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the gbds-notifier binary starts");
    let deadline = std::time::Instant::now() + crate::harness::DEADLINE;
    loop {
        if child
            .try_wait()
            .expect("the child can be waited on")
            .is_some()
        {
            let out = child.wait_with_output().expect("its output");
            return (
                out.status,
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("gbds-notifier {args:?} did not exit within the deadline");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The service with transaction `tg-before` registered while its file is whole: where a test
/// that then takes the file, or the room on its disk, away starts.
async fn app_with_one_write() -> TestApp {
    let app = spawn_app("").await;
    app.api.register("tg-before", "ENROLL").await.ok(201);
    app
}

/// Asserts that the service refuses writes with 503 `store_unavailable`: registering `tguid`
/// (its message naming `why`) and an event on `tg-before` (from `app_with_one_write`).
async fn writes_get_503(app: &TestApp, tguid: &str, why: &str) {
    let message = app
        .api
        .register(tguid, "ENROLL")
        .await
        .refused(503, "store_unavailable");
    assert!(message.contains(why), "{message}");
    app.api
        .event("tg-before", serde_json::json!({"type": "ENROLLED"}))
        .await
        .refused(503, "store_unavailable");
}

/// A store opened directly on a file of its own, with transaction `a` registered while the
/// file is whole: the store-level twin of `app_with_one_write`.
struct StoreOnFile {
    /// Keeps the directory, and with it the file, for as long as the test runs.
    _dir: tempfile::TempDir,
    db: PathBuf,
    store: Store,
}

impl StoreOnFile {
    async fn open() -> StoreOnFile {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = dir.path().join("n.db");
        let store = store_with_one_endpoint(&db).await.store;
        store
            .register(tguid("a"), Operation::Enroll, "test".into())
            .await
            .expect("written while the file is whole");
        StoreOnFile {
            _dir: dir,
            db,
            store,
        }
    }

    /// Asserts that registering `t` is refused with `WriteError::Unavailable`.
    async fn register_is_refused(&self, t: &str) {
        let refused = self
            .store
            .register(tguid(t), Operation::Enroll, "test".into())
            .await;
        assert!(
            matches!(refused, Err(WriteError::Unavailable(_))),
            "{refused:?}"
        );
    }
}

fn tguid(t: &str) -> Tguid {
    Tguid::parse(t).expect("a tguid")
}
