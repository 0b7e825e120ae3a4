//! PostgreSQL: session-level advisory locks keyed by the name's 64-bit key.
//! The server releases them when the session ends (a killed process's socket
//! closes); its deadlock detector covers them (SQLSTATE `40P01` after
//! `deadlock_timeout`, 1 s by default); `lock_timeout` bounds the wait
//! (`55P03`).

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::dsl::sql;
use diesel::sql_types::{BigInt, Bool};
use diesel::{PgConnection, QueryResult, RunQueryDsl};

/// The session's wait bound and a name operators see in `pg_stat_activity`.
pub(super) fn setup(conn: &mut PgConnection, timeout: Duration) -> QueryResult<()> {
    conn.batch_execute(&format!(
        "{}; SET application_name = 'larder lock'",
        set_lock_timeout(timeout)
    ))
}

fn set_lock_timeout(timeout: Duration) -> String {
    // 0 would mean "wait forever" to PostgreSQL: at least 1 ms.
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128);
    format!("SET lock_timeout = {ms}")
}

/// Waits for the lock up to the session's `lock_timeout`.
pub(super) fn lock(conn: &mut PgConnection, key: i64) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(key)
        .execute(conn)
        .map(drop)
}

/// Waits for the lock up to `wait`, shorter than the session's
/// `lock_timeout` (`timeout`), which is then restored. A restore that
/// fails leaves the session's later waits shorter, never a lock held
/// unknown to its guard.
pub(super) fn lock_within(
    conn: &mut PgConnection,
    key: i64,
    wait: Duration,
    timeout: Duration,
) -> QueryResult<()> {
    conn.batch_execute(&set_lock_timeout(wait))?;
    let locked = lock(conn, key);
    let _ = conn.batch_execute(&set_lock_timeout(timeout));
    locked
}

/// Takes the lock if it is free.
pub(super) fn try_lock(conn: &mut PgConnection, key: i64) -> QueryResult<bool> {
    diesel::select(
        sql::<Bool>("pg_try_advisory_lock(")
            .bind::<BigInt, _>(key)
            .sql(")"),
    )
    .get_result(conn)
}

/// Releases it; false if this session did not hold it.
pub(super) fn unlock(conn: &mut PgConnection, key: i64) -> QueryResult<bool> {
    diesel::select(
        sql::<Bool>("pg_advisory_unlock(")
            .bind::<BigInt, _>(key)
            .sql(")"),
    )
    .get_result(conn)
}

/// Whether this session holds the lock. A bigint key is stored as two
/// 32-bit halves, `classid` (high) and `objid` (low), with `objsubid = 1`.
pub(super) fn is_held(conn: &mut PgConnection, key: i64) -> QueryResult<bool> {
    let query = sql::<Bool>(
        "EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND pid = pg_backend_pid() AND objsubid = 1 AND classid::bigint = ((",
    )
    .bind::<BigInt, _>(key)
    .sql(") >> 32) & 4294967295 AND objid::bigint = (")
    .bind::<BigInt, _>(key)
    .sql(") & 4294967295)");
    diesel::select(query).get_result(conn)
}
