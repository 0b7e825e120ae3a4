//! `larder bench-coherence`: how long a change committed in one process takes
//! to reach the cache of another process, and what change capture costs a
//! write.
//!
//! The delay: this process (the writer) starts a second `larder` process (the
//! observer) that caches one user and reads it in a loop. The writer renames
//! the user N times, each at a random moment, and notes when each commit
//! returned; the observer notes when its cache first served each new name.
//! Both clocks are the same machine's wall clock.
//!
//! The write cost: single-row updates through larder, in interleaved rounds
//! with the users table's capture triggers installed and dropped.
//!
//! The idle cost (`--idle-secs`): the CPU time a store's watcher threads use
//! while nothing changes, read from Linux's per-thread accounting.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use larder::{capture_sql, Store};
use larder_blog::prelude::*;
use larder_blog::UserChanges;
use rand::{RngExt, SeedableRng};

use crate::bench::Seeded;
use crate::scratch::ScratchFile;

/// Rounds of the write-cost measurement, each way.
const ROUNDS: usize = 5;
/// Rows the write-cost rounds update in turn.
const WRITE_ROWS: usize = 100;
/// How long the writer waits for the observer to see one change.
const SEE_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of `larder bench-coherence`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Changes the writer commits; each waits for the observer to see it.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    changes: u32,
    /// The observer's `max_staleness`, in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    max_staleness_ms: u64,
    /// Updates per round of the write-cost measurement (5 rounds with capture
    /// and 5 without, interleaved); 0 skips it. It drops and re-creates the
    /// users table's capture triggers: give it a database of its own.
    #[arg(long, default_value_t = 2_000)]
    writes: u32,
    /// Seconds a store with coherence on sits idle while its watcher
    /// threads' CPU time is measured (Linux only); 0 skips it.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    idle_secs: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Run as the observer of this user id (the benchmark starts it itself).
    #[arg(long, hide = true)]
    observe: Option<i64>,
}

pub(crate) fn run(url: Option<&str>, args: &Args) -> larder::Result<()> {
    let staleness = Duration::from_millis(args.max_staleness_ms);
    if let Some(id) = args.observe {
        return observe(url.unwrap_or_default(), id, staleness);
    }
    let (url, scratch) = ScratchFile::url_or_new(url, "bench-coherence");
    let store = larder_blog::builder(&url).coherence(false).build()?;
    for version in larder_blog::migrate(&store)? {
        eprintln!("applied migration {version}");
    }
    let backend = store.url().backend().name();
    let mut seeded = Seeded::new(&store, scratch.is_none());
    seeded.insert(1 + WRITE_ROWS)?;
    let observed = seeded.ids[0];
    store.users().update(observed, rename(0))?;

    let mut delays = measure_delays(&store, &url, observed, args)?;
    delays.sort_unstable();
    let cost = if args.writes > 0 {
        Some(measure_write_cost(
            &store,
            &url,
            &seeded.ids[1..],
            args.writes,
        )?)
    } else {
        None
    };
    let idle = if args.idle_secs > 0 {
        Some(measure_idle(
            &url,
            staleness,
            Duration::from_secs(args.idle_secs),
        )?)
    } else {
        None
    };
    seeded.remove()?;
    report(backend, args, &delays, cost, idle);
    Ok(())
}

fn rename(seq: u32) -> UserChanges {
    UserChanges {
        name: Some(format!("seq-{seq}")),
        ..UserChanges::default()
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The observer process: prints `ready`, then `<seq> <µs>` whenever its cache
/// serves a new name; ends when the user is gone or its parent is.
fn observe(url: &str, id: i64, staleness: Duration) -> larder::Result<()> {
    let store = larder_blog::builder(url)
        .max_staleness(staleness)
        .pool_size(2)
        .build()?;
    let seq_of = |store: &Store| -> larder::Result<Option<String>> {
        Ok(store.users().get(id)?.map(|user| user.name.clone()))
    };
    let mut last = seq_of(&store)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    while last.is_some() {
        let seen = seq_of(&store)?;
        if seen != last {
            let seq = seen
                .as_deref()
                .and_then(|s| s.strip_prefix("seq-"))
                .unwrap_or("gone");
            if writeln!(out, "{seq} {}", now_us())
                .and_then(|()| out.flush())
                .is_err()
            {
                break; // the writer is gone
            }
            last = seen;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    Ok(())
}

/// The observer, killed if the benchmark ends early.
struct Observer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Observer {
    fn start(url: &str, id: i64, staleness_ms: u64) -> larder::Result<Observer> {
        let exe = std::env::current_exe().map_err(config_error)?;
        let mut child = Command::new(exe)
            .args([
                "--database-url",
                url,
                "bench-coherence",
                "--observe",
                &id.to_string(),
            ])
            .args(["--max-staleness-ms", &staleness_ms.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(config_error)?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| config_error("no stdout"))?;
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let observer = Observer { child, lines };
        observer.expect(|line| line == "ready")?;
        Ok(observer)
    }

    /// Waits for a line `accept` takes, returning it.
    fn expect(&self, accept: impl Fn(&str) -> bool) -> larder::Result<String> {
        let deadline = Instant::now() + SEE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if accept(&line) => return Ok(line),
                Ok(_) => {}
                Err(_) => return Err(config_error("the observer process did not answer in time")),
            }
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_error(err: impl std::fmt::Display) -> larder::Error {
    larder::Error::InvalidConfig {
        reason: format!("bench-coherence: {err}"),
    }
}

/// Commit-to-invalidation delays, in µs, one per change.
fn measure_delays(store: &Store, url: &str, id: i64, args: &Args) -> larder::Result<Vec<u64>> {
    let observer = Observer::start(url, id, args.max_staleness_ms)?;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0xc0de);
    // Random moments, so commits land at every phase of a poll interval.
    let spread = Duration::from_millis(args.max_staleness_ms / 2).max(Duration::from_millis(5));
    let mut delays = Vec::with_capacity(args.changes as usize);
    for seq in 1..=args.changes {
        std::thread::sleep(spread.mul_f64(rng.random::<f64>()));
        store.users().update(id, rename(seq))?;
        let committed = now_us();
        let want = format!("{seq} ");
        let line = observer.expect(|line| line.starts_with(&want))?;
        let seen: u64 = line[want.len()..].parse().map_err(config_error)?;
        delays.push(seen.saturating_sub(committed));
    }
    Ok(delays)
}

/// CPU time, in ms, each watcher thread of an idle store used over `idle`
/// (after a second to settle): `(thread name, ms)`.
fn measure_idle(
    url: &str,
    staleness: Duration,
    idle: Duration,
) -> larder::Result<Vec<(String, f64)>> {
    let store = larder_blog::builder(url).max_staleness(staleness).build()?;
    std::thread::sleep(Duration::from_secs(1));
    let before = watcher_cpu();
    std::thread::sleep(idle);
    let after = watcher_cpu();
    drop(store);
    Ok(after
        .into_iter()
        .map(|(name, ms)| {
            let start = before
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0.0, |(_, ms)| *ms);
            (name, ms - start)
        })
        .collect())
}

/// CPU time (user + system, ms) of this process's `larder-*` threads, from
/// `/proc/self/task/*/stat` (clock ticks of 10 ms, Linux's `USER_HZ`).
fn watcher_cpu() -> Vec<(String, f64)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut threads: Vec<(String, f64)> = tasks
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
            let (head, tail) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_owned();
            let fields: Vec<&str> = tail.split_whitespace().collect();
            // utime and stime are the 14th and 15th fields; `tail` starts at the 3rd.
            let ticks: f64 =
                fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            name.starts_with("larder-").then_some((name, ticks * 10.0))
        })
        .collect();
    threads.sort_by(|a, b| a.0.cmp(&b.0));
    threads
}

/// Updates per second with and without capture: medians of interleaved rounds.
fn measure_write_cost(
    store: &Store,
    url: &str,
    ids: &[i64],
    writes: u32,
) -> larder::Result<WriteCost> {
    let backend = store.url().backend();
    let capture = capture_sql(backend, "users")?;
    let mut ddl = larder::Connection::establish(url)?;
    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut seq = 0_u32;
    let mut round = |store: &Store| -> larder::Result<f64> {
        let started = Instant::now();
        for n in 0..writes as usize {
            seq += 1;
            store.users().update(ids[n % ids.len()], rename(seq))?;
        }
        Ok(f64::from(writes) / started.elapsed().as_secs_f64())
    };
    for _ in 0..ROUNDS {
        with.push(round(store)?);
        let restore = TriggersDropped::new(&mut ddl, &capture)?;
        without.push(round(store)?);
        restore.reinstall()?;
    }
    Ok(WriteCost {
        with: median(&mut with),
        without: median(&mut without),
    })
}

/// The users table's capture triggers, dropped; re-created on `reinstall` or,
/// if the benchmark fails midway, on drop.
struct TriggersDropped<'a> {
    conn: &'a mut larder::Connection,
    capture: &'a larder::CaptureSql,
    done: bool,
}

impl<'a> TriggersDropped<'a> {
    fn new(
        conn: &'a mut larder::Connection,
        capture: &'a larder::CaptureSql,
    ) -> larder::Result<Self> {
        batch(conn, &capture.down)?;
        Ok(TriggersDropped {
            conn,
            capture,
            done: false,
        })
    }

    fn reinstall(mut self) -> larder::Result<()> {
        self.done = true;
        batch(self.conn, &self.capture.up)
    }
}

impl Drop for TriggersDropped<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Err(err) = batch(self.conn, &self.capture.up) {
                eprintln!("larder: warning: could not re-create the users capture triggers: {err}");
            }
        }
    }
}

fn batch(conn: &mut larder::Connection, sql: &str) -> larder::Result<()> {
    use diesel::connection::SimpleConnection;
    conn.batch_execute(sql).map_err(config_error)
}

struct WriteCost {
    with: f64,
    without: f64,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index] as f64 / 1_000.0
}

fn report(
    backend: &str,
    args: &Args,
    delays: &[u64],
    cost: Option<WriteCost>,
    idle: Option<Vec<(String, f64)>>,
) {
    let (p50, p90, p99, max) = (
        quantile(delays, 0.5),
        quantile(delays, 0.9),
        quantile(delays, 0.99),
        quantile(delays, 1.0),
    );
    if args.json {
        let cost = cost.map(|c| {
            serde_json::json!({
                "updates_per_s_with_capture": c.with,
                "updates_per_s_without_capture": c.without,
                "cost_ratio": c.without / c.with,
            })
        });
        let out = serde_json::json!({
            "backend": backend,
            "max_staleness_ms": args.max_staleness_ms,
            "changes": delays.len(),
            "delay_ms": { "p50": p50, "p90": p90, "p99": p99, "max": max },
            "write_cost": cost,
            "idle_cpu_ms": idle.as_ref().map(|threads| {
                threads.iter().map(|(name, ms)| (name.clone(), serde_json::json!(ms))).collect::<serde_json::Map<_, _>>()
            }),
            "idle_secs": args.idle_secs,
        });
        println!("{out}");
        return;
    }
    println!(
        "commit-to-invalidation delay in another process ({backend}, {} changes, max_staleness {} ms):",
        delays.len(),
        args.max_staleness_ms
    );
    println!("  p50 {p50:.2} ms   p90 {p90:.2} ms   p99 {p99:.2} ms   max {max:.2} ms");
    if let Some(c) = cost {
        println!("write cost of change capture (users().update, median of {ROUNDS} rounds of {} each way):", args.writes);
        println!(
            "  with capture {:.0} updates/s   without {:.0} updates/s   a write costs {:.2}x with capture",
            c.with,
            c.without,
            c.without / c.with
        );
    }
    if let Some(threads) = idle {
        println!(
            "CPU time of an idle store's watcher threads over {} s:",
            args.idle_secs
        );
        for (name, ms) in threads {
            println!("  {name}: {ms:.0} ms");
        }
    }
}
