//! The two position queries, on a pooled (diesel) connection.

use diesel::sql_types::{Nullable, Text};
#[cfg(feature = "postgres")]
use diesel::RunQueryDsl;
use diesel::{QueryResult, QueryableByName};

use crate::backend::Connection;
use crate::dialect::postgres::PRIMARY_POSITION;
#[cfg(feature = "postgres")]
use crate::dialect::postgres::{begin_replica_load, END_REPLICA_LOAD, REPLAY_POSITION};
use crate::requirement::{parse_lsn, Lsn};
use std::time::Duration;

#[derive(QueryableByName)]
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
struct Position {
    #[diesel(sql_type = Nullable<Text>)]
    lsn: Option<String>,
}

/// The primary's current WAL position, read on `conn`.
pub(crate) fn primary(conn: &mut Connection) -> QueryResult<Lsn> {
    let text = query(conn, PRIMARY_POSITION)?;
    text.as_deref().and_then(parse_lsn).ok_or_else(unreadable)
}

/// Opens a read-only transaction on `conn` and reads, in it, how far the
/// replica behind it has replayed; `None` when it is not replaying (not a
/// replica). The load then runs in the same transaction (READ COMMITTED,
/// whatever the sessions' default: each of its statements takes its
/// snapshot after the check answered)
/// and ends it with [`end_load`]; any other path with [`end_transaction`].
/// Its statements wait `lock_wait` at most for a lock.
pub(crate) fn replayed_in_transaction(
    conn: &mut Connection,
    lock_wait: Duration,
) -> QueryResult<Option<Lsn>> {
    match conn {
        #[cfg(feature = "postgres")]
        Connection::Postgres(pg) => {
            use diesel::connection::AnsiTransactionManager;
            AnsiTransactionManager::begin_transaction_sql(pg, &begin_replica_load(lock_wait))?;
            Ok(query(conn, REPLAY_POSITION)?.as_deref().and_then(parse_lsn))
        }
        #[allow(unreachable_patterns)] // in a build with PostgreSQL alone
        _ => {
            let _ = lock_wait;
            Err(not_postgres())
        }
    }
}

/// Ends a load's transaction in one round trip, failing when the server is
/// no longer in recovery (promoted during the load: what it read may be the
/// promoted server's own). The transaction is ended either way.
pub(crate) fn end_load(conn: &mut Connection) -> QueryResult<()> {
    let ended = match conn {
        #[cfg(feature = "postgres")]
        Connection::Postgres(pg) => {
            diesel::connection::SimpleConnection::batch_execute(pg, END_REPLICA_LOAD)
        }
        #[allow(unreachable_patterns)] // in a build with PostgreSQL alone
        _ => Err(not_postgres()),
    };
    if ended.is_err() {
        // The batch stopped before its ROLLBACK.
        let _ = end_transaction(conn);
    }
    ended
}

/// Ends the transaction of [`replayed_in_transaction`] (a ROLLBACK: it only
/// read), and any savepoint a caller's query left open in it.
pub(crate) fn end_transaction(conn: &mut Connection) -> QueryResult<()> {
    while conn.transaction_depth() > 0 {
        conn.rollback()?;
    }
    Ok(())
}

/// The primary's current WAL position, read on the watcher's polled
/// listener connection.
#[cfg(feature = "postgres")]
pub(crate) fn primary_pg(pg: &mut diesel::PgConnection) -> QueryResult<Lsn> {
    let text = diesel::sql_query(PRIMARY_POSITION)
        .get_result::<Position>(pg)?
        .lsn;
    text.as_deref().and_then(parse_lsn).ok_or_else(unreadable)
}

fn query(conn: &mut Connection, sql: &'static str) -> QueryResult<Option<String>> {
    match conn {
        #[cfg(feature = "postgres")]
        Connection::Postgres(pg) => Ok(diesel::sql_query(sql).get_result::<Position>(pg)?.lsn),
        #[allow(unreachable_patterns)] // in a build with PostgreSQL alone
        _ => {
            let _ = sql;
            Err(not_postgres())
        }
    }
}

fn unreadable() -> diesel::result::Error {
    diesel::result::Error::DeserializationError("unreadable WAL position".into())
}

#[allow(dead_code)] // in a build with PostgreSQL alone
fn not_postgres() -> diesel::result::Error {
    diesel::result::Error::QueryBuilderError("WAL positions exist on PostgreSQL only".into())
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use diesel::connection::SimpleConnection;
    use diesel::Connection as _;

    use super::*;

    fn lsn_of(pg: &mut diesel::PgConnection, sql: &'static str) -> Lsn {
        let text = diesel::sql_query(sql)
            .get_result::<Position>(pg)
            .unwrap()
            .lsn;
        text.as_deref().and_then(parse_lsn).unwrap()
    }

    /// An asynchronous commit (`synchronous_commit = off`, which any session
    /// may set) returns before its record is written. The position read after
    /// it must still lie at or past that record: a replica that has replayed
    /// up to a position short of it would serve the row as it was before.
    #[test]
    fn the_position_after_an_asynchronous_commit_lies_past_its_record() {
        let Ok(url) = std::env::var("LARDER_TEST_POSTGRES_URL") else {
            return;
        };
        let mut pg = diesel::PgConnection::establish(&url).unwrap();
        pg.batch_execute("SET synchronous_commit = off; CREATE TEMP TABLE probe (n int)")
            .unwrap();
        for _ in 0..50 {
            pg.batch_execute("INSERT INTO probe VALUES (1)").unwrap();
            // At or past the end of the commit record just inserted.
            let committed = lsn_of(&mut pg, "SELECT pg_current_wal_insert_lsn()::text AS lsn");
            let position = primary_pg(&mut pg).unwrap();
            assert!(position >= committed, "{position:?} short of {committed:?}");
        }
    }
}
