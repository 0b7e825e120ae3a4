//! Fencing tokens: a counter per lock key in `larder_lock_tokens` (created
//! by larder's migrations), incremented and read in one statement on the
//! lock's own session right after each acquisition. The holder of the lock
//! is the only one incrementing its key, and the row outlives every
//! process, so each acquisition of a name gets a token larger than every
//! earlier one, across processes, hosts and restarts. Two names sharing a
//! key share a counter: their tokens still only grow.

use diesel::sql_types::BigInt;
use diesel::{QueryResult, QueryableByName, RunQueryDsl};

use crate::pool::Connection;

/// The table, as errors name it.
pub(super) const TABLE: &str = "larder_lock_tokens";

#[derive(QueryableByName)]
struct Token {
    #[diesel(sql_type = BigInt)]
    token: i64,
}

/// The one row of an upsert's `RETURNING`, read to its end: SQLite
/// checkpoints its WAL only after a write stepped to completion.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn only_token(rows: Vec<Token>) -> QueryResult<i64> {
    rows.into_iter()
        .next()
        .map(|row| row.token)
        .ok_or(diesel::result::Error::NotFound)
}

/// The next token of `key`: 1 the first time.
pub(super) fn next(conn: &mut Connection, key: i64) -> QueryResult<i64> {
    crate::match_backend!(conn, |c| {
        Sqlite => diesel::sql_query(
            "INSERT INTO larder_lock_tokens (lock_key, token) VALUES (?, 1) \
             ON CONFLICT (lock_key) DO UPDATE SET token = token + 1 RETURNING token",
        )
        .bind::<BigInt, _>(key)
        .get_results::<Token>(c)
        .and_then(only_token),
        Postgres => diesel::sql_query(
            "INSERT INTO larder_lock_tokens (lock_key, token) VALUES ($1, 1) \
             ON CONFLICT (lock_key) DO UPDATE SET token = larder_lock_tokens.token + 1 \
             RETURNING token",
        )
        .bind::<BigInt, _>(key)
        .get_results::<Token>(c)
        .and_then(only_token),
        // No RETURNING: LAST_INSERT_ID(expr) hands the new value to this
        // session's next LAST_INSERT_ID(), whichever branch ran.
        Mysql => {
            diesel::sql_query(
                "INSERT INTO larder_lock_tokens (lock_key, token) VALUES (?, LAST_INSERT_ID(1)) \
                 ON DUPLICATE KEY UPDATE token = LAST_INSERT_ID(token + 1)",
            )
            .bind::<BigInt, _>(key)
            .execute(c)?;
            diesel::sql_query("SELECT CAST(LAST_INSERT_ID() AS SIGNED) AS token")
                .get_result::<Token>(c)
                .map(|row| row.token)
        },
    })
}
