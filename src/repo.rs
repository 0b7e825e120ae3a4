//! Repositories: the cached face of an [`Entity`]. [`Repo`] works on the store
//! (reads through the identity map, each write committed on its own);
//! [`TxRepo`] works inside a [`Tx`].

use std::any::TypeId;
use std::fmt;
use std::sync::Arc;

use diesel::QueryResult;

use crate::cache::IdentityMap;
use crate::entity::{Entity, Key};
use crate::error::{Error, Result};
use crate::pool::Connection;
use crate::registry::{AnyValue, PendingWrite, Written};
use crate::store::Store;
use crate::tx::Tx;

/// The repository of entity `E` on a [`Store`]: `get` is served from the
/// identity map; each write commits on its own (one autocommitted statement
/// for [`Entity::SINGLE_STATEMENT_WRITES`] entities, else its own transaction)
/// and invalidates what it changed once committed.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let store = larder::Store::open(dir.path().join("doc.db").to_str().unwrap()).unwrap();
/// # store.migrate().unwrap();
/// let users = store.users();
/// let ann = users.create(larder::NewUser { name: "ann".into(), email: "ann@example.org".into() })?;
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

impl<'s, E: Entity> Repo<'s, E> {
    pub(crate) fn new(store: &'s Store, cache: &'s IdentityMap<E>) -> Repo<'s, E> {
        Repo { store, cache }
    }

    /// Row `id`, from the cache when it is there, else loaded once (concurrent
    /// callers share the load) and cached.
    ///
    /// # Errors
    ///
    /// [`Error::PoolTimeout`] or a database error when a load was needed and failed.
    pub fn get(&self, id: i64) -> Result<Option<Arc<E>>> {
        self.cache.get_or_load(id, || {
            let _span = tracing::trace_span!("load", table = E::TABLE, id).entered();
            self.store.run(E::TABLE, Some(id), |conn| E::find(conn, id))
        })
    }

    /// Inserts a row, committed on its own, and caches the stored row.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] when a constraint rejects the row (nothing is written).
    pub fn create(&self, new: E::New) -> Result<Arc<E>> {
        self.single_write(None, |repo| repo.create(new))
    }

    /// Updates row `id`, committed on its own, and returns the stored row.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when there is no such row, [`Error::Conflict`] when a
    /// constraint rejects the change.
    pub fn update(&self, id: i64, changes: E::Changes) -> Result<Arc<E>> {
        self.single_write(Some(id), |repo| repo.update(id, changes))
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
    /// [`Error::PoolTimeout`] or the query's database error.
    pub fn query<F>(&self, query: F) -> Result<Vec<Arc<E>>>
    where
        F: FnOnce(&mut Connection) -> QueryResult<Vec<E>>,
    {
        let epochs = self.cache.epochs();
        let rows = self.store.run(E::TABLE, None, query)?;
        Ok(self.cache.intern(rows, &epochs, E::id))
    }

    /// Like [`query`](Repo::query), with the result cached under `key` (which
    /// must identify the query and its parameters) until any table in `reads`
    /// changes: a write to one of them, committed anywhere larder hears of,
    /// invalidates the list. A table no registered entity maps is never
    /// invalidated, so a query reading one is not cached.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = larder::Store::open(dir.path().join("doc.db").to_str().unwrap()).unwrap();
    /// # store.migrate().unwrap();
    /// use diesel::prelude::*;
    /// use larder::schema::users;
    ///
    /// let named = |store: &larder::Store| {
    ///     store.users().cached_query("users named ann", &["users"], |conn| {
    ///         let query = users::table.filter(users::name.eq("ann")).order(users::id);
    ///         larder::with_connection!(conn, |c| query.load(c))
    ///     })
    /// };
    /// assert!(named(&store)?.is_empty());
    /// store.users().create(larder::NewUser { name: "ann".into(), email: "a@example.org".into() })?;
    /// assert_eq!(named(&store)?.len(), 1); // the insert invalidated the cached list
    /// # Ok::<(), larder::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::PoolTimeout`] or the query's database error.
    pub fn cached_query<F>(
        &self,
        key: &str,
        reads: &[&'static str],
        query: F,
    ) -> Result<Vec<Arc<E>>>
    where
        F: FnOnce(&mut Connection) -> QueryResult<Vec<E>>,
    {
        let registry = self.store.registry();
        let generation = |table: &str| registry.generation(table);
        let read: Option<Vec<(&'static str, u64)>> = reads
            .iter()
            .map(|t| generation(t).map(|g| (*t, g)))
            .collect();
        let Some(read) = read else {
            return self.query(query);
        };
        let key = (TypeId::of::<E>(), key.to_owned());
        if let Some(rows) = registry.queries().get::<E>(&key, generation) {
            return Ok(rows.as_ref().clone());
        }
        let rows = Arc::new(self.query(query)?);
        registry
            .queries()
            .fill(key, read, Arc::clone(&rows), generation);
        Ok(Arc::unwrap_or_clone(rows))
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

    /// Runs a write of one statement: autocommitted when the entity declares
    /// [`Entity::SINGLE_STATEMENT_WRITES`], else in its own transaction.
    /// Runs one write statement in autocommit mode (see
    /// [`Entity::SINGLE_STATEMENT_WRITES`]), else in a transaction. When the
    /// work fails after its statement may have committed (a MySQL read-back
    /// that failed, a returned row that cannot be decoded), row `id` (or, for
    /// an insert, the table's cached lists) is invalidated: always safe.
    pub(crate) fn single_write<T>(
        &self,
        id: Option<i64>,
        work: impl FnOnce(&TxRepo<'_, E>) -> Result<T>,
    ) -> Result<T> {
        if !E::SINGLE_STATEMENT_WRITES {
            return self.in_tx(work);
        }
        let tx = Tx::autocommit(self.store)?;
        let value = work(&TxRepo::new(&tx, self.cache)).inspect_err(|_| match id {
            Some(id) => self.store.registry().invalidate(Key::new(E::TABLE, id)),
            None => self.store.registry().retire_lists(E::TABLE),
        })?;
        tx.commit()?;
        Ok(value)
    }

    pub(crate) fn in_tx<T>(&self, work: impl FnOnce(&TxRepo<'_, E>) -> Result<T>) -> Result<T> {
        self.store
            .transaction(|tx| work(&TxRepo::new(tx, self.cache)))
    }
}

impl<E> fmt::Debug for Repo<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repo")
            .field("entity", &std::any::type_name::<E>())
            .finish()
    }
}

/// The repository of entity `E` inside a [`Tx`]. Reads go to the database
/// through the transaction (they see its own writes and never fill the shared
/// cache); writes are applied to the cache only when the transaction commits.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let store = larder::Store::open(dir.path().join("doc.db").to_str().unwrap()).unwrap();
/// # store.migrate().unwrap();
/// let post = store.transaction(|tx| {
///     let ann = tx.users().create(larder::NewUser { name: "ann".into(), email: "ann@example.org".into() })?;
///     tx.posts().create(larder::NewPost { author_id: ann.id, title: "Hello".into(), body: "…".into() })
/// })?;
/// assert_eq!(post.version, 1);
/// # Ok::<(), larder::Error>(())
/// ```
pub struct TxRepo<'t, E> {
    tx: &'t Tx<'t>,
    cache: &'t IdentityMap<E>,
}

impl<'t, E: Entity> TxRepo<'t, E> {
    pub(crate) fn new(tx: &'t Tx<'t>, cache: &'t IdentityMap<E>) -> TxRepo<'t, E> {
        TxRepo { tx, cache }
    }

    /// Row `id` as this transaction sees it.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn get(&self, id: i64) -> Result<Option<Arc<E>>> {
        let row = self.tx.run(E::TABLE, Some(id), |conn| E::find(conn, id))?;
        Ok(row.map(Arc::new))
    }

    /// Inserts a row; it is cached when the transaction commits.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] when a constraint rejects the row.
    pub fn create(&self, new: E::New) -> Result<Arc<E>> {
        // Every shard's epoch, read before the statement: the new id is not
        // known yet, and an autocommitted insert is visible (and can be
        // updated and invalidated by others) the moment it ends.
        let epochs = self.cache.epochs();
        let place = self.tx.record(PendingWrite::UnknownInsert(E::TABLE));
        let row = Arc::new(self.tx.run(E::TABLE, None, |conn| E::insert(conn, &new))?);
        let epoch = self.cache.epoch_in(&epochs, row.id());
        self.tx
            .settle(place, self.written(row.id(), Some(Arc::clone(&row)), epoch));
        Ok(row)
    }

    /// Updates row `id`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when there is no such row, [`Error::Conflict`] when a
    /// constraint rejects the change.
    pub fn update(&self, id: i64, changes: E::Changes) -> Result<Arc<E>> {
        self.write(id, |conn| E::update(conn, id, &changes))?
            .ok_or(Error::NotFound {
                table: E::TABLE,
                id,
            })
    }

    /// Runs a write of row `id` that returns the row as stored (or `None` when
    /// nothing was written) and records it for commit-time invalidation.
    ///
    /// # Errors
    ///
    /// The write's database error.
    pub fn write<F>(&self, id: i64, write: F) -> Result<Option<Arc<E>>>
    where
        F: FnOnce(&mut Connection) -> QueryResult<Option<E>>,
    {
        // Read before the write so that any invalidation after it is noticed.
        let epoch = self.cache.epoch_of(id);
        // Recorded before the statement: if it runs and its returned row then
        // fails to decode, the commit still invalidates the row.
        let place = self
            .tx
            .record(PendingWrite::Unsettled(Key::new(E::TABLE, id)));
        let row = self.tx.run(E::TABLE, Some(id), write)?.map(Arc::new);
        if row.is_some() {
            self.tx.settle(place, self.written(id, row.clone(), epoch));
        }
        Ok(row)
    }

    /// Deletes row `id` and what cascades from it; returns whether a row was removed.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn delete(&self, id: i64) -> Result<bool> {
        let epoch = self.cache.epoch_of(id);
        let cascade = self
            .tx
            .run(E::TABLE, Some(id), |conn| E::cascade(conn, id))?;
        let removed = self
            .tx
            .run(E::TABLE, Some(id), |conn| E::delete(conn, id))?;
        if removed {
            self.tx.record(self.written(id, None, epoch));
            self.tx.record_cascade(cascade);
        }
        Ok(removed)
    }

    /// Runs a list query inside the transaction.
    ///
    /// # Errors
    ///
    /// The query's database error.
    pub fn query<F>(&self, query: F) -> Result<Vec<Arc<E>>>
    where
        F: FnOnce(&mut Connection) -> QueryResult<Vec<E>>,
    {
        let rows = self.tx.run(E::TABLE, None, query)?;
        Ok(rows.into_iter().map(Arc::new).collect())
    }

    /// Runs `work` on the transaction's connection, with errors mapped for this
    /// entity's table and row `id`.
    pub(crate) fn run<T>(
        &self,
        id: Option<i64>,
        work: impl FnOnce(&mut Connection) -> QueryResult<T>,
    ) -> Result<T> {
        self.tx.run(E::TABLE, id, work)
    }

    fn written(&self, id: i64, value: Option<Arc<E>>, epoch: u64) -> PendingWrite {
        PendingWrite::Written {
            key: Key::new(E::TABLE, id),
            written: Written {
                entity: TypeId::of::<E>(),
                value: value.map(|v| v as AnyValue),
                epoch,
            },
        }
    }
}

impl<E> fmt::Debug for TxRepo<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxRepo")
            .field("entity", &std::any::type_name::<E>())
            .finish()
    }
}
