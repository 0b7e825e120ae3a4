//! The SQL that installs change capture on a table: triggers that report every
//! committed insert, update and delete of a row to other larder processes.
//! Every cached table needs it in one of the application's migrations
//! (`larder migrate generate NAME --capture TABLE` writes one); larder's own
//! migrations create only the change log the SQLite and MySQL triggers write.

use diesel::{QueryResult, RunQueryDsl};

use crate::backend::Connection;
use crate::dialect;
use crate::error::{Error, Result};
use crate::url::Backend;

/// Statements that install (`up`) and remove (`down`) change capture on one
/// table, for one backend; put them in a migration of the table.
///
/// ```
/// use larder::{capture_sql, Backend};
///
/// let sql = capture_sql(Backend::Sqlite, "tags")?;
/// assert!(sql.up.contains("CREATE TRIGGER larder_capture_tags_insert"));
/// assert!(sql.down.contains("DROP TRIGGER IF EXISTS larder_capture_tags_insert"));
/// # Ok::<(), larder::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSql {
    /// Creates the triggers (and, on PostgreSQL, their function).
    pub up: String,
    /// Drops what `up` created.
    pub down: String,
}

/// The change-capture triggers for `table`, whose primary key is a 64-bit
/// integer column named `id` (as [`entity!`](crate::entity) requires).
///
/// PostgreSQL triggers send `pg_notify` (delivered only if the transaction
/// commits; a `TRUNCATE` is reported too); SQLite and MySQL triggers append to
/// the `larder_changes` table, which larder's own migrations create, so run
/// [`Store::migrate`](crate::Store::migrate) before the application's
/// migrations. MySQL fires no trigger for rows removed by an `ON DELETE
/// CASCADE` foreign key: declare such tables [`Entity::DELETED_WITH`](crate::Entity::DELETED_WITH)
/// their parent, as with in-process deletes.
///
/// # Errors
///
/// [`Error::InvalidConfig`] when `table` is not a plain SQL identifier
/// (letters, digits and `_`, not starting with a digit, at most 40 bytes;
/// at most 39 on MySQL, whose trigger names take 64), or is one of larder's
/// own tables (`larder_changes`, `larder_lock_tokens`,
/// `larder_migration_attempts`, in any ASCII case).
pub fn capture_sql(backend: Backend, table: &str) -> Result<CaptureSql> {
    capture_sql_with_keys(backend, table, &[])
}

/// As [`capture_sql`], and each change also reports the values the columns
/// `keys` had before it and have after it, so that other processes retire
/// only the [`Read::eq`](crate::Read::eq) lists of those values (see
/// [`Entity::KEY_COLUMNS`](crate::Entity::KEY_COLUMNS)). The columns must be
/// integers. On SQLite and MySQL the values go into the change log's
/// `key_values` column, which larder's migrations add (run
/// [`Store::migrate`](crate::Store::migrate) first); on PostgreSQL into the
/// notification. Without them (triggers made by [`capture_sql`]), a change
/// retires every keyed list of its table.
///
/// ```
/// use larder::{capture_sql_with_keys, Backend};
///
/// let sql = capture_sql_with_keys(Backend::Postgres, "comments", &["post_id"])?;
/// assert!(sql.up.contains(r#"OLD."post_id""#)); // quoted: a key may be a reserved word
/// assert!(capture_sql_with_keys(Backend::Sqlite, "comments", &["post id"]).is_err());
/// # Ok::<(), larder::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::InvalidConfig`] when `table` or a key is not a plain SQL
/// identifier (letters, digits and `_`, not starting with a digit; a table
/// at most 40 bytes, 39 on MySQL, whose trigger names take 64; a key at most
/// 64, the longest column name any backend allows), or
/// `keys` names `id` or a column twice, or `table` is one of larder's own
/// (`larder_changes`, `larder_lock_tokens`, `larder_migration_attempts`);
/// names are compared in any ASCII case, as SQLite and MySQL read them.
pub fn capture_sql_with_keys(backend: Backend, table: &str, keys: &[&str]) -> Result<CaptureSql> {
    check_identifier(table)?;
    check_not_own(table)?;
    // MySQL refuses a longer trigger name, and commits each trigger it
    // created before the refusal: the table would be captured in part.
    let longest = table.len() + LONGEST_TRIGGER_NAME_ADDS;
    if backend == Backend::Mysql && longest > MYSQL_LONGEST_NAME {
        return Err(Error::InvalidConfig {
            reason: format!(
                "{table:?} is too long a table name to capture on MySQL: at most {} bytes \
                 (its trigger names, larder_capture_{table}_update_id, take {longest} of the 64 MySQL allows)",
                MYSQL_LONGEST_NAME - LONGEST_TRIGGER_NAME_ADDS
            ),
        });
    }
    for (n, key) in keys.iter().enumerate() {
        check_key_column(key)?;
        // SQLite and MySQL read column names in any case: `ID` is the id.
        if key.eq_ignore_ascii_case("id") || keys[..n].iter().any(|k| k.eq_ignore_ascii_case(key)) {
            return Err(Error::InvalidConfig {
                reason: format!("{key:?} cannot be a key column here (the id, or given twice)"),
            });
        }
    }
    let triggers = dialect::of(backend).capture(table, keys);
    Ok(CaptureSql {
        up: columns_check(backend, table, keys) + &triggers.up,
        down: triggers.down,
    })
}

/// A statement that fails unless `table` has an `id` column and the `keys`:
/// SQLite and PostgreSQL look for the columns a trigger reads only when it
/// fires, so without it a table lacking one took the triggers, and then every
/// write to it failed. MySQL refuses such a trigger when it is created.
fn columns_check(backend: Backend, table: &str, keys: &[&str]) -> String {
    if backend == Backend::Mysql {
        return String::new();
    }
    let dialect = dialect::of(backend);
    let on = dialect.quote(table);
    // Qualified: SQLite reads a lone double-quoted name that is no column as a string.
    let columns: Vec<String> = std::iter::once("id")
        .chain(keys.iter().copied())
        .map(|column| format!("{on}.{}", dialect.quote(column)))
        .collect();
    format!("SELECT {} FROM {on} WHERE 1 = 0;\n", columns.join(", "))
}

/// What larder's longest trigger name (MySQL's and SQLite's
/// `larder_capture_{table}_update_id`) adds to the table's name.
const LONGEST_TRIGGER_NAME_ADDS: usize = "larder_capture_".len() + "_update_id".len();

/// The longest name MySQL gives a trigger.
const MYSQL_LONGEST_NAME: usize = 64;

/// The tables larder's own migrations create. None is cached, and the
/// change log must not be captured: its trigger would write the table the
/// statement writes, which MySQL refuses (error 1442) for every captured
/// write, and elsewhere each change would be logged twice.
const OWN_TABLES: [&str; 3] = [
    "larder_changes",
    "larder_lock_tokens",
    "larder_migration_attempts",
];

/// In any case: SQLite reads table names so, and MySQL where
/// `lower_case_table_names` is set.
fn check_not_own(table: &str) -> Result<()> {
    if OWN_TABLES.iter().any(|own| own.eq_ignore_ascii_case(table)) {
        return Err(Error::InvalidConfig {
            reason: format!(
                "{table:?} is larder's own table: it holds no rows to cache and cannot be captured"
            ),
        });
    }
    Ok(())
}

/// Refuses a table or column name that is not a plain identifier: besides
/// the quoted identifiers, such names make up the triggers' own names and
/// travel in change payloads and key values that are split on spaces, `=` and `,`.
/// At most 40 bytes, so that the trigger names fit.
pub(crate) fn check_identifier(table: &str) -> Result<()> {
    if check_name(table).is_ok() && table.len() <= 40 {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            reason: format!(
                "{table:?} is not a table name or column name larder can use \
                 (letters, digits and _, not starting with a digit, at most 40 bytes){}",
                schema_hint(table)
            ),
        })
    }
}

/// For a name qualified by a schema (`blog.posts`): how to name the table.
fn schema_hint(name: &str) -> &'static str {
    if name.contains('.') {
        "; a table in another schema is named without it, with that schema on \
         the connection's search_path (PostgreSQL: `?options=-csearch_path%3Dblog`)"
    } else {
        ""
    }
}

/// Refuses a key column name that is not a plain identifier or is longer
/// than [`LONGEST_COLUMN_NAME`]. No trigger is named after a column, so the
/// table names' 40 bytes do not apply: they refused a column of 41 to 63
/// bytes that the derive and the key read before a write accept.
fn check_key_column(column: &str) -> Result<()> {
    check_name(column)?;
    if column.len() > LONGEST_COLUMN_NAME {
        return Err(Error::InvalidConfig {
            reason: format!(
                "{column:?} is too long a column name: at most {LONGEST_COLUMN_NAME} bytes"
            ),
        });
    }
    Ok(())
}

/// The longest column name of any backend: MySQL's 64 bytes (PostgreSQL's
/// 63, SQLite's without limit). It bounds what a change payload carries.
const LONGEST_COLUMN_NAME: usize = 64;

/// Refuses a table or column name that is not a plain identifier (letters,
/// digits and `_`, not starting with a digit), of any length: what SQL that
/// quotes it, such as a keyed write's key read, needs.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if starts_well && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            reason: format!(
                "{name:?} is not a table name or column name larder can use \
                 (letters, digits and _)"
            ),
        })
    }
}

#[derive(diesel::QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

/// Of `tables`, those that exist in the database but carry no larder capture
/// trigger: other processes' changes to them would go unnoticed.
pub(crate) fn uncaptured(
    conn: &mut Connection,
    tables: &[&'static str],
) -> QueryResult<Vec<&'static str>> {
    let dialect = dialect::of(conn.backend());
    let (existing, captured) = (dialect.tables(), dialect.captured_tables());
    let load = |conn: &mut Connection, sql: &str| -> QueryResult<Vec<String>> {
        let rows: Vec<Name> = crate::with_connection!(conn, |c| diesel::sql_query(sql).load(c))?;
        Ok(rows.into_iter().map(|row| row.name).collect())
    };
    let existing = load(conn, existing)?;
    let captured = load(conn, captured)?;
    Ok(tables
        .iter()
        .copied()
        .filter(|table| existing.iter().any(|e| e == table))
        .filter(|table| !captured.iter().any(|c| c == table))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_that_are_not_identifiers_are_refused() {
        for bad in [
            "",
            "1tags",
            "tags; DROP TABLE users",
            "ta-gs",
            "t\u{e4}gs",
            &"t".repeat(41),
        ] {
            for backend in [Backend::Sqlite, Backend::Postgres, Backend::Mysql] {
                assert!(
                    matches!(capture_sql(backend, bad), Err(Error::InvalidConfig { .. })),
                    "{bad:?} accepted"
                );
            }
        }
    }

    #[test]
    fn a_table_named_with_its_schema_is_told_to_use_the_search_path() {
        let err = capture_sql(Backend::Postgres, "blog.posts").unwrap_err();
        assert!(err.to_string().contains("search_path"), "{err}");
        let err = capture_sql(Backend::Postgres, "9posts").unwrap_err();
        assert!(!err.to_string().contains("search_path"), "{err}");
    }

    /// Captured, the change log made MySQL refuse every captured write
    /// (error 1442: its trigger writes the table the statement writes).
    #[test]
    fn larder_s_own_tables_are_refused() {
        for own in [
            "larder_changes",
            "larder_lock_tokens",
            "larder_migration_attempts",
        ] {
            for backend in [Backend::Sqlite, Backend::Postgres, Backend::Mysql] {
                let refused = capture_sql(backend, own);
                assert!(
                    matches!(&refused, Err(Error::InvalidConfig { reason }) if reason.contains("larder's own")),
                    "{own:?} accepted on {backend:?}: {refused:?}"
                );
            }
        }
    }

    #[test]
    fn key_names_that_are_not_identifiers_are_refused() {
        let long = "k".repeat(65);
        for bad in [
            &["post id"][..],
            &["id"],
            &["post_id", "post_id"],
            &["x'y"],
            &[long.as_str()],
        ] {
            for backend in [Backend::Sqlite, Backend::Postgres, Backend::Mysql] {
                assert!(
                    matches!(
                        capture_sql_with_keys(backend, "comments", bad),
                        Err(Error::InvalidConfig { .. })
                    ),
                    "{bad:?} accepted"
                );
            }
        }
    }

    #[test]
    fn every_trigger_created_is_dropped() {
        for backend in [Backend::Sqlite, Backend::Postgres, Backend::Mysql] {
            let sql = capture_sql(backend, "tags").unwrap();
            let created = sql.up.matches("CREATE TRIGGER").count();
            let dropped = sql.down.matches("DROP TRIGGER").count();
            assert!(created > 0);
            assert_eq!(created, dropped, "{backend:?}");
        }
    }
}
