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

/// A fresh PostgreSQL test database with user "ann", and its URL through the
/// pooler; `None` when either server is not configured.
fn pooled_database() -> Option<(TestDb, String, i64)> {
    let target = common::targets()
        .into_iter()
        .find(|t: &Target| t.backend == Backend::Postgres)?;
    let db = target.fresh();
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
