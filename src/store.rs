//! The store: one per process, cheap to clone, the entry point to everything.
//! Its methods live beside what they hand out, so that dependencies point one
//! way: `Store::builder` and `Store::open` in `builder.rs`, `Store::repo` in
//! `repo/store.rs`, `Store::begin` and `Store::transaction` in `tx.rs`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::QueryResult;

use crate::backend::Session;
use crate::coherence::{self, capture, Watcher};
use crate::entity::Key;
use crate::error::{Error, Result};
use crate::lock::LockGuard;
use crate::migrate::{self, MigrationStatus};
use crate::pool::{Connection, Pool, PoolConfig, PooledConn};
use crate::registry::Registry;
use crate::replica::{self, Replicas};
use crate::stats::{PoolState, Stats};
use crate::url::{Backend, DatabaseUrl};

/// A cached, pooled database: repositories, transactions, migrations and
/// statistics. `Store` is `Clone + Send + Sync`; clones share the pool and caches.
///
/// Dropping the last clone closes the pool's idle connections and stops the
/// store's threads (the pool's, the watcher's). It waits for a watcher check
/// in flight, a few milliseconds against a server that answers; one stuck on
/// a database that stopped answering is waited for 6 s at most, then left to
/// end, with its connection, when its network call does.
///
/// ```
/// use larder_blog::{Blog, NewUser};
/// # let dir = tempfile::tempdir().unwrap();
/// # let url = format!("sqlite://{}", dir.path().join("blog.db").display());
/// let store = larder::Store::open(&url)?;
/// store.migrate()?; // larder's own tables
/// larder_blog::migrate(&store)?; // the application's
/// let ann = store.users().create(NewUser { name: "ann".into(), email: "ann@example.org".into() })?;
/// assert_eq!(store.users().get(ann.id)?.unwrap().email, "ann@example.org");
/// println!("{}", store.stats());
/// # Ok::<(), larder::Error>(())
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Where a store connects.
pub(crate) struct Urls {
    /// The pool's connections.
    pub(crate) pool: DatabaseUrl,
    /// The connections that keep one server session: the watcher's, the locks'.
    pub(crate) session: DatabaseUrl,
}

struct Inner {
    /// Unique in the process, never reused: what this thread's lock
    /// sessions are keyed by.
    id: u64,
    url: DatabaseUrl,
    /// Where the watcher and the lock sessions connect: `url` unless
    /// [`StoreBuilder::session_url`](crate::StoreBuilder::session_url) said otherwise.
    session_url: DatabaseUrl,
    pool: Pool,
    config: PoolConfig,
    /// How long `Store::lock` waits.
    lock_timeout: Duration,
    registry: Arc<Registry>,
    /// Brings in other processes' changes; `None` when coherence is off.
    /// Dropped with the last clone, which stops its thread.
    watcher: Option<Watcher>,
    /// Where loads may go instead of the primary; `None` without replicas.
    replicas: Option<Replicas>,
}

impl Store {
    pub(crate) fn from_parts(
        urls: Urls,
        pool: Pool,
        config: PoolConfig,
        lock_timeout: Duration,
        registry: Arc<Registry>,
        watcher: Option<Watcher>,
        replicas: Option<Replicas>,
    ) -> Store {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Store {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                url: urls.pool,
                session_url: urls.session,
                pool,
                config,
                lock_timeout,
                registry,
                watcher,
                replicas,
            }),
        }
    }

    /// Runs larder's own pending migrations (the change log other processes'
    /// changes arrive through); returns the versions applied. Run it before
    /// the application's migrations ([`run_migrations`](Store::run_migrations)).
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] naming the migration that failed; that migration's
    /// changes are rolled back. [`Error::MigrationLocked`] when another
    /// runner (another process or host migrating the database, see
    /// [`Migrator`](crate::Migrator)) held the migration lock past the
    /// store's lock timeout
    /// ([`StoreBuilder::lock_timeout`](crate::StoreBuilder::lock_timeout)):
    /// nothing was migrated.
    pub fn migrate(&self) -> Result<Vec<String>> {
        let mut conn = self.checkout_alive()?;
        let applied = migrate::run_pending(&mut conn, self.session_url(), self.lock_timeout());
        migrate::announce_after(&mut conn, &applied);
        drop(conn);
        // Migrations may rewrite any row, those before a failing one too:
        // forget everything cached.
        self.clear_cache();
        let applied = applied?;
        self.warn_uncaptured();
        Ok(applied)
    }

    /// Runs an application's own pending migrations (from
    /// `diesel_migrations::embed_migrations!`, for this store's backend) after
    /// larder's; returns the versions applied.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] naming the migration that failed; on MySQL, as
    /// for [`Migrator::run`](crate::Migrator::run), one that failed part way
    /// is marked failed and later runs refuse until it is resolved.
    /// [`Error::MigrationLocked`] as for [`migrate`](Store::migrate).
    pub fn run_migrations(
        &self,
        source: diesel_migrations::EmbeddedMigrations,
    ) -> Result<Vec<String>> {
        let mut conn = self.checkout_alive()?;
        let lock =
            crate::lock::MigrationLock::take(&mut conn, self.session_url(), self.lock_timeout())?;
        let applied = migrate::run_embedded(&mut conn, source);
        migrate::announce_after(&mut conn, &applied);
        drop((lock, conn));
        // The migrations before a failing one stay applied.
        self.clear_cache();
        let applied = applied?;
        // The application's tables exist only now.
        self.warn_uncaptured();
        Ok(applied)
    }

    /// Every embedded migration and whether it is applied.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] when the applied versions cannot be read.
    pub fn migration_status(&self) -> Result<Vec<MigrationStatus>> {
        let mut conn = self.checkout_alive()?;
        migrate::status(&mut conn)
    }

    /// Cache counters per entity and the pool's state.
    pub fn stats(&self) -> Stats {
        let state = self.inner.pool.state();
        Stats {
            entities: self.inner.registry.stats(),
            queries: self.inner.registry.queries().stats(),
            pool: PoolState {
                connections: state.connections,
                idle: state.idle_connections,
            },
            coherence: self
                .inner
                .watcher
                .as_ref()
                .map(Watcher::stats)
                .unwrap_or_default(),
            replicas: self
                .inner
                .replicas
                .as_ref()
                .map(Replicas::stats)
                .unwrap_or_default(),
        }
    }

    /// Tables of this store's entities that exist in the database but have no
    /// change-capture trigger, so that other processes' changes to them would
    /// not reach the cache; on MySQL, whose cascades fire no trigger, also the
    /// tables they are [`Entity::DELETED_WITH`](crate::Entity::DELETED_WITH).
    /// Empty when every cached table is covered; check it at start-up to fail
    /// fast. Tables not created yet are not listed.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let url = format!("sqlite://{}", dir.path().join("doc.db").display());
    /// let store = larder::Store::open(&url)?;
    /// store.migrate()?;
    /// assert!(store.uncaptured_tables()?.is_empty(), "the blog's migrations capture its tables");
    /// # Ok::<(), larder::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::PoolTimeout`], or [`Error::Database`] when the catalog cannot be read.
    pub fn uncaptured_tables(&self) -> Result<Vec<&'static str>> {
        let mut tables = self.inner.registry.table_names();
        if self.url().backend() == Backend::Mysql {
            // MySQL's cascades fire no trigger: the rows they remove are
            // heard of only through the parent's delete.
            tables.extend(self.inner.registry.deleted_with_parents());
            tables.sort_unstable();
            tables.dedup();
        }
        self.run(None, None, |conn| capture::uncaptured(conn, &tables))
    }

    /// Logs a warning naming the cached tables other processes' changes
    /// cannot reach (when coherence is on).
    pub(crate) fn warn_uncaptured(&self) {
        if self.inner.watcher.is_none() {
            return;
        }
        match self.uncaptured_tables() {
            Ok(tables) if !tables.is_empty() => tracing::warn!(
                ?tables,
                "cached tables without change-capture triggers: other processes' changes \
                 to them will not reach this cache (add larder::capture_sql to their migrations)"
            ),
            Ok(_) => {}
            Err(err) => tracing::debug!(error = %err, "could not check change capture"),
        }
    }

    /// Drops every cached copy of `key` in this process. With replicas,
    /// loads go to the primary until the next position read: the change
    /// behind this call has no known position.
    pub fn invalidate(&self, key: Key) {
        self.inner.registry.requirement().forget();
        self.inner.registry.invalidate(key);
    }

    /// Empties every cache of this process (with replicas, as
    /// [`invalidate`](Store::invalidate) does for one key).
    pub fn clear_cache(&self) {
        self.inner.registry.requirement().forget();
        self.inner.registry.clear_all();
    }

    /// The database URL, password redacted when printed.
    pub fn url(&self) -> &DatabaseUrl {
        &self.inner.url
    }

    /// The URL of the sessions that must stay this store's own (named locks).
    pub(crate) fn session_url(&self) -> &DatabaseUrl {
        &self.inner.session_url
    }

    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    pub(crate) fn lock_timeout(&self) -> Duration {
        self.inner.lock_timeout
    }

    pub(crate) fn busy_timeout(&self) -> Duration {
        self.inner.config.busy_timeout
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// A pooled connection, or [`Error::PoolTimeout`] after the checkout
    /// timeout. It was pinged only if it had not proved alive lately (see
    /// `pool`): work on it whose failure cannot be retried must accept
    /// [`Error::ConnectionLost`].
    pub(crate) fn checkout(&self) -> Result<PooledConn> {
        let _span = tracing::trace_span!("pool_checkout").entered();
        self.inner
            .pool
            .get()
            .map_err(|e| Error::pool(e, self.inner.config.connection_timeout))
    }

    /// A pooled connection proven alive by a ping at this checkout, for work
    /// that cannot be retried on a lost connection but need not fail on one.
    /// Dead connections are discarded until a live one (a new one, at worst)
    /// comes out of the pool.
    pub(crate) fn checkout_alive(&self) -> Result<PooledConn> {
        let mut attempts = self.inner.config.size;
        loop {
            let mut conn = self.checkout()?;
            match conn.ensure_alive() {
                Ok(()) => return Ok(conn),
                Err(err) if attempts == 0 => return Err(Error::from_diesel(err, None, None)),
                Err(err) => tracing::debug!(error = %err, "pooled connection found dead"),
            }
            attempts -= 1;
        }
    }

    /// Runs `query` on a pooled connection outside any explicit transaction,
    /// mapping its error for `table` (`None` for work on no single table).
    /// `query` may write and runs once, so its connection is pinged first
    /// unless it proved alive lately. `query` is the application's SQL: a
    /// transaction it opened is rolled back, and, when it succeeded, refused
    /// (see [`refuse_open_transaction`](crate::pool::Pooled::refuse_open_transaction)).
    pub(crate) fn run<T>(
        &self,
        table: Option<&'static str>,
        id: Option<i64>,
        query: impl FnOnce(&mut Connection) -> QueryResult<T>,
    ) -> Result<T> {
        let mut conn = self.checkout_alive()?;
        conn.watch_app_sql();
        let result = query(&mut conn).map_err(|e| Error::from_diesel(e, table, id));
        conn.settle(&result);
        match result {
            Ok(value) => conn.refuse_open_transaction(table).map(|()| value),
            Err(err) => {
                conn.end_stray_transaction();
                Err(err)
            }
        }
    }

    /// Runs the read `query` on a pooled connection without a ping; when the
    /// connection turns out to have died while idle, runs it once more on a
    /// connection a ping proved alive. A read can run twice: it changes
    /// nothing, and its caller recorded its epochs before the first attempt.
    pub(crate) fn read<T>(
        &self,
        table: Option<&'static str>,
        id: Option<i64>,
        mut query: impl FnMut(&mut Connection) -> QueryResult<T>,
    ) -> Result<T> {
        let mut conn = self.checkout()?;
        let result = query(&mut conn).map_err(|e| Error::from_diesel(e, table, id));
        conn.settle(&result);
        match result {
            Err(err @ Error::ConnectionLost { .. }) if conn.unchecked() => {
                tracing::debug!(error = %err, "a read met a connection that died while idle; retrying once");
                // Back to the pool first, which discards it.
                drop(conn);
                let mut conn = self.checkout_alive()?;
                let retried = query(&mut conn).map_err(|e| Error::from_diesel(e, table, id));
                conn.settle(&retried);
                retried
            }
            other => other,
        }
    }
}

impl Store {
    /// Runs the cache-filling read `query` on a replica that has replayed
    /// every change this store invalidated (see `replica`), else as
    /// [`read`](Store::read) on the primary; a replica's failure is retried
    /// there. Call it after recording the cache's epochs.
    pub(crate) fn load<T>(
        &self,
        table: Option<&'static str>,
        id: Option<i64>,
        mut query: impl FnMut(&mut Connection) -> QueryResult<T>,
    ) -> Result<T> {
        if let Some(replicas) = &self.inner.replicas {
            if let Some(mut chosen) = replicas.choose(self.registry().requirement().get()) {
                let result = replica::run_on(&mut chosen.conn, table, id, &mut query);
                let result = replicas.finish(chosen, table, result);
                if result.is_ok() {
                    return result;
                }
            }
        }
        self.read(table, id, query)
    }

    /// As [`load`](Store::load) for a read that can run only once (a
    /// caller's list query): the replica connection is proven alive at
    /// checkout by its position check, as [`run`](Store::run) proves the
    /// primary's by a ping, and a failure on it is returned, as a failure
    /// on the primary would be.
    pub(crate) fn load_once<T>(
        &self,
        table: Option<&'static str>,
        id: Option<i64>,
        query: impl FnOnce(&mut Connection) -> QueryResult<T>,
    ) -> Result<T> {
        if let Some(replicas) = &self.inner.replicas {
            if let Some(mut chosen) = replicas.choose(self.registry().requirement().get()) {
                let result = replica::run_on(&mut chosen.conn, table, id, query);
                return replicas.finish(chosen, table, result);
            }
        }
        self.run(table, id, query)
    }

    /// Ends the server session of a write lost in flight if it still runs a
    /// statement, and waits until it no longer does (see `lost`), so that
    /// the write cannot land after the caches were told of it. Not through a transaction-mode pooler (a
    /// store with a [`session_url`](crate::StoreBuilder::session_url) of its
    /// own): the session a connection opened on is lent to other clients.
    pub(crate) fn end_lost_session(&self, session: Session) {
        if self.inner.url.target() != self.inner.session_url.target() {
            return;
        }
        if crate::lost::end(&self.inner.url, &self.inner.config, session) {
            tracing::debug!("the session of a write lost in flight has ended");
        } else {
            tracing::warn!(
                "could not end the session of a write lost in flight: it may still commit \
                 after its invalidation"
            );
        }
    }

    /// With no watcher to prune the change log (coherence off, SQLite and
    /// MySQL), prunes it now, on the building thread (so that a process that
    /// lives less than a period, a cron job, prunes too, and the building
    /// application's first calls never find its connection taken), then
    /// every [`PRUNE_EVERY`](coherence::PRUNE_EVERY) on the pool's worker
    /// threads, on a pooled connection. The job holds the store weakly: the
    /// store's last drop ends it with the pool.
    pub(crate) fn prune_without_watcher(&self) {
        self.prune_log();
        let store = Arc::downgrade(&self.inner);
        self.inner.pool.every(coherence::PRUNE_EVERY, move || {
            if let Some(inner) = store.upgrade() {
                Store { inner }.prune_log();
            }
        });
    }

    /// Prunes the change log once, unless no connection came out of the
    /// pool within its checkout timeout.
    fn prune_log(&self) {
        let Ok(mut conn) = self.checkout() else {
            return;
        };
        let pruned = coherence::prune_unwatched(&mut conn)
            .map_err(|e| Error::from_diesel(e, Some(crate::dialect::CHANGES), None));
        conn.settle(&pruned);
        if let Err(err) = pruned {
            tracing::debug!(error = %err, "change log not pruned this time");
        }
    }

    /// Raises the replicas' required position to the primary's position
    /// read on `conn` right after a commit; forgets it when that read
    /// fails. Call it before invalidating what the commit wrote.
    pub(crate) fn note_commit(&self, conn: &mut Connection) {
        let requirement = self.registry().requirement();
        if !requirement.enabled() {
            return;
        }
        let ticket = requirement.ticket();
        match replica::primary_position(conn) {
            Ok(lsn) => requirement.raise(lsn, ticket),
            Err(err) => {
                tracing::debug!(error = %err, "no WAL position after a commit: loads go to the primary");
                requirement.forget();
            }
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.inner.url)
            .field("pool_size", &self.inner.config.size)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Takes the lock `name`, waiting up to the lock timeout
    /// ([`StoreBuilder::lock_timeout`](crate::StoreBuilder::lock_timeout),
    /// by default the connection timeout) while another process, host or
    /// thread holds it. Any name up to 1,024 bytes works, whatever its
    /// characters. Needs larder's migrations ([`Store::migrate`]): each
    /// acquisition draws a [fencing token](LockGuard::fencing_token).
    ///
    /// The lock is held on a database session of this thread's own, opened
    /// outside the pool on first use and closed when the thread's last lock
    /// on this store is released: holding locks never takes a connection
    /// repositories need.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let url = format!("sqlite://{}", dir.path().join("app.db").display());
    /// let store = larder::Store::open(&url)?;
    /// store.migrate()?;
    /// let guard = store.lock("digest-email")?;
    /// // … send the digest once, whichever process gets here first …
    /// drop(guard);
    /// # Ok::<(), larder::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`] naming the lock after the lock timeout;
    /// [`Error::Deadlock`] when its holder waits for a lock this thread
    /// holds (PostgreSQL reports it after its `deadlock_timeout`, 1 s by
    /// default, so keep the lock timeout longer); [`Error::LockHeld`] when
    /// this thread already holds it through this store;
    /// [`Error::InvalidLockName`] for an empty name or one over 1,024 bytes;
    /// [`Error::Connection`] when the lock session cannot be opened,
    /// [`Error::ConnectionLost`] when it is lost while waiting,
    /// [`Error::LockFile`] when SQLite's lock file cannot be used, and
    /// [`Error::Database`] when the tokens' table is missing;
    /// [`Error::InsideTransaction`] on SQLite while this thread holds an
    /// open transaction of this store (the fencing token is a write, which
    /// would wait for that transaction's write lock). Nothing is held after
    /// an error.
    pub fn lock(&self, name: &str) -> Result<LockGuard> {
        crate::lock::lock(&self.lock_owner(), name)
    }

    /// Takes the lock `name` if no one holds it, without waiting: `None`
    /// when another process, host or thread holds it.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let url = format!("sqlite://{}", dir.path().join("app.db").display());
    /// let store = larder::Store::open(&url)?;
    /// store.migrate()?;
    /// if let Some(guard) = store.try_lock("nightly-report")? {
    ///     // … only one process runs the report …
    ///     drop(guard);
    /// }
    /// # Ok::<(), larder::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Store::lock`], except [`Error::LockTimeout`] and
    /// [`Error::Deadlock`], since it never waits.
    pub fn try_lock(&self, name: &str) -> Result<Option<LockGuard>> {
        crate::lock::try_lock(&self.lock_owner(), name)
    }

    /// Runs `work` holding the lock `name`, the way the seed's
    /// `@synchronized` did, and releases it after: when `work` returns `Ok`
    /// or `Err`, and when it panics (the panic then continues).
    ///
    /// `work` returns a `Result` whose error type takes larder's errors
    /// (`larder::Error` itself, or an application's error with
    /// `From<larder::Error>`), so `?` works inside it and on the call.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let url = format!("sqlite://{}", dir.path().join("app.db").display());
    /// let store = larder::Store::open(&url)?;
    /// store.migrate()?;
    /// let pages = store.with_lock("front-page", || {
    ///     // … rebuild the front page once, not once per worker …
    ///     Ok::<_, larder::Error>(1)
    /// })?;
    /// assert_eq!(pages, 1);
    /// # Ok::<(), larder::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Store::lock`] before `work` runs; `work`'s own error as it
    /// returned it; and [`Error::LockLost`] when `work` returned `Ok` but the
    /// lock was no longer held after it (its session was lost: a server
    /// restart, a killed backend, a network cut). The work then ran, but
    /// possibly at the same time as another holder's: make writes it does
    /// under the lock check the [fencing token](LockGuard::fencing_token),
    /// so that the database refuses the late one.
    pub fn with_lock<T, E, F>(&self, name: &str, work: F) -> std::result::Result<T, E>
    where
        F: FnOnce() -> std::result::Result<T, E>,
        E: From<Error>,
    {
        crate::lock::with_lock(&self.lock_owner(), name, work)
    }

    /// What the lock module needs of this store.
    fn lock_owner(&self) -> crate::lock::Owner<'_> {
        crate::lock::Owner {
            id: self.id(),
            url: self.session_url(),
            busy_timeout: self.busy_timeout(),
            lock_timeout: self.lock_timeout(),
            connect_timeout: self.inner.config.connection_timeout,
        }
    }
}
