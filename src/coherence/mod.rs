//! Cross-process coherence: changes committed by other processes (other larder
//! processes, or any SQL client) reach this process's caches.
//!
//! Triggers in the database capture every committed change of a cached table
//! ([`capture`]). One background thread per [`Store`](crate::Store), the
//! watcher, brings them in: on PostgreSQL it listens for the triggers'
//! notifications on its own connection ([`listen`]); on SQLite and MySQL it
//! polls the change log the triggers write ([`poll`]). Each change invalidates
//! the key it names, through the same registry as local commits.
//!
//! The staleness bound holds even when the watcher cannot do its job: whenever
//! its last confirmed view of the database is older than half the bound (its
//! connection was lost, the change log is missing, a poll failed), it empties
//! every cache, on every tick until it recovers.

pub(crate) mod capture;
mod counters;
mod listen;
mod poll;

use std::fmt;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::backend::{Connection, Manager};
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::url::{Backend, DatabaseUrl};

pub(crate) use counters::Counters;
use counters::FlushLog;
pub use counters::{CoherenceStats, FlushCounts, FlushReason};

/// The longest the watcher's SQLite connection waits for a lock.
const WATCHER_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// What a change did to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Insert,
    Update,
    Delete,
    /// PostgreSQL `TRUNCATE`: every row of the table.
    Truncate,
}

impl Op {
    fn parse(code: &str) -> Option<Op> {
        match code {
            "I" => Some(Op::Insert),
            "U" => Some(Op::Update),
            "D" => Some(Op::Delete),
            "T" => Some(Op::Truncate),
            _ => None,
        }
    }
}

/// What the watcher shares with the code that reads changes.
pub(crate) struct Context {
    registry: Arc<Registry>,
    counters: Arc<Counters>,
    manager: Manager,
    url: DatabaseUrl,
    timing: Timing,
    flush_log: Mutex<FlushLog>,
}

impl Context {
    /// Applies one change read from the database; unknown tables and malformed
    /// changes are ignored (they cannot be in any cache).
    fn apply(&self, table: &str, id: i64, op: &str) {
        self.counters.changed();
        let Some(op) = Op::parse(op) else {
            tracing::warn!(table, op, "change with an unknown operation ignored");
            return;
        };
        let applied = self.registry.apply_remote(table, id, op);
        tracing::trace!(table, id, ?op, applied, "change from the database");
    }

    /// Empties every cache: changes may have been missed. Logged at WARN
    /// (repeats of one reason at most once a second, see [`FlushLog`]).
    fn flush(&self, reason: FlushReason) {
        self.counters.flushed(reason);
        // Decided under the lock, logged outside it.
        let warn = self.flush_log.lock().warn(reason, Instant::now());
        match warn {
            Some(unwarned) => tracing::warn!(
                %reason,
                unwarned,
                "coherence: caches flushed, changes by other processes may have been missed ({reason})"
            ),
            None => tracing::debug!(%reason, "coherence: caches flushed"),
        }
        self.registry.clear_all();
    }

    fn connect(&self) -> Result<Connection> {
        use r2d2::ManageConnection;
        self.manager
            .connect()
            .map_err(|e| self.url.connection_error(&e.0))
    }
}

/// One way of learning about changes: PostgreSQL notifications or a change log.
trait Source: Send {
    /// Reads the changes that arrived. Returns `Some(t)` when every change
    /// committed before `t` has now been applied, `None` when this call
    /// confirmed nothing new (but nothing went wrong).
    fn check(&mut self, ctx: &Context) -> Result<Option<Instant>>;
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
        // Reading notifications that already arrived costs no round trip.
        Backend::Postgres => {
            (max_staleness / 20).clamp(Duration::from_millis(1), Duration::from_millis(5))
        }
        _ => max_staleness / 4,
    }
}

/// The background thread of one store. Dropping it (with the store's last
/// clone) stops the thread and waits for it, closing its connection.
pub(crate) struct Watcher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Watcher {
    /// Connects and starts watching. The first connection is made here, before
    /// anything is cached, so no change can fall between the two.
    ///
    /// # Errors
    ///
    /// [`Error::Connection`] when the watcher's connection cannot be opened.
    pub(crate) fn start(
        url: &DatabaseUrl,
        busy_timeout: Duration,
        registry: Arc<Registry>,
        max_staleness: Duration,
        poll_interval: Option<Duration>,
    ) -> Result<Watcher> {
        let counters = Arc::new(Counters::default());
        let ctx = Context {
            registry,
            counters: Arc::clone(&counters),
            // Short: the watcher's reads never wait for SQLite's write lock, and
            // its prune gives way to writers rather than stall the watcher.
            manager: Manager::new(url.clone(), busy_timeout.min(WATCHER_BUSY_TIMEOUT)),
            url: url.clone(),
            timing: Timing::new(url.backend(), max_staleness, poll_interval),
            flush_log: Mutex::new(FlushLog::default()),
        };
        let source = open_source(url.backend(), &ctx)?;
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("larder-watcher".into())
            .spawn(move || watch(&ctx, source, &stopped))
            .map_err(|e| Error::InvalidConfig {
                reason: format!("cannot start the coherence thread: {e}"),
            })?;
        Ok(Watcher {
            stop: Some(stop),
            thread: Some(thread),
            counters,
        })
    }

    pub(crate) fn stats(&self) -> CoherenceStats {
        self.counters.snapshot(true)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Closing the channel wakes the thread at once.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the coherence thread panicked");
            }
        }
    }
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn open_source(backend: Backend, ctx: &Context) -> Result<Box<dyn Source>> {
    Ok(match backend {
        #[cfg(feature = "postgres")]
        Backend::Postgres => Box::new(listen::Listener::open(ctx)?),
        _ => Box::new(poll::LogPoller::open(ctx)?),
    })
}

fn watch(ctx: &Context, mut source: Box<dyn Source>, stopped: &mpsc::Receiver<()>) {
    let timing = ctx.timing;
    let mut confirmed = Instant::now();
    // Why the view is not confirmed, while the last check failed.
    let mut down = None;
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(timing.tick) {
        match source.check(ctx) {
            Ok(Some(at)) => (confirmed, down) = (at, None),
            Ok(None) => {}
            Err(Error::Migration { .. }) => down = Some(FlushReason::NoChangeLog),
            Err(err) => {
                tracing::debug!(error = %err, "coherence check failed");
                down = Some(FlushReason::ConnectionLost);
            }
        }
        if confirmed.elapsed() > timing.trust {
            ctx.flush(down.unwrap_or(FlushReason::Unconfirmed));
        }
    }
    tracing::debug!("coherence thread stopped");
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
