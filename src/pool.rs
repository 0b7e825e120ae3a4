//! The connection pool: r2d2 over larder connections of the URL's backend.

use std::time::Duration;

use r2d2::ManageConnection;

use crate::backend::Manager;
use crate::error::Result;
use crate::url::DatabaseUrl;

pub(crate) use crate::backend::Connection;

pub(crate) type Pool = r2d2::Pool<Manager>;
pub(crate) type PooledConn = r2d2::PooledConnection<Manager>;

/// Pool settings, as given to [`StoreBuilder`](crate::StoreBuilder).
#[derive(Debug, Clone)]
pub(crate) struct PoolConfig {
    pub(crate) size: u32,
    pub(crate) connection_timeout: Duration,
    pub(crate) busy_timeout: Duration,
}

/// Opens one connection first, so that a bad path or server is reported with its
/// real cause instead of r2d2's generic timeout, then builds the pool. Every
/// checkout pings the connection first (r2d2's `test_on_check_out`), so a
/// connection the server dropped is replaced instead of handed out.
pub(crate) fn build(url: &DatabaseUrl, config: &PoolConfig) -> Result<Pool> {
    let manager = Manager::new(url.clone(), config.busy_timeout);
    drop(manager.connect().map_err(|e| url.connection_error(&e.0))?);
    r2d2::Pool::builder()
        .max_size(config.size)
        .min_idle(Some(1))
        .test_on_check_out(true)
        .connection_timeout(config.connection_timeout)
        .build(manager)
        .map_err(|e| url.connection_error(&e.to_string()))
}
