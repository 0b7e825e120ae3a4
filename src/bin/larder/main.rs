//! `larder`: set up and migrate a database (diesel CLI conventions), or run the
//! blog demo workload.

mod bench;
mod bench_coherence;
mod database;
mod demo;
mod migrations;
mod scratch;
mod stats;

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
  larder database setup                      create larder.db and apply the blog migrations
  larder migrate status                      list migrations, applied or pending
  larder migrate pending                     list only the pending ones
  larder migrate revert -n 2                 revert the two latest migrations
  larder migrate redo                        revert the latest migration and apply it again
  larder --migrations-dir migrations/app migrate generate create_tags
                                             new migrations/app/<timestamp>_create_tags/{up,down}.sql
  larder --migrations-dir migrations/app migrate run
                                             apply your own migrations instead of the blog's
  larder --database-url sqlite://blog.db database reset
                                             drop blog.db and set it up again
  DATABASE_URL=sqlite://blog.db larder demo  run the blog demo on blog.db
  larder --database-url postgres://localhost/bench bench-coherence
                                             how soon another process sees a commit

The URL comes from --database-url, else DATABASE_URL (environment or .env), else
sqlite://larder.db; the migrations folder from --migrations-dir, else
MIGRATION_DIRECTORY, else the blog migrations built into larder.";

#[derive(Parser, Debug)]
#[command(
    name = "larder",
    version,
    about = "larder: a cached, lock-safe repository layer over diesel",
    after_help = EXAMPLES
)]
struct Cli {
    /// Database URL: sqlite://path, sqlite:path or a bare path.
    /// Read from DATABASE_URL (or a .env file) when not given; defaults to sqlite://larder.db.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    /// Your own migrations (<version>_<name>/{up,down}.sql folders, read at run time)
    /// for `migrate` and `database`, instead of the blog migrations built into larder;
    /// `migrate generate` writes there. Read from MIGRATION_DIRECTORY when not given.
    #[arg(
        long,
        global = true,
        env = "MIGRATION_DIRECTORY",
        hide_env_values = true,
        value_name = "DIR"
    )]
    migrations_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Apply, revert, list or generate migrations: the blog schema built into
    /// larder, or your own with --migrations-dir.
    Migrate {
        #[command(subcommand)]
        action: migrations::Action,
    },
    /// Create and migrate, reset, or drop the database the URL names.
    Database {
        #[command(subcommand)]
        action: database::Action,
    },
    /// Migrate a fresh SQLite file, exercise the blog repositories and print
    /// cache statistics (uses --database-url instead when one is given).
    Demo(demo::Args),
    /// Measure a read/update workload on the users table through larder's cache
    /// and with caching off, on a fresh SQLite file (or --database-url, whose
    /// rows it creates are removed again); print throughput, latency, hit ratio
    /// and memory.
    Bench(bench::Args),
    /// Measure cross-process coherence: how long a change committed here takes
    /// to reach another larder process's cache (p50, p99), and what change
    /// capture costs a write. On a fresh SQLite file, or --database-url.
    BenchCoherence(bench_coherence::Args),
    /// Render front pages of an existing blog database, reading only, and print
    /// the cache statistics they produce: hit ratio per entity, evictions, list
    /// hits. Use it to size --capacity before deploying.
    Stats(stats::Args),
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    // A missing .env is normal; a malformed one is reported by the URL it yields.
    let _ = dotenvy::dotenv();
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
    let dir = cli.migrations_dir.as_deref();
    match cli.command {
        Command::Migrate { action } => migrations::run(url, dir, action),
        Command::Database { action } => database::run(url, dir, action),
        Command::Demo(args) => Ok(demo::run(cli.database_url.as_deref(), &args)?),
        Command::Bench(args) => Ok(bench::run(cli.database_url.as_deref(), &args)?),
        Command::BenchCoherence(args) => {
            Ok(bench_coherence::run(cli.database_url.as_deref(), &args)?)
        }
        Command::Stats(args) => Ok(stats::run(
            cli.database_url.as_deref().unwrap_or(DEFAULT_URL),
            &args,
        )?),
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

/// Failures are reported on one line, whatever the driver's message holds.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}
