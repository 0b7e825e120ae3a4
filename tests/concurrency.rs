//! Readers racing writers never leave a stale value cached; concurrent misses
//! load once; no cache lock is held while a load runs.
//!
//! The races are made deterministic with latches: a test entity on the users
//! table holds its loader inside the database call until the test has done
//! what it needs to, so no test depends on timing.

mod common;

use larder_blog::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::interleave::Latch;
use common::{each_backend, fresh, rename, user, user_in_db};

static RACE_READ: Latch = Latch::new();
static RACE_RELEASE: Latch = Latch::new();
user_entity!(RacingUser, || {
    RACE_READ.open();
    RACE_RELEASE.wait();
});

static FLIGHT_LOADS: AtomicUsize = AtomicUsize::new(0);
static FLIGHT_RELEASE: Latch = Latch::new();
user_entity!(CoalescedUser, || {
    FLIGHT_LOADS.fetch_add(1, Ordering::SeqCst);
    FLIGHT_RELEASE.wait();
});

static STALL_READ: Latch = Latch::new();
static STALL_RELEASE: Latch = Latch::new();
user_entity!(StalledUser, || {
    STALL_READ.open();
    STALL_RELEASE.wait();
});

/// Polls `condition` for up to 30 s.
fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The epoch rule: a reader loads the old row, a writer commits and invalidates
/// before the reader fills. The reader's fill must be dropped. Without the rule
/// the old row stays cached and the last `get` returns it.
#[test]
fn a_reader_racing_a_writer_never_leaves_a_stale_value() {
    each_backend(|target| {
        RACE_READ.reset();
        RACE_RELEASE.reset();
        let db = target.fresh_with(|b| b.entity::<RacingUser>());
        let id = user(&db.store, "old name").id;
        let store = db.store.clone();
        let reader = std::thread::spawn(move || store.repo::<RacingUser>().get(id).unwrap());
        RACE_READ.wait(); // the reader has read "old name" and not yet filled
        let repo = db.store.repo::<RacingUser>();
        repo.update(id, rename("new name")).unwrap();
        RACE_RELEASE.open();
        let raced = reader.join().unwrap().unwrap();

        let seen = repo.get(id).unwrap().unwrap();
        assert_eq!(
            seen.0.name, "new name",
            "a stale fill survived the invalidation"
        );
        assert!(db.store.stats().entity("users").stale_fills_dropped >= 1);
        // The reader read "old name", but the write had cached its row by the
        // time the reader came to fill: it is handed that entry (identity).
        assert!(Arc::ptr_eq(&raced, &seen), "{raced:?} beside {seen:?}");
    });
}

#[test]
fn concurrent_misses_of_one_key_load_it_once() {
    each_backend(|target| {
        FLIGHT_RELEASE.reset();
        FLIGHT_LOADS.store(0, Ordering::SeqCst);
        let db = target.fresh_with(|b| b.entity::<CoalescedUser>().pool_size(8));
        let id = user(&db.store, "ann").id;
        let readers: Vec<_> = (0..6)
            .map(|_| {
                let store = db.store.clone();
                std::thread::spawn(move || store.repo::<CoalescedUser>().get(id).unwrap().unwrap())
            })
            .collect();
        // Every reader has missed (and so is leading or waiting) before the load ends.
        eventually("six misses", || {
            db.store.stats().entity("users").misses >= 6
        });
        FLIGHT_RELEASE.open();
        let values: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        assert_eq!(
            FLIGHT_LOADS.load(Ordering::SeqCst),
            1,
            "misses were not coalesced"
        );
        assert!(values.iter().all(|v| Arc::ptr_eq(v, &values[0])));
    });
}

/// While one load is held inside its database call, other operations on the
/// same cache complete: no cache lock is held across the call. (Were one held,
/// the operations below would wait for the release that comes after them.)
#[test]
fn a_stalled_load_blocks_no_other_cache_operation() {
    each_backend(|target| {
        STALL_READ.reset();
        STALL_RELEASE.reset();
        let db = target.fresh_with(|b| b.entity::<StalledUser>().pool_size(4));
        let ann = user(&db.store, "ann").id;
        let others: Vec<i64> = (0..20)
            .map(|n| user(&db.store, &format!("u{n}")).id)
            .collect();
        let store = db.store.clone();
        let slow = std::thread::spawn(move || store.repo::<StalledUser>().get(ann).unwrap());
        STALL_READ.wait();

        let (done, finished) = mpsc::channel();
        let store = db.store.clone();
        std::thread::spawn(move || {
            let repo = store.repo::<StalledUser>();
            repo.invalidate(ann);
            for &id in &others {
                repo.invalidate(id);
                store.users().update(id, rename("changed")).unwrap();
            }
            done.send(()).unwrap();
        });
        let result = finished.recv_timeout(Duration::from_secs(30));
        STALL_RELEASE.open();
        assert!(
            result.is_ok(),
            "cache operations waited for a load in progress"
        );
        assert!(slow.join().unwrap().is_some());
    });
}

/// Many readers and writers on few keys; afterwards every cached entry must
/// equal its row.
#[test]
fn the_cache_agrees_with_the_database_after_a_read_write_storm() {
    each_backend(|target| {
        let db = target.fresh_with(|b| b.pool_size(4).busy_timeout(Duration::from_secs(30)));
        let ids: Vec<i64> = (0..8)
            .map(|n| user(&db.store, &format!("u{n}")).id)
            .collect();
        let workers: Vec<_> = (0..4)
            .map(|worker| {
                let (store, ids) = (db.store.clone(), ids.clone());
                std::thread::spawn(move || {
                    for n in 0..400usize {
                        let id = ids[(n * 7 + worker) % ids.len()];
                        if worker % 2 == 0 && n % 3 == 0 {
                            store
                                .users()
                                .update(id, rename(&format!("w{worker}-{n}")))
                                .unwrap();
                        } else {
                            store.users().get(id).unwrap();
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        for id in ids {
            if let Some(cached) = db.store.users().cached(id) {
                assert_eq!(
                    Some(cached),
                    user_in_db(&db.store, id),
                    "stale entry for user {id}"
                );
            }
        }
    });
}

#[test]
fn a_store_is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<larder::Store>();
    let db = fresh();
    let id = user(&db.store, "ann").id;
    let store = db.store.clone();
    let from_thread = std::thread::spawn(move || store.users().get(id).unwrap().unwrap());
    assert_eq!(from_thread.join().unwrap().name, "ann");
}

/// A write through one entity invalidates every entity cached from the same table.
#[test]
fn a_write_invalidates_every_entity_of_its_table() {
    each_backend(|target| {
        user_entity!(PlainUser, || ());
        let db = target.fresh_with(|b| b.entity::<PlainUser>());
        let ann = user(&db.store, "ann");
        let plain = db.store.repo::<PlainUser>();
        assert_eq!(plain.get(ann.id).unwrap().unwrap().0.name, "ann");
        db.store.users().update(ann.id, rename("Ann")).unwrap();
        assert_eq!(plain.get(ann.id).unwrap().unwrap().0.name, "Ann");
    });
}
