//! The migration lock: one runner migrates a database at a time, whatever
//! process or host it runs in, so that a rolling deploy whose every host
//! migrates on start has the others wait and then find nothing to do.
//!
//! It is the named lock [`NAME`], taken with the named locks' mechanisms
//! (so `Store::lock(NAME)` also keeps migrations out), without a fencing
//! token: the tokens' table is one of the migrations it guards. PostgreSQL
//! and MySQL hold it on a session of its own, so that no `lock_timeout`
//! reaches the migrations' statements and closing the session releases it
//! whatever state the migrating connection was left in; SQLite holds the
//! `flock` of its file.

use std::time::Duration;

use crate::backend::Manager;
use crate::error::{Error, Result};
use crate::pool::{with_network_timeouts, Connection};
use crate::url::DatabaseUrl;

use super::name::LockName;

/// The migration lock's name, as `Store::lock` would take it. PostgreSQL
/// advisory locks belong to one database, MySQL's are named
/// `<database>.larder.migrations` and SQLite's lie beside the file: runners
/// on two databases of one server never wait for each other.
pub(crate) const NAME: &str = "larder.migrations";

/// The migration lock, held until dropped: at the end of a migration
/// operation, on an early `?` and during a panic alike.
#[must_use = "dropping the migration lock releases it at once"]
pub(crate) struct MigrationLock {
    held: Held,
}

enum Held {
    /// A database no other connection opens (SQLite in memory).
    Nothing,
    #[cfg(feature = "sqlite")]
    File(super::flock::FileLock),
    /// A session of its own; the MySQL lock's server name.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    Session(Connection, String),
}

impl MigrationLock {
    /// Takes the migration lock of the database `conn` is connected to
    /// (`url` names it), waiting up to `timeout` for another runner.
    ///
    /// # Errors
    ///
    /// [`Error::MigrationLocked`] when another runner kept it past
    /// `timeout`; [`Error::Connection`] when the lock's session cannot be
    /// opened; [`Error::LockFile`] when SQLite's lock file cannot be used.
    pub(crate) fn take(
        conn: &mut Connection,
        url: &DatabaseUrl,
        timeout: Duration,
    ) -> Result<MigrationLock> {
        let name = LockName::new(NAME)?;
        let held = match conn {
            #[cfg(feature = "sqlite")]
            Connection::Sqlite(c) => take_file(c, &name, timeout)?,
            #[allow(unreachable_patterns)] // in a SQLite-only build
            _ => take_on_session(url, &name, timeout)?,
        };
        tracing::debug!(lock = NAME, "migration lock acquired");
        Ok(MigrationLock { held })
    }
}

impl Drop for MigrationLock {
    fn drop(&mut self) {
        let released = match std::mem::replace(&mut self.held, Held::Nothing) {
            Held::Nothing => Ok(()),
            #[cfg(feature = "sqlite")]
            Held::File(file) => file.release().map_err(|e| e.to_string()),
            // Closing the session (dropping it) releases the lock either way.
            #[cfg(any(feature = "postgres", feature = "mysql"))]
            Held::Session(mut conn, server_name) => unlock(&mut conn, &server_name)
                .map(drop)
                .map_err(|e| e.to_string()),
        };
        if let Err(err) = released {
            tracing::warn!(lock = NAME, error = %err, "releasing the migration lock failed; closing its session or file released it");
        }
    }
}

#[cfg(feature = "sqlite")]
fn take_file(
    conn: &mut diesel::SqliteConnection,
    name: &LockName,
    timeout: Duration,
) -> Result<Held> {
    use super::flock;
    let dir = flock::lock_dir(conn).map_err(|e| Error::from_diesel(e, None, None))?;
    if dir.as_os_str() == ".locks" {
        // An in-memory or temporary database: no one else can open it.
        return Ok(Held::Nothing);
    }
    let owner = super::session::new_owner();
    match flock::lock(&dir, name.key(), &owner, Some(timeout)) {
        Ok(Some(file)) => Ok(Held::File(file)),
        Ok(None) | Err(flock::Refused::Timeout) => Err(Error::MigrationLocked { timeout }),
        // The only lock this owner takes: no cycle can run through it.
        Err(flock::Refused::Deadlock) => Err(Error::MigrationLocked { timeout }),
        Err(flock::Refused::Io(source)) => Err(Error::LockFile {
            name: name.shown(),
            source,
        }),
    }
}

/// How long opening the lock's session may take: a server that accepts the
/// socket and never answers fails the migration instead of holding it.
const SESSION_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[allow(unused_variables, clippy::needless_pass_by_value)] // in a SQLite-only build
fn take_on_session(url: &DatabaseUrl, name: &LockName, timeout: Duration) -> Result<Held> {
    let url_with_timeout = with_network_timeouts(url, SESSION_CONNECT_TIMEOUT)?;
    let manager = Manager::new(url_with_timeout, Duration::from_secs(5));
    let mut session = manager.open().map_err(|err| url.connection_error(&err.0))?;
    let taken = match &mut session {
        #[cfg(feature = "postgres")]
        Connection::Postgres(c) => take_advisory(c, name, timeout).map(|()| String::new()),
        #[cfg(feature = "mysql")]
        Connection::Mysql(c) => take_get_lock(c, name, timeout),
        #[allow(unreachable_patterns)]
        _ => Ok(String::new()),
    };
    match taken {
        Ok(server_name) => Ok(session_held(session, server_name)),
        Err(Error::Busy { .. }) => Err(Error::MigrationLocked { timeout }),
        Err(err) => Err(err),
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn session_held(session: Connection, server_name: String) -> Held {
    Held::Session(session, server_name)
}

#[cfg(not(any(feature = "postgres", feature = "mysql")))]
fn session_held(_session: Connection, _server_name: String) -> Held {
    Held::Nothing
}

/// PostgreSQL: `pg_advisory_lock` bounded by the session's `lock_timeout`
/// (a timeout is SQLSTATE `55P03`, which reads as [`Error::Busy`]).
#[cfg(feature = "postgres")]
fn take_advisory(
    conn: &mut diesel::PgConnection,
    name: &LockName,
    timeout: Duration,
) -> Result<()> {
    use diesel::connection::SimpleConnection;
    // 0 would mean "wait forever" to PostgreSQL: at least 1 ms.
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128);
    let setup = format!("SET lock_timeout = {ms}; SET application_name = 'larder migrations'");
    conn.batch_execute(&setup)
        .and_then(|()| super::advisory::lock(conn, name.key()))
        .map_err(|e| Error::from_diesel(e, None, None))
}

/// MySQL/MariaDB: `GET_LOCK` with the wait; returns the server's name for it.
#[cfg(feature = "mysql")]
fn take_get_lock(
    conn: &mut diesel::MysqlConnection,
    name: &LockName,
    timeout: Duration,
) -> Result<String> {
    use super::get_lock;
    let scope = get_lock::scope(conn).map_err(|e| Error::from_diesel(e, None, None))?;
    let server_name = get_lock::server_name(&scope, name);
    let got = get_lock::lock(conn, &server_name, Some(timeout))
        .map_err(|e| Error::from_diesel(e, None, None))?;
    if got {
        Ok(server_name)
    } else {
        Err(Error::MigrationLocked { timeout })
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn unlock(conn: &mut Connection, server_name: &str) -> diesel::QueryResult<bool> {
    let _ = server_name;
    match conn {
        #[cfg(feature = "postgres")]
        Connection::Postgres(c) => super::advisory::unlock(c, super::name::key_of(NAME)),
        #[cfg(feature = "mysql")]
        Connection::Mysql(c) => super::get_lock::unlock(c, server_name),
        #[allow(unreachable_patterns)]
        _ => Ok(false),
    }
}
