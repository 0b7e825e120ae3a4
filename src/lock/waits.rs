//! Deadlock detection for SQLite's file locks, which the OS does not detect.
//!
//! A waiter records the key it waits for in `waits/<owner>.wait`, a file it
//! keeps exclusively locked while it waits; a holder writes its owner id
//! into the lock file it holds (see `flock`). A waiter follows the chain
//! "lock → its holder → the lock that holder waits for → …"; reaching
//! itself is a deadlock. Only records whose file is locked count: a file a
//! process left behind when it died (or finished) is unlocked, so its
//! contents are ignored, and so is a lock file that turns out to be free.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::flock::lock_path;

/// Longest chain followed: more holders than this in one cycle is not a
/// case worth a file open per step on every wait.
const MAX_CHAIN: usize = 64;

/// A wait record, locked while it exists; removed when dropped.
#[derive(Debug)]
pub(super) struct Waiting {
    file: File,
    path: PathBuf,
}

impl Waiting {
    /// Records that `owner` waits for `key`.
    pub(super) fn start(dir: &Path, owner: &str, key: i64) -> std::io::Result<Waiting> {
        let waits = dir.join("waits");
        std::fs::create_dir_all(&waits)?;
        let path = waits.join(format!("{owner}.wait"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        // Locked before it is written: a reader that sees it unlocked
        // ignores whatever it holds.
        file.lock()?;
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(key.to_string().as_bytes())?;
        Ok(Waiting { file, path })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// Whether waiting for `key` closes a cycle back to `me`.
pub(super) fn cycle(dir: &Path, key: i64, me: &str) -> bool {
    let mut wanted = key;
    for _ in 0..MAX_CHAIN {
        let Some(holder) = holder_of(dir, wanted) else {
            return false;
        };
        if holder == me {
            return true;
        }
        let Some(next) = waiting_for(dir, &holder) else {
            return false;
        };
        wanted = next;
    }
    false
}

/// The owner holding `key`'s lock, if it is locked and says who.
fn holder_of(dir: &Path, key: i64) -> Option<String> {
    let text = locked_contents(&lock_path(dir, key))?;
    Some(text).filter(|owner| !owner.is_empty())
}

/// The key `owner` waits for, if it is waiting.
fn waiting_for(dir: &Path, owner: &str) -> Option<i64> {
    let path = dir.join("waits").join(format!("{owner}.wait"));
    locked_contents(&path)?.parse().ok()
}

/// The contents of `path` if someone holds it locked; `None` if it is
/// missing, unreadable or free (a free file's contents are stale).
fn locked_contents(path: &Path) -> Option<String> {
    let mut file = File::open(path).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            return None;
        }
        Err(TryLockError::WouldBlock) => {}
        Err(TryLockError::Error(_)) => return None,
    }
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    Some(text)
}
