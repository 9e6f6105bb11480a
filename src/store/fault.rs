//! Faults a test injects into a running SQLite store (debug builds only): the writer's COMMITs
//! on a database fail with SQLITE_FULL, as on a full disk, until the test lifts the fault.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Whether any fault is set: the writer looks no further when none is (the common case).
static ANY: AtomicBool = AtomicBool::new(false);
static DISK_FULL: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Makes every COMMIT on the database at `db` fail with SQLITE_FULL (`full`), or no longer.
pub fn set_disk_full(db: &Path, full: bool) {
    let mut set = DISK_FULL.lock().unwrap_or_else(|e| e.into_inner());
    set.retain(|p| p != db);
    if full {
        set.push(db.to_owned());
    }
    ANY.store(!set.is_empty(), Ordering::SeqCst);
}

/// The error a COMMIT on `db` must fail with now, if any.
pub(crate) fn commit_fault(db: &Path) -> Option<rusqlite::Error> {
    if !ANY.load(Ordering::SeqCst) {
        return None;
    }
    let set = DISK_FULL.lock().unwrap_or_else(|e| e.into_inner());
    set.iter().any(|p| p == db).then(|| {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full (injected)".to_owned()),
        )
    })
}
