//! PostgreSQL behind a transaction-mode pooler (PgBouncer's
//! `pool_mode = transaction`, from `scripts/pgbouncer.sh`; skipped, with a
//! note, when `LARDER_TEST_PGBOUNCER_URL` is unset, and required in CI).
//!
//! Such a pooler lends a server session to a client for one transaction at a
//! time: the watcher's `LISTEN` stays on a session the watcher no longer
//! holds, and the pooler drops the notifications that reach it meanwhile.
//! What users rely on: a store never caches behind a watcher that cannot
//! hear other processes' changes (it refuses to build, naming the way out),
//! and with `session_url` reaching the server directly it hears them while
//! its pool goes through the pooler.

mod common;

use std::time::Duration;

use common::{Target, TestDb};
use larder::{Backend, Error, Store};
use larder_blog::prelude::*;

const BOUND: Duration = Duration::from_millis(500);

fn postgres() -> Option<Target> {
    common::targets()
        .into_iter()
        .find(|t: &Target| t.backend == Backend::Postgres)
}

/// A fresh PostgreSQL test database with user "ann", and its URL through the
/// pooler; `None` when either server is not configured.
fn pooled_database() -> Option<(TestDb, String, i64)> {
    let db = postgres()?.fresh();
    let pooled = common::through_pooler(&db)?;
    let ann = common::user(&db.store, "ann").id;
    Some((db, pooled, ann))
}

fn name_of(store: &Store, id: i64) -> Option<String> {
    store.users().get(id).unwrap().map(|u| u.name.clone())
}

#[test]
fn a_store_whose_watcher_would_listen_through_a_transaction_pooler_is_refused() {
    let Some((_db, pooled, _)) = pooled_database() else {
        return;
    };
    match Store::builder(&pooled).max_staleness(BOUND).build() {
        Err(Error::InvalidConfig { reason }) => {
            assert!(reason.contains("session_url"), "{reason}");
        }
        Err(other) => panic!("expected InvalidConfig, got {other:?}"),
        Ok(_) => panic!("a watcher behind a transaction-mode pooler hears nothing"),
    }
}
#[test]
fn with_a_session_url_a_store_behind_a_transaction_pooler_hears_other_processes() {
    let Some((db, pooled, ann)) = pooled_database() else {
        return;
    };
    // One connection: PgBouncer 1.18 (see scripts/pgbouncer.sh) keeps
    // diesel's prepared statements only while every client shares one
    // server session.
    let store = Store::builder(&pooled)
        .pool_size(1)
        .session_url(&db.url())
        .max_staleness(BOUND)
        .build()
        .expect("a store with a direct session URL");
    assert_eq!(name_of(&store, ann).as_deref(), Some("ann"));
    db.raw(&format!("UPDATE users SET name = 'Ann' WHERE id = {ann}"));
    std::thread::sleep(BOUND);
    assert_eq!(name_of(&store, ann).as_deref(), Some("Ann"));
    let coherence = store.stats().coherence;
    assert_eq!(coherence.flushes, 0, "heard, not flushed: {coherence:?}");

    // Named locks live in the session URL's sessions, not in lent ones.
    let guard = store.lock("pooled").expect("lock");
    let other = Store::builder(&db.url()).build().expect("direct store");
    assert!(
        other.try_lock("pooled").expect("try_lock").is_none(),
        "the lock is held on the server"
    );
    drop(guard);
    assert!(other.try_lock("pooled").expect("try_lock").is_some());
}

/// The probe is what proves a session URL right: one that reaches another
/// database would listen where nothing of this store's is ever notified.
#[test]
fn a_session_url_that_reaches_another_database_is_refused() {
    let Some(target) = postgres() else {
        return;
    };
    let (a, b) = (target.fresh(), target.fresh());
    match Store::builder(&a.url()).session_url(&b.url()).build() {
        Err(Error::InvalidConfig { reason }) => {
            assert!(reason.contains("same database"), "{reason}");
        }
        Err(other) => panic!("expected InvalidConfig, got {other:?}"),
        Ok(_) => panic!("a watcher on another database hears none of this store's changes"),
    }
}

#[test]
fn a_session_url_is_refused_off_postgresql_and_keeps_its_password() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let builder = Store::builder(&url).session_url("postgres://app:s3cret@db/blog");
    let debug = format!("{builder:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    match builder.build() {
        Err(Error::InvalidConfig { reason }) => {
            assert!(reason.contains("PostgreSQL only"), "{reason}");
            assert!(!reason.contains("s3cret"), "{reason}");
        }
        Err(other) => panic!("expected InvalidConfig, got {other:?}"),
        Ok(_) => panic!("SQLite has no server sessions to point elsewhere"),
    }
}

/// review FF: through a transaction-mode pooler, the check for a
/// transaction the application's SQL left open (a `DO` block comparing
/// `statement_timestamp()` with `transaction_timestamp()`, sent after SQL
/// that names `BEGIN`) finds none after SQL that ended its own, however
/// often it runs, and still finds one left open.
#[test]
fn through_a_transaction_pooler_the_check_for_an_open_transaction_is_exact() {
    let Some((db, pooled, ann)) = pooled_database() else {
        return;
    };
    let store = Store::builder(&pooled)
        .pool_size(1)
        .session_url(&db.url())
        .max_staleness(BOUND)
        .build()
        .expect("a store with a direct session URL");
    for round in 0..50 {
        let ended = store.users().run(None, |conn| {
            use diesel::connection::SimpleConnection;
            conn.batch_execute(&format!(
                "BEGIN; UPDATE users SET name = 'ann{round}' WHERE id = {ann}; COMMIT"
            ))
        });
        assert!(ended.is_ok(), "round {round}: {ended:?}");
        let diesels = store.users().run(None, |conn| {
            use diesel::Connection as _;
            larder::with_connection!(conn, |c| c.transaction(|c| {
                diesel::RunQueryDsl::execute(diesel::sql_query("SELECT 1"), c)
            }))
        });
        assert!(diesels.is_ok(), "round {round}: {diesels:?}");
    }
    let left_open = store.users().run(None, |conn| {
        use diesel::connection::SimpleConnection;
        conn.batch_execute(&format!(
            "BEGIN; UPDATE users SET name = 'eve' WHERE id = {ann}"
        ))
    });
    assert!(
        matches!(left_open, Err(Error::InvalidConfig { .. })),
        "{left_open:?}"
    );
    store.users().invalidate(ann);
    assert_eq!(name_of(&store, ann).as_deref(), Some("ann49"));
}
