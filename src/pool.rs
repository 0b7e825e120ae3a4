//! The connection pool: r2d2 over larder connections of the URL's backend.
//!
//! A checkout pings its connection only when the connection has not proved
//! itself alive within [`TRUSTED_FOR`] (HikariCP's rule, with its 500 ms): a
//! ping costs a round trip, as much as the miss it precedes. A connection
//! the server dropped meanwhile fails its first statement instead; reads
//! are then retried once on a connection that was pinged
//! ([`Store::read`](crate::Store)), writes fail with
//! [`Error::ConnectionLost`](crate::Error::ConnectionLost) (they may have
//! committed), and the dead connection is discarded.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use scheduled_thread_pool::ScheduledThreadPool;

use crate::backend::{ConnectError, Gate, Manager, Session};
use crate::error::{Error, Result};
use crate::url::{with_params, Backend, DatabaseUrl};

pub(crate) use crate::backend::Connection;

/// An r2d2 pool that opens no connection once it is dropped (see `Gate`).
/// Not `Clone`: dropping it is what closes the gate.
pub(crate) struct Pool {
    pool: r2d2::Pool<Manager>,
    gate: Arc<Gate>,
    /// The pool's worker threads (see [`workers`]), which end with it.
    workers: Arc<ScheduledThreadPool>,
}

impl Pool {
    /// Builds an r2d2 pool over `manager` with `build`, which runs it on
    /// the worker threads it is given, and guards it.
    pub(crate) fn new<E>(
        manager: Manager,
        build: impl FnOnce(
            Manager,
            Arc<ScheduledThreadPool>,
        ) -> std::result::Result<r2d2::Pool<Manager>, E>,
    ) -> std::result::Result<Pool, E> {
        let gate = Arc::clone(&manager.gate);
        let workers = workers();
        Ok(Pool {
            pool: build(manager, Arc::clone(&workers))?,
            gate,
            workers,
        })
    }

    /// Runs `job` on the pool's worker threads every `period`, the first
    /// time one `period` from now, until the pool is dropped. `job` must
    /// not hold the pool (nor what holds it): the pool would then never be
    /// dropped.
    pub(crate) fn every(&self, period: Duration, job: impl FnMut() + Send + 'static) {
        drop(self.workers.execute_at_fixed_rate(period, period, job));
    }
}

impl Deref for Pool {
    type Target = r2d2::Pool<Manager>;

    fn deref(&self) -> &r2d2::Pool<Manager> {
        &self.pool
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.gate.close();
    }
}

/// The threads an r2d2 pool opens connections and reaps idle ones on.
/// r2d2's default pool keeps them after the pool is dropped until its next
/// reaper run, up to 30 s later: stores built and dropped in a row (a test
/// suite, a configuration reload) piled up three threads each, and a process
/// under a thread limit failed to build its next store. This one ends its
/// threads when the pool is dropped: its pending jobs (the reaper, a retried
/// open) only serve the pool.
fn workers() -> Arc<ScheduledThreadPool> {
    Arc::new(
        ScheduledThreadPool::builder()
            .num_threads(3)
            .thread_name_pattern("larder-pool-{}")
            .on_drop_behavior(scheduled_thread_pool::OnPoolDropBehavior::DiscardPendingScheduled)
            .build(),
    )
}

pub(crate) type PooledConn = r2d2::PooledConnection<Manager>;

/// How long after its last success a connection is handed out without a ping.
pub(crate) const TRUSTED_FOR: Duration = Duration::from_millis(500);

/// Pool settings, as given to [`StoreBuilder`](crate::StoreBuilder).
#[derive(Debug, Clone)]
pub(crate) struct PoolConfig {
    pub(crate) size: u32,
    pub(crate) connection_timeout: Duration,
    pub(crate) busy_timeout: Duration,
}

/// Opens one connection first, so that a bad path or server is reported with its
/// real cause instead of r2d2's generic timeout, then builds the pool. Every
/// checkout validates its connection (r2d2's `test_on_check_out`), which pings
/// only a connection not trusted any more (see [`Pooled`]).
pub(crate) fn build(url: &DatabaseUrl, config: &PoolConfig) -> Result<Pool> {
    let manager = Manager::new(
        with_network_timeouts(url, config.connection_timeout)?,
        config.busy_timeout,
    );
    drop(manager.open().map_err(|e| url.connection_error(&e.0))?);
    Pool::new(manager, |manager, workers| {
        r2d2::Pool::builder()
            .max_size(config.size)
            .min_idle(Some(1))
            .thread_pool(workers)
            .test_on_check_out(true)
            .connection_timeout(config.connection_timeout)
            .build(manager)
    })
    .map_err(|e| url.connection_error(&e.to_string()))
}

/// `url`, on PostgreSQL with libpq's `connect_timeout` (whole seconds, at
/// least 2, as libpq reads it) set to `timeout` and [`TCP_PARAMS`], each
/// unless the URL sets it: without a connect timeout, a server that accepts
/// the socket and never answers holds the connecting thread (the caller's,
/// at build) for as long as the socket stays open. diesel's MySQL client
/// reads no such setting from the URL.
pub(crate) fn with_network_timeouts(url: &DatabaseUrl, timeout: Duration) -> Result<DatabaseUrl> {
    if url.backend() != Backend::Postgres {
        return Ok(url.clone());
    }
    let seconds = timeout
        .as_secs()
        .saturating_add(u64::from(timeout.subsec_nanos() > 0));
    let seconds = seconds.max(2).to_string();
    let mut params = vec![("connect_timeout", seconds.as_str())];
    params.extend_from_slice(TCP_PARAMS);
    DatabaseUrl::parse(&with_params(url.target(), &params))
}

/// What bounds a statement's wait on a server host that vanished without a
/// word (a power cut, a failed path, a NAT that dropped the flow: no RST
/// ever comes) on the connections the pool, the locks and the replicas
/// open: keepalive probes after 10 s idle, 5 s apart, and the connection
/// dropped once sent data (a statement, a probe) stays unacknowledged for
/// 30 s. libpq's defaults probe only after the kernel's two idle hours and
/// let a request wait for the kernel's retransmissions (about 15 minutes):
/// a `get` or a `COMMIT` waiting for an answer, and every caller of its key
/// waiting on its flight, hung that long. A live server's kernel answers
/// both however long a statement runs. No setting bounds a server process
/// that stopped (`SIGSTOP`, hung storage) on a host whose kernel still
/// answers: see docs/deployment.md.
const TCP_PARAMS: &[(&str, &str)] = &[
    ("keepalives", "1"),
    ("keepalives_idle", "10"),
    ("keepalives_interval", "5"),
    ("keepalives_count", "3"),
    ("tcp_user_timeout", "30000"),
];

/// A pooled connection and what the pool knows of its health.
#[derive(Debug)]
pub(crate) struct Pooled {
    conn: Connection,
    /// When it last proved alive: opened, pinged, or a statement succeeded.
    /// `None` after a failure, so that the next checkout pings it.
    last_ok: Option<Instant>,
    /// This checkout handed it out without a ping.
    unchecked: bool,
    /// A statement found it dead: the pool discards it on return.
    lost: bool,
    /// Its session is in a state larder could not undo (a transaction the
    /// application opened that would not roll back): discarded on return.
    spoiled: bool,
    /// Its server session, read when it opened: a write lost in flight
    /// ends it before the caches hear of the write (see `lost`).
    session: Option<Session>,
}

impl Pooled {
    fn new(mut conn: Connection) -> Pooled {
        let session = crate::backend::session_of(&mut conn);
        Pooled {
            conn,
            last_ok: Some(Instant::now()),
            unchecked: false,
            lost: false,
            spoiled: false,
            session,
        }
    }

    /// The server session a statement on it found lost, if any: one that may
    /// still be running that statement.
    pub(crate) fn lost_session(&self) -> Option<Session> {
        self.session.filter(|_| self.lost)
    }

    /// Whether this checkout skipped the ping, so that a failure may only
    /// mean the connection died while idle.
    pub(crate) fn unchecked(&self) -> bool {
        self.unchecked
    }

    /// Records the outcome of work on this connection, mapped by the caller:
    /// success renews the trust, any failure withdraws it, and a lost
    /// connection is never handed out again.
    pub(crate) fn settle<T>(&mut self, result: &Result<T>) {
        match result {
            Ok(_) => self.last_ok = Some(Instant::now()),
            Err(err) => {
                self.last_ok = None;
                self.lost |= matches!(err, Error::ConnectionLost { .. });
            }
        }
    }

    /// After the application's own SQL on it failed outside any transaction
    /// of larder's: a transaction that SQL opened and did not end (a batch
    /// `BEGIN; …; COMMIT` whose middle statement failed) is still open on the
    /// server, unknown to diesel, and the next caller's autocommitted writes
    /// would run in it, reported committed and never committed. Rolled back
    /// here (and on MySQL its table locks released, `autocommit` turned
    /// back on), so that the
    /// connection goes back to the pool outside any; a ROLLBACK with none
    /// open changes nothing (SQLite's error is ignored). Call it after
    /// [`settle`](Self::settle): a lost connection is discarded instead, and
    /// a transaction diesel knows of is its own.
    pub(crate) fn end_stray_transaction(&mut self) {
        self.conn.app_sql_may_have_opened();
        if self.lost {
            return;
        }
        // Called outside larder's transactions: one diesel counts is the
        // application's (a test transaction, which the pool would keep).
        self.end_diesel_transactions();
        if self.conn.transaction_depth() == 0 {
            let _ = self.conn.end_foreign_transaction();
        }
    }

    /// Rolls back the transactions diesel counts on it, which outside
    /// larder's are the application's own (`begin_test_transaction` or
    /// `AnsiTransactionManager::begin_transaction` on the connection
    /// [`with_connection!`](crate::with_connection) lends, left open); a
    /// connection on which that fails is discarded on return. Returns
    /// whether there was one.
    fn end_diesel_transactions(&mut self) -> bool {
        let depth = self.conn.transaction_depth();
        for _ in 0..depth {
            if let Err(err) = self.conn.rollback() {
                tracing::warn!(error = %err, "could not roll back a transaction the application's SQL left open: the connection is discarded");
                self.spoiled = true;
                break;
            }
        }
        depth != 0
    }

    /// After the application's own SQL on it succeeded outside any
    /// transaction of larder's (`Repo::run`, a list query's or `Repo::write`'s
    /// closure): a transaction that SQL opened and left open (`BEGIN`,
    /// `START TRANSACTION`, SQLite's `SAVEPOINT` outside any, MySQL's
    /// `autocommit = 0`) would take in the next caller's autocommitted
    /// writes, reported committed and never committed, and its reads,
    /// cached uncommitted or from an old snapshot. Rolled back here, and
    /// refused: what the SQL wrote in it is not in the database, and the
    /// caller must not be told `Ok`. Costs a round trip when a statement
    /// since [`watch_app_sql`](Connection::watch_app_sql) named a word that
    /// opens a transaction (see [`app_sql`](crate::app_sql)), nothing
    /// otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when a transaction was open; the error of
    /// the check when the session could not answer it (PostgreSQL's
    /// [`Error::TransactionAborted`] for a transaction the SQL left failed,
    /// [`Error::ConnectionLost`]), a transaction rolled back all the same.
    pub(crate) fn refuse_open_transaction(&mut self, table: Option<&'static str>) -> Result<()> {
        let suspect = self.conn.app_sql_may_have_opened();
        if self.lost {
            return Ok(());
        }
        // Called outside larder's transactions: a transaction diesel counts
        // is one the application began through diesel and left open. Not
        // watched: diesel sends its BEGIN outside the closure's statements
        // only when the closure asks, and a test transaction would go back
        // to the pool (diesel keeps a connection in one on purpose).
        let diesels = self.end_diesel_transactions();
        let open = if suspect && !self.spoiled {
            self.conn
                .foreign_transaction_open()
                .map_err(|e| Error::from_diesel(e, table, None))
        } else {
            Ok(false)
        };
        let foreign = !matches!(open, Ok(false));
        if !diesels && !foreign {
            return Ok(());
        }
        let refused = open.and_then(|_| {
            Err(Error::InvalidConfig {
                reason: format!(
                    "the application's SQL on {} left a transaction open on its pooled \
                     connection (BEGIN, START TRANSACTION, a SAVEPOINT outside one, MySQL's \
                     autocommit = 0 or completion_type = CHAIN, or one begun through diesel's transaction manager): it \
                     was rolled back, and what it wrote in it is not in the database; use \
                     Store::begin or Store::transaction",
                    table.unwrap_or("the database")
                ),
            })
        });
        self.settle(&refused);
        if foreign && !self.lost {
            self.end_foreign_transaction();
        }
        refused
    }

    /// After the application's own SQL ran in a transaction of larder's
    /// that has ended: rolls back what that SQL may have left open (MySQL's
    /// `autocommit = 0` outlives the transaction it was set in, and opens
    /// one for the next caller's every statement); returns whether it did.
    /// `suspect`: whether the watch, disarmed before larder's COMMIT or
    /// ROLLBACK, saw a statement that may have.
    pub(crate) fn end_open_transaction(&mut self, suspect: bool) -> bool {
        let suspect = self.conn.app_sql_may_have_opened() | suspect;
        if !suspect || self.lost || self.conn.transaction_depth() != 0 {
            return false;
        }
        if matches!(self.conn.foreign_transaction_open(), Ok(false)) {
            return false;
        }
        self.end_foreign_transaction();
        true
    }

    /// Rolls back a transaction diesel knows nothing of; a connection on
    /// which that fails is discarded on return.
    fn end_foreign_transaction(&mut self) {
        if let Err(err) = self.conn.end_foreign_transaction() {
            tracing::warn!(error = %err, "could not roll back a transaction the application's SQL left open: the connection is discarded");
            self.spoiled = true;
        }
    }

    /// Pings it unless this checkout already did.
    pub(crate) fn ensure_alive(&mut self) -> diesel::QueryResult<()> {
        if !self.unchecked {
            return Ok(());
        }
        let alive = self.conn.ping();
        self.unchecked = false;
        match alive {
            Ok(()) => self.last_ok = Some(Instant::now()),
            Err(_) => self.lost = true,
        }
        alive
    }
}

impl Deref for Pooled {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Pooled;
    type Error = ConnectError;

    fn connect(&self) -> std::result::Result<Pooled, ConnectError> {
        let Some(_open) = self.gate.enter() else {
            return Err(ConnectError("the pool was dropped".into()));
        };
        self.open().map(Pooled::new)
    }

    /// Pings only a connection that has not succeeded within [`TRUSTED_FOR`].
    fn is_valid(&self, conn: &mut Pooled) -> std::result::Result<(), ConnectError> {
        let trusted = conn.last_ok.is_some_and(|at| at.elapsed() < TRUSTED_FOR);
        conn.unchecked = trusted;
        if trusted {
            return Ok(());
        }
        self.ping(&mut conn.conn)?;
        conn.last_ok = Some(Instant::now());
        Ok(())
    }

    /// A connection returned while its thread panics, with a transaction
    /// left open, found dead, or spoiled, is never reused.
    fn has_broken(&self, conn: &mut Pooled) -> bool {
        std::thread::panicking() || conn.lost || conn.spoiled || conn.conn.is_broken()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool_target(url: &str, timeout: Duration) -> String {
        let url = DatabaseUrl::parse(url).unwrap();
        with_network_timeouts(&url, timeout)
            .unwrap()
            .target()
            .to_owned()
    }

    #[test]
    fn a_postgres_pool_connects_within_its_timeout_in_whole_seconds() {
        let url = "postgres://app:s3cret@db/blog";
        let tcp = "&keepalives=1&keepalives_idle=10&keepalives_interval=5&keepalives_count=3\
                   &tcp_user_timeout=30000";
        assert_eq!(
            pool_target(url, Duration::from_millis(2500)),
            format!("{url}?connect_timeout=3{tcp}")
        );
        assert!(pool_target(url, Duration::from_millis(300)).contains("?connect_timeout=2&"));
        // The operator's settings win.
        let set = "postgres://db/blog?connect_timeout=30&keepalives=0&tcp_user_timeout=0";
        assert_eq!(
            pool_target(set, Duration::from_secs(5)),
            format!("{set}&keepalives_idle=10&keepalives_interval=5&keepalives_count=3")
        );
        let sqlite = DatabaseUrl::parse("sqlite://app.db").unwrap();
        let unchanged = with_network_timeouts(&sqlite, Duration::from_secs(5)).unwrap();
        assert_eq!(unchanged.target(), sqlite.target());
    }
}
