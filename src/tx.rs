//! The transaction guard: begin → work → commit; dropped without commit, it
//! rolls back. Cache invalidation happens only after a successful commit.

use std::cell::{Cell, RefCell};
use std::fmt;

use diesel::QueryResult;

use crate::entity::Key;
use crate::error::{Error, Result};
use crate::pool::{Connection, PooledConn};
use crate::registry::{PendingWrite, Unapplied};
use crate::store::Store;
use crate::thread_tx::{refuse_inside, OpenMark};

impl Store {
    /// Begins a transaction; see [`Tx`].
    ///
    /// # Errors
    ///
    /// [`Error::PoolTimeout`] when no connection is free, [`Error::Busy`] when
    /// another writer holds SQLite's write lock past the busy timeout,
    /// [`Error::InsideTransaction`] when this thread already holds an open
    /// transaction of this store (a second one would wait for the first's
    /// locks: use the open one).
    pub fn begin(&self) -> Result<Tx<'_>> {
        Tx::begin(self)
    }

    /// Runs `work` in a transaction: commits when it returns `Ok`, rolls back
    /// when it returns `Err` or panics (the panic then continues).
    ///
    /// # Errors
    ///
    /// The error `work` returned, or the error of beginning or committing.
    pub fn transaction<T, E, F>(&self, work: F) -> std::result::Result<T, E>
    where
        F: FnOnce(&Tx<'_>) -> std::result::Result<T, E>,
        E: From<Error>,
    {
        let tx = self.begin()?;
        let value = work(&tx)?;
        tx.commit()?;
        Ok(value)
    }
}

/// An open database transaction holding one pooled connection.
///
/// While it is open, writes through the [`Store`] on the thread that holds
/// it (began it, or last used it; in a tokio task, by that task) are refused
/// with [`Error::InsideTransaction`]: they would run outside it and wait for
/// its locks. Write through the `Tx`.
///
/// Writes made through it are invisible to the shared cache until
/// [`commit`](Tx::commit) succeeds; then every key it wrote is invalidated.
/// Dropping a `Tx` without committing (an early `?`, a panic) rolls it back and
/// leaves the cache untouched, unless the application ran statements of its
/// own in it ([`TxRepo::run`](crate::TxRepo::run)), which may have committed it
/// (a raw `COMMIT`, MySQL's implicit commit by DDL): the rows its writes
/// touched are then invalidated. Reads inside a transaction go to the database
/// through its connection, so they see its own uncommitted writes, and never
/// fill the shared cache. A transaction in which a statement failed can only
/// roll back, on every backend: PostgreSQL aborts such a transaction, and larder
/// makes SQLite and MySQL refuse its later statements and its commit alike.
///
/// ```
/// use larder_blog::{Blog, NewUser, UserChanges};
/// # let dir = tempfile::tempdir().unwrap();
/// # let store = larder_blog::open(dir.path().join("doc.db").to_str().unwrap()).unwrap();
/// let tx = store.begin()?;
/// let user = tx.users().create(NewUser { name: "ann".into(), email: "ann@example.org".into() })?;
/// tx.users().update(user.id, UserChanges { name: Some("Ann".into()), ..Default::default() })?;
/// tx.commit()?;
/// assert_eq!(store.users().get(user.id)?.unwrap().name, "Ann");
/// # Ok::<(), larder::Error>(())
/// ```
#[must_use = "dropping a Tx rolls it back"]
pub struct Tx<'s> {
    store: &'s Store,
    conn: RefCell<PooledConn>,
    pending: RefCell<Vec<PendingWrite>>,
    /// Set when a statement failed with a database error: the transaction can
    /// then only roll back.
    poisoned: Cell<bool>,
    /// Set when the application's own statements (`TxRepo::run`) ran after
    /// a recorded write: they may have written its row again, so the rows
    /// the writes returned may be older than the database's, and the commit
    /// invalidates their keys (and every keyed list of their tables)
    /// instead of caching them.
    raw_after_writes: Cell<bool>,
    /// Set when the application's own statements ran at all (`TxRepo::run`,
    /// a `write` closure; a list query's, when the watch saw a word that
    /// ends a transaction): they may have
    /// ended the transaction (a raw `COMMIT`; on MySQL any DDL, `TRUNCATE`
    /// or `LOCK TABLES` commits implicitly), so the writes recorded before
    /// them, and those autocommitted after, may be in the database whatever
    /// larder's ROLLBACK does, and a rollback invalidates them.
    raw_ran: Cell<bool>,
    /// The table of the application's own SQL (`TxRepo::run`, `write`'s
    /// closure), once any ran: it may have left a transaction open, or on
    /// MySQL `autocommit = 0`, for the connection's next caller (see
    /// [`Pooled::refuse_open_transaction`](crate::pool::Pooled::refuse_open_transaction)).
    app_sql: Cell<Option<&'static str>>,
    /// Set when a statement has run: from then on the transaction may read
    /// through a snapshot taken at that statement (see
    /// [`snapshot_not_taken`](Tx::snapshot_not_taken)).
    ran: Cell<bool>,
    /// How deep the connection stood in transactions once this one began.
    /// Deeper at commit, a savepoint the application opened is still open
    /// (diesel's `transaction` leaves it so when its closure panics), and a
    /// COMMIT would only release it on SQLite and MySQL.
    depth: u32,
    /// False for a single autocommitted statement: there is no BEGIN, and so
    /// nothing to commit or roll back, only writes to apply.
    explicit: bool,
    finished: bool,
    /// Marks an explicit transaction open on the thread that holds it (the
    /// one that began it, or last used it), so that the store refuses that
    /// thread's writes around it.
    open: Option<OpenMark>,
}

impl<'s> Tx<'s> {
    /// Checks out a connection and begins. SQLite takes the write lock up
    /// front (`BEGIN IMMEDIATE`): a writer then waits its turn within the busy
    /// timeout instead of failing midway on a lock upgrade.
    ///
    /// The connection is not pinged first unless it has been idle a while: a
    /// BEGIN that finds it dead changed nothing, so it is sent once more on a
    /// connection a ping proved alive.
    pub(crate) fn begin(store: &'s Store) -> Result<Tx<'s>> {
        refuse_inside(store.id(), "transaction", None)?;
        let mut conn = store.checkout()?;
        let begun = conn.begin().map_err(|e| Error::from_diesel(e, None, None));
        conn.settle(&begun);
        if let Err(err) = begun {
            if !(matches!(err, Error::ConnectionLost { .. }) && conn.unchecked()) {
                return Err(err);
            }
            tracing::debug!(error = %err, "BEGIN met a connection that died while idle; retrying once");
            drop(conn);
            conn = store.checkout_alive()?;
            let begun = conn.begin().map_err(|e| Error::from_diesel(e, None, None));
            conn.settle(&begun);
            begun?;
        }
        tracing::trace!("transaction begun");
        Ok(Tx::on(store, conn, true))
    }

    /// A recorder for one autocommitted write statement: `commit` applies the
    /// write to the caches, with no BEGIN or COMMIT sent. Only for
    /// [`Entity::SINGLE_STATEMENT_WRITES`](crate::Entity::SINGLE_STATEMENT_WRITES).
    pub(crate) fn autocommit(store: &'s Store) -> Result<Tx<'s>> {
        Ok(Tx::on(store, store.checkout()?, false))
    }

    fn on(store: &'s Store, mut conn: PooledConn, explicit: bool) -> Tx<'s> {
        Tx {
            depth: conn.transaction_depth(),
            store,
            conn: RefCell::new(conn),
            pending: RefCell::new(Vec::new()),
            poisoned: Cell::new(false),
            raw_after_writes: Cell::new(false),
            raw_ran: Cell::new(false),
            app_sql: Cell::new(None),
            ran: Cell::new(false),
            explicit,
            finished: false,
            open: explicit.then(|| OpenMark::begin(store.id())),
        }
    }

    /// Commits, then invalidates every cached key the transaction wrote.
    ///
    /// # Errors
    ///
    /// [`Error::TransactionAborted`] when one of its statements failed earlier
    /// (it is rolled back instead), or the database's error if the commit
    /// fails ([`Error::Conflict`] for a deferred constraint,
    /// [`Error::Serialization`], [`Error::ConnectionLost`]…); the transaction
    /// is then rolled back and the keys it wrote are invalidated anyway, which
    /// is always safe.
    pub fn commit(mut self) -> Result<()> {
        self.used_here();
        self.finished = true;
        let writes = Unapplied::new(
            self.store.registry(),
            std::mem::take(&mut *self.pending.borrow_mut()),
        );
        let committed = if !self.explicit {
            // Nothing to commit, unless the application's SQL opened a
            // transaction: refused, rolled back, and the writes uncertain.
            match self.app_sql.get() {
                Some(table) => self.conn.borrow_mut().refuse_open_transaction(Some(table)),
                None => Ok(()),
            }
        } else if self.poisoned.get() || self.savepoint_left_open() {
            // PostgreSQL has aborted such a transaction and would answer COMMIT
            // with a silent ROLLBACK; every backend refuses it alike. A
            // savepoint left open (a panic caught in the application's own
            // nested transaction) would take the COMMIT for its release.
            let _ = self.roll_back();
            Err(Error::commit_refused())
        } else {
            let mut conn = self.conn.borrow_mut();
            let suspect = self.app_sql_suspect(&mut conn);
            let committed = conn.commit().map_err(|e| Error::from_diesel(e, None, None));
            conn.settle(&committed);
            // Failed or not, the transaction has ended (else the pool
            // discards the connection): what that SQL left is ended either
            // way.
            if self.app_sql.get().is_some() {
                end_left_open(&mut conn, suspect);
            }
            committed
        };
        match committed {
            Ok(()) => {
                tracing::debug!(writes = writes.len(), "transaction committed");
                if !writes.is_empty() {
                    self.store.note_commit(&mut self.conn.borrow_mut());
                }
                if self.raw_after_writes.get() {
                    // Committed, but the returned rows, and their key values,
                    // may be older than the database's: invalidating them
                    // and every keyed list of their tables is right for both.
                    writes.rewritten();
                } else {
                    writes.committed();
                }
                Ok(())
            }
            Err(err) => {
                tracing::warn!(error = %err, "commit failed");
                if !writes.is_empty() && matches!(err, Error::ConnectionLost { .. }) {
                    self.end_lost_session();
                }
                writes.uncertain();
                Err(err)
            }
        }
    }

    /// Rolls back explicitly. Dropping the `Tx` does the same.
    ///
    /// # Errors
    ///
    /// The database's error if the rollback fails; the connection is then
    /// discarded by the pool rather than reused.
    pub fn rollback(mut self) -> Result<()> {
        self.finished = true;
        self.roll_back()
            .map_err(|e| Error::from_diesel(e, None, None))
    }

    fn roll_back(&mut self) -> QueryResult<()> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        if !self.explicit {
            // Each statement committed as it ended, unless the application's
            // own SQL (`Repo::write`'s closure) opened a transaction it left
            // open on failing: that one ends here, before the caches hear.
            self.conn.borrow_mut().end_stray_transaction();
            // Whatever was recorded (before its statement ran) may be in
            // the database.
            if !pending.is_empty() {
                self.end_lost_session();
            }
            Unapplied::new(self.store.registry(), pending).uncertain();
            return Ok(());
        }
        // A list query's SQL may have ended the transaction too, when the
        // watch saw it name a word that does (a raw COMMIT, MySQL's BEGIN).
        let suspect = self.app_sql_suspect(&mut self.conn.borrow_mut());
        // Declared before the connection's borrow, so dropped (and applied,
        // as uncertain) after the ROLLBACK, on every path out of here.
        let _maybe_committed =
            (self.raw_ran.get() || suspect).then(|| Unapplied::new(self.store.registry(), pending));
        let mut conn = self.conn.borrow_mut();
        // A savepoint the application left open first, then the transaction.
        while conn.transaction_depth() > self.depth {
            conn.rollback()?;
        }
        let result = conn.rollback();
        tracing::debug!(ok = result.is_ok(), "transaction rolled back");
        if self.app_sql.get().is_some() {
            end_left_open(&mut conn, suspect);
        }
        result
    }

    /// Disarms the watch on the application's SQL before larder's own
    /// COMMIT or ROLLBACK, whose words (MySQL's `AND NO CHAIN`) it would
    /// take for the application's; whether that SQL may have left
    /// something open (see [`end_left_open`]).
    fn app_sql_suspect(&self, conn: &mut PooledConn) -> bool {
        self.app_sql.get().is_some() && conn.app_sql_may_have_opened()
    }

    /// Whether a savepoint the application opened in this transaction is
    /// still open (see `depth`).
    fn savepoint_left_open(&self) -> bool {
        self.conn.borrow_mut().transaction_depth() > self.depth
    }

    /// When the connection was lost with a statement or the COMMIT in
    /// flight, ends its server session first: the server may still be
    /// running it, and the write must not land after the caches heard of it.
    fn end_lost_session(&self) {
        let session = self.conn.borrow().lost_session();
        if let Some(session) = session {
            self.store.end_lost_session(session);
        }
    }

    /// The store this transaction belongs to.
    pub(crate) fn store(&self) -> &'s Store {
        self.store
    }

    /// Whether every row this transaction reads from now on is at least as
    /// new as every commit invalidated from now on. Not once a statement has
    /// run in an explicit transaction: that statement may have taken the
    /// snapshot its later reads see (MySQL's default REPEATABLE READ,
    /// PostgreSQL's when asked for), older than commits invalidated since.
    /// Each autocommitted statement reads its own.
    pub(crate) fn snapshot_not_taken(&self) -> bool {
        !self.explicit || !self.ran.get()
    }

    /// Runs `query` on this transaction's connection, mapping its error for
    /// `table` and `id`.
    pub(crate) fn run<T>(
        &self,
        table: &'static str,
        id: Option<i64>,
        query: impl FnOnce(&mut Connection) -> QueryResult<T>,
    ) -> Result<T> {
        // After a failed statement the database may have ended the
        // transaction (MySQL's deadlock victim, SQLite's automatic rollbacks):
        // a statement sent now would commit on its own, and a rollback would
        // leave what it wrote cached as it was. PostgreSQL refuses it (25P02);
        // larder refuses it on every backend alike.
        self.used_here();
        if self.explicit && self.poisoned.get() {
            return Err(Error::TransactionAborted {
                table: Some(table),
                source: None,
            });
        }
        // Taken only by a `run` closure that reaches back into its own
        // transaction instead of using the connection it was lent.
        let Ok(mut conn) = self.conn.try_borrow_mut() else {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "a statement on {table} through the transaction from inside its own `run` \
                     closure: use the connection the closure is given"
                ),
            });
        };
        self.ran.set(true);
        let result = query(&mut conn).map_err(|err| {
            if matches!(err, diesel::result::Error::DatabaseError(..)) {
                self.poisoned.set(true);
            }
            Error::from_diesel(err, Some(table), id)
        });
        conn.settle(&result);
        result
    }

    /// This thread uses the transaction: if it was moved here, it is this
    /// thread's now (see [`OpenMark::used_here`]).
    fn used_here(&self) {
        if let Some(open) = &self.open {
            open.used_here();
        }
    }

    /// Notes that the application runs statements of its own, which may write
    /// again rows recorded so far (see `raw_after_writes`), or end the
    /// transaction (see `raw_ran`).
    pub(crate) fn note_raw_statements(&self, table: &'static str) {
        self.note_app_sql(table);
        self.raw_ran.set(true);
        if !self.pending.borrow().is_empty() {
            self.raw_after_writes.set(true);
        }
    }

    /// Notes that the application's own write runs (`TxRepo::write`'s
    /// closure): as `run`'s statements, it may end the transaction (see
    /// `raw_ran`), but it writes only the row it returns.
    pub(crate) fn note_write_closure(&self, table: &'static str) {
        self.note_app_sql(table);
        self.raw_ran.set(true);
    }

    /// Notes that the application's own SQL runs on the connection (see
    /// `app_sql`).
    pub(crate) fn note_app_sql(&self, table: &'static str) {
        self.app_sql.set(Some(table));
        // Watched until the transaction ends: the statements that decide
        // whether the server is asked what that SQL left open.
        // A connection already borrowed is this transaction used inside
        // its own `run`, which `run` refuses.
        if let Ok(mut conn) = self.conn.try_borrow_mut() {
            conn.watch_app_sql();
        }
    }

    /// Records a write to apply at commit; returns its place, for [`settle`](Tx::settle).
    pub(crate) fn record(&self, write: PendingWrite) -> usize {
        let mut pending = self.pending.borrow_mut();
        pending.push(write);
        pending.len() - 1
    }

    /// Replaces the write recorded at `place` (before its statement ran) with
    /// what is known now that it has run.
    pub(crate) fn settle(&self, place: usize, write: PendingWrite) {
        if let Some(slot) = self.pending.borrow_mut().get_mut(place) {
            *slot = write;
        }
    }

    pub(crate) fn record_cascade(&self, keys: Vec<Key>) {
        let mut pending = self.pending.borrow_mut();
        pending.extend(keys.into_iter().map(PendingWrite::Removed));
    }
}

/// After an explicit transaction in which the application's SQL ran has
/// ended, committed, rolled back or failed to (a connection still in it,
/// or lost, is only disarmed: the pool discards it): what it left open (MySQL's `autocommit = 0` outlives the
/// transaction it was set in) is ended before the connection goes back;
/// `suspect` is what the watch saw before larder's COMMIT or ROLLBACK.
fn end_left_open(conn: &mut PooledConn, suspect: bool) {
    if conn.end_open_transaction(suspect) {
        tracing::warn!(
            "the application's SQL in a transaction left the connection opening \
             transactions of its own (autocommit = 0, completion_type = CHAIN): reset"
        );
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Never panic here: a failed rollback leaves the connection marked as in
        // a transaction, and the pool discards such a connection on return.
        if let Err(err) = self.roll_back() {
            tracing::warn!(error = %err, "rollback of a dropped transaction failed");
        }
    }
}

impl fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tx")
            .field("pending_writes", &self.pending.borrow().len())
            .field("finished", &self.finished)
            .finish()
    }
}
