//! The application's own diesel instrumentation on larder's pooled
//! connections (`diesel::connection::set_default_instrumentation`, a query
//! log), and what the watch on the application's SQL costs: a binary of its
//! own, since the default instrumentation is process-wide.

mod common;

use std::cell::RefCell;

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::prelude::*;
use larder_blog::prelude::*;

use common::{each_backend, user};

thread_local! {
    /// The statements diesel started on this thread's connections.
    static SENT: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// An application's query log: records each statement's text, on the
/// thread that runs it (the sync API runs a store's statements on the
/// caller's thread).
struct QueryLog;

impl Instrumentation for QueryLog {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            let text = query.to_string();
            SENT.with(|sent| sent.borrow_mut().push(text));
        }
    }
}

fn query_log() -> Option<Box<dyn Instrumentation>> {
    Some(Box::new(QueryLog))
}

/// The statements `work` sent on this thread, but the pool's pings of a
/// connection idle past its trusted window.
fn sent_by(work: impl FnOnce()) -> Vec<String> {
    SENT.with(|sent| sent.borrow_mut().clear());
    work();
    let mut sent = SENT.with(|sent| std::mem::take(&mut *sent.borrow_mut()));
    sent.retain(|s| s != "SELECT 1 -- binds: []");
    sent
}

/// Whether `statement` is larder's check for a transaction left open.
fn is_check(statement: &str) -> bool {
    [
        "a transaction is open",
        "@@in_transaction",
        "BEGIN; ROLLBACK",
    ]
    .iter()
    .any(|check| statement.contains(check))
}

/// review FF: the watch larder installs on a pooled connection passes every
/// event on to the application's instrumentation; a `get` and a list query
/// whose SQL names no word able to open a transaction send no statement
/// besides their own; diesel's own `transaction(…)` inside `Repo::run` is
/// not refused.
#[test]
fn the_applications_instrumentation_sees_every_statement_and_a_list_query_sends_one() {
    diesel::connection::set_default_instrumentation(query_log).unwrap();
    each_backend(|target| {
        let db = target.fresh_with(|b| b.pool_size(1).coherence(false));
        let store = &db.store;
        let ann = user(store, "ann");
        // The watch is installed by the first application SQL.
        let sent = sent_by(|| {
            store
                .users()
                .run(None, |conn| {
                    use diesel::connection::SimpleConnection;
                    conn.batch_execute("SELECT 1 AS ff_marker")
                })
                .unwrap();
        });
        assert_eq!(sent, ["SELECT 1 AS ff_marker"], "the application's log");
        // A list query, after the watch is installed: its one statement.
        let sent = sent_by(|| {
            let rows = store
                .users()
                .query(|conn| {
                    larder::with_connection!(conn, |c| {
                        larder_blog::schema::users::table
                            .filter(larder_blog::schema::users::name.eq("ann"))
                            .load(c)
                    })
                })
                .unwrap();
            assert_eq!(rows.len(), 1);
        });
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(sent[0].contains("users"), "{sent:?}");
        // A get of a row not cached: its own statement(s), no check.
        store.users().invalidate(ann.id);
        let sent = sent_by(|| {
            assert!(store.users().get(ann.id).unwrap().is_some());
        });
        assert_eq!(sent.len(), 1, "{sent:?}");
        // SQL naming an opener: the application sees it, and larder's
        // check after it, and diesel's own transaction is fine.
        let sent = sent_by(|| {
            let n = store
                .users()
                .run(None, |conn| {
                    larder::with_connection!(conn, |c| {
                        c.transaction(|c| {
                            diesel::sql_query("UPDATE users SET name = name").execute(c)
                        })
                    })
                })
                .unwrap();
            assert_eq!(n, 1);
        });
        assert!(sent.iter().any(|s| is_check(s)), "the check: {sent:?}");
        assert!(sent.iter().any(|s| s.contains("UPDATE users")), "{sent:?}");
        common::assert_pool_idle(store);
    });
}

thread_local! {
    /// What [`OwnLog`] saw.
    static OWN: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// A query log the application sets on one connection.
struct OwnLog;

impl Instrumentation for OwnLog {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            let text = query.to_string();
            OWN.with(|own| own.borrow_mut().push(text));
        }
    }
}

/// review FF: an instrumentation the application set on a pooled
/// connection itself (`set_instrumentation` through `with_connection!`, on
/// first use) was replaced by larder's watch at the connection's next
/// checkout, and silently saw nothing more.
#[test]
fn an_instrumentation_the_application_set_on_a_pooled_connection_stays() {
    each_backend(|target| {
        let db = target.fresh_with(|b| b.pool_size(1).coherence(false));
        let store = &db.store;
        user(store, "ann");
        store
            .users()
            .run(None, |conn| {
                larder::with_connection!(conn, |c| c.set_instrumentation(OwnLog));
                Ok(())
            })
            .unwrap();
        for round in 0..2 {
            let marker = format!("SELECT {round} AS ff_own_log");
            OWN.with(|own| own.borrow_mut().clear());
            store
                .users()
                .run(None, |conn| {
                    use diesel::connection::SimpleConnection;
                    conn.batch_execute(&marker)
                })
                .unwrap();
            let sent = OWN.with(|own| own.borrow().clone());
            assert!(sent.contains(&marker), "round {round}: {sent:?}");
        }
        common::assert_pool_idle(store);
    });
}

/// review HH: a transaction of larder's in which the application's SQL ran
/// (and named an opener) checks what that SQL left the connection doing
/// once the transaction has ended; a COMMIT that failed (a deferred
/// constraint) skipped it, and the connection went back to the pool with
/// its watch armed and suspect: every later statement on it, the `get`
/// loads too, was rendered and scanned, and the next application SQL on it,
/// naming no opener, was checked all the same (on MySQL, whose COMMIT a
/// Galera cluster can refuse, the `autocommit = 0` that SQL set outlived
/// the transaction).
#[test]
fn a_failed_commit_leaves_no_watch_armed_on_its_connection() {
    diesel::connection::set_default_instrumentation(query_log).unwrap();
    each_backend(|target| {
        let deferred = match target.backend {
            larder::Backend::Postgres => {
                "CREATE TEMP TABLE hh (x int UNIQUE DEFERRABLE INITIALLY DEFERRED) ON COMMIT DROP; \
                 INSERT INTO hh VALUES (1), (1); SELECT 'begin'"
            }
            larder::Backend::Sqlite => {
                "CREATE TEMP TABLE hh_parent (id INTEGER PRIMARY KEY); \
                 CREATE TEMP TABLE hh_child (parent INTEGER \
                 REFERENCES hh_parent (id) DEFERRABLE INITIALLY DEFERRED); \
                 INSERT INTO hh_child VALUES (5); SELECT 'begin'"
            }
            // No deferred constraints: its COMMIT does not fail here.
            _ => return,
        };
        let db = target.fresh_with(|b| b.pool_size(1).coherence(false));
        let store = &db.store;
        user(store, "ann");
        let tx = store.begin().unwrap();
        tx.users()
            .run(None, |conn| {
                use diesel::connection::SimpleConnection;
                conn.batch_execute(deferred)
            })
            .unwrap();
        tx.commit()
            .expect_err("the deferred constraint fails the COMMIT");
        let sent = sent_by(|| {
            store
                .users()
                .run(None, |conn| {
                    use diesel::connection::SimpleConnection;
                    conn.batch_execute("SELECT 1 AS hh_marker")
                })
                .unwrap();
        });
        assert_eq!(
            sent,
            ["SELECT 1 AS hh_marker"],
            "SQL naming no opener was checked: the watch stayed armed"
        );
        common::assert_pool_idle(store);
    });
}
