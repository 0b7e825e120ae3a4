//! SQLite: an exclusive `flock` on a file beside the database, which the OS
//! releases when the holding process dies. A SQLite database lives on one
//! host, so every process sharing it sees the same files.
//!
//! `<database>.locks/<key>.lock`: one file per name key, created when the
//! lock is taken and removed by its holder at release, still locked, so that
//! names locked once (one per request, `order-{id}`) leave no file behind.
//! A waiter may have opened the file before its holder removed it: it then
//! takes an orphan, and the next process a new file at the path. So a lock
//! counts as taken only on the file still at its path (`FileLock::take`); an
//! orphan is let go and the path's current file tried instead. While held, a
//! file contains its holder's owner id (for the deadlock detector in
//! `waits`); the contents of an unlocked file are never trusted.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diesel::dsl::sql;
use diesel::sql_types::Binary;
use diesel::{QueryResult, RunQueryDsl, SqliteConnection};

use super::waits::{self, Waiting};

/// Why a file lock was not taken.
#[derive(Debug)]
pub(super) enum Refused {
    /// Still held by another after the wait.
    Timeout,
    /// Its holder waits, through others perhaps, for a lock we hold.
    Deadlock,
    /// The lock directory or file could not be used.
    Io(std::io::Error),
}

impl From<std::io::Error> for Refused {
    fn from(err: std::io::Error) -> Refused {
        Refused::Io(err)
    }
}

/// A held file lock; released by [`release`](FileLock::release) or by
/// closing the file (drop).
#[derive(Debug)]
pub(super) struct FileLock {
    file: File,
    path: PathBuf,
}

/// The directory of the lock files of the database `conn` has open:
/// `<file>.locks` beside the file as SQLite itself names it. Not the URL's
/// path: a symlink to the file, or a URI filename's percent-escapes, open
/// the same database under another name, and processes locking under two
/// names would both hold the "same" lock. SQLite resolves symlinks and
/// decodes escapes, so every process opening the file agrees on its name.
pub(super) fn lock_dir(conn: &mut SqliteConnection) -> QueryResult<PathBuf> {
    // As bytes: a resolved path need not be UTF-8.
    let file: Vec<u8> = diesel::select(sql::<Binary>(
        "(SELECT CAST(file AS BLOB) FROM pragma_database_list WHERE name = 'main')",
    ))
    .get_result(conn)?;
    let mut dir = path_from_bytes(file).into_os_string();
    dir.push(".locks");
    Ok(PathBuf::from(dir))
}

#[cfg(unix)]
fn path_from_bytes(bytes: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

#[cfg(not(unix))]
fn path_from_bytes(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(&bytes).into_owned())
}

pub(super) fn lock_path(dir: &Path, key: i64) -> PathBuf {
    dir.join(format!("{key:016x}.lock"))
}

/// Takes the lock of `key`, waiting up to `timeout` (`None`: not at all)
/// with a short backoff, and looking for a deadlock between tries.
pub(super) fn lock(
    dir: &Path,
    key: i64,
    owner: &str,
    timeout: Option<Duration>,
) -> Result<Option<FileLock>, Refused> {
    std::fs::create_dir_all(dir)?;
    let mut lock = FileLock::open(lock_path(dir, key))?;
    if lock.take()? {
        lock.write_owner(owner)?;
        return Ok(Some(lock));
    }
    let Some(timeout) = timeout else {
        return Ok(None);
    };
    // A timeout past what `Instant` can count (`Duration::MAX`, which
    // `Migrator::lock_timeout` takes) has no deadline: it waits for ever.
    let deadline = Instant::now().checked_add(timeout);
    // Recorded while we wait, so that others' detectors can follow us.
    let _waiting = Waiting::start(dir, owner, key)?;
    let mut pause = Duration::from_millis(1);
    loop {
        let left = deadline.map_or(pause, |d| d.saturating_duration_since(Instant::now()));
        std::thread::sleep(pause.min(left));
        if lock.take()? {
            lock.write_owner(owner)?;
            return Ok(Some(lock));
        }
        if waits::cycle(dir, key, owner) {
            return Err(Refused::Deadlock);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Refused::Timeout);
        }
        pause = (pause * 2).min(Duration::from_millis(8));
    }
}

impl FileLock {
    /// The file at `path`, created if there is none.
    fn open(path: PathBuf) -> std::io::Result<FileLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        Ok(FileLock { file, path })
    }

    /// Locks the file if it is free and still the one at its path. One its
    /// holder removed at release (an orphan no one else locks) is unlocked
    /// and replaced by the path's current file, which is tried at once.
    fn take(&mut self) -> std::io::Result<bool> {
        while self.try_take()? {
            if self.is_current() {
                return Ok(true);
            }
            let _ = self.file.unlock();
            *self = FileLock::open(self.path.clone())?;
        }
        Ok(false)
    }

    fn try_take(&self) -> std::io::Result<bool> {
        match self.file.try_lock() {
            Ok(()) => Ok(true),
            Err(TryLockError::WouldBlock) => Ok(false),
            Err(TryLockError::Error(err)) => Err(err),
        }
    }

    fn write_owner(&mut self, owner: &str) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(owner.as_bytes())
    }

    /// Removes the file while it is still locked (a waiter that opened it
    /// lets it go on taking it, see [`take`](FileLock::take)), then unlocks
    /// it. A file no longer at its path is left alone (the path's file is
    /// another's), and one that cannot be removed is emptied instead: its
    /// contents are then stale.
    pub(super) fn release(self) -> std::io::Result<()> {
        let removed = if self.is_current() {
            std::fs::remove_file(&self.path)
        } else {
            Ok(())
        };
        let emptied = removed.or_else(|_| self.file.set_len(0));
        let unlocked = self.file.unlock();
        emptied.and(unlocked)
    }

    /// Whether the locked file is still the one at its path: a lock
    /// directory deleted or replaced (by hand, by a cleanup job) means other
    /// processes now lock another file, and this lock excludes no one.
    pub(super) fn is_current(&self) -> bool {
        match (self.file.metadata(), std::fs::metadata(&self.path)) {
            (Ok(held), Ok(now)) => same_file(&held, &now),
            _ => false,
        }
    }
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[cfg(not(unix))]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.len() == b.len() && a.modified().ok() == b.modified().ok()
}
