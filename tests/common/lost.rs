//! Writes lost in flight: a store that is its database's only writer, reached
//! through a [`Proxy`], whose write waits on the server (for a row another
//! session holds, or in a slow COMMIT) while the proxy resets its connection.
//! The caller gets `ConnectionLost`; the server may still commit.

use std::fmt::Debug;
use std::time::Duration;

use diesel::connection::SimpleConnection;

use super::proxy::Proxy;

/// A blog store reached through `proxy` with coherence off: the database's
/// only writer, which hears of no change but its own (so nothing but its own
/// invalidations retires what it cached).
pub fn only_writer(proxy: &Proxy) -> larder::Store {
    larder_blog::builder(&proxy.url())
        .coherence(false)
        .pool_size(2)
        .build()
        .unwrap()
}

/// A plain connection to `url` holding row `id` of `table` locked in an open
/// transaction; `COMMIT` on it lets the row go.
pub fn row_locked(url: &str, table: &str, id: i64) -> larder::Connection {
    let mut holder = larder::Connection::establish(url).unwrap();
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT id FROM {table} WHERE id = {id} FOR UPDATE"
        ))
        .unwrap();
    holder
}

/// Runs `write` on another thread, resets `proxy`'s connections once it has
/// waited `after` on the server, and checks that it failed with
/// `ConnectionLost`.
pub fn lose_in_flight<T: Debug + Send>(
    proxy: &Proxy,
    after: Duration,
    write: impl FnOnce() -> larder::Result<T> + Send,
) {
    std::thread::scope(|s| {
        let writer = s.spawn(write);
        std::thread::sleep(after);
        proxy.reset();
        let lost = writer.join().unwrap();
        assert!(
            matches!(lost, Err(larder::Error::ConnectionLost { .. })),
            "{lost:?}"
        );
    });
}
