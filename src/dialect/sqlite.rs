//! SQLite's SQL.

use std::time::Duration;

use super::{key_list, log_change, mentions, Dialect, Triggers};

pub(crate) struct Sqlite;

/// The statement that begins a write transaction: it takes the write lock up
/// front, so a writer waits its turn within the busy timeout instead of
/// failing midway on a lock upgrade.
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) const BEGIN: &str = "BEGIN IMMEDIATE";

/// A number that changes whenever another connection commits: one call tells
/// the watcher whether reading the change log can find anything.
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) const DATA_VERSION: &str = "PRAGMA data_version";

impl Dialect for Sqlite {
    /// The busy timeout first, so that switching to WAL waits for a concurrent
    /// opener; foreign keys are off by default.
    fn session_setup(&self, busy_timeout: Duration) -> String {
        format!(
            "PRAGMA busy_timeout = {}; PRAGMA foreign_keys = ON; \
             PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
            busy_timeout.as_millis()
        )
    }

    fn last_insert_id(&self) -> &'static str {
        "last_insert_rowid()"
    }

    fn quote(&self, name: &str) -> String {
        format!("\"{name}\"")
    }

    fn tables(&self) -> &'static str {
        // Views too: an entity on one is cached, and no trigger reports its changes.
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
    }

    fn captured_tables(&self) -> &'static str {
        "SELECT DISTINCT tbl_name AS name FROM sqlite_master \
         WHERE type = 'trigger' AND name LIKE 'larder\\_capture\\_%' ESCAPE '\\'"
    }

    /// A SQLite database is a file: there is no server to ask.
    fn admin_database(&self) -> &'static str {
        ""
    }

    fn database_named(&self) -> &'static str {
        ""
    }

    /// One trigger per event, each appending to the change log. A second
    /// update trigger records the new id of a row whose id changed; it fires
    /// only for updates that set `id` at all. Rows removed by `ON DELETE
    /// CASCADE` fire their own table's delete trigger.
    fn capture(&self, table: &str, keys: &[&str]) -> Triggers {
        let inserted = key_list(self, &["NEW"], keys);
        let updated = key_list(self, &["OLD", "NEW"], keys);
        let deleted = key_list(self, &["OLD"], keys);
        let triggers = [
            (
                "insert",
                "INSERT",
                "",
                log_change(table, "NEW", "I", inserted),
            ),
            (
                "update",
                "UPDATE",
                "",
                log_change(table, "OLD", "U", updated.clone()),
            ),
            (
                "update_id",
                "UPDATE OF id",
                " WHEN NEW.id <> OLD.id",
                log_change(table, "NEW", "U", updated),
            ),
            (
                "delete",
                "DELETE",
                "",
                log_change(table, "OLD", "D", deleted),
            ),
        ];
        let mut up = String::new();
        let mut down = String::new();
        let on = self.quote(table);
        for (suffix, event, when, body) in triggers {
            let name = format!("larder_capture_{table}_{suffix}");
            up.push_str(&format!(
                "CREATE TRIGGER {name} AFTER {event} ON {on} FOR EACH ROW{when} BEGIN {body}; END;\n"
            ));
            down.push_str(&format!("DROP TRIGGER IF EXISTS {name};\n"));
        }
        Triggers { up, down }
    }

    /// `BEGIN IMMEDIATE` already keeps every other writer out.
    fn lock_rows(&self) -> &'static str {
        ""
    }

    fn ago(&self, age: Duration) -> String {
        format!("datetime('now', '-{} seconds')", age.as_secs())
    }

    fn is_busy(&self, message: &str) -> bool {
        mentions(message, &["database is locked", "database table is locked"])
    }

    /// `SQLITE_TOOBIG`: a string or blob over the build's length limit.
    fn is_invalid_value(&self, message: &str) -> bool {
        message.contains("string or blob too big")
    }

    fn is_missing_table(&self, message: &str) -> bool {
        message.contains("no such table")
    }
}
