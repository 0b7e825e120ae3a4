//! SQLite's write-ahead log stays bounded under larder's writes.
//!
//! SQLite checkpoints its WAL (copies its pages back into the database, after
//! which the next writer starts the log over) only from a write statement
//! stepped to its end. larder's writes are `INSERT/UPDATE … RETURNING`
//! statements; read only as far as their one row, they commit when they are
//! reset, which skips the checkpoint, and the log grew with every write for as
//! long as the store ran (1.1 GB in 8 s of the blog bench's updates, every
//! read looking its pages up in it). Every write is now stepped to its end.

mod common;

use common::{fresh_with, rename, user};
use larder_blog::prelude::*;
use larder_blog::NewUser;

/// How many times the log started over: the checkpoint sequence number in
/// the WAL file's header (bytes 12..16, big-endian).
fn wal_restarts(db: &common::TestDb) -> Option<u32> {
    let wal = std::fs::read(db.dir.path().join("test.db-wal")).ok()?;
    Some(u32::from_be_bytes(wal.get(12..16)?.try_into().ok()?))
}

fn wal_bytes(db: &common::TestDb) -> u64 {
    std::fs::metadata(db.dir.path().join("test.db-wal")).map_or(0, |m| m.len())
}

#[test]
fn autocommitted_writes_let_sqlite_checkpoint_and_restart_the_wal() {
    // No watcher: nothing but these writes touches the database.
    let db = fresh_with(|builder| builder.coherence(false));
    let ann = user(&db.store, "ann");
    let before = wal_restarts(&db).expect("the database is in WAL mode");
    // About four pages a write (the row, the change log): SQLite checkpoints
    // past 1,000 pages, so these would fill some 12,000 pages unchecked.
    for n in 0..1_500 {
        db.store
            .users()
            .create(NewUser {
                name: format!("user {n}"),
                email: format!("user{n}@example.org"),
            })
            .unwrap();
        db.store
            .users()
            .update(ann.id, rename(&format!("ann {n}")))
            .unwrap();
    }
    let after = wal_restarts(&db).expect("a WAL");
    assert!(
        after > before,
        "the WAL never started over ({before} → {after})"
    );
    let bytes = wal_bytes(&db);
    assert!(
        bytes < 16 << 20,
        "the WAL holds {bytes} bytes after 3,000 writes: it is not being checkpointed"
    );
}
