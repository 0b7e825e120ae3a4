//! `larder database …`: create, reset or drop the database a URL names.

use std::path::Path;

use clap::Subcommand;
use larder::DatabaseUrl;

use crate::migrations::{list, open, Target};
use crate::CliResult;

/// What `larder database` does.
#[derive(Subcommand, Debug)]
pub(crate) enum Action {
    /// Create the database if it does not exist (for SQLite, the file; its directory
    /// must exist), then apply every pending migration.
    Setup,
    /// Drop the database (when it exists), then set it up again: a fresh database
    /// with every migration applied and no rows.
    Reset,
    /// Delete the database (for SQLite, the file, its -wal and -shm files and its .locks directory);
    /// fails when it does not exist.
    Drop,
}

/// Runs one `larder database` action on `url`, with larder's own migrations and
/// the application's (in `dir`, or the default folder).
pub(crate) fn run(target: &Target<'_>, action: Action) -> CliResult {
    let (url, dir) = (target.url, target.dir);
    match action {
        Action::Setup => setup_database(target),
        Action::Reset => {
            if larder::database_exists(url)? {
                // Reads the migrations (the folder, its names and versions)
                // before anything is dropped, and lets the connection go.
                check_migrations(dir)?;
                drop(open(url, dir)?);
                drop_database(url)?;
            }
            setup_database(target)
        }
        Action::Drop => drop_database(url),
    }
}

pub(crate) fn check_migrations(dir: Option<&Path>) -> CliResult {
    match dir {
        Some(dir) if !dir.is_dir() => Err(format!(
            "migration failed: migrations directory {} does not exist",
            dir.display()
        )
        .into()),
        _ => Ok(()),
    }
}

/// Creates the target's database if missing, then migrates it, holding its
/// migration lock while it does.
fn setup_database(target: &Target<'_>) -> CliResult {
    let (url, dir) = (target.url, target.dir);
    let parsed = DatabaseUrl::parse(url)?;
    check_migrations(dir)?;
    if larder::create_database(url)? {
        println!("created database {parsed}");
    } else {
        println!("database {parsed} exists");
    }
    let mut migrator = open(url, dir)?.lock_timeout(target.lock_timeout);
    list("applied", &migrator.run()?, "no pending migrations");
    Ok(())
}

fn drop_database(url: &str) -> CliResult {
    let parsed = DatabaseUrl::parse(url)?;
    let dropped = larder::drop_database(url).map_err(|err| match err {
        larder::Error::Busy { .. } => format!(
            "cannot drop database {parsed}: it is in use (a transaction of another \
             session holds its tables): {err}"
        )
        .into(),
        err => Box::<dyn std::error::Error>::from(err),
    })?;
    if !dropped {
        return Err(format!("cannot drop database {parsed}: it does not exist").into());
    }
    println!("dropped database {parsed}");
    Ok(())
}
