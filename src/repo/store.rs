//! [`Repo`]: a repository on the store, reading through the identity map and
//! committing each write on its own.

use std::any::TypeId;
use std::fmt;
use std::sync::Arc;

use diesel::QueryResult;

use super::{Repository, TxRepo};
use crate::cache::{IdentityMap, QueryKey};
#[cfg(feature = "tokio")]
use crate::cache::{Lease, Probe};
use crate::entity::{identity_map, Entity, Key};
use crate::error::Result;
use crate::pool::Connection;
use crate::read::Read;
use crate::store::Store;
use crate::thread_tx::refuse_inside;
use crate::tx::Tx;

/// The repository of entity `E` on a [`Store`]: `get` is served from the
/// identity map; each write commits on its own (one autocommitted statement
/// for [`Entity::SINGLE_STATEMENT_WRITES`] entities, else its own transaction)
/// and invalidates what it changed once committed. On a thread holding an
/// open transaction of the store, its writes are refused with
/// [`Error::InsideTransaction`](crate::Error::InsideTransaction): they would
/// wait for that transaction's locks; write through the transaction's
/// repository instead.
///
/// ```
/// use larder_blog::{Blog, NewUser};
/// # let dir = tempfile::tempdir().unwrap();
/// # // Coherence off: the watcher (its echo of a write, its flush when it
/// # // falls behind on a loaded machine) may retire an entry before the assert.
/// # let store = larder_blog::builder(dir.path().join("doc.db").to_str().unwrap())
/// #     .coherence(false).build().unwrap();
/// # larder_blog::migrate(&store).unwrap();
/// let users = store.users(); // store.repo::<User>(), named by the blog
/// let ann = users.create(NewUser { name: "ann".into(), email: "ann@example.org".into() })?;
/// let again = users.get(ann.id)?.expect("just created");
/// assert!(std::sync::Arc::ptr_eq(&ann, &again)); // one object per row while cached
/// assert!(users.delete(ann.id)?);
/// assert!(users.get(ann.id)?.is_none());
/// # Ok::<(), larder::Error>(())
/// ```
pub struct Repo<'s, E> {
    store: &'s Store,
    cache: &'s IdentityMap<E>,
}

impl Store {
    /// The repository of entity `E`. An entity not registered with
    /// [`StoreBuilder::entity`](crate::StoreBuilder::entity) is registered now, with the store's cache
    /// capacity; afterwards this is two atomic loads (for entities declared with
    /// [`entity!`](crate::entity), the derive or [`entity_slot!`](crate::entity_slot)).
    pub fn repo<E: Entity>(&self) -> Repo<'_, E> {
        Repo::new(self, identity_map::<E>(self.registry(), None))
    }
}

impl<'s, E: Entity> Repo<'s, E> {
    pub(crate) fn new(store: &'s Store, cache: &'s IdentityMap<E>) -> Repo<'s, E> {
        Repo { store, cache }
    }

    /// Row `id`, from the cache when it is there, else loaded once (concurrent
    /// callers share the load) and cached.
    ///
    /// # Errors
    ///
    /// [`Error::PoolTimeout`](crate::Error::PoolTimeout) or a database error when a
    /// load was needed and failed.
    pub fn get(&self, id: i64) -> Result<Option<Arc<E>>> {
        self.cache.get_or_load(id, || self.load(id))
    }

    /// Reads row `id` from the database (a miss's load).
    fn load(&self, id: i64) -> Result<Option<E>> {
        let _span = tracing::trace_span!("load", table = E::TABLE, id).entered();
        self.store
            .load(Some(E::TABLE), Some(id), |conn| E::find(conn, id))
    }

    /// The async face of [`get`](Repo::get), first half: the cached value, the
    /// load in flight to await, or the lease to load it, counted as `get`
    /// counts them.
    #[cfg(feature = "tokio")]
    pub(crate) fn probe(&self, id: i64) -> Probe<E> {
        self.cache.probe(id)
    }

    /// The async face of [`get`](Repo::get), second half (on the blocking
    /// pool): loads the leased key and ends its flight.
    #[cfg(feature = "tokio")]
    pub(crate) fn lead(&self, lease: Lease<E>) -> Result<Option<Arc<E>>> {
        let id = lease.id();
        self.cache.lead(lease, || self.load(id))
    }

    /// Ends a lease whose load will never run.
    #[cfg(feature = "tokio")]
    pub(crate) fn abandon(&self, lease: Lease<E>) {
        self.cache.abandon(lease);
    }

    /// Loads row `id` without joining or starting a flight, under the epoch
    /// rule: for a waiter whose leader failed.
    #[cfg(feature = "tokio")]
    pub(crate) fn load_alone(&self, id: i64) -> Result<Option<Arc<E>>> {
        self.cache.load_alone(id, || self.load(id))
    }

    /// Inserts a row, committed on its own, and caches the stored row.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`](crate::Error::Conflict) when a constraint rejects the row
    /// (nothing is written).
    pub fn create(&self, new: E::New) -> Result<Arc<E>> {
        self.single_write(None, |repo| repo.create(new))
    }

    /// Updates row `id`, committed on its own, and returns the stored row.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`](crate::Error::NotFound) when there is no such row,
    /// [`Error::Conflict`](crate::Error::Conflict) when a constraint rejects the change.
    pub fn update(&self, id: i64, changes: E::Changes) -> Result<Arc<E>> {
        self.single_write(Some(id), |repo| repo.update(id, changes))
    }

    /// The rows of `ids` that exist, in the order of `ids` (each once): the
    /// cached ones from the cache, all others in one query, then cached.
    ///
    /// # Errors
    ///
    /// [`Error::PoolTimeout`](crate::Error::PoolTimeout) or a database error
    /// when a load was needed and failed.
    pub fn get_many(&self, ids: &[i64]) -> Result<Vec<Arc<E>>> {
        let ids = unique(ids);
        let cached = self.get_cached(&ids);
        self.load_missing(&ids, cached)
    }

    /// The cached rows of `ids` (`None` where not cached), each counted as a
    /// hit or a miss: the in-memory half of [`get_many`](Repo::get_many).
    pub(crate) fn get_cached(&self, ids: &[i64]) -> Vec<Option<Arc<E>>> {
        self.cache.get_cached(ids)
    }

    /// The database half of [`get_many`](Repo::get_many): loads every id of
    /// `ids` whose `cached` entry is `None`, in one query.
    pub(crate) fn load_missing(
        &self,
        ids: &[i64],
        cached: Vec<Option<Arc<E>>>,
    ) -> Result<Vec<Arc<E>>> {
        let missing: Vec<i64> = ids
            .iter()
            .zip(&cached)
            .filter(|(_, hit)| hit.is_none())
            .map(|(id, _)| *id)
            .collect();
        let mut loaded = std::collections::HashMap::new();
        if !missing.is_empty() {
            // The epochs first: a row invalidated while the query runs is not filled.
            let epochs = self.cache.epochs();
            let rows = self.store.load(Some(E::TABLE), None, |conn| {
                find_in_chunks::<E>(conn, &missing)
            })?;
            self.cache.count_loads(rows.len());
            for row in self.cache.intern(rows, &epochs, E::id) {
                loaded.insert(row.id(), row);
            }
        }
        Ok(ids
            .iter()
            .zip(cached)
            .filter_map(|(id, hit)| hit.or_else(|| loaded.remove(id)))
            .collect())
    }

    /// Runs a write of row `id` that returns the row as stored (`None` when it
    /// wrote nothing), committed on its own: autocommitted when the entity
    /// declares [`Entity::SINGLE_STATEMENT_WRITES`] (then `write` must run
    /// exactly one write statement), else in its own transaction.
    ///
    /// # Errors
    ///
    /// The write's database error; [`Error::InvalidConfig`](crate::Error::InvalidConfig)
    /// when `write`, autocommitted, left a transaction open (see
    /// [`run`](Repo::run)): rolled back, and row `id` invalidated.
    pub fn write<F>(&self, id: i64, write: F) -> Result<Option<Arc<E>>>
    where
        F: FnOnce(&mut Connection) -> QueryResult<Option<E>>,
    {
        self.single_write(Some(id), |repo| repo.write(id, write))
    }

    /// Deletes row `id` (and what cascades from it) in its own transaction.
    /// Returns whether a row was removed.
    ///
    /// # Errors
    ///
    /// A database error; nothing is removed then.
    pub fn delete(&self, id: i64) -> Result<bool> {
        self.in_tx(|repo| repo.delete(id))
    }

    /// Runs a list query on a pooled connection and returns its rows through the
    /// identity map: a row that is cached comes back as the cached `Arc`.
    ///
    /// # Errors
    ///
    /// [`Error::PoolTimeout`](crate::Error::PoolTimeout) or the query's database
    /// error; [`Error::InvalidConfig`](crate::Error::InvalidConfig) when the
    /// query succeeded but left a transaction open (rolled back, see
    /// [`run`](Repo::run)).
    pub fn query<F>(&self, query: F) -> Result<Vec<Arc<E>>>
    where
        F: FnOnce(&mut Connection) -> QueryResult<Vec<E>>,
    {
        let epochs = self.cache.epochs();
        let rows = self.store.load_once(Some(E::TABLE), None, query)?;
        Ok(self.cache.intern(rows, &epochs, E::id))
    }

    /// Like [`query`](Repo::query), with the result cached under `key` (which
    /// must identify the query and its parameters) until something in `reads`
    /// changes: a table (`"users"`, [`Read::table`]), any write to which,
    /// committed anywhere larder hears of, invalidates the list; or with
    /// [`Read::eq`] only the rows of a table whose key column has one value
    /// (see [`Entity::KEY_COLUMNS`]). A table no registered entity maps is
    /// never invalidated, so a query reading one is not cached; nor is one
    /// whose `reads` is empty (nothing would ever invalidate it). Its rows
    /// are rows of `E`'s table, so non-empty `reads` must name that table
    /// ([`Read::table`] or a [`Read::eq`] of it), else the call returns
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) and runs nothing.
    ///
    /// ```
    /// use diesel::prelude::*;
    /// use larder_blog::schema::users;
    /// use larder_blog::{Blog, NewUser};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = larder_blog::open(dir.path().join("doc.db").to_str().unwrap()).unwrap();
    ///
    /// let named = |store: &larder::Store| {
    ///     store.users().cached_query("users named ann", &["users"], |conn| {
    ///         let query = users::table.filter(users::name.eq("ann")).order(users::id);
    ///         larder::with_connection!(conn, |c| query.load(c))
    ///     })
    /// };
    /// assert!(named(&store)?.is_empty());
    /// store.users().create(NewUser { name: "ann".into(), email: "a@example.org".into() })?;
    /// assert_eq!(named(&store)?.len(), 1); // the insert invalidated the cached list
    /// # Ok::<(), larder::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::PoolTimeout`](crate::Error::PoolTimeout) or the query's database
    /// error; [`Error::InvalidConfig`](crate::Error::InvalidConfig) when the
    /// query succeeded but left a transaction open (rolled back, see
    /// [`run`](Repo::run)).
    pub fn cached_query<R, F>(&self, key: &str, reads: &[R], query: F) -> Result<Vec<Arc<E>>>
    where
        R: Into<Read> + Copy,
        F: FnOnce(&mut Connection) -> QueryResult<Vec<E>>,
    {
        Ok(Arc::unwrap_or_clone(
            self.cached_query_shared(key, reads, query)?,
        ))
    }

    /// [`cached_query`](Repo::cached_query)'s list as cached, shared rather
    /// than copied: for the async layer's callers that only read it.
    pub(crate) fn cached_query_shared<R, F>(
        &self,
        key: &str,
        reads: &[R],
        query: F,
    ) -> Result<Arc<Vec<Arc<E>>>>
    where
        R: Into<Read> + Copy,
        F: FnOnce(&mut Connection) -> QueryResult<Vec<E>>,
    {
        let reads: Vec<Read> = reads.iter().map(|read| (*read).into()).collect();
        super::check_list_reads::<E>(&reads)?;
        self.through_query_cache(key, &reads, || self.query(query))
    }

    /// Any value a query computes (a count, an existence check, a sum), cached
    /// like [`cached_query`](Repo::cached_query) until a table in `reads` changes.
    ///
    /// ```
    /// use diesel::prelude::*;
    /// use larder_blog::schema::users;
    /// use larder_blog::{Blog, NewUser};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = larder_blog::open(dir.path().join("doc.db").to_str().unwrap()).unwrap();
    /// let count = |store: &larder::Store| {
    ///     store.users().cached_value("users.count", &["users"], |conn| {
    ///         larder::with_connection!(conn, |c| users::table.count().get_result::<i64>(c))
    ///     })
    /// };
    /// assert_eq!(count(&store)?, 0);
    /// store.users().create(NewUser { name: "ann".into(), email: "a@example.org".into() })?;
    /// assert_eq!(count(&store)?, 1);
    /// # Ok::<(), larder::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::PoolTimeout`](crate::Error::PoolTimeout) or the query's database
    /// error; [`Error::InvalidConfig`](crate::Error::InvalidConfig) when the
    /// query succeeded but left a transaction open (rolled back, see
    /// [`run`](Repo::run)).
    pub fn cached_value<R, T, F>(&self, key: &str, reads: &[R], query: F) -> Result<T>
    where
        R: Into<Read> + Copy,
        T: Clone + Send + Sync + 'static,
        F: FnOnce(&mut Connection) -> QueryResult<T>,
    {
        Ok(Arc::unwrap_or_clone(
            self.cached_value_shared(key, reads, query)?,
        ))
    }

    /// [`cached_value`](Repo::cached_value)'s value as cached, shared rather
    /// than copied.
    pub(crate) fn cached_value_shared<R, T, F>(
        &self,
        key: &str,
        reads: &[R],
        query: F,
    ) -> Result<Arc<T>>
    where
        R: Into<Read> + Copy,
        T: Send + Sync + 'static,
        F: FnOnce(&mut Connection) -> QueryResult<T>,
    {
        let reads: Vec<Read> = reads.iter().map(|read| (*read).into()).collect();
        self.through_query_cache(key, &reads, || {
            self.store.load_once(Some(E::TABLE), None, query)
        })
    }

    /// Runs `work` on a pooled connection, its errors mapped for this entity's
    /// table and row `id`; nothing is cached or invalidated.
    ///
    /// Unlike the writes above, it is not refused inside this thread's open
    /// transaction of the store (`work` may only read), but a write in it
    /// then waits for that transaction's locks: on PostgreSQL for ever, on
    /// MySQL for `innodb_lock_wait_timeout`. Inside a transaction, write
    /// through the transaction's repository (`tx.repo::<E>().run(…)`).
    ///
    /// The connection goes back to the pool, to another caller, when `work`
    /// returns. A transaction `work` opens and does not end (`BEGIN`, `START
    /// TRANSACTION`, on SQLite a `SAVEPOINT` outside one, MySQL's `SET
    /// autocommit = 0` or `completion_type = CHAIN`, which would chain one
    /// to the application's next COMMIT, diesel's `begin_test_transaction` or
    /// `AnsiTransactionManager::begin_transaction` on the connection
    /// [`with_connection!`](crate::with_connection) lends) is rolled back
    /// before it does, and refused, here and in `query`, `cached_query` and
    /// `write` closures (diesel's `transaction(…)`, which ends its own, is
    /// fine). larder asks the
    /// server (one round trip) only when a statement of `work` named a word
    /// that can open one (`BEGIN`, `START`, `SAVEPOINT`, `autocommit`,
    /// `CALL`, `EXECUTE`, `CHAIN`, `XA`, `completion_type`, and `COMMIT`
    /// and `ROLLBACK`, which MySQL's `completion_type = CHAIN`, set by a
    /// stored function or trigger where no word shows it, makes open
    /// one), as diesel's
    /// instrumentation shows it (the watch passes every event on to the
    /// application's default instrumentation); a connection on which `work`
    /// set an instrumentation of its own keeps it, and is always asked. Other session state `work`
    /// changes is not reset: undo it in `work`, or scope it with `SET LOCAL`
    /// inside a transaction (a `search_path`, MySQL's `foreign_key_checks`,
    /// a SQLite `PRAGMA`, a temporary table that shadows a real one, a lock
    /// held for the session: an advisory lock, MySQL's `LOCK TABLES` taken
    /// with autocommit on; with it off, the ROLLBACK releases them; a
    /// session isolation level: on MySQL a `READ UNCOMMITTED` one would let
    /// the connection's later loads cache rows that are then rolled back).
    /// PostgreSQL's `session_replication_role = replica` does not silence
    /// larder's capture triggers, which fire `ALWAYS`.
    ///
    /// # Errors
    ///
    /// [`Error::PoolTimeout`](crate::Error::PoolTimeout) or `work`'s database
    /// error; [`Error::InvalidConfig`](crate::Error::InvalidConfig) when `work`
    /// succeeded but left a transaction open (rolled back: what `work` wrote
    /// in it is not in the database).
    pub fn run<T, F>(&self, id: Option<i64>, work: F) -> Result<T>
    where
        F: FnOnce(&mut Connection) -> QueryResult<T>,
    {
        self.store.run(Some(E::TABLE), id, work)
    }

    /// The value cached under `key` for `E` while `reads` keep their
    /// generations, else `load`ed and cached unless one moved meanwhile.
    fn through_query_cache<V, L>(&self, key: &str, reads: &[Read], load: L) -> Result<Arc<V>>
    where
        V: Send + Sync + 'static,
        L: FnOnce() -> Result<V>,
    {
        let registry = self.store.registry();
        let Some(read) = registry.generations(reads) else {
            return load().map(Arc::new);
        };
        let key = query_key::<E, V>(key);
        // Before the lookup, so any eviction the lookup missed counts as later.
        let began = registry.queries().began();
        if let Some(value) = registry.queries().get::<V>(&key, &read) {
            return Ok(value);
        }
        let value = Arc::new(load()?);
        match registry.generations(reads) {
            Some(now) => Ok(registry.queries().fill(key, read, value, &now, began)),
            None => Ok(value),
        }
    }

    /// The value [`cached_query`](Repo::cached_query) (`V` = `Vec<Arc<E>>`)
    /// or [`cached_value`](Repo::cached_value) would serve from the list
    /// cache under `key` without a query, counted as a hit; `None` (nothing
    /// counted) when they would have to query.
    #[cfg(feature = "tokio")]
    pub(crate) fn query_hit<V: Send + Sync + 'static>(
        &self,
        key: &str,
        reads: &[Read],
    ) -> Option<Arc<V>> {
        let registry = self.store.registry();
        let read = registry.generations(reads)?;
        registry.queries().hit::<V>(&query_key::<E, V>(key), &read)
    }

    /// The cached value of `id`, if cached, without loading it.
    pub fn cached(&self, id: i64) -> Option<Arc<E>> {
        self.cache.peek(id)
    }

    /// Drops `id` from this process's cache, for example after changing the row
    /// with raw SQL.
    pub fn invalidate(&self, id: i64) {
        self.store.invalidate(Key::new(E::TABLE, id));
    }

    /// Runs one write statement in autocommit mode (see
    /// [`Entity::SINGLE_STATEMENT_WRITES`]), else in a transaction. When the
    /// work fails or panics after its statement may have committed (a MySQL
    /// read-back that failed, a returned row that cannot be decoded), the
    /// dropped [`Tx`] applies what the write recorded before its statement as
    /// uncertain: row `id` (or, for an insert, the table's cached lists) is
    /// invalidated, always safe.
    fn single_write<T>(
        &self,
        id: Option<i64>,
        work: impl FnOnce(&TxRepo<'_, E>) -> Result<T>,
    ) -> Result<T> {
        // A keyed write reads its row's old key values first: locked, in the
        // same transaction as the write, or another writer could move the row
        // between the two unseen.
        let reads_before = id.is_some() && !E::KEY_COLUMNS.is_empty();
        if !E::SINGLE_STATEMENT_WRITES || reads_before {
            return self.in_tx(work);
        }
        refuse_inside(self.store.id(), "write", Some(E::TABLE))?;
        let tx = Tx::autocommit(self.store)?;
        let value = work(&TxRepo::new(&tx, self.cache))?;
        tx.commit()?;
        Ok(value)
    }

    fn in_tx<T>(&self, work: impl FnOnce(&TxRepo<'_, E>) -> Result<T>) -> Result<T> {
        refuse_inside(self.store.id(), "write", Some(E::TABLE))?;
        self.store
            .transaction(|tx| work(&TxRepo::new(tx, self.cache)))
    }
}

/// `ids` without repeats, in their first order.
pub(crate) fn unique(ids: &[i64]) -> Vec<i64> {
    // A page's few ids are checked against each other faster than a
    // SipHash set is built (it was a tenth of a cached page's reads).
    const SCAN: usize = 32;
    if ids.len() <= SCAN {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if !out.contains(id) {
                out.push(*id);
            }
        }
        return out;
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

/// The list cache's key of a result of type `V` of `E`'s queries.
fn query_key<E: 'static, V: 'static>(key: &str) -> QueryKey {
    (TypeId::of::<(E, V)>(), key.to_owned())
}

impl<E> fmt::Debug for Repo<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repo")
            .field("entity", &std::any::type_name::<E>())
            .finish()
    }
}

impl<E: Entity> Repository<E> for Repo<'_, E> {
    fn get(&self, id: i64) -> Result<Option<Arc<E>>> {
        Repo::get(self, id)
    }

    fn get_many(&self, ids: &[i64]) -> Result<Vec<Arc<E>>> {
        Repo::get_many(self, ids)
    }

    fn create(&self, new: E::New) -> Result<Arc<E>> {
        Repo::create(self, new)
    }

    fn update(&self, id: i64, changes: E::Changes) -> Result<Arc<E>> {
        Repo::update(self, id, changes)
    }

    fn delete(&self, id: i64) -> Result<bool> {
        Repo::delete(self, id)
    }

    fn write<F>(&self, id: i64, write: F) -> Result<Option<Arc<E>>>
    where
        F: FnOnce(&mut Connection) -> QueryResult<Option<E>>,
    {
        Repo::write(self, id, write)
    }

    fn query<F>(&self, query: F) -> Result<Vec<Arc<E>>>
    where
        F: FnOnce(&mut Connection) -> QueryResult<Vec<E>>,
    {
        Repo::query(self, query)
    }

    fn cached_query<R, F>(&self, key: &str, reads: &[R], query: F) -> Result<Vec<Arc<E>>>
    where
        R: Into<Read> + Copy,
        F: FnOnce(&mut Connection) -> QueryResult<Vec<E>>,
    {
        Repo::cached_query(self, key, reads, query)
    }

    fn cached_value<R, T, F>(&self, key: &str, reads: &[R], query: F) -> Result<T>
    where
        R: Into<Read> + Copy,
        T: Clone + Send + Sync + 'static,
        F: FnOnce(&mut Connection) -> QueryResult<T>,
    {
        Repo::cached_value(self, key, reads, query)
    }

    fn run<T, F>(&self, id: Option<i64>, work: F) -> Result<T>
    where
        F: FnOnce(&mut Connection) -> QueryResult<T>,
    {
        Repo::run(self, id, work)
    }
}

/// The most ids one [`Entity::find_many`] is given: SQLite binds at most
/// 32,766 parameters to a statement, PostgreSQL and MySQL 65,535, and a
/// `get_many` of more ids must still be answered.
pub(crate) const IDS_PER_QUERY: usize = 10_000;

/// [`Entity::find_many`] over `ids`, [`IDS_PER_QUERY`] at a time, on one connection.
pub(crate) fn find_in_chunks<E: Entity>(conn: &mut Connection, ids: &[i64]) -> QueryResult<Vec<E>> {
    let mut rows = Vec::new();
    for chunk in ids.chunks(IDS_PER_QUERY) {
        rows.extend(E::find_many(conn, chunk)?);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::unique;

    #[test]
    fn unique_keeps_the_first_order_on_both_sides_of_its_scan_limit() {
        assert_eq!(unique(&[3, 1, 3, 2, 1]), [3, 1, 2]);
        let long: Vec<i64> = (0..100).rev().chain(0..100).collect();
        assert_eq!(unique(&long), (0..100).rev().collect::<Vec<_>>());
    }
}
