//! The embedded migrations and the operations the CLI and `Store::migrate` run.

use diesel::connection::SimpleConnection;
use diesel::migration::{Migration, MigrationSource};
use diesel::sqlite::Sqlite;
use diesel::Connection as _;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::error::{Error, Result};
use crate::pool::Connection;
use crate::url::DatabaseUrl;

/// The SQLite schema migrations compiled into larder (`migrations/sqlite`).
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// One migration and whether the database has it applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// The migration's version, e.g. `2026-11-24-000001`.
    pub version: String,
    /// The migration's full name, e.g. `2026-11-24-000001_blog`.
    pub name: String,
    /// Whether it is applied.
    pub applied: bool,
}

fn failed(action: &str) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> Error + '_ {
    move |err| Error::Migration {
        message: format!("{action}: {err}"),
    }
}

pub(crate) fn run_pending(conn: &mut Connection) -> Result<Vec<String>> {
    let applied = conn
        .run_pending_migrations(SQLITE_MIGRATIONS)
        .map_err(failed("running pending migrations"))?;
    Ok(applied.iter().map(ToString::to_string).collect())
}

pub(crate) fn revert_last(conn: &mut Connection) -> Result<String> {
    if conn
        .applied_migrations()
        .map_err(failed("reading applied migrations"))?
        .is_empty()
    {
        return Err(Error::Migration {
            message: "no applied migration to revert".into(),
        });
    }
    let version = conn
        .revert_last_migration(SQLITE_MIGRATIONS)
        .map_err(failed("reverting the last migration"))?;
    Ok(version.to_string())
}

pub(crate) fn revert_all(conn: &mut Connection) -> Result<Vec<String>> {
    let reverted = conn
        .revert_all_migrations(SQLITE_MIGRATIONS)
        .map_err(failed("reverting all migrations"))?;
    Ok(reverted.iter().map(ToString::to_string).collect())
}

pub(crate) fn status(conn: &mut Connection) -> Result<Vec<MigrationStatus>> {
    let applied: Vec<String> = conn
        .applied_migrations()
        .map_err(failed("reading applied migrations"))?
        .iter()
        .map(ToString::to_string)
        .collect();
    let known: Vec<Box<dyn Migration<Sqlite>>> =
        MigrationSource::<Sqlite>::migrations(&SQLITE_MIGRATIONS)
            .map_err(failed("reading embedded migrations"))?;
    Ok(known
        .iter()
        .map(|m| {
            let version = m.name().version().to_string();
            MigrationStatus {
                applied: applied.contains(&version),
                name: m.name().to_string(),
                version,
            }
        })
        .collect())
}

/// Runs migrations on one direct connection, for the CLI and for tools that
/// migrate before any [`Store`](crate::Store) exists.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let url = format!("sqlite://{}", dir.path().join("m.db").display());
/// let mut migrator = larder::Migrator::open(&url)?;
/// let applied = migrator.run()?;
/// assert!(!applied.is_empty());
/// assert!(migrator.status()?.iter().all(|m| m.applied));
/// # Ok::<(), larder::Error>(())
/// ```
pub struct Migrator {
    conn: Connection,
}

impl Migrator {
    /// Connects to `url` (creating a SQLite file that does not exist yet).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] or [`Error::Connection`].
    pub fn open(url: &str) -> Result<Migrator> {
        let url = DatabaseUrl::parse(url)?;
        let connection_error = |message: String| Error::Connection {
            url: url.redacted().to_owned(),
            message: url.scrub(&message),
        };
        let mut conn =
            Connection::establish(url.target()).map_err(|e| connection_error(e.to_string()))?;
        conn.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;")
            .map_err(|e| connection_error(e.to_string()))?;
        Ok(Migrator { conn })
    }

    /// Applies every pending migration; returns their versions.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`].
    pub fn run(&mut self) -> Result<Vec<String>> {
        run_pending(&mut self.conn)
    }

    /// Reverts the most recently applied migration; returns its version.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`], also when nothing is applied.
    pub fn revert(&mut self) -> Result<String> {
        revert_last(&mut self.conn)
    }

    /// Reverts every applied migration; returns their versions.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`].
    pub fn revert_all(&mut self) -> Result<Vec<String>> {
        revert_all(&mut self.conn)
    }

    /// Reverts the most recent migration and applies it again.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`].
    pub fn redo(&mut self) -> Result<String> {
        let version = self.revert()?;
        self.run()?;
        Ok(version)
    }

    /// Every embedded migration and whether it is applied.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`].
    pub fn status(&mut self) -> Result<Vec<MigrationStatus>> {
        status(&mut self.conn)
    }
}

impl std::fmt::Debug for Migrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrator").finish_non_exhaustive()
    }
}
