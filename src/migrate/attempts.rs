//! MySQL commits DDL statement by statement, so a migration that fails part
//! way keeps what its statements before the failing one did, though diesel
//! records it as not applied. Each migration `run` applies is recorded in
//! `larder_migration_attempts` before it runs and forgotten once it is
//! applied: a record left behind (the migration failed, or its process
//! died) marks it as failed in `status`, and `run` refuses to go on until
//! an operator resolves it (`larder migrate resolve`).

use std::fmt;

use diesel::connection::SimpleConnection;
use diesel::migration::{Migration, MigrationSource};
use diesel::mysql::Mysql;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::{MysqlConnection, QueryResult, QueryableByName, RunQueryDsl};
use diesel_migrations::MigrationHarness;

use super::{
    failed, failed_running, latest_app_migrations, migration_error, nothing_to_resolve,
    nothing_to_revert, versions, BoxedError, Source,
};
use crate::error::{Error, Result};

const TABLE: &str = "larder_migration_attempts";

/// The attempts table, created by the first `run` that needs it (before
/// larder's own migrations, the first of which it covers too).
const CREATE: &str = "CREATE TABLE IF NOT EXISTS larder_migration_attempts (\
     version VARCHAR(50) NOT NULL PRIMARY KEY, \
     name VARCHAR(255) NOT NULL, \
     started_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, \
     error TEXT NULL)";

/// A migration run that did not finish.
#[derive(Debug, QueryableByName)]
pub(super) struct Attempt {
    #[diesel(sql_type = Text)]
    pub(super) version: String,
    #[diesel(sql_type = Text)]
    pub(super) name: String,
    /// The failure; `None` when the run never came back (its process died).
    #[diesel(sql_type = Nullable<Text>)]
    error: Option<String>,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn database_error(err: diesel::result::Error) -> Error {
    Error::from_diesel(err, Some(TABLE), None)
}

/// The unresolved attempts, oldest first; none where no run made the table
/// (reading creates nothing).
pub(super) fn unresolved(conn: &mut MysqlConnection) -> Result<Vec<Attempt>> {
    let exists: Count = diesel::sql_query(
        "SELECT COUNT(*) AS n FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name = 'larder_migration_attempts'",
    )
    .get_result(conn)
    .map_err(database_error)?;
    if exists.n == 0 {
        return Ok(Vec::new());
    }
    diesel::sql_query(
        "SELECT CAST(version AS CHAR) AS version, CAST(name AS CHAR) AS name, \
         CAST(error AS CHAR) AS error FROM larder_migration_attempts ORDER BY version",
    )
    .load(conn)
    .map_err(database_error)
}

/// Applies every pending migration of `source` (`shown` names it in
/// errors), oldest first, each recorded before it runs; refuses while an
/// earlier attempt is unresolved.
pub(super) fn run_pending(
    conn: &mut MysqlConnection,
    source: impl MigrationSource<Mysql>,
    shown: &dyn fmt::Display,
) -> Result<Vec<String>> {
    conn.batch_execute(CREATE).map_err(database_error)?;
    if let Some(attempt) = unresolved(conn)?.into_iter().next() {
        return Err(refused(&attempt));
    }
    let pending = conn
        .pending_migrations(source)
        .map_err(failed(&format!("reading pending migrations from {shown}")))?;
    let mut applied = Vec::new();
    for migration in &pending {
        applied.push(run_one(conn, shown, migration.as_ref())?);
    }
    Ok(applied)
}

/// Reverts the application's `n` latest migrations, then applies them
/// again, oldest first, each recorded before it runs as [`run_pending`]
/// records them (a redo that fails part way is refused by the next run);
/// refuses while an earlier attempt is unresolved.
pub(super) fn redo_n(conn: &mut MysqlConnection, source: &Source, n: usize) -> Result<Vec<String>> {
    conn.batch_execute(CREATE).map_err(database_error)?;
    if let Some(attempt) = unresolved(conn)?.into_iter().next() {
        return Err(refused(&attempt));
    }
    let latest = latest_app_migrations(conn, source, n)?;
    if latest.is_empty() {
        return Err(nothing_to_revert());
    }
    for migration in &latest {
        conn.revert_migration(migration.as_ref())
            .map_err(failed_running::<Mysql>(&format!(
                "redoing migrations with {source}"
            )))?;
    }
    latest
        .iter()
        .rev()
        .map(|migration| run_one(conn, source, migration.as_ref()))
        .collect()
}

fn run_one(
    conn: &mut MysqlConnection,
    source: &dyn fmt::Display,
    migration: &dyn Migration<Mysql>,
) -> Result<String> {
    let name = migration.name().to_string();
    let version = migration.name().version().to_string();
    record(conn, &version, &name).map_err(database_error)?;
    match conn.run_migration(migration) {
        Ok(ran) => {
            forget(conn, &version).map_err(database_error)?;
            Ok(versions(&[ran]).remove(0))
        }
        Err(err) => {
            if let Err(noted) = note(conn, &version, &err.to_string()) {
                tracing::warn!(migration = %name, error = %noted, "recording a failed migration's error failed; it stays marked as failed");
            }
            Err(failed_part_way(source, &version, err))
        }
    }
}

fn record(conn: &mut MysqlConnection, version: &str, name: &str) -> QueryResult<()> {
    diesel::sql_query("INSERT INTO larder_migration_attempts (version, name) VALUES (?, ?)")
        .bind::<Text, _>(version)
        .bind::<Text, _>(name)
        .execute(conn)
        .map(drop)
}

fn forget(conn: &mut MysqlConnection, version: &str) -> QueryResult<()> {
    diesel::sql_query("DELETE FROM larder_migration_attempts WHERE version = ?")
        .bind::<Text, _>(version)
        .execute(conn)
        .map(drop)
}

fn note(conn: &mut MysqlConnection, version: &str, error: &str) -> QueryResult<()> {
    diesel::sql_query("UPDATE larder_migration_attempts SET error = ? WHERE version = ?")
        .bind::<Text, _>(error)
        .bind::<Text, _>(version)
        .execute(conn)
        .map(drop)
}

/// What the operator does about a migration that stopped part way.
fn way_out(version: &str) -> String {
    format!(
        "undo what it did by hand, then `larder migrate resolve {version}` \
         (`Migrator::resolve`) and run again; or finish it by hand, then \
         `larder migrate resolve {version} --applied`"
    )
}

fn failed_part_way(source: &dyn fmt::Display, version: &str, err: BoxedError) -> Error {
    migration_error(format!(
        "running pending migrations from {source}: {err} (MySQL commits DDL statement \
         by statement: what the migration did before the failing statement stays done; \
         `migrate status` shows it as failed and no migration runs until it is resolved: {})",
        way_out(version)
    ))
}

fn refused(attempt: &Attempt) -> Error {
    let why = match &attempt.error {
        Some(error) => format!("failed: {error}"),
        None => "was interrupted (its process ended before it did)".to_owned(),
    };
    migration_error(format!(
        "migration {} failed part way in an earlier run, which {why}; what it did before \
         that stays done (MySQL commits DDL statement by statement), so no migration runs \
         until it is resolved: {}",
        attempt.name,
        way_out(&attempt.version)
    ))
}

/// Forgets the unresolved attempt of `migration` (its version or full
/// name); with `applied`, records it as applied.
pub(super) fn resolve(conn: &mut MysqlConnection, migration: &str, applied: bool) -> Result<()> {
    let Some(attempt) = unresolved(conn)?
        .into_iter()
        .find(|a| a.version == migration || a.name == migration)
    else {
        return Err(nothing_to_resolve(migration));
    };
    conn.transaction(|conn| {
        forget(conn, &attempt.version)?;
        if applied {
            diesel::sql_query("INSERT INTO __diesel_schema_migrations (version) VALUES (?)")
                .bind::<Text, _>(&attempt.version)
                .execute(conn)?;
        }
        Ok(())
    })
    .map_err(database_error)
}

// `diesel::Connection::transaction` for the resolve above.
use diesel::Connection as _;
