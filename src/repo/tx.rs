//! [`TxRepo`]: a repository inside a transaction. Reads go to the database
//! through the transaction; writes are recorded and applied to the cache only
//! when it commits.

use std::any::TypeId;
use std::fmt;
use std::sync::Arc;

use diesel::QueryResult;

use super::{before, Repository};
use crate::cache::{AnyValue, IdentityMap};
use crate::entity::{identity_map, Entity, Key};
use crate::error::{Error, Result};
use crate::pool::Connection;
use crate::read::Read;
use crate::registry::{PendingWrite, Written};
use crate::tx::Tx;

/// The repository of entity `E` inside a [`Tx`]. Reads go to the database
/// through the transaction (they see its own writes and never fill the shared
/// cache); writes are applied to the cache only when the transaction commits.
///
/// ```
/// use larder_blog::{Blog, NewPost, NewUser};
/// # let dir = tempfile::tempdir().unwrap();
/// # let store = larder_blog::open(dir.path().join("doc.db").to_str().unwrap()).unwrap();
/// let post = store.transaction(|tx| {
///     let ann = tx.users().create(NewUser { name: "ann".into(), email: "ann@example.org".into() })?;
///     tx.posts().create(NewPost { author_id: ann.id, title: "Hello".into(), body: "…".into() })
/// })?;
/// assert_eq!(post.version, 1);
/// # Ok::<(), larder::Error>(())
/// ```
pub struct TxRepo<'t, E> {
    tx: &'t Tx<'t>,
    cache: &'t IdentityMap<E>,
}

impl Tx<'_> {
    /// The repository of entity `E` inside this transaction (registered with
    /// the store on first use, as [`Store::repo`](crate::Store::repo)).
    pub fn repo<E: Entity>(&self) -> TxRepo<'_, E> {
        TxRepo::new(self, identity_map::<E>(self.store().registry(), None))
    }
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

    /// The rows of `ids` that exist, in the order of `ids` (each once), as
    /// this transaction sees them, in one query.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn get_many(&self, ids: &[i64]) -> Result<Vec<Arc<E>>> {
        let mut rows: std::collections::HashMap<i64, E> = self
            .tx
            .run(E::TABLE, None, |conn| {
                super::store::find_in_chunks::<E>(conn, ids)
            })?
            .into_iter()
            .map(|row| (row.id(), row))
            .collect();
        Ok(ids
            .iter()
            .filter_map(|id| rows.remove(id).map(Arc::new))
            .collect())
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
        let touched = key_values_of(&*row).collect();
        // The new row is the transaction's own until it commits: no one
        // else can change it, whatever snapshot the transaction reads.
        let stored = Some((Arc::clone(&row), true));
        self.tx
            .settle(place, self.written(row.id(), stored, epoch, touched));
        Ok(row)
    }

    /// Updates row `id`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when there is no such row, [`Error::Conflict`] when a
    /// constraint rejects the change.
    pub fn update(&self, id: i64, changes: E::Changes) -> Result<Arc<E>> {
        self.write_row(id, |conn| E::update(conn, id, &changes))?
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
        self.tx.note_write_closure(E::TABLE);
        self.write_row(id, write)
    }

    /// [`write`](TxRepo::write) for a write of larder's own (the entity's
    /// update), which leaves no transaction open.
    fn write_row<F>(&self, id: i64, write: F) -> Result<Option<Arc<E>>>
    where
        F: FnOnce(&mut Connection) -> QueryResult<Option<E>>,
    {
        // Read before the write so that any invalidation after it is noticed.
        let epoch = self.cache.epoch_of(id);
        // Unless read before the transaction's snapshot was taken, the epoch
        // may postdate commits the snapshot misses: a write that changed
        // nothing returns the snapshot's older row, which must not be cached.
        let cacheable = self.tx.snapshot_not_taken();
        let before = before::key_values::<E>(self.tx, id)?;
        // Recorded before the statement: if it runs and its returned row then
        // fails to decode, the commit still invalidates the row.
        let place = self
            .tx
            .record(PendingWrite::Unsettled(Key::new(E::TABLE, id)));
        let row = self.tx.run(E::TABLE, Some(id), write)?.map(Arc::new);
        // No row back stays unsettled: an application's write that changed the
        // row but returned `None` still invalidates it (a wasted miss at worst).
        // So does a row that came back under another id (the write moved it):
        // neither key may be filled with it, and both are invalidated.
        if let Some(moved) = row.as_ref().filter(|row| row.id() != id) {
            self.tx
                .record(PendingWrite::Unsettled(Key::new(E::TABLE, moved.id())));
        } else if let Some(row) = &row {
            // No row at the key read, one now: inserted since, by another
            // session, with values unknown here. Naming no key column
            // retires every list of the table.
            let touched = before.map_or_else(Vec::new, |mut touched| {
                touched.extend(key_values_of(&**row));
                touched
            });
            let stored = Some((Arc::clone(row), cacheable));
            self.tx
                .settle(place, self.written(id, stored, epoch, touched));
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
        // No row at the key read yet one removed: inserted since, with
        // values unknown here (see `write`); none named retires every list.
        let touched = before::key_values::<E>(self.tx, id)?.unwrap_or_default();
        let cascade = self
            .tx
            .run(E::TABLE, Some(id), |conn| E::cascade(conn, id))?;
        // Recorded before the statement, as a removal (the row and whatever
        // is deleted with it): if it runs and then reports an error that does
        // not poison the transaction, a commit still invalidates them.
        self.tx.record_cascade(cascade);
        let key = Key::new(E::TABLE, id);
        let place = self.tx.record(PendingWrite::Removed(key));
        let removed = self
            .tx
            .run(E::TABLE, Some(id), |conn| E::delete(conn, id))?;
        let settled = if removed {
            self.written(id, None, epoch, touched)
        } else {
            PendingWrite::Unsettled(key)
        };
        self.tx.settle(place, settled);
        Ok(removed)
    }

    /// Runs a list query inside the transaction. A transaction `query`
    /// leaves the connection opening (MySQL's `SET autocommit = 0`) is
    /// ended when this one has, as after [`run`](TxRepo::run).
    ///
    /// # Errors
    ///
    /// The query's database error.
    pub fn query<F>(&self, query: F) -> Result<Vec<Arc<E>>>
    where
        F: FnOnce(&mut Connection) -> QueryResult<Vec<E>>,
    {
        // The application's SQL: what it leaves the connection doing
        // (MySQL's `autocommit = 0`) is checked when the transaction ends.
        self.tx.note_app_sql(E::TABLE);
        let rows = self.tx.run(E::TABLE, None, query)?;
        Ok(rows.into_iter().map(Arc::new).collect())
    }

    /// Runs `work` on the transaction's connection, its errors mapped for
    /// this entity's table and row `id`. A database error in it poisons the
    /// transaction, which can then only roll back. What `work` writes is not
    /// recorded (invalidate it after the commit), but rows the transaction
    /// wrote before through a repository are invalidated at the commit rather
    /// than cached as those writes returned them, with every keyed list of
    /// their tables, since `work` may have changed them again (and moved
    /// them to key values those writes never saw); and since `work` may have
    /// committed the transaction (a raw `COMMIT`, or on MySQL any DDL, which
    /// commits implicitly), a rollback after it invalidates them too. Once
    /// the transaction has ended, a transaction `work` left the connection
    /// opening (MySQL's `SET autocommit = 0`) is ended and autocommit turned
    /// back on before the connection goes back to the pool; other session
    /// state is `work`'s to undo (see [`Repo::run`](crate::Repo::run)).
    ///
    /// # Errors
    ///
    /// `work`'s database error. Inside `work`, use the connection it is
    /// given: a call through the transaction itself (`tx.users()…`) is
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig).
    pub fn run<T, F>(&self, id: Option<i64>, work: F) -> Result<T>
    where
        F: FnOnce(&mut Connection) -> QueryResult<T>,
    {
        self.tx.note_raw_statements(E::TABLE);
        self.tx.run(E::TABLE, id, work)
    }

    /// What the commit applies for row `id`: `stored` is the row as the
    /// write returned it and whether it may be cached, `None` for a delete.
    fn written(
        &self,
        id: i64,
        stored: Option<(Arc<E>, bool)>,
        epoch: u64,
        touched: Vec<(&'static str, Option<i64>)>,
    ) -> PendingWrite {
        let cacheable = stored.as_ref().is_some_and(|(_, cacheable)| *cacheable);
        PendingWrite::Written {
            key: Key::new(E::TABLE, id),
            written: Written {
                entity: TypeId::of::<E>(),
                value: stored.map(|(row, _)| row as AnyValue),
                cacheable,
                epoch,
                touched,
            },
        }
    }
}

/// `row`'s values of its entity's key columns.
fn key_values_of<E: Entity>(row: &E) -> impl Iterator<Item = (&'static str, Option<i64>)> + '_ {
    E::KEY_COLUMNS
        .iter()
        .map(move |column| (*column, row.key_value(column)))
}

impl<E> fmt::Debug for TxRepo<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxRepo")
            .field("entity", &std::any::type_name::<E>())
            .finish()
    }
}

impl<E: Entity> Repository<E> for TxRepo<'_, E> {
    fn get(&self, id: i64) -> Result<Option<Arc<E>>> {
        TxRepo::get(self, id)
    }

    fn get_many(&self, ids: &[i64]) -> Result<Vec<Arc<E>>> {
        TxRepo::get_many(self, ids)
    }

    fn create(&self, new: E::New) -> Result<Arc<E>> {
        TxRepo::create(self, new)
    }

    fn update(&self, id: i64, changes: E::Changes) -> Result<Arc<E>> {
        TxRepo::update(self, id, changes)
    }

    fn delete(&self, id: i64) -> Result<bool> {
        TxRepo::delete(self, id)
    }

    fn write<F>(&self, id: i64, write: F) -> Result<Option<Arc<E>>>
    where
        F: FnOnce(&mut Connection) -> QueryResult<Option<E>>,
    {
        TxRepo::write(self, id, write)
    }

    fn query<F>(&self, query: F) -> Result<Vec<Arc<E>>>
    where
        F: FnOnce(&mut Connection) -> QueryResult<Vec<E>>,
    {
        TxRepo::query(self, query)
    }

    /// Inside a transaction a list is never cached: it may hold the
    /// transaction's own uncommitted writes. Its `reads` are checked as on
    /// the store, so that code written once fails the same in both.
    fn cached_query<R, F>(&self, _key: &str, reads: &[R], query: F) -> Result<Vec<Arc<E>>>
    where
        R: Into<Read> + Copy,
        F: FnOnce(&mut Connection) -> QueryResult<Vec<E>>,
    {
        let reads: Vec<Read> = reads.iter().map(|read| (*read).into()).collect();
        super::check_list_reads::<E>(&reads)?;
        TxRepo::query(self, query)
    }

    fn cached_value<R, T, F>(&self, _key: &str, _reads: &[R], query: F) -> Result<T>
    where
        R: Into<Read> + Copy,
        T: Clone + Send + Sync + 'static,
        F: FnOnce(&mut Connection) -> QueryResult<T>,
    {
        // A read, as `query` is: not a statement of the application's own
        // that may have written rows again (which would make the commit
        // retire every keyed list of their tables); still the application's
        // SQL, checked when the transaction ends.
        self.tx.note_app_sql(E::TABLE);
        self.tx.run(E::TABLE, None, query)
    }

    fn run<T, F>(&self, id: Option<i64>, work: F) -> Result<T>
    where
        F: FnOnce(&mut Connection) -> QueryResult<T>,
    {
        TxRepo::run(self, id, work)
    }
}
