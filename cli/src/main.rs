//! `larder`: set up and migrate a database, diesel_cli style: larder's own
//! migrations (the change log) and an application's migrations folder.

#![deny(missing_docs, unreachable_pub)]
#![warn(clippy::unwrap_used)]

mod database;
mod migrations;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The SQLite file used when no URL is given (flag, `DATABASE_URL` or `.env`).
const DEFAULT_URL: &str = "sqlite://larder.db";

/// What a subcommand returns: larder's errors, or the CLI's own (a bad migration
/// name, a database file that is not there); printed on one line by `main`.
type CliResult = Result<(), Box<dyn std::error::Error>>;

/// Shown after `larder --help`.
const EXAMPLES: &str = "\
Examples:
  larder database setup                      create larder.db and apply the migrations
  larder migrate status                      list migrations, applied or pending
  larder migrate pending                     list only the pending ones
  larder migrate revert -n 2                 revert the application's two latest migrations
  larder migrate redo                        revert the application's latest migration and apply it again
  larder migrate resolve 20300101000000      MySQL: after undoing by hand a migration that failed part way
  larder migrate generate create_tags --capture tags
                                             new migrations/<backend>/<timestamp>_create_tags/{up,down}.sql,
                                             with change-capture triggers for the tags table
  larder migrate generate tag_keys --capture tags:post_id
                                             the same, reporting post_id so that other processes
                                             retire only the lists of the posts a change touched
  larder --migrations-dir db/migrations migrate run
                                             apply larder's own and db/migrations' pending migrations
  larder --lock-timeout 60 migrate run       wait at most 60 s while another host migrates the database
  larder --database-url sqlite://app.db database reset
                                             drop app.db and set it up again

The URL comes from --database-url, else DATABASE_URL (environment or .env), else
sqlite://larder.db. The application's migrations come from --migrations-dir, else
MIGRATION_DIRECTORY, else ./migrations/<backend> or ./migrations, whichever exists;
larder's own migrations (the change log, lock tokens) are always included and run first.
Commands that migrate hold the database's migration lock: runs started at once
(every host of a deploy) take turns, and the later ones find nothing to do.";

#[derive(Parser, Debug)]
#[command(
    name = "larder",
    version,
    about = "larder: a cached, lock-safe repository layer over diesel",
    after_help = EXAMPLES
)]
struct Cli {
    /// Database URL: sqlite://path, sqlite:path or a bare path, postgres://… or (built with the
    /// `mysql` feature) mysql://….
    /// Read from DATABASE_URL (or a .env file) when not given; defaults to sqlite://larder.db.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    /// The application's migrations (<version>_<name>/{up,down}.sql folders, read
    /// at run time) for `migrate` and `database`, besides larder's own; `migrate
    /// generate` writes there. Read from MIGRATION_DIRECTORY when not given, else
    /// ./migrations/<backend> or ./migrations when one exists.
    #[arg(
        long,
        global = true,
        env = "MIGRATION_DIRECTORY",
        hide_env_values = true,
        value_name = "DIR"
    )]
    migrations_dir: Option<PathBuf>,

    /// How long a command that migrates waits, in seconds, while another
    /// runner (another host's deploy, another `larder`) migrates the same
    /// database: they take turns, and the later one finds nothing left to
    /// do. Past it the command fails, having changed nothing.
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        default_value_t = 600,
        value_parser = clap::value_parser!(u32)
    )]
    lock_timeout: u32,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Apply, revert, list or generate migrations: larder's own and the
    /// application's.
    Migrate {
        #[command(subcommand)]
        action: migrations::Action,
    },
    /// Create and migrate, reset, or drop the database the URL names.
    Database {
        #[command(subcommand)]
        action: database::Action,
    },
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    // A missing .env is normal. A malformed one stops the command: dotenvy
    // sets nothing from it, so its DATABASE_URL would silently give way to
    // the default sqlite://larder.db, which `migrate run` would then migrate.
    if let Err(err) = dotenvy::dotenv() {
        if !err.not_found() {
            eprintln!("larder: error: {}", dotenv_error(&err));
            return ExitCode::FAILURE;
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("larder: error: {}", one_line(&err.to_string()));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> CliResult {
    let url = cli.database_url.as_deref().unwrap_or(DEFAULT_URL);
    let target = migrations::Target {
        url,
        dir: cli.migrations_dir.as_deref(),
        lock_timeout: std::time::Duration::from_secs(cli.lock_timeout.into()),
    };
    match cli.command {
        Command::Migrate { action } => migrations::run(&target, action),
        Command::Database { action } => database::run(&target, action),
    }
}

/// Rust ignores SIGPIPE, so printing to a closed pipe (`larder migrate status |
/// head -1`) would panic in `println!`; like any Unix tool, end quietly instead.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: runs first in `main`, before any other thread exists, and installs
    // the system's default action, which is always a valid handler.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Why a `.env` file could not be read, without the text of the line that
/// failed to parse: it may hold a password.
fn dotenv_error(err: &dotenvy::Error) -> String {
    match err {
        dotenvy::Error::LineParse(_, at) => format!(
            "cannot read .env: a line is malformed (at its character {at}); \
             nothing was read from it"
        ),
        dotenvy::Error::Io(io) => format!("cannot read .env: {io}"),
        other => format!("cannot read .env: {other}"),
    }
}

/// Failures are reported on one line, whatever the driver's message holds.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}
