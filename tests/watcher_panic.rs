//! A watcher thread that panics (an application's tracing layer panicking
//! on one of its events, a bug) must not leave the store serving what it
//! cached for good. Its own test binary: the panicking layer is installed as
//! the process's global subscriber.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use larder::Store;
use larder_blog::prelude::*;
use tracing_subscriber::layer::SubscriberExt;

/// Set by the test; the next event of the watcher about a change it applied
/// panics, once.
static ARMED: AtomicBool = AtomicBool::new(false);

/// Panics on the watcher's "change from the database" event when armed.
struct PanicOnWatcherEvent;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PanicOnWatcherEvent {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let on_watcher = std::thread::current().name() == Some("larder-watcher");
        if on_watcher && is_change(event) && ARMED.swap(false, Ordering::SeqCst) {
            panic!("an application's tracing layer panicked on the watcher thread");
        }
    }
}

fn is_change(event: &tracing::Event<'_>) -> bool {
    struct Message(bool);
    impl tracing::field::Visit for Message {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 |= format!("{value:?}").contains("change from the database");
            }
        }
    }
    let mut message = Message(false);
    event.record(&mut message);
    message.0
}

fn install_panicking_layer() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(PanicOnWatcherEvent);
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
    });
}

const BOUND: Duration = Duration::from_millis(500);

/// Polls `store`'s cached name of user `id` until it reads `expected`, at
/// most `within`; returns what it read last.
fn name_within(store: &Store, id: i64, expected: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let name = store
            .users()
            .get(id)
            .unwrap()
            .expect("the user")
            .name
            .clone();
        if name == expected || Instant::now() >= deadline {
            return name;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_watcher_that_panicked_leaves_no_cached_row_stale_for_good() {
    install_panicking_layer();
    common::each_backend(|target| {
        let db = target.fresh();
        let ann = common::user(&db.store, "ann");
        let watched = Store::builder(&db.url())
            .max_staleness(BOUND)
            .build()
            .expect("a coherent store");
        assert_eq!(name_within(&watched, ann.id, "ann", BOUND), "ann");

        // The watcher applies this change, then panics on its event.
        ARMED.store(true, Ordering::SeqCst);
        // Raw SQL on a connection of its own, as another process writes.
        let rename = |name: &str| {
            db.raw(&format!(
                "UPDATE users SET name = '{name}' WHERE id = {}",
                ann.id
            ));
        };
        rename("first");
        assert_eq!(name_within(&watched, ann.id, "first", 10 * BOUND), "first");
        let deadline = Instant::now() + 10 * BOUND;
        while ARMED.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !ARMED.load(Ordering::SeqCst),
            "the watcher never met the layer"
        );

        // With the watcher gone, nothing reads this change: the store must
        // still stop serving "first" within a bound.
        rename("second");
        assert_eq!(
            name_within(&watched, ann.id, "second", 10 * BOUND),
            "second",
            "the store kept serving a row another store changed: {:?}",
            watched.stats().coherence
        );
    });
}
