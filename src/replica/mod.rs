//! Read replicas without stale fills (PostgreSQL streaming replicas).
//!
//! Writes, transactions, locks and migrations use the primary's pool. A load
//! that fills a cache (`get`, `get_many`, `query`, `cached_query`,
//! `cached_value`) may run on a replica, but only on one known to have
//! replayed every change this store has already applied an invalidation for.
//! Otherwise it runs on the primary: a load never waits for a replica to catch up.
//!
//! # The rule
//!
//! [`Requirement`](crate::requirement::Requirement) holds the *required position*: a primary WAL position at or
//! past the commit record of every change this store has invalidated.
//!
//! - A local commit: `pg_current_wal_insert_lsn()` on the committing connection
//!   right after COMMIT returned (the commit record is inserted by then, even
//!   for an asynchronous commit, which returns before it is written), raised into
//!   the requirement BEFORE the commit's keys are invalidated.
//! - A change heard by the watcher (another process's commit): the watcher
//!   reads `pg_current_wal_insert_lsn()` on its own connection after receiving a
//!   batch of notifications (the changes had committed before they were
//!   sent), raises the requirement, and only then applies the batch.
//!   Notifications that arrive with that query's answer may belong to commits
//!   after the position was read: they form the next batch and get a
//!   position read of their own.
//! - An invalidation whose position is unknown (a watcher flush after a lost
//!   connection or a late view, a failed commit, a failed single-statement
//!   write, `Store::invalidate`, `Store::clear_cache`, migrations) makes the
//!   requirement *unknown* first: every load goes to the primary until a
//!   position read that started after that moment repairs it (the next local
//!   commit, the watcher's next batch or heartbeat).
//! - At build, after the watcher listens, the primary's position: rows
//!   committed before the store started, which no notification will name,
//!   are not read older than that from a replica either.
//!
//! A load on a replica: the required position is read AFTER the cache's
//! epochs were recorded; then one `SELECT CASE WHEN pg_is_in_recovery() THEN
//! pg_last_wal_replay_lsn() END` runs on the connection the load then uses,
//! in the read-only transaction the load then runs in, READ COMMITTED
//! whatever the sessions' default (the check's own snapshot predates its
//! answer): the load's snapshot is taken after that replay point, so it sees every
//! commit up to it, and the server was still a replica then. It runs on
//! every load, and nothing it answered is remembered for the next: a
//! server is promoted without ending its sessions, after which it takes
//! writes of its own while its replay position stays where its recovery
//! ended (a position remembered from before served a row written on the
//! promoted server alone, cached for good). Nor does one connection's
//! answer speak for another's: one replica URL may reach several servers
//! (a load balancer in front of replicas, a name moved to another server
//! while connections to the old one live on). A replica still behind is
//! skipped; the primary serves the load, and loads skip that replica
//! without asking again for [`RECHECK_AFTER`] (routing only: correctness
//! never depends on a clock).
//!
//! # Interleavings
//!
//! - *An invalidation lands between the position check and the fill*: the
//!   epoch rule drops the fill, as for a primary load (the epochs were
//!   recorded before the check).
//! - *A load starts after an invalidation*: its epochs are read after the
//!   invalidation, which came after the requirement was raised (program order
//!   in the invalidating thread, made visible by the cache's locks and
//!   sequentially consistent epoch counters), so it sees the raised
//!   requirement. Raising after invalidating would let such a load read the
//!   old row from a lagging replica and fill it with a current epoch:
//!   a stale row for good. This is why the watcher holds a batch back until
//!   its position is read.
//! - *The watcher loses its connection*: notifications may be lost, so it
//!   flushes, which forgets the requirement before emptying the caches; loads
//!   go to the primary until a position read started after the flush.
//! - *A position read after a commit fails*: the requirement is forgotten
//!   before the invalidation is applied.
//! - *A replica restarts*: it resumes from its last restart point and may
//!   show an older state than before for a while; each load asks the
//!   position anew. A connection that fails marks the replica down.
//! - *A replica is promoted while connected*: its sessions live on; the
//!   next load's check finds it out of recovery and marks it down.
//! - *A replica is promoted during a load*, after its check: each statement
//!   of the load (READ COMMITTED) takes a snapshot of its own, which may hold
//!   rows written on the promoted server alone. The load runs in the check's
//!   read-only transaction, ended by a statement that fails when the server
//!   is out of recovery (promotion is one-way for a live session): the load
//!   fails as [`Error::ConnectionLost`] and fills nothing (`get` and
//!   `get_many` load from the primary), and the replica rests.
//! - *A transaction-mode pooler in front of several replicas* lends a server
//!   session per transaction: the check and the load share one, so they
//!   reach one server.
//! - *A replica URL reaches several servers*: each load asks the server of
//!   its own connection, so a lagging server is asked however far another
//!   server behind the URL has replayed.
//! - *A replica is down or unreachable*: the load falls back to the primary;
//!   the replica rests ([`RETRY_AFTER`]) before one load tries it again, so a
//!   dead replica costs one short checkout timeout per second, not one per
//!   load. A replica that answers but is not in recovery (promoted) is
//!   treated as down: its positions are of another timeline.
//! - *Replay paused or late while it holds a lock it replayed* (a schema
//!   change's, a `LOCK TABLE`'s): the replica may have replayed every change
//!   the store invalidated, yet a load of that table would wait until replay
//!   releases the lock. Its sessions wait [`LOCK_WAIT`] at most; the load
//!   goes to the primary (a list load, which cannot run twice, fails with
//!   `Error::Busy`) and the replica rests.
//! - *Bounded staleness*: a change heard within the bound is invalidated
//!   within it as before; a replica can only delay nothing, since a load it
//!   cannot serve goes to the primary.
//!
//! Read-your-writes follows: a commit's position is raised before its keys
//! are invalidated, so this store's next load of them runs on a replica that
//! has replayed the commit, or on the primary.

mod position;

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use diesel::QueryResult;
use parking_lot::Mutex;

use crate::backend::{Connection, Manager};
use crate::error::{Error, Result};
use crate::pool::{Pool, PoolConfig, PooledConn};
use crate::url::DatabaseUrl;

#[cfg(feature = "postgres")]
pub(crate) use crate::requirement::parse_lsn;
pub(crate) use crate::requirement::Lsn;
pub(crate) use position::primary as primary_position;
#[cfg(feature = "postgres")]
pub(crate) use position::primary_pg as primary_position_pg;

/// How long a replica found down is left alone before a load tries it again.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long after a check found a replica behind the requirement loads skip
/// it without asking again: a replica far behind would otherwise cost a
/// position query per load. Only routing depends on it, never correctness.
const RECHECK_AFTER: Duration = Duration::from_millis(1);

/// The longest a load waits for a replica connection before using the
/// primary: a down replica refuses at once, r2d2 retries until this.
const CHECKOUT_TIMEOUT: Duration = Duration::from_millis(250);

/// The longest a load on a replica waits for a lock (`lock_timeout`): the
/// locks it meets there are held by replay until it replays their release,
/// which a paused replica never does. The load then goes to the primary
/// and the replica rests ([`RETRY_AFTER`]).
const LOCK_WAIT: Duration = Duration::from_millis(250);

/// The store's replicas and how loads were routed.
pub(crate) struct Replicas {
    replicas: Vec<Replica>,
    /// Round robin over the replicas.
    next: AtomicUsize,
    counters: Counters,
}

struct Replica {
    url: DatabaseUrl,
    pool: Pool,
    state: Mutex<ReplicaState>,
}

#[derive(Default)]
struct ReplicaState {
    /// The replay position last read on any of its connections: a routing
    /// hint (whether to skip it for a moment), never trusted for a load.
    replayed: Lsn,
    /// Found down: not tried again before this.
    resting_until: Option<Instant>,
    /// Down since its last success (for logging each transition once).
    down: bool,
    /// A check found it behind: not checked again before this.
    behind_until: Option<Instant>,
}

#[derive(Default)]
struct Counters {
    replica_loads: AtomicU64,
    primary_loads: AtomicU64,
    lagging: AtomicU64,
    down: AtomicU64,
    unknown: AtomicU64,
    position_checks: AtomicU64,
}

/// How a store with replicas routed its loads, from
/// [`Stats::replicas`](crate::Stats::replicas). All zero without replicas.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let url = format!("sqlite://{}", dir.path().join("doc.db").display());
/// let store = larder::Store::open(&url)?;
/// let replicas = store.stats().replicas;
/// assert_eq!(replicas.replicas, 0);
/// assert_eq!(replicas.replica_share(), 0.0);
/// # Ok::<(), larder::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    /// Replicas configured.
    pub replicas: usize,
    /// Loads a replica served.
    pub replica_loads: u64,
    /// Loads the primary served although replicas are configured.
    pub primary_loads: u64,
    /// Times a replica was skipped because it had not replayed far enough.
    pub skipped_lagging: u64,
    /// Times a replica was skipped because it was down, resting after a
    /// failure, not a replica (a promoted server, which reports no replay
    /// position), or had no free connection.
    pub skipped_down: u64,
    /// Loads sent to the primary because the required position was unknown
    /// (after a flush or a failed commit, until the next position read).
    pub unknown_position: u64,
    /// `pg_last_wal_replay_lsn()` queries run: the cost of the check, one
    /// before every load a replica serves (and one per replica found behind).
    pub position_checks: u64,
}

impl ReplicaStats {
    /// The share of loads replicas served, 0.0 when there were none.
    ///
    /// ```
    /// let stats = larder::ReplicaStats { replica_loads: 3, primary_loads: 1, ..Default::default() };
    /// assert_eq!(stats.replica_share(), 0.75);
    /// ```
    pub fn replica_share(&self) -> f64 {
        let total = self.replica_loads + self.primary_loads;
        if total == 0 {
            0.0
        } else {
            self.replica_loads as f64 / total as f64
        }
    }
}

/// A replica connection chosen for one load.
pub(crate) struct Chosen<'r> {
    replica: &'r Replica,
    pub(crate) conn: PooledConn,
}

impl Replicas {
    /// Pools for `urls` (already checked to be PostgreSQL), opened lazily: a
    /// replica down at start is skipped like one that goes down later.
    pub(crate) fn build(urls: Vec<DatabaseUrl>, config: &PoolConfig) -> Result<Replicas> {
        let replicas = urls
            .into_iter()
            .map(|url| {
                let manager = manager(&url, config)?;
                let Ok(pool) = Pool::new(manager, |manager, workers| {
                    Ok::<_, std::convert::Infallible>(
                        r2d2::Pool::builder()
                            .max_size(config.size)
                            .min_idle(Some(0))
                            .thread_pool(workers)
                            .test_on_check_out(true)
                            .connection_timeout(CHECKOUT_TIMEOUT.min(config.connection_timeout))
                            // Failures are logged here, once per transition, scrubbed.
                            .error_handler(Box::new(r2d2::NopErrorHandler))
                            .build_unchecked(manager),
                    )
                });
                Ok(Replica {
                    url,
                    pool,
                    state: Mutex::new(ReplicaState::default()),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Replicas {
            replicas,
            next: AtomicUsize::new(0),
            counters: Counters::default(),
        })
    }

    /// A replica connection whose snapshot will include everything up to
    /// `required`, or `None`: use the primary (counted). The connection's
    /// server was in recovery, replayed that far, when this checkout asked
    /// it, which also proves the connection alive.
    pub(crate) fn choose(&self, required: Option<Lsn>) -> Option<Chosen<'_>> {
        let chosen = match required {
            Some(required) => self.find(required),
            None => {
                self.counters.unknown.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        if chosen.is_none() {
            self.counters.primary_loads.fetch_add(1, Ordering::Relaxed);
        }
        chosen
    }

    fn find(&self, required: Lsn) -> Option<Chosen<'_>> {
        let n = self.replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let replica = &self.replicas[(start + k) % n];
            if replica.resting() {
                self.counters.down.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if replica.known_behind(required) {
                self.counters.lagging.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let mut conn = match replica.pool.get() {
                Ok(conn) => conn,
                Err(err) => {
                    self.counters.down.fetch_add(1, Ordering::Relaxed);
                    let state = replica.pool.state();
                    // Every connection busy is a busy replica, not a dead one.
                    if state.idle_connections > 0 || state.connections < replica.pool.max_size() {
                        replica.failed(&err.to_string());
                    }
                    continue;
                }
            };
            // Asked on every load, never remembered: a server leaves recovery
            // (promoted) without ending its sessions, and a position it
            // reported before says nothing of what it serves after. Asked in
            // the transaction the load then runs in: a transaction-mode
            // pooler switches servers between transactions only.
            self.counters
                .position_checks
                .fetch_add(1, Ordering::Relaxed);
            let replayed = position::replayed_in_transaction(&mut conn, LOCK_WAIT)
                .map_err(|e| Error::from_diesel(e, None, None));
            conn.settle(&replayed);
            match replayed {
                Ok(Some(lsn)) if lsn >= required => {
                    replica.saw(lsn, required);
                    return Some(Chosen { replica, conn });
                }
                Ok(Some(lsn)) => {
                    replica.saw(lsn, required);
                    self.counters.lagging.fetch_add(1, Ordering::Relaxed);
                }
                Ok(None) => {
                    self.counters.down.fetch_add(1, Ordering::Relaxed);
                    replica.failed("the server is not in recovery (promoted?)");
                }
                Err(err) => {
                    self.counters.down.fetch_add(1, Ordering::Relaxed);
                    replica.failed(&err.to_string());
                }
            }
            end_transaction(&mut conn);
        }
        None
    }

    /// Ends the load on `chosen` that returned `result`, and its
    /// transaction: a success counts, unless the server turns out to have
    /// left recovery meanwhile (promoted during the load: what it read may
    /// be the promoted server's own), which fails the load as
    /// [`Error::ConnectionLost`]; a failure marks the replica down, and the
    /// caller retries on the primary when it can.
    pub(crate) fn finish<T>(
        &self,
        mut chosen: Chosen<'_>,
        table: Option<&'static str>,
        result: Result<T>,
    ) -> Result<T> {
        chosen.conn.settle(&result);
        let result = match result {
            Ok(value) => match position::end_load(&mut chosen.conn) {
                Ok(()) => Ok(value),
                Err(source) => {
                    // Its message says which (the server's, or the promotion's
                    // RAISE); the connection is never handed out again.
                    let lost = Err(Error::ConnectionLost { table, source });
                    chosen.conn.settle(&lost);
                    lost
                }
            },
            Err(err) => {
                end_transaction(&mut chosen.conn);
                // A caller's list query may have left a transaction of its
                // own SQL open, past diesel's count.
                chosen.conn.end_stray_transaction();
                Err(err)
            }
        };
        match &result {
            Ok(_) => {
                self.counters.replica_loads.fetch_add(1, Ordering::Relaxed);
                chosen.replica.succeeded();
            }
            Err(err) => {
                self.counters.primary_loads.fetch_add(1, Ordering::Relaxed);
                // A lock wait past `LOCK_WAIT` is a lock replay holds: the
                // next loads would wait as long.
                if matches!(err, Error::ConnectionLost { .. } | Error::Busy { .. }) {
                    chosen.replica.failed(&err.to_string());
                }
            }
        }
        result
    }

    pub(crate) fn stats(&self) -> ReplicaStats {
        let c = &self.counters;
        ReplicaStats {
            replicas: self.replicas.len(),
            replica_loads: c.replica_loads.load(Ordering::Relaxed),
            primary_loads: c.primary_loads.load(Ordering::Relaxed),
            skipped_lagging: c.lagging.load(Ordering::Relaxed),
            skipped_down: c.down.load(Ordering::Relaxed),
            unknown_position: c.unknown.load(Ordering::Relaxed),
            position_checks: c.position_checks.load(Ordering::Relaxed),
        }
    }
}

impl Replica {
    fn resting(&self) -> bool {
        let state = self.state.lock();
        state
            .resting_until
            .is_some_and(|until| Instant::now() < until)
    }

    #[cfg(test)]
    fn replayed(&self) -> Lsn {
        self.state.lock().replayed
    }

    /// Whether a check found it behind `required` less than
    /// [`RECHECK_AFTER`] ago (and its cached position still is).
    fn known_behind(&self, required: Lsn) -> bool {
        let state = self.state.lock();
        state.replayed < required && state.behind_until.is_some_and(|t| Instant::now() < t)
    }

    /// A replay position read now on one of its connections, checked
    /// against `required`.
    fn saw(&self, lsn: Lsn, required: Lsn) {
        let mut state = self.state.lock();
        state.replayed = lsn;
        state.behind_until = (lsn < required).then(|| Instant::now() + RECHECK_AFTER);
    }

    fn succeeded(&self) {
        let back = {
            let mut state = self.state.lock();
            state.resting_until = None;
            std::mem::take(&mut state.down)
        };
        if back {
            tracing::info!(replica = %self.url, "replica back: loads go to it again");
        }
    }

    /// Down: rest, and forget the replay position (it may restart behind).
    fn failed(&self, why: &str) {
        let first = {
            let mut state = self.state.lock();
            state.replayed = 0;
            state.resting_until = Some(Instant::now() + RETRY_AFTER);
            !std::mem::replace(&mut state.down, true)
        };
        if first {
            tracing::warn!(
                replica = %self.url,
                error = %self.url.scrub(why),
                "replica skipped: loads go to the primary until it answers again"
            );
        }
    }
}

impl fmt::Debug for Replicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<&str> = self.replicas.iter().map(|r| r.url.redacted()).collect();
        f.debug_struct("Replicas")
            .field("urls", &urls)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Ends the transaction of a replica check or load on a path without
/// [`position::end_load`]; a connection whose ROLLBACK fails is discarded
/// by the pool.
fn end_transaction(conn: &mut PooledConn) {
    if conn.transaction_depth() > 0 {
        let ended = position::end_transaction(conn).map_err(|e| Error::from_diesel(e, None, None));
        conn.settle(&ended);
    }
}

/// What opens and prepares `url`'s connections: with libpq's connect
/// timeout, as every PostgreSQL connection larder opens (2 s, its least).
fn manager(url: &DatabaseUrl, config: &PoolConfig) -> Result<Manager> {
    Ok(Manager::with_setup(
        crate::pool::with_network_timeouts(url, CHECKOUT_TIMEOUT.min(config.connection_timeout))?,
        config.busy_timeout,
        crate::dialect::postgres::replica_session_setup(LOCK_WAIT),
    ))
}

/// Runs `query` on `conn`, for a load on a replica.
pub(crate) fn run_on<T>(
    conn: &mut Connection,
    table: Option<&'static str>,
    id: Option<i64>,
    query: impl FnOnce(&mut Connection) -> QueryResult<T>,
) -> Result<T> {
    query(conn).map_err(|e| Error::from_diesel(e, table, id))
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::*;

    /// A replica nobody listens on: its pool connects lazily, never here.
    fn replica() -> Replica {
        let url = DatabaseUrl::parse("postgres://app:s3cret@127.0.0.1:9/blog").unwrap();
        let config = PoolConfig {
            size: 1,
            connection_timeout: Duration::from_secs(1),
            busy_timeout: Duration::from_secs(1),
        };
        let mut replicas = Replicas::build(vec![url], &config).unwrap();
        replicas.replicas.remove(0)
    }

    #[test]
    fn a_replica_found_behind_is_skipped_until_recheck_or_covered() {
        let replica = replica();
        replica.saw(10, 20);
        assert!(replica.known_behind(20));
        assert!(!replica.known_behind(10), "what it has replayed it serves");
        std::thread::sleep(RECHECK_AFTER * 2);
        assert!(!replica.known_behind(20), "asked again after the pause");
    }

    #[test]
    fn a_failed_replica_rests_and_forgets_its_position() {
        let replica = replica();
        replica.saw(100, 0);
        replica.failed("connection refused");
        assert!(replica.resting());
        assert_eq!(replica.replayed(), 0);
        replica.succeeded();
        assert!(!replica.resting());
    }

    #[test]
    fn an_unknown_requirement_sends_loads_to_the_primary_without_touching_replicas() {
        let replicas = Replicas::build(
            Vec::new(),
            &PoolConfig {
                size: 1,
                connection_timeout: Duration::from_secs(1),
                busy_timeout: Duration::from_secs(1),
            },
        )
        .unwrap();
        assert!(replicas.choose(None).is_none());
        let stats = replicas.stats();
        assert_eq!((stats.unknown_position, stats.primary_loads), (1, 1));
    }

    /// docs/deployment.md: every connection larder opens to PostgreSQL carries
    /// libpq's `connect_timeout`. Without one, an attempt on a replica that
    /// accepts the socket and never answers (a hung server) holds a thread
    /// of the replica's pool for as long as the socket stays open.
    #[test]
    fn replica_connections_give_up_connecting_after_a_timeout() {
        let url = DatabaseUrl::parse("postgres://app:s3cret@127.0.0.1:9/blog").unwrap();
        let config = PoolConfig {
            size: 1,
            connection_timeout: Duration::from_secs(1),
            busy_timeout: Duration::from_secs(1),
        };
        let manager = manager(&url, &config).unwrap();
        let target = manager.url().target();
        assert!(target.contains("connect_timeout=2"), "{}", manager.url());
    }

    #[test]
    fn debug_output_keeps_no_password() {
        let url = DatabaseUrl::parse("postgres://app:s3cret@127.0.0.1:9/blog").unwrap();
        let config = PoolConfig {
            size: 1,
            connection_timeout: Duration::from_secs(1),
            busy_timeout: Duration::from_secs(1),
        };
        let replicas = Replicas::build(vec![url], &config).unwrap();
        let shown = format!("{replicas:?}");
        assert!(
            shown.contains("127.0.0.1:9") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
