//! `larder-blog`: the blog application's own tools: the demo workload, the
//! cache benchmark, the cross-process coherence benchmark and a read-only
//! statistics run. The operator's migrations CLI is `larder` (package
//! `larder-cli`); these measurement tools live here because they write to
//! (and `bench-coherence` drops triggers of) the database they are pointed at.

#![deny(missing_docs, unreachable_pub)]
#![warn(clippy::unwrap_used)]

mod bench;
mod bench_coherence;
mod bench_lists;
mod check_pages;
mod demo;
mod http;
mod probe_coherence;
mod scratch;
mod serve;
mod stats;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The SQLite file `stats`, `serve`, `check-pages` and `probe-coherence` use
/// when no URL is given.
const DEFAULT_URL: &str = "sqlite://larder.db";

/// Shown after `larder-blog --help`.
const EXAMPLES: &str = "\
Examples:
  larder-blog demo                           the blog workload on a fresh SQLite file
  DATABASE_URL=sqlite://blog.db larder-blog demo
                                             the same on blog.db (migrated first)
  larder-blog bench --threads 2 --duration 5 cache on vs off on a Zipf read/write mix
  larder-blog bench --sweep --plot sweep.svg hit ratio and throughput against capacity
  larder-blog bench-lists --writes-per-s 50  post pages' list hit ratio under comment writes
  larder-blog --database-url postgres://localhost/bench bench-coherence
                                             how soon another process sees a commit
  larder-blog --database-url sqlite://blog.db stats --pages 200
                                             cache statistics of read-only page renders
  larder-blog --url sqlite://blog.db serve --listen 127.0.0.1:8080
                                             the blog over HTTP (seeded when empty)
  scripts/load.sh --short                    load and fault scenarios against `serve`";

#[derive(Parser, Debug)]
#[command(
    name = "larder-blog",
    version,
    about = "The blog application larder was written for: demo and benchmarks",
    after_help = EXAMPLES
)]
struct Cli {
    /// Database URL: sqlite://path, postgres://… or mysql://…. Read from
    /// DATABASE_URL (or a .env file) when not given; `demo` and `bench` then use
    /// a fresh temporary SQLite file.
    #[arg(
        long,
        visible_alias = "url",
        global = true,
        env = "DATABASE_URL",
        hide_env_values = true
    )]
    database_url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Migrate a fresh SQLite file (or --database-url), exercise the blog
    /// repositories and print cache statistics.
    Demo(demo::Args),
    /// Measure a read/update workload on the users table through larder's cache
    /// and with caching off, on a fresh SQLite file (or --database-url, whose
    /// rows it creates are removed again); print throughput, latency, hit ratio
    /// and memory.
    Bench(bench::Args),
    /// Measure cross-process coherence: how long a change committed here takes
    /// to reach another larder process's cache (p50, p99), and what change
    /// capture costs a write (it drops and re-creates the users table's capture
    /// triggers: never point it at a production database).
    BenchCoherence(bench_coherence::Args),
    /// Measure the blog server's post pages under a steady rate of new
    /// comments, with comment lists retired by any comment write (the whole
    /// table read) and by writes to their own post only: list hit ratio and
    /// pages/s of each, and a check that no cached page is stale.
    BenchLists(bench_lists::Args),
    /// Render front pages of an existing blog database, reading only, and print
    /// the cache statistics they produce: hit ratio per entity, evictions, list
    /// hits. Use it to size the cache before deploying.
    Stats(stats::Args),
    /// Serve the blog over HTTP (axum): front page, post pages, comments,
    /// edits, /health, /stats and /static; through larder (cache on or
    /// off) or plain diesel. Seeds an empty database first.
    Serve(serve::Args),
    /// Check that every post page a server serves shows exactly the
    /// comments the database holds (exits non-zero on a stale page).
    CheckPages(check_pages::Args),
    /// Post comments through one server and time how soon another server
    /// process shows them: p50, p99, max against the staleness bound.
    ProbeCoherence(probe_coherence::Args),
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    // A missing .env is normal. A malformed one stops the command: dotenvy
    // stops at the bad line, so a DATABASE_URL below it would give way to
    // the default database without a word.
    if let Err(err) = dotenvy::dotenv() {
        if !err.not_found() {
            eprintln!("larder-blog: error: {}", dotenv_error(&err));
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
            eprintln!("larder-blog: error: {}", one_line(&err.to_string()));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let url = cli.database_url.as_deref();
    match cli.command {
        Command::Demo(args) => Ok(demo::run(url, &args)?),
        Command::Bench(args) => bench::run(url, &args),
        Command::BenchCoherence(args) => Ok(bench_coherence::run(url, &args)?),
        Command::BenchLists(args) => Ok(bench_lists::run(url, &args)?),
        Command::Stats(args) => Ok(stats::run(url.unwrap_or(DEFAULT_URL), &args)?),
        Command::Serve(args) => serve::run(url.unwrap_or(DEFAULT_URL), &args),
        Command::CheckPages(args) => check_pages::run(url.unwrap_or(DEFAULT_URL), &args),
        Command::ProbeCoherence(args) => probe_coherence::run(url.unwrap_or(DEFAULT_URL), &args),
    }
}

/// Refuses a SQLite file that does not exist: `command` reads an existing
/// database, and opening a missing file would create it (a mistyped path, or
/// the default `larder.db` in the wrong directory). A missing server database
/// is a connection error, and creates nothing.
fn existing_database(url: &str, command: &str) -> larder::Result<()> {
    let parsed = larder::DatabaseUrl::parse(url)?;
    if parsed.backend() == larder::Backend::Sqlite && !larder::database_exists(url)? {
        return Err(larder::Error::InvalidConfig {
            reason: format!("database {parsed} does not exist: `{command}` reads an existing one"),
        });
    }
    Ok(())
}

/// Rust ignores SIGPIPE, so printing to a closed pipe (`larder-blog demo |
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
        dotenvy::Error::LineParse(_, at) => {
            format!("cannot read .env: a line is malformed (at its character {at})")
        }
        other => format!("cannot read .env: {}", one_line(&other.to_string())),
    }
}

/// Failures are reported on one line, whatever the driver's message holds.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap checks a command's definition only when it parses; this catches a
    /// clash (two argument groups of one name, say) before a user does.
    #[test]
    fn the_command_line_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
