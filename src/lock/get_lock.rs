//! MySQL/MariaDB: `GET_LOCK` / `RELEASE_LOCK`, user-level locks held by the
//! session and released by the server when it ends. MariaDB's metadata-lock
//! deadlock detector covers them (error 1213); MySQL 8 reports 3058.

use std::time::Duration;

use diesel::dsl::sql;
use diesel::sql_types::{Double, Nullable, Text};
use diesel::{MysqlConnection, QueryResult, RunQueryDsl};

use super::name::{key_of, LockName};

/// The server's longest lock name, in characters.
const MAX_SERVER_NAME: usize = 64;

/// The session's database: user-level lock names are global to the server,
/// so larder's are prefixed with it to keep databases apart.
pub(super) fn scope(conn: &mut MysqlConnection) -> QueryResult<String> {
    let db: Option<String> =
        diesel::select(sql::<Nullable<Text>>("DATABASE()")).get_result(conn)?;
    Ok(db.unwrap_or_default())
}

/// `database.name` when that fits the server's 64 characters and holds no
/// control character; otherwise `larder.` and the hex key of both (two names
/// sharing it only wait for each other).
pub(super) fn server_name(scope: &str, name: &LockName) -> String {
    let plain = format!("{scope}.{}", name.as_str());
    if plain.chars().count() <= MAX_SERVER_NAME && !plain.chars().any(char::is_control) {
        plain
    } else {
        format!(
            "larder.{:016x}",
            key_of(&format!("{scope}\0{}", name.as_str()))
        )
    }
}

/// The longest wait `GET_LOCK` is asked for: given more than about 9.2e18
/// seconds (`Migrator::lock_timeout(Duration::MAX)`) it answers NULL at once,
/// which read as a timeout. 2³¹ − 1 ms, PostgreSQL's bound for the same wait.
const LONGEST_WAIT: Duration = Duration::from_millis(i32::MAX as u64);

/// Waits up to `timeout` (`None`: not at all; at most [`LONGEST_WAIT`]);
/// false when it timed out.
pub(super) fn lock(
    conn: &mut MysqlConnection,
    server_name: &str,
    timeout: Option<Duration>,
) -> QueryResult<bool> {
    let seconds = timeout.map_or(0.0, |t| t.min(LONGEST_WAIT).as_secs_f64());
    let got: Option<i32> = diesel::select(
        sql::<Nullable<diesel::sql_types::Integer>>("GET_LOCK(")
            .bind::<Text, _>(server_name)
            .sql(", ")
            .bind::<Double, _>(seconds)
            .sql(")"),
    )
    .get_result(conn)?;
    Ok(got == Some(1))
}

/// Releases it; false if this session did not hold it.
pub(super) fn unlock(conn: &mut MysqlConnection, server_name: &str) -> QueryResult<bool> {
    let released: Option<i32> = diesel::select(
        sql::<Nullable<diesel::sql_types::Integer>>("RELEASE_LOCK(")
            .bind::<Text, _>(server_name)
            .sql(")"),
    )
    .get_result(conn)?;
    Ok(released == Some(1))
}

/// Whether this session holds it.
pub(super) fn is_held(conn: &mut MysqlConnection, server_name: &str) -> QueryResult<bool> {
    let held: Option<i32> = diesel::select(
        sql::<Nullable<diesel::sql_types::Integer>>("IS_USED_LOCK(")
            .bind::<Text, _>(server_name)
            .sql(") = CONNECTION_ID()"),
    )
    .get_result(conn)?;
    Ok(held == Some(1))
}
