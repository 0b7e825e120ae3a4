//! `larder migrate …`: apply, revert and list migrations, and generate new ones.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use larder::{Backend, DatabaseUrl, Migrator};

use crate::CliResult;

/// What `larder migrate` does.
#[derive(Subcommand, Debug)]
pub(crate) enum Action {
    /// Apply every pending migration, oldest first.
    Run,
    /// Revert the application's latest applied migration (or the latest N), or all
    /// of them with --all. larder's own (its change log, its lock tokens) are
    /// reverted only with --all.
    Revert {
        /// Revert the N latest migrations (fewer when fewer are applied).
        #[arg(short = 'n', long = "number", value_name = "N", default_value_t = 1,
              value_parser = clap::value_parser!(u32).range(1..))]
        number: u32,
        /// Revert every applied migration, larder's own included.
        #[arg(short = 'a', long, conflicts_with = "number")]
        all: bool,
    },
    /// Revert the application's latest migration (or the latest N) and apply the same ones again,
    /// in one transaction (on MySQL, which commits DDL at once, one per migration).
    Redo {
        /// Redo the N latest migrations.
        #[arg(short = 'n', long = "number", value_name = "N", default_value_t = 1,
              value_parser = clap::value_parser!(u32).range(1..))]
        number: u32,
    },
    /// List every migration and whether it is applied (or, on MySQL, failed part way).
    Status,
    /// Resolve a migration that failed part way (MySQL, whose DDL commits statement
    /// by statement: `status` marks it failed, and no migration runs until it is
    /// resolved). Undo by hand what it did, then resolve it: the next `run` applies
    /// it again. Or finish it by hand, then resolve it with --applied.
    Resolve {
        /// The migration's version or full name, as `status` shows it.
        migration: String,
        /// Record it as applied (it was finished by hand) instead of pending.
        #[arg(long)]
        applied: bool,
    },
    /// List the migrations not applied yet (prints "no pending migrations" when none).
    Pending,
    /// Create an empty migration, <DIR>/<YYYY-MM-DD-HHMMSS>_<NAME>/{up.sql,down.sql}, in
    /// --migrations-dir, or else where the other commands read (migrations/<backend>, or
    /// ./migrations when it holds migrations itself), created as migrations/<backend>
    /// (migrations/sqlite) under the working directory when neither exists.
    Generate {
        /// The migration's name: ASCII letters, digits and underscores, e.g. create_tags.
        name: String,
        /// Fill the migration with the change-capture triggers of these tables
        /// (for the URL's backend), so other larder processes see their changes.
        /// Repeat for several tables. TABLE:COLUMN,COLUMN also reports those
        /// key columns' values (comments:post_id), so other processes retire
        /// only the cached lists of the values a change touched.
        #[arg(long, value_name = "TABLE[:KEYS]")]
        capture: Vec<String>,
    },
}

/// The database a command works on, its application's migrations and how
/// long its migrations wait for another runner's.
#[derive(Debug)]
pub(crate) struct Target<'a> {
    /// The database URL.
    pub(crate) url: &'a str,
    /// The application's migrations folder, when one is named.
    pub(crate) dir: Option<&'a Path>,
    /// How long to wait for the database's migration lock.
    pub(crate) lock_timeout: std::time::Duration,
}

/// Runs one `larder migrate` action on the target's URL: larder's own
/// migrations and the application's in its folder (or the default folder,
/// when there is one).
pub(crate) fn run(target: &Target<'_>, action: Action) -> CliResult {
    let (url, dir) = (target.url, target.dir);
    if let Action::Generate { name, capture } = &action {
        return generate(url, dir, name, capture);
    }
    let scratch;
    let url = match action {
        Action::Run => url.to_owned(),
        _ if !is_missing_sqlite_file(url)? => url.to_owned(),
        // Everything is pending there: listed from a throwaway database, so
        // that none is left where the operator pointed.
        Action::Status | Action::Pending => {
            scratch = tempfile::tempdir()?;
            format!("sqlite://{}", scratch.path().join("listing.db").display())
        }
        _ => {
            crate::database::check_migrations(dir)?;
            let shown = larder::DatabaseUrl::parse(url)?;
            return Err(format!(
                "database {} does not exist: `larder database setup` creates it",
                shown.redacted()
            )
            .into());
        }
    };
    let mut migrator = open(&url, dir)?.lock_timeout(target.lock_timeout);
    match action {
        Action::Run => list("applied", &migrator.run()?, "no pending migrations"),
        Action::Revert { all: true, .. } => {
            list("reverted", &migrator.revert_all()?, "no applied migrations")
        }
        Action::Revert { number, .. } => list("reverted", &migrator.revert_n(count(number))?, ""),
        Action::Redo { number } => list("redone", &migrator.redo_n(count(number))?, ""),
        Action::Status => {
            for migration in migrator.status()? {
                let mark = if migration.failed {
                    "failed"
                } else if migration.applied {
                    "applied"
                } else {
                    "pending"
                };
                let unknown = if migration.name == migration.version {
                    " (no migration of this version here: it cannot be reverted)"
                } else {
                    ""
                };
                let failed = if migration.failed {
                    " (stopped part way: put it right by hand, then `larder migrate resolve`)"
                } else {
                    ""
                };
                println!("{mark:<8} {}{unknown}{failed}", migration.name);
            }
        }
        Action::Pending => list("pending ", &migrator.pending()?, "no pending migrations"),
        Action::Resolve { migration, applied } => {
            migrator.resolve(&migration, applied)?;
            let now = if applied { "applied" } else { "pending" };
            println!("resolved {migration}: {now}");
        }
        Action::Generate { .. } => unreachable!("generate returned above"),
    }
    Ok(())
}

/// Whether `url` names a SQLite file that does not exist. Only `migrate run`
/// (like `database setup`) may create one: the other actions read a
/// database, and opening a missing file would leave an empty one behind. (A
/// missing server database is a connection error, and creates nothing.)
fn is_missing_sqlite_file(url: &str) -> larder::Result<bool> {
    let parsed = larder::DatabaseUrl::parse(url)?;
    Ok(parsed.backend() == larder::Backend::Sqlite && !larder::database_exists(url)?)
}

/// A migrator over larder's own migrations and the application's: those in
/// `dir` when one is given, else those of the default folder if it exists.
pub(crate) fn open(url: &str, dir: Option<&Path>) -> larder::Result<Migrator> {
    let found;
    let dir = match dir {
        Some(dir) => Some(dir),
        None => {
            found = default_source(url)?;
            found.as_deref()
        }
    };
    match dir {
        Some(dir) => Migrator::open_with_dir(url, dir),
        None => Migrator::open(url),
    }
}

/// The application's migrations when no folder is named, as diesel_cli looks
/// for `./migrations`: `migrations/<backend>` if it exists (one folder per
/// backend, as larder's own and the blog's are laid out), else `migrations`
/// unless it only holds other backends' folders.
fn default_source(url: &str) -> larder::Result<Option<PathBuf>> {
    let per_backend = default_dir(url)?;
    if per_backend.is_dir() {
        return Ok(Some(per_backend));
    }
    let root = Path::new("migrations");
    let backend_folders = ["sqlite", "postgres", "mysql"]
        .iter()
        .any(|name| root.join(name).is_dir());
    Ok((root.is_dir() && !backend_folders).then(|| root.to_path_buf()))
}

/// Prints `verb item` per item, or `none` when there are none.
pub(crate) fn list(verb: &str, items: &[String], none: &str) {
    if items.is_empty() && !none.is_empty() {
        println!("{none}");
    }
    for item in items {
        println!("{verb} {item}");
    }
}

fn count(number: u32) -> usize {
    usize::try_from(number).unwrap_or(usize::MAX)
}

const UP_SQL: &str = "-- Your SQL goes here\n";
const DOWN_SQL: &str = "-- This file should undo anything in `up.sql`\n";

fn generate(url: &str, dir: Option<&Path>, name: &str, capture: &[String]) -> CliResult {
    check_name(name)?;
    let (up, down) = capture_sql(url, capture)?;
    // Where the other commands read, so that a new migration never hides
    // the application's others: a flat `./migrations` stays flat.
    let base = match dir {
        Some(dir) => dir.to_path_buf(),
        None => match default_source(url)? {
            Some(found) => found,
            None => default_dir(url)?,
        },
    };
    let folder = base.join(format!("{}_{name}", free_version(&base)));
    std::fs::create_dir_all(&base)
        .map_err(|e| format!("cannot create migrations directory {}: {e}", base.display()))?;
    std::fs::create_dir(&folder)
        .map_err(|e| format!("cannot create migration {}: {e}", folder.display()))?;
    for (file, text) in [("up.sql", up), ("down.sql", down)] {
        let path = folder.join(file);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("created {}", path.display());
    }
    Ok(())
}

/// Now as a version, `YYYY-MM-DD-HHMMSS`, or the first second after it that
/// no migration in `base` has: diesel records a migration by its version
/// alone, so of two generated in one second it would apply only one.
fn free_version(base: &Path) -> String {
    let taken: Vec<String> = std::fs::read_dir(base)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name.split('_').next()?;
            Some(version.replace('-', ""))
        })
        .collect();
    let mut at = chrono::Utc::now();
    loop {
        let version = at.format("%Y-%m-%d-%H%M%S").to_string();
        if !taken.contains(&version.replace('-', "")) {
            return version;
        }
        at += chrono::Duration::seconds(1);
    }
}

/// The files' text: placeholders, or the capture triggers of `tables`.
fn capture_sql(url: &str, tables: &[String]) -> larder::Result<(String, String)> {
    if tables.is_empty() {
        return Ok((UP_SQL.to_owned(), DOWN_SQL.to_owned()));
    }
    let backend = DatabaseUrl::parse(url)?.backend();
    let mut up = format!(
        "-- Change capture ({}): other larder processes see these tables' changes.\n\
         -- Create the tables above these lines (the triggers check their columns); drop them \
         below the triggers in down.sql.\n",
        backend.name()
    );
    let mut down = String::new();
    let mut seen: Vec<&str> = Vec::new();
    for table in tables {
        let (table, keys) = match table.split_once(':') {
            Some((table, keys)) => (table, keys.split(',').collect()),
            None => (table.as_str(), Vec::new()),
        };
        check_once(backend, &seen, table)?;
        seen.push(table);
        let sql = larder::capture_sql_with_keys(backend, table, &keys)?;
        up.push_str(&sql.up);
        down.insert_str(0, &sql.down);
    }
    Ok((up, down))
}

/// Refuses `table` when `seen` holds it already (in any case on SQLite,
/// whose names ignore it): its triggers would be created twice, and the
/// migration would fail every run.
fn check_once(backend: Backend, seen: &[&str], table: &str) -> larder::Result<()> {
    let same = |other: &str| match backend {
        Backend::Sqlite => other.eq_ignore_ascii_case(table),
        _ => other == table,
    };
    match seen.iter().find(|other| same(other)) {
        None => Ok(()),
        Some(other) => Err(larder::Error::InvalidConfig {
            reason: format!(
                "--capture names the table {table:?} twice (as {other:?} before): \
                 give each table once, with all its keys (TABLE:KEY1,KEY2)"
            ),
        }),
    }
}

/// `migrations/<backend>` under the working directory, e.g. `migrations/sqlite`.
fn default_dir(url: &str) -> larder::Result<PathBuf> {
    let backend = DatabaseUrl::parse(url)?.backend();
    Ok(Path::new("migrations").join(backend.name()))
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the migration name is empty: give one such as create_tags".into());
    }
    // A folder's name takes 255 bytes, the version and its `_` 18 of them.
    let longest = 255 - "YYYY-MM-DD-HHMMSS_".len();
    if name.len() > longest {
        return Err(format!(
            "the migration name is too long: {} bytes, at most {longest}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(format!(
            "invalid migration name {name:?}: {bad:?} is not allowed; \
             use only ASCII letters, digits and _ (e.g. create_tags)"
        ));
    }
    Ok(())
}
