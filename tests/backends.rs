//! Backend differences that bite a cache: a statement that fails inside a
//! transaction (PostgreSQL aborts the whole transaction), and server-side
//! connection loss (a restart, `pg_terminate_backend`, MySQL's `KILL`).

mod common;

use common::{each_backend, user, user_in_db, TestDb};
use diesel::connection::SimpleConnection;
use diesel::RunQueryDsl;
use larder::{Backend, Error};
use larder_blog::prelude::*;
use larder_blog::NewUser;

/// PostgreSQL refuses every statement after a failed one and turns COMMIT into
/// a silent ROLLBACK; larder makes every backend refuse the commit alike, so a
/// caller that swallowed the error cannot believe its other writes landed.
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
        // The caller ignores the conflict and carries on: PostgreSQL refuses
        // the next statement (25P02), the others run it.
        let cid = tx.users().create(NewUser {
            name: "cid".into(),
            email: "cid@example.org".into(),
        });
        if db.is(Backend::Postgres) {
            let refused = cid.unwrap_err();
            assert!(
                matches!(
                    refused,
                    Error::TransactionAborted {
                        table: Some("users"),
                        source: Some(_),
                        ..
                    }
                ),
                "{refused:?}"
            );
            assert!(!refused.is_retryable());
        } else {
            cid.unwrap();
        }
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

/// Ends every other session on the test database, as a server restart would.
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
    let query = diesel::dsl::sql::<BigInt>(ids_sql);
    let ids: Vec<i64> = larder::with_connection!(&mut admin, |c| query.load(c)).unwrap();
    for id in &ids {
        let kill = match db.backend {
            Backend::Postgres => format!("SELECT pg_terminate_backend({id})"),
            _ => format!("KILL {id}"),
        };
        admin.batch_execute(&kill).unwrap();
    }
    ids.len()
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
