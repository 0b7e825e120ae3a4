//! The async API (cargo feature `tokio`): a hit never leaves the task's
//! thread, a miss never blocks a runtime worker, concurrent async misses
//! share one load without parking threads, transactions keep their
//! guarantees on the blocking pool, and the cache stays coherent.
//!
//! No assertion depends on timing: each test orders its events with latches,
//! and a runtime that could not make progress fails a bounded wait (30 s)
//! instead of hanging.
#![cfg(feature = "tokio")]

mod common;

use larder_blog::prelude::*;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use common::interleave::Latch;
use common::{assert_pool_idle, each_backend, rename, user, user_in_db};
use larder::{AsyncRepo, Connection, Error, Interruption};
use larder_blog::{NewUser, User};
use tokio::runtime::Runtime;

static FLIGHT_LOADS: AtomicUsize = AtomicUsize::new(0);
static FLIGHT_RELEASE: Latch = Latch::new();
user_entity!(CoalescedUser, || {
    FLIGHT_LOADS.fetch_add(1, Ordering::SeqCst);
    FLIGHT_RELEASE.wait();
});

static RACE_READ: Latch = Latch::new();
static RACE_RELEASE: Latch = Latch::new();
user_entity!(RacingUser, || {
    RACE_READ.open();
    RACE_RELEASE.wait();
});

/// A single-threaded runtime whose blocking pool has one thread: whatever
/// went through it would queue behind whatever holds that thread.
fn one_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(1)
        .enable_time()
        .build()
        .unwrap()
}

/// Polls `future` once, as a runtime's first poll would.
fn first_poll<F: Future>(future: F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    pin!(future).poll(&mut cx)
}

/// Awaits `condition`, checked every 2 ms, for up to 30 s.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Starts a `get` of `missing` on a task of its own and returns once that
/// task runs: the held-up miss both hung-front-page tests make hits around.
async fn started_miss(
    users: &AsyncRepo<User>,
    missing: i64,
) -> tokio::task::JoinHandle<larder::Result<Option<Arc<User>>>> {
    let (started, start) = tokio::sync::oneshot::channel();
    let miss = tokio::spawn({
        let users = users.clone();
        async move {
            let _ = started.send(());
            users.get(missing).await
        }
    });
    start.await.unwrap();
    miss
}

/// Every future the API returns is `Send` (an axum handler's must be), and
/// the repository is a `'static` value that can move into a task.
#[test]
fn the_futures_are_send_and_the_repository_is_static() {
    fn send<T: Send>(_: T) {}
    fn owned<T: Send + Sync + Clone + std::fmt::Debug + 'static>(_: &T) {}
    let db = common::fresh();
    let users: AsyncRepo<User> = db.store.async_repo::<User>();
    owned(&users);
    send(users.get(1));
    send(users.get_many(vec![1, 2]));
    send(users.create(NewUser {
        name: "ann".into(),
        email: "a@example.org".into(),
    }));
    send(users.update(1, rename("bob")));
    send(users.delete(1));
    send(users.cached_query("all".into(), vec!["users"], |_| Ok(Vec::new())));
    send(users.cached_value("n".into(), vec!["users"], |_| Ok(0_i64)));
    send(db.store.transaction_async(|_| Ok(())));
    send(db.store.blocking(|_| Ok(())));
    // Moved into a spawned task whole.
    let runtime = one_thread_runtime();
    let task = runtime.spawn(async move { users.get(1).await.map(|u| u.is_none()) });
    assert!(runtime.block_on(task).unwrap().unwrap());
}

/// A hit completes in the first poll: it never goes through the blocking
/// pool (a spawned task cannot have finished by then), and it still
/// completes while that pool's only thread is taken. It is counted, and
/// returns the cached `Arc`, as the sync `get` does.
#[test]
fn a_hit_is_served_inline() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann"); // cached as created
        let users = db.store.async_repo::<User>();
        let runtime = one_thread_runtime();
        let _inside = runtime.enter(); // the blocking pool is there to be used

        let hits = db.store.stats().entity("users").hits;
        match first_poll(users.get(ann.id)) {
            Poll::Ready(Ok(Some(got))) => assert!(Arc::ptr_eq(&got, &ann)),
            Poll::Ready(other) => panic!("a hit failed: {other:?}"),
            Poll::Pending => panic!("a hit left the task's thread"),
        }
        assert_eq!(db.store.stats().entity("users").hits, hits + 1);
        match first_poll(users.get_many(vec![ann.id, ann.id])) {
            Poll::Ready(Ok(rows)) => assert!(rows.len() == 1 && Arc::ptr_eq(&rows[0], &ann)),
            _ => panic!("a batch of hits left the task's thread"),
        }

        // The same, on a runtime whose one blocking thread is held.
        static HELD: Latch = Latch::new();
        HELD.reset();
        let holder = runtime.spawn_blocking(|| HELD.wait());
        runtime.block_on(async {
            let got = tokio::time::timeout(Duration::from_secs(30), users.get(ann.id))
                .await
                .expect("a hit waited for the blocking pool")
                .unwrap()
                .unwrap();
            assert!(Arc::ptr_eq(&got, &ann));
        });
        HELD.open();
        runtime.block_on(holder).unwrap();
    });
}

/// A cached list is served in the first poll too, and the list cache counts
/// one miss and one hit for a first call and a second, as the sync one does.
#[test]
fn a_cached_list_is_served_inline() {
    use diesel::prelude::*;
    use larder_blog::schema::users as users_table;
    each_backend(|target| {
        let db = target.fresh();
        user(&db.store, "ann");
        let users = db.store.async_repo::<User>();
        let runtime = one_thread_runtime();
        let query = || {
            users.cached_query("users named ann".into(), vec!["users"], |conn| {
                let query = users_table::table.filter(users_table::name.eq("ann"));
                larder::with_connection!(conn, |c| query.load(c))
            })
        };
        let count = || {
            users.cached_value("users.count".into(), vec!["users"], |conn| {
                let query = users_table::table.count();
                larder::with_connection!(conn, |c| query.get_result::<i64>(c))
            })
        };
        let before = db.store.stats().queries;
        let first = runtime.block_on(query()).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(runtime.block_on(count()).unwrap(), 1);
        let _inside = runtime.enter();
        match first_poll(query()) {
            Poll::Ready(Ok(rows)) => assert!(Arc::ptr_eq(&rows[0], &first[0])),
            _ => panic!("a cached list left the task's thread"),
        }
        assert!(matches!(first_poll(count()), Poll::Ready(Ok(1))));
        let after = db.store.stats().queries;
        assert_eq!(after.misses - before.misses, 2, "one miss per query");
        assert_eq!(after.hits - before.hits, 2, "one hit per query");
    });
}

/// The hung front page: a miss waits for the database (every pooled
/// connection busy) while other requests' hits keep completing on the same
/// single-threaded runtime. Were the miss run inline, it would block the
/// runtime's only worker until the pool timeout, and end with it.
#[test]
fn a_miss_waiting_for_the_pool_does_not_stop_hits() {
    each_backend(|target| {
        static HOLD: Latch = Latch::new();
        HOLD.reset();
        let db = target.fresh_with(|b| b.pool_size(2).connection_timeout(Duration::from_secs(30)));
        let cached = user(&db.store, "cached");
        let missing = user(&db.store, "missing").id;
        db.store.users().invalidate(missing);
        let holders: Vec<_> = (0..2)
            .map(|_| {
                let store = db.store.clone();
                std::thread::spawn(move || {
                    store.users().run(None, |_| {
                        HOLD.wait();
                        Ok(())
                    })
                })
            })
            .collect();
        let runtime = one_thread_runtime();
        runtime.block_on(async {
            eventually("every connection taken", || db.store.stats().pool.idle == 0).await;
            let users = db.store.async_repo::<User>();
            let miss = started_miss(&users, missing).await;
            for _ in 0..100 {
                let got = users.get(cached.id).await.unwrap().unwrap();
                assert!(Arc::ptr_eq(&got, &cached));
            }
            assert!(
                !miss.is_finished(),
                "the miss blocked the runtime's worker until it gave up: {:?}",
                miss.await
            );
            HOLD.open();
            let loaded = miss.await.unwrap().unwrap().unwrap();
            assert_eq!(loaded.name, "missing");
        });
        for holder in holders {
            holder.join().unwrap().unwrap();
        }
    });
}

/// The same with a table lock held by another session (PostgreSQL, where a
/// plain read waits behind `ACCESS EXCLUSIVE`): the 4 s row lock of the issue.
#[test]
fn a_miss_behind_a_table_lock_does_not_stop_hits() {
    each_backend(|target| {
        if !matches!(target.backend, larder::Backend::Postgres) {
            return;
        }
        static HOLD: Latch = Latch::new();
        HOLD.reset();
        let db = target.fresh();
        let cached = user(&db.store, "cached");
        let missing = user(&db.store, "missing").id;
        db.store.users().invalidate(missing);
        let url = db.url();
        let (locked, lock_taken) = std::sync::mpsc::channel();
        let locker = std::thread::spawn(move || {
            use diesel::connection::SimpleConnection;
            let mut conn = Connection::establish(&url).unwrap();
            conn.batch_execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
                .unwrap();
            locked.send(()).unwrap();
            HOLD.wait();
            conn.batch_execute("COMMIT").unwrap();
        });
        lock_taken.recv().unwrap();
        let runtime = one_thread_runtime();
        runtime.block_on(async {
            let users = db.store.async_repo::<User>();
            let miss = started_miss(&users, missing).await;
            for _ in 0..100 {
                assert!(users.get(cached.id).await.unwrap().is_some());
            }
            assert!(
                !miss.is_finished(),
                "the miss blocked the runtime's worker: {:?}",
                miss.await
            );
            HOLD.open();
            assert!(miss.await.unwrap().unwrap().is_some());
        });
        locker.join().unwrap();
    });
}

/// Sixteen tasks miss one key at once: one load runs (held open until every
/// task has missed), the others await it, and all get the same `Arc`. The
/// blocking pool has two threads and the load holds one: the other must stay
/// free while the fifteen wait (a waiter that parked a thread to wait would
/// take it, and the probe job below would never run before the release).
#[test]
fn concurrent_async_misses_share_one_load() {
    const TASKS: u64 = 16;
    each_backend(|target| {
        FLIGHT_RELEASE.reset();
        FLIGHT_LOADS.store(0, Ordering::SeqCst);
        let db = target.fresh_with(|b| b.entity::<CoalescedUser>());
        let id = user(&db.store, "ann").id;
        let before = db.store.stats().entity("users");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let values = runtime.block_on(async {
            let users = db.store.async_repo::<CoalescedUser>();
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let users = users.clone();
                    tokio::spawn(async move { users.get(id).await })
                })
                .collect();
            eventually("every task to miss", || {
                db.store.stats().entity("users").misses - before.misses == TASKS
            })
            .await;
            tokio::time::timeout(Duration::from_secs(30), tokio::task::spawn_blocking(|| ()))
                .await
                .expect("the waiters parked the blocking pool's free thread")
                .unwrap();
            FLIGHT_RELEASE.open();
            let mut values = Vec::new();
            for task in tasks {
                values.push(task.await.unwrap().unwrap().unwrap());
            }
            values
        });
        assert_eq!(
            FLIGHT_LOADS.load(Ordering::SeqCst),
            1,
            "misses were not coalesced"
        );
        let after = db.store.stats().entity("users");
        assert_eq!(after.loads - before.loads, 1);
        assert!(values.iter().all(|v| Arc::ptr_eq(v, &values[0])));
        let cached = db.store.repo::<CoalescedUser>().cached(id).unwrap();
        assert!(Arc::ptr_eq(&cached, &values[0]), "the load was not cached");
    });
}

/// A sync `get` on the blocking pool (an application's query method run by
/// `Store::blocking`) of a key whose async miss leads a load that is still
/// queued for a blocking thread: were the sync caller to wait for that load
/// on its thread, and every thread of the pool be taken so (here its only
/// one), the load would never run and both would wait for good. It loads
/// for itself instead; the queued load then runs as usual.
#[test]
fn a_sync_get_does_not_wait_for_an_async_load_queued_behind_it() {
    each_backend(|target| {
        let db = target.fresh();
        let id = user(&db.store, "ann").id;
        db.store.users().invalidate(id);
        let runtime = one_thread_runtime();
        let taken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let go = Arc::new(Latch::new());
        let outcome = runtime.block_on(async {
            let blocking = tokio::spawn({
                let (store, taken, go) = (db.store.clone(), Arc::clone(&taken), Arc::clone(&go));
                async move {
                    let work = move |store: &larder::Store| {
                        taken.store(true, Ordering::SeqCst);
                        go.wait(); // until the async miss below has queued its load
                        store.users().get(id)
                    };
                    store.blocking(work).await
                }
            });
            eventually("the blocking thread taken", || taken.load(Ordering::SeqCst)).await;
            let users = db.store.async_repo::<User>();
            let mut miss = Box::pin(users.get(id));
            assert!(
                first_poll(miss.as_mut()).is_pending(),
                "the miss leads a load queued behind the blocking work"
            );
            go.open();
            let synced = tokio::time::timeout(Duration::from_secs(10), blocking).await;
            let missed = tokio::time::timeout(Duration::from_secs(10), miss).await;
            (synced, missed)
        });
        // A runtime whose blocking thread never ends cannot be dropped: leave it.
        runtime.shutdown_background();
        let (synced, missed) = outcome;
        let synced = synced
            .expect("the sync get waited for an async load queued behind it")
            .unwrap()
            .unwrap()
            .unwrap();
        let missed = missed
            .expect("the async miss never ended")
            .unwrap()
            .unwrap();
        assert_eq!((synced.name.as_str(), missed.name.as_str()), ("ann", "ann"));
        let cached = db.store.users().cached(id).expect("cached");
        assert!(Arc::ptr_eq(&cached, &missed), "one object for the row");
        assert_pool_idle(&db.store);
    });
}

#[test]
fn a_transaction_commits_on_ok_and_rolls_back_on_err() {
    each_backend(|target| {
        let db = target.fresh_with(|b| b.pool_size(1));
        let ann = user(&db.store, "ann");
        let runtime = one_thread_runtime();
        let id = ann.id;
        runtime
            .block_on(db.store.transaction_async(move |tx| {
                tx.users().update(id, rename("committed"))?;
                Ok(())
            }))
            .unwrap();
        let users = db.store.async_repo::<User>();
        let seen = runtime.block_on(users.get(id)).unwrap().unwrap();
        assert_eq!(seen.name, "committed");

        let failed = runtime.block_on(db.store.transaction_async(move |tx| {
            tx.users().update(id, rename("rolled back"))?;
            Err::<(), _>(Error::NotFound {
                table: "users",
                id: 0,
            })
        }));
        assert!(matches!(failed, Err(Error::NotFound { id: 0, .. })));
        assert_eq!(user_in_db(&db.store, id).unwrap().name, "committed");
        let seen = runtime.block_on(users.get(id)).unwrap().unwrap();
        assert_eq!(seen.name, "committed");
        assert_pool_idle(&db.store);
    });
}

/// A panic inside the transaction's closure rolls it back, comes back as an
/// error (the runtime and its other tasks carry on), and leaves the pool
/// whole: with a pool of one, everything after would time out otherwise.
#[test]
fn a_panic_in_a_transaction_is_an_error_and_leaks_nothing() {
    each_backend(|target| {
        let db = target.fresh_with(|b| b.pool_size(1));
        let ann = user(&db.store, "ann");
        let id = ann.id;
        let runtime = one_thread_runtime();
        let result = runtime.block_on(db.store.transaction_async(move |tx| {
            tx.users().update(id, rename("changed"))?;
            panic!("handler bug (on purpose)");
            #[allow(unreachable_code)]
            Ok(())
        }));
        match &result {
            Err(
                err @ Error::Interrupted {
                    work, interruption, ..
                },
            ) => {
                assert_eq!(*work, "transaction");
                assert_eq!(*interruption, Interruption::Panicked);
                assert_eq!(err.status_code(), 500);
            }
            other => panic!("expected Interrupted, got {other:?}"),
        }
        let users = db.store.async_repo::<User>();
        runtime.block_on(async {
            // The panicked connection was discarded; the pool opens another.
            eventually("the pool back to its size", || {
                let pool = db.store.stats().pool;
                pool.connections == 1 && pool.idle == 1
            })
            .await;
            assert_eq!(users.get(id).await.unwrap().unwrap().name, "ann");
            let after = users.update(id, rename("after")).await.unwrap();
            assert_eq!(after.name, "after");
        });
        assert_eq!(user_in_db(&db.store, id).unwrap().name, "after");
        assert_pool_idle(&db.store);
        let blocked =
            runtime.block_on(db.store.blocking(|_| -> larder::Result<()> {
                panic!("blocking work panics (on purpose)")
            }));
        assert!(matches!(
            blocked,
            Err(Error::Interrupted {
                interruption: Interruption::Panicked,
                ..
            })
        ));
    });
}

/// A task may hold a `Tx` across an `.await` (the future owns the store the
/// `Tx` borrows). An async write through the store from that task runs on
/// the blocking pool, outside the transaction, and waits for its locks
/// while the task that would release them awaits the write: on PostgreSQL
/// for ever. It is refused at once, as in sync code, on whichever worker
/// the task runs by then; other tasks, and the task once its transaction
/// ended, write as usual.
#[test]
fn an_async_write_inside_the_tasks_own_transaction_is_refused() {
    each_backend(|target| {
        let db = target.fresh_with(|b| b.busy_timeout(Duration::from_millis(300)));
        let (ann, bob) = (user(&db.store, "ann").id, user(&db.store, "bob").id);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let store = db.store.clone();
        let holder = runtime.spawn(async move {
            let users = store.async_repo::<User>();
            let tx = store.begin()?;
            tx.users().update(ann, rename("in tx"))?;
            tokio::task::yield_now().await;
            let limit = Duration::from_secs(10);
            let update = tokio::time::timeout(limit, users.update(ann, rename("outside"))).await;
            let delete = tokio::time::timeout(limit, users.delete(ann)).await;
            let nested = tokio::time::timeout(limit, store.transaction_async(|_| Ok(()))).await;
            tx.commit()?;
            let after = users
                .update(ann, rename("after"))
                .await
                .map(|u| u.name.clone());
            Ok::<_, Error>((update, delete, nested, after))
        });
        let (update, delete, nested, after) = runtime.block_on(holder).unwrap().unwrap();
        for (what, result) in [
            ("update", update.map(|r| r.map(drop))),
            ("delete", delete.map(|r| r.map(drop))),
            ("transaction_async", nested),
        ] {
            let result = result.unwrap_or_else(|_| panic!("{what} waited on its own transaction"));
            assert!(
                matches!(result, Err(Error::InsideTransaction { .. })),
                "{what}: {result:?}"
            );
        }
        assert_eq!(after.unwrap(), "after");
        // Another task is not refused.
        let other = runtime.block_on(db.store.async_repo::<User>().update(bob, rename("bobby")));
        assert_eq!(other.unwrap().name, "bobby");
        assert_pool_idle(&db.store);
    });
}

/// The same from sync code: a thread holding a `Tx` that runs an async
/// write (`block_on`) waits for it on its own transaction's locks, unless
/// the write's hop to the blocking pool carries the thread's transactions.
#[test]
fn an_async_write_from_a_thread_inside_its_own_transaction_is_refused() {
    each_backend(|target| {
        let db = target.fresh_with(|b| b.busy_timeout(Duration::from_millis(300)));
        let ann = user(&db.store, "ann").id;
        let users = db.store.async_repo::<User>();
        let runtime = one_thread_runtime();
        let tx = db.store.begin().unwrap();
        tx.users().update(ann, rename("in tx")).unwrap();
        let update = runtime
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(10), users.update(ann, rename("out")))
                    .await
            })
            .expect("the update waited on its own transaction");
        assert!(
            matches!(update, Err(Error::InsideTransaction { .. })),
            "{update:?}"
        );
        tx.commit().unwrap();
        assert_eq!(user_in_db(&db.store, ann).unwrap().name, "in tx");
        assert_pool_idle(&db.store);
    });
}

/// Async writes invalidate what the next async read sees, and deletes too.
#[test]
fn async_writes_are_seen_by_the_next_async_read() {
    each_backend(|target| {
        let db = target.fresh();
        let runtime = one_thread_runtime();
        let users = db.store.async_repo::<User>();
        runtime.block_on(async {
            let ann = users
                .create(NewUser {
                    name: "ann".into(),
                    email: "ann@example.org".into(),
                })
                .await
                .unwrap();
            assert!(Arc::ptr_eq(
                &users.get(ann.id).await.unwrap().unwrap(),
                &ann
            ));
            users.update(ann.id, rename("Ann")).await.unwrap();
            assert_eq!(users.get(ann.id).await.unwrap().unwrap().name, "Ann");
            // Another writer in this process, through the sync API.
            db.store.users().update(ann.id, rename("ANN")).unwrap();
            assert_eq!(users.get(ann.id).await.unwrap().unwrap().name, "ANN");
            let conflict = users
                .create(NewUser {
                    name: "dup".into(),
                    email: "ann@example.org".into(),
                })
                .await
                .unwrap_err();
            assert_eq!(conflict.status_code(), 409);
            assert!(users.delete(ann.id).await.unwrap());
            assert!(users.get(ann.id).await.unwrap().is_none());
            assert!(users.cached(ann.id).is_none());
            let err = users.update(ann.id, rename("gone")).await.unwrap_err();
            assert_eq!(err.status_code(), 404);
        });
    });
}

/// The epoch rule through the async path: an async miss reads the old row,
/// a writer commits before the load fills, and the fill is dropped; the next
/// async read sees the new row.
#[test]
fn an_async_miss_racing_a_write_leaves_nothing_stale() {
    each_backend(|target| {
        RACE_READ.reset();
        RACE_RELEASE.reset();
        let db = target.fresh_with(|b| b.entity::<RacingUser>());
        let id = user(&db.store, "old name").id;
        let runtime = one_thread_runtime();
        let racing = db.store.async_repo::<RacingUser>();
        let reader = runtime.spawn({
            let racing = racing.clone();
            async move { racing.get(id).await }
        });
        let store = db.store.clone();
        let writer = std::thread::spawn(move || {
            RACE_READ.wait(); // the load has read "old name", not yet filled
                              // Through the users' own repository: this map is only invalidated.
            store.users().update(id, rename("new name")).unwrap();
            RACE_RELEASE.open();
        });
        let raced = runtime.block_on(reader).unwrap().unwrap().unwrap();
        writer.join().unwrap();
        assert_eq!(raced.0.name, "old name", "the load read before the write");
        assert!(racing.cached(id).is_none(), "a stale fill survived");
        let seen = runtime.block_on(racing.get(id)).unwrap().unwrap();
        assert_eq!(seen.0.name, "new name");
        assert!(db.store.stats().entity("users").stale_fills_dropped >= 1);
    });
}

/// Outside a runtime, a call that needs the blocking pool is an error, not
/// a panic; a hit needs no runtime at all.
#[test]
fn outside_a_runtime_a_miss_is_an_error_and_a_hit_still_works() {
    let db = common::fresh();
    let ann = user(&db.store, "ann");
    let users = db.store.async_repo::<User>();
    assert!(matches!(
        first_poll(users.get(ann.id)),
        Poll::Ready(Ok(Some(_)))
    ));
    db.store.users().invalidate(ann.id);
    match first_poll(users.get(ann.id)) {
        Poll::Ready(Err(Error::Interrupted {
            interruption: Interruption::NoRuntime,
            ..
        })) => {}
        other => panic!("expected NoRuntime, got {:?}", other.map(|r| r.map(|_| ()))),
    }
    // The abandoned lease left no flight behind: the next load leads anew.
    let runtime = one_thread_runtime();
    assert!(runtime.block_on(users.get(ann.id)).unwrap().is_some());
}

/// The usual `#[tokio::main] async fn main() { let store = …build()?; }`:
/// a store with coherence on, built, used and dropped on a runtime worker.
/// On PostgreSQL the watcher's listener is a client that runs a runtime of
/// its own, which tokio refuses to start on a thread driving async tasks:
/// building the store panicked ("Cannot start a runtime from within a
/// runtime").
#[test]
fn a_store_is_built_and_dropped_inside_an_async_task() {
    each_backend(|target| {
        let db = target.fresh();
        let url = db.url();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let task = runtime.spawn(async move {
            let store = larder_blog::builder(&url).build()?;
            let users = store.async_repo::<User>();
            let ann = users
                .create(NewUser {
                    name: "ann".into(),
                    email: "ann@example.org".into(),
                })
                .await?;
            let again = users.get(ann.id).await?;
            drop(users);
            drop(store);
            Ok::<_, Error>(again.map(|user| user.name.clone()))
        });
        let joined = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the task hung")
        });
        let name = joined.expect("building the store panicked").unwrap();
        assert_eq!(name.as_deref(), Some("ann"));
    });
}

static CANCEL_READ: Latch = Latch::new();
static CANCEL_RELEASE: Latch = Latch::new();
user_entity!(HeldUser, || {
    CANCEL_READ.open();
    CANCEL_RELEASE.wait();
});

static LOAD_PANICS: AtomicBool = AtomicBool::new(false);
user_entity!(PanickyLoad, || {
    if LOAD_PANICS.load(Ordering::SeqCst) {
        panic!("bad data");
    }
});

/// A multi-threaded runtime of two workers, with a timer.
fn two_worker_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

/// A leader and a waiter both cancelled (`timeout`) while the load reads a
/// row a write then changes: the load goes on, fills nothing (the epoch
/// rule), holds no connection, and the next `get` loads the new row.
#[test]
fn a_cancelled_leader_mid_load_fills_nothing_stale() {
    let db = common::fresh_with(|b| b.entity::<HeldUser>().coherence(false));
    let id = user(&db.store, "old").id;
    let held = db.store.async_repo::<HeldUser>();
    let runtime = two_worker_runtime();
    runtime.block_on(async {
        let r = tokio::time::timeout(Duration::from_millis(50), held.get(id)).await;
        assert!(r.is_err(), "cancelled");
        // a waiter joins the flight and is cancelled too
        let r = tokio::time::timeout(Duration::from_millis(20), held.get(id)).await;
        assert!(r.is_err());
    });
    CANCEL_READ.wait();
    db.store.users().update(id, rename("new")).unwrap();
    CANCEL_RELEASE.open();
    runtime.block_on(async {
        let got = tokio::time::timeout(Duration::from_secs(10), held.get(id))
            .await
            .expect("hung")
            .unwrap()
            .unwrap();
        assert_eq!(got.0.name, "new");
    });
    // The cancelled load ends too, gives its connection back, fills nothing.
    runtime.block_on(eventually("the cancelled load's connection back", || {
        let pool = db.store.stats().pool;
        pool.idle == pool.connections
    }));
    assert_eq!(held.cached(id).unwrap().0.name, "new");
}

/// A load that panics (an entity's decoding meeting bad data) is an
/// `Interrupted` error for its leader and every waiter, never a panic in
/// their tasks nor a hang; the key loads again once the data is good.
#[test]
fn a_panicking_load_is_an_error_for_leader_and_waiters() {
    let db = common::fresh_with(|b| b.entity::<PanickyLoad>().coherence(false));
    let id = user(&db.store, "ann").id;
    let repo = db.store.async_repo::<PanickyLoad>();
    LOAD_PANICS.store(true, Ordering::SeqCst);
    let runtime = two_worker_runtime();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let repo = repo.clone();
                tokio::spawn(async move { repo.get(id).await.map(|_| ()) })
            })
            .collect();
        for t in tasks {
            let r = tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("hung");
            let r = r.expect("a panic reached the task");
            assert!(matches!(r, Err(larder::Error::Interrupted { .. })), "{r:?}");
        }
        let r = repo.get_many(vec![id]).await;
        assert!(matches!(r, Err(larder::Error::Interrupted { .. })));
        LOAD_PANICS.store(false, Ordering::SeqCst);
        assert!(repo.get(id).await.unwrap().is_some());
    });
    assert_pool_idle(&db.store);
}

/// A lead queued behind a busy blocking pool whose runtime shuts down: the
/// work is dropped, the flight ends, and a waiter on another runtime loads
/// for itself instead of waiting for ever.
#[test]
fn a_queued_lead_dropped_by_its_runtime_leaves_no_waiter_hanging() {
    let db = common::fresh_with(|b| b.coherence(false));
    let id = user(&db.store, "ann").id;
    db.store.users().invalidate(id);
    let users = db.store.async_repo::<larder_blog::User>();
    let a = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(1)
        .build()
        .unwrap();
    let gate = Arc::new(Latch::new());
    let busy = a.spawn_blocking({
        let gate = gate.clone();
        move || gate.wait()
    });
    // the lead queues behind the busy thread
    let lead = a.spawn({
        let users = users.clone();
        async move { users.get(id).await }
    });
    a.block_on(async {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    });
    let b = two_worker_runtime();
    let waiter = b.spawn({
        let users = users.clone();
        async move { users.get(id).await }
    });
    std::thread::sleep(Duration::from_millis(50));
    drop(lead);
    drop(busy);
    a.shutdown_background();
    gate.open();
    let got = b.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("waiter hung")
    });
    assert!(got.unwrap().unwrap().is_some());
}
