//! Configuration of a [`Store`]: one builder, every default documented.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::coherence::Watcher;
use crate::entity::Entity;
use crate::error::{Error, Result};
use crate::pool::{self, PoolConfig};
use crate::registry::Registry;
use crate::replica::Replicas;
use crate::store::{Store, Urls};
use crate::url::{Backend, DatabaseUrl};

const DEFAULT_MAX_STALENESS: Duration = Duration::from_millis(100);
const MIN_MAX_STALENESS: Duration = Duration::from_millis(10);
const MAX_MAX_STALENESS: Duration = Duration::from_secs(60);

/// Registers one entity with the registry being built.
type Registration = Box<dyn FnOnce(&Registry) + Send>;

/// The most connections a pool may open: r2d2 sets aside room for every one
/// up front (about 200 bytes each), and no database server takes more.
const MAX_POOL_SIZE: u32 = 10_000;

/// The most entries an entity's cache may hold: its admission sketch is made
/// up front (4 bytes an entry, 4 GiB here), and a larger capacity overflowed
/// its arithmetic (a panic) or asked for more memory than any machine has (an
/// aborted process), at build or at the entity's first use.
const MAX_CACHE_CAPACITY: usize = 1 << 30;

/// The most lists the query cache may hold: its table is allocated up front.
const MAX_QUERY_CACHE_CAPACITY: usize = 1 << 24;

/// The longest timeout a store takes: SQLite reads a longer busy timeout as
/// none at all, PostgreSQL refuses a longer `lock_timeout`, and a deadline
/// further away overflows `Instant` arithmetic.
const LONGEST_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// Builds a [`Store`].
///
/// ```
/// use std::time::Duration;
/// # let dir = tempfile::tempdir().unwrap();
/// # let url = format!("sqlite://{}", dir.path().join("doc.db").display());
/// let store = larder::Store::builder(&url)
///     .pool_size(8)
///     .cache_capacity(10_000)
///     .connection_timeout(Duration::from_secs(5))
///     .max_staleness(Duration::from_millis(100)) // other processes' changes, seen within
///     .build()?;
/// # Ok::<(), larder::Error>(())
/// ```
pub struct StoreBuilder {
    url: String,
    pool_size: u32,
    cache_capacity: usize,
    query_cache_capacity: usize,
    connection_timeout: Duration,
    busy_timeout: Duration,
    lock_timeout: Option<Duration>,
    max_staleness: Duration,
    poll_interval: Option<Duration>,
    coherence: bool,
    replicas: Vec<String>,
    session_url: Option<String>,
    /// Each entity's name, its own capacity if it has one, its registration.
    entities: Vec<(&'static str, Option<usize>, Registration)>,
}

impl Store {
    /// Opens `url` with default settings: `sqlite://path`, `sqlite:path`, a
    /// bare file path or a SQLite URI filename (`file:app.db?mode=rwc`),
    /// `postgres://…` or `mysql://…`.
    ///
    /// # Errors
    ///
    /// As [`StoreBuilder::build`].
    pub fn open(url: &str) -> Result<Store> {
        Store::builder(url).build()
    }

    /// A builder for a store on `url`.
    pub fn builder(url: &str) -> StoreBuilder {
        StoreBuilder::new(url)
    }
}

impl StoreBuilder {
    fn new(url: &str) -> StoreBuilder {
        StoreBuilder {
            url: url.to_owned(),
            pool_size: 8,
            cache_capacity: 10_000,
            query_cache_capacity: 10_000,
            connection_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(5),
            lock_timeout: None,
            max_staleness: DEFAULT_MAX_STALENESS,
            poll_interval: None,
            coherence: true,
            replicas: Vec::new(),
            session_url: None,
            entities: Vec::new(),
        }
    }

    /// Most connections the pool opens. Defaults to 8; must be at least 1
    /// and at most 10,000.
    pub fn pool_size(mut self, size: u32) -> StoreBuilder {
        self.pool_size = size;
        self
    }

    /// Most entries each entity's cache holds; 0 turns caching off: every
    /// `get` and every list query goes to the database (the query cache is off
    /// too, whatever [`query_cache_capacity`](StoreBuilder::query_cache_capacity)
    /// says), except for an entity given a capacity of its own with
    /// [`entity_with_capacity`](StoreBuilder::entity_with_capacity), whose
    /// rows that capacity caches. Defaults to 10,000 per entity; at most 2³⁰
    /// (each entry costs 4 bytes of admission sketch, made up front).
    pub fn cache_capacity(mut self, entries: usize) -> StoreBuilder {
        self.cache_capacity = entries;
        self
    }

    /// Most list-query results (for example `posts().by_author(id)`) the store
    /// caches; 0 turns the query cache off, and so does a
    /// [`cache_capacity`](StoreBuilder::cache_capacity) of 0. Defaults to
    /// 10,000 lists, as many as the entries of an entity's default cache: a
    /// page that reads two lists of a post (its comments and their count)
    /// then stays cached for 5,000 posts. At most 2²⁴: its table is made up front.
    pub fn query_cache_capacity(mut self, lists: usize) -> StoreBuilder {
        self.query_cache_capacity = lists;
        self
    }

    /// How long a caller waits for a free pooled connection before getting
    /// [`Error::PoolTimeout`]. Defaults to 5 seconds; must not be zero.
    pub fn connection_timeout(mut self, timeout: Duration) -> StoreBuilder {
        self.connection_timeout = timeout;
        self
    }

    /// How long a SQLite writer waits for another writer's lock before getting
    /// [`Error::Busy`]. Defaults to 5 seconds.
    pub fn busy_timeout(mut self, timeout: Duration) -> StoreBuilder {
        self.busy_timeout = timeout;
        self
    }

    /// How long [`Store::lock`] and [`Store::with_lock`] wait for a named
    /// lock another process, host or thread holds before returning
    /// [`Error::LockTimeout`]. Defaults to the
    /// [`connection_timeout`](StoreBuilder::connection_timeout); must not be
    /// zero ([`Store::try_lock`] is the call that does not wait). On
    /// PostgreSQL keep it above the server's `deadlock_timeout` (1 s by
    /// default), or a deadlock between processes is reported as a timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let url = format!("sqlite://{}", dir.path().join("doc.db").display());
    /// let store = larder::Store::builder(&url).lock_timeout(Duration::from_secs(30)).build()?;
    /// # Ok::<(), larder::Error>(())
    /// ```
    pub fn lock_timeout(mut self, timeout: Duration) -> StoreBuilder {
        self.lock_timeout = Some(timeout);
        self
    }

    /// How long after another process commits a change this store may still
    /// serve the old row: the bound of cross-process coherence. Defaults to
    /// 100 ms; must be between 10 ms and 60 s.
    ///
    /// SQLite and MySQL poll the change log every quarter of it (see
    /// [`poll_interval`](StoreBuilder::poll_interval)); PostgreSQL waits for
    /// notifications on its listener's socket and checks its listener
    /// connection every quarter of it. Whenever the watcher has not confirmed
    /// its view of the database for half of it (connection lost, change log
    /// missing, a check stuck on a dead network path), every cache is
    /// emptied, so the bound holds then too; each such flush is logged at
    /// WARN and counted by [`FlushReason`](crate::FlushReason) in
    /// [`Stats::coherence`](crate::Stats::coherence).
    pub fn max_staleness(mut self, bound: Duration) -> StoreBuilder {
        self.max_staleness = bound;
        self
    }

    /// How often the watcher looks for other processes' changes: SQLite and
    /// MySQL poll the change log; PostgreSQL waits for notifications and
    /// uses it only as the first reconnection delay, or as its polling
    /// interval when its URL has a parameter only libpq understands (then it
    /// reads the notifications that arrived each interval). Defaults to
    /// `max_staleness / 4` on SQLite and MySQL, and to `max_staleness / 20`
    /// within 1–5 ms on PostgreSQL; must be at least
    /// 1 ms and at most `max_staleness / 4`: the watcher empties the caches
    /// whenever it has confirmed nothing for `max_staleness / 2`, so a longer
    /// interval would flush them on every tick.
    pub fn poll_interval(mut self, interval: Duration) -> StoreBuilder {
        self.poll_interval = Some(interval);
        self
    }

    /// Whether this store watches for changes committed by other processes
    /// (other larder processes, or any SQL client). Defaults to on. Turn it
    /// off only when this process is the database's only writer: it saves a
    /// connection and a background thread.
    pub fn coherence(mut self, on: bool) -> StoreBuilder {
        self.coherence = on;
        self
    }

    /// Adds a read replica of the primary (PostgreSQL streaming replication;
    /// call it once per replica). Loads that fill the caches (`get`,
    /// `get_many`, `query`, `cached_query`, `cached_value`) go to a replica
    /// that has replayed every change this store has invalidated, else to
    /// the primary: a lagging replica never puts an older row back into the
    /// cache, and a load never waits for one to catch up. Writes, transactions, locks
    /// and migrations always use the primary. A replica that is down is
    /// skipped (and counted in [`Stats::replicas`](crate::Stats::replicas))
    /// until it answers again. Closures given to `query`, `cached_query`
    /// and `cached_value` must therefore only read. No replica by default.
    ///
    /// ```no_run
    /// let store = larder::Store::builder("postgres://app@db-primary/blog")
    ///     .replica("postgres://app@db-replica-1/blog")
    ///     .replica("postgres://app@db-replica-2/blog")
    ///     .build()?;
    /// println!("{:?}", store.stats().replicas);
    /// # Ok::<(), larder::Error>(())
    /// ```
    ///
    /// See `docs/replicas.md` for the rule and why it is safe.
    pub fn replica(mut self, url: &str) -> StoreBuilder {
        self.replicas.push(url.to_owned());
        self
    }

    /// The URL of the connections that must keep one server session for
    /// their whole life: the coherence watcher's (its `LISTEN`) and the
    /// named locks' ([`Store::lock`]). Defaults to the store's URL. Set it
    /// when the store's URL goes through a *transaction-mode* pooler
    /// (PgBouncer's `pool_mode = transaction`), which lends a session out
    /// between statements: point it at the same database directly, or
    /// through a session-mode pool, and let the pool's many short
    /// connections go through the pooler. PostgreSQL only.
    ///
    /// At build the watcher proves it hears a notification sent through
    /// the store's URL, so a session URL that reaches another database, or
    /// a store URL behind a transaction-mode pooler without one, is refused
    /// with [`Error::InvalidConfig`] instead of caching what it cannot
    /// invalidate.
    ///
    /// ```no_run
    /// let store = larder::Store::builder("postgres://app@pgbouncer:6432/blog")
    ///     .session_url("postgres://app@db-primary:5432/blog")
    ///     .build()?;
    /// # Ok::<(), larder::Error>(())
    /// ```
    pub fn session_url(mut self, url: &str) -> StoreBuilder {
        self.session_url = Some(url.to_owned());
        self
    }

    /// Registers an entity at build, cached with the store's capacity. An
    /// entity is registered on its first use anyway; registering it here
    /// makes its cache (and the tables it is [`Entity::DELETED_WITH`]) known
    /// from the start, for statistics and [`Store::uncaptured_tables`].
    pub fn entity<E: Entity>(self) -> StoreBuilder {
        self.register::<E>(None)
    }

    /// Registers an entity at build with its own cache capacity (entries).
    /// Registering an entity again replaces what was said of it before: the
    /// last call decides its capacity.
    pub fn entity_with_capacity<E: Entity>(self, entries: usize) -> StoreBuilder {
        self.register::<E>(Some(entries))
    }

    fn register<E: Entity>(mut self, capacity: Option<usize>) -> StoreBuilder {
        let name = std::any::type_name::<E>();
        // The first registration at build creates the cache; an earlier one
        // left in the list would decide the capacity.
        self.entities
            .retain(|(registered, _, _)| *registered != name);
        self.entities.push((
            name,
            capacity,
            Box::new(move |registry: &Registry| {
                crate::entity::identity_map::<E>(registry, capacity);
            }),
        ));
        self
    }

    /// Validates the settings, opens the database and starts the pool with
    /// one connection (the others open as they are needed, up to
    /// [`pool_size`](StoreBuilder::pool_size)).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] for a URL that cannot be used (a replica's too),
    /// [`Error::InvalidConfig`] for a zero pool size, connection timeout or
    /// lock timeout (a zero busy timeout is taken), a pool or a
    /// cache larger than its setter allows, a timeout over
    /// 2³¹ − 1 ms (about 24.8 days, the longest the databases wait), a staleness
    /// bound out of range, or replicas of a database that is not PostgreSQL
    /// (replicas are supported on PostgreSQL only) or of another backend
    /// than the primary's, [`Error::Connection`] when the database cannot be
    /// opened (a replica that cannot be reached is not an error: it is
    /// skipped until it answers).
    pub fn build(self) -> Result<Store> {
        let url = DatabaseUrl::parse(&self.url)?;
        self.validate()?;
        let replica_urls = replica_urls(&url, &self.replicas)?;
        let session_url = session_url(&url, self.session_url.as_deref())?;
        let config = PoolConfig {
            size: self.pool_size,
            connection_timeout: self.connection_timeout,
            busy_timeout: self.busy_timeout,
        };
        let pool = pool::build(&url, &config)?;
        // No cache means no cached lists either: what `cache_capacity(0)` promises.
        let query_cache_capacity = if self.cache_capacity == 0 {
            0
        } else {
            self.query_cache_capacity
        };
        let registry = Arc::new(Registry::new(self.cache_capacity, query_cache_capacity));
        let replicas = if replica_urls.is_empty() {
            None
        } else {
            registry.requirement().enable();
            Some(Replicas::build(replica_urls, &config)?)
        };
        for (_, _, register) in self.entities {
            register(&registry);
        }
        let watcher = if self.coherence {
            Some(Watcher::start(
                &session_url,
                &url,
                self.busy_timeout,
                Arc::clone(&registry),
                self.max_staleness,
                self.poll_interval,
            )?)
        } else {
            None
        };
        tracing::debug!(url = %url, pool_size = config.size, coherence = self.coherence, "store opened");
        let lock_timeout = self.lock_timeout.unwrap_or(self.connection_timeout);
        let urls = Urls {
            pool: url,
            session: session_url,
        };
        let store = Store::from_parts(
            urls,
            pool,
            config,
            lock_timeout,
            registry,
            watcher,
            replicas,
        );
        if !self.coherence && store.url().backend() != Backend::Postgres {
            store.prune_without_watcher();
        }
        if store.registry().requirement().enabled() {
            // Rows committed before the watcher listened are named by no
            // notification: no replica serves them older than this.
            let mut conn = store.checkout_alive()?;
            store.note_commit(&mut conn);
        }
        Ok(store)
    }

    fn validate(&self) -> Result<()> {
        let invalid = |reason: &str| {
            Err(Error::InvalidConfig {
                reason: reason.to_owned(),
            })
        };
        if self.pool_size == 0 {
            return invalid("pool_size must be at least 1");
        }
        if self.pool_size > MAX_POOL_SIZE {
            return Err(Error::InvalidConfig {
                reason: format!("pool_size must be at most {MAX_POOL_SIZE}"),
            });
        }
        let capacities = std::iter::once(self.cache_capacity).chain(
            self.entities
                .iter()
                .filter_map(|(_, capacity, _)| *capacity),
        );
        for capacity in capacities {
            if capacity > MAX_CACHE_CAPACITY {
                return Err(Error::InvalidConfig {
                    reason: format!(
                        "cache_capacity must be at most {MAX_CACHE_CAPACITY} entries \
                         (an entity's admission sketch is made up front, 4 bytes an entry)"
                    ),
                });
            }
        }
        if self.query_cache_capacity > MAX_QUERY_CACHE_CAPACITY {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "query_cache_capacity must be at most {MAX_QUERY_CACHE_CAPACITY} lists"
                ),
            });
        }
        if self.connection_timeout.is_zero() {
            return invalid("connection_timeout must be longer than zero");
        }
        let timeouts = [
            ("connection_timeout", Some(self.connection_timeout)),
            ("busy_timeout", Some(self.busy_timeout)),
            ("lock_timeout", self.lock_timeout),
        ];
        for (name, timeout) in timeouts {
            if timeout.is_some_and(|t| t > LONGEST_TIMEOUT) {
                return Err(Error::InvalidConfig {
                    reason: format!(
                        "{name} must be at most {LONGEST_TIMEOUT:?} (2^31 - 1 ms, the longest \
                         wait SQLite's busy timeout and PostgreSQL's lock_timeout take)"
                    ),
                });
            }
        }
        if self.lock_timeout.is_some_and(|t| t.is_zero()) {
            return invalid("lock_timeout must be longer than zero (try_lock does not wait)");
        }
        if !(MIN_MAX_STALENESS..=MAX_MAX_STALENESS).contains(&self.max_staleness) {
            return invalid("max_staleness must be between 10 ms and 60 s");
        }
        if let Some(interval) = self.poll_interval {
            if interval < Duration::from_millis(1) || interval > self.max_staleness / 4 {
                return invalid(
                    "poll_interval must be at least 1 ms and at most max_staleness / 4",
                );
            }
        }
        Ok(())
    }
}

/// The replicas' URLs, parsed, of the primary's backend, which must be
/// PostgreSQL (the replay position larder compares is PostgreSQL's WAL).
fn replica_urls(primary: &DatabaseUrl, replicas: &[String]) -> Result<Vec<DatabaseUrl>> {
    let mut urls = Vec::with_capacity(replicas.len());
    for replica in replicas {
        let url = DatabaseUrl::parse(replica)?;
        if primary.backend() != Backend::Postgres {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "replicas are supported on PostgreSQL only, and the primary is {}",
                    primary.backend().name()
                ),
            });
        }
        if url.backend() != primary.backend() {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "the replica {url} is a {} URL, and the primary is {}",
                    url.backend().name(),
                    primary.backend().name()
                ),
            });
        }
        urls.push(url);
    }
    Ok(urls)
}

/// The URL of the store's sessions: `session`, parsed, which must be
/// PostgreSQL like the store's, or the store's own URL.
fn session_url(store: &DatabaseUrl, session: Option<&str>) -> Result<DatabaseUrl> {
    let Some(session) = session else {
        return Ok(store.clone());
    };
    let url = DatabaseUrl::parse(session)?;
    if store.backend() != Backend::Postgres || url.backend() != Backend::Postgres {
        return Err(Error::InvalidConfig {
            reason: format!(
                "session_url is supported on PostgreSQL only, and the store's URL is {} \
                 and the session URL {}",
                store.backend().name(),
                url.backend().name()
            ),
        });
    }
    Ok(url)
}

impl fmt::Debug for StoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entities: Vec<_> = self.entities.iter().map(|(name, _, _)| *name).collect();
        f.debug_struct("StoreBuilder")
            .field("url", &crate::url::redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("cache_capacity", &self.cache_capacity)
            .field("query_cache_capacity", &self.query_cache_capacity)
            .field("connection_timeout", &self.connection_timeout)
            .field("busy_timeout", &self.busy_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("max_staleness", &self.max_staleness)
            .field("poll_interval", &self.poll_interval)
            .field("coherence", &self.coherence)
            .field(
                "replicas",
                &self
                    .replicas
                    .iter()
                    .map(|url| crate::url::redact_url(url))
                    .collect::<Vec<_>>(),
            )
            .field(
                "session_url",
                &self.session_url.as_deref().map(crate::url::redact_url),
            )
            .field("entities", &entities)
            .finish()
    }
}
