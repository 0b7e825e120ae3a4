//! PostgreSQL's SQL.

use std::time::Duration;

use super::{key_list, mentions, Dialect, Triggers, CHANGES};

pub(crate) struct Postgres;

/// The statements that make the watcher's connection a listener, named so an
/// operator (or a test) finds it in `pg_stat_activity`.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn listen() -> String {
    format!("SET application_name = 'larder watcher'; LISTEN {CHANGES}")
}

impl Dialect for Postgres {
    fn session_setup(&self, _busy_timeout: Duration) -> String {
        "SET TIME ZONE 'UTC'".to_owned()
    }

    /// The last sequence value this session drew: an application trigger
    /// drawing from another sequence changes it, which is why larder's inserts
    /// use `RETURNING` instead.
    fn last_insert_id(&self) -> &'static str {
        "lastval()"
    }

    fn quote(&self, name: &str) -> String {
        format!("\"{name}\"")
    }

    /// The tables, views and foreign tables an unqualified name finds
    /// through the `search_path`, as the cache's queries find them: not only
    /// those of its first schema (`current_schema()`), which missed a table
    /// of `public` behind a tenant's schema, and not one a table of the
    /// same name earlier in the path hides.
    fn tables(&self) -> &'static str {
        "SELECT c.relname::text AS name FROM pg_class c \
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND pg_table_is_visible(c.oid)"
    }

    /// Tables (as [`tables`](Dialect::tables) finds them) whose capture
    /// triggers are all enabled: a disabled one (`ALTER TABLE … DISABLE
    /// TRIGGER ALL` for a bulk load, never undone) fires for nothing, so its
    /// table counts as uncaptured.
    fn captured_tables(&self) -> &'static str {
        "SELECT c.relname::text AS name FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
         WHERE pg_table_is_visible(c.oid) AND t.tgname LIKE 'larder\\_capture%' \
         GROUP BY c.relname HAVING bool_and(t.tgenabled <> 'D')"
    }

    fn admin_database(&self) -> &'static str {
        "postgres"
    }

    fn database_named(&self) -> &'static str {
        "SELECT datname AS name FROM pg_database WHERE datname = "
    }

    /// A trigger function that `pg_notify`s `"table op id"`, followed by
    /// `" key_values"` when `keys` are captured: delivered only if
    /// the transaction commits, so a rollback sends nothing. No sequence is
    /// touched. A statement-level trigger reports `TRUNCATE` (`T`). Both
    /// fire `ALWAYS`: a session in `session_replication_role = replica` (a
    /// logical replication subscriber's apply worker, a bulk fix that skips
    /// foreign-key checks) fires no trigger enabled the default way. The
    /// function's and triggers' names are quoted when they hold a capital
    /// (see [`routine_name`]).
    fn capture(&self, table: &str, keys: &[&str]) -> Triggers {
        let with = |rows: &[&str]| {
            key_list(self, rows, keys).map_or_else(String::new, |keys| format!(" || ' ' || {keys}"))
        };
        let (inserted, updated, deleted) = (with(&["NEW"]), with(&["OLD", "NEW"]), with(&["OLD"]));
        let on = self.quote(table);
        let function = routine_name(self, format!("larder_capture_{table}"));
        let row_trigger = function.clone();
        let truncate_trigger = routine_name(self, format!("larder_capture_{table}_truncate"));
        let up = format!(
            "CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('{CHANGES}', '{table} I ' || NEW.id{inserted});
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM pg_notify('{CHANGES}', '{table} U ' || OLD.id{updated});
        IF NEW.id <> OLD.id THEN
            PERFORM pg_notify('{CHANGES}', '{table} U ' || NEW.id{updated});
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('{CHANGES}', '{table} D ' || OLD.id{deleted});
    ELSE
        PERFORM pg_notify('{CHANGES}', '{table} T 0');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER {row_trigger} AFTER INSERT OR UPDATE OR DELETE ON {on}
    FOR EACH ROW EXECUTE FUNCTION {function}();
CREATE TRIGGER {truncate_trigger} AFTER TRUNCATE ON {on}
    FOR EACH STATEMENT EXECUTE FUNCTION {function}();
ALTER TABLE {on} ENABLE ALWAYS TRIGGER {row_trigger};
ALTER TABLE {on} ENABLE ALWAYS TRIGGER {truncate_trigger};
"
        );
        let down = format!(
            "DROP TRIGGER IF EXISTS {truncate_trigger} ON {on};
DROP TRIGGER IF EXISTS {row_trigger} ON {on};
DROP FUNCTION IF EXISTS {function}();
"
        );
        Triggers { up, down }
    }

    fn ago(&self, age: Duration) -> String {
        format!("now() - interval '{} seconds'", age.as_secs())
    }

    fn session(&self) -> &'static [&'static str] {
        &["SELECT pid::bigint AS id, (extract(epoch FROM backend_start) * 1000000)::bigint AS started \
           FROM pg_stat_activity WHERE pid = pg_backend_pid()"]
    }

    fn end_session(&self, id: i64, started: i64) -> String {
        format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {}",
            session_is(id, started)
        )
    }

    fn end_idle_session(&self, id: i64, started: i64) -> String {
        format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = {id} \
             AND (extract(epoch FROM backend_start) * 1000000)::bigint = {started}"
        )
    }

    fn session_runs(&self, id: i64, started: i64) -> String {
        format!(
            "SELECT count(*) AS count FROM pg_stat_activity WHERE {}",
            session_is(id, started)
        )
    }

    /// Give up connecting after 5 s, probe an idle connection after 5 s and
    /// drop it after 2 unanswered probes 2 s apart, and drop it when sent data
    /// stays unacknowledged for 5 s.
    fn watcher_url_params(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("connect_timeout", "5"),
            ("keepalives", "1"),
            ("keepalives_idle", "5"),
            ("keepalives_interval", "2"),
            ("keepalives_count", "2"),
            ("tcp_user_timeout", "5000"),
        ]
    }

    fn watcher_statement_limits(&self, limit: Duration) -> Vec<String> {
        vec![format!("SET statement_timeout = {}", limit.as_millis())]
    }

    /// `lock_timeout` (55P03).
    fn is_busy(&self, message: &str) -> bool {
        message.contains("canceling statement due to lock timeout")
    }

    /// libpq reports a dropped server connection as a plain error.
    fn is_connection_lost(&self, message: &str) -> bool {
        mentions(
            message,
            &[
                "server closed the connection",
                "terminating connection",
                "connection to server",
                "no connection to the server",
            ],
        )
    }

    /// Deadlocks (40P01), which diesel does not map to a serialization failure.
    fn is_serialization_failure(&self, message: &str) -> bool {
        mentions(
            message,
            &["deadlock detected", "could not serialize access"],
        )
    }

    /// 25P02, which diesel does not map.
    fn is_transaction_aborted(&self, message: &str) -> bool {
        message.contains("current transaction is aborted")
    }

    /// Data exceptions (class 22), which diesel does not map: a NUL in text
    /// (22021), a string too long (22001), a number out of range (22003),
    /// text that does not parse as the column's type (22P02, 22007, 22008).
    fn is_invalid_value(&self, message: &str) -> bool {
        mentions(
            message,
            &[
                "invalid byte sequence for encoding",
                "value too long for type",
                "numeric field overflow",
                "is out of range for type",
                "integer out of range",
                "field value out of range",
                "invalid input syntax for type",
                "invalid input value for enum",
            ],
        )
    }

    fn is_missing_table(&self, message: &str) -> bool {
        message.contains("does not exist") && message.contains("relation")
    }
}

/// A COMMIT that fails in a transaction a failed statement aborted:
/// PostgreSQL answers a plain COMMIT there with a silent ROLLBACK, no error,
/// when the failure was handled out of larder's sight (inside an
/// application's `run`). The `SELECT` in the same round trip fails instead
/// (`25P02`), and the COMMIT after it is not run.
#[cfg(feature = "postgres")]
pub(crate) const COMMIT_UNLESS_ABORTED: &str = "SELECT 1; COMMIT";

/// Fails with [`TRANSACTION_OPEN_MESSAGE`] when a transaction block is open
/// (and with PostgreSQL's 25P02 in an aborted one). Sent alone through the
/// simple query protocol, an implicit transaction starts with its statement
/// and their clocks agree; a block begun by an earlier statement has its
/// clock, a round trip older. (Through the extended protocol each message
/// moves the statement's clock: they differ in every transaction.)
#[cfg(feature = "postgres")]
pub(crate) const TRANSACTION_OPEN: &str = "DO $larder$ BEGIN \
     IF statement_timestamp() <> transaction_timestamp() THEN \
     RAISE EXCEPTION 'larder: a transaction is open'; END IF; END $larder$";

/// The message [`TRANSACTION_OPEN`] fails with in a transaction block.
#[cfg(feature = "postgres")]
pub(crate) const TRANSACTION_OPEN_MESSAGE: &str = "larder: a transaction is open";

/// The primary's WAL insert position, as text (`"16/B374D848"`). Read right
/// after a commit on the committing session, or after a change was heard, it
/// lies at or past that commit's record, however the commit was made. The
/// write position (`pg_current_wal_lsn`) does not: an asynchronous commit
/// (`synchronous_commit = off`) returns, and notifies, before its record is
/// written, and a replica that replayed up to the write position would then
/// serve the row as it was. The insert position may be a little ahead of
/// what replicas can have yet, which costs at most a load sent to the primary.
pub(crate) const PRIMARY_POSITION: &str = "SELECT pg_current_wal_insert_lsn()::text AS lsn";

/// Opens the transaction a load on a replica runs in, check included: a
/// transaction-mode pooler lends one server session for a whole
/// transaction, so the check and the load reach the same server. The lock
/// wait is set for the transaction too: such a pooler may lend a server
/// session that never ran [`replica_session_setup`]. READ COMMITTED
/// whatever the sessions' default (`default_transaction_isolation`): the
/// check's statement takes its snapshot before it reads the replay
/// position, so only the load's own statements, each with a snapshot taken
/// after that read, hold every commit up to it (REPEATABLE READ would run
/// the load in the check's snapshot; SERIALIZABLE fails on a standby).
#[cfg(feature = "postgres")]
pub(crate) fn begin_replica_load(lock_wait: std::time::Duration) -> String {
    format!(
        "BEGIN READ ONLY ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = {}",
        lock_wait.as_millis().max(1)
    )
}

/// Ends a load's transaction on a replica, failing first (and then running
/// nothing more) when the server is no longer in recovery: promoted during
/// the load, whose statements may have read rows written on it alone since.
/// Promotion is one-way for a live session, so a server still in recovery
/// now was in recovery when each statement of the load took its snapshot.
#[cfg(feature = "postgres")]
pub(crate) const END_REPLICA_LOAD: &str = "DO $$ BEGIN IF NOT pg_is_in_recovery() THEN \
     RAISE EXCEPTION 'larder: the replica was promoted during the load'; END IF; END $$; \
     ROLLBACK";

/// How far a replica has replayed the primary's WAL; NULL on a server that
/// is not in recovery (a primary, or a promoted replica). Asked of
/// `pg_is_in_recovery()`, not left to `pg_last_wal_replay_lsn()`, which is
/// NULL only on a server that never recovered: a promoted replica keeps
/// reporting where its recovery ended, and its rows, its own since then,
/// would pass for a replica's that had replayed that far.
#[cfg(feature = "postgres")]
pub(crate) const REPLAY_POSITION: &str =
    "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text END AS lsn";

/// A replica session's limit on waiting for a lock, in milliseconds. On a
/// replica a load waits for a lock almost only behind one replay holds for
/// the primary (a schema change, `LOCK TABLE`, a vacuum's truncation) until
/// it replays the release: for as long as replay is paused or late. The
/// primary has released it by then, so a load stops waiting and goes there.
pub(crate) fn replica_session_setup(lock_wait: std::time::Duration) -> String {
    format!("SET lock_timeout = {}", lock_wait.as_millis().max(1))
}

/// The `pg_stat_activity` row of session `id` started at `started` (a process
/// id alone may belong to a later session by now) while it runs a statement:
/// one that is idle has finished whatever it was sent, and a pooler may have
/// lent it to another client since.
fn session_is(id: i64, started: i64) -> String {
    format!(
        "pid = {id} AND (extract(epoch FROM backend_start) * 1000000)::bigint = {started} \
         AND state = 'active'"
    )
}

/// `name` as SQL: quoted when it holds a capital, which PostgreSQL would
/// fold to lower case unquoted (the function of a table `"Notes"` took the
/// name of `notes`'s, and the second capture failed); as it is otherwise,
/// so that the SQL of an all-lower-case table is what migrations written
/// before (the blog's, any application's) already hold.
fn routine_name(dialect: &Postgres, name: String) -> String {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        dialect.quote(&name)
    } else {
        name
    }
}
