//! What a miss costs next to the same primary-key select on a connection the
//! caller already holds: the pool checkout, the single flight and the fill
//! are all larder adds. A checkout pings its connection only when the
//! connection has not proved alive within the last 500 ms, so a miss is one
//! round trip, not two.
//!
//! Runs on SQLite (a temporary file) and, when `LARDER_BENCH_POSTGRES_URL`
//! names a server (its maintenance database, e.g.
//! `postgres://postgres@127.0.0.1:5432/postgres`), on a database it creates
//! there for the run and drops after it. Each has `USERS` users; every
//! measurement names keys from one shuffled list.
//!
//! `cargo bench -p larder --bench miss` ends with the ratios of this run's
//! medians and their targets.

#[path = "shared/estimates.rs"]
mod estimates;
#[path = "shared/seed.rs"]
mod seed;

use estimates::median_ns;
use larder_blog::prelude::*;
use seed::keys;
use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput};
use diesel::prelude::*;
use larder::{Backend, Connection, Store};
use larder_blog::schema::users;
use larder_blog::User;

const USERS: usize = 10_000;

/// One backend's database, its stores and a connection held across calls.
struct Fixture {
    name: &'static str,
    /// Caches every user; a miss is made by invalidating the key first.
    cached: Store,
    /// Caching off: every `get` loads.
    uncached: Store,
    held: Connection,
    ids: Vec<i64>,
}

#[allow(clippy::expect_used)]
fn fixture(name: &'static str, url: &str) -> Fixture {
    let (cached, ids) = seed::users(url, USERS, 5);
    let uncached = larder_blog::builder(url)
        .cache_capacity(0)
        .coherence(false)
        .build()
        .expect("open uncached store");
    Fixture {
        name,
        cached,
        uncached,
        held: Connection::establish(url).expect("connect"),
        ids,
    }
}

#[allow(clippy::expect_used)]
fn misses(c: &mut Criterion, f: &mut Fixture) {
    let mut group = c.benchmark_group(format!("miss-{}", f.name));
    group.throughput(Throughput::Elements(1));
    // The baseline: the select larder's load runs, on a connection held by
    // the caller, so no checkout at all.
    let held = &mut f.held;
    group.bench_function("held-conn-select", |b| {
        let mut next = keys(&f.ids);
        b.iter(|| {
            let id = black_box(next());
            let user =
                larder::with_connection!(&mut *held, |c| users::table.find(id).first::<User>(c))
                    .expect("select");
            black_box(user)
        });
    });
    group.bench_function("larder-capacity-0", |b| {
        let mut next = keys(&f.ids);
        b.iter(|| black_box(f.uncached.users().get(black_box(next())).expect("get")));
    });
    // A miss of a caching store: invalidated first (a few shard-lock
    // operations, measured too), then looked up, loaded and filled.
    group.bench_function("larder-invalidate-get", |b| {
        let mut next = keys(&f.ids);
        b.iter(|| {
            let id = black_box(next());
            f.cached.users().invalidate(id);
            black_box(f.cached.users().get(id).expect("get"))
        });
    });
    group.finish();
}

fn ratios(names: &[&str], since: SystemTime) {
    const TARGET: f64 = 1.10;
    println!("\nratios of this run's medians: a miss / the same select on a held connection");
    for name in names {
        let group = format!("miss-{name}");
        let Some(base) = median_ns(&format!("{group}/held-conn-select"), since) else {
            continue;
        };
        for miss in ["larder-capacity-0", "larder-invalidate-get"] {
            let Some(time) = median_ns(&format!("{group}/{miss}"), since) else {
                continue;
            };
            let ratio = time / base;
            let verdict = if ratio <= TARGET { "met" } else { "MISSED" };
            println!(
                "{name:<9} {miss:<22} {time:>9.1} ns / {base:>9.1} ns = {ratio:.2}x  <= {TARGET:.2}: {verdict}"
            );
        }
    }
}

#[allow(clippy::expect_used)]
fn main() {
    let since = SystemTime::now();
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite_url = format!("sqlite://{}", dir.path().join("miss.db").display());
    let mut names = vec!["sqlite"];
    misses(&mut criterion, &mut fixture("sqlite", &sqlite_url));

    let server = std::env::var("LARDER_BENCH_POSTGRES_URL").ok();
    match server.filter(|_| Backend::Postgres.is_built()) {
        None => eprintln!("note: PostgreSQL skipped: set LARDER_BENCH_POSTGRES_URL"),
        Some(admin) => {
            let url = bench_database(&admin);
            larder::drop_database(&url).expect("drop an old bench database");
            larder::create_database(&url).expect("create the bench database");
            let mut pg = fixture("postgres", &url);
            misses(&mut criterion, &mut pg);
            drop(pg);
            larder::drop_database(&url).expect("drop the bench database");
            names.push("postgres");
        }
    }
    criterion.final_summary();
    ratios(&names, since);
}

/// The server's URL with the bench's own database in place of its own.
fn bench_database(admin: &str) -> String {
    let (base, query) = admin.split_once('?').map_or((admin, ""), |(b, q)| (b, q));
    let (server, _) = base.rsplit_once('/').unwrap_or((base, ""));
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{server}/larder_bench_miss{query}")
}
