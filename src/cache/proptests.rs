//! The identity map against a model: random sequences of loads, writes,
//! invalidations, loads racing writes, commit-time fills racing other writers,
//! list interning, and reads repeated to make keys popular (so that the
//! admission policy's duels go both ways). After every step, whatever the
//! cache holds must equal what the model's database holds, whatever the
//! policy admitted or turned away, and the shared capacity bound must hold.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::IdentityMap;

const KEYS: i64 = 24;

#[derive(Debug, Clone)]
enum Op {
    Get(i64),
    /// Several gets of one key: it becomes popular in the frequency sketch.
    Popular(i64, u8),
    Write(i64),
    Delete(i64),
    /// A load of the first key during which the second key is written and invalidated.
    GetRacingWrite(i64, i64),
    /// A committed write whose cache fill may be overtaken by another writer.
    WriteThenFill {
        key: i64,
        overtaken: bool,
    },
    /// A list query over keys; `raced` is written between the query and the intern.
    List {
        keys: Vec<i64>,
        raced: Option<i64>,
    },
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS;
    prop_oneof![
        4 => key.clone().prop_map(Op::Get),
        2 => (key.clone(), 2u8..6).prop_map(|(key, n)| Op::Popular(key, n)),
        2 => key.clone().prop_map(Op::Write),
        1 => key.clone().prop_map(Op::Delete),
        2 => (key.clone(), key.clone()).prop_map(|(k, w)| Op::GetRacingWrite(k, w)),
        2 => (key.clone(), any::<bool>()).prop_map(|(key, overtaken)| Op::WriteThenFill { key, overtaken }),
        1 => (proptest::collection::vec(key.clone(), 0..6), proptest::option::of(key))
            .prop_map(|(keys, raced)| Op::List { keys, raced }),
        1 => Just(Op::Clear),
    ]
}

/// The database: a version per live key.
#[derive(Default)]
struct Db {
    rows: HashMap<i64, u64>,
    next: u64,
}

impl Db {
    fn write(&mut self, key: i64) -> u64 {
        self.next += 1;
        self.rows.insert(key, self.next);
        self.next
    }
}

fn step(map: &IdentityMap<u64>, db: &mut Db, op: Op) {
    match op {
        Op::Get(key) => {
            let expected = db.rows.get(&key).copied();
            let got = map
                .get_or_load(key, || Ok::<_, String>(db.rows.get(&key).copied()))
                .unwrap();
            assert_eq!(
                got.as_deref().copied(),
                expected,
                "get({key}) returned a stale value"
            );
        }
        Op::Popular(key, n) => {
            for _ in 0..n {
                step(map, db, Op::Get(key));
            }
        }
        Op::Write(key) => {
            db.write(key);
            map.invalidate(key);
        }
        Op::Delete(key) => {
            db.rows.remove(&key);
            map.invalidate(key);
        }
        Op::GetRacingWrite(key, writer) => {
            map.get_or_load(key, || {
                let read = db.rows.get(&key).copied();
                db.write(writer);
                map.invalidate(writer);
                Ok::<_, String>(read)
            })
            .unwrap();
        }
        Op::WriteThenFill { key, overtaken } => {
            let epoch = map.epoch_of(key);
            let mine = db.write(key);
            if overtaken {
                db.write(key);
                map.invalidate(key);
            }
            map.apply_write(key, Some(&Arc::new(mine)), epoch);
        }
        Op::List { keys, raced } => {
            let epochs = map.epochs();
            let rows: Vec<(i64, u64)> = keys
                .iter()
                .filter_map(|k| db.rows.get(k).map(|v| (*k, *v)))
                .collect();
            if let Some(raced) = raced {
                db.write(raced);
                map.invalidate(raced);
            }
            let ids: HashMap<u64, i64> = rows.iter().map(|(k, v)| (*v, *k)).collect();
            map.intern(rows.iter().map(|(_, v)| *v).collect(), &epochs, |v| ids[v]);
        }
        Op::Clear => map.clear(),
    }
}

fn assert_coherent(map: &IdentityMap<u64>, db: &Db, capacity: usize) {
    for key in 0..KEYS {
        if let Some(cached) = map.peek(key) {
            assert_eq!(
                Some(*cached),
                db.rows.get(&key).copied(),
                "cache holds a stale value of {key}"
            );
        }
    }
    let entries = map.stats().entries as usize;
    assert!(
        entries <= capacity,
        "{entries} entries, capacity {capacity}"
    );
    assert!(map.budget.used() <= capacity);
    assert_eq!(
        map.budget.used(),
        map.units(),
        "the shared budget counts every unit held"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_cache_never_returns_or_keeps_a_stale_value(
        capacity in 1usize..40,
        shards in prop::sample::select(vec![1usize, 2, 4, 16]),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        // Several shards over a small capacity race for its units, as the
        // shards of a large map do.
        let map = IdentityMap::<u64>::with_shards("test", capacity, shards);
        let mut db = Db::default();
        for op in ops {
            step(&map, &mut db, op);
            assert_coherent(&map, &db, capacity);
        }
    }
}
