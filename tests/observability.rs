//! larder's tracing: pool checkouts, cache hits, misses, fills and
//! invalidations, commits and rollbacks are traced, and no password reaches
//! the log.

mod common;

use larder_blog::prelude::*;
use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{each_backend, rename, user};
use larder::{Backend, Store};

/// A log sink the test can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Runs `work` with every larder event, down to TRACE, written to the returned log.
fn traced(work: impl FnOnce()) -> String {
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::NEW)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, work);
    log.text()
}

#[test]
fn cache_pool_and_transaction_events_are_traced() {
    each_backend(|target| {
        let db = target.fresh();
        let log = traced(|| {
            let ann = user(&db.store, "ann");
            db.store.users().get(ann.id).unwrap();
            db.store.clear_cache();
            db.store.users().get(ann.id).unwrap();
            db.store
                .transaction(|tx| tx.users().update(ann.id, rename("Ann")))
                .unwrap();
            let dropped = db.store.begin().unwrap();
            dropped.users().update(ann.id, rename("never")).unwrap();
        });
        for event in [
            "pool_checkout",
            "cache hit",
            "cache miss: loading",
            "cache fill",
            "invalidated",
            "transaction committed",
            "transaction rolled back",
        ] {
            assert!(log.contains(event), "no {event:?} in the log:\n{log}");
        }
    });
}

#[test]
fn a_password_in_the_url_never_reaches_the_log() {
    each_backend(|target| {
        if target.backend != Backend::Postgres {
            return; // the test servers accept any password only on PostgreSQL (trust)
        }
        let db = target.fresh();
        let url = db
            .url()
            .replacen("://postgres@", "://postgres:log-s3cret@", 1);
        assert!(url.contains("log-s3cret"), "{url}");
        let log = traced(|| {
            let store = Store::open(&url).unwrap();
            let ann = user(&store, "ann");
            store.users().get(ann.id).unwrap();
            tracing::info!(store = ?store, "the application logs its store");
            let _ = Store::open(&url.replace("127.0.0.1:5432", "127.0.0.1:1"));
        });
        assert!(log.contains("the application logs its store"), "{log}");
        assert!(
            !log.contains("log-s3cret"),
            "a password reached the log:\n{log}"
        );
    });
}
