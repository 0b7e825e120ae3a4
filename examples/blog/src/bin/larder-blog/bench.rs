//! `larder bench`: a read/update workload on the users table, run once through
//! larder's cache and once with caching off, with throughput, latency, hit
//! ratio and memory in one report; with `--sweep`, over a range of cache
//! capacities and key skews, drawn to a picture (see `sweep`).

mod sweep;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use crate::scratch::ScratchFile;
use diesel::prelude::*;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use larder::{CacheStats, Store};
use larder_blog::prelude::*;
use larder_blog::schema::users;
use larder_blog::{NewUser, User, UserChanges};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// Every user the benchmark creates has an email in this domain (and a tag
/// unique to the run), so its rows can be told from anyone else's.
pub(crate) const EMAIL_DOMAIN: &str = "bench.larder";

/// Users created per seeding transaction.
const SEED_BATCH: usize = 1_000;
/// Rows deleted per cleanup transaction, so the write lock of a shared
/// database is never held for long.
const CLEANUP_BATCH: usize = 5_000;
/// One operation in this many has its latency recorded. Timing every operation
/// would add two clock reads (some 40 ns) to a cache hit that costs a few
/// hundred; a regular sample of one in eight gives the same percentiles.
const SAMPLE_EVERY: u64 = 8;
/// The timed-run deadline is checked on sampled operations only.
const _: () = assert!(SAMPLE_EVERY.is_power_of_two());

/// Options of `larder bench`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Worker threads issuing operations (each run).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
    /// Fraction of operations that are reads (`users().get`); the rest are
    /// updates of the user's name.
    #[arg(long, default_value_t = 0.95, value_parser = parse_ratio)]
    read_ratio: f64,
    /// Key popularity: `uniform`, or the exponent of a Zipf distribution over
    /// the rows (0.99: a few rows are hot, most are cold).
    #[arg(long, default_value = "0.99", value_parser = parse_skew)]
    skew: Skew,
    /// Users to seed for the workload.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    rows: u64,
    /// Cache capacity (entries) of the cached run. Defaults to 10% of --rows.
    #[arg(long)]
    capacity: Option<usize>,
    /// Seconds each run lasts [default: 10, or 2 per point with --sweep].
    #[arg(long, value_parser = parse_seconds, conflicts_with = "ops")]
    duration: Option<f64>,
    /// Operations each of the two runs does, instead of running for --duration.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    ops: Option<u64>,
    /// Run the cached store with cross-process coherence off, as the
    /// database's only writer would (no watcher hearing its own commits back).
    #[arg(long)]
    no_coherence: bool,
    /// A read replica of the PostgreSQL database for the cached store's
    /// loads (repeat for more); the report then says how many loads the
    /// replicas served and how many position checks that cost.
    #[arg(long = "replica", value_name = "URL")]
    replicas: Vec<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sweep: sweep::Sweep,
}

/// How keys are chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Skew {
    Uniform,
    /// Zipf over the rows' popularity ranks, with this exponent.
    Zipf(f64),
}

impl std::fmt::Display for Skew {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skew::Uniform => f.write_str("uniform"),
            Skew::Zipf(s) => write!(f, "zipf {s}"),
        }
    }
}

fn parse_skew(value: &str) -> Result<Skew, String> {
    if value.eq_ignore_ascii_case("uniform") {
        return Ok(Skew::Uniform);
    }
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(Skew::Zipf(s)),
        _ => Err("expected `uniform` or a Zipf exponent ≥ 0 such as 0.99".into()),
    }
}

fn parse_ratio(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err("expected a fraction between 0 and 1".into()),
    }
}

fn parse_seconds(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(s),
        _ => Err("expected a number of seconds greater than 0".into()),
    }
}

/// How long a run lasts.
#[derive(Clone, Copy, Debug)]
enum Budget {
    Ops(u64),
    For(Duration),
}

/// What the worker threads share.
struct Workload<'a> {
    /// The seeded ids, in popularity order: Zipf rank r picks `keys[r - 1]`.
    keys: &'a [i64],
    skew: Skew,
    read_ratio: f64,
    threads: usize,
}

/// One run's measurements.
struct Outcome {
    ops: u64,
    reads: u64,
    writes: u64,
    elapsed: Duration,
    /// Latencies of the sampled operations, in nanoseconds.
    latency: Histogram<u64>,
    /// The users cache's counters over the run.
    cache: CacheStats,
}

impl Outcome {
    fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    fn quantile_us(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1_000.0
    }

    fn hit_ratio(&self) -> f64 {
        self.cache.hit_ratio()
    }
}

/// Memory, from the kernel's view of this process.
#[derive(Default)]
struct Memory {
    rss_before_fill: Option<u64>,
    /// RSS and entries cached when half of the hot keys were filled.
    rss_half_filled: Option<u64>,
    entries_half_filled: u64,
    rss_after_fill: Option<u64>,
    rss_after_warmup: Option<u64>,
    rss_end_of_larder_run: Option<u64>,
    rss_end: Option<u64>,
    cached_entries: u64,
    /// Mean of `size_of::<User>()` plus its strings' heap capacity over the cached entries.
    entity_bytes: f64,
}

impl Memory {
    fn fill_growth(&self) -> Option<i64> {
        Some(self.rss_after_fill? as i64 - self.rss_before_fill? as i64)
    }

    /// RSS growth per entry over the second half of the fill. The first
    /// entries land in memory the allocator already holds (freed while seeding),
    /// which would make the whole fill's growth an underestimate; the second
    /// half's growth is the marginal cost of an entry.
    fn bytes_per_entry(&self) -> Option<f64> {
        let growth = self.rss_after_fill? as f64 - self.rss_half_filled? as f64;
        let entries = self.cached_entries.checked_sub(self.entries_half_filled)?;
        (entries > 0).then(|| growth / entries as f64)
    }
}

pub(crate) fn run(url: Option<&str>, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.sweep.sweep {
        return sweep::run(url, args);
    }
    Ok(compare(url, args)?)
}

/// One run through larder's cache and one with caching off, reported side by side.
fn compare(url: Option<&str>, args: &Args) -> larder::Result<()> {
    let (url, scratch) = ScratchFile::url_or_new(url, "bench");
    let rows = usize::try_from(args.rows).unwrap_or(usize::MAX);
    let capacity = args.capacity.unwrap_or((rows / 10).max(1));
    let threads = args.threads as usize;
    let pool_size = args.threads.max(8);
    let budget = match args.ops {
        Some(ops) => Budget::Ops(ops),
        None => Budget::For(Duration::from_secs_f64(args.duration.unwrap_or(10.0))),
    };

    let cached = args
        .replicas
        .iter()
        .fold(larder_blog::builder(&url), |builder, replica| {
            builder.replica(replica)
        })
        .cache_capacity(capacity)
        .pool_size(pool_size)
        .coherence(!args.no_coherence)
        .build()?;
    // Nothing to keep coherent without a cache.
    let uncached = larder_blog::builder(&url)
        .cache_capacity(0)
        .pool_size(pool_size)
        .coherence(false)
        .build()?;
    let database = if scratch.is_some() {
        format!("{} (temporary)", cached.url())
    } else {
        cached.url().to_string()
    };
    if !args.json {
        println!("database: {database}");
    }
    for version in larder_blog::migrate(&cached)? {
        eprintln!("applied migration {version}");
    }

    // Seed through the uncached store, so that the cached run starts cold.
    let mut seeded = Seeded::new(&uncached, scratch.is_none());
    let seed_started = Instant::now();
    seeded.insert(rows)?;
    let seed_time = seed_started.elapsed();
    if !args.json {
        println!("seeded {rows} users in {:.1} s", seed_time.as_secs_f64());
    }

    let mut keys = seeded.ids.clone();
    keys.shuffle(&mut SmallRng::seed_from_u64(0x1a7de7));
    let workload = Workload {
        keys: &keys,
        skew: args.skew,
        read_ratio: args.read_ratio,
        threads,
    };
    let warmup = match budget {
        Budget::Ops(ops) => Budget::Ops((ops / 10).max(threads as u64)),
        Budget::For(d) => Budget::For((d / 10).min(Duration::from_secs(1))),
    };

    let mut memory = Memory::default();
    fill(&cached, &keys[..capacity.min(keys.len())], &mut memory)?;
    workload.run(&cached, warmup, 1)?;
    memory.rss_after_warmup = rss();
    let larder = workload.run(&cached, budget, 2)?;
    memory.rss_end_of_larder_run = rss();
    let stats = cached.stats();
    let coherence = stats.coherence;
    let mut coherence = if coherence.enabled {
        format!(
            "coherence: on, {} changes read (this run's own updates coming back), {} flushes",
            coherence.changes, coherence.flushes
        )
    } else {
        "coherence: off".to_owned()
    };
    let r = stats.replicas;
    if r.replicas > 0 {
        let loads = r.replica_loads + r.primary_loads;
        coherence.push_str(&format!(
            "; replicas (warm-up and run): {} of {} loads ({:.1}%) served by {} replica(s), \
             {} position checks ({:.3} per load), skipped {} lagging, {} down",
            r.replica_loads,
            loads,
            r.replica_share() * 100.0,
            r.replicas,
            r.position_checks,
            r.position_checks as f64 / loads.max(1) as f64,
            r.skipped_lagging,
            r.skipped_down
        ));
    }

    // Closed first: its watcher would otherwise go on reading the cache-off
    // run's updates, on the cache-off run's cores.
    drop(cached);
    workload.run(&uncached, warmup, 3)?;
    let cache_off = workload.run(&uncached, budget, 4)?;
    memory.rss_end = rss();

    let removed = seeded.remove()?;
    let report = Report {
        args,
        database: &database,
        rows,
        capacity,
        budget,
        seed_time,
        larder: &larder,
        cache_off: &cache_off,
        memory: &memory,
        removed,
        coherence,
    };
    if args.json {
        println!("{}", report.json());
    } else {
        report.print();
    }
    Ok(())
}

/// The users this run created: seeded in batched transactions, and removed
/// again (by `remove`, or on an early return by `Drop`) when the database is
/// not a scratch file that goes away anyway.
pub(crate) struct Seeded<'s> {
    store: &'s Store,
    /// Unique to this run; part of every seeded email.
    tag: String,
    pub(crate) ids: Vec<i64>,
    clean_up: bool,
}

impl<'s> Seeded<'s> {
    pub(crate) fn new(store: &'s Store, clean_up: bool) -> Seeded<'s> {
        let tag = format!(
            "{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        Seeded {
            store,
            tag,
            ids: Vec::new(),
            clean_up,
        }
    }

    /// Creates `rows` users; a progress bar appears on a terminal once this
    /// has taken more than a moment.
    pub(crate) fn insert(&mut self, rows: usize) -> larder::Result<()> {
        let bar = ProgressBar::with_draw_target(Some(rows as u64), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template(
            "seeding {bar:40} {human_pos}/{human_len} users ({percent}%), eta {eta}",
        ) {
            bar.set_style(style);
        }
        let interactive = std::io::stderr().is_terminal();
        let started = Instant::now();
        self.ids.reserve(rows);
        while self.ids.len() < rows {
            let from = self.ids.len();
            let to = (from + SEED_BATCH).min(rows);
            let tag = &self.tag;
            let ids = self.store.transaction(|tx| {
                (from..to)
                    .map(|n| {
                        let user = tx.users().create(NewUser {
                            name: format!("bench user {n}"),
                            email: format!("u{n}.{tag}@{EMAIL_DOMAIN}"),
                        })?;
                        Ok(user.id)
                    })
                    .collect::<larder::Result<Vec<i64>>>()
            })?;
            self.ids.extend(ids);
            bar.set_position(self.ids.len() as u64);
            if interactive && bar.is_hidden() && started.elapsed() > Duration::from_millis(500) {
                bar.set_draw_target(ProgressDrawTarget::stderr());
            }
        }
        bar.finish_and_clear();
        Ok(())
    }

    /// Deletes the seeded rows (only rows with this run's ids *and* email tag),
    /// a batch per transaction. Returns how many rows were deleted.
    pub(crate) fn remove(&mut self) -> larder::Result<usize> {
        if !self.clean_up {
            self.ids.clear();
            return Ok(0);
        }
        let pattern = format!("%.{}@{EMAIL_DOMAIN}", self.tag);
        let mut removed = 0;
        while !self.ids.is_empty() {
            let from = self.ids.len().saturating_sub(CLEANUP_BATCH);
            let batch = &self.ids[from..];
            removed += self.store.transaction(|tx| {
                let mut deleted = 0;
                // A raw delete on the transaction's connection: `query` hands
                // it over; no user of this run has posts to cascade to.
                tx.users().query(|conn| {
                    let doomed = users::table
                        .filter(users::id.eq_any(batch))
                        .filter(users::email.like(&pattern));
                    deleted =
                        larder::with_connection!(conn, |c| diesel::delete(doomed).execute(c))?;
                    Ok(Vec::new())
                })?;
                Ok::<_, larder::Error>(deleted)
            })?;
            for &id in batch {
                self.store.users().invalidate(id);
            }
            self.ids.truncate(from);
        }
        Ok(removed)
    }
}

impl Drop for Seeded<'_> {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        if let Err(err) = self.remove() {
            eprintln!(
                "larder: warning: could not remove the benchmark's users \
                 (emails ending .{}@{EMAIL_DOMAIN}): {err}",
                self.tag
            );
        }
    }
}

/// Caches `hot` (the most popular keys, as many as the cache holds) and records
/// the memory that took.
fn fill(store: &Store, hot: &[i64], memory: &mut Memory) -> larder::Result<()> {
    // Read the rows' pages once through SQLite without building any `User`
    // (one aggregate per chunk; the closure returns no rows, so nothing is
    // cached), so that SQLite's page cache has grown before the baseline is
    // taken and the growth measured next is the cache's own.
    store.users().query(|conn| {
        for chunk in hot.chunks(500) {
            let longest = users::table
                .filter(users::id.eq_any(chunk))
                .select(diesel::dsl::max(users::email));
            larder::with_connection!(conn, |c| longest.first::<Option<String>>(c))?;
        }
        Ok(Vec::new())
    })?;
    memory.rss_before_fill = rss();
    let (first, second) = hot.split_at(hot.len() / 2);
    for &id in first {
        store.users().get(id)?;
    }
    memory.rss_half_filled = rss();
    memory.entries_half_filled = store.stats().entity("users").entries;
    for &id in second {
        store.users().get(id)?;
    }
    memory.rss_after_fill = rss();
    let stats = store.stats().entity("users");
    memory.cached_entries = stats.entries;
    let (mut total, mut count) = (0usize, 0usize);
    for &id in hot {
        if let Some(user) = store.users().cached(id) {
            total += std::mem::size_of::<User>() + user.name.capacity() + user.email.capacity();
            count += 1;
        }
    }
    memory.entity_bytes = if count == 0 {
        0.0
    } else {
        total as f64 / count as f64
    };
    Ok(())
}

impl Workload<'_> {
    /// Runs the workload on `store` with `threads` threads until `budget` is
    /// spent. `seed` makes the key and read/write choices reproducible.
    fn run(&self, store: &Store, budget: Budget, seed: u64) -> larder::Result<Outcome> {
        let before = store.stats().entity("users");
        let start = Barrier::new(self.threads + 1);
        let stop = AtomicBool::new(false);
        let (began, results) = std::thread::scope(|s| {
            let workers: Vec<_> = (0..self.threads)
                .map(|t| {
                    let share = match budget {
                        Budget::Ops(ops) => {
                            let n = self.threads as u64;
                            Budget::Ops(ops / n + u64::from((t as u64) < ops % n))
                        }
                        other => other,
                    };
                    let (start, stop) = (&start, &stop);
                    s.spawn(move || {
                        let result =
                            self.worker(store, share, seed * 1_000 + t as u64, start, stop);
                        if result.is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                        result
                    })
                })
                .collect();
            start.wait();
            let began = Instant::now();
            let results: Vec<_> = workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect();
            (began, results)
        });
        let elapsed = began.elapsed();
        let mut outcome = Outcome {
            ops: 0,
            reads: 0,
            writes: 0,
            elapsed,
            latency: histogram(),
            cache: CacheStats::default(),
        };
        for result in results {
            let part = result?;
            outcome.ops += part.ops;
            outcome.reads += part.reads;
            outcome.writes += part.writes;
            // Both histograms have the same bounds: adding cannot fail.
            let _ = outcome.latency.add(&part.latency);
        }
        let after = store.stats().entity("users");
        outcome.cache = CacheStats {
            hits: after.hits - before.hits,
            misses: after.misses - before.misses,
            loads: after.loads - before.loads,
            fills: after.fills - before.fills,
            stale_fills_dropped: after.stale_fills_dropped - before.stale_fills_dropped,
            invalidations: after.invalidations - before.invalidations,
            evictions: after.evictions - before.evictions,
            entries: after.entries,
            capacity: after.capacity,
        };
        Ok(outcome)
    }

    fn worker(
        &self,
        store: &Store,
        budget: Budget,
        seed: u64,
        start: &Barrier,
        stop: &AtomicBool,
    ) -> larder::Result<Outcome> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let n = self.keys.len();
        let zipf = match self.skew {
            Skew::Zipf(s) => Zipf::new(n as f64, s).ok(),
            Skew::Uniform => None,
        };
        let mut out = Outcome {
            ops: 0,
            reads: 0,
            writes: 0,
            elapsed: Duration::ZERO,
            latency: histogram(),
            cache: CacheStats::default(),
        };
        start.wait();
        let deadline = match budget {
            Budget::For(d) => Some(Instant::now() + d),
            Budget::Ops(_) => None,
        };
        let limit = match budget {
            Budget::Ops(ops) => ops,
            Budget::For(_) => u64::MAX,
        };
        while out.ops < limit {
            let id = match &zipf {
                // Ranks are 1..=n; the float is truncated to its rank.
                Some(zipf) => self.keys[(zipf.sample(&mut rng) as usize).clamp(1, n) - 1],
                None => self.keys[rng.random_range(0..n)],
            };
            let write = rng.random::<f64>() >= self.read_ratio;
            let sampled = out.ops.is_multiple_of(SAMPLE_EVERY);
            let t0 = sampled.then(Instant::now);
            if write {
                let changes = UserChanges {
                    name: Some(format!("bench {seed} {}", out.ops)),
                    ..UserChanges::default()
                };
                store.users().update(id, changes)?;
                out.writes += 1;
            } else {
                if store.users().get(id)?.is_none() {
                    return Err(larder::Error::NotFound { table: "users", id });
                }
                out.reads += 1;
            }
            out.ops += 1;
            if let Some(t0) = t0 {
                let now = Instant::now();
                out.latency
                    .saturating_record((now - t0).as_nanos().try_into().unwrap_or(u64::MAX));
                if deadline.is_some_and(|d| now >= d) || stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// Latencies from 1 ns to 10 minutes, three significant digits.
fn histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

/// Resident set size in bytes, from `/proc/self/statm` (Linux), else `None`.
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(resident * page_size())
}

/// The kernel's page size, from the first `KernelPageSize` line of
/// `/proc/self/smaps`, else 4 KiB.
fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        use std::io::BufRead;
        let kib = std::fs::File::open("/proc/self/smaps")
            .ok()
            .and_then(|file| {
                std::io::BufReader::new(file)
                    .lines()
                    .map_while(Result::ok)
                    .find_map(|line| {
                        let rest = line.strip_prefix("KernelPageSize:")?;
                        rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
                    })
            });
        kib.unwrap_or(4) * 1024
    })
}

struct Report<'a> {
    args: &'a Args,
    database: &'a str,
    rows: usize,
    capacity: usize,
    budget: Budget,
    seed_time: Duration,
    larder: &'a Outcome,
    cache_off: &'a Outcome,
    memory: &'a Memory,
    removed: usize,
    /// The cached store's watcher at the end of the larder run.
    coherence: String,
}

impl Report<'_> {
    fn ratio(&self) -> f64 {
        self.larder.ops_per_s() / self.cache_off.ops_per_s().max(f64::MIN_POSITIVE)
    }

    fn mix(&self) -> String {
        let reads = (self.args.read_ratio * 1000.0).round() / 10.0;
        let writes = ((1.0 - self.args.read_ratio) * 1000.0).round() / 10.0;
        format!("{reads}/{writes}")
    }

    fn print(&self) {
        println!(
            "\n{:<9} {:>7} {:>10} {:>10} {:>9} {:>8} {:>8} {:>10} {:>10} {:>9} {:>9} {:>6}",
            "mode",
            "threads",
            "read/write",
            "skew",
            "rows",
            "capacity",
            "duration",
            "ops",
            "ops/s",
            "p50",
            "p99",
            "hit %"
        );
        for (mode, capacity, o) in [
            ("larder", self.capacity, self.larder),
            ("cache-off", 0, self.cache_off),
        ] {
            println!(
                "{:<9} {:>7} {:>10} {:>10} {:>9} {:>8} {:>7.1}s {:>10} {:>10.0} {:>9} {:>9} {:>6.1}",
                mode,
                self.args.threads,
                self.mix(),
                self.args.skew.to_string(),
                self.rows,
                capacity,
                o.elapsed.as_secs_f64(),
                o.ops,
                o.ops_per_s(),
                micros(o.quantile_us(0.50)),
                micros(o.quantile_us(0.99)),
                o.hit_ratio() * 100.0
            );
        }
        println!(
            "larder / cache-off throughput: {:.1}x ({} reads, {} updates in the larder run)",
            self.ratio(),
            self.larder.reads,
            self.larder.writes
        );
        println!("{}", self.coherence);
        let m = self.memory;
        println!(
            "memory: RSS {} after warm-up, {} at the end of the larder run, {} at the end",
            mib(m.rss_after_warmup),
            mib(m.rss_end_of_larder_run),
            mib(m.rss_end)
        );
        match (m.fill_growth(), m.bytes_per_entry()) {
            (Some(growth), Some(per_entry)) => println!(
                "cache: filling {} entries grew RSS by {:.2} MiB, {per_entry:.0} B/entry at the margin \
                 (second half of the fill); the entity itself is {:.0} B \
                 (size_of::<User>() = {} + string capacity)",
                m.cached_entries,
                growth as f64 / 1_048_576.0,
                m.entity_bytes,
                std::mem::size_of::<User>()
            ),
            _ => println!(
                "cache: {} entries; the entity is {:.0} B (RSS not available here)",
                m.cached_entries, m.entity_bytes
            ),
        }
        if self.removed > 0 {
            println!("removed the {} users the benchmark created", self.removed);
        }
    }

    fn json(&self) -> serde_json::Value {
        let run = |o: &Outcome, capacity: usize| {
            serde_json::json!({
                "capacity": capacity,
                "ops": o.ops,
                "reads": o.reads,
                "writes": o.writes,
                "elapsed_s": o.elapsed.as_secs_f64(),
                "ops_per_s": o.ops_per_s(),
                "p50_us": o.quantile_us(0.50),
                "p99_us": o.quantile_us(0.99),
                "latency_samples": o.latency.len(),
                "hit_ratio": o.hit_ratio(),
                "hits": o.cache.hits,
                "misses": o.cache.misses,
                "loads": o.cache.loads,
                "stale_fills_dropped": o.cache.stale_fills_dropped,
                "evictions": o.cache.evictions,
                "entries_at_end": o.cache.entries,
            })
        };
        let m = self.memory;
        serde_json::json!({
            "database": self.database,
            "threads": self.args.threads,
            "read_ratio": self.args.read_ratio,
            "skew": self.args.skew.to_string(),
            "zipf_exponent": match self.args.skew { Skew::Zipf(s) => Some(s), Skew::Uniform => None },
            "rows": self.rows,
            "capacity": self.capacity,
            "duration_s": match self.budget { Budget::For(d) => Some(d.as_secs_f64()), Budget::Ops(_) => None },
            "ops": match self.budget { Budget::Ops(n) => Some(n), Budget::For(_) => None },
            "seed_s": self.seed_time.as_secs_f64(),
            "larder": run(self.larder, self.capacity),
            "cache_off": run(self.cache_off, 0),
            "throughput_ratio": self.ratio(),
            "memory": {
                "rss_before_fill_bytes": m.rss_before_fill,
                "rss_half_filled_bytes": m.rss_half_filled,
                "entries_half_filled": m.entries_half_filled,
                "rss_after_fill_bytes": m.rss_after_fill,
                "rss_after_warmup_bytes": m.rss_after_warmup,
                "rss_end_of_larder_run_bytes": m.rss_end_of_larder_run,
                "rss_end_bytes": m.rss_end,
                "cached_entries": m.cached_entries,
                "cache_fill_rss_bytes": m.fill_growth(),
                "bytes_per_entry": m.bytes_per_entry(),
                "entity_bytes": m.entity_bytes,
                "size_of_user": std::mem::size_of::<User>(),
            },
            "removed_rows": self.removed,
            "coherence": self.coherence,
        })
    }
}

fn micros(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1_000.0)
    } else if us >= 100.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "n/a".to_owned(),
        |b| format!("{:.1} MiB", b as f64 / 1_048_576.0),
    )
}
