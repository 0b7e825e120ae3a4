//! The key values a row has before a write changes it: what an update or a
//! delete reads first, locked, so that the commit retires the lists the row
//! leaves as well as those it joins.

use diesel::sql_types::{Nullable, Text};
use diesel::{QueryResult, QueryableByName, RunQueryDsl};

use crate::coherence::capture::check_name;
use crate::dialect;
use crate::entity::Entity;
use crate::error::Result;
use crate::keys;
use crate::pool::Connection;
use crate::tx::Tx;

/// A row's values of its entity's key columns (`None`: NULL).
pub(super) type KeyValuesOf = Vec<(&'static str, Option<i64>)>;

#[derive(QueryableByName)]
struct KeyValues {
    #[diesel(sql_type = Nullable<Text>)]
    larder_keys: Option<String>,
}

/// Row `id`'s values of `E`'s key columns, read in `tx` with the row locked
/// until it ends (where the backend has row locks; SQLite's write
/// transaction excludes every other writer already). Without the lock,
/// another transaction could move the row to a third value between this read
/// and the write, and the lists of that value would never be retired.
/// Empty without key columns.
///
/// `None` when there is no such row: then nothing is locked (PostgreSQL
/// locks only rows it found), and another session may insert the row and
/// commit before the write runs, which then changes a row whose values
/// before it are unknown. A write that found a row after all must retire
/// every list of the table. `None` too when the row's values do not read
/// as integers: unknown as well.
///
/// # Errors
///
/// [`Error::InvalidConfig`](crate::Error::InvalidConfig) when a key column is not a plain identifier, or
/// the read's database error.
pub(super) fn key_values<E: Entity>(tx: &Tx<'_>, id: i64) -> Result<Option<KeyValuesOf>> {
    if E::KEY_COLUMNS.is_empty() {
        return Ok(Some(Vec::new()));
    }
    check_name(E::TABLE)?;
    for column in E::KEY_COLUMNS {
        check_name(column)?;
    }
    let text = tx.run(E::TABLE, Some(id), |conn| read::<E>(conn, id))?;
    // Values that do not read as integers (SQLite keeps a 7.5 another
    // program put in a BIGINT column, which diesel loads as 7) are unknown,
    // as the watcher takes them: the write retires every list of the table.
    let Some(parsed) = text.as_deref().and_then(keys::parse) else {
        return Ok(None);
    };
    // Back to the entity's own names, which live as long as the pending write.
    Ok(Some(
        parsed
            .into_iter()
            .filter_map(|(column, value)| {
                let column = E::KEY_COLUMNS.iter().find(|c| **c == column)?;
                Some((*column, value))
            })
            .collect(),
    ))
}

fn read<E: Entity>(conn: &mut Connection, id: i64) -> QueryResult<Option<String>> {
    let sql = dialect::read_keys(dialect::of(conn.backend()), E::TABLE, E::KEY_COLUMNS, id);
    let rows: Vec<KeyValues> = crate::with_connection!(conn, |c| diesel::sql_query(&sql).load(c))?;
    Ok(rows
        .into_iter()
        .next()
        .map(|row| row.larder_keys.unwrap_or_default()))
}
