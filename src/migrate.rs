//! The migrations larder runs (its own, embedded: the change log and the
//! named locks' fencing tokens; and an
//! application's folder read at run time) and the operations the CLI and
//! `Store::migrate` run.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::backend::Backend;
use diesel::migration::{Migration, MigrationSource, MigrationVersion};
use diesel_migrations::{
    embed_migrations, EmbeddedMigrations, FileBasedMigrations, MigrationError, MigrationHarness,
};

use crate::error::{Error, Result};
use crate::lock::MigrationLock;
use crate::pool::Connection;
use crate::url::DatabaseUrl;
use crate::with_connection;

mod announce;
#[cfg(feature = "mysql")]
mod attempts;

/// How long a [`Migrator`] waits, by default, for another runner's
/// migrations to end: long enough for a large table's migration, bounded so
/// that a runner stuck behind a hung one fails instead of waiting forever.
pub const DEFAULT_MIGRATION_LOCK_TIMEOUT: Duration = Duration::from_secs(600);

/// larder's own SQLite migrations, compiled in (`migrations/sqlite`): the
/// change log that capture triggers write and every store's watcher reads,
/// and the fencing tokens of named locks.
#[cfg(feature = "sqlite")]
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
/// larder's own PostgreSQL migrations (`migrations/postgres`): the fencing
/// tokens of named locks (change capture there needs no table).
#[cfg(feature = "postgres")]
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
/// larder's own MySQL/MariaDB migrations (`migrations/mysql`): the change log
/// and the fencing tokens of named locks.
#[cfg(feature = "mysql")]
pub const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");

/// A backend larder has embedded migrations for.
trait Embedded: Backend {
    fn embedded() -> &'static EmbeddedMigrations;
    /// Whether each DDL statement commits as it runs (MySQL): a migration
    /// that fails part way keeps what it did before the failing statement.
    const COMMITS_DDL: bool = false;
}

#[cfg(feature = "sqlite")]
impl Embedded for diesel::sqlite::Sqlite {
    fn embedded() -> &'static EmbeddedMigrations {
        &SQLITE_MIGRATIONS
    }
}

#[cfg(feature = "postgres")]
impl Embedded for diesel::pg::Pg {
    fn embedded() -> &'static EmbeddedMigrations {
        &POSTGRES_MIGRATIONS
    }
}

#[cfg(feature = "mysql")]
impl Embedded for diesel::mysql::Mysql {
    fn embedded() -> &'static EmbeddedMigrations {
        &MYSQL_MIGRATIONS
    }
    const COMMITS_DDL: bool = true;
}

/// A diesel connection migrations can run on.
trait Harness<DB: Backend>: MigrationHarness<DB> + diesel::Connection<Backend = DB> {}

impl<DB: Backend, C: MigrationHarness<DB> + diesel::Connection<Backend = DB>> Harness<DB> for C {}

/// One migration and whether the database has it applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// The migration's version as diesel records it, e.g. `20261124000001`.
    pub version: String,
    /// The migration's full name, e.g. `2026-11-24-000001_blog`.
    pub name: String,
    /// Whether it is applied.
    pub applied: bool,
    /// Whether a run of it stopped part way and is not resolved yet (MySQL,
    /// whose DDL commits statement by statement): what it did before its
    /// failing statement stays done, and no migration runs until an
    /// operator resolves it ([`Migrator::resolve`]).
    pub failed: bool,
}

type BoxedError = Box<dyn std::error::Error + Send + Sync>;

fn failed(action: &str) -> impl FnOnce(BoxedError) -> Error + '_ {
    move |err| migration_error(format!("{action}: {err}"))
}

/// As [`failed`], for a migration's SQL that ran: where DDL commits statement
/// by statement, says that what ran before the failing statement stays done
/// (`status` cannot tell) and that the operator puts it right.
fn failed_running<DB: Embedded>(action: &str) -> impl FnOnce(BoxedError) -> Error + '_ {
    move |err| {
        let partway = if DB::COMMITS_DDL {
            " (MySQL commits DDL statement by statement: what the migration did before \
             the failing statement stays done, though it is recorded as before; \
             undo it by hand, then try again)"
        } else {
            ""
        };
        migration_error(format!("{action}: {err}{partway}"))
    }
}

fn migration_error(message: String) -> Error {
    Error::Migration { message }
}

fn nothing_to_revert() -> Error {
    migration_error(
        "no application migration to revert (larder's own are reverted only with all the rest)"
            .into(),
    )
}

/// Where a [`Migrator`] takes its migrations from: larder's own, embedded,
/// and an application's folder when one is given.
struct Source {
    app: Option<AppDir>,
}

/// An application's migrations folder, read at run time.
struct AppDir {
    path: PathBuf,
    migrations: FileBasedMigrations,
}

impl Source {
    fn own() -> Source {
        Source { app: None }
    }

    fn with_dir(path: &Path) -> Result<Source> {
        let shown = path.display();
        if !path.is_dir() {
            let problem = if path.exists() {
                "is not a directory"
            } else {
                "does not exist"
            };
            return Err(migration_error(format!(
                "migrations directory {shown} {problem}"
            )));
        }
        let migrations = FileBasedMigrations::from_path(path).map_err(|err| {
            migration_error(match err {
                MigrationError::UnknownMigrationFormat(bad) => format!(
                    "migrations directory {shown}: {} is not a migration: name it \
                     <version>_<name> and put up.sql (and down.sql) in it",
                    bad.display()
                ),
                err => format!("reading migrations directory {shown}: {err}"),
            })
        })?;
        Ok(Source {
            app: Some(AppDir {
                path: path.to_path_buf(),
                migrations,
            }),
        })
    }
}

impl Source {
    /// Reads every migration for `backend` (which refuses two of one version),
    /// before anything connects.
    fn check(&self, backend: crate::Backend) -> Result<()> {
        #[allow(unreachable_patterns)] // in a build with every backend
        match backend {
            #[cfg(feature = "sqlite")]
            crate::Backend::Sqlite => known_migrations::<diesel::sqlite::Sqlite>(self).map(drop),
            #[cfg(feature = "postgres")]
            crate::Backend::Postgres => known_migrations::<diesel::pg::Pg>(self).map(drop),
            #[cfg(feature = "mysql")]
            crate::Backend::Mysql => known_migrations::<diesel::mysql::Mysql>(self).map(drop),
            // A backend not built: connecting refuses it.
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.app {
            None => f.write_str("larder's own migrations"),
            Some(app) => write!(
                f,
                "larder's own migrations and those in {}",
                app.path.display()
            ),
        }
    }
}

impl<DB: Embedded> MigrationSource<DB> for &Source
where
    EmbeddedMigrations: MigrationSource<DB>,
    FileBasedMigrations: MigrationSource<DB>,
{
    fn migrations(&self) -> diesel::migration::Result<Vec<Box<dyn Migration<DB>>>> {
        let mut all = MigrationSource::<DB>::migrations(DB::embedded())?;
        if let Some(app) = &self.app {
            all.extend(MigrationSource::<DB>::migrations(&app.migrations)?);
        }
        check_versions(&all).map_err(BoxedError::from)?;
        Ok(all)
    }
}

/// Refuses two migrations of one version: diesel records a migration by its
/// version alone, so it would apply one of them and count both applied.
fn check_versions<DB: Backend>(
    migrations: &[Box<dyn Migration<DB>>],
) -> std::result::Result<(), String> {
    for (n, migration) in migrations.iter().enumerate() {
        let version = migration.name().version().to_string();
        if !is_version(&version) {
            return Err(format!(
                "{} is not a migration: name it <version>_<name>, the version made of \
                 digits and dashes (`larder migrate generate` writes YYYY-MM-DD-HHMMSS)",
                migration.name()
            ));
        }
        let earlier = migrations[..n].iter();
        if let Some(other) = earlier
            .map(|other| other.name())
            .find(|other| other.version().to_string() == version)
        {
            return Err(format!(
                "migrations {} and {} have the same version {version}: only one would \
                 be applied; rename one's folder with a later <version>",
                other,
                migration.name()
            ));
        }
    }
    Ok(())
}

/// Whether a folder's version (its name up to the first `_`) is one: digits
/// and dashes, as diesel's and larder's `generate` write it. diesel takes
/// any text, so a folder named `tags` ran as version "tags" and `_tags` as
/// an empty one, ordered among the others by their text.
fn is_version(version: &str) -> bool {
    version.bytes().any(|b| b.is_ascii_digit())
        && version.bytes().all(|b| b.is_ascii_digit() || b == b'-')
}

fn versions(applied: &[MigrationVersion<'_>]) -> Vec<String> {
    applied.iter().map(ToString::to_string).collect()
}

fn applied_versions<DB: Backend>(conn: &mut impl Harness<DB>) -> Result<Vec<String>> {
    let applied = conn
        .applied_migrations()
        .map_err(failed("reading applied migrations"))?;
    Ok(versions(&applied))
}

fn known_migrations<DB: Embedded>(source: &Source) -> Result<Vec<Box<dyn Migration<DB>>>>
where
    for<'a> &'a Source: MigrationSource<DB>,
{
    MigrationSource::<DB>::migrations(&source).map_err(failed(&format!("reading {source}")))
}

/// larder's own pending migrations, holding the database's migration lock
/// (waiting up to `lock_timeout` for another runner).
pub(crate) fn run_pending(
    conn: &mut Connection,
    url: &DatabaseUrl,
    lock_timeout: Duration,
) -> Result<Vec<String>> {
    let _lock = MigrationLock::take(conn, url, lock_timeout)?;
    run_pending_from(conn, &Source::own())
}

/// larder's own pending migrations first, whatever their versions: an
/// application's capture triggers need the change log they create.
fn run_pending_from(conn: &mut Connection, source: &Source) -> Result<Vec<String>> {
    let mut applied = run_pending_on(conn, &Source::own())?;
    if source.app.is_some() {
        applied.extend(run_pending_on(conn, source)?);
    }
    Ok(applied)
}

/// MySQL records each migration's attempt around it (see `attempts`).
fn run_pending_on(conn: &mut Connection, source: &Source) -> Result<Vec<String>> {
    match conn {
        #[cfg(feature = "mysql")]
        Connection::Mysql(c) => attempts::run_pending(c, source, source),
        #[allow(unreachable_patterns)] // in a MySQL-only build
        _ => with_connection!(conn, |c| run_pending_in(c, source)),
    }
}

/// An application's embedded migrations (`Store::run_migrations`), on
/// MySQL with their attempts recorded as `Migrator::run` records them: one
/// left part way is refused, not run again over what it did.
pub(crate) fn run_embedded(
    conn: &mut Connection,
    source: EmbeddedMigrations,
) -> Result<Vec<String>> {
    const SHOWN: &str = "the application's migrations";
    match conn {
        #[cfg(feature = "mysql")]
        Connection::Mysql(c) => attempts::run_pending(c, source, &SHOWN),
        #[allow(unreachable_patterns)] // in a MySQL-only build
        _ => with_connection!(conn, |c| c
            .run_pending_migrations(source)
            .map(|applied| versions(&applied))
            .map_err(failed(&format!("running {SHOWN}")))),
    }
}

fn run_pending_in<DB: Embedded>(conn: &mut impl Harness<DB>, source: &Source) -> Result<Vec<String>>
where
    for<'a> &'a Source: MigrationSource<DB>,
{
    let applied = conn
        .run_pending_migrations(source)
        .map_err(failed_running::<DB>(&format!(
            "running pending migrations from {source}"
        )))?;
    Ok(versions(&applied))
}

fn pending_from(conn: &mut Connection, source: &Source) -> Result<Vec<String>> {
    with_connection!(conn, |c| pending_in(c, source))
}

fn pending_in<DB: Embedded>(conn: &mut impl Harness<DB>, source: &Source) -> Result<Vec<String>>
where
    for<'a> &'a Source: MigrationSource<DB>,
{
    let pending = conn
        .pending_migrations(source)
        .map_err(failed(&format!("reading pending migrations from {source}")))?;
    Ok(pending.iter().map(|m| m.name().to_string()).collect())
}

fn revert_n_from(conn: &mut Connection, source: &Source, n: usize) -> Result<Vec<String>> {
    with_connection!(conn, |c| revert_n_in(c, source, n))
}

fn revert_n_in<DB: Embedded>(
    conn: &mut impl Harness<DB>,
    source: &Source,
    n: usize,
) -> Result<Vec<String>>
where
    for<'a> &'a Source: MigrationSource<DB>,
{
    let latest = latest_app_migrations(conn, source, n)?;
    if latest.is_empty() && n > 0 {
        return Err(nothing_to_revert());
    }
    latest
        .iter()
        .map(|migration| {
            let version =
                conn.revert_migration(migration.as_ref())
                    .map_err(failed_running::<DB>(&format!(
                        "reverting {}",
                        migration.name()
                    )))?;
            Ok(version.to_string())
        })
        .collect()
}

/// The application's `n` most recent applied migrations (by version, as
/// diesel orders them), newest first. larder's own are never among them:
/// reverting its change log or lock tokens would break every running store
/// (and start fencing tokens again at 1); only `revert_all` removes them.
fn latest_app_migrations<DB: Embedded>(
    conn: &mut impl Harness<DB>,
    source: &Source,
    n: usize,
) -> Result<Vec<Box<dyn Migration<DB>>>>
where
    for<'a> &'a Source: MigrationSource<DB>,
{
    let own: Vec<String> = known_migrations::<DB>(&Source::own())?
        .iter()
        .map(|m| m.name().version().to_string())
        .collect();
    let mut applied = applied_versions(conn)?;
    applied.retain(|version| !own.contains(version));
    applied.sort_unstable_by(|a, b| b.cmp(a));
    let mut known = known_migrations::<DB>(source)?;
    applied
        .iter()
        .take(n)
        .map(|version| {
            let at = known
                .iter()
                .position(|m| m.name().version().to_string() == *version)
                .ok_or_else(|| {
                    migration_error(format!(
                        "applied migration {version} is not among the migrations of {source}: \
                         it cannot be reverted"
                    ))
                })?;
            Ok(known.swap_remove(at))
        })
        .collect()
}

fn revert_all_from(conn: &mut Connection, source: &Source) -> Result<Vec<String>> {
    with_connection!(conn, |c| revert_all_in(c, source))
}

fn revert_all_in<DB: Embedded>(conn: &mut impl Harness<DB>, source: &Source) -> Result<Vec<String>>
where
    for<'a> &'a Source: MigrationSource<DB>,
{
    let reverted = conn
        .revert_all_migrations(source)
        .map_err(failed_running::<DB>(&format!(
            "reverting all migrations with {source}"
        )))?;
    Ok(versions(&reverted))
}

/// MySQL records each migration's attempt as it applies it again (see `attempts`).
fn redo_n_from(conn: &mut Connection, source: &Source, n: usize) -> Result<Vec<String>> {
    match conn {
        #[cfg(feature = "mysql")]
        Connection::Mysql(c) => attempts::redo_n(c, source, n),
        #[allow(unreachable_patterns)] // in a MySQL-only build
        _ => with_connection!(conn, |c| redo_n_in(c, source, n)),
    }
}

/// Reverts the `n` latest migrations and applies exactly those again, all in one
/// transaction (as diesel's `migration redo -n` does) where the backend can
/// roll DDL back. MySQL commits each DDL statement at once, which would end
/// that transaction under the migrations' own (their savepoints then no
/// longer exist, and the first one's release failed every redo): there each
/// migration runs in its own, as `revert` and `run` run them.
fn redo_n_in<DB: Embedded>(
    conn: &mut impl Harness<DB>,
    source: &Source,
    n: usize,
) -> Result<Vec<String>>
where
    for<'a> &'a Source: MigrationSource<DB>,
{
    let latest = latest_app_migrations(conn, source, n)?;
    if latest.is_empty() {
        return Err(nothing_to_revert());
    }
    let redone = if DB::COMMITS_DDL {
        redo_steps(conn, &latest)
    } else {
        conn.transaction(|conn| redo_steps(conn, &latest))
    };
    redone.map_err(failed_running::<DB>(&format!(
        "redoing migrations with {source}"
    )))
}

/// Reverts `latest` (newest first), then applies them again, oldest first.
fn redo_steps<DB: Embedded>(
    conn: &mut impl Harness<DB>,
    latest: &[Box<dyn Migration<DB>>],
) -> std::result::Result<Vec<String>, BoxedError> {
    for migration in latest {
        conn.revert_migration(migration.as_ref())?;
    }
    let run = latest.iter().rev().map(|m| conn.run_migration(m.as_ref()));
    Ok(versions(&run.collect::<std::result::Result<Vec<_>, _>>()?))
}

pub(crate) fn status(conn: &mut Connection) -> Result<Vec<MigrationStatus>> {
    status_from(conn, &Source::own(), false)
}

/// `unknown`: also the applied versions no migration of `source` has.
fn status_from(
    conn: &mut Connection,
    source: &Source,
    unknown: bool,
) -> Result<Vec<MigrationStatus>> {
    let mut all = with_connection!(conn, |c| status_in(c, source, unknown))?;
    mark_failed(conn, &mut all)?;
    Ok(all)
}

/// Marks the migrations whose run stopped part way (MySQL).
#[allow(irrefutable_let_patterns)] // in a build with MySQL alone
fn mark_failed(conn: &mut Connection, all: &mut [MigrationStatus]) -> Result<()> {
    #[cfg(feature = "mysql")]
    if let Connection::Mysql(c) = conn {
        for attempt in attempts::unresolved(c)? {
            if let Some(status) = all.iter_mut().find(|m| m.version == attempt.version) {
                status.failed = true;
            }
        }
    }
    let _ = (conn, all);
    Ok(())
}

fn resolve_on(conn: &mut Connection, migration: &str, applied: bool) -> Result<()> {
    match conn {
        #[cfg(feature = "mysql")]
        Connection::Mysql(c) => attempts::resolve(c, migration, applied),
        #[allow(unreachable_patterns)]
        _ => {
            let _ = applied;
            Err(nothing_to_resolve(migration))
        }
    }
}

/// Only MySQL leaves migrations part way.
fn nothing_to_resolve(migration: &str) -> Error {
    migration_error(format!(
        "no migration {migration:?} failed part way: `larder migrate status` marks the \
         ones that did as failed (only MySQL, whose DDL commits statement by statement, \
         leaves any)"
    ))
}

fn status_in<DB: Embedded>(
    conn: &mut impl Harness<DB>,
    source: &Source,
    unknown: bool,
) -> Result<Vec<MigrationStatus>>
where
    for<'a> &'a Source: MigrationSource<DB>,
{
    let applied = applied_versions(conn)?;
    let known = known_migrations::<DB>(source)?;
    let mut all: Vec<MigrationStatus> = known
        .iter()
        .map(|m| {
            let version = m.name().version().to_string();
            MigrationStatus {
                applied: applied.contains(&version),
                name: m.name().to_string(),
                version,
                failed: false,
            }
        })
        .collect();
    // Applied, with no migration here (its folder removed, another checkout's):
    // shown under its version, which is all the database records.
    for version in applied.into_iter().filter(|_| unknown) {
        if !all.iter().any(|m| m.version == version) {
            all.push(MigrationStatus {
                name: version.clone(),
                version,
                applied: true,
                failed: false,
            });
        }
    }
    all.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(all)
}

/// Runs migrations on one direct connection, for the CLI and for tools that
/// migrate before any [`Store`](crate::Store) exists.
///
/// [`Migrator::open`] runs larder's own migrations (the change log, the
/// locks' fencing tokens);
/// [`Migrator::open_with_dir`] adds an application's migrations folder
/// (diesel's `<version>_<name>/{up,down}.sql` layout), read at run time.
/// larder's own pending migrations always run first.
///
/// Every operation that changes the schema (`run`, the reverts, the redos)
/// holds the database's migration lock while it runs, so runners in other
/// processes and on other hosts (every host of a rolling deploy migrating
/// on start) take turns: the later ones wait, then find nothing left to do.
/// A runner waits up to its [lock timeout](Migrator::lock_timeout), then
/// returns [`Error::MigrationLocked`] having changed nothing. On PostgreSQL
/// and MySQL the lock is held on a second connection of the migrator's own,
/// closed when the operation ends.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let url = format!("sqlite://{}", dir.path().join("m.db").display());
/// let mut migrator = larder::Migrator::open(&url)?;
/// assert_eq!(migrator.pending()?.len(), migrator.status()?.len());
/// let applied = migrator.run()?;
/// assert_eq!(applied.len(), migrator.status()?.len());
/// assert!(migrator.pending()?.is_empty());
/// assert!(migrator.status()?.iter().all(|m| m.applied));
/// # Ok::<(), larder::Error>(())
/// ```
pub struct Migrator {
    conn: Connection,
    source: Source,
    url: DatabaseUrl,
    lock_timeout: Duration,
}

impl Migrator {
    /// Connects to `url` (creating a SQLite file that does not exist yet), with
    /// larder's own migrations ([`SQLITE_MIGRATIONS`] and the other backends').
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] or [`Error::Connection`].
    pub fn open(url: &str) -> Result<Migrator> {
        let conn = Connection::establish(url)?;
        Ok(Migrator {
            conn,
            source: Source::own(),
            url: DatabaseUrl::parse(url)?,
            lock_timeout: DEFAULT_MIGRATION_LOCK_TIMEOUT,
        })
    }

    /// How long each operation waits for the migration lock while another
    /// runner migrates the database (default
    /// [`DEFAULT_MIGRATION_LOCK_TIMEOUT`], 10 minutes). Any duration is
    /// taken: PostgreSQL and MySQL wait at most 2³¹ − 1 ms (about 24.8 days),
    /// SQLite as long as asked.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let url = format!("sqlite://{}", dir.path().join("m.db").display());
    /// use std::time::Duration;
    /// let mut migrator = larder::Migrator::open(&url)?.lock_timeout(Duration::from_secs(30));
    /// migrator.run()?;
    /// # Ok::<(), larder::Error>(())
    /// ```
    #[must_use]
    pub fn lock_timeout(mut self, timeout: Duration) -> Migrator {
        self.lock_timeout = timeout;
        self
    }

    /// Takes the database's migration lock for one operation.
    fn lock(&mut self) -> Result<MigrationLock> {
        MigrationLock::take(&mut self.conn, &self.url, self.lock_timeout)
    }

    /// Connects to `url` like [`Migrator::open`], with the migrations in `dir`
    /// as well: one `<version>_<name>` folder per migration, holding `up.sql`
    /// and `down.sql`, read when each operation runs. The folder is checked
    /// before connecting, so a bad folder creates no database file.
    ///
    /// ```
    /// # let tmp = tempfile::tempdir().unwrap();
    /// # let url = format!("sqlite://{}", tmp.path().join("app.db").display());
    /// let dir = tmp.path().join("migrations");
    /// std::fs::create_dir_all(dir.join("2027-01-01-000000_tags")).unwrap();
    /// std::fs::write(dir.join("2027-01-01-000000_tags/up.sql"), "CREATE TABLE tags (id INTEGER PRIMARY KEY);").unwrap();
    /// std::fs::write(dir.join("2027-01-01-000000_tags/down.sql"), "DROP TABLE tags;").unwrap();
    /// let mut migrator = larder::Migrator::open_with_dir(&url, &dir)?;
    /// assert!(migrator.run()?.ends_with(&["20270101000000".to_owned()]));
    /// # Ok::<(), larder::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] when `dir` does not exist, is not a directory or holds
    /// a folder that is not a migration; [`Error::InvalidUrl`] or
    /// [`Error::Connection`] as for [`Migrator::open`].
    pub fn open_with_dir(url: &str, dir: &Path) -> Result<Migrator> {
        let source = Source::with_dir(dir)?;
        source.check(crate::DatabaseUrl::parse(url)?.backend())?;
        Ok(Migrator {
            source,
            ..Migrator::open(url)?
        })
    }

    /// Applies every pending migration, oldest first; returns their versions.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] naming the migration that failed; that migration's
    /// changes are rolled back, the ones before it stay applied. On MySQL,
    /// whose DDL commits statement by statement, what the failed migration
    /// did before its failing statement stays done: it is marked
    /// [failed](MigrationStatus::failed), and `run` refuses with
    /// [`Error::Migration`] until it is [resolved](Migrator::resolve).
    /// [`Error::MigrationLocked`] when another runner held the migration
    /// lock past the [lock timeout](Migrator::lock_timeout): nothing changed.
    pub fn run(&mut self) -> Result<Vec<String>> {
        let _lock = self.lock()?;
        let applied = run_pending_from(&mut self.conn, &self.source);
        self.announce(&applied);
        applied
    }

    /// The names of the migrations not applied yet, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] when the migrations or the applied versions cannot be read.
    pub fn pending(&mut self) -> Result<Vec<String>> {
        pending_from(&mut self.conn, &self.source)
    }

    /// Reverts the application's most recently applied migration (the highest
    /// version, as diesel orders them); returns its version. larder's own
    /// migrations (its change log, its lock tokens) are never reverted here,
    /// whatever their dates: only [`revert_all`](Migrator::revert_all) removes them.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`], also when no application migration is applied.
    /// [`Error::MigrationLocked`] when another runner held the migration
    /// lock past the [lock timeout](Migrator::lock_timeout): nothing changed.
    pub fn revert(&mut self) -> Result<String> {
        self.revert_n(1)?.pop().ok_or_else(nothing_to_revert)
    }

    /// Reverts the application's `n` most recently applied migrations (fewer
    /// when fewer are applied), newest first; returns their versions. As
    /// [`revert`](Migrator::revert), larder's own are left alone.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`], also when `n > 0` and no application migration is applied.
    /// [`Error::MigrationLocked`] when another runner held the migration
    /// lock past the [lock timeout](Migrator::lock_timeout): nothing changed.
    pub fn revert_n(&mut self, n: usize) -> Result<Vec<String>> {
        let _lock = self.lock()?;
        let reverted = revert_n_from(&mut self.conn, &self.source, n);
        self.announce(&reverted);
        reverted
    }

    /// Reverts every applied migration, larder's own included; returns their versions.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`];
    /// [`Error::MigrationLocked`] when another runner held the migration
    /// lock past the [lock timeout](Migrator::lock_timeout): nothing changed.
    pub fn revert_all(&mut self) -> Result<Vec<String>> {
        let _lock = self.lock()?;
        let reverted = revert_all_from(&mut self.conn, &self.source);
        self.announce(&reverted);
        reverted
    }

    /// Reverts the application's most recent migration and applies it again;
    /// returns its version. larder's own are left alone, as by [`revert`](Migrator::revert).
    ///
    /// # Errors
    ///
    /// [`Error::Migration`], also when no application migration is applied.
    /// [`Error::MigrationLocked`] when another runner held the migration
    /// lock past the [lock timeout](Migrator::lock_timeout): nothing changed.
    pub fn redo(&mut self) -> Result<String> {
        self.redo_n(1)?.pop().ok_or_else(nothing_to_revert)
    }

    /// Reverts the application's `n` most recent migrations (fewer when fewer
    /// are applied) and applies exactly those again, in one transaction
    /// (on MySQL, which commits DDL at once, one per migration); returns their
    /// versions, oldest first. larder's own are left alone.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`], also when no application migration is applied;
    /// nothing changes then.
    /// [`Error::MigrationLocked`] when another runner held the migration
    /// lock past the [lock timeout](Migrator::lock_timeout): nothing changed.
    pub fn redo_n(&mut self, n: usize) -> Result<Vec<String>> {
        let _lock = self.lock()?;
        let redone = redo_n_from(&mut self.conn, &self.source, n);
        self.announce(&redone);
        redone
    }

    /// Every known migration, oldest first, and whether it is applied; and
    /// every applied version no known migration has (its folder removed, say),
    /// named by its version.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`].
    pub fn status(&mut self) -> Result<Vec<MigrationStatus>> {
        status_from(&mut self.conn, &self.source, true)
    }
}

impl Migrator {
    /// Resolves a migration whose run stopped part way (MySQL, whose DDL
    /// commits statement by statement; [`MigrationStatus::failed`]), once an
    /// operator has put the schema right: after undoing by hand what it did
    /// (`applied` false), it runs again with the next [`run`](Migrator::run);
    /// after finishing it by hand (`applied` true), it is recorded as applied.
    /// `migration` is its version or full name. Holds the migration lock.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] when no such migration stopped part way (nothing
    /// changes then; on SQLite and PostgreSQL none ever does, their DDL being
    /// transactional); [`Error::MigrationLocked`] as for [`run`](Migrator::run).
    pub fn resolve(&mut self, migration: &str, applied: bool) -> Result<()> {
        let _lock = self.lock()?;
        let resolved = resolve_on(&mut self.conn, migration, applied);
        announce::after(&mut self.conn, &resolved, |()| true);
        resolved
    }

    /// Tells every store watching the database that migrations ran (see
    /// `announce`), when `result` says some did or may have.
    fn announce(&mut self, result: &Result<Vec<String>>) {
        announce::after(&mut self.conn, result, |versions| !versions.is_empty());
    }
}

/// [`announce::after`] for the store's own migration runs.
pub(crate) fn announce_after(conn: &mut Connection, result: &Result<Vec<String>>) {
    announce::after(conn, result, |versions| !versions.is_empty());
}

impl fmt::Debug for Migrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Migrator")
            .field("source", &self.source.to_string())
            .finish_non_exhaustive()
    }
}
