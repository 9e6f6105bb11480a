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

/// The quick check at start, on the writer's connection before anything is written:
/// `PRAGMA quick_check`, which reads every page of every table and index and checks their
/// structure (not that each index agrees with its table, which the full check does).
/// A damaged page makes it report (or fail with SQLITE_CORRUPT), and the store refuses to
/// open rather than serve from, and write into, a broken file.
pub(super) fn quick(conn: &Connection, path: &Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let found = match findings(conn, &format!("PRAGMA quick_check({MAX_FINDINGS})")) {
        Ok(found) => found,
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
    Ok(started.elapsed())
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
        quick(&conn, &path).expect("a sound file passes the quick check");
        drop(conn);

        let size = std::fs::metadata(&path).unwrap().len();
        zero(&path, size / 2, 64 * 1024);
        let found = full(&path).unwrap();
        assert!(!found.is_empty(), "the full check finds the zeroed pages");
        let conn = Connection::open(&path).unwrap();
        let refused = quick(&conn, &path).unwrap_err().to_string();
        assert!(
            refused.contains("damaged") && refused.contains("n.db"),
            "{refused}"
        );
    }

    #[test]
    fn a_missing_file_is_an_error_and_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.db");
        assert!(full(&path).is_err());
        assert!(!path.exists());
    }
}
