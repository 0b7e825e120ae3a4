//! Writes whose prepared statements the connection keeps.
//!
//! diesel's statement cache skips every `UPDATE` and most `INSERT`s: two
//! values of one query type may render different SQL (a changeset of
//! `Option`s sets only its `Some` columns), and the cache keys a statement
//! by its type where it can. So each write prepared its statement afresh, and
//! on SQLite preparing an `UPDATE` also compiles every trigger on the table,
//! larder's capture triggers among them: a fifth of an update's time in the
//! `larder-blog bench` profile. [`KeepPrepared`] keys such a statement by its
//! SQL text instead, which is right for any statement: the same text is the
//! same statement, whatever the values bound to it.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::{QueryResult, RunQueryDsl};

/// A statement that the connection prepares once and reuses, keyed by its SQL.
///
/// Wrap a write that diesel would prepare again on every call (an `UPDATE`,
/// an `INSERT`); [`entity!`](crate::entity) does this for the writes it
/// generates. Each distinct SQL text stays prepared for the connection's
/// life, so wrap statements whose SQL takes a few forms (one per set of
/// changed columns), not one whose text grows with its input (a multi-row
/// insert, an `IN` list). A statement that returns rows is wrapped after
/// `RETURNING` is added: `as_query()` adds it the way `get_results` would.
///
/// SQLite and PostgreSQL only, for now: diesel's MySQL connection asks a
/// reference to the statement whether it may be cached, and diesel's
/// `QueryFragment` for references does not pass the question on, so a
/// wrapped write still runs there, prepared each time as before.
///
/// ```
/// # use diesel::prelude::*;
/// # use diesel::query_builder::AsQuery;
/// # diesel::table! { tags (id) { id -> BigInt, label -> Text } }
/// # fn main() -> diesel::QueryResult<()> {
/// # let mut c = diesel::SqliteConnection::establish(":memory:").unwrap();
/// # diesel::sql_query("CREATE TABLE tags (id INTEGER PRIMARY KEY, label TEXT NOT NULL)").execute(&mut c)?;
/// # diesel::sql_query("INSERT INTO tags VALUES (1, 'draft')").execute(&mut c)?;
/// let update = diesel::update(tags::table.find(1)).set(tags::label.eq("final"));
/// let rows: Vec<(i64, String)> = larder::KeepPrepared::new(update.as_query()).get_results(&mut c)?;
/// assert_eq!(rows, [(1, "final".to_owned())]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
#[must_use = "a statement does nothing until it is run"]
pub struct KeepPrepared<Q>(Q);

impl<Q> KeepPrepared<Q> {
    /// Wraps `statement`, to be run like any diesel statement.
    pub fn new(statement: Q) -> KeepPrepared<Q> {
        KeepPrepared(statement)
    }
}

impl<Q: Query> Query for KeepPrepared<Q> {
    type SqlType = Q::SqlType;
}

impl<Q: QueryFragment<DB>, DB: Backend> QueryFragment<DB> for KeepPrepared<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    /// Always: with no static query id, the cache keys the statement by its
    /// SQL text and bind types, and equal text is an equal statement.
    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> QueryId for KeepPrepared<Q> {
    type QueryId = ();
    /// Never by type: one type may render several SQL texts.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q, Conn> RunQueryDsl<Conn> for KeepPrepared<Q> {}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use diesel::connection::InstrumentationEvent;
    use diesel::prelude::*;
    use diesel::query_builder::AsQuery;
    use std::sync::{Arc, Mutex};

    diesel::table! {
        notes (id) {
            id -> BigInt,
            body -> Text,
            pinned -> Bool,
        }
    }

    /// The SQL of every statement a connection added to its cache.
    fn cached_statements(c: &mut SqliteConnection) -> Arc<Mutex<Vec<String>>> {
        let cached = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&cached);
        c.set_instrumentation(move |event: InstrumentationEvent<'_>| {
            if let InstrumentationEvent::CacheQuery { sql, .. } = event {
                sink.lock().unwrap().push(sql.to_owned());
            }
        });
        cached
    }

    fn connection() -> SqliteConnection {
        let mut c = SqliteConnection::establish(":memory:").unwrap();
        diesel::sql_query("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL, pinned BOOLEAN NOT NULL)")
            .execute(&mut c)
            .unwrap();
        diesel::sql_query("INSERT INTO notes VALUES (1, 'a', 0), (2, 'b', 0)")
            .execute(&mut c)
            .unwrap();
        c
    }

    #[derive(AsChangeset, Default)]
    #[diesel(table_name = notes)]
    struct NoteChanges {
        body: Option<String>,
        pinned: Option<bool>,
    }

    impl NoteChanges {
        fn body(body: &str) -> NoteChanges {
            NoteChanges {
                body: Some(body.into()),
                ..NoteChanges::default()
            }
        }

        fn pinned() -> NoteChanges {
            NoteChanges {
                pinned: Some(true),
                ..NoteChanges::default()
            }
        }
    }

    /// Runs `update(id, changes)` kept prepared; the rows it returned.
    fn kept(c: &mut SqliteConnection, id: i64, changes: &NoteChanges) -> Vec<(i64, String, bool)> {
        KeepPrepared::new(update(id, changes))
            .get_results(c)
            .unwrap()
    }

    fn update(
        id: i64,
        changes: &NoteChanges,
    ) -> impl Query<
        SqlType = (
            diesel::sql_types::BigInt,
            diesel::sql_types::Text,
            diesel::sql_types::Bool,
        ),
    > + QueryFragment<diesel::sqlite::Sqlite>
           + QueryId
           + '_ {
        diesel::update(notes::table.find(id))
            .set(changes)
            .as_query()
    }

    #[test]
    fn a_kept_update_is_prepared_once_per_sql_text() {
        let mut c = connection();
        let cached = cached_statements(&mut c);
        let body = NoteChanges::body("x");
        let pinned = NoteChanges::pinned();
        for (id, changes) in [
            (1, &body),
            (2, &body),
            (1, &pinned),
            (2, &body),
            (1, &pinned),
        ] {
            assert_eq!(kept(&mut c, id, changes).len(), 1);
        }
        let cached = cached.lock().unwrap();
        assert_eq!(
            cached.len(),
            2,
            "one prepared statement per SQL text: {cached:?}"
        );
        assert!(cached.iter().all(|sql| sql.starts_with("UPDATE")));
    }

    #[test]
    fn each_sql_text_runs_its_own_statement() {
        let mut c = connection();
        let body = NoteChanges::body("x");
        let pinned = NoteChanges::pinned();
        kept(&mut c, 1, &body);
        assert_eq!(kept(&mut c, 2, &pinned), [(2, "b".to_owned(), true)]);
        assert_eq!(kept(&mut c, 2, &body), [(2, "x".to_owned(), true)]);
    }

    #[test]
    fn an_empty_changeset_is_still_refused() {
        let mut c = connection();
        let err = KeepPrepared::new(update(1, &NoteChanges::default()))
            .get_results::<(i64, String, bool)>(&mut c)
            .unwrap_err();
        assert!(crate::entity::is_empty_changeset(&err), "{err:?}");
    }

    #[test]
    fn diesel_alone_prepares_every_update_again() {
        // What the wrapper is for: if diesel starts caching updates, it can go.
        let mut c = connection();
        let cached = cached_statements(&mut c);
        let body = NoteChanges::body("x");
        for id in [1, 2, 1] {
            let update = diesel::update(notes::table.find(id)).set(&body);
            let _: Vec<(i64, String, bool)> = update.get_results(&mut c).unwrap();
        }
        assert!(cached.lock().unwrap().is_empty());
    }
}
