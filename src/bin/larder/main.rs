//! `larder`: run migrations on a database, or run the blog demo workload.

mod demo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use larder::Migrator;

/// The SQLite file used when no URL is given (flag, `DATABASE_URL` or `.env`).
const DEFAULT_URL: &str = "sqlite://larder.db";

#[derive(Parser, Debug)]
#[command(
    name = "larder",
    version,
    about = "larder: a cached, lock-safe repository layer over diesel"
)]
struct Cli {
    /// Database URL: sqlite://path, sqlite:path or a bare path.
    /// Read from DATABASE_URL (or a .env file) when not given; defaults to sqlite://larder.db.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Apply, revert or list the embedded schema migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Migrate a fresh SQLite file, exercise the blog repositories and print
    /// cache statistics (uses --database-url instead when one is given).
    Demo(demo::Args),
}

#[derive(Subcommand, Debug)]
enum MigrateAction {
    /// Apply every pending migration.
    Run,
    /// Revert the latest migration (or all of them).
    Revert {
        /// Revert every applied migration.
        #[arg(long)]
        all: bool,
    },
    /// Revert the latest migration and apply it again.
    Redo,
    /// List migrations and whether each is applied.
    Status,
}

fn main() -> ExitCode {
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

fn run(cli: Cli) -> larder::Result<()> {
    match cli.command {
        Command::Migrate { action } => {
            let url = cli.database_url.as_deref().unwrap_or(DEFAULT_URL);
            migrate(url, action)
        }
        Command::Demo(args) => demo::run(cli.database_url.as_deref(), &args),
    }
}

fn migrate(url: &str, action: MigrateAction) -> larder::Result<()> {
    let mut migrator = Migrator::open(url)?;
    match action {
        MigrateAction::Run => {
            let applied = migrator.run()?;
            if applied.is_empty() {
                println!("no pending migrations");
            }
            for version in applied {
                println!("applied {version}");
            }
        }
        MigrateAction::Revert { all: true } => {
            let reverted = migrator.revert_all()?;
            if reverted.is_empty() {
                println!("no applied migrations");
            }
            for version in reverted {
                println!("reverted {version}");
            }
        }
        MigrateAction::Revert { all: false } => println!("reverted {}", migrator.revert()?),
        MigrateAction::Redo => println!("redone {}", migrator.redo()?),
        MigrateAction::Status => {
            for migration in migrator.status()? {
                let mark = if migration.applied {
                    "applied"
                } else {
                    "pending"
                };
                println!("{mark:<8} {}", migration.name);
            }
        }
    }
    Ok(())
}

/// Failures are reported on one line, whatever the driver's message holds.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}
