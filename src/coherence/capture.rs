//! The SQL that installs change capture on a table: triggers that report every
//! committed insert, update and delete of a row to other larder processes.
//! Every cached table needs it in one of the application's migrations
//! (`larder migrate generate NAME --capture TABLE` writes one); larder's own
//! migrations create only the change log the SQLite and MySQL triggers write.

use diesel::{QueryResult, RunQueryDsl};

use crate::backend::Connection;
use crate::error::{Error, Result};
use crate::url::Backend;

/// The channel PostgreSQL triggers notify and every larder listener listens on.
pub(crate) const CHANNEL: &str = "larder_changes";

/// The change log table SQLite and MySQL triggers write to.
pub(crate) const CHANGE_LOG: &str = "larder_changes";

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
/// (letters, digits and `_`, not starting with a digit, at most 40 bytes).
pub fn capture_sql(backend: Backend, table: &str) -> Result<CaptureSql> {
    check_identifier(table)?;
    Ok(match backend {
        Backend::Postgres => postgres(table),
        Backend::Sqlite | Backend::Mysql => logged(backend, table),
    })
}

fn check_identifier(table: &str) -> Result<()> {
    let mut chars = table.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if starts_well && rest_ok && table.len() <= 40 {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            reason: format!(
                "{table:?} is not a table name change capture can use \
                 (letters, digits and _, at most 40 bytes)"
            ),
        })
    }
}

fn postgres(table: &str) -> CaptureSql {
    let up = format!(
        "CREATE FUNCTION larder_capture_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('{CHANNEL}', '{table} I ' || NEW.id);
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM pg_notify('{CHANNEL}', '{table} U ' || OLD.id);
        IF NEW.id <> OLD.id THEN
            PERFORM pg_notify('{CHANNEL}', '{table} U ' || NEW.id);
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('{CHANNEL}', '{table} D ' || OLD.id);
    ELSE
        PERFORM pg_notify('{CHANNEL}', '{table} T 0');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER larder_capture_{table} AFTER INSERT OR UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION larder_capture_{table}();
CREATE TRIGGER larder_capture_{table}_truncate AFTER TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION larder_capture_{table}();
"
    );
    let down = format!(
        "DROP TRIGGER IF EXISTS larder_capture_{table}_truncate ON {table};
DROP TRIGGER IF EXISTS larder_capture_{table} ON {table};
DROP FUNCTION IF EXISTS larder_capture_{table}();
"
    );
    CaptureSql { up, down }
}

/// SQLite and MySQL: one trigger per event, each appending to the change log.
/// A second update trigger records the new id of a row whose id changed; on
/// SQLite it fires only for updates that set `id` at all.
fn logged(backend: Backend, table: &str) -> CaptureSql {
    let log = |row: &str, op: &str| {
        format!(
            "INSERT INTO {CHANGE_LOG} (table_name, row_id, op) VALUES ('{table}', {row}.id, '{op}')"
        )
    };
    let (update_id_event, update_id_body) = match backend {
        Backend::Mysql => (
            "UPDATE".to_owned(),
            format!(
                "INSERT INTO {CHANGE_LOG} (table_name, row_id, op) \
                 SELECT '{table}', NEW.id, 'U' FROM (SELECT 1) AS one WHERE NEW.id <> OLD.id"
            ),
        ),
        _ => ("UPDATE OF id".to_owned(), log("NEW", "U")),
    };
    let triggers = [
        ("insert", "INSERT".to_owned(), log("NEW", "I"), ""),
        ("update", "UPDATE".to_owned(), log("OLD", "U"), ""),
        (
            "update_id",
            update_id_event,
            update_id_body,
            " WHEN NEW.id <> OLD.id",
        ),
        ("delete", "DELETE".to_owned(), log("OLD", "D"), ""),
    ];
    let mut up = String::new();
    let mut down = String::new();
    for (suffix, event, body, when) in triggers {
        let name = format!("larder_capture_{table}_{suffix}");
        up.push_str(&match backend {
            Backend::Mysql => {
                format!("CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW {body};\n")
            }
            _ => format!(
                "CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW{when} BEGIN {body}; END;\n"
            ),
        });
        down.push_str(&format!("DROP TRIGGER IF EXISTS {name};\n"));
    }
    CaptureSql { up, down }
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
    let (existing, captured) = catalog_queries(conn.backend());
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

/// SQL listing the tables, and the tables with a larder capture trigger.
fn catalog_queries(backend: Backend) -> (&'static str, &'static str) {
    match backend {
        Backend::Sqlite => (
            "SELECT name FROM sqlite_master WHERE type = 'table'",
            "SELECT DISTINCT tbl_name AS name FROM sqlite_master \
             WHERE type = 'trigger' AND name LIKE 'larder\\_capture\\_%' ESCAPE '\\'",
        ),
        Backend::Postgres => (
            "SELECT table_name::text AS name FROM information_schema.tables \
             WHERE table_schema = current_schema()",
            "SELECT DISTINCT event_object_table::text AS name FROM information_schema.triggers \
             WHERE event_object_schema = current_schema() AND trigger_name LIKE 'larder\\_capture%'",
        ),
        Backend::Mysql => (
            "SELECT CAST(table_name AS CHAR) AS name FROM information_schema.tables \
             WHERE table_schema = DATABASE()",
            "SELECT DISTINCT CAST(event_object_table AS CHAR) AS name FROM information_schema.triggers \
             WHERE trigger_schema = DATABASE() AND trigger_name LIKE 'larder\\_capture%'",
        ),
    }
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
