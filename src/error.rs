//! larder's one error type, and the single place where diesel and r2d2 errors are
//! mapped onto it.

use std::time::Duration;

use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// What kind of conflict a write ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConflictKind {
    /// A unique constraint (for example `users.email`) already holds the value.
    Unique,
    /// A foreign key points at a row that does not exist.
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
/// contains a database password: URLs are redacted before they are stored here.
///
/// ```
/// let err = larder::Store::open("ftp://example.org/db").unwrap_err();
/// assert!(matches!(err, larder::Error::InvalidUrl { .. }));
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
    #[error("conflict writing {table}{}: {kind:?}: {message}", key_suffix(*.id))]
    Conflict {
        /// Table the write went to.
        table: &'static str,
        /// Primary key of the row, when the write had one.
        id: Option<i64>,
        /// What the write conflicted with.
        kind: ConflictKind,
        /// The database's own explanation.
        message: String,
    },
    /// No pooled connection became available within the checkout timeout:
    /// every connection was in use (`cause` is `None`), or new connections
    /// could not be opened (`cause` says why: the database may be down).
    #[error("no database connection available within {timeout:?}{}", pool_cause(.cause.as_deref()))]
    PoolTimeout {
        /// The configured checkout timeout.
        timeout: Duration,
        /// Why the last attempt to open a connection failed, password removed.
        cause: Option<String>,
    },
    /// The database stayed locked by another writer for longer than its busy timeout.
    #[error("database busy (locked by another writer) while writing {table}")]
    Busy {
        /// Table being read or written.
        table: &'static str,
    },
    /// The database URL could not be used; the URL shown has its password removed.
    #[error("invalid database URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL with any password replaced by `***`.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A [`StoreBuilder`](crate::StoreBuilder) setting is out of range.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// Which setting and why.
        reason: String,
    },
    /// A connection to the database could not be opened.
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
    #[error("connection to the database was lost while working on {table}: {message}")]
    ConnectionLost {
        /// Table being read or written, or `"-"`.
        table: &'static str,
        /// The driver's explanation.
        message: String,
    },
    /// Running or reverting migrations failed.
    #[error("migration failed: {message}")]
    Migration {
        /// What went wrong, including the migration name when known.
        message: String,
    },
    /// Any other database error.
    #[error("database error on {table}: {message}")]
    Database {
        /// Table being read or written, or `"-"` for work on no single table.
        table: &'static str,
        /// The database's own explanation.
        message: String,
    },
}

/// `Result` with larder's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn pool_cause(cause: Option<&str>) -> String {
    match cause {
        None => " (pool exhausted)".into(),
        Some(cause) => format!(": cannot open a connection: {cause}"),
    }
}

fn key_suffix(id: Option<i64>) -> String {
    id.map(|id| format!(" {id}")).unwrap_or_default()
}

impl Error {
    /// Maps a diesel error raised while working on `table` (row `id` when known).
    pub(crate) fn from_diesel(err: DieselError, table: &'static str, id: Option<i64>) -> Error {
        match err {
            DieselError::NotFound => match id {
                Some(id) => Error::NotFound { table, id },
                None => Error::Database {
                    table,
                    message: "row not found".into(),
                },
            },
            DieselError::DatabaseError(kind, info) => {
                let message = info.message().to_owned();
                let conflict = |kind| Error::Conflict {
                    table,
                    id,
                    kind,
                    message: message.clone(),
                };
                match kind {
                    DatabaseErrorKind::UniqueViolation => conflict(ConflictKind::Unique),
                    DatabaseErrorKind::ForeignKeyViolation => conflict(ConflictKind::ForeignKey),
                    DatabaseErrorKind::CheckViolation | DatabaseErrorKind::NotNullViolation => {
                        conflict(ConflictKind::Check)
                    }
                    DatabaseErrorKind::ClosedConnection => Error::ConnectionLost { table, message },
                    _ if is_busy(&message) => Error::Busy { table },
                    _ if is_connection_lost(&message) => Error::ConnectionLost { table, message },
                    _ => Error::Database { table, message },
                }
            }
            other => {
                let message = other.to_string();
                if is_busy(&message) {
                    Error::Busy { table }
                } else {
                    Error::Database { table, message }
                }
            }
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
        Error::PoolTimeout { timeout, cause }
    }

    /// Returns true for conflicts (constraint violations and version mismatches).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }
}

/// libpq and the MySQL client report a dropped server connection as a plain
/// error whose text is the only signal.
fn is_connection_lost(message: &str) -> bool {
    [
        "server closed the connection",
        "terminating connection",
        "connection to server",
        "no connection to the server",
        "Lost connection to",
        "server has gone away",
        "Connection was killed",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

/// SQLite reports a writer that waited out its busy timeout as a generic error
/// whose text is the only signal.
fn is_busy(message: &str) -> bool {
    message.contains("database is locked") || message.contains("database table is locked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_names_table_and_key() {
        let err = Error::from_diesel(DieselError::NotFound, "users", Some(7));
        assert_eq!(err.to_string(), "users 7 not found");
    }

    #[test]
    fn conflict_message_names_table_and_key() {
        let err = Error::Conflict {
            table: "posts",
            id: Some(3),
            kind: ConflictKind::VersionMismatch {
                expected: 1,
                actual: 2,
            },
            message: "stale".into(),
        };
        let text = err.to_string();
        assert!(text.contains("posts 3"), "{text}");
        assert!(err.is_conflict());
    }
}
