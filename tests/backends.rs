//! Backend differences that bite a cache: a statement that fails inside a
//! transaction (PostgreSQL aborts the whole transaction), and server-side
//! connection loss (a restart, `pg_terminate_backend`, MySQL's `KILL`).

mod common;

use std::time::{Duration, Instant};

use common::{
    each_backend, rename, statements_prepared, statements_sent, user, user_in_db, TestDb,
};
use diesel::connection::SimpleConnection;
use diesel::RunQueryDsl;
use larder::{Backend, Error};
use larder_blog::prelude::*;
use larder_blog::NewUser;

/// A primary-key load binds no `LIMIT`: SQLite (3.50) re-prepares a statement
/// whose LIMIT is a bound parameter every time it is bound again, which made
/// each miss's select cost three times what it does without one.
#[test]
fn a_primary_key_load_binds_no_limit() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let (found, sent) = statements_sent(&db, |conn| {
            <larder_blog::User as larder::Entity>::find(conn, ann.id).unwrap()
        });
        assert_eq!(found.map(|u| u.id), Some(ann.id));
        assert_eq!(sent.len(), 1, "one statement per load: {sent:?}");
        assert!(!sent[0].to_uppercase().contains("LIMIT"), "{}", sent[0]);
    });
}

/// The blog's writes keep their prepared statements (`larder::KeepPrepared`):
/// diesel alone prepares every `INSERT` and `UPDATE` again.
#[test]
fn the_blogs_writes_are_prepared_once_per_connection() {
    each_backend(|target| {
        let db = target.fresh();
        let ((), prepared) = statements_prepared(&db, |conn| {
            for n in 0..3 {
                let new = NewUser {
                    name: format!("u{n}"),
                    email: format!("u{n}@example.org"),
                };
                let created = <larder_blog::User as larder::Entity>::insert(conn, &new).unwrap();
                let changes = larder_blog::UserChanges {
                    name: Some(format!("v{n}")),
                    email: None,
                };
                let updated =
                    <larder_blog::User as larder::Entity>::update(conn, created.id, &changes);
                assert_eq!(updated.unwrap().map(|u| u.name), Some(format!("v{n}")));
            }
        });
        common::assert_each_write_prepared_once(&db, &prepared);
    });
}

/// PostgreSQL refuses every statement after a failed one and turns COMMIT into
/// a silent ROLLBACK; larder makes every backend refuse both alike, so a
/// caller that swallowed the error cannot believe its other writes landed
/// (nor, where the failure ended the transaction, make them land on their own).
#[test]
fn a_transaction_with_a_failed_statement_cannot_commit() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let tx = db.store.begin().unwrap();
        let bob = tx
            .users()
            .create(NewUser {
                name: "bob".into(),
                email: "bob@example.org".into(),
            })
            .unwrap();
        let dup = tx.users().create(NewUser {
            name: "dup".into(),
            email: ann.email.clone(),
        });
        assert!(dup.unwrap_err().is_conflict());
        // The caller ignores the conflict and carries on: the next statement
        // is refused.
        let refused = tx
            .users()
            .create(NewUser {
                name: "cid".into(),
                email: "cid@example.org".into(),
            })
            .unwrap_err();
        assert!(
            matches!(
                refused,
                Error::TransactionAborted {
                    table: Some("users"),
                    ..
                }
            ),
            "{refused:?}"
        );
        assert!(!refused.is_retryable());
        let err = tx.commit().unwrap_err();
        assert!(
            matches!(
                err,
                Error::TransactionAborted {
                    table: None,
                    source: None,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("not committed"), "{err}");
        assert!(!err.is_retryable() && !err.is_conflict(), "{err:?}");
        assert!(
            user_in_db(&db.store, bob.id).is_none(),
            "a write of the refused transaction landed"
        );
        common::assert_pool_idle(&db.store);
        user(&db.store, "after");
    });
}

/// Ends every other session on the test database, as a server restart would,
/// and waits until the server has let them go.
fn kill_other_connections(db: &TestDb) -> usize {
    use diesel::sql_types::BigInt;
    let mut admin = larder::Connection::establish(&db.url()).unwrap();
    let ids_sql = match db.backend {
        Backend::Postgres => {
            "SELECT CAST(pid AS BIGINT) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()"
        }
        _ => {
            "SELECT CAST(id AS SIGNED) FROM information_schema.processlist \
              WHERE db = DATABASE() AND id <> CONNECTION_ID()"
        }
    };
    let others = |admin: &mut larder::Connection| -> Vec<i64> {
        let query = diesel::dsl::sql::<BigInt>(ids_sql);
        larder::with_connection!(admin, |c| query.load(c)).unwrap()
    };
    let ids = others(&mut admin);
    for id in &ids {
        let kill = match db.backend {
            Backend::Postgres => format!("SELECT pg_terminate_backend({id})"),
            _ => format!("KILL {id}"),
        };
        admin.batch_execute(&kill).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while others(&mut admin).iter().any(|id| ids.contains(id)) {
        assert!(Instant::now() < deadline, "killed sessions linger");
        std::thread::sleep(Duration::from_millis(2));
    }
    ids.len()
}

/// How soon after a pooled connection's last success the call under test
/// must have returned to have met it trusted: the pool trusts a connection
/// for 500 ms after it last succeeded and pings it after that, with a margin.
const TRUSTED_WINDOW: Duration = Duration::from_millis(400);

/// An attempt slower than this did not miss the window by a loaded
/// machine's delay: it waited for a timeout.
const WAITED: Duration = Duration::from_secs(10);

/// Runs `attempt` (set up connections, lose them, make the call under test)
/// until its call returns within [`TRUSTED_WINDOW`] of the moment it gives
/// (its connections' last use), and returns that run's result. On a loaded
/// machine the set-up alone (sessions killed and their exit awaited) can
/// outlast the window: the call then meets connections the pool pings, and
/// that run tests nothing. A loss reported only after a timeout fails at once.
fn in_trusted_window<T>(mut attempt: impl FnMut() -> (Instant, T)) -> T {
    let mut slow = Vec::new();
    while slow.len() < 20 {
        let (used, value) = attempt();
        let took = used.elapsed();
        assert!(took < WAITED, "the call waited {took:?}: a timeout");
        if took < TRUSTED_WINDOW {
            return value;
        }
        slow.push(took);
    }
    panic!("too slow to test the trusted window in any attempt: {slow:?}");
}

/// A pool of two that has just served reads, both connections in use
/// within the last moment (so trusted, not pinged, at their next checkout).
fn warm_pool(db: &TestDb, id: i64) -> Instant {
    let a = db.store.begin().unwrap();
    a.users().get(id).unwrap();
    // A second transaction, on a thread of its own (one thread holds one).
    common::on_another_thread(|| db.store.begin().unwrap().users().get(id).unwrap());
    drop(a);
    db.store.clear_cache();
    Instant::now()
}

/// The server dropped every pooled connection while they sat trusted in the
/// pool: the next miss's load meets a dead connection that skipped its ping,
/// and is retried on a live one, so the caller never sees the loss.
#[test]
fn a_read_on_connections_killed_while_trusted_is_retried() {
    each_backend(|target| {
        if target.backend == Backend::Sqlite {
            return;
        }
        let db = target.fresh_with(|b| b.pool_size(2));
        let ann = user(&db.store, "ann");
        let bob = user(&db.store, "bob");
        let got = in_trusted_window(|| {
            let used = warm_pool(&db, ann.id);
            assert!(kill_other_connections(&db) >= 2);
            (used, db.store.users().get(ann.id))
        });
        assert_eq!(got.unwrap().unwrap().name, "ann");
        assert_eq!(
            db.store.users().cached(ann.id),
            user_in_db(&db.store, ann.id)
        );

        // Loads of many rows alike.
        let got = in_trusted_window(|| {
            let used = warm_pool(&db, ann.id);
            assert!(kill_other_connections(&db) >= 2);
            (used, db.store.users().get_many(&[ann.id, bob.id]))
        });
        assert_eq!(got.unwrap().len(), 2);
        common::assert_pool_idle(&db.store);
    });
}

/// A write that meets such a dead connection is not retried (it may have
/// committed): it fails with `ConnectionLost`, the cache still agrees with
/// the database, and the next write works.
#[test]
fn a_write_on_a_connection_killed_while_trusted_fails_with_connection_lost() {
    each_backend(|target| {
        if target.backend == Backend::Sqlite {
            return;
        }
        let db = target.fresh_with(|b| b.pool_size(2));
        let ann = user(&db.store, "ann");
        // A run past the window may have written (its connection pinged and
        // replaced): only the run within it is checked.
        let err = in_trusted_window(|| {
            let used = warm_pool(&db, ann.id);
            db.store.users().get(ann.id).unwrap();
            assert!(kill_other_connections(&db) >= 2);
            (used, db.store.users().update(ann.id, rename("ann2")))
        })
        .unwrap_err();
        assert_users_connection_lost(&err);
        assert_eq!(
            db.store.users().cached(ann.id),
            None,
            "the write's key was invalidated"
        );
        assert_eq!(
            db.store.users().get(ann.id).unwrap(),
            user_in_db(&db.store, ann.id)
        );
        let renamed = db.store.users().update(ann.id, rename("ann3")).unwrap();
        assert_eq!(renamed.name, "ann3");
        assert_eq!(db.store.users().get(ann.id).unwrap().unwrap().name, "ann3");
        common::assert_pool_idle(&db.store);
    });
}

/// An idle pooled connection that the network reset (a RST before the
/// client sends again: a load balancer resetting the flows it expires, a
/// keepalive probe answered by a restarted host) is lost like a killed one:
/// a read is retried, a write fails with `ConnectionLost`. MariaDB's client
/// library then reports the next statement as "Server has gone away".
#[test]
fn connections_reset_while_trusted_are_lost_connections() {
    each_backend(|target| {
        if target.backend == Backend::Sqlite {
            return;
        }
        let db = target.fresh();
        let proxy = common::proxy::Proxy::start(&db.url());
        let store = larder_blog::builder(&proxy.url())
            .coherence(false)
            .pool_size(1)
            .build()
            .unwrap();
        let ann = user(&store, "ann");
        let got = in_trusted_window(|| {
            // A load: the pool's one connection, just used.
            store.clear_cache();
            store.users().get(ann.id).unwrap();
            store.clear_cache();
            let used = Instant::now();
            proxy.reset();
            (used, store.users().get(ann.id))
        });
        assert_eq!(got.unwrap().map(|u| u.name.clone()).as_deref(), Some("ann"));

        let err = in_trusted_window(|| {
            store.clear_cache();
            store.users().get(ann.id).unwrap();
            let used = Instant::now();
            proxy.reset();
            (used, store.users().update(ann.id, rename("ann2")))
        })
        .unwrap_err();
        assert_users_connection_lost(&err);
        let renamed = store.users().update(ann.id, rename("ann3")).unwrap();
        assert_eq!(renamed.name, "ann3");
        common::assert_pool_idle(&store);
    });
}

#[test]
fn lost_connections_give_typed_errors_and_are_replaced() {
    each_backend(|target| {
        if target.backend == Backend::Sqlite {
            return; // an embedded database has no connection to lose
        }
        let db = target.fresh_with(|b| b.pool_size(2));
        let ann = user(&db.store, "ann");
        let in_flight = db.store.begin().unwrap();
        assert!(kill_other_connections(&db) >= 1);

        // The transaction's connection is gone: a typed error, not a hang.
        let err = in_flight.users().get(ann.id).unwrap_err();
        assert_users_connection_lost(&err);
        let source = std::error::Error::source(&err).expect("the driver's error");
        assert!(source.is::<diesel::result::Error>(), "{source:?}");
        drop(in_flight);

        // Dead pooled connections are replaced at checkout: the next calls work.
        db.store.clear_cache();
        assert_eq!(db.store.users().get(ann.id).unwrap().unwrap().name, "ann");
        user(&db.store, "bob");
        let state = db.store.stats().pool;
        assert!(state.connections <= 2, "{state:?}");
    });
}

/// `ConnectionLost` on the `users` table, which the caller may retry.
fn assert_users_connection_lost(err: &Error) {
    assert!(
        matches!(
            err,
            Error::ConnectionLost {
                table: Some("users"),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable(), "{err:?}");
}

mod set_ids {
    use diesel::prelude::*;
    diesel::table! { labels (id) { id -> BigInt, name -> Text } }
    #[derive(Debug, Clone, Queryable, Selectable)]
    #[diesel(table_name = labels)]
    pub struct Label {
        pub id: i64,
        pub name: String,
    }
    /// The application may set the id, or leave it to the database.
    #[derive(Debug, Insertable)]
    #[diesel(table_name = labels)]
    pub struct NewLabel {
        pub id: Option<i64>,
        pub name: String,
    }
    #[derive(Debug, AsChangeset)]
    #[diesel(table_name = labels)]
    pub struct LabelChanges {
        pub name: Option<String>,
    }
    larder::entity!(Label {
        table: labels,
        new: NewLabel,
        changes: LabelChanges,
    });
}

/// `create` of a row whose id the application sets returns (and caches)
/// that row. On MySQL, whose `create` read its row back by
/// `LAST_INSERT_ID()`, which an explicit id leaves as it was, it returned
/// the row of the connection's previous generated id: another row, cached
/// as the new one.
#[test]
fn create_with_an_id_the_application_sets_returns_that_row() {
    use set_ids::{Label, NewLabel};
    each_backend(|target| {
        let db = target.fresh();
        db.raw(&format!(
            "CREATE TABLE labels (id {}, name TEXT NOT NULL)",
            common::serial_key(db.backend)
        ));
        let store = larder::Store::builder(&db.url())
            .coherence(false)
            .pool_size(1)
            .entity::<Label>()
            .build()
            .unwrap();
        let labels = store.repo::<Label>();
        let new = |id: Option<i64>, name: &str| NewLabel {
            id,
            name: name.into(),
        };
        let generated = labels.create(new(None, "generated")).unwrap();
        assert_eq!(generated.name, "generated");
        let set = labels.create(new(Some(4242), "set")).unwrap();
        assert_eq!((set.id, set.name.as_str()), (4242, "set"));
        let after = labels.create(new(None, "after")).unwrap();
        assert_eq!(after.name, "after");
        assert_ne!(after.id, generated.id);
        store.clear_cache();
        for row in [&generated, &set, &after] {
            assert_eq!(labels.get(row.id).unwrap().unwrap().name, row.name);
        }
        // The generated id's row comes back with the insert (RETURNING) or in
        // one more statement (MySQL), whichever sets the id.
        for id in [None, Some(4343)] {
            let (created, sent) = statements_sent(&db, |conn| {
                <Label as larder::Entity>::insert(conn, &new(id, "counted")).unwrap()
            });
            assert_eq!(created.name, "counted");
            let expected = if db.is(Backend::Mysql) { 2 } else { 1 };
            assert_eq!(sent.len(), expected, "{sent:?}");
        }
    });
}
