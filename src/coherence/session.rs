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
use crate::url::{Backend, DatabaseUrl};

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

/// `url` with each of `params` appended to its query string, except those it
/// already sets (the operator's choice wins).
pub(crate) fn with_params(url: &str, params: &[(&str, &str)]) -> String {
    // A password may hold `#` (libpq keeps it): look for the fragment and the
    // query string only past the user info.
    let host = host_start(url);
    let (base, fragment) = match url[host..].find('#') {
        Some(at) => (&url[..host + at], Some(&url[host + at + 1..])),
        None => (url, None),
    };
    let query = base[host..].split_once('?').map_or("", |(_, q)| q);
    let present: Vec<&str> = query
        .split('&')
        .map(|pair| pair.split_once('=').map_or(pair, |(k, _)| k))
        .collect();
    let mut out = base.to_owned();
    for (key, value) in params.iter().filter(|(k, _)| !present.contains(k)) {
        let separator = match out[host..].find('?') {
            None => "?",
            Some(_) if out.ends_with(['?', '&']) => "",
            Some(_) => "&",
        };
        out.push_str(&format!("{separator}{key}={value}"));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Where `url`'s host starts: past its user info, which runs to the last `@`
/// before the query string (taken to start at the first `?` after the first
/// `@`), so that a password's `#` or `@` is not taken for a URL delimiter.
fn host_start(url: &str) -> usize {
    let Some(rest_start) = url.find("://").map(|at| at + "://".len()) else {
        return 0;
    };
    let rest = &url[rest_start..];
    let Some(first_at) = rest.find('@') else {
        return rest_start;
    };
    let query = rest[first_at..]
        .find('?')
        .map_or(rest.len(), |q| first_at + q);
    rest[..query]
        .rfind('@')
        .map_or(rest_start, |at| rest_start + at + 1)
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
