//! The SQL that differs between backends, one module per backend (as diesel
//! keeps `pg/`, `mysql/` and `sqlite/`): session settings, identifiers and
//! catalogs, the change-capture triggers and change-log arithmetic, the
//! watcher's timeouts, and the error messages whose text is the only signal.
//! Everything here is text: no connection, so every dialect is compiled
//! whichever backends a build includes, and the code that runs the SQL stays
//! with the job it does.

pub(crate) mod mysql;
pub(crate) mod postgres;
pub(crate) mod sqlite;

use std::time::Duration;

/// The database engine a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// An embedded SQLite file: `sqlite://path`, `sqlite:path` or a bare path.
    Sqlite,
    /// A PostgreSQL server: `postgres://…` or `postgresql://…` (cargo feature `postgres`).
    Postgres,
    /// A MySQL or MariaDB server: `mysql://…` (cargo feature `mysql`).
    Mysql,
}

impl Backend {
    /// The backend's short name, as used for its migrations folder.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
        }
    }

    /// Whether this build of larder includes the backend.
    pub fn is_built(self) -> bool {
        match self {
            Backend::Sqlite => cfg!(feature = "sqlite"),
            Backend::Postgres => cfg!(feature = "postgres"),
            Backend::Mysql => cfg!(feature = "mysql"),
        }
    }
}

/// The channel PostgreSQL triggers notify and the name of the change log the
/// SQLite and MySQL triggers write: one name for the one stream of changes.
pub(crate) const CHANGES: &str = "larder_changes";

/// The operation of the change that announces migrations ran (see
/// [`announce_migrated`]): every watcher empties its caches on it. Older
/// watchers take an operation they do not know for a truncate of its table,
/// `*`, which no cache holds.
pub(crate) const MIGRATED_OP: &str = "F";

/// The statement announcing to every watcher of the database that
/// migrations ran: a notification on PostgreSQL, a change-log row elsewhere.
pub(crate) fn announce_migrated(backend: Backend) -> String {
    match backend {
        Backend::Postgres => format!("SELECT pg_notify('{CHANGES}', '* {MIGRATED_OP} 0')"),
        _ => format!(
            "INSERT INTO {CHANGES} (table_name, row_id, op) VALUES ('*', 0, '{MIGRATED_OP}')"
        ),
    }
}

/// What the capture triggers of a table are: statements that install them
/// (`up`) and remove them (`down`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Triggers {
    pub(crate) up: String,
    pub(crate) down: String,
}

/// What larder needs each backend to say in its own SQL.
pub(crate) trait Dialect: Sync {
    /// Settings run on every new pooled connection.
    fn session_setup(&self, busy_timeout: Duration) -> String;

    /// An SQL expression: the id the session's last insert generated.
    fn last_insert_id(&self) -> &'static str;

    /// `name` quoted as an identifier (`name` holds no quote character: callers
    /// check identifiers before they get here).
    fn quote(&self, name: &str) -> String;

    /// A query with one `name` text column: the tables and views of the current database.
    fn tables(&self) -> &'static str;

    /// A query with one `name` text column: the tables carrying a larder
    /// capture trigger.
    fn captured_tables(&self) -> &'static str;

    /// On a server: the maintenance database to connect to for creating or
    /// dropping one, and a query with one `name` text column finding a
    /// database by the name bound after it.
    fn admin_database(&self) -> &'static str;

    /// See [`admin_database`](Dialect::admin_database).
    fn database_named(&self) -> &'static str;

    /// The triggers that report `table`'s committed changes to the watchers,
    /// with the values of `keys` before and after each change (`table` and
    /// `keys` are checked plain identifiers, quoted where the SQL names them:
    /// one may still be a reserved word, as `order`).
    fn capture(&self, table: &str, keys: &[&str]) -> Triggers;

    /// `expr` as text (an integer's decimal digits).
    fn as_text(&self, expr: &str) -> String {
        format!("CAST({expr} AS TEXT)")
    }

    /// The text expressions `parts` joined into one.
    fn concat(&self, parts: &[String]) -> String {
        parts.join(" || ")
    }

    /// What a `SELECT` ends with to lock the rows it reads until the
    /// transaction ends: nothing where the write transaction excludes every
    /// other writer already (SQLite).
    fn lock_rows(&self) -> &'static str {
        " FOR UPDATE"
    }

    /// Queries, tried in order until one answers a row, with the `BigInt`
    /// columns `id` and `started` naming this connection's server session
    /// among every session the server has had (PostgreSQL reuses process
    /// ids: their start goes with them; MySQL reuses connection ids after a
    /// restart: the server's start goes with them); none without a server
    /// (SQLite).
    fn session(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether a session recorded as `recorded` (see [`session`](Dialect::session))
    /// may still be alive on the server whose own answer is `now`: false
    /// when the server restarted since. Where `started` is the session's own
    /// start (PostgreSQL), the statements that end it check it themselves.
    fn same_server(&self, recorded: i64, now: i64) -> bool {
        let _ = (recorded, now);
        true
    }

    /// A statement ending session `id` (started at `started`) if it still
    /// runs a statement; a session of the same user needs no privilege. It
    /// may fail when the session is gone already.
    fn end_session(&self, id: i64, started: i64) -> String {
        let _ = (id, started);
        String::new()
    }

    /// A statement ending session `id` (started at `started`) whatever it
    /// does, idle included: a lock session its holder lost, whose locks the
    /// server keeps until it ends. It may fail when the session is gone.
    fn end_idle_session(&self, id: i64, started: i64) -> String {
        let _ = (id, started);
        String::new()
    }

    /// A query with one `BigInt` column `count`: 1 while session `id`
    /// (started at `started`) runs a statement, else 0.
    fn session_runs(&self, id: i64, started: i64) -> String {
        let _ = (id, started);
        "SELECT 0 AS count".to_owned()
    }

    /// An SQL expression of the database's clock: `age` ago.
    fn ago(&self, age: Duration) -> String;

    /// The URL parameters the watcher's connection adds, unless the URL sets them.
    fn watcher_url_params(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// Statements limiting how long one statement of the watcher may run:
    /// the first that the server accepts is used.
    fn watcher_statement_limits(&self, limit: Duration) -> Vec<String> {
        let _ = limit;
        Vec::new()
    }

    /// A statement making the watcher's lock waits short, so pruning gives
    /// way to a writer.
    fn watcher_lock_wait(&self) -> Option<&'static str> {
        None
    }

    /// Another writer held a lock past the wait allowed.
    fn is_busy(&self, message: &str) -> bool;

    /// The server closed the connection.
    fn is_connection_lost(&self, message: &str) -> bool {
        let _ = message;
        false
    }

    /// A deadlock or serialization failure the database did not report as one.
    fn is_serialization_failure(&self, message: &str) -> bool {
        let _ = message;
        false
    }

    /// The statement was refused because an earlier one in its transaction failed.
    fn is_transaction_aborted(&self, message: &str) -> bool {
        let _ = message;
        false
    }

    /// A value its column cannot hold (bad input, not a failure).
    fn is_invalid_value(&self, message: &str) -> bool {
        let _ = message;
        false
    }

    /// A check constraint's violation the driver did not classify.
    fn is_check_violation(&self, message: &str) -> bool {
        let _ = message;
        false
    }

    /// The name of the constraint a message says was violated, when the
    /// driver reports it only in the message.
    fn constraint_in_message(&self, message: &str, table: Option<&str>) -> Option<String> {
        let _ = (message, table);
        None
    }

    /// The table a query named does not exist.
    fn is_missing_table(&self, message: &str) -> bool;
}

/// The dialect of `backend`.
pub(crate) fn of(backend: Backend) -> &'static dyn Dialect {
    match backend {
        Backend::Sqlite => &sqlite::Sqlite,
        Backend::Postgres => &postgres::Postgres,
        Backend::Mysql => &mysql::Mysql,
    }
}

/// Every dialect, for reading an error whose backend is not known where it
/// is classified.
pub(crate) fn all() -> [&'static dyn Dialect; 3] {
    [&sqlite::Sqlite, &postgres::Postgres, &mysql::Mysql]
}

/// Whether any dialect recognizes `message` with `test`.
pub(crate) fn any(test: impl Fn(&dyn Dialect, &str) -> bool, message: &str) -> bool {
    all().into_iter().any(|dialect| test(dialect, message))
}

/// The statement SQLite and MySQL triggers run to log a change of `row.id`,
/// with `key_values` (see [`key_list`]) when the table's keys are captured.
fn log_change(table: &str, row: &str, op: &str, key_values: Option<String>) -> String {
    match key_values {
        None => format!(
            "INSERT INTO {CHANGES} (table_name, row_id, op) VALUES ('{table}', {row}.id, '{op}')"
        ),
        Some(keys) => format!(
            "INSERT INTO {CHANGES} (table_name, row_id, op, key_values) \
             VALUES ('{table}', {row}.id, '{op}', {keys})"
        ),
    }
}

/// An SQL text expression of the values of `columns` in each of `rows`
/// (trigger row names such as `OLD` and `NEW`, or the quoted table a query
/// reads), in the form the `keys` module reads:
/// `post_id=7,post_id=8`, NULL as an empty value. `None` without columns.
pub(crate) fn key_list(dialect: &dyn Dialect, rows: &[&str], columns: &[&str]) -> Option<String> {
    if columns.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    for row in rows {
        for column in columns {
            let separator = if parts.is_empty() { "" } else { "," };
            parts.push(format!("'{separator}{column}='"));
            // Quoted: a plain identifier may still be a reserved word
            // (`group`). Qualified: SQLite reads a quoted name that is no
            // column as a string, but not one after a table's or row's name.
            let value = format!("{row}.{}", dialect.quote(column));
            parts.push(format!("COALESCE({}, '')", dialect.as_text(&value)));
        }
    }
    Some(dialect.concat(&parts))
}

/// The query reading row `id`'s key values in the form of [`key_list`],
/// locked until the transaction ends, as one text column `larder_keys`.
pub(crate) fn read_keys(dialect: &dyn Dialect, table: &str, columns: &[&str], id: i64) -> String {
    let table = dialect.quote(table);
    let keys = key_list(dialect, &[&table], columns).unwrap_or_else(|| "''".to_owned());
    format!(
        "SELECT {keys} AS larder_keys FROM {table} WHERE id = {id}{}",
        dialect.lock_rows()
    )
}

/// Whether `message` contains any of `needles`.
fn mentions(message: &str, needles: &[&str]) -> bool {
    needles.iter().any(|needle| message.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_has_its_dialect() {
        for backend in [Backend::Sqlite, Backend::Postgres, Backend::Mysql] {
            let dialect = of(backend);
            let triggers = dialect.capture("tags", &["post_id"]);
            assert_eq!(
                triggers.up.matches("CREATE TRIGGER").count(),
                triggers.down.matches("DROP TRIGGER").count(),
                "{backend:?}"
            );
            assert!(dialect.quote("tags").contains("tags"));
        }
    }

    #[test]
    fn error_messages_are_read_by_the_backend_that_writes_them() {
        assert!(any(|d, m| d.is_busy(m), "database is locked"));
        assert!(any(
            |d, m| d.is_busy(m),
            "Lock wait timeout exceeded; try restarting transaction"
        ));
        assert!(any(
            |d, m| d.is_connection_lost(m),
            "server closed the connection unexpectedly"
        ));
        assert!(any(
            |d, m| d.is_serialization_failure(m),
            "deadlock detected"
        ));
        assert!(any(
            |d, m| d.is_transaction_aborted(m),
            "current transaction is aborted, commands ignored"
        ));
        assert!(!any(|d, m| d.is_busy(m), "syntax error"));
    }

    /// MySQL 8 closes an idle session after `wait_timeout` with error 4031,
    /// which is what a pooled connection trusted without a ping then reads:
    /// it must be retried as a read, and be `ConnectionLost` as a write.
    #[test]
    fn mysql_8s_idle_disconnect_is_a_lost_connection() {
        assert!(any(
            |d, m| d.is_connection_lost(m),
            "The client was disconnected by the server because of inactivity. \
             See wait_timeout and interactive_timeout for configuring this behavior."
        ));
    }
}
