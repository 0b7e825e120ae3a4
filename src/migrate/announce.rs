//! Telling every process that watches the database that migrations ran.
//!
//! A migration can change rows that no trigger reports: it drops and
//! re-creates a table (its capture triggers go with it) and fills the new
//! one, rewrites rows with the triggers off, or is finished by hand. Every
//! store that watches the database empties its caches when it hears of it
//! (`FlushReason::Migrated`), instead of serving what it cached before until
//! eviction. The announcement follows the migrations' commit: a process that
//! dies between the two announces nothing (documented in deployment.md).

use diesel::connection::SimpleConnection;

use crate::dialect;
use crate::error::{Error, Result};
use crate::pool::Connection;

/// Announces after an operation that migrated: one that applied, reverted or
/// resolved something (`changed`), or failed after it may have begun (any
/// error but waiting for another runner's lock, which ran nothing).
pub(crate) fn after<T>(conn: &mut Connection, result: &Result<T>, changed: impl Fn(&T) -> bool) {
    let migrated = match result {
        Ok(value) => changed(value),
        Err(Error::MigrationLocked { .. }) => false,
        Err(_) => true,
    };
    if migrated {
        announce(conn);
    }
}

/// Not an error when it fails: the migrations stand either way. A database
/// without larder's change log (its own migrations not run, or reverted)
/// has no watcher to tell.
fn announce(conn: &mut Connection) {
    let sql = dialect::announce_migrated(conn.backend());
    match conn.batch_execute(&sql) {
        Ok(()) => tracing::debug!("migrations announced to every watcher of the database"),
        Err(err) if dialect::of(conn.backend()).is_missing_table(&err.to_string()) => {
            tracing::debug!("no change log: migrations not announced");
        }
        Err(err) => tracing::warn!(
            error = %err,
            "migrations ran but could not be announced: other processes may serve rows \
             cached before them until they call Store::clear_cache or restart"
        ),
    }
}
