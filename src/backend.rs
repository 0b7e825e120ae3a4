//! One connection type over every backend this build includes, chosen at run
//! time by the URL, and the code that opens and checks such connections.
//!
//! larder dispatches itself instead of using diesel's `MultiConnection`: each
//! arm runs diesel's native backend (so SQLite and PostgreSQL keep their own
//! SQL dialect, `RETURNING` and transaction handling), and the backends a build
//! leaves out (`postgres`, `mysql` cargo features) simply have no arm.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::r2d2::R2D2Connection;
use diesel::{Connection as _, QueryResult, RunQueryDsl};
use parking_lot::{RwLock, RwLockReadGuard};

use crate::dialect;
use crate::url::{Backend, DatabaseUrl};

/// A connection to whichever database the URL named. [`Entity`](crate::Entity)
/// implementations receive it and run their diesel queries through
/// [`with_connection!`](crate::with_connection), which hands the body the
/// backend's own diesel connection.
pub enum Connection {
    /// An embedded SQLite database (cargo feature `sqlite`, on by default).
    #[cfg(feature = "sqlite")]
    Sqlite(diesel::SqliteConnection),
    /// A PostgreSQL server (cargo feature `postgres`, on by default).
    #[cfg(feature = "postgres")]
    Postgres(diesel::PgConnection),
    /// A MySQL or MariaDB server (cargo feature `mysql`).
    #[cfg(feature = "mysql")]
    Mysql(diesel::MysqlConnection),
}

/// Calls back `$cb!` with the variants of [`Connection`] this build has. It is
/// defined once per feature combination because a `#[cfg]` inside an exported
/// macro would test the features of the crate that expands it, not larder's.
#[cfg(all(feature = "sqlite", feature = "postgres", feature = "mysql"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __larder_backends {
    ($cb:ident!($($args:tt)*)) => { $crate::$cb!($($args)* ; Sqlite Postgres Mysql) };
}
#[cfg(all(feature = "sqlite", feature = "postgres", not(feature = "mysql")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __larder_backends {
    ($cb:ident!($($args:tt)*)) => { $crate::$cb!($($args)* ; Sqlite Postgres) };
}
#[cfg(all(feature = "sqlite", not(feature = "postgres"), feature = "mysql"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __larder_backends {
    ($cb:ident!($($args:tt)*)) => { $crate::$cb!($($args)* ; Sqlite Mysql) };
}
#[cfg(all(feature = "sqlite", not(feature = "postgres"), not(feature = "mysql")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __larder_backends {
    ($cb:ident!($($args:tt)*)) => { $crate::$cb!($($args)* ; Sqlite) };
}
#[cfg(all(not(feature = "sqlite"), feature = "postgres", feature = "mysql"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __larder_backends {
    ($cb:ident!($($args:tt)*)) => { $crate::$cb!($($args)* ; Postgres Mysql) };
}
#[cfg(all(not(feature = "sqlite"), feature = "postgres", not(feature = "mysql")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __larder_backends {
    ($cb:ident!($($args:tt)*)) => { $crate::$cb!($($args)* ; Postgres) };
}
#[cfg(all(not(feature = "sqlite"), not(feature = "postgres"), feature = "mysql"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __larder_backends {
    ($cb:ident!($($args:tt)*)) => { $crate::$cb!($($args)* ; Mysql) };
}
#[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")))]
compile_error!(
    "larder needs at least one backend: enable its `sqlite`, `postgres` or `mysql` feature"
);

#[doc(hidden)]
#[macro_export]
macro_rules! __larder_dispatch {
    ($conn:expr, $c:ident, $body:expr ; $($variant:ident)*) => {
        match $conn {
            $( $crate::Connection::$variant($c) => $body, )*
        }
    };
}

/// Runs `body` with `c` bound to the backend's own diesel connection
/// (`&mut SqliteConnection`, `&mut PgConnection` or `&mut MysqlConnection`).
/// The body is compiled once per backend, so write it as ordinary diesel code
/// that every backend accepts.
///
/// ```
/// use diesel::prelude::*;
/// use larder_blog::schema::users;
///
/// fn count_users(conn: &mut larder::Connection) -> QueryResult<i64> {
///     larder::with_connection!(conn, |c| users::table.count().get_result(c))
/// }
/// ```
#[macro_export]
macro_rules! with_connection {
    ($conn:expr, |$c:ident| $body:expr) => {
        $crate::__larder_backends!(__larder_dispatch!($conn, $c, $body))
    };
}

/// Runs the arm for the connection's backend, `c` bound to its own diesel
/// connection. Give an arm for every backend (`Sqlite`, `Postgres`, `Mysql`,
/// in that order); only the arms of the backends this build of larder
/// includes are compiled, so an application needs no `#[cfg]` of its own
/// (its cargo features are not larder's). For SQL that differs by backend:
/// `RETURNING`, row locks, dialect functions.
///
/// ```
/// use diesel::prelude::*;
/// diesel::table! { notes (id) { id -> BigInt, body -> Text } }
///
/// /// Locks the note until the transaction ends (SQLite's write transaction
/// /// already excludes every other writer).
/// fn lock_note(conn: &mut larder::Connection, id: i64) -> QueryResult<Vec<i64>> {
///     let query = notes::table.find(id).select(notes::id);
///     larder::match_backend!(conn, |c| {
///         Sqlite => query.load(c),
///         Postgres => query.for_update().load(c),
///         Mysql => query.for_update().load(c),
///     })
/// }
/// ```
#[macro_export]
macro_rules! match_backend {
    ($conn:expr, |$c:ident| $arms:tt) => {
        $crate::__larder_backends!(__larder_match_backend!($conn, $c, $arms))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __larder_match_backend {
    ($conn:expr, $c:ident, $arms:tt ; $($built:ident)*) => {
        match $conn {
            $( $crate::Connection::$built($c) => $crate::__larder_pick_arm!($built ; $arms), )*
        }
    };
}

/// Picks, from `{ Sqlite => …, Postgres => …, Mysql => …, }`, the arm of the
/// backend named first.
#[doc(hidden)]
#[macro_export]
macro_rules! __larder_pick_arm {
    (Sqlite ; { Sqlite => $e:expr $(, $($rest:tt)*)? }) => { $e };
    (Postgres ; { Postgres => $e:expr $(, $($rest:tt)*)? }) => { $e };
    (Mysql ; { Mysql => $e:expr $(, $($rest:tt)*)? }) => { $e };
    ($want:ident ; { $other:ident => $e:expr $(, $($rest:tt)*)? }) => {
        $crate::__larder_pick_arm!($want ; { $($($rest)*)? })
    };
}

impl Connection {
    /// Opens a connection to `url` and prepares it as larder's pool does
    /// (SQLite: WAL, foreign keys, busy timeout).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`](crate::Error::InvalidUrl) or
    /// [`Error::Connection`](crate::Error::Connection).
    pub fn establish(url: &str) -> crate::Result<Connection> {
        let url = DatabaseUrl::parse(url)?;
        let mut conn = open(&url).map_err(|e| url.connection_error(&e))?;
        prepare(&mut conn, std::time::Duration::from_secs(5))
            .map_err(|e| url.connection_error(&e.to_string()))?;
        Ok(conn)
    }

    /// The backend this connection talks to.
    pub fn backend(&self) -> Backend {
        match self {
            #[cfg(feature = "sqlite")]
            Connection::Sqlite(_) => Backend::Sqlite,
            #[cfg(feature = "postgres")]
            Connection::Postgres(_) => Backend::Postgres,
            #[cfg(feature = "mysql")]
            Connection::Mysql(_) => Backend::Mysql,
        }
    }

    /// Begins a transaction. SQLite takes its write lock up front (`BEGIN
    /// IMMEDIATE`) so writers queue within the busy timeout instead of failing
    /// on a lock upgrade midway.
    pub(crate) fn begin(&mut self) -> QueryResult<()> {
        match self {
            #[cfg(feature = "sqlite")]
            Connection::Sqlite(c) => {
                AnsiTransactionManager::begin_transaction_sql(c, dialect::sqlite::BEGIN)
            }
            #[cfg(feature = "postgres")]
            Connection::Postgres(c) => AnsiTransactionManager::begin_transaction(c),
            #[cfg(feature = "mysql")]
            Connection::Mysql(c) => AnsiTransactionManager::begin_transaction(c),
        }
    }

    /// Commits; on PostgreSQL fails, instead of rolling back silently, when
    /// a failed statement aborted the transaction (see
    /// [`COMMIT_UNLESS_ABORTED`](dialect::postgres::COMMIT_UNLESS_ABORTED));
    /// on MySQL chains no transaction and keeps the session whatever its
    /// `completion_type` (see [`dialect::mysql::COMMIT`]).
    pub(crate) fn commit(&mut self) -> QueryResult<()> {
        match self {
            #[cfg(feature = "postgres")]
            Connection::Postgres(c) => {
                // diesel reads the session's state after the batch: no
                // transaction left once the COMMIT ran, failed or not.
                let committed = c.batch_execute(dialect::postgres::COMMIT_UNLESS_ABORTED);
                if committed.is_err() {
                    // Still open when the SELECT failed; the error is the one to report.
                    let _ = AnsiTransactionManager::rollback_transaction(c);
                }
                committed
            }
            #[cfg(feature = "mysql")]
            Connection::Mysql(c) => mysql_end_transaction(c, true),
            #[allow(unreachable_patterns)] // in a build with PostgreSQL alone
            other => with_connection!(other, |c| AnsiTransactionManager::commit_transaction(c)),
        }
    }

    /// How many transactions and savepoints deep the connection stands, as
    /// diesel's transaction manager counts them (0 outside any).
    pub(crate) fn transaction_depth(&mut self) -> u32 {
        with_connection!(self, |c| {
            let depth =
                AnsiTransactionManager::transaction_manager_status_mut(c).transaction_depth();
            depth.ok().flatten().map_or(0, std::num::NonZeroU32::get)
        })
    }

    /// Rolls back the innermost transaction or savepoint diesel counts.
    pub(crate) fn rollback(&mut self) -> QueryResult<()> {
        match self {
            #[cfg(feature = "mysql")]
            Connection::Mysql(c) => mysql_end_transaction(c, false),
            #[allow(unreachable_patterns)] // in a build with MySQL alone
            other => with_connection!(other, |c| AnsiTransactionManager::rollback_transaction(c)),
        }
    }

    /// Installs the watch on the application's SQL (see
    /// [`app_sql`](crate::app_sql)), disarmed, in place of the
    /// instrumentation diesel gave the new connection (the application's
    /// default one, which the watch passes every event on to).
    pub(crate) fn install_app_sql_watch(&mut self) {
        with_connection!(self, |c| c.set_instrumentation(crate::app_sql::install()))
    }

    /// Arms the watch on the application's SQL that follows (see
    /// [`app_sql`](crate::app_sql)). An instrumentation the application set
    /// on the connection in its place stays: it is the application's, and
    /// every check is then asked of the server.
    pub(crate) fn watch_app_sql(&mut self) {
        with_connection!(self, |c| {
            crate::app_sql::arm(c.instrumentation());
        })
    }

    /// Disarms the watch of [`watch_app_sql`](Self::watch_app_sql); whether
    /// a statement since may have left a transaction open, which only
    /// [`foreign_transaction_open`](Self::foreign_transaction_open) can
    /// tell.
    pub(crate) fn app_sql_may_have_opened(&mut self) -> bool {
        with_connection!(self, |c| crate::app_sql::disarm(c.instrumentation()))
    }

    /// Whether the server holds a transaction open on this connection that
    /// diesel knows nothing of (the application's own `BEGIN`, `START
    /// TRANSACTION`, or on SQLite a `SAVEPOINT` outside any), or, on MySQL,
    /// will open one at the next statement (`autocommit = 0`) or at the
    /// application's next plain COMMIT or ROLLBACK (`completion_type =
    /// CHAIN`; `RELEASE` ends the session there; larder's own say `AND NO
    /// CHAIN NO RELEASE`, see [`commit`](Self::commit)). Call it
    /// outside diesel's transactions. One round trip on PostgreSQL and
    /// MariaDB, up to three on MySQL (which has no `in_transaction`), two
    /// in-process statements on SQLite; an error means a session left in a
    /// state it cannot even answer in (PostgreSQL's aborted transaction).
    pub(crate) fn foreign_transaction_open(&mut self) -> QueryResult<bool> {
        #[allow(unused_imports)] // in a build without MySQL
        use diesel::dsl::sql;
        #[allow(unused_imports)] // in a build without MySQL
        use diesel::sql_types::BigInt;
        match self {
            // No SQL reads sqlite3_get_autocommit(); a BEGIN fails inside a
            // transaction, and costs nothing outside one.
            #[cfg(feature = "sqlite")]
            Connection::Sqlite(c) => Ok(c.batch_execute("BEGIN; ROLLBACK").is_err()),
            #[cfg(feature = "postgres")]
            Connection::Postgres(c) => match c.batch_execute(dialect::postgres::TRANSACTION_OPEN) {
                Ok(()) => Ok(false),
                Err(diesel::result::Error::DatabaseError(_, info))
                    if info.message() == dialect::postgres::TRANSACTION_OPEN_MESSAGE =>
                {
                    Ok(true)
                }
                Err(err) => Err(err),
            },
            #[cfg(feature = "mysql")]
            Connection::Mysql(c) => {
                let mariadb = diesel::select(sql::<BigInt>(
                    "CAST(@@autocommit = 0 OR @@in_transaction = 1 \
                     OR @@completion_type <> 'NO_CHAIN' AS SIGNED)",
                ))
                .get_result::<i64>(c);
                if let Ok(open) = mariadb {
                    return Ok(open != 0);
                }
                // MySQL has no `in_transaction`, and refuses to change the
                // characteristics of a transaction in progress (1568). Out
                // of one, READ WRITE for the next is what it has anyway.
                let manual = diesel::select(sql::<BigInt>(
                    "CAST(@@autocommit = 0 OR @@completion_type <> 'NO_CHAIN' AS SIGNED)",
                ))
                .get_result::<i64>(c)?;
                Ok(manual != 0 || c.batch_execute("SET TRANSACTION READ WRITE").is_err())
            }
        }
    }

    /// Rolls back a transaction diesel knows nothing of (see
    /// [`foreign_transaction_open`](Self::foreign_transaction_open)) and, on
    /// MySQL, releases the table locks a ROLLBACK keeps (`LOCK TABLES`, the
    /// way MySQL documents with `autocommit = 0`) and turns autocommit back
    /// on (both after the ROLLBACK: each commits what is open), the
    /// ROLLBACK preceded by `completion_type = 0` (a chained ROLLBACK would
    /// open another transaction).
    pub(crate) fn end_foreign_transaction(&mut self) -> QueryResult<()> {
        match self {
            #[cfg(feature = "mysql")]
            Connection::Mysql(c) => c.batch_execute(
                "SET completion_type = 0; ROLLBACK; UNLOCK TABLES; SET autocommit = 1",
            ),
            #[allow(unreachable_patterns)] // in a build with MySQL alone
            other => with_connection!(other, |c| c.batch_execute("ROLLBACK")),
        }
    }

    /// The id the last insert on this connection generated. Triggers do not
    /// disturb it on SQLite and MySQL; on PostgreSQL it is `lastval()`, the
    /// last sequence value this session drew, which an application trigger
    /// drawing from another sequence changes: prefer `RETURNING` there.
    pub fn last_insert_id(&mut self) -> QueryResult<i64> {
        use diesel::dsl::sql;
        use diesel::sql_types::BigInt;
        let query = diesel::select(sql::<BigInt>(dialect::of(self.backend()).last_insert_id()));
        with_connection!(self, |c| query.get_result(c))
    }

    pub(crate) fn ping(&mut self) -> QueryResult<()> {
        with_connection!(self, |c| c.ping())
    }

    pub(crate) fn is_broken(&mut self) -> bool {
        with_connection!(self, |c| c.is_broken())
    }
}

/// Commits (`commit`) or rolls back the innermost transaction diesel counts
/// on `c`, as diesel's transaction manager does, but ends the outermost
/// with MySQL's explicit [`COMMIT`](dialect::mysql::COMMIT) or
/// [`ROLLBACK`](dialect::mysql::ROLLBACK): diesel's plain ones chain a
/// transaction nobody ends, or end the session, when the application's SQL
/// set `completion_type` where no watch sees it (a stored function, a
/// trigger firing on larder's own statement). A savepoint is diesel's.
#[cfg(feature = "mysql")]
fn mysql_end_transaction(c: &mut diesel::MysqlConnection, commit: bool) -> QueryResult<()> {
    use diesel::connection::{TransactionDepthChange, TransactionManagerStatus};
    let status = AnsiTransactionManager::transaction_manager_status_mut(c);
    match status.transaction_depth()? {
        Some(depth) if depth.get() == 1 => {}
        _ if commit => return AnsiTransactionManager::commit_transaction(c),
        _ => return AnsiTransactionManager::rollback_transaction(c),
    }
    // An application's instrumentation sees the statement's own events (as
    // for PostgreSQL's COMMIT), not diesel's CommitTransaction or
    // RollbackTransaction, which only diesel can build.
    let sql = if commit {
        dialect::mysql::COMMIT
    } else {
        dialect::mysql::ROLLBACK
    };
    match c.batch_execute(sql) {
        Ok(()) => {
            if let TransactionManagerStatus::Valid(valid) =
                AnsiTransactionManager::transaction_manager_status_mut(c)
            {
                // Already out of one is fine: the transaction has ended.
                let _ = valid.change_transaction_depth(TransactionDepthChange::DecreaseDepth);
            }
            Ok(())
        }
        // As diesel does: a failed COMMIT is rolled back, and a connection
        // on which that fails too is broken.
        Err(commit_error) if commit => match mysql_end_transaction(c, false) {
            Ok(()) => Err(commit_error),
            Err(rollback_error) => Err(diesel::result::Error::RollbackErrorOnCommit {
                rollback_error: Box::new(rollback_error),
                commit_error: Box::new(commit_error),
            }),
        },
        Err(rollback_error) => {
            AnsiTransactionManager::transaction_manager_status_mut(c).set_in_error();
            Err(rollback_error)
        }
    }
}

impl SimpleConnection for Connection {
    fn batch_execute(&mut self, query: &str) -> QueryResult<()> {
        with_connection!(self, |c| c.batch_execute(query))
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

fn open(url: &DatabaseUrl) -> Result<Connection, String> {
    let target = url.target();
    let conn = match url.backend() {
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => diesel::SqliteConnection::establish(target).map(Connection::Sqlite),
        #[cfg(feature = "postgres")]
        Backend::Postgres => diesel::PgConnection::establish(target).map(Connection::Postgres),
        #[cfg(feature = "mysql")]
        Backend::Mysql => diesel::MysqlConnection::establish(target).map(Connection::Mysql),
        #[allow(unreachable_patterns)]
        other => {
            return Err(format!(
                "the {} backend is not built into this larder",
                other.name()
            ))
        }
    };
    conn.map_err(|e| e.to_string())
}

/// Per-connection settings. SQLite: the busy timeout first, so that switching
/// to WAL waits for a concurrent opener; foreign keys are off by default there.
/// The switch to WAL of a new file does not always wait through the busy
/// handler: openers at once got "database is locked". The settings are
/// idempotent, so a locked attempt is tried again until the busy timeout.
fn prepare(conn: &mut Connection, busy_timeout: Duration) -> QueryResult<()> {
    let setup = dialect::of(conn.backend()).session_setup(busy_timeout);
    let deadline = std::time::Instant::now() + busy_timeout;
    loop {
        match conn.batch_execute(&setup) {
            Err(err) if is_sqlite_locked(conn, &err) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            done => return done,
        }
    }
}

/// SQLITE_BUSY, as diesel reports it (a plain error with SQLite's message).
fn is_sqlite_locked(conn: &Connection, err: &diesel::result::Error) -> bool {
    conn.backend() == Backend::Sqlite && err.to_string().contains("database is locked")
}

/// Whether a pool may still open connections. r2d2 opens them on threads of
/// its own (to keep an idle one, or for a checkout that waits), and such an
/// open could outlive the store: on SQLite it created the database file
/// again after the store was dropped and the file removed. Opens hold the
/// gate shared; closing it turns later ones away and waits for those in
/// flight, at most [`CLOSE_WAIT`] (an open to an unreachable server may take
/// longer; it creates nothing, and the pool drops what it opens).
#[derive(Debug, Default)]
pub(crate) struct Gate {
    closed: AtomicBool,
    opening: RwLock<()>,
}

/// How long dropping a pool waits for the connections it is opening.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

impl Gate {
    /// Held across an open; `None` once the pool is dropped. The guard is
    /// taken before the flag is read, so `close` cannot miss an open.
    pub(crate) fn enter(&self) -> Option<RwLockReadGuard<'_, ()>> {
        let opening = self.opening.read();
        (!self.closed.load(Ordering::SeqCst)).then_some(opening)
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        drop(self.opening.try_write_for(CLOSE_WAIT));
    }
}

/// Opens and checks larder connections (r2d2's view of them is in `pool`).
#[derive(Debug)]
pub(crate) struct Manager {
    url: DatabaseUrl,
    busy_timeout: std::time::Duration,
    /// Run after the backend's own setup on each new connection (a replica's).
    extra_setup: Option<String>,
    /// Closed when the pool this manager serves is dropped (see [`Gate`]).
    pub(crate) gate: std::sync::Arc<Gate>,
}

/// Why a connection could not be opened, already free of any password.
#[derive(Debug)]
pub(crate) struct ConnectError(pub(crate) String);

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

impl Manager {
    pub(crate) fn new(url: DatabaseUrl, busy_timeout: std::time::Duration) -> Manager {
        Manager {
            url,
            busy_timeout,
            extra_setup: None,
            gate: std::sync::Arc::default(),
        }
    }

    /// As [`new`](Manager::new), with `setup` run on each new connection
    /// after the backend's own.
    pub(crate) fn with_setup(
        url: DatabaseUrl,
        busy_timeout: std::time::Duration,
        setup: String,
    ) -> Manager {
        Manager {
            extra_setup: Some(setup),
            ..Manager::new(url, busy_timeout)
        }
    }

    /// Opens and prepares a connection to the manager's URL.
    pub(crate) fn open(&self) -> Result<Connection, ConnectError> {
        let mut conn = open(&self.url).map_err(|e| ConnectError(self.url.scrub(&e)))?;
        prepare(&mut conn, self.busy_timeout)
            .map_err(|e| ConnectError(self.url.scrub(&e.to_string())))?;
        if let Some(setup) = &self.extra_setup {
            conn.batch_execute(setup)
                .map_err(|e| ConnectError(self.url.scrub(&e.to_string())))?;
        }
        conn.install_app_sql_watch();
        Ok(conn)
    }

    /// The URL its connections open.
    #[cfg(test)]
    pub(crate) fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// A ping's failure, free of any password.
    pub(crate) fn ping(&self, conn: &mut Connection) -> Result<(), ConnectError> {
        conn.ping()
            .map_err(|e| ConnectError(self.url.scrub(&e.to_string())))
    }
}

/// A server session, as the server names it: a write lost in flight ends
/// the session it ran on (see `lost`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, diesel::QueryableByName)]
pub(crate) struct Session {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(crate) id: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(crate) started: i64,
}

/// `conn`'s server session; `None` without a server (SQLite) or when the
/// server does not say.
pub(crate) fn session_of(conn: &mut Connection) -> Option<Session> {
    let queries = dialect::of(conn.backend()).session();
    queries.iter().find_map(|sql| {
        crate::with_connection!(conn, |c| diesel::sql_query(*sql).get_result::<Session>(c)).ok()
    })
}
