//! The watcher's own connection: timeouts that make a check against a dead or
//! unreachable server fail in seconds instead of whenever the OS gives up, so
//! the watcher reconnects. (The staleness bound does not depend on them: the
//! guard flushes by the clock while a check is stuck.) Only the watcher's
//! connection gets them, never the pool's.

use std::sync::Once;
use std::time::Duration;

use diesel::QueryResult;

use crate::backend::Connection;
use crate::error::Result;
use crate::url::{Backend, DatabaseUrl};

/// The longest one statement of the watcher may run, and the longest its
/// connection attempt may take.
#[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
const GIVE_UP: Duration = Duration::from_secs(5);

/// The libpq parameters of the listener's connection (unless the URL sets
/// them): give up connecting after [`GIVE_UP`], probe an idle connection
/// after 5 s and drop it after 2 unanswered probes 2 s apart, and drop it
/// when sent data stays unacknowledged for [`GIVE_UP`].
const POSTGRES_PARAMS: [(&str, &str); 6] = [
    ("connect_timeout", "5"),
    ("keepalives", "1"),
    ("keepalives_idle", "5"),
    ("keepalives_interval", "2"),
    ("keepalives_count", "2"),
    ("tcp_user_timeout", "5000"),
];

/// The URL the watcher connects with: on PostgreSQL, with
/// [`POSTGRES_PARAMS`] added to its query string.
pub(super) fn watcher_url(url: &DatabaseUrl) -> Result<DatabaseUrl> {
    match url.backend() {
        Backend::Postgres => DatabaseUrl::parse(&with_params(url.target(), &POSTGRES_PARAMS)),
        _ => Ok(url.clone()),
    }
}

/// `url` with each of `params` appended to its query string, except those it
/// already sets (the operator's choice wins).
fn with_params(url: &str, params: &[(&str, &str)]) -> String {
    let (base, fragment) = url
        .split_once('#')
        .map_or((url, None), |(b, f)| (b, Some(f)));
    let query = base.split_once('?').map_or("", |(_, q)| q);
    let present: Vec<&str> = query
        .split('&')
        .map(|pair| pair.split_once('=').map_or(pair, |(k, _)| k))
        .collect();
    let mut out = base.to_owned();
    for (key, value) in params.iter().filter(|(k, _)| !present.contains(k)) {
        let separator = match out.find('?') {
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

/// Session settings of the watcher's connection, after the pool's own.
/// PostgreSQL: a statement timeout. MariaDB: `max_statement_time` (MySQL:
/// `max_execution_time`, which covers reads only), and a short lock wait so
/// pruning gives way to a transaction holding log rows. A server that refuses
/// these still gets watched: only the time a stuck check takes to fail grows.
pub(super) fn prepare(conn: &mut Connection) -> QueryResult<()> {
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    use diesel::connection::SimpleConnection;
    match conn {
        #[cfg(feature = "postgres")]
        Connection::Postgres(c) => {
            c.batch_execute(&format!("SET statement_timeout = {}", GIVE_UP.as_millis()))
        }
        #[cfg(feature = "mysql")]
        Connection::Mysql(c) => {
            let secs = GIVE_UP.as_secs();
            let limited = c
                .batch_execute(&format!("SET SESSION max_statement_time = {secs}"))
                .or_else(|_| {
                    c.batch_execute(&format!(
                        "SET SESSION max_execution_time = {}",
                        GIVE_UP.as_millis()
                    ))
                });
            if let Err(err) = limited {
                tracing::debug!(error = %err, "no statement time limit for the watcher");
            }
            c.batch_execute("SET SESSION innodb_lock_wait_timeout = 1")
        }
        _ => Ok(()),
    }
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
