//! larder's one error type, and the single place where diesel and r2d2 errors are
//! mapped onto it.

use std::time::Duration;

use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind, Error as DieselError};

use crate::dialect;

/// What kind of conflict a write ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConflictKind {
    /// A unique constraint (for example `users.email`) already holds the value;
    /// also a PostgreSQL exclusion constraint.
    Unique,
    /// A foreign key points at a row that does not exist, or a row another row
    /// still points at was to be deleted (PostgreSQL's `RESTRICT` included).
    ForeignKey,
    /// A check or not-null constraint rejected the row.
    Check,
    /// An optimistic update expected one version and found another.
    VersionMismatch {
        /// The version the caller expected.
        expected: i64,
        /// The version the row has now.
        actual: i64,
    },
}

/// Every error larder returns.
///
/// Messages name what failed and for which table and key. None of them ever
/// contains a database password: URLs are redacted before they are stored here,
/// and the errors kept as [`source`](std::error::Error::source) hold none
/// (diesel's query errors are the server's words about a statement; r2d2's
/// checkout error holds the connection manager's message, already scrubbed).
/// A connection error keeps no source for that reason.
///
/// A web handler maps an error to a status with the predicates:
/// [`is_not_found`](Error::is_not_found) (404), [`is_conflict`](Error::is_conflict)
/// (409), [`is_retryable`](Error::is_retryable) (503, or retry the work); any
/// other error is the server's (500). [`status_code`](Error::status_code)
/// gives that status outright (and, with the `axum` feature, `Error` is an
/// axum response).
///
/// The variants larder builds from a database error are `#[non_exhaustive]`:
/// match them with `..`. An application reports its own optimistic-lock
/// conflicts with [`Error::version_mismatch`].
///
/// ```
/// let err = larder::Store::open("ftp://example.org/db").unwrap_err();
/// assert!(matches!(err, larder::Error::InvalidUrl { .. }));
/// assert!(!err.is_retryable());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The row a write or a load needed does not exist.
    #[error("{table} {id} not found")]
    NotFound {
        /// Table that was searched.
        table: &'static str,
        /// Primary key that was not there.
        id: i64,
    },
    /// A write was rejected by a constraint or an optimistic version check;
    /// nothing was written.
    #[error(
        "conflict{}: {kind:?}{}{}",
        writing(*.table, *.id),
        constraint_suffix(.constraint.as_deref()),
        .source.as_ref().map(|e| format!(": {}", explanation(e))).unwrap_or_default()
    )]
    #[non_exhaustive]
    Conflict {
        /// Table the write went to; `None` for a constraint checked at commit
        /// (a deferred one), which larder cannot trace to a table.
        table: Option<&'static str>,
        /// Primary key of the row, when the write had one.
        id: Option<i64>,
        /// What the write conflicted with.
        kind: ConflictKind,
        /// Name of the violated constraint, when the database gives it:
        /// PostgreSQL always does, MySQL and MariaDB do in their message (larder
        /// reads it from there), SQLite does not.
        constraint: Option<String>,
        /// The database error, whose message the error shows; `None` for a
        /// version mismatch, which the database did not see.
        #[source]
        source: Option<DieselError>,
    },
    /// No pooled connection became available within the checkout timeout:
    /// every connection was in use (`cause` is `None`), or new connections
    /// could not be opened (`cause` says why: the database may be down).
    #[error("no database connection available within {timeout:?}{}", pool_cause(.cause.as_deref()))]
    #[non_exhaustive]
    PoolTimeout {
        /// The configured checkout timeout.
        timeout: Duration,
        /// Why the last attempt to open a connection failed, password removed.
        cause: Option<String>,
        /// The pool's error (its text is the cause, password removed).
        #[source]
        source: r2d2::Error,
    },
    /// The database stayed locked by another writer for longer than its lock
    /// timeout: SQLite's busy timeout
    /// ([`StoreBuilder::busy_timeout`](crate::StoreBuilder::busy_timeout)), MySQL's
    /// `innodb_lock_wait_timeout`, PostgreSQL's `lock_timeout`.
    #[error("database busy (locked by another writer){}", working_on(*.table))]
    #[non_exhaustive]
    Busy {
        /// Table being read or written; `None` for work on no single table
        /// (beginning a transaction, committing).
        table: Option<&'static str>,
        /// The database error.
        #[source]
        source: DieselError,
    },
    /// The database URL could not be used; the URL shown has its password removed.
    #[error("invalid database URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL with any password replaced by `***`.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A [`StoreBuilder`](crate::StoreBuilder) setting is out of range, or
    /// a call's arguments ask for what larder cannot do (a `capture_sql` of
    /// larder's own table, `cached_query` reads that leave out its table, a
    /// transaction used from inside its own `run` closure). Nothing was done;
    /// or the application's own SQL left a transaction open on a pooled
    /// connection ([`Repo::run`](crate::Repo::run)), which larder rolled back.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// Which setting and why.
        reason: String,
    },
    /// A connection to the database could not be opened. It keeps no source:
    /// the driver's error may echo parts of the URL, so only its scrubbed text
    /// is kept.
    #[error("cannot connect to {url:?}: {message}")]
    Connection {
        /// The URL with any password replaced by `***`.
        url: String,
        /// The driver's explanation, with every part of the URL's passwords
        /// removed; withheld whole when a part too short to remove shows in it.
        message: String,
    },
    /// The server closed the connection (a restart, a terminated backend); the
    /// pool replaces the connection, so the next call can succeed.
    #[error("connection to the database was lost{}: {}", working_on(*.table), explanation(.source))]
    #[non_exhaustive]
    ConnectionLost {
        /// Table being read or written; `None` for work on no single table.
        table: Option<&'static str>,
        /// The driver's error, whose message the error shows.
        #[source]
        source: DieselError,
    },
    /// The database rolled the transaction back because it conflicted with a
    /// concurrent one: a serialization failure (SQLSTATE `40001`) or a
    /// deadlock (PostgreSQL `40P01`, MySQL `1213`). Running the whole
    /// transaction again can succeed.
    #[error(
        "transaction lost to a concurrent one{} (serialization failure or deadlock), retry it: {}",
        working_on(*.table),
        explanation(.source)
    )]
    #[non_exhaustive]
    Serialization {
        /// Table being read or written; `None` for work on no single table
        /// (committing).
        table: Option<&'static str>,
        /// The database error, whose message the error shows.
        #[source]
        source: DieselError,
    },
    /// A statement in the transaction failed earlier, so the transaction can
    /// only roll back: every statement after the failed one is refused, and
    /// its commit (on every backend; PostgreSQL's own refusal is SQLSTATE
    /// `25P02`).
    /// The error of the statement that failed was returned when it failed.
    /// A commit is refused alike when a savepoint the application opened
    /// in the transaction is still open (its closure panicked).
    #[error(
        "transaction aborted{}: a statement in it failed (or a savepoint in it was left open), so it is rolled back, not committed",
        refused(*.table)
    )]
    #[non_exhaustive]
    TransactionAborted {
        /// Table of the statement refused; `None` when the commit was refused.
        table: Option<&'static str>,
        /// The database's refusal (PostgreSQL); `None` when larder refused
        /// the statement or the commit itself.
        #[source]
        source: Option<DieselError>,
    },
    /// A named lock ([`Store::lock`](crate::Store::lock)) stayed held by
    /// another process, host or thread for longer than the lock timeout
    /// ([`StoreBuilder::lock_timeout`](crate::StoreBuilder::lock_timeout)).
    #[error("lock {name} not acquired within {timeout:?}: another holder kept it")]
    #[non_exhaustive]
    LockTimeout {
        /// The lock's name, as shown: control characters escaped, long names cut.
        name: String,
        /// The lock timeout waited.
        timeout: Duration,
    },
    /// Waiting for a named lock would never end: its holder waits, directly or
    /// through others, for a lock this thread holds. The database (PostgreSQL,
    /// MySQL/MariaDB) or larder's own detector (SQLite) chose this waiter to
    /// fail; release the locks held and start again.
    #[error("deadlock waiting for lock {name}: its holder waits for a lock held here")]
    #[non_exhaustive]
    Deadlock {
        /// The lock's name, as shown: control characters escaped, long names cut.
        name: String,
    },
    /// A named lock was lost while held: its database session ended (a
    /// restart, `pg_terminate_backend`, `KILL`, a network cut), so another
    /// holder may have run at the same time. Returned by
    /// [`Store::with_lock`](crate::Store::with_lock) after its closure ran; a
    /// write that checks the lock's fencing token refuses the late holder.
    #[error("lock {name} was lost while held: another holder may have run meanwhile")]
    #[non_exhaustive]
    LockLost {
        /// The lock's name, as shown: control characters escaped, long names cut.
        name: String,
    },
    /// This thread already holds the named lock through this store: taking it
    /// again would wait for itself.
    #[error("lock {name} is already held by this thread")]
    #[non_exhaustive]
    LockHeld {
        /// The lock's name, as shown: control characters escaped, long names cut.
        name: String,
    },
    /// A write through the [`Store`](crate::Store) (a repository's `create`,
    /// `update`, `write`, `delete`, a nested [`Store::begin`](crate::Store::begin)
    /// or [`Store::transaction`](crate::Store::transaction), and on SQLite a
    /// named lock, whose fencing token is a write) while this thread (or
    /// tokio task, for the async API's writes too) holds an open transaction
    /// of the same store: the one that began it, or last used it. It would run on another connection,
    /// outside that transaction, and wait for the locks the transaction holds
    /// until it ends, which it does not while this thread waits: on
    /// PostgreSQL for ever. Write through the transaction (`tx.users()…`)
    /// instead, or take named locks before it begins. Nothing was done.
    #[error(
        "{operation}{} through the store while this thread holds one of its open \
         transactions: it would run outside the transaction and wait for its locks; \
         write through the transaction instead",
        on(*.table)
    )]
    #[non_exhaustive]
    InsideTransaction {
        /// What was refused: `"write"`, `"transaction"` or `"lock"`.
        operation: &'static str,
        /// The table a refused write was for.
        table: Option<&'static str>,
    },
    /// A lock name was refused (empty, or longer than the limit).
    #[error("invalid lock name {name}: {reason}")]
    #[non_exhaustive]
    InvalidLockName {
        /// The name, as shown: control characters escaped, long names cut.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// A SQLite database's lock file (in the `<database>.locks` directory
    /// beside it) could not be created, locked or unlocked.
    #[error("lock {name}: its file beside the SQLite database could not be used: {source}")]
    #[non_exhaustive]
    LockFile {
        /// The lock's name, as shown: control characters escaped, long names cut.
        name: String,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
    /// Another runner held the database's migration lock for longer than
    /// the wait allowed ([`Migrator::lock_timeout`](crate::Migrator::lock_timeout),
    /// or for [`Store::migrate`](crate::Store::migrate) the store's lock
    /// timeout): another migration is running on this database. Nothing
    /// was migrated; once it ends, running again finds what it left to do.
    #[error(
        "another migration is running on this database: its migration lock was not \
         granted within {timeout:?}; nothing was migrated"
    )]
    #[non_exhaustive]
    MigrationLocked {
        /// How long this runner waited.
        timeout: Duration,
    },
    /// Running or reverting migrations failed.
    #[error("migration failed: {message}")]
    Migration {
        /// What went wrong, including the migration name when known.
        message: String,
    },
    /// Work the async API (cargo feature `tokio`: `AsyncRepo`,
    /// `Store::transaction_async`, `Store::blocking`) handed to tokio's
    /// blocking pool did not finish: it panicked, or the runtime shut down or
    /// was missing. A panic is reported here rather than resumed, so that an
    /// async handler answers `500` instead of unwinding through its task;
    /// the panic hook has reported its message, a transaction it ran was
    /// rolled back and its connection discarded.
    #[error("{work} did not finish on tokio's blocking pool: {interruption}")]
    #[non_exhaustive]
    Interrupted {
        /// What was running: `"transaction"`, `"load of users"`, ….
        work: &'static str,
        /// Why it did not finish.
        interruption: Interruption,
    },
    /// The database refused a value as one its column cannot hold: bad input,
    /// not a failure of the database. PostgreSQL's data exceptions (a NUL
    /// character in text, a string over a `varchar(n)`, a number out of
    /// range, text that does not parse as the column's type), MySQL's and
    /// MariaDB's in strict mode (data too long, an incorrect string or
    /// number, a value out of range). Nothing was written; a web handler
    /// answers 422 ([`status_code`](Error::status_code)).
    #[error("value refused{}: {}", on(*.table), explanation(.source))]
    #[non_exhaustive]
    InvalidValue {
        /// Table being written.
        table: Option<&'static str>,
        /// The database's refusal, whose message the error shows.
        #[source]
        source: DieselError,
    },
    /// Any other database error.
    #[error("database error{}: {}", on(*.table), explanation(.source))]
    #[non_exhaustive]
    Database {
        /// Table being read or written; `None` for work on no single table.
        table: Option<&'static str>,
        /// The diesel error, whose message the error shows.
        #[source]
        source: DieselError,
    },
}

/// Why work handed to tokio's blocking pool did not finish; see
/// [`Error::Interrupted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Interruption {
    /// The work panicked; the panic hook reported its message.
    Panicked,
    /// The runtime shut down before the work finished.
    Shutdown,
    /// The call was made outside a tokio runtime (no blocking pool to use).
    NoRuntime,
}

impl std::fmt::Display for Interruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Interruption::Panicked => {
                "it panicked (rolled back if it was a transaction; the panic hook has its message)"
            }
            Interruption::Shutdown => "the runtime shut down first",
            Interruption::NoRuntime => "no tokio runtime is running on this thread",
        })
    }
}

/// `Result` with larder's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The database's own explanation of `err`: its message without diesel's
/// framing, for a message naming the table already.
fn explanation(err: &DieselError) -> String {
    match err {
        DieselError::DatabaseError(_, info) => info.message().to_owned(),
        DieselError::NotFound => "row not found".to_owned(),
        other => other.to_string(),
    }
}

fn pool_cause(cause: Option<&str>) -> String {
    match cause {
        None => " (pool exhausted)".into(),
        Some(cause) => format!(": cannot open a connection: {cause}"),
    }
}

fn writing(table: Option<&str>, id: Option<i64>) -> String {
    match (table, id) {
        (Some(table), Some(id)) => format!(" writing {table} {id}"),
        (Some(table), None) => format!(" writing {table}"),
        (None, Some(id)) => format!(" writing row {id}"),
        (None, None) => String::new(),
    }
}

fn constraint_suffix(constraint: Option<&str>) -> String {
    constraint
        .map(|name| format!(" (constraint {name})"))
        .unwrap_or_default()
}

fn on(table: Option<&str>) -> String {
    table.map(|t| format!(" on {t}")).unwrap_or_default()
}

fn working_on(table: Option<&str>) -> String {
    table
        .map(|t| format!(" while working on {t}"))
        .unwrap_or_default()
}

fn refused(table: Option<&str>) -> String {
    table
        .map(|t| format!(" (a statement on {t} was refused)"))
        .unwrap_or_default()
}

/// What a diesel error means, decided before the [`Error`] is built from it.
enum Class {
    Conflict(ConflictKind, Option<String>),
    Busy,
    ConnectionLost,
    Serialization,
    TransactionAborted,
    InvalidValue,
    Other,
}

impl Error {
    /// Maps a diesel error raised while working on `table` (`None` for work on
    /// no single table) and row `id` when known.
    pub(crate) fn from_diesel(
        err: DieselError,
        table: Option<&'static str>,
        id: Option<i64>,
    ) -> Error {
        if let (DieselError::NotFound, Some(table), Some(id)) = (&err, table, id) {
            return Error::NotFound { table, id };
        }
        match classify(&err, table) {
            Class::Conflict(kind, constraint) => Error::Conflict {
                table,
                id,
                kind,
                constraint,
                source: Some(err),
            },
            Class::Busy => Error::Busy { table, source: err },
            Class::ConnectionLost => Error::ConnectionLost { table, source: err },
            Class::Serialization => Error::Serialization { table, source: err },
            Class::TransactionAborted => Error::TransactionAborted {
                table,
                source: Some(err),
            },
            Class::InvalidValue => Error::InvalidValue { table, source: err },
            Class::Other => Error::Database { table, source: err },
        }
    }

    /// Maps a failed pool checkout. r2d2's error carries the last error of
    /// opening a connection, if one failed (already free of the password:
    /// larder's connection manager scrubs its errors).
    pub(crate) fn pool(err: r2d2::Error, timeout: Duration) -> Error {
        let shown = err.to_string();
        let cause = shown
            .split_once(": ")
            .map(|(_, cause)| cause.trim().to_owned())
            .filter(|cause| !cause.is_empty());
        Error::PoolTimeout {
            timeout,
            cause,
            source: err,
        }
    }

    /// The transaction's commit was refused because a statement in it failed
    /// or a savepoint in it was left open.
    pub(crate) fn commit_refused() -> Error {
        Error::TransactionAborted {
            table: None,
            source: None,
        }
    }

    /// A [`Conflict`](Error::Conflict) of kind [`ConflictKind::VersionMismatch`]:
    /// an optimistic write to row `id` of `table` expected version `expected`
    /// and found `actual`. For an application's own versioned updates, since
    /// only larder can build the variant.
    ///
    /// ```
    /// let err = larder::Error::version_mismatch("posts", 3, 1, 2);
    /// assert!(err.is_conflict());
    /// assert_eq!(
    ///     err.to_string(),
    ///     "conflict writing posts 3: VersionMismatch { expected: 1, actual: 2 }"
    /// );
    /// ```
    pub fn version_mismatch(table: &'static str, id: i64, expected: i64, actual: i64) -> Error {
        Error::Conflict {
            table: Some(table),
            id: Some(id),
            kind: ConflictKind::VersionMismatch { expected, actual },
            constraint: None,
            source: None,
        }
    }

    /// The row asked for does not exist: [`NotFound`](Error::NotFound).
    /// A web handler answers `404 Not Found`.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// A write was rejected and nothing was written: [`Conflict`](Error::Conflict),
    /// a constraint violation or a version mismatch. A web handler answers
    /// `409 Conflict` (or `412 Precondition Failed` for a version mismatch
    /// when the client sent `If-Match`). Retrying the same write fails the same
    /// way; a version mismatch can be retried after reloading the row.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// The failure is transient and the same work, run again, can succeed:
    /// [`PoolTimeout`](Error::PoolTimeout) (every connection busy, or the
    /// database unreachable for now), [`Busy`](Error::Busy) (a lock held too
    /// long), [`ConnectionLost`](Error::ConnectionLost) (the pool replaces the
    /// connection) and [`Serialization`](Error::Serialization) (the database
    /// chose this transaction to roll back). A web handler answers
    /// `503 Service Unavailable` with `Retry-After`, or reruns the whole
    /// transaction a bounded number of times.
    ///
    /// A named lock's [`LockTimeout`](Error::LockTimeout) and
    /// [`Deadlock`](Error::Deadlock) are retryable too (release the locks held
    /// first), and so is [`MigrationLocked`](Error::MigrationLocked); [`LockLost`](Error::LockLost) is not: the work already ran.
    ///
    /// Not [`TransactionAborted`](Error::TransactionAborted): the statement
    /// that failed in it returned its own error first, and that error says
    /// whether a retry can help. A connection lost during a commit leaves
    /// unknown whether the commit happened: rerun only work that is safe to
    /// apply twice.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::PoolTimeout { .. }
                | Error::Busy { .. }
                | Error::ConnectionLost { .. }
                | Error::Serialization { .. }
                | Error::LockTimeout { .. }
                | Error::Deadlock { .. }
                | Error::MigrationLocked { .. }
        )
    }
}

impl Error {
    /// The HTTP status a web handler answers this error with, for responses
    /// (with the `axum` feature, `Error` implements axum's `IntoResponse`
    /// with it and its `Display` text):
    ///
    /// | status | errors |
    /// |---|---|
    /// | 404 Not Found | [`NotFound`](Error::NotFound) |
    /// | 409 Conflict | [`Conflict`](Error::Conflict), a version mismatch included |
    /// | 400 Bad Request | [`InvalidLockName`](Error::InvalidLockName): a lock named after the request's data |
    /// | 422 Unprocessable Content | [`InvalidValue`](Error::InvalidValue): a value its column cannot hold |
    /// | 503 Service Unavailable | the retryable ones ([`is_retryable`](Error::is_retryable): [`PoolTimeout`](Error::PoolTimeout), [`Busy`](Error::Busy), [`ConnectionLost`](Error::ConnectionLost), [`Serialization`](Error::Serialization), [`LockTimeout`](Error::LockTimeout), [`Deadlock`](Error::Deadlock), [`MigrationLocked`](Error::MigrationLocked)), [`Connection`](Error::Connection) (the database cannot be reached) and an [`Interrupted`](Error::Interrupted) runtime shutdown |
    /// | 500 Internal Server Error | everything else: the server's configuration ([`InvalidUrl`](Error::InvalidUrl), [`InvalidConfig`](Error::InvalidConfig)), a bug ([`LockHeld`](Error::LockHeld), [`InsideTransaction`](Error::InsideTransaction), a panic), [`TransactionAborted`](Error::TransactionAborted), [`LockLost`](Error::LockLost), [`LockFile`](Error::LockFile), [`Migration`](Error::Migration), [`Database`](Error::Database) |
    ///
    /// ```
    /// let err = larder::Error::version_mismatch("posts", 3, 1, 2);
    /// assert_eq!(err.status_code(), 409);
    /// let err = larder::Store::open("ftp://example.org/db").unwrap_err();
    /// assert_eq!(err.status_code(), 500); // the server's configuration, not the client's fault
    /// ```
    pub fn status_code(&self) -> u16 {
        // No wildcard: a new variant must choose its status here.
        match self {
            Error::NotFound { .. } => 404,
            Error::Conflict { .. } => 409,
            Error::InvalidLockName { .. } => 400,
            Error::InvalidValue { .. } => 422,
            Error::PoolTimeout { .. }
            | Error::Busy { .. }
            | Error::ConnectionLost { .. }
            | Error::Serialization { .. }
            | Error::LockTimeout { .. }
            | Error::Deadlock { .. }
            | Error::MigrationLocked { .. }
            | Error::Connection { .. }
            | Error::Interrupted {
                interruption: Interruption::Shutdown,
                ..
            } => 503,
            Error::InvalidUrl { .. }
            | Error::InvalidConfig { .. }
            | Error::TransactionAborted { .. }
            | Error::LockLost { .. }
            | Error::LockHeld { .. }
            | Error::InsideTransaction { .. }
            | Error::LockFile { .. }
            | Error::Migration { .. }
            | Error::Interrupted { .. }
            | Error::Database { .. } => 500,
        }
    }
}

fn classify(err: &DieselError, table: Option<&str>) -> Class {
    match err {
        DieselError::DatabaseError(kind, info) => {
            let conflict = |kind| Class::Conflict(kind, constraint_name(&**info, table));
            match kind {
                DatabaseErrorKind::UniqueViolation | DatabaseErrorKind::ExclusionViolation => {
                    conflict(ConflictKind::Unique)
                }
                DatabaseErrorKind::ForeignKeyViolation | DatabaseErrorKind::RestrictViolation => {
                    conflict(ConflictKind::ForeignKey)
                }
                DatabaseErrorKind::CheckViolation | DatabaseErrorKind::NotNullViolation => {
                    conflict(ConflictKind::Check)
                }
                DatabaseErrorKind::ClosedConnection => Class::ConnectionLost,
                DatabaseErrorKind::SerializationFailure => Class::Serialization,
                _ if is_check_violation(info.message()) => conflict(ConflictKind::Check),
                _ => classify_message(info.message()),
            }
        }
        // A failed commit whose rollback failed too: the commit's error is the news.
        DieselError::RollbackErrorOnCommit { commit_error, .. } => classify(commit_error, table),
        other if is_busy(&other.to_string()) => Class::Busy,
        _ => Class::Other,
    }
}

/// Database errors diesel reports as `Unknown`, whose text is the only signal.
fn classify_message(message: &str) -> Class {
    if is_busy(message) {
        Class::Busy
    } else if is_connection_lost(message) {
        Class::ConnectionLost
    } else if is_serialization_failure(message) {
        Class::Serialization
    } else if is_transaction_aborted(message) {
        Class::TransactionAborted
    } else if is_invalid_value(message) {
        Class::InvalidValue
    } else {
        Class::Other
    }
}

/// The violated constraint's name: PostgreSQL reports it apart; MySQL and
/// MariaDB name it only in the message (their dialect reads it); SQLite names
/// columns, not constraints.
fn constraint_name(info: &dyn DatabaseErrorInformation, table: Option<&str>) -> Option<String> {
    if let Some(name) = info.constraint_name() {
        return Some(name.to_owned());
    }
    dialect::all()
        .into_iter()
        .find_map(|dialect| dialect.constraint_in_message(info.message(), table))
}

/// A check violation the driver does not map (MariaDB's and MySQL's).
fn is_check_violation(message: &str) -> bool {
    dialect::any(|d, m| d.is_check_violation(m), message)
}

/// The driver reports a dropped server connection as a plain error.
fn is_connection_lost(message: &str) -> bool {
    dialect::any(|d, m| d.is_connection_lost(m), message)
}

/// A lock held by another writer past the wait allowed: SQLite's busy
/// timeout, MySQL's lock wait timeout, PostgreSQL's `lock_timeout`.
fn is_busy(message: &str) -> bool {
    dialect::any(|d, m| d.is_busy(m), message)
}

/// Deadlocks and serialization failures the driver does not map.
fn is_serialization_failure(message: &str) -> bool {
    dialect::any(|d, m| d.is_serialization_failure(m), message)
}

/// A value its column cannot hold.
fn is_invalid_value(message: &str) -> bool {
    dialect::any(|d, m| d.is_invalid_value(m), message)
}

/// A statement refused because an earlier one in its transaction failed.
fn is_transaction_aborted(message: &str) -> bool {
    dialect::any(|d, m| d.is_transaction_aborted(m), message)
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// A database error as a driver reports it, with a constraint name when given.
    struct Info {
        message: &'static str,
        constraint: Option<&'static str>,
    }

    impl DatabaseErrorInformation for Info {
        fn message(&self) -> &str {
            self.message
        }
        fn details(&self) -> Option<&str> {
            None
        }
        fn hint(&self) -> Option<&str> {
            None
        }
        fn table_name(&self) -> Option<&str> {
            None
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            self.constraint
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
    }

    fn db_error(kind: DatabaseErrorKind, message: &'static str) -> DieselError {
        DieselError::DatabaseError(
            kind,
            Box::new(Info {
                message,
                constraint: None,
            }),
        )
    }

    fn unknown(message: &'static str) -> DieselError {
        db_error(DatabaseErrorKind::Unknown, message)
    }

    fn on_users(err: DieselError) -> Error {
        Error::from_diesel(err, Some("users"), None)
    }

    /// A real r2d2 checkout error: a pool whose connections cannot be opened.
    fn pool_error(cause: &'static str) -> r2d2::Error {
        #[derive(Debug)]
        struct Failing(&'static str);
        #[derive(Debug)]
        struct Refused(&'static str);
        impl std::fmt::Display for Refused {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Refused {}
        impl r2d2::ManageConnection for Failing {
            type Connection = ();
            type Error = Refused;
            fn connect(&self) -> std::result::Result<(), Refused> {
                Err(Refused(self.0))
            }
            fn is_valid(&self, _: &mut ()) -> std::result::Result<(), Refused> {
                Ok(())
            }
            fn has_broken(&self, _: &mut ()) -> bool {
                false
            }
        }
        let pool = r2d2::Pool::builder()
            .min_idle(Some(0))
            .connection_timeout(Duration::from_millis(50))
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(Failing(cause));
        pool.get().expect_err("no connection can be opened")
    }

    #[test]
    fn values_a_column_cannot_hold_are_invalid_values_answered_422() {
        for message in [
            "invalid byte sequence for encoding \"UTF8\": 0x00",
            "value too long for type character varying(5)",
            "value \"99999999999\" is out of range for type integer",
            "invalid input syntax for type integer: \"abc\"",
            "Data too long for column 'title' at row 1",
            "Incorrect string value: '\\xF0\\x9F\\x98\\x80' for column `t`.`title` at row 1",
            "Out of range value for column 'n' at row 1",
            "string or blob too big",
        ] {
            let err = on_users(unknown(message));
            assert!(
                matches!(
                    err,
                    Error::InvalidValue {
                        table: Some("users"),
                        ..
                    }
                ),
                "{message}"
            );
            assert_eq!(err.status_code(), 422);
            assert!(!err.is_retryable());
            assert!(
                err.to_string().starts_with("value refused on users: "),
                "{err}"
            );
        }
        let other = on_users(unknown("syntax error at or near \"SELEC\""));
        assert!(matches!(other, Error::Database { .. }));
    }

    #[test]
    fn not_found_names_table_and_key() {
        let err = Error::from_diesel(DieselError::NotFound, Some("users"), Some(7));
        assert_eq!(err.to_string(), "users 7 not found");
        assert!(err.is_not_found());
    }

    #[test]
    fn a_missing_row_without_a_key_is_a_database_error() {
        let err = Error::from_diesel(DieselError::NotFound, Some("users"), None);
        assert!(
            matches!(
                err,
                Error::Database {
                    table: Some("users"),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!err.is_not_found());
        assert_eq!(err.to_string(), "database error on users: row not found");
    }

    #[test]
    fn conflict_message_names_table_and_key() {
        let err = Error::version_mismatch("posts", 3, 1, 2);
        let text = err.to_string();
        assert!(text.contains("posts 3"), "{text}");
        assert!(err.is_conflict());
        assert!(
            err.source().is_none(),
            "the database saw no version mismatch"
        );
        assert!(matches!(
            err,
            Error::Conflict {
                table: Some("posts"),
                id: Some(3),
                kind: ConflictKind::VersionMismatch {
                    expected: 1,
                    actual: 2
                },
                constraint: None,
                ..
            }
        ));
    }

    #[test]
    fn a_constraint_violation_carries_the_constraint_name_the_database_gives() {
        let err = DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            Box::new(Info {
                message: "duplicate key value violates unique constraint \"users_email_key\"",
                constraint: Some("users_email_key"),
            }),
        );
        let err = Error::from_diesel(err, Some("users"), Some(4));
        match &err {
            Error::Conflict {
                table: Some("users"),
                id: Some(4),
                kind: ConflictKind::Unique,
                constraint: Some(name),
                ..
            } => assert_eq!(name, "users_email_key"),
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("conflict writing users 4: Unique (constraint users_email_key): "),
            "{err}"
        );
    }

    #[test]
    fn the_constraint_name_is_read_from_mysql_messages() {
        let cases = [
            // MariaDB, then MySQL 8 which prefixes the table.
            (
                "Duplicate entry 'a@example.org' for key 'users_email_key'",
                Some("users_email_key"),
            ),
            (
                "Duplicate entry 'a@example.org' for key 'users.users_email_key'",
                Some("users_email_key"),
            ),
            // A value that looks like the suffix does not fool it.
            (
                "Duplicate entry 'x for key 'y' for key 'users_email_key'",
                Some("users_email_key"),
            ),
            (
                "Cannot add or update a child row: a foreign key constraint fails \
                 (`blog`.`posts`, CONSTRAINT `posts_author_fk` FOREIGN KEY (`author_id`) \
                 REFERENCES `users` (`id`) ON DELETE CASCADE)",
                Some("posts_author_fk"),
            ),
            (
                "Check constraint 'posts_version_positive' is violated.",
                Some("posts_version_positive"),
            ),
            (
                "CONSTRAINT `posts_version_positive` failed for `blog`.`posts`",
                Some("posts_version_positive"),
            ),
            // SQLite names the column, not a constraint.
            ("UNIQUE constraint failed: users.email", None),
            ("FOREIGN KEY constraint failed", None),
        ];
        for (message, expected) in cases {
            let info = Info {
                message,
                constraint: None,
            };
            assert_eq!(
                constraint_name(&info, Some("users")).as_deref(),
                expected,
                "{message}"
            );
        }
    }

    #[test]
    fn constraint_kinds_map_to_conflicts() {
        let cases = [
            (DatabaseErrorKind::UniqueViolation, ConflictKind::Unique),
            (DatabaseErrorKind::ExclusionViolation, ConflictKind::Unique),
            (
                DatabaseErrorKind::ForeignKeyViolation,
                ConflictKind::ForeignKey,
            ),
            (
                DatabaseErrorKind::RestrictViolation,
                ConflictKind::ForeignKey,
            ),
            (DatabaseErrorKind::CheckViolation, ConflictKind::Check),
            (DatabaseErrorKind::NotNullViolation, ConflictKind::Check),
        ];
        for (kind, expected) in cases {
            let err = on_users(db_error(kind, "rejected"));
            assert!(
                matches!(err, Error::Conflict { kind, .. } if kind == expected),
                "{err:?}"
            );
        }
    }

    #[test]
    fn mysql_check_violations_diesel_leaves_unknown_are_conflicts() {
        for message in [
            "CONSTRAINT `posts_version_positive` failed for `blog`.`posts`",
            "Check constraint 'posts_version_positive' is violated.",
        ] {
            let err = Error::from_diesel(unknown(message), Some("posts"), Some(1));
            match &err {
                Error::Conflict {
                    kind: ConflictKind::Check,
                    constraint: Some(name),
                    ..
                } => assert_eq!(name, "posts_version_positive"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_conflict_at_commit_has_no_table() {
        let err = Error::from_diesel(
            db_error(
                DatabaseErrorKind::ForeignKeyViolation,
                "FOREIGN KEY constraint failed",
            ),
            None,
            None,
        );
        assert!(
            matches!(err, Error::Conflict { table: None, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "conflict: ForeignKey: FOREIGN KEY constraint failed"
        );
    }

    #[test]
    fn source_chains_to_the_diesel_error() {
        let errors = [
            on_users(db_error(DatabaseErrorKind::UniqueViolation, "duplicate")),
            on_users(db_error(
                DatabaseErrorKind::SerializationFailure,
                "could not serialize",
            )),
            on_users(db_error(DatabaseErrorKind::ClosedConnection, "closed")),
            on_users(unknown("database is locked")),
            on_users(unknown("current transaction is aborted")),
            on_users(unknown("syntax error")),
        ];
        for err in errors {
            let source = err.source().unwrap_or_else(|| panic!("no source: {err:?}"));
            let diesel = source
                .downcast_ref::<DieselError>()
                .unwrap_or_else(|| panic!("not diesel's: {err:?}"));
            assert!(
                matches!(diesel, DieselError::DatabaseError(..)),
                "{diesel:?}"
            );
        }
    }

    #[test]
    fn a_pool_timeout_chains_to_r2d2s_error_and_names_the_cause() {
        let gone = "database \"gone\" does not exist";
        let err = Error::pool(pool_error(gone), Duration::from_millis(50));
        assert!(
            matches!(&err, Error::PoolTimeout { cause: Some(cause), .. } if cause == gone),
            "{err:?}"
        );
        let source = err.source().expect("a source");
        assert!(source.downcast_ref::<r2d2::Error>().is_some(), "{source:?}");
        assert!(
            err.to_string()
                .ends_with("cannot open a connection: database \"gone\" does not exist"),
            "{err}"
        );
        assert!(err.is_retryable());
    }

    #[test]
    fn deadlocks_and_serialization_failures_are_retryable() {
        let errors = [
            db_error(
                DatabaseErrorKind::SerializationFailure,
                "could not serialize access",
            ),
            // PostgreSQL 40P01 and MySQL 1213 outside a prepared statement.
            unknown("deadlock detected"),
            unknown("Deadlock found when trying to get lock; try restarting transaction"),
            // MySQL 8's 3058, from a named lock's GET_LOCK.
            unknown(
                "Deadlock found when trying to get user-level lock; try rolling back \
                 transaction/releasing locks and restarting lock acquisition.",
            ),
        ];
        for err in errors {
            let err = on_users(err);
            assert!(matches!(err, Error::Serialization { .. }), "{err:?}");
            assert!(err.is_retryable());
        }
    }

    #[test]
    fn lock_timeouts_are_busy() {
        for message in [
            "database is locked",
            "Lock wait timeout exceeded; try restarting transaction",
            "canceling statement due to lock timeout",
        ] {
            let err = on_users(unknown(message));
            assert!(
                matches!(
                    err,
                    Error::Busy {
                        table: Some("users"),
                        ..
                    }
                ),
                "{err:?}"
            );
        }
    }

    #[test]
    fn postgres_refusing_a_statement_after_a_failure_is_a_transaction_aborted() {
        let err = on_users(unknown(
            "current transaction is aborted, commands ignored until end of transaction block",
        ));
        assert!(
            matches!(
                err,
                Error::TransactionAborted {
                    table: Some("users"),
                    source: Some(_),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "transaction aborted (a statement on users was refused): a statement in it \
             failed (or a savepoint in it was left open), so it is rolled back, not committed"
        );
        let refused = Error::commit_refused();
        assert!(refused.source().is_none());
        assert!(refused.to_string().contains("not committed"), "{refused}");
    }

    #[test]
    fn a_lost_connection_while_committing_is_seen_through_the_failed_rollback() {
        let err = DieselError::RollbackErrorOnCommit {
            rollback_error: Box::new(unknown("no connection to the server")),
            commit_error: Box::new(db_error(
                DatabaseErrorKind::ClosedConnection,
                "server closed the connection unexpectedly",
            )),
        };
        let err = Error::from_diesel(err, None, None);
        assert!(
            matches!(err, Error::ConnectionLost { table: None, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn each_variant_answers_its_predicates() {
        // (is_not_found, is_conflict, is_retryable)
        const NOT_FOUND: (bool, bool, bool) = (true, false, false);
        const CONFLICT: (bool, bool, bool) = (false, true, false);
        const RETRYABLE: (bool, bool, bool) = (false, false, true);
        const OTHER: (bool, bool, bool) = (false, false, false);
        let reason = || "bad".to_owned();
        let cases = [
            (
                Error::from_diesel(DieselError::NotFound, Some("users"), Some(1)),
                NOT_FOUND,
            ),
            (Error::version_mismatch("posts", 1, 1, 2), CONFLICT),
            (
                on_users(db_error(DatabaseErrorKind::UniqueViolation, "dup")),
                CONFLICT,
            ),
            (
                Error::pool(pool_error("refused"), Duration::from_millis(50)),
                RETRYABLE,
            ),
            (on_users(unknown("database is locked")), RETRYABLE),
            (on_users(unknown("server closed the connection")), RETRYABLE),
            (on_users(unknown("deadlock detected")), RETRYABLE),
            (on_users(unknown("current transaction is aborted")), OTHER),
            (Error::commit_refused(), OTHER),
            (on_users(unknown("syntax error")), OTHER),
            (
                Error::InvalidUrl {
                    url: reason(),
                    reason: reason(),
                },
                OTHER,
            ),
            (Error::InvalidConfig { reason: reason() }, OTHER),
            (
                Error::Connection {
                    url: reason(),
                    message: reason(),
                },
                OTHER,
            ),
            (Error::Migration { message: reason() }, OTHER),
            (
                Error::LockTimeout {
                    name: reason(),
                    timeout: Duration::from_secs(1),
                },
                RETRYABLE,
            ),
            (Error::Deadlock { name: reason() }, RETRYABLE),
            (
                Error::MigrationLocked {
                    timeout: Duration::from_secs(1),
                },
                RETRYABLE,
            ),
            (Error::LockLost { name: reason() }, OTHER),
            (Error::LockHeld { name: reason() }, OTHER),
            (
                Error::InvalidLockName {
                    name: reason(),
                    reason: reason(),
                },
                OTHER,
            ),
        ];
        for (err, expected) in cases {
            let answers = (err.is_not_found(), err.is_conflict(), err.is_retryable());
            assert_eq!(answers, expected, "{err:?}");
        }
    }

    #[test]
    fn display_names_the_table_when_there_is_one() {
        use DatabaseErrorKind::{UniqueViolation, Unknown};
        let lost = "server closed the connection unexpectedly";
        let cases = [
            (
                Unknown,
                "boom",
                "database error on users: boom",
                "database error: boom",
            ),
            (
                Unknown,
                lost,
                "connection to the database was lost while working on users: server closed \
                 the connection unexpectedly",
                "connection to the database was lost: server closed the connection unexpectedly",
            ),
            (
                Unknown,
                "database is locked",
                "database busy (locked by another writer) while working on users",
                "database busy (locked by another writer)",
            ),
            (
                Unknown,
                "deadlock detected",
                "transaction lost to a concurrent one while working on users (serialization \
                 failure or deadlock), retry it: deadlock detected",
                "transaction lost to a concurrent one (serialization failure or deadlock), \
                 retry it: deadlock detected",
            ),
            (
                UniqueViolation,
                "duplicate",
                "conflict writing users: Unique: duplicate",
                "conflict: Unique: duplicate",
            ),
        ];
        for (kind, message, on_users, on_none) in cases {
            let err = Error::from_diesel(db_error(kind, message), Some("users"), None);
            assert_eq!(err.to_string(), on_users);
            let err = Error::from_diesel(db_error(kind, message), None, None);
            assert_eq!(err.to_string(), on_none);
        }
    }

    #[test]
    fn errors_cross_threads() {
        fn send_sync_static<T: Send + Sync + 'static>() {}
        send_sync_static::<Error>();
    }
}
