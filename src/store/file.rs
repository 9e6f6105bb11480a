//! The SQLite file as the operating system sees it: the exclusive lock that makes one process
//! its owner, and the identity (device and inode) of the files the writer has open, compared
//! with what the path names now, so that a file deleted or replaced under the service is
//! noticed before a write to it is acknowledged.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Another process holds the database file: the service must not start on it.
#[derive(Debug, thiserror::Error)]
#[error("the database {db} is in use by another gbds-notifier ({holder}; lock file {lock}): one process per SQLite file")]
pub struct InUse {
    pub db: String,
    pub lock: String,
    /// Who holds it, as far as can be told ("pid 1234", or why that is unknown).
    pub holder: String,
}

/// The lock file beside a database: `<db>.lock`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// An exclusive `flock` on `<db>.lock`, which holds the owner's pid; released when dropped
/// (or when the process dies, however it dies).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Takes the lock without waiting, or says who holds it.
    pub fn take(db: &Path) -> anyhow::Result<FileLock> {
        let path = lock_path(db);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open the lock file {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut held = String::new();
                let _ = file.read_to_string(&mut held);
                let holder = match held.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "holder unknown".to_owned(),
                };
                return Err(InUse {
                    db: db.display().to_string(),
                    lock: path.display().to_string(),
                    holder,
                }
                .into());
            }
            Err(TryLockError::Error(e)) => {
                anyhow::bail!("cannot lock {}: {e}", path.display())
            }
        }
        // The pid is for the operator (and the next instance's refusal); the lock is the flock.
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = writeln!(file, "{}", std::process::id());
        Ok(FileLock { _file: file })
    }
}

/// Device and inode of a file.
type Identity = (u64, u64);

fn identity(path: &Path) -> std::io::Result<Identity> {
    std::fs::metadata(path).map(|m| (m.dev(), m.ino()))
}

/// The files the writer's connection has open (the database and its WAL), as they were when
/// it opened them.
#[derive(Debug)]
pub struct OpenFiles {
    files: Vec<(PathBuf, Identity)>,
}

impl OpenFiles {
    /// Notes the identity of `db` and of its WAL (when there is one), which the writer has open.
    pub fn note(db: &Path) -> std::io::Result<OpenFiles> {
        let mut files = vec![(db.to_owned(), identity(db)?)];
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        if let Ok(id) = identity(&wal) {
            files.push((wal, id));
        }
        Ok(OpenFiles { files })
    }

    /// The database's path.
    pub fn db(&self) -> &Path {
        &self.files[0].0
    }

    /// Whether each path still names the file that was opened; if not, why. A `stat` per
    /// file: cheap beside a COMMIT.
    pub fn check(&self) -> Result<(), String> {
        for (path, opened) in &self.files {
            match identity(path) {
                Ok(now) if now == *opened => {}
                Ok(_) => {
                    return Err(format!(
                        "{} was replaced by another file while the service had it open; \
                         writes to the open file would be lost (restart the service)",
                        path.display()
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(format!(
                        "{} was deleted while the service had it open; writes to it would be \
                         lost (restore the file from a backup, or restart the service)",
                        path.display()
                    ))
                }
                Err(e) => return Err(format!("cannot stat {}: {e}", path.display())),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_database_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("n.db");
        let first = FileLock::take(&db).unwrap();
        let refused = FileLock::take(&db).unwrap_err();
        let in_use = refused.downcast_ref::<InUse>().expect("an InUse error");
        assert_eq!(in_use.holder, format!("pid {}", std::process::id()));
        assert!(refused.to_string().contains("n.db"), "{refused}");
        drop(first);
        FileLock::take(&db).expect("free again once the holder let go");
    }

    #[test]
    fn a_deleted_or_replaced_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("n.db");
        std::fs::write(&db, b"x").unwrap();
        let open = OpenFiles::note(&db).unwrap();
        assert_eq!(open.check(), Ok(()));
        // Replaced: a new file renamed over the path (the old one stays open elsewhere).
        let _held = File::open(&db).unwrap();
        std::fs::write(dir.path().join("new"), b"y").unwrap();
        std::fs::rename(dir.path().join("new"), &db).unwrap();
        assert!(open.check().unwrap_err().contains("replaced"));
        std::fs::remove_file(&db).unwrap();
        assert!(open.check().unwrap_err().contains("deleted"));
    }
}
