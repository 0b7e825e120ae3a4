//! The connection pool: r2d2 over diesel connections, with every SQLite
//! connection set up for concurrent use.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, PooledConnection};

use crate::error::{Error, Result};
use crate::url::DatabaseUrl;

/// The diesel connection type repositories and [`Entity`](crate::Entity)
/// implementations run their queries on.
pub type Connection = diesel::SqliteConnection;

pub(crate) type Pool = r2d2::Pool<ConnectionManager<Connection>>;
pub(crate) type PooledConn = PooledConnection<ConnectionManager<Connection>>;

/// Sets the pragmas every SQLite connection needs when the pool opens it.
#[derive(Debug)]
struct SqliteSetup {
    busy_timeout: Duration,
}

impl CustomizeConnection<Connection, diesel::r2d2::Error> for SqliteSetup {
    fn on_acquire(&self, conn: &mut Connection) -> std::result::Result<(), diesel::r2d2::Error> {
        // busy_timeout first, so that switching to WAL waits for a concurrent opener.
        let setup = format!(
            "PRAGMA busy_timeout = {}; PRAGMA foreign_keys = ON; \
             PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
            self.busy_timeout.as_millis()
        );
        conn.batch_execute(&setup)
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Pool settings, as given to [`StoreBuilder`](crate::StoreBuilder).
#[derive(Debug, Clone)]
pub(crate) struct PoolConfig {
    pub(crate) size: u32,
    pub(crate) connection_timeout: Duration,
    pub(crate) busy_timeout: Duration,
}

/// Opens one connection first, so that a bad path or server is reported with its
/// real cause instead of r2d2's generic timeout, then builds the pool.
pub(crate) fn build(url: &DatabaseUrl, config: &PoolConfig) -> Result<Pool> {
    let manager = ConnectionManager::<Connection>::new(url.target());
    let setup = SqliteSetup {
        busy_timeout: config.busy_timeout,
    };
    let connection_error = |message: String| Error::Connection {
        url: url.redacted().to_owned(),
        message: url.scrub(&message),
    };
    {
        use diesel::r2d2::ManageConnection;
        let mut probe = manager
            .connect()
            .map_err(|e| connection_error(e.to_string()))?;
        setup
            .on_acquire(&mut probe)
            .map_err(|e| connection_error(e.to_string()))?;
    }
    r2d2::Pool::builder()
        .max_size(config.size)
        .min_idle(Some(1))
        .connection_timeout(config.connection_timeout)
        .connection_customizer(Box::new(setup))
        .build(manager)
        .map_err(|e| connection_error(e.to_string()))
}
