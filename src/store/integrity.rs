//! Whether the SQLite file can be trusted: a quick check when the store opens (it must fit the
//! restart budget), and SQLite's full `PRAGMA integrity_check`, run on a schedule by the
//! service and on demand by `gbds-notifier check`.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

/// Most findings kept from one check: the first ones say what an operator needs to know.
const MAX_FINDINGS: usize = 100;

/// What a check found wrong; empty when the file is sound.
pub type Findings = Vec<String>;

/// Runs an integrity pragma and collects its findings (every row but a lone "ok").
fn findings(conn: &Connection, pragma: &str) -> rusqlite::Result<Findings> {
    let mut found = Vec::new();
    let mut statement = conn.prepare(pragma)?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let line: String = row.get(0)?;
        if line != "ok" {
            found.push(line);
        }
    }
    Ok(found)
}

/// How long the start may spend checking the file before it serves: part of the 1-second
/// restart budget.
pub const START_BUDGET: Duration = Duration::from_millis(500);

/// What the check at start covered.
#[derive(Debug, PartialEq, Eq)]
pub enum Covered {
    /// The whole file, within the budget.
    All(Duration),
    /// Part of it: the budget ran out (a large file); the rest is checked in the background.
    Part,
}

/// The quick check at start, on the writer's connection before anything is written:
/// `PRAGMA quick_check`, which reads every page of every table and index and checks their
/// structure (not that each index agrees with its table, which the full check does). A damaged
/// page makes it report (or fail with SQLITE_CORRUPT), and the store refuses to open rather
/// than serve from, and write into, a broken file. It stops after `budget`: a file too large
/// to read in that time (about 80 MB a second here, see docs/operations.md) is checked on in
/// the background ([`in_background`]).
pub(super) fn quick(conn: &Connection, path: &Path, budget: Duration) -> anyhow::Result<Covered> {
    let started = Instant::now();
    let (done, stop) = std::sync::mpsc::channel::<()>();
    let interrupt = conn.get_interrupt_handle();
    let timer = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(budget) {
            interrupt.interrupt();
        }
    });
    let checked = findings(conn, &format!("PRAGMA quick_check({MAX_FINDINGS})"));
    drop(done);
    let _ = timer.join();
    let found = match checked {
        Ok(found) => found,
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) => {
            return Ok(Covered::Part);
        }
        Err(e) => vec![e.to_string()],
    };
    if !found.is_empty() {
        anyhow::bail!(
            "the database {} is damaged (PRAGMA quick_check): {}; restore it from a backup \
             (see docs/operations.md)",
            path.display(),
            found.join("; ")
        );
    }
    Ok(Covered::All(started.elapsed()))
}

/// The rest of the quick check, for a file the start could not check within its budget: the
/// whole `PRAGMA quick_check` on a read-only connection of its own, on a thread of its own.
/// What it finds goes to `damaged` (the writer refuses writes from then on) and readiness.
pub(super) fn in_background(
    path: &Path,
    damaged: std::sync::Arc<std::sync::OnceLock<String>>,
    health: crate::health::Health,
) {
    let path = path.to_owned();
    let spawned = std::thread::Builder::new()
        .name("store-check".into())
        .spawn(move || {
            let started = Instant::now();
            let checked = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|conn| findings(&conn, &format!("PRAGMA quick_check({MAX_FINDINGS})")));
            let found = match checked {
                Ok(found) => found,
                Err(e) if super::unavailable(&e) => vec![e.to_string()],
                Err(e) => {
                    tracing::error!(db = %path.display(), error = %e, "the quick check could not run");
                    return;
                }
            };
            if found.is_empty() {
                tracing::info!(db = %path.display(), elapsed_ms = started.elapsed().as_millis() as u64, "quick check: ok");
                return;
            }
            let why = format!(
                "the quick check found the database {} damaged: {}; restore it from a backup \
                 (docs/operations.md)",
                path.display(),
                found.join("; ")
            );
            health.fail(crate::health::Component::Store, why.clone());
            let _ = damaged.set(why);
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the quick check");
    }
}

/// SQLite's full `PRAGMA integrity_check` of the file at `path`, on a read-only connection of
/// its own (beside a running writer, it reads one snapshot). `Err` when the file cannot be
/// opened or read at all; `Ok` with the findings otherwise.
pub fn full(path: &Path) -> anyhow::Result<Findings> {
    if !path.exists() {
        anyhow::bail!("{} does not exist", path.display());
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    match findings(&conn, &format!("PRAGMA integrity_check({MAX_FINDINGS})")) {
        Ok(found) => Ok(found),
        // A file too damaged to walk is a finding, not a failure to check.
        Err(e) if super::unavailable(&e) => Ok(vec![e.to_string()]),
        Err(e) => Err(anyhow::anyhow!("cannot check {}: {e}", path.display())),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A database at `path` with a table of `rows` rows and an index on it.
    pub(crate) fn filled(path: &Path, rows: usize) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = DELETE;
             CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
             CREATE INDEX t_v ON t(v);",
        )
        .unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        for i in 0..rows {
            tx.execute("INSERT INTO t (v) VALUES (?1)", [format!("{i:0>200}")])
                .unwrap();
        }
        tx.commit().unwrap();
    }

    /// Zeroes `len` bytes of the file at `offset`, as a failing disk or a stray write would.
    pub(crate) fn zero(path: &Path, offset: u64, len: usize) {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.write_all(&vec![0; len]).unwrap();
    }

    #[test]
    fn a_sound_file_passes_both_checks_and_zeroed_pages_fail_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.db");
        filled(&path, 5_000);
        assert_eq!(full(&path).unwrap(), Vec::<String>::new());
        let conn = Connection::open(&path).unwrap();
        let covered = quick(&conn, &path, Duration::from_secs(60)).unwrap();
        assert!(matches!(covered, Covered::All(_)), "{covered:?}");
        drop(conn);

        let size = std::fs::metadata(&path).unwrap().len();
        zero(&path, size / 2, 64 * 1024);
        let found = full(&path).unwrap();
        assert!(!found.is_empty(), "the full check finds the zeroed pages");
        let conn = Connection::open(&path).unwrap();
        let refused = quick(&conn, &path, Duration::from_secs(60))
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("damaged") && refused.contains("n.db"),
            "{refused}"
        );
    }

    #[test]
    fn damage_the_start_had_no_time_for_is_found_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.db");
        filled(&path, 5_000);
        let size = std::fs::metadata(&path).unwrap().len();
        zero(&path, size / 2, 64 * 1024);
        let damaged = std::sync::Arc::new(std::sync::OnceLock::new());
        let health = crate::health::Health::new();
        in_background(&path, damaged.clone(), health.clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        while damaged.get().is_none() {
            assert!(
                Instant::now() < deadline,
                "the background check found nothing"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(damaged.get().unwrap().contains("damaged"));
        assert!(!health.is_ready());
    }

    #[test]
    fn a_missing_file_is_an_error_and_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.db");
        assert!(full(&path).is_err());
        assert!(!path.exists());
    }
}
