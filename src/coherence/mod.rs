//! Cross-process coherence: changes committed by other processes (other larder
//! processes, or any SQL client) reach this process's caches.
//!
//! Triggers in the database capture every committed change of a cached table
//! ([`capture`]). One background thread per [`Store`](crate::Store), the
//! watcher, brings them in: on PostgreSQL it waits for the triggers'
//! notifications on its own connection ([`listen`]); on SQLite and MySQL it
//! polls the change log the triggers write ([`poll`]). Each change invalidates
//! the key it names, through the same registry as local commits.
//!
//! The staleness bound holds even when the watcher cannot do its job
//! ([`view`]): whenever its last confirmed view of the database is older than
//! half the bound (its connection was lost, the change log is missing, a poll
//! failed), it empties every cache, and again every half bound until it
//! recovers. A check stuck on a dead network path does not hold this off: a
//! small guard thread flushes by the clock while the check runs too long.
//! Whenever the watcher cannot prove it saw every change (a skipped change-log
//! id given up, rows pruned before it read them, a lost listener), it flushes
//! rather than skip. Each flush is counted by its [`FlushReason`] and logged
//! at WARN.
//!
//! What no trigger reports is not seen: MySQL fires no trigger for
//! `TRUNCATE`, for rows an `ON DELETE CASCADE` removes (larder's migrations
//! log the blog's cascades from the parent's trigger), or for bulk loads with
//! triggers disabled. After truncating a cached table on MySQL, other
//! processes keep serving its rows until they are evicted or changed: delete
//! the rows instead, or call [`Store::clear_cache`](crate::Store::clear_cache)
//! in every process. PostgreSQL reports `TRUNCATE` (not of one partition,
//! nor a partition's `DETACH` or `DROP`), and writes made in
//! `session_replication_role = replica`, its triggers being enabled `ALWAYS`.

pub(crate) mod capture;
mod channel;
mod counters;
mod cursor;
mod listen;
mod poll;
mod session;
mod view;

use std::fmt;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::backend::{Connection, Manager};
use crate::dialect;
use crate::error::{Error, Result};
use crate::keys;
use crate::registry::{Op, Registry};
use crate::url::{Backend, DatabaseUrl};

pub(crate) use counters::Counters;
use counters::FlushLog;
pub use counters::{CoherenceStats, FlushCounts, FlushReason};

/// The longest the watcher's SQLite connection waits for a lock.
const WATCHER_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// What the watcher's threads share with the code that reads changes.
pub(crate) struct Context {
    registry: Arc<Registry>,
    counters: Arc<Counters>,
    manager: Manager,
    url: DatabaseUrl,
    /// The store's own URL: the PostgreSQL listener proves it hears what is
    /// notified through it (see `channel`).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    store_url: DatabaseUrl,
    timing: Timing,
    view: view::View,
    flush_log: Mutex<FlushLog>,
}

impl Context {
    /// Applies one change read from the database, with the key values its
    /// trigger reported (`None` from triggers that report none; malformed
    /// ones count as none: the change then retires every keyed list of its
    /// table). Unknown tables and operations are ignored (they cannot be in
    /// any cache).
    fn apply(&self, table: &str, id: i64, op: &str, key_values: Option<&str>) {
        self.counters.changed();
        if op == dialect::MIGRATED_OP {
            return self.flush(FlushReason::Migrated);
        }
        // An operation this larder does not know (a newer version's trigger,
        // a hand-written one) may have changed any row of the table.
        let op = Op::parse(op).unwrap_or_else(|| {
            tracing::warn!(
                table,
                op,
                "change with an unknown operation: the table emptied"
            );
            Op::Truncate
        });
        let touched = key_values.map_or_else(Vec::new, |text| {
            keys::parse(text).unwrap_or_else(|| {
                tracing::warn!(
                    table,
                    id,
                    "change with malformed key values: all lists retired"
                );
                Vec::new()
            })
        });
        // A panic there came from a cache of the table: it is cached here.
        let applied = survive("a change", || {
            self.registry.apply_remote(table, id, op, &touched)
        })
        .unwrap_or(true);
        tracing::trace!(table, id, ?op, applied, "change from the database");
    }

    /// Empties every cache: changes may have been missed. Logged at WARN
    /// (repeats of one reason at most once a second, see [`FlushLog`]).
    fn flush(&self, reason: FlushReason) {
        let now = Instant::now();
        // Recorded first: everything cached from here on is read after it.
        self.view.flushed(now);
        self.counters.flushed(reason);
        // Decided under the lock, logged outside it.
        let warn = self.flush_log.lock().warn(reason, now);
        match warn {
            // Announced, not missed: nothing to warn about.
            _ if reason == FlushReason::Migrated => {
                tracing::info!("coherence: caches flushed, migrations ran on the database");
            }
            Some(unwarned) => tracing::warn!(
                %reason,
                unwarned,
                "coherence: caches flushed, changes by other processes may have been missed ({reason})"
            ),
            None => tracing::debug!(%reason, "coherence: caches flushed"),
        }
        // Before emptying: the missed changes have no known WAL position.
        self.registry.requirement().forget();
        survive("a flush", || self.registry.clear_all());
    }

    /// Opens the watcher's own connection, with the timeouts that keep a
    /// check from waiting on a dead server for as long as the OS would.
    fn connect(&self) -> Result<Connection> {
        let mut conn = self
            .manager
            .open()
            .map_err(|e| self.url.connection_error(&e.0))?;
        session::prepare(&mut conn).map_err(|e| self.url.connection_error(&e.to_string()))?;
        Ok(conn)
    }
}

/// Runs `step` (applying a change, a flush) and survives its panic: a
/// cached row's destructor is application code, and the registry has run
/// every step of the invalidation before passing its panic on (see
/// `EveryStep`). Unwinding further would end the watcher thread, and with
/// it coherence for the rest of the process; the panic hook has reported it.
/// `None` when `step` panicked.
fn survive<T>(what: &'static str, step: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)) {
        Ok(value) => Some(value),
        Err(_) => {
            tracing::error!(
                "coherence: a cached value's destructor panicked while {what} was applied; \
                 it was applied in full"
            );
            None
        }
    }
}

/// One way of learning about changes: PostgreSQL notifications or a change log.
trait Source: Send {
    /// Reads the changes that arrived. Returns `Some(t)` when every change
    /// committed before `t` has now been applied, `None` when this call
    /// confirmed nothing new (but nothing went wrong). With `confirm`, it
    /// confirms now even if it would otherwise wait for its next turn.
    fn check(&mut self, ctx: &Context, confirm: bool) -> Result<Option<Instant>>;

    /// Between checks: waits for changes until the next check is due,
    /// applying those that arrive, and returns true; or returns false at
    /// once, and the watcher sleeps a tick. The wait is bounded by a timer,
    /// not by the network, so it is not part of a check the guard watches;
    /// a failure it meets is returned by the next check.
    fn wait(&mut self, ctx: &Context) -> bool {
        let _ = ctx;
        false
    }
}

/// How often the watcher wakes and the point past which it stops trusting
/// what it has seen.
#[derive(Debug, Clone, Copy)]
struct Timing {
    tick: Duration,
    /// The watcher empties the caches whenever its last confirmation is older.
    trust: Duration,
    /// How often the PostgreSQL listener proves its connection alive.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    heartbeat: Duration,
    /// The longest wait between reconnection attempts.
    max_backoff: Duration,
}

impl Timing {
    fn new(backend: Backend, max_staleness: Duration, poll_interval: Option<Duration>) -> Timing {
        let tick = poll_interval.unwrap_or_else(|| default_poll_interval(backend, max_staleness));
        Timing {
            tick,
            trust: max_staleness / 2,
            heartbeat: max_staleness / 4,
            max_backoff: Duration::from_secs(5).max(max_staleness),
        }
    }
}

/// How often the watcher looks for changes unless configured.
pub(crate) fn default_poll_interval(backend: Backend, max_staleness: Duration) -> Duration {
    match backend {
        // Only a listener that cannot wait for notifications (see `channel`)
        // reads them every tick; reading those that arrived costs no round trip.
        Backend::Postgres => {
            (max_staleness / 20).clamp(Duration::from_millis(1), Duration::from_millis(5))
        }
        _ => max_staleness / 4,
    }
}

/// How often a store without a watcher prunes the change log, as a watcher does.
pub(crate) const PRUNE_EVERY: Duration = poll::PRUNE_EVERY;

/// Prunes the change log (SQLite, MySQL) as a watcher does, for a store that
/// runs none (coherence off): the capture triggers write it all the same,
/// and other processes' watchers may be few or none. Nothing is read here,
/// so only age bounds what goes: rows older than the retention, the newest
/// row always kept.
pub(crate) fn prune_unwatched(conn: &mut Connection) -> diesel::QueryResult<()> {
    poll::prune(conn, i64::MAX)
}

/// How long building a store waits for the watcher's first connection:
/// longer than connecting, listening and hearing the probe take against a
/// server that answers (each step gives up within 5 s, see `session` and
/// `channel`). A server that accepts the socket and never answers would
/// otherwise hold the build for as long as the socket stays open: the
/// PostgreSQL listener's client bounds only the TCP connect.
const OPEN_WAIT: Duration = Duration::from_secs(20);

/// How long dropping a [`Watcher`] waits for its threads: longer than any
/// check against a server that answers takes (its statements and its
/// connection attempts give up after 5 s, see `session`).
const STOP_WAIT: Duration = Duration::from_secs(6);

/// The background threads of one store: the watcher, which reads changes,
/// and its guard, which flushes by the clock while a read is stuck. Dropping
/// it (with the store's last clone) stops both and waits for them, closing
/// the watcher's connection; a check stuck on a server that stopped
/// answering is waited for only [`STOP_WAIT`], then left to end on its own.
pub(crate) struct Watcher {
    stop: Arc<view::Stop>,
    threads: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Watcher {
    /// Connects to `url` (the store's session URL) and starts watching the
    /// database of `store_url`. The first connection is made here, before
    /// anything is cached, so no change can fall between the two.
    ///
    /// # Errors
    ///
    /// [`Error::Connection`] when the watcher's connection cannot be opened
    /// (or its server does not answer within [`OPEN_WAIT`]),
    /// [`Error::InvalidConfig`] when a PostgreSQL listener cannot hear what is
    /// notified through `store_url` (see `channel`).
    pub(crate) fn start(
        url: &DatabaseUrl,
        store_url: &DatabaseUrl,
        busy_timeout: Duration,
        registry: Arc<Registry>,
        max_staleness: Duration,
        poll_interval: Option<Duration>,
    ) -> Result<Watcher> {
        let counters = Arc::new(Counters::default());
        let timing = Timing::new(url.backend(), max_staleness, poll_interval);
        let ctx = Arc::new(Context {
            registry,
            counters: Arc::clone(&counters),
            // Short: the watcher's reads never wait for SQLite's write lock, and
            // its prune gives way to writers rather than stall the watcher.
            manager: Manager::new(
                session::watcher_url(url)?,
                busy_timeout.min(WATCHER_BUSY_TIMEOUT).min(timing.trust / 2),
            ),
            url: url.clone(),
            store_url: store_url.clone(),
            timing,
            view: view::View::new(),
            flush_log: Mutex::new(FlushLog::default()),
        });
        if url.backend() == Backend::Mysql {
            session::note_mysql_truncate();
        }
        let stop = Arc::new(view::Stop::default());
        let mut watcher = Watcher {
            stop: Arc::clone(&stop),
            threads: Vec::new(),
            counters,
        };
        let (opened, open) = std::sync::mpsc::sync_channel(1);
        let (ctx2, stop2, backend) = (Arc::clone(&ctx), Arc::clone(&stop), url.backend());
        watcher.spawn("larder-watcher", move || {
            if let Some(source) = open_on_this_thread(backend, &ctx2, &opened) {
                view::watch(&ctx2, source, &stop2);
            }
        })?;
        // Dropping `watcher` on an error stops the thread, and joins it
        // unless it is stuck on the network (it then ends when that returns).
        match open.recv_timeout(OPEN_WAIT) {
            Ok(opened) => opened?,
            Err(RecvTimeoutError::Timeout) => {
                return Err(url.connection_error(&format!(
                    "the coherence watcher's connection did not answer within {OPEN_WAIT:?}"
                )))
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::InvalidConfig {
                    reason: "the coherence thread ended before it connected".into(),
                })
            }
        }
        watcher.spawn("larder-guard", move || view::guard(&ctx, &stop))?;
        Ok(watcher)
    }

    fn spawn(&mut self, name: &str, body: impl FnOnce() + Send + 'static) -> Result<()> {
        let stop = Arc::clone(&self.stop);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // Told on return and on unwinding alike.
                let _ended = Ended(stop);
                body();
            })
            .map_err(|e| Error::InvalidConfig {
                reason: format!("cannot start the coherence thread {name}: {e}"),
            })?;
        self.threads.push(thread);
        Ok(())
    }

    pub(crate) fn stats(&self) -> CoherenceStats {
        self.counters.snapshot(true)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.stop();
        let deadline = Instant::now() + STOP_WAIT;
        let ended = self.stop.wait_ended(self.threads.len(), deadline);
        if !ended {
            // Joining would wait for the network, for as long as the server
            // or the path to it hangs: the thread ends when its check does.
            tracing::warn!(
                "coherence: the watcher is stuck in a check of a database that does not \
                 answer; the store is dropped without waiting for it"
            );
        }
        for thread in self.threads.drain(..) {
            if (ended || thread.is_finished()) && thread.join().is_err() {
                tracing::error!("a coherence thread panicked");
            }
        }
    }
}

/// Tells a watcher's [`Stop`](view::Stop) that its thread ended, when dropped.
struct Ended(Arc<view::Stop>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.ended();
    }
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Opens the watcher's source on the watcher's own thread and tells the
/// store being built how that went. Never on the building thread: the
/// PostgreSQL listener is a client that runs a runtime of its own, which
/// tokio refuses to start (or drop) on a thread driving async tasks, where a
/// store is often built (`#[tokio::main] async fn main`).
fn open_on_this_thread(
    backend: Backend,
    ctx: &Context,
    opened: &std::sync::mpsc::SyncSender<Result<()>>,
) -> Option<Box<dyn Source>> {
    match open_source(backend, ctx) {
        Ok(source) => {
            let _ = opened.send(Ok(()));
            Some(source)
        }
        Err(err) => {
            let _ = opened.send(Err(err));
            None
        }
    }
}

fn open_source(backend: Backend, ctx: &Context) -> Result<Box<dyn Source>> {
    Ok(match backend {
        #[cfg(feature = "postgres")]
        Backend::Postgres => Box::new(listen::Listener::open(ctx)?),
        _ => Box::new(poll::LogPoller::open(ctx)?),
    })
}

/// A connection with reconnection backoff: after a failure, attempts wait
/// from one tick doubling up to `max_backoff`.
struct Reconnect {
    failures: u32,
    next_attempt: Instant,
    lost: bool,
}

impl Reconnect {
    fn new() -> Reconnect {
        Reconnect {
            failures: 0,
            next_attempt: Instant::now(),
            lost: false,
        }
    }

    fn due(&self) -> bool {
        Instant::now() >= self.next_attempt
    }

    /// The connection failed or could not be opened.
    fn failed(&mut self, ctx: &Context, err: &Error) {
        if !self.lost {
            ctx.counters.lost();
            tracing::warn!(error = %err, "coherence connection lost; caches flushed until it is back");
            ctx.flush(FlushReason::ConnectionLost);
        }
        self.lost = true;
        let backoff = ctx
            .timing
            .tick
            .saturating_mul(1 << self.failures.min(16))
            .min(ctx.timing.max_backoff);
        self.failures = self.failures.saturating_add(1);
        self.next_attempt = Instant::now() + backoff;
    }

    /// A new connection works (again).
    fn recovered(&mut self, ctx: &Context) {
        self.failures = 0;
        if std::mem::take(&mut self.lost) {
            ctx.counters.reconnected();
            tracing::info!("coherence connection back");
        }
    }
}
