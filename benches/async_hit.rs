//! What a cache hit costs an async caller: through `AsyncRepo::get` (served
//! inline, awaited on a current-thread runtime), through `spawn_blocking`
//! around the sync `get` (what an async application wrote without the async
//! API), and through the sync `get` called directly. Same keys, same store:
//! `USERS` users, all cached, visited in one shuffled order.
//!
//! `cargo bench -p larder --features tokio --bench async_hit` ends with the
//! ratios of this run's medians to the direct sync hit.

#[path = "shared/estimates.rs"]
mod estimates;

use estimates::median_ns;
use larder_blog::prelude::*;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput};
use larder::Store;
use larder_blog::{NewUser, User};
use rand::seq::SliceRandom;
use rand::SeedableRng;

const USERS: usize = 10_000;
const GROUP: &str = "async-hit";

#[allow(clippy::expect_used)]
fn store(url: &str) -> (Store, Vec<i64>) {
    let store = larder_blog::builder(url)
        .cache_capacity(2 * USERS)
        .coherence(false)
        .build()
        .expect("open store");
    larder_blog::migrate(&store).expect("migrate");
    let mut ids = store
        .transaction(|tx| {
            (0..USERS)
                .map(|n| {
                    let new = NewUser {
                        name: format!("user {n}"),
                        email: format!("user{n}@bench.larder"),
                    };
                    tx.users().create(new).map(|user| user.id)
                })
                .collect::<larder::Result<Vec<i64>>>()
        })
        .expect("seed users");
    for &id in &ids {
        store.users().get(id).expect("warm the cache");
    }
    ids.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
    (store, ids)
}

/// An endless walk over `ids`.
fn keys(ids: &[i64]) -> impl FnMut() -> i64 + '_ {
    let mut at = 0;
    move || {
        at = (at + 1) % ids.len();
        ids[at]
    }
}

#[allow(clippy::expect_used)]
fn hits(criterion: &mut Criterion, store: &Store, ids: &[i64]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = criterion.benchmark_group(GROUP);
    group.throughput(Throughput::Elements(1));
    group.bench_function("sync-get", |b| {
        let mut next = keys(ids);
        b.iter(|| black_box(store.users().get(black_box(next())).expect("get")));
    });
    group.bench_function("async-get", |b| {
        let mut next = keys(ids);
        let users = store.async_repo::<User>();
        // One runtime entry for the whole batch: the awaits are what is timed.
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(users.get(black_box(next())).await.expect("get"));
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("spawn-blocking-get", |b| {
        let mut next = keys(ids);
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let store = store.clone();
                    let id = black_box(next());
                    let got = tokio::task::spawn_blocking(move || store.users().get(id))
                        .await
                        .expect("join");
                    black_box(got.expect("get"));
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

fn ratios(since: SystemTime) {
    let Some(base) = median_ns(&format!("{GROUP}/sync-get"), since) else {
        return;
    };
    println!("\nratios of this run's medians to the direct sync hit ({base:.1} ns):");
    for name in ["async-get", "spawn-blocking-get"] {
        if let Some(time) = median_ns(&format!("{GROUP}/{name}"), since) {
            println!("{name:<20} {time:>9.1} ns = {:.2}x", time / base);
        }
    }
}

#[allow(clippy::expect_used)]
fn main() {
    let since = SystemTime::now();
    let mut criterion = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("async_hit.db").display());
    let (store, ids) = store(&url);
    hits(&mut criterion, &store, &ids);
    criterion.final_summary();
    ratios(since);
}
