//! What a cache hit costs an async caller: through `AsyncRepo::get` (served
//! inline, awaited on a current-thread runtime), through `spawn_blocking`
//! around the sync `get` (what an async application wrote without the async
//! API), and through the sync `get` called directly. Same keys, same store:
//! `USERS` users, all cached, visited in one shuffled order.
//!
//! `cargo bench -p larder --features tokio --bench async_hit` ends with the
//! ratios of this run's medians to the direct sync hit, then with the same
//! ratios measured in interleaved rounds (each round times the three ways
//! back to back; the median of the rounds' ratios), which a machine busy
//! with other work disturbs far less than three medians taken seconds apart.

#[path = "shared/estimates.rs"]
mod estimates;
#[path = "shared/seed.rs"]
mod seed;

use estimates::median_ns;
use larder_blog::prelude::*;
use seed::keys;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput};
use larder::Store;
use larder_blog::User;

const USERS: usize = 10_000;
const GROUP: &str = "async-hit";

#[allow(clippy::expect_used)]
fn store(url: &str) -> (Store, Vec<i64>) {
    let (store, ids) = seed::users(url, USERS, 7);
    for &id in &ids {
        store.users().get(id).expect("warm the cache");
    }
    (store, ids)
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

/// Times `n` calls of `one`, in ns per call.
fn per_call(n: u32, mut one: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        one();
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The three ways timed back to back in each of `ROUNDS` rounds; prints the
/// median of each way's per-round ratio to the direct sync hit.
#[allow(clippy::expect_used)]
fn interleaved(store: &Store, ids: &[i64]) {
    const ROUNDS: usize = 41;
    const HITS: u32 = 20_000;
    const HOPS: u32 = 500;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let users = store.async_repo::<User>();
    // One walk over the keys, shared by the three ways.
    let at = std::cell::Cell::new(0);
    let next = || {
        at.set((at.get() + 1) % ids.len());
        ids[at.get()]
    };
    let (mut sync, mut inline, mut hop) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let hopped = runtime.block_on(async {
            let start = Instant::now();
            for _ in 0..HOPS {
                let store = store.clone();
                let id = black_box(next());
                let got = tokio::task::spawn_blocking(move || store.users().get(id))
                    .await
                    .expect("join");
                black_box(got.expect("get"));
            }
            start.elapsed().as_nanos() as f64 / f64::from(HOPS)
        });
        let direct = || {
            per_call(HITS, || {
                black_box(store.users().get(black_box(next())).expect("get"));
            })
        };
        let awaited = || {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..HITS {
                    black_box(users.get(black_box(next())).await.expect("get"));
                }
                start.elapsed().as_nanos() as f64 / f64::from(HITS)
            })
        };
        // Each goes first in every other round: neither gains from the order.
        let (direct, awaited) = if round % 2 == 0 {
            let direct = direct();
            (direct, awaited())
        } else {
            let awaited = awaited();
            (direct(), awaited)
        };
        inline.push(awaited / direct);
        hop.push(hopped / direct);
        sync.push(direct);
    }
    println!("\ninterleaved, {ROUNDS} rounds: median per-round ratio to the direct sync hit (median {:.1} ns):", median(sync));
    println!("{:<20} {:.2}x", "async-get", median(inline));
    println!("{:<20} {:.2}x", "spawn-blocking-get", median(hop));
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
    // Not in `--test` mode (CI's smoke run of the benches): it only measures.
    if !std::env::args().any(|arg| arg == "--test") {
        interleaved(&store, &ids);
    }
}
