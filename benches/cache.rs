//! larder's costs next to the alternatives, on the same data in one run.
//!
//! A migrated SQLite file in a temporary directory holds `USERS` users, all of
//! them cached. Measured side by side:
//!
//! - `hit`: `store.users().get(id)` of a cached key; the floor, a bare
//!   `parking_lot::Mutex<lru::LruCache<i64, Arc<User>>>`; the same floor split
//!   into 16 shards as larder splits its map (`lru-mutex-16`, to tell what
//!   sharding itself costs from what larder's path adds); a peer cache,
//!   `moka::sync::Cache<i64, Arc<User>>`; each with 1, 2 and 4 threads;
//! - `miss`: a plain diesel + r2d2 point select by primary key against larder's
//!   miss (a store with caching off, and invalidate-then-get on a cached store);
//! - `update`: `store.users().update` against a plain diesel update of the same row;
//! - `repo`: what finding an entity's repository costs on each call: the blog's
//!   `store.users()`, an application entity declared with `larder::entity!`
//!   (`store.repo::<Note>()`), a hand-written entity without a slot (found by
//!   type), and a repository held across calls (no lookup at all).
//!
//! Every `get`, select and update names a key from one shuffled list of the
//! users' ids. Times are per operation; single-threaded benchmarks run on
//! criterion's thread, and for the 2- and 4-thread `hit` benchmarks they are
//! wall-clock time divided by the operations all threads did, so the reported
//! throughput is the aggregate. The machine this was written on has 2
//! cores (and is shared): the 4-thread numbers measure behaviour under
//! oversubscription, not scaling.
//!
//! `cargo bench -p larder --bench cache` (about a minute once built) ends with a
//! table of ratios of this run's medians and the targets they are held to.

#[path = "shared/estimates.rs"]
mod estimates;

use estimates::median_ns;
use larder_blog::prelude::*;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use criterion::{Bencher, BenchmarkId, Criterion, Throughput};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection};
use diesel::SqliteConnection;
use larder::{Connection, Entity, Store};
use larder_blog::schema::users;
use larder_blog::{NewUser, User, UserChanges};
use lru::LruCache;
use parking_lot::Mutex;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::SeedableRng;

/// Users in the database, every one of them cached for the hit benchmarks.
const USERS: usize = 10_000;
/// Capacity of every cache under test: larger than `USERS`, so nothing is
/// evicted (and moka's admission policy has no reason to reject an insert).
const CAPACITY: usize = 16_384;
/// Keys in the hit benchmarks' random stream: 100 draws per user.
const STREAM: usize = 1 << 20;
/// Thread counts of the hit benchmarks. The machine has 2 cores.
const THREADS: [usize; 3] = [1, 2, 4];
/// Shards of the sharded floor: as many as a larder map has.
const FLOOR_SHARDS: usize = 16;

/// The sharded floor's shard of `id`: the multiplicative hash larder's
/// identity map uses, so that both spread the keys alike.
fn floor_shard(id: i64) -> usize {
    ((id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & (FLOOR_SHARDS - 1)
}

type RawPool = r2d2::Pool<ConnectionManager<SqliteConnection>>;

diesel::table! { notes (id) { id -> BigInt, body -> Text } }

/// An application's own entity, declared the way an application declares one.
#[derive(Debug, Queryable)]
#[allow(dead_code)] // read only through Debug: the benchmark measures lookups
struct Note {
    id: i64,
    body: String,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = notes)]
struct NewNote {
    body: String,
}

#[derive(Debug, AsChangeset, Default)]
#[diesel(table_name = notes)]
struct NoteChanges {
    body: Option<String>,
}

larder::entity!(Note {
    table: notes,
    new: NewNote,
    changes: NoteChanges
});

/// A hand-written entity on the users table with no `entity_slot!`: its
/// repository is found by type, the slower fallback.
#[derive(Debug)]
struct UnslottedUser(User);

impl Entity for UnslottedUser {
    const TABLE: &'static str = "users";
    type New = NewUser;
    type Changes = UserChanges;

    fn id(&self) -> i64 {
        self.0.id
    }

    fn find(conn: &mut Connection, id: i64) -> QueryResult<Option<Self>> {
        Ok(User::find(conn, id)?.map(UnslottedUser))
    }

    fn insert(conn: &mut Connection, new: &NewUser) -> QueryResult<Self> {
        User::insert(conn, new).map(UnslottedUser)
    }

    fn update(conn: &mut Connection, id: i64, changes: &UserChanges) -> QueryResult<Option<Self>> {
        Ok(User::update(conn, id, changes)?.map(UnslottedUser))
    }

    fn delete(conn: &mut Connection, id: i64) -> QueryResult<bool> {
        User::delete(conn, id)
    }
}

/// The same per-connection setup larder's pool does, so that the plain diesel
/// numbers differ from larder's only by what larder adds. `synchronous = NORMAL`
/// matters for the update comparison: larder sets it, and in WAL mode it decides
/// whether every commit waits for an fsync.
#[derive(Debug)]
struct Pragmas;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for Pragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(
            "PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; \
             PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

struct Fixture {
    /// Keeps the database file alive for the whole run.
    _dir: tempfile::TempDir,
    /// Caches every user.
    store: Store,
    /// The same file with caching off: every `get` loads.
    uncached: Store,
    /// A plain r2d2 pool of diesel connections on the same file.
    pool: RawPool,
    /// Every user's id, shuffled: the order all benchmarks walk the keys in.
    ids: Vec<i64>,
    /// What the hit benchmarks walk: ids drawn at random, with repeats. A
    /// walk of one permutation over and over reads each structure's least
    /// recent entry next, whose node the previous lookup's unlink just wrote:
    /// the bare floor then finds it in L1, while larder's 16 shards do not.
    stream: Vec<i64>,
    floor: Mutex<LruCache<i64, Arc<User>>>,
    /// The floor in 16 shards, a key's shard picked as larder picks it.
    sharded_floor: Vec<Mutex<LruCache<i64, Arc<User>>>>,
    moka: moka::sync::Cache<i64, Arc<User>>,
}

#[allow(clippy::expect_used)]
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        // One process: no watcher, whose echo of the seeding inserts would
        // invalidate entries while they are being cached.
        let store = larder_blog::builder(&url)
            .cache_capacity(CAPACITY)
            .coherence(false)
            .build()
            .expect("open store");
        larder_blog::migrate(&store).expect("migrate");
        let mut conn = Connection::establish(&url).expect("connect");
        conn.batch_execute(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY NOT NULL, body TEXT NOT NULL)",
        )
        .expect("create notes");
        let mut ids = store
            .transaction(|tx| {
                (0..USERS)
                    .map(|n| {
                        let user = tx.users().create(NewUser {
                            name: format!("user {n}"),
                            email: format!("user{n}@bench.larder"),
                        })?;
                        Ok(user.id)
                    })
                    .collect::<larder::Result<Vec<i64>>>()
            })
            .expect("seed users");
        ids.shuffle(&mut rand::rngs::SmallRng::seed_from_u64(5));
        // Notes with the users' ids, so every benchmark walks the same keys.
        let values: Vec<String> = ids.iter().map(|id| format!("({id}, 'note')")).collect();
        conn.batch_execute(&format!(
            "INSERT INTO notes (id, body) VALUES {}",
            values.join(",")
        ))
        .expect("seed notes");

        let floor = Mutex::new(LruCache::new(
            NonZeroUsize::new(CAPACITY).expect("non-zero"),
        ));
        // Unbounded, so each shard's table is sized to its entries as
        // larder's regions are: `LruCache::new(CAPACITY)` reserves the whole
        // capacity in every shard, sixteen sparse tables that spread a
        // lookup over 16x the memory and made this floor slow.
        let sharded_floor: Vec<_> = (0..FLOOR_SHARDS)
            .map(|_| Mutex::new(LruCache::unbounded()))
            .collect();
        let moka = moka::sync::Cache::new(CAPACITY as u64);
        for &id in &ids {
            store
                .repo::<Note>()
                .get(id)
                .expect("get note")
                .expect("seeded");
            store
                .repo::<UnslottedUser>()
                .get(id)
                .expect("get")
                .expect("seeded");
            let user = store.users().get(id).expect("get").expect("seeded");
            floor.lock().put(id, Arc::clone(&user));
            sharded_floor[floor_shard(id)]
                .lock()
                .put(id, Arc::clone(&user));
            moka.insert(id, user);
        }
        moka.run_pending_tasks();
        for &id in &ids {
            assert!(
                store.users().cached(id).is_some(),
                "larder caches every user"
            );
            assert!(store.repo::<Note>().cached(id).is_some(), "and every note");
        }
        assert_eq!(moka.entry_count(), USERS as u64, "moka caches every user");
        assert_eq!(floor.lock().len(), USERS, "the floor caches every user");

        // Walk the keys in an order unrelated to the one they were cached in:
        // walked in fill order, the floor's LRU nodes and `Arc`s come from the
        // allocator in the order they are read, and the prefetcher hides its
        // memory stalls while larder's (moved between regions since) pay them.
        ids.shuffle(&mut rand::rngs::SmallRng::seed_from_u64(6));
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let stream: Vec<i64> = (0..STREAM)
            .map(|_| *ids.choose(&mut rng).expect("seeded users"))
            .collect();

        let uncached = Store::builder(&url)
            .cache_capacity(0)
            .build()
            .expect("open uncached store");
        let pool = r2d2::Pool::builder()
            .max_size(8)
            .connection_customizer(Box::new(Pragmas))
            .build(ConnectionManager::<SqliteConnection>::new(
                dir.path().join("bench.db").display().to_string(),
            ))
            .expect("open raw pool");
        Fixture {
            _dir: dir,
            store,
            uncached,
            pool,
            ids,
            stream,
            floor,
            sharded_floor,
            moka,
        }
    })
}

/// Walks `ids` from `start`, wrapping around.
struct Keys<'a> {
    ids: &'a [i64],
    next: usize,
}

impl<'a> Keys<'a> {
    fn new(ids: &'a [i64], start: usize) -> Keys<'a> {
        Keys {
            ids,
            next: start % ids.len(),
        }
    }

    #[inline]
    fn next(&mut self) -> i64 {
        let id = self.ids[self.next];
        self.next += 1;
        if self.next == self.ids.len() {
            self.next = 0;
        }
        id
    }
}

/// Runs `iters` calls of `op` spread over `threads` threads, each walking the
/// keys from its own offset, and returns the wall-clock time from the moment
/// all threads are released to the moment the last one finishes.
fn parallel(threads: usize, iters: u64, ids: &[i64], op: impl Fn(i64) + Sync) -> Duration {
    let start = Barrier::new(threads + 1);
    let began = std::thread::scope(|s| {
        for t in 0..threads {
            let (start, op) = (&start, &op);
            let share = iters / threads as u64 + u64::from((t as u64) < iters % threads as u64);
            s.spawn(move || {
                let mut keys = Keys::new(ids, t * ids.len() / threads);
                start.wait();
                for _ in 0..share {
                    op(keys.next());
                }
            });
        }
        start.wait();
        Instant::now()
    });
    began.elapsed()
}

/// One thread: plain `iter` on criterion's own thread. More: `parallel`.
fn run_hits(b: &mut Bencher<'_>, threads: usize, ids: &[i64], op: impl Fn(i64) + Sync) {
    if threads == 1 {
        let mut keys = Keys::new(ids, 0);
        b.iter(|| op(keys.next()));
    } else {
        b.iter_custom(|iters| parallel(threads, iters, ids, &op));
    }
}

#[allow(clippy::expect_used)]
fn hits(c: &mut Criterion) {
    let f = fixture();
    let mut group = c.benchmark_group("hit");
    group.throughput(Throughput::Elements(1));
    for threads in THREADS {
        group.bench_function(BenchmarkId::new("larder", threads), |b| {
            run_hits(b, threads, &f.stream, |id| {
                black_box(f.store.users().get(black_box(id)).expect("get"));
            });
        });
        group.bench_function(BenchmarkId::new("lru-mutex", threads), |b| {
            run_hits(b, threads, &f.stream, |id| {
                black_box(f.floor.lock().get(&black_box(id)).cloned());
            });
        });
        group.bench_function(BenchmarkId::new("lru-mutex-16", threads), |b| {
            run_hits(b, threads, &f.stream, |id| {
                let shard = &f.sharded_floor[floor_shard(black_box(id))];
                black_box(shard.lock().get(&id).cloned());
            });
        });
        group.bench_function(BenchmarkId::new("moka", threads), |b| {
            run_hits(b, threads, &f.stream, |id| {
                black_box(f.moka.get(&black_box(id)));
            });
        });
    }
    group.finish();
}

/// Finding a repository on every call, as request handlers do.
#[allow(clippy::expect_used)]
fn repos(c: &mut Criterion) {
    let f = fixture();
    let mut group = c.benchmark_group("repo");
    group.throughput(Throughput::Elements(1));
    group.bench_function("held", |b| {
        let users = f.store.users();
        let mut keys = Keys::new(&f.ids, 0);
        b.iter(|| black_box(users.get(black_box(keys.next())).expect("get")));
    });
    group.bench_function("blog-users", |b| {
        let mut keys = Keys::new(&f.ids, 0);
        b.iter(|| black_box(f.store.users().get(black_box(keys.next())).expect("get")));
    });
    group.bench_function("app-entity", |b| {
        let mut keys = Keys::new(&f.ids, 0);
        b.iter(|| {
            black_box(
                f.store
                    .repo::<Note>()
                    .get(black_box(keys.next()))
                    .expect("get"),
            )
        });
    });
    group.bench_function("by-type", |b| {
        let mut keys = Keys::new(&f.ids, 0);
        b.iter(|| {
            black_box(
                f.store
                    .repo::<UnslottedUser>()
                    .get(black_box(keys.next()))
                    .expect("get"),
            )
        });
    });
    group.finish();
}

#[allow(clippy::expect_used)]
fn misses(c: &mut Criterion) {
    let f = fixture();
    let mut group = c.benchmark_group("miss");
    group.throughput(Throughput::Elements(1));

    group.bench_function("diesel-select", |b| {
        let mut keys = Keys::new(&f.ids, 0);
        b.iter(|| {
            let mut conn = f.pool.get().expect("checkout");
            let user = users::table
                .find(black_box(keys.next()))
                .get_result::<User>(&mut conn)
                .expect("select");
            black_box(user)
        });
    });
    // Not a target: the same select without the pool checkout, to split the
    // plain path's time between r2d2 and SQLite.
    group.bench_function("diesel-select-held-conn", |b| {
        let mut conn = f.pool.get().expect("checkout");
        let mut keys = Keys::new(&f.ids, 0);
        b.iter(|| {
            let user = users::table
                .find(black_box(keys.next()))
                .get_result::<User>(&mut conn)
                .expect("select");
            black_box(user)
        });
    });
    group.bench_function("larder-capacity-0", |b| {
        let mut keys = Keys::new(&f.ids, 0);
        b.iter(|| black_box(f.uncached.users().get(black_box(keys.next())).expect("get")));
    });
    // A real miss of a cached store: the key is invalidated first, so the get
    // looks up, leads a flight, loads and fills. The invalidation is part of
    // the measured time (it is a few shard-lock operations).
    group.bench_function("larder-invalidate-get", |b| {
        let mut keys = Keys::new(&f.ids, 0);
        b.iter(|| {
            let id = black_box(keys.next());
            f.store.users().invalidate(id);
            black_box(f.store.users().get(id).expect("get"))
        });
    });
    group.finish();
}

#[allow(clippy::expect_used)]
fn updates(c: &mut Criterion) {
    let f = fixture();
    let mut group = c.benchmark_group("update");
    group.throughput(Throughput::Elements(1));

    group.bench_function("larder", |b| {
        let mut keys = Keys::new(&f.ids, 0);
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let changes = UserChanges {
                name: Some(format!("renamed {n}")),
                ..UserChanges::default()
            };
            black_box(
                f.store
                    .users()
                    .update(keys.next(), changes)
                    .expect("update"),
            )
        });
    });
    // The plain equivalent: one autocommitted UPDATE on a pooled connection.
    group.bench_function("diesel-update", |b| {
        let mut keys = Keys::new(&f.ids, 0);
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let mut conn = f.pool.get().expect("checkout");
            let changed = diesel::update(users::table.find(keys.next()))
                .set(users::name.eq(format!("renamed {n}")))
                .execute(&mut conn)
                .expect("update");
            black_box(changed)
        });
    });
    // Not a target: what larder's update does in SQL (one autocommitted UPDATE …
    // RETURNING, the row deserialized), without larder: larder's own overhead is
    // larder / this.
    group.bench_function("diesel-returning", |b| {
        let mut keys = Keys::new(&f.ids, 0);
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let mut conn = f.pool.get().expect("checkout");
            let user = diesel::update(users::table.find(keys.next()))
                .set(users::name.eq(format!("renamed {n}")))
                .get_result::<User>(&mut conn)
                .expect("update");
            black_box(user)
        });
    });
    // Not a target: the same in an explicit transaction (BEGIN IMMEDIATE,
    // UPDATE … RETURNING, COMMIT), as larder runs writes of several statements.
    group.bench_function("diesel-tx-returning", |b| {
        let mut keys = Keys::new(&f.ids, 0);
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let mut conn = f.pool.get().expect("checkout");
            let user = conn
                .immediate_transaction(|conn| {
                    diesel::update(users::table.find(keys.next()))
                        .set(users::name.eq(format!("renamed {n}")))
                        .get_result::<User>(conn)
                })
                .expect("update");
            black_box(user)
        });
    });
    group.finish();
}

/// Prints the ratios this run's medians are held to, each between two of them.
fn ratios(since: SystemTime) {
    struct Ratio {
        what: &'static str,
        numerator: &'static str,
        denominator: &'static str,
        /// `Some((limit, true))`: the ratio must be at most `limit`;
        /// `Some((limit, false))`: at least `limit`.
        target: Option<(f64, bool)>,
        /// Compare throughputs (denominator time / numerator time) instead of times.
        throughput: bool,
    }
    let rows = [
        Ratio {
            what: "hit time: larder / lru-mutex floor (1 thread)",
            numerator: "hit/larder/1",
            denominator: "hit/lru-mutex/1",
            target: Some((1.5, true)),
            throughput: false,
        },
        Ratio {
            what: "hit time: larder / 16-shard lru-mutex floor (1 thread)",
            numerator: "hit/larder/1",
            denominator: "hit/lru-mutex-16/1",
            target: None,
            throughput: false,
        },
        Ratio {
            what: "hit time: 16-shard / one lru-mutex floor (1 thread)",
            numerator: "hit/lru-mutex-16/1",
            denominator: "hit/lru-mutex/1",
            target: None,
            throughput: false,
        },
        Ratio {
            what: "hit time: larder / moka (1 thread)",
            numerator: "hit/larder/1",
            denominator: "hit/moka/1",
            target: None,
            throughput: false,
        },
        Ratio {
            what: "hit throughput: larder / moka (2 threads)",
            numerator: "hit/larder/2",
            denominator: "hit/moka/2",
            target: Some((1.0, false)),
            throughput: true,
        },
        Ratio {
            what: "hit throughput: larder / moka (4 threads)",
            numerator: "hit/larder/4",
            denominator: "hit/moka/4",
            target: None,
            throughput: true,
        },
        Ratio {
            what: "hit throughput: larder / lru-mutex (2 threads)",
            numerator: "hit/larder/2",
            denominator: "hit/lru-mutex/2",
            target: None,
            throughput: true,
        },
        Ratio {
            what: "repo lookup: app entity / repository held",
            numerator: "repo/app-entity",
            denominator: "repo/held",
            target: Some((1.10, true)),
            throughput: false,
        },
        Ratio {
            what: "repo lookup: app entity / blog's users()",
            numerator: "repo/app-entity",
            denominator: "repo/blog-users",
            target: Some((1.05, true)),
            throughput: false,
        },
        Ratio {
            what: "repo lookup: found by type / repository held",
            numerator: "repo/by-type",
            denominator: "repo/held",
            target: None,
            throughput: false,
        },
        Ratio {
            what: "miss time: larder cache off / diesel select",
            numerator: "miss/larder-capacity-0",
            denominator: "miss/diesel-select",
            target: Some((1.10, true)),
            throughput: false,
        },
        Ratio {
            what: "miss time: larder invalidate+get / diesel select",
            numerator: "miss/larder-invalidate-get",
            denominator: "miss/diesel-select",
            target: Some((1.10, true)),
            throughput: false,
        },
        Ratio {
            what: "update time: larder / diesel update",
            numerator: "update/larder",
            denominator: "update/diesel-update",
            target: Some((1.05, true)),
            throughput: false,
        },
        Ratio {
            what: "update time: larder / diesel update…returning",
            numerator: "update/larder",
            denominator: "update/diesel-returning",
            target: None,
            throughput: false,
        },
        Ratio {
            what: "update time: larder / diesel tx+returning",
            numerator: "update/larder",
            denominator: "update/diesel-tx-returning",
            target: None,
            throughput: false,
        },
    ];
    let mut printed_header = false;
    for row in rows {
        let (Some(num), Some(den)) = (
            median_ns(row.numerator, since),
            median_ns(row.denominator, since),
        ) else {
            continue;
        };
        if !printed_header {
            println!("\nratios of this run's medians (time per operation; threaded: wall time / operations)");
            println!(
                "{:<50} {:>12} {:>12} {:>7}  target",
                "", "numerator", "denominator", "ratio"
            );
            printed_header = true;
        }
        let ratio = if row.throughput { den / num } else { num / den };
        let verdict = match row.target {
            None => "-".to_owned(),
            Some((limit, at_most)) => {
                let met = if at_most {
                    ratio <= limit
                } else {
                    ratio >= limit
                };
                let op = if at_most { "<=" } else { ">=" };
                format!("{op} {limit:.2}: {}", if met { "met" } else { "MISSED" })
            }
        };
        println!(
            "{:<50} {:>9.1} ns {:>9.1} ns {:>6.2}x  {verdict}",
            row.what, num, den, ratio
        );
    }
}

fn main() {
    let since = SystemTime::now();
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(3))
        .nresamples(20_000)
        .configure_from_args();
    hits(&mut criterion);
    repos(&mut criterion);
    misses(&mut criterion);
    updates(&mut criterion);
    criterion.final_summary();
    ratios(since);
}
