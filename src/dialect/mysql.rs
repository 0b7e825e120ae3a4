//! MySQL's and MariaDB's SQL.

use std::time::Duration;

use super::{key_list, log_change, mentions, Dialect, Triggers, CHANGES};

pub(crate) struct Mysql;

/// The id the session's last insert generated (a trigger's inserts do not
/// change it: MySQL restores it after them).
pub const LAST_INSERT_ID: &str = "CAST(LAST_INSERT_ID() AS SIGNED)";

/// Whether reading `information_schema.innodb_trx` was refused (it needs the
/// PROCESS privilege).
pub(crate) fn is_access_denied(message: &str) -> bool {
    mentions(message, &["Access denied", "PROCESS privilege"])
}

/// The transactions that have written (any that holds a change-log id has:
/// the capture triggers run after the row's own write), and this session's
/// own, which shows whether InnoDB's list is fresh.
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
pub(crate) const OPEN_TRANSACTIONS: &str = "SELECT CAST(trx_id AS CHAR) AS trx, \
     CAST(trx_mysql_thread_id = CONNECTION_ID() AS SIGNED) AS mine \
     FROM information_schema.innodb_trx \
     WHERE trx_rows_modified > 0 OR trx_mysql_thread_id = CONNECTION_ID()";

/// Begins the transaction `OPEN_TRANSACTIONS` is read in: InnoDB serves the
/// list from a cache refreshed only after 100 ms without readers, and it is
/// recent enough only if it shows this transaction.
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
pub(crate) const SNAPSHOT: &str = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY";

impl Dialect for Mysql {
    fn session_setup(&self, _busy_timeout: Duration) -> String {
        "SET time_zone = '+00:00'".to_owned()
    }

    fn last_insert_id(&self) -> &'static str {
        LAST_INSERT_ID
    }

    fn quote(&self, name: &str) -> String {
        format!("`{name}`")
    }

    fn tables(&self) -> &'static str {
        "SELECT CAST(table_name AS CHAR) AS name FROM information_schema.tables \
         WHERE table_schema = DATABASE()"
    }

    fn captured_tables(&self) -> &'static str {
        "SELECT DISTINCT CAST(event_object_table AS CHAR) AS name FROM information_schema.triggers \
         WHERE trigger_schema = DATABASE() AND trigger_name LIKE 'larder\\_capture%'"
    }

    /// MySQL needs no database to connect to.
    fn admin_database(&self) -> &'static str {
        ""
    }

    fn database_named(&self) -> &'static str {
        "SELECT schema_name AS name FROM information_schema.schemata WHERE schema_name = "
    }

    /// One trigger per event, each appending to the change log; MySQL has no
    /// `UPDATE OF` or `WHEN`, so the trigger for a changed id filters in its
    /// body. MySQL fires no trigger for rows an `ON DELETE CASCADE` removes:
    /// their tables are declared `DELETED_WITH` the parent.
    fn capture(&self, table: &str, keys: &[&str]) -> Triggers {
        let inserted = key_list(self, &["NEW"], keys);
        let updated = key_list(self, &["OLD", "NEW"], keys);
        let deleted = key_list(self, &["OLD"], keys);
        let update_id = match &updated {
            None => format!(
                "INSERT INTO {CHANGES} (table_name, row_id, op) \
                 SELECT '{table}', NEW.id, 'U' FROM (SELECT 1) AS one WHERE NEW.id <> OLD.id"
            ),
            Some(keys) => format!(
                "INSERT INTO {CHANGES} (table_name, row_id, op, key_values) \
                 SELECT '{table}', NEW.id, 'U', {keys} FROM (SELECT 1) AS one WHERE NEW.id <> OLD.id"
            ),
        };
        let triggers = [
            ("insert", "INSERT", log_change(table, "NEW", "I", inserted)),
            ("update", "UPDATE", log_change(table, "OLD", "U", updated)),
            ("update_id", "UPDATE", update_id),
            ("delete", "DELETE", log_change(table, "OLD", "D", deleted)),
        ];
        let mut up = String::new();
        let mut down = String::new();
        let on = self.quote(table);
        for (suffix, event, body) in triggers {
            let name = format!("larder_capture_{table}_{suffix}");
            up.push_str(&format!(
                "CREATE TRIGGER {name} AFTER {event} ON {on} FOR EACH ROW {body};\n"
            ));
            down.push_str(&format!("DROP TRIGGER IF EXISTS {name};\n"));
        }
        Triggers { up, down }
    }

    fn as_text(&self, expr: &str) -> String {
        format!("CAST({expr} AS CHAR)")
    }

    /// MySQL's `||` is `OR` unless the session says otherwise.
    fn concat(&self, parts: &[String]) -> String {
        format!("CONCAT({})", parts.join(", "))
    }

    fn ago(&self, age: Duration) -> String {
        format!("NOW(6) - INTERVAL {} SECOND", age.as_secs())
    }

    /// Connection ids are not reused while the server runs, but start again
    /// from 1 after a restart: `started` is when the server started (its
    /// `Uptime` status, read from MariaDB's `information_schema`, else
    /// MySQL 8's `performance_schema`), or 0 where neither answers.
    fn session(&self) -> &'static [&'static str] {
        &[
            "SELECT CAST(CONNECTION_ID() AS SIGNED) AS id, \
             CAST(UNIX_TIMESTAMP() - VARIABLE_VALUE AS SIGNED) AS started \
             FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'UPTIME'",
            "SELECT CAST(CONNECTION_ID() AS SIGNED) AS id, \
             CAST(UNIX_TIMESTAMP() - VARIABLE_VALUE AS SIGNED) AS started \
             FROM performance_schema.global_status WHERE VARIABLE_NAME = 'Uptime'",
            "SELECT CAST(CONNECTION_ID() AS SIGNED) AS id, CAST(0 AS SIGNED) AS started",
        ]
    }

    /// The two starts, each read as the clock minus a whole number of
    /// seconds of uptime, differ by a second or so on one server. A start
    /// unknown (0) on either side cannot tell: the id alone decides, as
    /// before MySQL could say.
    fn same_server(&self, recorded: i64, now: i64) -> bool {
        recorded == 0 || now == 0 || (recorded - now).abs() <= 2
    }

    /// Fails with "Unknown thread id" once the session is gone.
    fn end_session(&self, id: i64, _started: i64) -> String {
        format!("KILL CONNECTION {id}")
    }

    fn end_idle_session(&self, id: i64, _started: i64) -> String {
        format!("KILL CONNECTION {id}")
    }

    fn session_runs(&self, id: i64, _started: i64) -> String {
        format!(
            "SELECT COUNT(*) AS count FROM information_schema.PROCESSLIST \
             WHERE ID = {id} AND COMMAND <> 'Sleep'"
        )
    }

    /// MariaDB's `max_statement_time` (seconds), else MySQL's
    /// `max_execution_time` (milliseconds, reads only).
    fn watcher_statement_limits(&self, limit: Duration) -> Vec<String> {
        vec![
            format!("SET SESSION max_statement_time = {}", limit.as_secs()),
            format!("SET SESSION max_execution_time = {}", limit.as_millis()),
        ]
    }

    fn watcher_lock_wait(&self) -> Option<&'static str> {
        Some("SET SESSION innodb_lock_wait_timeout = 1")
    }

    /// 1205, which rolls back the statement, not the transaction.
    fn is_busy(&self, message: &str) -> bool {
        message.contains("Lock wait timeout exceeded")
    }

    /// 2013, 2006, MySQL 8's 4031 and MariaDB's 1927. 2006 reads "MySQL server has gone
    /// away" from libmysqlclient but "Server has gone away" from MariaDB's
    /// Connector/C, which larder links: the first statement on a connection
    /// whose socket was reset or that the server closed after its
    /// `wait_timeout`, and every statement after a 2013.
    fn is_connection_lost(&self, message: &str) -> bool {
        mentions(
            message,
            &[
                "Lost connection to",
                "server has gone away",
                "Server has gone away",
                // MySQL 8's 4031, a session closed after its `wait_timeout`.
                "disconnected by the server because of inactivity",
                "Connection was killed",
            ],
        )
    }

    /// 1213 outside prepared statements, which diesel does not map, and
    /// MySQL 8's 3058 from `GET_LOCK` ("… trying to get user-level lock").
    fn is_serialization_failure(&self, message: &str) -> bool {
        message.contains("Deadlock found when trying to get ")
    }

    /// Strict mode's refusals: 1406 (too long), 1264 (out of range), 1265
    /// (truncated), 1366 and 1292 (`Incorrect string value: '\xF0…' for
    /// column`, an incorrect integer or date).
    fn is_invalid_value(&self, message: &str) -> bool {
        let incorrect = message.starts_with("Incorrect ") && message.contains(" value: ");
        incorrect
            || mentions(
                message,
                &[
                    "Data too long for column",
                    "Out of range value for column",
                    "Data truncated for column",
                ],
            )
    }

    /// MariaDB's check violation (4025), which diesel does not map, and
    /// MySQL's (3819) outside a prepared statement.
    fn is_check_violation(&self, message: &str) -> bool {
        let mariadb = message.starts_with("CONSTRAINT `") && message.contains("` failed for ");
        let mysql =
            message.starts_with("Check constraint '") && message.ends_with("' is violated.");
        mariadb || mysql
    }

    /// MySQL and MariaDB name a violated constraint only in the message: the
    /// key (`for key 'users.email'`, MySQL 8 prefixing the table) or the
    /// constraint (``CONSTRAINT `posts_author_fk` `` for foreign keys and
    /// MariaDB's checks, `Check constraint 'posts_version_positive'` for MySQL's).
    fn constraint_in_message(&self, message: &str, table: Option<&str>) -> Option<String> {
        let name = if let Some((_, key)) = message.rsplit_once(" for key '") {
            let key = key.strip_suffix('\'')?;
            table
                .and_then(|table| key.strip_prefix(table)?.strip_prefix('.'))
                .unwrap_or(key)
        } else if let Some((_, rest)) = message.split_once("CONSTRAINT `") {
            rest.split_once('`')?.0
        } else if let Some((_, rest)) = message.split_once("Check constraint '") {
            rest.split_once('\'')?.0
        } else {
            return None;
        };
        Some(name.to_owned()).filter(|name| !name.is_empty())
    }

    fn is_missing_table(&self, message: &str) -> bool {
        message.contains("doesn't exist")
    }
}

/// larder's own COMMIT: a plain one chains a new transaction
/// (`completion_type = CHAIN`) or ends the session (`RELEASE`) as the
/// session's `completion_type` says, and the application's SQL can set it
/// where no watch sees it (a stored function, a trigger).
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
pub(crate) const COMMIT: &str = "COMMIT AND NO CHAIN NO RELEASE";

/// larder's own ROLLBACK, for the same reason as [`COMMIT`].
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
pub(crate) const ROLLBACK: &str = "ROLLBACK AND NO CHAIN NO RELEASE";
