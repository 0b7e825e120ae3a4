//! larder: a cached, lock-safe repository layer over [diesel](https://diesel.rs) 2.3
//! and r2d2.
//!
//! An application embeds larder as its persistence layer. A [`Store`] puts an
//! identity-map cache over an r2d2 pool of diesel connections, one per process.
//! Repositories serve `get` from the cache, load a missing row once however many
//! callers ask for it at the same moment, and run writes whose invalidations
//! reach the cache only once they are committed: in this process at once, in
//! other processes (or after a plain SQL client's write) within a bound the
//! application chooses. Every transaction and lock is a scoped guard, released
//! on `Err` and on panic alike. SQLite is the embedded default; PostgreSQL and
//! MySQL/MariaDB serve many application hosts, chosen by the URL at run time.
//!
//! # Contents
//!
//! - [Example: an application's own table](#example-an-applications-own-table)
//! - [Entities and repositories](#entities-and-repositories)
//! - [Transactions](#transactions)
//! - [The cache](#the-cache)
//! - [Coherence across processes](#coherence-across-processes)
//! - [Read replicas](#read-replicas)
//! - [Named locks across processes](#named-locks-across-processes)
//! - [Backends](#backends)
//! - [Migrations](#migrations)
//! - [Errors](#errors)
//! - [Design and invariants](#design-and-invariants)
//! - [Lock discipline](#lock-discipline)
//! - [Async (tokio, axum)](#async-tokio-axum)
//!
//! # Example: an application's own table
//!
//! A diesel table with a 64-bit integer `id` primary key becomes a cached entity
//! with one line, [`entity!`]; with the `derive` feature (on by default),
//! `#[derive(larder::Entity)]` with `#[larder(table = tags, new = NewTag,
//! changes = TagChanges)]` on the model expands to the same.
//!
//! ```
//! use std::sync::Arc;
//! use diesel::prelude::*;
//!
//! diesel::table! { tags (id) { id -> BigInt, post_id -> BigInt, label -> Text } }
//!
//! #[derive(Debug, Queryable)]
//! pub struct Tag { pub id: i64, pub post_id: i64, pub label: String }
//!
//! #[derive(Insertable)]
//! #[diesel(table_name = tags)]
//! pub struct NewTag { pub post_id: i64, pub label: String }
//!
//! #[derive(AsChangeset, Default)]
//! #[diesel(table_name = tags)]
//! pub struct TagChanges { pub label: Option<String> } // None leaves the column as it is
//!
//! larder::entity!(Tag { table: tags, new: NewTag, changes: TagChanges });
//!
//! # let dir = tempfile::tempdir().unwrap();
//! # let url = format!("sqlite://{}", dir.path().join("app.db").display());
//! let store = larder::Store::builder(&url).entity::<Tag>().build()?;
//! store.migrate()?; // larder's own tables; then the application's, with store.run_migrations
//! # diesel::connection::SimpleConnection::batch_execute(&mut larder::Connection::establish(&url)?,
//! #     "CREATE TABLE tags (id INTEGER PRIMARY KEY NOT NULL, post_id BIGINT NOT NULL, label TEXT NOT NULL)").unwrap();
//!
//! let tags = store.repo::<Tag>();
//! let rust = tags.create(NewTag { post_id: 1, label: "rust".into() })?; // cached as stored
//! let again = tags.get(rust.id)?.expect("just created");
//! assert!(Arc::ptr_eq(&rust, &again)); // one object per cached row
//!
//! store.transaction(|tx| {
//!     tx.repo::<Tag>().update(rust.id, TagChanges { label: Some("Rust".into()) })?;
//!     assert_eq!(tags.get(rust.id)?.unwrap().label, "rust"); // others see the committed row
//!     // Writes go through `tx`: one through the store would wait on this transaction.
//!     assert!(matches!(tags.delete(rust.id), Err(larder::Error::InsideTransaction { .. })));
//!     Ok::<_, larder::Error>(())
//! })?; // committed: only now is the cached row invalidated
//! assert_eq!(tags.get(rust.id)?.unwrap().label, "Rust");
//! # Ok::<(), larder::Error>(())
//! ```
//!
//! The repository's `examples/blog` (package `larder-blog`) is a complete
//! application on this public API alone: users, posts and comments, their query
//! methods, migrations for every backend, and `cargo run -p larder-blog
//! --example tags`, which adds this table to it.
//!
//! # Entities and repositories
//!
//! An [`Entity`] is a table larder caches: its implementation only writes
//! queries (find, find many, insert, update, delete, and optionally the rows a
//! delete removes by cascade, [`Entity::cascade`]). [`entity!`] and the derive
//! write them for a diesel model whose changeset type has `Option` fields;
//! inserts and updates return the stored row (`RETURNING` on SQLite and
//! PostgreSQL, a read-back by id on MySQL). Write the impl by hand, with
//! [`entity_slot!`] inside it, when the queries need care: a version check, a
//! cascade to report, a computed column. [`Entity::DELETED_WITH`] names tables
//! whose deletes cascade into this one; deleting such a row empties this
//! entity's whole cache, coarse but never stale.
//!
//! Repositories add the cache and the transactions around those queries:
//!
//! - [`Repo`], from [`Store::repo`], works on the store: [`get`](Repo::get)
//!   serves from the identity map and loads a miss once;
//!   [`get_many`](Repo::get_many) takes the cached rows from the cache and loads
//!   every other in one query; [`create`](Repo::create),
//!   [`update`](Repo::update) and [`delete`](Repo::delete) each commit on their
//!   own (one autocommitted statement when the entity declares
//!   [`Entity::SINGLE_STATEMENT_WRITES`], as [`entity!`] does; a delete, which
//!   reads its cascade first, in its own transaction) and invalidate what they
//!   changed once committed; [`query`](Repo::query) runs any query returning
//!   rows and hands back the identity map's `Arc`s for rows it holds.
//! - [`Repo::cached_query`] caches a list under a key until something it read
//!   changes: a table, or with [`Read::eq`] only the table's rows whose key
//!   column ([`Entity::KEY_COLUMNS`]) has one value; [`Repo::cached_value`]
//!   does the same for any value (a count, a sum, an existence check).
//! - [`TxRepo`], from [`Tx::repo`], does the same inside a transaction: reads
//!   see the transaction's own writes and never fill the shared cache.
//! - [`Repository`] is what both do, so that an application writes its query
//!   methods once, as an extension trait, and [`Repos`] hands out repositories
//!   from a store or a transaction alike, for accessors such as `tags()`:
//!
//! ```
//! use std::sync::Arc;
//! use diesel::prelude::*;
//! use larder::{Repos, Repository};
//! # diesel::table! { tags (id) { id -> BigInt, post_id -> BigInt, label -> Text } }
//! # #[derive(Debug, Queryable)] pub struct Tag { pub id: i64, pub post_id: i64, pub label: String }
//! # #[derive(Insertable)] #[diesel(table_name = tags)] pub struct NewTag { pub post_id: i64, pub label: String }
//! # #[derive(AsChangeset, Default)] #[diesel(table_name = tags)] pub struct TagChanges { pub label: Option<String> }
//! # larder::entity!(Tag { table: tags, new: NewTag, changes: TagChanges, keys: [post_id] });
//!
//! /// Query methods of every repository of tags: cached on the store, plain
//! /// queries that see uncommitted writes inside a transaction.
//! pub trait TagQueries: Repository<Tag> {
//!     /// Retired only by writes to tags whose post_id was or becomes `post`.
//!     fn of_post(&self, post: i64) -> larder::Result<Vec<Arc<Tag>>> {
//!         let reads = [larder::Read::eq("tags", "post_id", post)];
//!         self.cached_query(&format!("tags.of_post({post})"), &reads, |conn| {
//!             let query = tags::table.filter(tags::post_id.eq(post)).order(tags::id);
//!             larder::with_connection!(conn, |c| query.load(c))
//!         })
//!     }
//!
//!     /// Retired by any write to `tags`: the whole table is read.
//!     fn count_of_post(&self, post: i64) -> larder::Result<i64> {
//!         self.cached_value(&format!("tags.count_of_post({post})"), &["tags"], |conn| {
//!             let query = tags::table.filter(tags::post_id.eq(post)).count();
//!             larder::with_connection!(conn, |c| query.get_result(c))
//!         })
//!     }
//! }
//! impl<R: Repository<Tag>> TagQueries for R {}
//!
//! /// `tags()` on a store and on a transaction.
//! pub trait App: Repos {
//!     fn tags(&self) -> Self::Repo<'_, Tag> {
//!         self.repo::<Tag>()
//!     }
//! }
//! impl<T: Repos> App for T {}
//!
//! # let dir = tempfile::tempdir().unwrap();
//! # let url = format!("sqlite://{}", dir.path().join("app.db").display());
//! # let store = larder::Store::open(&url)?;
//! # store.migrate()?;
//! # diesel::connection::SimpleConnection::batch_execute(&mut larder::Connection::establish(&url)?,
//! #     "CREATE TABLE tags (id INTEGER PRIMARY KEY NOT NULL, post_id BIGINT NOT NULL, label TEXT NOT NULL)").unwrap();
//! store.tags().create(NewTag { post_id: 7, label: "rust".into() })?;
//! assert_eq!(store.tags().of_post(7)?.len(), 1); // now cached, until `tags` changes
//! store.transaction(|tx| {
//!     tx.tags().create(NewTag { post_id: 7, label: "locks".into() })?;
//!     assert_eq!(tx.tags().count_of_post(7)?, 2); // sees its own write
//!     assert_eq!(store.tags().count_of_post(7)?, 1); // nobody else does yet
//!     Ok::<_, larder::Error>(())
//! })?;
//! assert_eq!(store.tags().of_post(7)?.len(), 2); // the commit retired the cached list
//! store.tags().of_post(8)?; // cached, empty
//! store.tags().create(NewTag { post_id: 7, label: "cache".into() })?;
//! let hits = store.stats().queries.hits;
//! assert!(store.tags().of_post(8)?.is_empty()); // still cached: a tag on post 7 left it alone
//! assert_eq!(store.stats().queries.hits, hits + 1);
//! # Ok::<(), larder::Error>(())
//! ```
//!
//! Queries of an application's own receive a `&mut` [`Connection`], whichever
//! backend the URL chose, and run diesel code through [`with_connection!`]
//! (see [Backends](#backends)).
//!
//! # Transactions
//!
//! [`Store::transaction`] runs a closure in a transaction: it commits when the
//! closure returns `Ok`, and rolls back when it returns `Err` or panics (the
//! panic then continues, and the pool discards the connection).
//! [`Store::begin`] returns the same transaction as a guard, [`Tx`]:
//! [`commit`](Tx::commit) consumes it, and dropping it without committing (an
//! early `?`, a panic) rolls it back. `Tx` is `#[must_use]`.
//!
//! **Commit-time invalidation.** A transaction records what it writes before
//! each statement runs, and for a delete the rows its cascade will remove. Only
//! once `COMMIT` succeeds does it apply them to the shared cache; a rollback
//! leaves the cache untouched, unless the application's own statements ran in
//! the transaction (`TxRepo::run`: a raw `COMMIT`, or DDL on MySQL, commits
//! it), when it invalidates what was recorded. If the commit itself fails (the database may have
//! committed it anyway), every key written is invalidated, which is always safe.
//!
//! **A failed statement poisons the transaction.** PostgreSQL aborts a
//! transaction after any error and answers a later `COMMIT` with a silent
//! `ROLLBACK`; larder makes every backend behave alike: after a statement fails
//! with a database error, every later statement of the transaction is refused
//! with [`Error::TransactionAborted`] (MySQL ends a deadlock's victim itself,
//! and a statement sent after that would commit on its own), and
//! [`Tx::commit`] rolls back and returns an error saying so (on PostgreSQL
//! also when the failure was handled inside a `run` closure, out of larder's
//! sight: its commit fails instead of rolling back silently). The closure may
//! still recover from the error in its own way, but nothing of the transaction
//! is committed:
//!
//! ```
//! use diesel::prelude::*;
//! # diesel::table! { tags (id) { id -> BigInt, post_id -> BigInt, label -> Text } }
//! # #[derive(Debug, Queryable)] pub struct Tag { pub id: i64, pub post_id: i64, pub label: String }
//! # #[derive(Insertable)] #[diesel(table_name = tags)] pub struct NewTag { pub post_id: i64, pub label: String }
//! # #[derive(AsChangeset, Default)] #[diesel(table_name = tags)] pub struct TagChanges { pub label: Option<String> }
//! # larder::entity!(Tag { table: tags, new: NewTag, changes: TagChanges });
//! # let dir = tempfile::tempdir().unwrap();
//! # let url = format!("sqlite://{}", dir.path().join("app.db").display());
//! # let store = larder::Store::open(&url)?;
//! # diesel::connection::SimpleConnection::batch_execute(&mut larder::Connection::establish(&url)?,
//! #     "CREATE TABLE tags (id INTEGER PRIMARY KEY NOT NULL, post_id BIGINT NOT NULL, label TEXT NOT NULL UNIQUE)").unwrap();
//! let tx = store.begin()?;
//! tx.repo::<Tag>().create(NewTag { post_id: 1, label: "rust".into() })?;
//! let duplicate = tx.repo::<Tag>().create(NewTag { post_id: 2, label: "rust".into() });
//! assert!(matches!(duplicate, Err(larder::Error::Conflict { .. }))); // UNIQUE (label)
//! let refused = tx.repo::<Tag>().create(NewTag { post_id: 3, label: "go".into() });
//! assert!(matches!(refused, Err(larder::Error::TransactionAborted { .. })));
//! assert!(tx.commit().is_err()); // rolled back instead, on every backend
//! assert!(store.repo::<Tag>().query(|conn| larder::with_connection!(conn, |c| tags::table.load(c)))?.is_empty());
//! # Ok::<(), larder::Error>(())
//! ```
//!
//! A write whose statement ran counts as written even when its returned row
//! cannot be decoded: the key is recorded before the statement and invalidated
//! at commit. An update or write after the transaction's first statement does
//! not cache the row it returns at commit (it invalidates it): that row may come
//! from the transaction's snapshot (MySQL's REPEATABLE READ), older than commits
//! the cache has heard of since, when the write changed nothing. On SQLite a transaction begins with `BEGIN IMMEDIATE`, taking the
//! write lock up front: writers queue within the busy timeout
//! ([`StoreBuilder::busy_timeout`], then [`Error::Busy`]) instead of failing on
//! a lock upgrade half-way through.
//!
//! # The cache
//!
//! Each entity has an identity map of up to 16 shards (one per 64 entries of
//! capacity, so that a small map is one shard), each behind its own
//! `parking_lot` mutex, with an invalidation epoch and the loads in flight.
//! Each shard keeps its entries with W-TinyLFU (as Caffeine does): a small
//! admission window and a segmented LRU, where a new entry displaces an old
//! one only if a frequency sketch has seen it more often, so one-off reads (a
//! scan of every row, an export) do not push the hot set out.
//!
//! - **Identity.** While a row is cached, every `get` of it returns the same
//!   `Arc`; entries are immutable and replaced whole, so no caller sees a
//!   half-updated object. List queries return the identity map's own `Arc`s.
//! - **No stale fill.** A miss records its shard's epoch before it queries, and
//!   its result is dropped if an invalidation moved the epoch meanwhile: a
//!   reader that raced a writer never puts the old row back. Nor does a load
//!   that began before a newer copy of its row was cached and then evicted:
//!   a caller once served a row is never served an older one. Every write reads
//!   the epoch before its statement runs, autocommitted ones included (an
//!   insert, whose key is not known yet, reads every shard's).
//! - **Single flight.** Concurrent misses of one key wait for one load, on that
//!   key's slot rather than on the shard; a load that fails or panics wakes its
//!   waiters, who then load for themselves.
//! - **Capacity.** [`StoreBuilder::cache_capacity`] bounds each entity's
//!   entries (default 10,000; 0 turns caching off),
//!   [`StoreBuilder::entity_with_capacity`] one entity's. The shards share it:
//!   the map fills to its capacity however unevenly the hot keys spread over
//!   them, and never holds more than it. A shard keeps the units of capacity
//!   it took until the next flush.
//! - **The list cache.** [`Repo::cached_query`] and [`Repo::cached_value`]
//!   results ([`StoreBuilder::query_cache_capacity`], default 10,000) are stored
//!   with the generation of every table they read. A committed write to one of
//!   those tables, here or in any process larder hears of, moves its
//!   generation, so the entry is never served again; a result whose query raced
//!   such a write is not stored at all. A table no entity of the store maps is
//!   never invalidated, so a query reading one is not cached. A [`Read::eq`]
//!   result (`comments WHERE post_id = 7`) is stored instead with the
//!   generation of its value's bucket (1,024 per key column, 8 KiB; values
//!   sharing a bucket retire each other's lists, never keep one alive) and of
//!   its table's fallback. A write moves the buckets of the key values its row
//!   had before (updates and deletes read them first, with the row locked,
//!   in the write's transaction) and has after; a change whose values are
//!   unknown (a truncate, a cascade, a trigger that does not report them, a
//!   flush) moves the fallback, retiring every keyed list of the table.
//!
//! [`Store::stats`] returns [`Stats`]: per entity [`CacheStats`] (hits, misses,
//! loads, fills, stale fills dropped, invalidations, evictions, entries), the
//! list cache's, the pool's and the watcher's ([`CoherenceStats`]); its
//! `Display` is a table. larder also emits `tracing` events, never with a
//! password or row data: `pool_checkout` and `load` spans, trace events for
//! hits, misses, waits on a load in flight, fills and invalidations, debug
//! events for commits and rollbacks, a warning for a failed rollback.
//!
//! ```
//! # use diesel::prelude::*;
//! # diesel::table! { tags (id) { id -> BigInt, post_id -> BigInt, label -> Text } }
//! # #[derive(Debug, Queryable)] pub struct Tag { pub id: i64, pub post_id: i64, pub label: String }
//! # #[derive(Insertable)] #[diesel(table_name = tags)] pub struct NewTag { pub post_id: i64, pub label: String }
//! # #[derive(AsChangeset, Default)] #[diesel(table_name = tags)] pub struct TagChanges { pub label: Option<String> }
//! # larder::entity!(Tag { table: tags, new: NewTag, changes: TagChanges });
//! # let dir = tempfile::tempdir().unwrap();
//! # let url = format!("sqlite://{}", dir.path().join("app.db").display());
//! # diesel::connection::SimpleConnection::batch_execute(&mut larder::Connection::establish(&url)?,
//! #     "CREATE TABLE tags (id INTEGER PRIMARY KEY NOT NULL, post_id BIGINT NOT NULL, label TEXT NOT NULL)").unwrap();
//! let store = larder::Store::builder(&url)
//!     .cache_capacity(1_000) // entries per entity
//!     .coherence(false) // this process is the only writer: no watcher
//!     .build()?;
//! let tags = store.repo::<Tag>();
//! let tag = tags.create(NewTag { post_id: 1, label: "rust".into() })?;
//! tags.get(tag.id)?; // a hit: create cached the stored row
//! tags.invalidate(tag.id); // as after a raw SQL write
//! tags.get(tag.id)?; // a miss, loaded and cached again
//! let stats = store.stats().entity("tags");
//! assert_eq!((stats.hits, stats.misses, stats.loads), (1, 1, 1));
//! println!("{}", store.stats());
//! # Ok::<(), larder::Error>(())
//! ```
//!
//! # Coherence across processes
//!
//! Each process has its own store and caches; a change committed anywhere (in
//! another larder process, a cron job, `psql`) reaches every cache. Triggers
//! capture every committed insert, update and delete of a cached table, and one
//! background thread per store, the watcher, invalidates what they name:
//!
//! - on PostgreSQL the triggers call `pg_notify` (delivered only on commit; a
//!   `TRUNCATE` is reported too) and the watcher listens on a connection of its
//!   own, having proved that it hears what is notified through the store's URL
//!   (a URL behind a transaction-mode pooler fails that proof and is refused at
//!   build: see [`StoreBuilder::session_url`]);
//! - on SQLite and MySQL they append to the change log table `larder_changes`,
//!   created by larder's migrations, which the watcher polls every
//!   [`StoreBuilder::poll_interval`] (default `max_staleness / 4`), coming back
//!   for ids skipped by transactions that commit out of order.
//!
//! [`capture_sql`] returns the triggers of a table for a backend, to put in the
//! table's migration after larder's own; `larder migrate generate NAME --capture
//! TABLE` writes such a migration. [`capture_sql_with_keys`] (`--capture
//! TABLE:COLUMN`) also reports the key columns' values before and after each
//! change, so that other processes retire only the [`Read::eq`] lists of those
//! values; without them a change retires every keyed list of its table. [`Store::uncaptured_tables`] names the
//! cached tables that exist without them (a store with coherence on also logs
//! a warning after `Store::migrate` and after `Store::run_migrations`). On MySQL, whose cascades fire no triggers,
//! declare [`Entity::DELETED_WITH`] for tables a cascade empties.
//!
//! ```
//! # use diesel::prelude::*;
//! # diesel::table! { tags (id) { id -> BigInt, post_id -> BigInt, label -> Text } }
//! # #[derive(Debug, Queryable)] pub struct Tag { pub id: i64, pub post_id: i64, pub label: String }
//! # #[derive(Insertable)] #[diesel(table_name = tags)] pub struct NewTag { pub post_id: i64, pub label: String }
//! # #[derive(AsChangeset, Default)] #[diesel(table_name = tags)] pub struct TagChanges { pub label: Option<String> }
//! # larder::entity!(Tag { table: tags, new: NewTag, changes: TagChanges });
//! use std::time::Duration;
//! use diesel::connection::SimpleConnection;
//!
//! # let dir = tempfile::tempdir().unwrap();
//! # let url = format!("sqlite://{}", dir.path().join("app.db").display());
//! let store = larder::Store::builder(&url)
//!     .entity::<Tag>()
//!     .max_staleness(Duration::from_millis(250)) // the bound; 10 ms ..= 60 s, default 100 ms
//!     .build()?;
//! store.migrate()?; // the change log the triggers write
//! let mut conn = larder::Connection::establish(&url)?;
//! # conn.batch_execute("CREATE TABLE tags (id INTEGER PRIMARY KEY NOT NULL, post_id BIGINT NOT NULL, label TEXT NOT NULL)").unwrap();
//! assert_eq!(store.uncaptured_tables()?, ["tags"]);
//! let capture = larder::capture_sql(store.url().backend(), "tags")?; // `up` and `down` SQL
//! conn.batch_execute(&capture.up).unwrap(); // in the application's migration
//! assert!(store.uncaptured_tables()?.is_empty());
//! # Ok::<(), larder::Error>(())
//! ```
//!
//! **The bound holds when things break.** [`StoreBuilder::max_staleness`]
//! (default 100 ms) bounds how long after another process commits this store
//! may still serve the old row. Whenever the watcher has had no confirmed view
//! of the database for half of it (its connection lost, a poll failed, the
//! change log missing or re-created, a skipped id given up), it empties every
//! cache of its store, on every tick until it is back; a lost PostgreSQL
//! listener may have missed notifications, so the caches are flushed when it is
//! lost and again when it has reconnected. Each flush, loss and reconnect is
//! counted in [`Stats::coherence`] and logged.
//!
//! A process hears its own commits come back too and invalidates them once
//! more: one extra miss per write in the writing process, and a safety net for
//! writes that bypassed local invalidation (raw SQL through [`Repo::query`] or
//! [`with_connection!`]). Writes that bypass triggers are not seen: MySQL
//! `TRUNCATE`, bulk loads with triggers disabled, PostgreSQL's
//! `session_replication_role = replica`. Migrations, which may change rows
//! without a trigger firing (a table dropped and re-created), are announced by
//! whatever runs them through larder ([`Migrator`], the `larder` CLI,
//! [`Store::migrate`], [`Store::run_migrations`]), and every watching store
//! empties its caches ([`FlushReason::Migrated`]). [`StoreBuilder::coherence`]`(false)`
//! turns the watcher off for a process that is the database's only writer. The
//! repository's `docs/deployment.md` covers running many processes, and
//! `docs/benchmarks.md` the measured delays and costs.
//!
//! # Read replicas
//!
//! [`StoreBuilder::replica`] adds PostgreSQL streaming replicas. Cache-filling
//! loads go to a replica only once it has replayed every change this store
//! has invalidated: the store raises a required WAL position before each
//! invalidation (read after a local COMMIT, or by the watcher after it hears
//! other processes' changes) and compares it with the replica's
//! `pg_last_wal_replay_lsn()`, asked on the load's own connection right
//! before it (a promoted server is no replica); otherwise the primary serves
//! the load, and a down replica is skipped. Writes, transactions, locks and migrations use the primary. See
//! [`ReplicaStats`] and `docs/replicas.md`.
//!
//! # Named locks across processes
//!
//! Threads of one process share larder's own locks safely; applications also
//! need critical sections across processes and hosts: rebuild the front page
//! once, not once per worker, send a digest once, run a deployment step once.
//! [`Store::lock`] returns a [`LockGuard`] held in the database, released on
//! `Drop`, `Err` and panic alike, and by the database server (or, for SQLite,
//! the OS) when its process dies, even by `SIGKILL`:
//!
//! ```
//! use std::time::Duration;
//! # let dir = tempfile::tempdir().unwrap();
//! # let url = format!("sqlite://{}", dir.path().join("app.db").display());
//! let store = larder::Store::builder(&url)
//!     .lock_timeout(Duration::from_secs(10)) // default: the connection timeout
//!     .build()?;
//! store.migrate()?; // the fencing tokens' table
//!
//! // The seed's `@synchronized`: one process at a time, released on Err and panic.
//! let pages = store.with_lock("front-page", || Ok::<_, larder::Error>(12))?;
//!
//! let guard = store.lock("front-page")?; // waits up to the lock timeout
//! assert!(guard.is_held());
//! let token = guard.fencing_token(); // larger than every earlier one for the name
//! assert!(matches!(store.lock("front-page"), Err(larder::Error::LockHeld { .. }))); // no self-deadlock
//! let other = store.clone();
//! let busy = std::thread::spawn(move || other.try_lock("front-page").map(|g| g.is_none()));
//! assert!(busy.join().unwrap()?); // another thread, like another process, is excluded
//! drop(guard);
//! assert!(store.try_lock("front-page")?.unwrap().fencing_token() > token);
//! # assert_eq!(pages, 12);
//! # Ok::<(), larder::Error>(())
//! ```
//!
//! - **Mechanisms.** PostgreSQL session advisory locks keyed by the FNV-1a
//!   64-bit hash of the name (fixed forever; two names sharing a key only wait
//!   for each other); MySQL/MariaDB `GET_LOCK` on `<database>.<name>` (hashed
//!   past 64 characters); SQLite, which has neither, an exclusive `flock` on
//!   `<database>.locks/<key>.lock` beside the database file (in-memory SQLite
//!   databases are refused by [`DatabaseUrl::parse`] anyway).
//! - **Bounded.** Waiting past [`StoreBuilder::lock_timeout`] is
//!   [`Error::LockTimeout`] naming the lock; [`Store::try_lock`] never waits.
//!   Two processes each holding a lock the other wants get [`Error::Deadlock`]
//!   on at least one side (the server's detector; on SQLite larder's own,
//!   reading the holders and waiters it records beside the lock files). A
//!   thread taking a lock it holds gets [`Error::LockHeld`]; names are checked
//!   ([`Error::InvalidLockName`] for an empty one or one over 1,024 bytes) and
//!   shown escaped and cut in errors.
//! - **Connections.** The locks a thread takes through a store share one
//!   database session of their own (on [`StoreBuilder::session_url`] when it
//!   is set), opened outside the pool on the first lock and closed with the last guard: holding any number of locks never takes a
//!   connection repositories need. One session per thread, not per lock, so
//!   that the server's deadlock detector sees a thread's held and awaited
//!   locks together. Guards are neither `Send` nor `Sync` for that reason.
//! - **Lost locks and fencing tokens.** A session lost while holding a lock (a
//!   restart, `pg_terminate_backend`, `KILL`) frees the lock for others:
//!   [`LockGuard::is_held`] turns false and [`Store::with_lock`] returns
//!   [`Error::LockLost`] after its closure. The work then ran but may have
//!   overlapped another holder's; [`LockGuard::fencing_token`] is the defence
//!   (Kleppmann, "How to do distributed locking"): tokens are drawn from the
//!   database table `larder_lock_tokens` and grow with every acquisition of a
//!   name, across processes and restarts, so a write that applies only when
//!   its token is the newest refuses a holder that lost its lock. The blog's
//!   `rebuild_front_page` does exactly that.
//!
//! # Backends
//!
//! The URL picks the backend at run time, and the application changes nothing
//! else:
//!
//! | URL | backend | cargo feature |
//! |---|---|---|
//! | `sqlite://path`, `sqlite:path`, a bare path (no `?parameters`: those go on a URI filename), a URI filename (`file:app.db?mode=rwc`) | SQLite, compiled in | `sqlite` (default) |
//! | `postgres://…`, `postgresql://…` | PostgreSQL; libpq built from source without OpenSSL | `postgres` (default) |
//! | the same with `sslmode=require` | libpq built with OpenSSL (needs `libssl-dev`) | `postgres-tls` |
//! | `mysql://…` | MySQL / MariaDB through the system client library (`libmariadb-dev`) | `mysql` |
//!
//! SQLite connections get WAL, `foreign_keys=ON` and the busy timeout. A
//! [`Connection`] is an enum of diesel's native connections, one variant per
//! backend the build includes. [`with_connection!`] runs a body with the
//! backend's own diesel connection, compiling it once per backend;
//! [`match_backend!`] picks an arm per backend for SQL that differs (`RETURNING`,
//! row locks, dialect functions), and an application needs no `#[cfg]` of its
//! own for the backends larder leaves out:
//!
//! ```
//! use diesel::prelude::*;
//! diesel::table! { tags (id) { id -> BigInt, post_id -> BigInt, label -> Text } }
//!
//! fn count_tags(conn: &mut larder::Connection) -> QueryResult<i64> {
//!     larder::with_connection!(conn, |c| tags::table.count().get_result(c))
//! }
//!
//! /// The tags of a post, locked until the transaction ends where the backend
//! /// has row locks (SQLite's write transaction already excludes other writers).
//! fn lock_tags(conn: &mut larder::Connection, post: i64) -> QueryResult<Vec<i64>> {
//!     let query = tags::table.filter(tags::post_id.eq(post)).select(tags::id);
//!     larder::match_backend!(conn, |c| {
//!         Sqlite => query.load(c),
//!         Postgres => query.for_update().load(c),
//!         Mysql => query.for_update().load(c),
//!     })
//! }
//! ```
//!
//! Differences that matter to a cache, made alike:
//!
//! - MySQL has no `RETURNING`: inserts and updates read the row back by its id
//!   on the same connection, right after the write.
//! - PostgreSQL aborts a transaction after any error; every backend refuses to
//!   commit a transaction in which a statement failed (see
//!   [Transactions](#transactions)).
//! - SQLite serialises writers: [`Error::Busy`] after the busy timeout, never a
//!   hang.
//! - A lost server connection (a restart, `pg_terminate_backend`, `KILL`) fails
//!   the call in flight with [`Error::ConnectionLost`]; the pool pings a
//!   connection idle for over 500 ms at checkout and replaces a dead one. One
//!   used more recently is handed out unpinged (a miss is one round trip): a
//!   read that finds it dead runs once more on a pinged connection, a write
//!   fails with [`Error::ConnectionLost`] (it may have committed). Its server
//!   session, which may not have noticed and may still commit it, is ended
//!   first if it still runs a statement (PostgreSQL's `pg_terminate_backend`,
//!   MySQL's `KILL`, from a new connection, waiting at most 5 s; not through
//!   a transaction-mode pooler), so that the write cannot land after the
//!   caches were told of it. The next call succeeds once the server is
//!   back.
//!
//! [`DatabaseUrl`] parses and redacts URLs; [`create_database`],
//! [`database_exists`] and [`drop_database`] manage the database a URL names
//! (server databases through the server's maintenance database).
//!
//! # Migrations
//!
//! larder's own migrations create its change log (SQLite and MySQL) and the
//! named locks' fencing tokens (`larder_lock_tokens`), and only those
//! ([`SQLITE_MIGRATIONS`] and the other backends'); they run first.
//! [`Store::migrate`] applies them; [`Store::run_migrations`] then applies an
//! application's, embedded with `diesel_migrations::embed_migrations!`, one
//! folder per backend (`migrations/<backend>/<version>_<name>/{up,down}.sql`).
//! Both empty the caches, since a migration may rewrite any row.
//!
//! [`Migrator`] is the operator's side: it applies, reverts, redoes and lists
//! larder's migrations together with an application's folder read at run time
//! ([`Migrator::open_with_dir`]). The `larder` binary (package `larder-cli`:
//! `cargo install --path cli`) wraps it: `larder migrate run | revert | redo |
//! status | pending | resolve VERSION | generate NAME [--capture TABLE]` and `larder database
//! setup | reset | drop`, with the application's migrations from
//! `--migrations-dir`, `MIGRATION_DIRECTORY`, `./migrations/<backend>` or
//! `./migrations`.
//!
//! Runners take turns: every operation that migrates (`Store::migrate`,
//! `Store::run_migrations`, the `Migrator`'s `run`, reverts and redos, and
//! the CLI's commands built on them) holds the database's migration lock,
//! so the hosts of a rolling deploy that all migrate on start wait for one
//! another and the later ones find nothing left to do. A runner kept waiting
//! past its bound ([`Migrator::lock_timeout`], the store's lock timeout,
//! `larder --lock-timeout`) gets [`Error::MigrationLocked`], having changed
//! nothing.
//!
//! # Errors
//!
//! Every fallible call returns [`Result`], whose [`Error`] is one
//! `#[non_exhaustive]` enum: [`NotFound`](Error::NotFound),
//! [`Conflict`](Error::Conflict) (a unique, foreign-key or check constraint, or
//! a version mismatch, told apart by [`ConflictKind`]; nothing was written),
//! [`PoolTimeout`](Error::PoolTimeout) (with the cause when connections could
//! not be opened), [`Busy`](Error::Busy), [`ConnectionLost`](Error::ConnectionLost),
//! [`Serialization`](Error::Serialization) (a deadlock or serialization failure:
//! run the transaction again), [`TransactionAborted`](Error::TransactionAborted)
//! (a statement in it failed, so it was rolled back),
//! [`InvalidValue`](Error::InvalidValue) (a value its column cannot hold: bad
//! input, 422), [`InsideTransaction`](Error::InsideTransaction) (a write through the store
//! inside the same thread's open transaction: write through `tx`),
//! the named locks' [`LockTimeout`](Error::LockTimeout),
//! [`Deadlock`](Error::Deadlock), [`LockLost`](Error::LockLost),
//! [`LockHeld`](Error::LockHeld), [`InvalidLockName`](Error::InvalidLockName)
//! and [`LockFile`](Error::LockFile),
//! [`InvalidUrl`](Error::InvalidUrl), [`InvalidConfig`](Error::InvalidConfig),
//! [`Connection`](Error::Connection), [`Migration`](Error::Migration),
//! [`MigrationLocked`](Error::MigrationLocked) and
//! [`Database`](Error::Database). Diesel's and r2d2's errors are mapped onto it
//! in one place and kept as its [`source`](std::error::Error::source); a
//! conflict names its constraint where the database reports it.
//! [`is_not_found`](Error::is_not_found) (404), [`is_conflict`](Error::is_conflict)
//! (409) and [`is_retryable`](Error::is_retryable) (503, or run it again) answer
//! what a web handler asks. Messages name the table and the key; no message,
//! `Debug` or `Display` ever shows a URL's password (`***`).
//!
//! ```
//! # use diesel::prelude::*;
//! # diesel::table! { tags (id) { id -> BigInt, post_id -> BigInt, label -> Text } }
//! # #[derive(Debug, Queryable)] pub struct Tag { pub id: i64, pub post_id: i64, pub label: String }
//! # #[derive(Insertable)] #[diesel(table_name = tags)] pub struct NewTag { pub post_id: i64, pub label: String }
//! # #[derive(AsChangeset, Default)] #[diesel(table_name = tags)] pub struct TagChanges { pub label: Option<String> }
//! # larder::entity!(Tag { table: tags, new: NewTag, changes: TagChanges });
//! # let dir = tempfile::tempdir().unwrap();
//! # let url = format!("sqlite://{}", dir.path().join("app.db").display());
//! # diesel::connection::SimpleConnection::batch_execute(&mut larder::Connection::establish(&url)?,
//! #     "CREATE TABLE tags (id INTEGER PRIMARY KEY NOT NULL, post_id BIGINT NOT NULL, label TEXT NOT NULL UNIQUE)").unwrap();
//! use larder::{ConflictKind, Error};
//!
//! let store = larder::Store::open(&url)?;
//! let tags = store.repo::<Tag>();
//! tags.create(NewTag { post_id: 1, label: "rust".into() })?;
//! let err = tags.create(NewTag { post_id: 1, label: "rust".into() }).unwrap_err();
//! assert!(matches!(err, Error::Conflict { kind: ConflictKind::Unique, .. }));
//! assert!(err.is_conflict() && !err.is_retryable());
//! let err = tags.update(42, TagChanges { label: Some("go".into()) }).unwrap_err();
//! assert!(matches!(err, Error::NotFound { table: "tags", id: 42 }));
//! assert!(err.is_not_found());
//!
//! let url = larder::DatabaseUrl::parse("postgres://app:s3cret@db.example/app")?;
//! assert_eq!(url.to_string(), "postgres://app:***@db.example/app");
//! assert!(!format!("{url:?}").contains("s3cret"));
//! # Ok::<(), larder::Error>(())
//! ```
//!
//! # Design and invariants
//!
//! larder exists to make three classic failures of a cached web application
//! impossible rather than unlikely: a lock or transaction left held after an
//! error (every later caller blocks), a cache serving an object after the
//! database changed (in this process, another thread or another process), and
//! slow I/O under a lock (throughput collapses, lock orders deadlock).
//!
//! ```text
//! application ─ its entities (entity!, the derive, or an Entity impl) and query methods (Repository)
//! Store (Clone + Send + Sync; one per process)
//!  ├─ Repo<E>: get → identity map hit → Arc<E>
//!  │           miss → single-flight load through the pool → fill unless invalidated meanwhile
//!  │           create / update → epoch read → one autocommitted statement (delete: its own transaction)
//!  │                           → applied to the cache after the commit
//!  ├─ Tx guard (TxRepo<E>): BEGIN (IMMEDIATE on SQLite) → work → COMMIT → invalidate; dropped = ROLLBACK
//!  ├─ identity map per entity: ≤ 16 shards sharing one capacity, each W-TinyLFU over lru::LruCaches
//!  │                           + epoch + loads in flight behind a parking_lot::Mutex; the list cache beside it
//!  ├─ registry / invalidation bus: finds caches by type (repositories) and by table (invalidations)
//!  ├─ named locks: LockGuard on one lock session per thread (outside the pool)
//!  │               + a fencing token from larder_lock_tokens
//!  ├─ watcher thread: other processes' commits → invalidations
//!  │                  (PostgreSQL LISTEN/NOTIFY; the trigger-fed change log polled on SQLite and MySQL)
//!  └─ r2d2 pool of Connection = SQLite | PostgreSQL | MySQL, picked by the URL
//! ```
//!
//! Inside the crate, dependencies point one way, and `tests/layers.rs` reads
//! the source to keep them so: the cache (identity maps, shards, single-flight
//! loads, the list cache) knows no other module and no database; the
//! invalidation bus (`registry`: keys, changes, pending writes, table
//! generations) knows only the cache; the core (entity, store, repositories,
//! transactions, builder) sits on both; the watcher feeds the bus without
//! knowing the store; and the SQL that differs between backends (session
//! settings, catalogs, capture triggers, change-log arithmetic, the watcher's
//! timeouts, the error messages whose text is the only signal) lives in one
//! `dialect` module per backend, which knows nothing else.
//!
//! **Why larder dispatches itself instead of using diesel's `MultiConnection`.**
//! With [`Connection`] an enum of native connections and [`with_connection!`]
//! compiling a body once per backend, each backend keeps its own dialect and
//! features (`RETURNING` on SQLite and PostgreSQL, SQLite's `BEGIN IMMEDIATE`),
//! values need no conversion through a common multi-backend type, and a backend
//! left out of the build (`mysql` is opt-in because its client library is a
//! system dependency) simply has no arm. `MultiConnection` would have required
//! every query to be valid for the lowest common denominator, and an enum whose
//! variants cannot depend on cargo features.
//!
//! The invariants, each held by a test (paths in the repository):
//!
//! - **Identity**: while a row is cached every `get` returns the same `Arc`;
//!   entries are immutable and replaced whole, and a fill never replaces an
//!   entry that is still current: a load that finds one cached when it finishes
//!   hands out that one (`tests/identity_map.rs`, `tests/write_races.rs`, the
//!   shuttle model in `src/cache/model.rs`).
//! - **No stale fill**: each shard has an epoch; a miss records it before
//!   loading and its fill is dropped if an invalidation moved it meanwhile,
//!   or if its key was evicted since (each shard remembers its last evicted
//!   keys: a newer copy may have been cached and evicted, and reads must
//!   never go back; `src/cache/evicted.rs`);
//!   invalidation removes the entry, detaches any in-flight load of the key and
//!   bumps the epoch under one lock
//!   (`a_reader_racing_a_writer_never_leaves_a_stale_value` in
//!   `tests/concurrency.rs`, which pauses a loader on a latch while a writer
//!   commits, and fails when the epoch check is removed). Every write reads the
//!   epoch before its statement runs, autocommitted ones included: an insert,
//!   whose key is not known yet, reads every shard's epoch first.
//! - **Commit-time invalidation**: a transaction records what it wrote before
//!   each statement runs (so a statement whose returned row fails to decode
//!   still invalidates), and, for deletes, the rows the `ON DELETE CASCADE`
//!   will remove, read in the same transaction under `FOR UPDATE` locks (parent
//!   first) so that no child can be inserted unseen before the delete; it
//!   applies them to the cache only after `COMMIT` succeeds. A created or
//!   updated row is cached as stored only if no other invalidation touched its
//!   shard, and no load cached the row, since the write read its epoch (that
//!   load may have read a later writer's commit). Reads inside a transaction go through its
//!   connection and never fill the shared cache (`tests/transactions.rs`,
//!   `tests/invalidation.rs`).
//! - **Scoped release**: the pooled connection, the transaction and every lock
//!   are guards; a panic inside [`Store::transaction`] rolls back and the pool
//!   discards that connection (larder's r2d2 manager treats a connection
//!   returned while its thread panics, or with a transaction still open, as
//!   broken). A single-flight leader that fails or panics wakes its waiters
//!   (`tests/transactions.rs`, `examples/blog/tests/stress.rs`). A named lock
//!   is released on `Err` and panic inside [`Store::with_lock`], and by the
//!   server or the OS when its process is killed (`tests/locks.rs`, with real
//!   processes).
//! - **Bounded waits**: pool checkout times out into [`Error::PoolTimeout`]; a
//!   SQLite writer waits for the write lock up to the busy timeout, then gets
//!   [`Error::Busy`] (`tests/pool.rs`); a named lock waits up to the lock
//!   timeout ([`Error::LockTimeout`]), and a deadlock between processes is
//!   [`Error::Deadlock`], never a hang (`tests/locks.rs`). A write through the
//!   store while the same thread holds one of its open transactions, which
//!   would wait for that transaction's own locks (on PostgreSQL for ever), is
//!   refused at once with [`Error::InsideTransaction`] (`tests/transactions.rs`).
//!   The transaction belongs to the thread that last used it: a `Tx` moved to
//!   another thread, which then writes through the store before touching the
//!   `Tx`, is not recognised, and on PostgreSQL (no `lock_timeout` by default)
//!   that write waits on the `Tx`'s row locks for good. Use the moved `Tx`
//!   first, or set `lock_timeout` on the database role.
//! - **Bounded staleness**: a store whose watcher has not confirmed its view of
//!   the database within half of `max_staleness` empties its caches; whenever
//!   the watcher cannot prove it saw every change, it flushes, never skips
//!   (`tests/coherence.rs`).
//! - **Nothing lost**: a transaction commits whole or not at all, and one whose
//!   statement failed refuses to commit, on every backend
//!   (`a_transaction_with_a_failed_statement_cannot_commit` in
//!   `tests/backends.rs`); a versioned update (the blog's
//!   `posts().update_versioned`) writes only when the version is the one read,
//!   so read-modify-write loops retrying on a conflict lose no update
//!   (`tests/reliability.rs`).
//! - **Secrets stay secret**: [`DatabaseUrl`], [`StoreBuilder`], [`Store`] and
//!   every error print URLs with the password replaced by `***`: the user-info
//!   one and every secret-bearing query parameter (`password`, `sslpassword`,
//!   `oauth_client_secret`, in any case, percent-encoded or repeated). Every
//!   piece of them a driver may echo is removed from its messages, which are
//!   withheld whole when a piece is too short to remove (`tests/secrets.rs`,
//!   `tests/observability.rs` for the log).
//!
//! The repository's `docs/reliability.md` lists the attacks the test suite runs
//! against these invariants, and what an independent review found and fixed.
//!
//! # Lock discipline
//!
//! - A shard lock is held only for in-memory work (lookup, fill, remove, epoch
//!   bump), never across a database call, an allocation-heavy clone or a call
//!   into user code; all of it is in the `cache` module.
//! - At most one shard lock is held at a time. Concurrent misses of a key wait
//!   on that key's flight, not on the shard
//!   (`a_stalled_load_blocks_no_other_cache_operation`,
//!   `concurrent_misses_of_one_key_load_it_once` in `tests/concurrency.rs`).
//! - Values leaving a shard (evicted, invalidated, flushed) are returned and
//!   dropped after the lock is released, so an entity's destructor never runs
//!   under it.
//! - The registry finds caches without holding a lock of its own while a cache
//!   lock is taken; the watcher, the single consumer of the database's change
//!   stream, takes at most one shard lock at a time and none across its queries.
//! - `parking_lot` locks do not poison; shards are never left half-updated, so
//!   they stay usable after a panic elsewhere. The stress test runs
//!   `parking_lot`'s deadlock detector as a watchdog, and a model checker
//!   (shuttle, `cargo test -p larder --features shuttle --lib cache::model`)
//!   explores interleavings of the cache protocol.
//!
//!
//! # Async (tokio, axum)
//!
//! larder is synchronous underneath (diesel and r2d2); the cargo feature
//! `tokio` adds a thin async layer for web applications, and `axum` (which
//! implies it) makes [`Error`] an axum response. Neither is on by default.
//!
//! - `store.async_repo::<E>()` returns an `AsyncRepo<E>` (a [`Store`] clone
//!   inside: `Clone`, `'static`, every future `Send`). A hit of `get`,
//!   `get_many`, `cached_query` or `cached_value` is served inline: one shard
//!   lock held for nanoseconds, no thread hop, counted like the sync call.
//!   A miss loads on tokio's blocking pool; concurrent misses of one key
//!   share one load, and an async caller waiting for it awaits the load's
//!   flight (a waker beside the sync waiters' condvar), parking no thread.
//!   `create`, `update` and `delete` run on the blocking pool.
//! - `store.transaction_async(|tx| …)` runs a closure of sync repository
//!   calls as one transaction on the blocking pool (the closure is the unit:
//!   a `Tx` is `Send`, but while a task holds one across an `.await` that
//!   task's async writes through the store are refused), and
//!   `store.blocking(|store| …)` any other sync
//!   work (a named lock, an application's query methods).
//! - Work on the blocking pool that panics comes back as
//!   [`Error::Interrupted`] (status 500) instead of unwinding through the
//!   awaiting task: its transaction is rolled back and its connection
//!   discarded, as on the sync path. A call outside a tokio runtime is the
//!   same error, never a panic.
//! - A store may be built, and its last clone dropped, on a runtime worker
//!   (`#[tokio::main] async fn main`): building connects (and blocks that
//!   worker while it does, as any sync call would), and the drop waits for
//!   the store's threads to stop, milliseconds against a server that answers.
//! - [`Error::status_code`] maps every error to an HTTP status (404, 409,
//!   400 for a lock name, 422 for a value its column cannot hold, 503 for
//!   the retryable ones and an unreachable database, 500); with `axum`, `impl IntoResponse for
//!   Error` answers with it, so a handler returning `Result<_, larder::Error>`
//!   uses `?`. The repository's `docs/async.md` has a complete handler.

#![deny(missing_docs, unreachable_pub)]
#![warn(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod app_sql;
#[cfg(feature = "tokio")]
mod async_api;
mod backend;
mod builder;
mod cache;
mod coherence;
mod database;
mod dialect;
mod entity;
mod error;
mod keys;
mod lock;
mod lost;
mod migrate;
#[cfg(feature = "mysql")]
mod mysql_insert;
mod pool;
mod prepared;
mod read;
mod registry;
mod replica;
mod repo;
mod requirement;
mod stats;
mod store;
mod sync;
mod thread_tx;
mod tx;
mod url;

#[cfg(feature = "tokio")]
pub use async_api::AsyncRepo;
pub use backend::Connection;
pub use builder::StoreBuilder;
pub use cache::CacheStats;
pub use coherence::capture::{capture_sql, capture_sql_with_keys, CaptureSql};
pub use coherence::{CoherenceStats, FlushCounts, FlushReason};
pub use database::{create_database, database_exists, drop_database};
pub use entity::{Entity, Key};
pub use error::{ConflictKind, Error, Interruption, Result};
#[cfg(feature = "derive")]
pub use larder_derive::Entity;
pub use lock::LockGuard;
#[cfg(feature = "mysql")]
pub use migrate::MYSQL_MIGRATIONS;
#[cfg(feature = "postgres")]
pub use migrate::POSTGRES_MIGRATIONS;
#[cfg(feature = "sqlite")]
pub use migrate::SQLITE_MIGRATIONS;
pub use migrate::{MigrationStatus, Migrator, DEFAULT_MIGRATION_LOCK_TIMEOUT};
pub use prepared::KeepPrepared;
pub use read::Read;
pub use replica::ReplicaStats;
pub use repo::{Repo, Repos, Repository, TxRepo};
pub use stats::{PoolState, Stats};
pub use store::Store;
pub use tx::Tx;
pub use url::{Backend, DatabaseUrl};

/// What the macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::dialect::mysql::LAST_INSERT_ID as MYSQL_LAST_INSERT_ID;
    pub use crate::entity::{
        column_name, is_empty_changeset, is_named_id, is_plain_name, keyed_by_id, returned_row,
        slot_by_type, table_name, EntitySlot, KeyField,
    };
    #[cfg(feature = "mysql")]
    pub use crate::mysql_insert::explicit_id as mysql_explicit_id;
}
