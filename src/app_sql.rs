//! Spots the application's SQL that may leave a transaction open.
//!
//! The application's own statements (`Repo::run`, list queries, `write`
//! closures) may open a transaction and leave it open for the pooled
//! connection's next caller; asking the server after every one of them
//! costs a round trip on every list query. A statement that opens one names
//! it (`BEGIN`, `START TRANSACTION`, `SAVEPOINT`, MySQL's `autocommit`, a
//! procedure `CALL`, a prepared statement's `EXECUTE`, `COMMIT AND CHAIN`,
//! and on MySQL any `COMMIT` or `ROLLBACK` once a stored function or
//! trigger set `completion_type = CHAIN`):
//! diesel's instrumentation shows larder each statement's text while the
//! watch is armed, and only when one names such a word (or the watch was
//! replaced) is the server asked. A word in an identifier or a string
//! literal costs that round trip and nothing else; bound values are not
//! scanned (nor written: a large blob's `Debug` costs), and the scan stops
//! at the first opener.

use std::fmt::{self, Write as _};

use diesel::connection::{Instrumentation, InstrumentationEvent};

/// The words of every statement that can leave a transaction open once it
/// succeeded outside one, on any backend, lower case.
const OPENERS: &[&str] = &[
    "begin",
    "start",
    "savepoint",
    "autocommit",
    "completion_type",
    "chain",
    "call",
    "xa",
    "execute",
    // MySQL's `completion_type = CHAIN` makes either open a transaction,
    // even with none open, and a stored function or trigger may have set
    // it where no watch saw.
    "commit",
    "rollback",
];

/// The longest word of [`OPENERS`]: a longer word is none of them.
const LONGEST: usize = 15;

/// The instrumentation of a pooled connection: watches the statements run
/// while armed, and passes every event on to the instrumentation diesel
/// would have given the connection (an application's query log).
pub(crate) struct AppSqlWatch {
    armed: bool,
    suspect: bool,
    inner: Option<Box<dyn Instrumentation>>,
}

impl AppSqlWatch {
    fn new() -> AppSqlWatch {
        AppSqlWatch {
            armed: false,
            suspect: false,
            inner: diesel::connection::get_default_instrumentation(),
        }
    }
}

impl Instrumentation for AppSqlWatch {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if self.armed && !self.suspect {
            if let InstrumentationEvent::StartQuery { query, .. } = &event {
                self.suspect = names_an_opener(query);
            }
        }
        if let Some(inner) = &mut self.inner {
            inner.on_connection_event(event);
        }
    }
}

/// Arms the watch of `instrumentation`'s connection: from now on a
/// statement that names an [`OPENERS`] word marks it suspect (until
/// [`disarm`]: arming it again forgets nothing, as a transaction runs the
/// application's SQL more than once before it ends). Returns `false` when
/// the connection's instrumentation is not a watch: [`install`] it when
/// the connection opens; one the application set since is its own, to
/// keep (and [`disarm`] finds its connection suspect).
pub(crate) fn arm(instrumentation: &mut dyn Instrumentation) -> bool {
    match instrumentation.downcast_mut::<AppSqlWatch>() {
        Some(watch) => {
            watch.armed = true;
            true
        }
        None => false,
    }
}

/// Disarms the watch; whether a statement since it was armed may have left
/// a transaction open. A connection whose watch the application replaced
/// (`set_instrumentation`) is suspect: nothing saw its statements.
pub(crate) fn disarm(instrumentation: &mut dyn Instrumentation) -> bool {
    match instrumentation.downcast_mut::<AppSqlWatch>() {
        Some(watch) => {
            watch.armed = false;
            std::mem::take(&mut watch.suspect)
        }
        None => true,
    }
}

/// A new watch, disarmed, for a new connection's `set_instrumentation`.
pub(crate) fn install() -> AppSqlWatch {
    AppSqlWatch::new()
}

/// Whether a text written to it holds an [`OPENERS`] word, case
/// insensitively, words being runs of letters, digits, `_` and `$`; fed in
/// pieces, as `Display` writes them. Leading digits start no word: MySQL
/// runs the text of an executable comment whose version touches it
/// (`/*!50000BEGIN*/` is `BEGIN`).
#[derive(Default)]
struct Words {
    word: [u8; LONGEST],
    len: usize,
    /// The current word is longer than any opener.
    long: bool,
    /// The current word is digits only, so far.
    digits: bool,
    found: bool,
    /// How many pieces were written.
    pieces: usize,
    /// The scan stopped at the bound values of diesel's `DebugQuery`.
    binds: bool,
}

/// What diesel's `DebugQuery` writes, as one piece, between a statement's
/// SQL (one piece before it) and its bound values: data, which opens
/// nothing, and whose `Debug` (a large blob's) costs a lot to write.
const BINDS: &str = " -- binds: ";

impl Words {
    fn end_word(&mut self) {
        if !self.long && self.len > 0 {
            let word = &self.word[..self.len];
            self.found |= OPENERS.iter().any(|opener| opener.as_bytes() == word);
        }
        self.len = 0;
        self.long = false;
        self.digits = false;
    }
}

impl fmt::Write for Words {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Stops the writer once the answer is known.
        if self.found {
            return Err(fmt::Error);
        }
        if self.pieces > 0 && text == BINDS {
            self.binds = true;
            return Err(fmt::Error);
        }
        self.pieces += 1;
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$' {
                if self.len == 0 || self.digits {
                    // Digits end where anything else starts a word.
                    if !byte.is_ascii_digit() {
                        self.len = 0;
                        self.long = false;
                    }
                    self.digits = byte.is_ascii_digit();
                }
                if self.len == LONGEST {
                    self.long = true;
                } else {
                    self.word[self.len] = byte.to_ascii_lowercase();
                    self.len += 1;
                }
            } else {
                self.end_word();
            }
        }
        Ok(())
    }
}

/// Whether `text` names an [`OPENERS`] word (its bound values, after
/// diesel's [`BINDS`], aside); a text whose `Display` fails does too, since
/// what it wrote so far is all there is to see.
fn names_an_opener(text: &dyn fmt::Display) -> bool {
    let mut words = Words::default();
    let failed = write!(words, "{text}").is_err();
    words.end_word();
    words.found || (failed && !words.binds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_that_can_open_a_transaction_are_spotted() {
        for sql in [
            "BEGIN",
            "begin immediate",
            "START TRANSACTION READ ONLY",
            "SAVEPOINT a",
            "SET autocommit = 0",
            "SET @@session.autocommit=0",
            "SET completion_type = CHAIN",
            "COMMIT AND CHAIN",
            "UPDATE t SET a = 1; COMMIT",
            "rollback work",
            "CALL open_one()",
            "XA START 'x'",
            "EXECUTE stmt",
            "SELECT 1;BEGIN;",
            "/* c */Begin/**/",
            "/*!50000BEGIN*/",
            "/*!800130START TRANSACTION*/",
            "SET /*!50000completion_type*/ = 1",
            "/*M!100100begin*/",
        ] {
            assert!(names_an_opener(&sql), "{sql:?}");
        }
    }

    #[test]
    fn ordinary_statements_are_not_suspect() {
        for sql in [
            "SELECT `posts`.`id`, `posts`.`title` FROM `posts` WHERE `posts`.`author_id` = ? -- binds: [7]",
            "INSERT INTO notes (body) VALUES ($1)",
            "UPDATE beginnings SET started_at = now()",
            "DELETE FROM xa_log",
            "SELECT autocommits FROM t",
            "SELECT 1begins FROM t",
            "",
        ] {
            assert!(!names_an_opener(&sql), "{sql:?}");
        }
    }

    #[cfg(feature = "sqlite")]
    mod on_a_connection {
        use super::super::*;
        use diesel::connection::SimpleConnection;
        use diesel::prelude::*;

        fn watched() -> SqliteConnection {
            let mut c = SqliteConnection::establish(":memory:").unwrap();
            c.set_instrumentation(install());
            c
        }

        fn watch(c: &mut SqliteConnection, work: impl FnOnce(&mut SqliteConnection)) -> bool {
            assert!(arm(c.instrumentation()));
            work(c);
            disarm(c.instrumentation())
        }

        #[test]
        fn bound_values_are_not_scanned_but_the_sql_before_them_is() {
            use diesel::sql_types::Text;
            let bound = diesel::sql_query("SELECT ?").bind::<Text, _>("begin");
            let query = diesel::debug_query::<diesel::sqlite::Sqlite, _>(&bound);
            assert!(query.to_string().contains("begin"), "the premise");
            assert!(!names_an_opener(&query));
            let bound = diesel::sql_query("SAVEPOINT a -- binds: ").bind::<Text, _>("x");
            let query = diesel::debug_query::<diesel::sqlite::Sqlite, _>(&bound);
            assert!(names_an_opener(&query));
            // One piece: no DebugQuery, scanned whole.
            assert!(names_an_opener(&"SELECT 1 -- binds: [\"begin\"]"));
        }

        #[test]
        fn a_query_naming_no_opener_is_not_suspect() {
            let mut c = watched();
            let suspect = watch(&mut c, |c| {
                diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>("1"))
                    .get_result::<i32>(c)
                    .unwrap();
            });
            assert!(!suspect);
        }

        #[test]
        fn statements_that_open_a_transaction_are_suspect_by_any_path() {
            let mut c = watched();
            assert!(watch(&mut c, |c| {
                diesel::sql_query("BEGIN").execute(c).unwrap();
            }));
            c.batch_execute("ROLLBACK").unwrap();
            assert!(watch(&mut c, |c| c.batch_execute("SAVEPOINT a").unwrap()));
            // Disarming forgets: the next watch starts clean.
            assert!(!watch(&mut c, |_| {}));
        }

        #[test]
        fn arming_again_forgets_nothing_and_a_disarmed_watch_sees_nothing() {
            let mut c = watched();
            assert!(arm(c.instrumentation()));
            c.batch_execute("BEGIN").unwrap();
            assert!(arm(c.instrumentation()));
            assert!(disarm(c.instrumentation()));
            c.batch_execute("ROLLBACK; BEGIN; ROLLBACK").unwrap();
            assert!(!watch(&mut c, |_| {}));
        }

        #[test]
        fn a_watch_the_application_replaced_is_suspect() {
            let mut c = watched();
            assert!(arm(c.instrumentation()));
            c.set_instrumentation(|_: InstrumentationEvent<'_>| {});
            assert!(disarm(c.instrumentation()));
            assert!(!arm(c.instrumentation()), "no watch to arm");
        }
    }

    #[test]
    fn a_word_split_across_writes_is_one_word() {
        let mut words = Words::default();
        let _ = words.write_str("SELECT 1; BEG");
        let _ = words.write_str("IN");
        words.end_word();
        assert!(words.found);
    }

    #[test]
    fn a_word_longer_than_any_opener_is_none() {
        assert!(!names_an_opener(&"SELECT beginbeginbeginbegin"));
        assert!(names_an_opener(&"SELECT beginbeginbeginbegin, begin"));
    }
}
