//! Model checking of the cache protocol with shuttle (feature `shuttle`):
//! loads, fills, writes, inserts, list interning, invalidations from other
//! processes and flushes run on threads whose every lock acquisition is a
//! point where the checker may switch threads; thousands of interleavings
//! are explored per scenario, randomly and with PCT (which finds bugs of a
//! given depth with known probability). The database is modelled as a
//! version counter per key; a write bumps it, a load reads it.
//!
//! Checked after every interleaving: no cached entry is older than the
//! database (no stale fill), no reader is served a row older than one it
//! was already served (reads never go back), and, when nothing wrote, every caller got the
//! one cached object (identity); fills racing for the capacity the shards
//! share never overfill the map. A deadlock fails the run by itself.
//!
//! Run: `cargo test --features shuttle --lib cache::model`.

use std::sync::Arc;

use shuttle::sync::Mutex as DbMutex;
use shuttle::thread;

use super::IdentityMap;

/// Interleavings explored per scenario and scheduler: enough to find each
/// bug this model was checked against (see docs/reliability.md)
/// in a few seconds.
const ITERATIONS: usize = 3_000;
/// PCT's bug depth: the number of ordering constraints a bug needs.
const DEPTH: usize = 3;
const KEYS: [i64; 2] = [1, 2];

/// A row: its key and the version it was read or written at.
type Row = (i64, u64);

/// The database: the current version of each key.
#[derive(Default)]
struct Db(DbMutex<[u64; 3]>);

impl Db {
    fn read(&self, key: i64) -> u64 {
        self.0.lock().unwrap()[key as usize]
    }

    /// A committed write: the new version.
    fn write(&self, key: i64) -> u64 {
        let mut versions = self.0.lock().unwrap();
        versions[key as usize] += 1;
        versions[key as usize]
    }
}

fn setup() -> (Arc<IdentityMap<Row>>, Arc<Db>) {
    // Capacity 1 in one shard: fills evict each other, so eviction is explored too.
    (
        Arc::new(IdentityMap::new("model", 1)),
        Arc::new(Db::default()),
    )
}

fn get(map: &IdentityMap<Row>, db: &Db, key: i64) -> Option<Arc<Row>> {
    map.get_or_load(key, || Ok::<_, String>(Some((key, db.read(key)))))
        .expect("the model's loads do not fail")
}

/// A repository update: the epoch read before the statement, applied after commit.
fn update(map: &IdentityMap<Row>, db: &Db, key: i64) {
    let epoch = map.epoch_of(key);
    let version = db.write(key);
    map.apply_write(key, Some(&Arc::new((key, version))), epoch);
}

/// A repository insert: the key is not known before the statement, so every
/// shard's epoch is read before it.
fn insert(map: &IdentityMap<Row>, db: &Db, key: i64) {
    let epochs = map.epochs();
    let version = db.write(key);
    map.apply_write(
        key,
        Some(&Arc::new((key, version))),
        map.epoch_in(&epochs, key),
    );
}

/// A list query over every key.
fn list(map: &IdentityMap<Row>, db: &Db) -> Vec<Arc<Row>> {
    let epochs = map.epochs();
    let rows = KEYS.iter().map(|&key| (key, db.read(key))).collect();
    map.intern(rows, &epochs, |row| row.0)
}

/// Another process commits; the watcher invalidates later.
fn remote_write(map: &IdentityMap<Row>, db: &Db, key: i64) {
    db.write(key);
    map.invalidate(key);
}

fn assert_no_stale_entry(map: &IdentityMap<Row>, db: &Db) {
    for key in KEYS {
        if let Some(cached) = map.peek(key) {
            assert_eq!(
                cached.1,
                db.read(key),
                "key {key}: a stale row stayed cached"
            );
        }
    }
}

fn explore(scenario: fn()) {
    shuttle::check_random(scenario, ITERATIONS);
    shuttle::check_pct(scenario, ITERATIONS, DEPTH);
}

/// Readers, list queries and writers of every kind on two keys.
fn readers_and_writers() {
    let (map, db) = setup();
    let threads = vec![
        {
            let (map, db) = (map.clone(), db.clone());
            thread::spawn(move || {
                get(&map, &db, 1);
                get(&map, &db, 2);
            })
        },
        {
            let (map, db) = (map.clone(), db.clone());
            thread::spawn(move || {
                list(&map, &db);
            })
        },
        {
            let (map, db) = (map.clone(), db.clone());
            thread::spawn(move || update(&map, &db, 1))
        },
        {
            let (map, db) = (map.clone(), db.clone());
            thread::spawn(move || insert(&map, &db, 2))
        },
        {
            let (map, db) = (map.clone(), db.clone());
            thread::spawn(move || {
                remote_write(&map, &db, 2);
                remote_write(&map, &db, 1);
            })
        },
    ];
    for thread in threads {
        thread.join().expect("no model thread panics");
    }
    assert_no_stale_entry(&map, &db);
}

/// Concurrent misses of one key, a list query and a flush: no stale entry, no
/// deadlock, and a waiter whose leader was flushed away loads for itself.
fn misses_and_flushes() {
    let (map, db) = setup();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (map, db) = (map.clone(), db.clone());
            thread::spawn(move || get(&map, &db, 1))
        })
        .collect();
    let flusher = {
        let (map, db) = (map.clone(), db.clone());
        thread::spawn(move || {
            db.write(1);
            map.clear();
        })
    };
    for reader in readers {
        assert!(reader.join().expect("no model thread panics").is_some());
    }
    flusher.join().expect("no model thread panics");
    assert_no_stale_entry(&map, &db);
}

/// Nothing writes: every `get` and the list query hand out one object per key.
fn identity_without_writes() {
    let (map, db) = (
        Arc::new(IdentityMap::new("model", 8)),
        Arc::new(Db::default()),
    );
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (map, db) = (map.clone(), db.clone());
            thread::spawn(move || get(&map, &db, 1))
        })
        .collect();
    let lister = {
        let (map, db) = (map.clone(), db.clone());
        thread::spawn(move || list(&map, &db))
    };
    let mut seen: Vec<Arc<Row>> = readers
        .into_iter()
        .filter_map(|reader| reader.join().expect("no model thread panics"))
        .collect();
    seen.extend(
        lister
            .join()
            .expect("no model thread panics")
            .into_iter()
            .filter(|row| row.0 == 1),
    );
    let cached = map.peek(1).expect("nothing invalidated key 1");
    for row in &seen {
        assert!(
            Arc::ptr_eq(row, &cached),
            "two objects for one unchanged row"
        );
    }
}

/// Another process commits a newer row 1 whose invalidation has not
/// arrived, while a list query that read the older row is still running and
/// a reader caches the newer row, evicts it with key 2, and reads row 1
/// again: the reader never gets an older row 1 than it already got.
fn reads_never_go_back() {
    let (map, db) = setup();
    let lister = {
        let (map, db) = (map.clone(), db.clone());
        thread::spawn(move || {
            list(&map, &db);
        })
    };
    let writer = {
        let db = db.clone();
        thread::spawn(move || {
            db.write(1);
        })
    };
    let reader = thread::spawn(move || {
        let mut newest = 0;
        for key in [1, 2, 1, 2, 1] {
            if let Some(row) = get(&map, &db, key).filter(|row| row.0 == 1) {
                assert!(
                    row.1 >= newest,
                    "row 1 went back from {newest} to {}",
                    row.1
                );
                newest = row.1;
            }
        }
    });
    for thread in [lister, writer, reader] {
        thread.join().expect("no model thread panics");
    }
}

/// Two writers of row 1 commit in turn and apply their writes in any order,
/// while a reader reads row 1 again and again: the reader never gets an
/// older row 1 than it already got (a write applied late must not cache its
/// row over a newer one a load cached meanwhile).
fn writes_applied_late_never_take_a_reader_back() {
    let (map, db) = setup();
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (map, db) = (map.clone(), db.clone());
            thread::spawn(move || update(&map, &db, 1))
        })
        .collect();
    let reader = thread::spawn(move || {
        let mut newest = 0;
        for _ in 0..3 {
            if let Some(row) = get(&map, &db, 1) {
                assert!(
                    row.1 >= newest,
                    "row 1 went back from {newest} to {}",
                    row.1
                );
                newest = row.1;
            }
        }
    });
    for thread in writers.into_iter().chain([reader]) {
        thread.join().expect("no model thread panics");
    }
}

/// Misses of three keys over two shards race for the two units of the
/// capacity the shards share: the map never holds more than its capacity,
/// and the shared count matches what the shards hold.
fn fills_share_the_capacity() {
    let (map, db) = (
        Arc::new(IdentityMap::with_shards("model", 2, 2)),
        Arc::new(Db::default()),
    );
    let readers: Vec<_> = [0, 1, 2]
        .into_iter()
        .map(|key| {
            let (map, db) = (map.clone(), db.clone());
            thread::spawn(move || get(&map, &db, key))
        })
        .collect();
    for reader in readers {
        reader.join().expect("no model thread panics");
    }
    let entries = map.stats().entries as usize;
    assert!(entries <= 2, "{entries} entries in a map of capacity 2");
    assert_eq!(map.budget.used(), map.units(), "the shared count drifted");
}

#[test]
fn no_stale_fill_under_readers_and_writers() {
    explore(readers_and_writers);
}

#[test]
fn no_stale_fill_or_deadlock_under_misses_and_flushes() {
    explore(misses_and_flushes);
}

#[test]
fn one_object_per_unchanged_row() {
    explore(identity_without_writes);
}

#[test]
fn the_shared_capacity_holds_under_racing_fills() {
    explore(fills_share_the_capacity);
}

#[test]
fn a_reader_never_goes_back_to_an_older_row() {
    explore(reads_never_go_back);
}

#[test]
fn a_write_applied_late_never_takes_a_reader_back() {
    explore(writes_applied_late_never_take_a_reader_back);
}
