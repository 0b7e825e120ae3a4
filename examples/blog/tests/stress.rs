//! Fault-injection stress: threads run random creates, reads, updates and
//! deletes, some inside transactions of which a share fail, panic or are
//! dropped; a watchdog runs parking_lot's deadlock detector throughout. At the
//! end an audit compares the database and the cache with a model of what
//! should exist.
//!
//! `LARDER_STRESS_OPS` sets the operations per thread (default 2000, which
//! finishes in seconds); `LARDER_STRESS_THREADS` the threads (default 4).

#[path = "../../../tests/common/mod.rs"]
mod common;

use larder_blog::prelude::*;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_pool_idle, each_backend, user_in_db};
use larder::{Error, Store, Tx};
use larder_blog::{NewUser, UserChanges};
const INJECTED: &str = "injected fault";
const DROPPED: &str = "injected drop";

/// SplitMix64: a seeded, reproducible stream of choices for each worker.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n.max(1) as u64) as usize
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    ops: u64,
    committed_txs: u64,
    err_txs: u64,
    panicked_txs: u64,
    dropped_txs: u64,
}

/// What one worker believes exists: its own users, by id, with their names.
/// Workers write disjoint rows, so each model is exact; reads cross them all.
#[derive(Debug, Default)]
struct Model {
    live: HashMap<i64, String>,
}

enum Ending {
    Commit,
    Fail,
    Panic,
    Drop,
}

/// One transaction of 1–3 writes with the given ending; returns the model
/// changes to apply if it commits.
fn transaction(
    store: &Store,
    model: &Model,
    rng: &mut Rng,
    worker: usize,
    seq: &mut u64,
    ending: Ending,
) -> Result<Vec<(i64, Option<String>)>, Error> {
    let tx = store.begin()?;
    let mut changes = Vec::new();
    for _ in 0..1 + rng.below(3) {
        changes.push(random_write(&tx, model, &changes, rng, worker, seq)?);
    }
    match ending {
        Ending::Commit => {
            tx.commit()?;
            Ok(changes)
        }
        Ending::Fail => Err(Error::InvalidConfig {
            reason: INJECTED.into(),
        }),
        Ending::Panic => panic!("{INJECTED}"),
        Ending::Drop => {
            drop(tx);
            Err(Error::InvalidConfig {
                reason: DROPPED.into(),
            })
        }
    }
}

fn live_ids(model: &Model, pending: &[(i64, Option<String>)]) -> Vec<i64> {
    let mut live: HashMap<i64, bool> = model.live.keys().map(|&id| (id, true)).collect();
    for (id, name) in pending {
        live.insert(*id, name.is_some());
    }
    let mut ids: Vec<i64> = live
        .into_iter()
        .filter(|(_, alive)| *alive)
        .map(|(id, _)| id)
        .collect();
    ids.sort_unstable();
    ids
}

fn random_write(
    tx: &Tx<'_>,
    model: &Model,
    pending: &[(i64, Option<String>)],
    rng: &mut Rng,
    worker: usize,
    seq: &mut u64,
) -> Result<(i64, Option<String>), Error> {
    *seq += 1;
    let name = format!("w{worker}-{seq}");
    let ids = live_ids(model, pending);
    let roll = rng.below(10);
    if ids.is_empty() || roll < 4 {
        let created = tx.users().create(NewUser {
            name: name.clone(),
            email: format!("{name}@stress.example"),
        })?;
        return Ok((created.id, Some(name)));
    }
    let id = ids[rng.below(ids.len())];
    if roll < 8 {
        let changes = UserChanges {
            name: Some(name.clone()),
            ..Default::default()
        };
        tx.users().update(id, changes)?;
        Ok((id, Some(name)))
    } else {
        assert!(tx.users().delete(id)?);
        Ok((id, None))
    }
}

fn worker(
    store: Store,
    worker: usize,
    ops: usize,
    all_ids: Arc<parking_lot::Mutex<Vec<i64>>>,
) -> (Model, Tally) {
    let mut rng = Rng(worker as u64 + 1);
    let mut model = Model::default();
    let mut tally = Tally::default();
    let mut seq = 0;
    for _ in 0..ops {
        tally.ops += 1;
        let roll = rng.below(100);
        if roll < 50 {
            // Reads: own rows must match the model exactly.
            let known = { all_ids.lock().clone() };
            if let Some(&id) = known.get(rng.below(known.len())) {
                let got = store.users().get(id).unwrap();
                if let Some(expected) = model.live.get(&id) {
                    assert_eq!(
                        got.map(|u| u.name.clone()).as_ref(),
                        Some(expected),
                        "worker {worker} read a stale user {id}"
                    );
                }
            }
            continue;
        }
        let ending = match roll {
            50..=79 => Ending::Commit,
            80..=89 => Ending::Fail,
            90..=94 => Ending::Panic,
            _ => Ending::Drop,
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            transaction(&store, &model, &mut rng, worker, &mut seq, ending)
        }));
        match result {
            Ok(Ok(changes)) => {
                tally.committed_txs += 1;
                for (id, name) in changes {
                    all_ids.lock().push(id);
                    match name {
                        Some(name) => model.live.insert(id, name),
                        None => model.live.remove(&id),
                    };
                }
            }
            Ok(Err(Error::InvalidConfig { reason })) if reason == INJECTED => tally.err_txs += 1,
            Ok(Err(Error::InvalidConfig { reason })) if reason == DROPPED => tally.dropped_txs += 1,
            Ok(Err(err)) => panic!("worker {worker}: unexpected error {err}"),
            Err(_) => tally.panicked_txs += 1,
        }
    }
    (model, tally)
}

#[test]
fn stress_with_injected_faults_keeps_every_invariant() {
    each_backend(|target| {
        let ops: usize = std::env::var("LARDER_STRESS_OPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000);
        let threads: usize = std::env::var("LARDER_STRESS_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4);
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|s| s == INJECTED);
            if !injected {
                default_hook(info);
            }
        }));

        let db = target.fresh_with(|b| {
            // Coherence on: the watcher's invalidations run beside the workload.
            b.pool_size(4)
                .cache_capacity(64)
                .busy_timeout(Duration::from_secs(60))
                .coherence(true)
        });
        let stop = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut deadlocks = 0;
                while !stop.load(Ordering::SeqCst) {
                    deadlocks += parking_lot::deadlock::check_deadlock().len();
                    std::thread::sleep(Duration::from_millis(50));
                }
                deadlocks
            })
        };
        let all_ids = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let workers: Vec<_> = (0..threads)
            .map(|w| {
                let (store, all_ids) = (db.store.clone(), all_ids.clone());
                std::thread::spawn(move || worker(store, w, ops, all_ids))
            })
            .collect();
        let results: Vec<(Model, Tally)> = workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .collect();
        stop.store(true, Ordering::SeqCst);
        assert_eq!(
            watchdog.join().unwrap(),
            0,
            "parking_lot reported a deadlock"
        );

        // Audit.
        assert_pool_idle(&db.store);
        let mut total = Tally::default();
        let mut live = 0;
        for (model, tally) in &results {
            for (id, name) in &model.live {
                let row = user_in_db(&db.store, *id)
                    .unwrap_or_else(|| panic!("committed user {id} is missing"));
                assert_eq!(&row.name, name, "user {id} lost a committed write");
                if let Some(cached) = db.store.users().cached(*id) {
                    assert_eq!(cached, row, "cached user {id} differs from its row");
                }
            }
            live += model.live.len();
            total.ops += tally.ops;
            total.committed_txs += tally.committed_txs;
            total.err_txs += tally.err_txs;
            total.panicked_txs += tally.panicked_txs;
            total.dropped_txs += tally.dropped_txs;
        }
        // Everything in the database is something a committed transaction wrote.
        let rows = db
            .store
            .users()
            .query(|conn| {
                use diesel::prelude::*;
                larder::with_connection!(conn, |c| larder_blog::schema::users::table.load(c))
            })
            .unwrap();
        assert_eq!(
            rows.len(),
            live,
            "rolled-back writes survived or committed ones vanished"
        );
        for row in &rows {
            if let Some(cached) = db.store.users().cached(row.id) {
                assert_eq!(*cached, **row);
            }
        }
        println!(
            "stress on {}: {threads} threads, {} operations; transactions: {} committed, {} returned Err, {} panicked, {} dropped; {} rows audited; 0 deadlocks",
            target.backend.name(), total.ops, total.committed_txs, total.err_txs, total.panicked_txs, total.dropped_txs, rows.len()
        );
        assert!(
            total.panicked_txs > 0 && total.err_txs > 0 && total.dropped_txs > 0,
            "faults were not injected"
        );
    });
}
