//! `larder-blog serve`: the blog over HTTP (axum on tokio's multi-threaded
//! runtime), through larder or, for comparison, plain diesel. The modules:
//! `data` (the only one that calls larder), `plain` (the baseline without
//! larder), `pages` (HTML), `routes` (handlers and status mapping), `conn`
//! (the accept loop), `seed` and `state`.

mod conn;
mod data;
mod pages;
mod plain;
mod routes;
mod seed;
mod state;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;

use data::{Data, Failure};
use plain::Plain;
use seed::Seed;
use state::AppState;

pub(crate) use pages::comment_ids;

/// Where the pages come from.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// larder's cached repositories (the blog's own functions).
    Larder,
    /// Hand-written diesel queries on an r2d2 pool: what a user would write
    /// without larder.
    Plain,
}

/// Whether larder caches (`--mode larder` only).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Switch {
    /// Cache entities and list queries.
    On,
    /// Capacity 0: every read goes to the database.
    Off,
}

/// Options of `larder-blog serve`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Address to listen on; port 0 picks a free one (printed when ready).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Set SO_REUSEPORT, so that several server processes share one port
    /// and the kernel spreads connections over them.
    #[arg(long)]
    reuse_port: bool,
    /// larder's cache on or off.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    cache: Switch,
    /// Entries each entity's cache holds with `--cache on` (and lists the
    /// query cache holds): size it to the working set, as `larder-blog
    /// stats` shows it; the default holds the default seed whole.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    cache_capacity: u64,
    /// Serve through larder, or through plain diesel + r2d2 (no cache).
    #[arg(long, value_enum, default_value_t = Mode::Larder)]
    mode: Mode,
    /// USERS,POSTS,COMMENTS to write when the database has no user yet.
    #[arg(long, default_value = "2000,5000,20000")]
    seed: Seed,
    /// Most pooled database connections.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pool_size: u32,
    /// How long a request waits for a free connection before its 503, in ms.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pool_timeout_ms: u64,
    /// larder's bound on serving a row another process changed, in ms.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    max_staleness_ms: u64,
    /// tokio worker threads (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    workers: Option<u32>,
    /// Enable debug-only routes (POST /debug/panic-in-tx).
    #[arg(long)]
    debug_routes: bool,
}

/// Opens (migrates, seeds) the database, then serves until SIGTERM or ctrl-c.
pub(crate) fn run(url: &str, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = args.workers {
        runtime.worker_threads(workers as usize);
    }
    let runtime = runtime.enable_all().build()?;
    // Bound first: a taken port must fail the start before the database is
    // created, migrated or seeded. Connections made meanwhile wait in the
    // backlog; "listening on" is printed once they are served.
    let listener = listen(args.listen, args.reuse_port)?;
    let data = open(url, args)?;
    runtime.block_on(serve(data, listener, args))
}

/// How long a server starting beside another waits for that one's
/// migrations and seed (the lock timeout bounds both waits).
const SEED_WAIT: Duration = Duration::from_secs(120);

fn open(url: &str, args: &Args) -> Result<Data, Box<dyn std::error::Error>> {
    let timeout = Duration::from_millis(args.pool_timeout_ms);
    let capacity = match args.cache {
        Switch::On => usize::try_from(args.cache_capacity).unwrap_or(usize::MAX),
        Switch::Off => 0,
    };
    let store = larder_blog::builder(url)
        .pool_size(args.pool_size)
        .connection_timeout(timeout)
        // Another server's migrations and seed may take a while to write.
        .lock_timeout(SEED_WAIT)
        .cache_capacity(capacity)
        .query_cache_capacity(capacity)
        .max_staleness(Duration::from_millis(args.max_staleness_ms))
        .build()?;
    larder_blog::migrate(&store)?;
    if seed::seed_if_empty(&store, args.seed)? {
        eprintln!(
            "seeded {} users, {} posts, {} comments",
            args.seed.users, args.seed.posts, args.seed.comments
        );
    }
    Ok(match args.mode {
        Mode::Larder => Data::Larder(store),
        Mode::Plain => {
            // The store was only for migrations and the seed: no cache, no watcher.
            drop(store);
            Data::Plain(Plain::open(url, args.pool_size, timeout).map_err(failure)?)
        }
    })
}

fn failure(f: Failure) -> Box<dyn std::error::Error> {
    f.message.into()
}

/// A listening socket; SO_REUSEPORT on request, which std cannot set.
fn listen(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

async fn serve(
    data: Data,
    listener: std::net::TcpListener,
    args: &Args,
) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let front = data.front_page().await.map_err(failure)?;
    let state = AppState {
        data,
        static_page: Bytes::from(front),
        mode: match args.mode {
            Mode::Larder => "larder",
            Mode::Plain => "plain",
        },
        cache: args.mode == Mode::Larder && args.cache == Switch::On,
        pool_size: args.pool_size,
    };
    let app = routes::router(state, args.debug_routes);
    let stop = shutdown();
    // The load script and the tests wait for this line.
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    conn::serve(listener, app, stop).await;
    Ok(())
}

/// Resolves on SIGTERM or ctrl-c: in-flight requests finish, then `serve`
/// returns. The handlers are installed when this is called, not when the
/// future is first polled (axum polls it on a task of its own, which a busy
/// runtime may run after the first requests): called before the server says
/// it listens, a signal sent once it answers always stops it gracefully,
/// never by the signal's default action.
fn shutdown() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
