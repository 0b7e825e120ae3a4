//! The watcher's own connection: timeouts that make a check against a dead or
//! unreachable server fail in seconds instead of whenever the OS gives up, so
//! the watcher reconnects. (The staleness bound does not depend on them: the
//! guard flushes by the clock while a check is stuck.) Only the watcher's
//! connection gets them, never the pool's.

use std::sync::Once;
use std::time::Duration;

use diesel::QueryResult;

use crate::backend::Connection;
use crate::dialect;
use crate::error::Result;
use crate::url::{with_params, Backend, DatabaseUrl};

/// The longest one statement of the watcher may run, and the longest its
/// connection attempt may take.
const GIVE_UP: Duration = Duration::from_secs(5);

/// The URL the watcher connects with: with its dialect's connection
/// parameters added to its query string (libpq's connect and keepalive
/// timeouts on PostgreSQL).
pub(super) fn watcher_url(url: &DatabaseUrl) -> Result<DatabaseUrl> {
    let params = dialect::of(url.backend()).watcher_url_params();
    if params.is_empty() {
        return Ok(url.clone());
    }
    DatabaseUrl::parse(&with_params(url.target(), params))
}

/// Session settings of the watcher's connection, after the pool's own.
/// PostgreSQL: a statement timeout. MariaDB: `max_statement_time` (MySQL:
/// `max_execution_time`, which covers reads only), and a short lock wait so
/// pruning gives way to a transaction holding log rows. A server that refuses
/// these still gets watched: only the time a stuck check takes to fail grows.
pub(super) fn prepare(conn: &mut Connection) -> QueryResult<()> {
    use diesel::connection::SimpleConnection;
    let dialect = dialect::of(conn.backend());
    let limits = statement_limits(conn.backend());
    let limited = limits.iter().any(|limit| conn.batch_execute(limit).is_ok());
    if !limits.is_empty() && !limited {
        tracing::debug!("no statement time limit for the watcher");
    }
    match dialect.watcher_lock_wait() {
        Some(wait) => conn.batch_execute(wait),
        None => Ok(()),
    }
}

/// The statements that limit how long one statement of the watcher runs,
/// alternatives of which the first the server accepts applies.
pub(super) fn statement_limits(backend: Backend) -> Vec<String> {
    dialect::of(backend).watcher_statement_limits(GIVE_UP)
}

/// Says once per process that MySQL cannot report a `TRUNCATE`.
pub(super) fn note_mysql_truncate() {
    static NOTED: Once = Once::new();
    NOTED.call_once(|| {
        tracing::info!(
            "coherence on MySQL: TRUNCATE fires no trigger, so other processes keep serving \
             a truncated table's rows until evicted; delete rows instead, or clear every \
             process's cache (Store::clear_cache)"
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: [(&str, &str); 2] = [("connect_timeout", "5"), ("keepalives", "1")];

    #[test]
    fn parameters_are_added_to_any_query_string() {
        assert_eq!(
            with_params("postgres://u@h/db", &PARAMS),
            "postgres://u@h/db?connect_timeout=5&keepalives=1"
        );
        assert_eq!(
            with_params("postgres://u@h/db?sslmode=disable", &PARAMS),
            "postgres://u@h/db?sslmode=disable&connect_timeout=5&keepalives=1"
        );
        assert_eq!(
            with_params("postgres://u@h/db?", &PARAMS),
            "postgres://u@h/db?connect_timeout=5&keepalives=1"
        );
        assert_eq!(
            with_params("postgres://u@h/db?a=1&", &PARAMS),
            "postgres://u@h/db?a=1&connect_timeout=5&keepalives=1"
        );
    }

    #[test]
    fn a_password_may_hold_the_characters_that_end_url_parts() {
        assert_eq!(
            with_params("postgres://u:pa#ss@h/db", &PARAMS),
            "postgres://u:pa#ss@h/db?connect_timeout=5&keepalives=1"
        );
        assert_eq!(
            with_params("postgres://u:p@#s@h/db?a=b@c#frag", &PARAMS),
            "postgres://u:p@#s@h/db?a=b@c&connect_timeout=5&keepalives=1#frag"
        );
    }

    #[test]
    fn parameters_the_url_sets_are_kept() {
        assert_eq!(
            with_params("postgres://u@h/db?connect_timeout=30", &PARAMS),
            "postgres://u@h/db?connect_timeout=30&keepalives=1"
        );
    }

    #[test]
    #[cfg(feature = "postgres")]
    fn the_password_stays_redacted() {
        let url = DatabaseUrl::parse("postgres://app:s3cret@h/db?password=s3cret").unwrap();
        let watcher = watcher_url(&url).unwrap();
        let shown = format!("{watcher} {watcher:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("tcp_user_timeout=5000"), "{shown}");
    }
}
