//! Transactions: commit on Ok, rollback on Err, panic or drop; the shared cache
//! changes only after a commit; the connection always goes back usable.

mod common;

use larder_blog::prelude::*;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_pool_idle, each_backend, lost, rename, user, user_in_db};
use larder::{Entity, Error};
use larder_blog::{NewComment, NewPost, NewUser, User};

#[test]
fn ok_commits_every_write() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let post = db
            .store
            .transaction(|tx| {
                let p = tx.posts().create(NewPost {
                    author_id: ann.id,
                    title: "Threading and Locks".into(),
                    body: "…".into(),
                })?;
                tx.comments().create(NewComment {
                    post_id: p.id,
                    author_id: ann.id,
                    body: "use with".into(),
                })?;
                Ok::<_, Error>(p)
            })
            .unwrap();
        assert_eq!(
            db.store.posts().get(post.id).unwrap().unwrap().title,
            "Threading and Locks"
        );
        assert_eq!(db.store.comments().of_post(post.id).unwrap().len(), 1);
        assert_pool_idle(&db.store);
    });
}

#[test]
fn err_from_the_closure_writes_nothing_and_leaves_the_cache_alone() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let cached = db.store.users().get(ann.id).unwrap().unwrap();
        let invalidations_before = db.store.stats().entity("users").invalidations;
        let created = Cell::new(0);
        let result: Result<(), Error> = db.store.transaction(|tx| {
            tx.users().update(ann.id, rename("changed"))?;
            created.set(
                tx.users()
                    .create(NewUser {
                        name: "bob".into(),
                        email: "bob@example.org".into(),
                    })?
                    .id,
            );
            Err(Error::NotFound {
                table: "users",
                id: -1,
            })
        });
        assert!(matches!(result, Err(Error::NotFound { id: -1, .. })));
        assert!(
            user_in_db(&db.store, created.get()).is_none(),
            "the insert was rolled back"
        );
        assert_eq!(user_in_db(&db.store, ann.id).unwrap().name, "ann");
        let after = db.store.users().get(ann.id).unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&after, &cached),
            "a rollback must not touch the shared cache"
        );
        assert_eq!(
            db.store.stats().entity("users").invalidations,
            invalidations_before
        );
        assert_pool_idle(&db.store);
    });
}

#[test]
fn a_panic_inside_the_closure_rolls_back_and_the_store_keeps_working() {
    each_backend(|target| {
        let db = target.fresh_with(|b| b.pool_size(1));
        let ann = user(&db.store, "ann");
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            db.store.transaction(|tx| {
                tx.users().update(ann.id, rename("changed"))?;
                panic!("handler bug");
                #[allow(unreachable_code)]
                Ok::<(), Error>(())
            })
        }));
        assert!(panicked.is_err());
        // With a pool of one, this fails with a pool timeout if the connection leaked
        // and with a busy error if the transaction was left open.
        assert_eq!(user_in_db(&db.store, ann.id).unwrap().name, "ann");
        assert_eq!(db.store.users().get(ann.id).unwrap().unwrap().name, "ann");
        db.store.users().update(ann.id, rename("after")).unwrap();
        assert_eq!(db.store.users().get(ann.id).unwrap().unwrap().name, "after");
    });
}

#[test]
fn a_tx_dropped_without_commit_rolls_back() {
    each_backend(|target| {
        let db = target.fresh_with(|b| b.pool_size(1));
        let ann = user(&db.store, "ann");
        {
            let tx = db.store.begin().unwrap();
            tx.users().update(ann.id, rename("dropped")).unwrap();
            assert_eq!(
                tx.users().get(ann.id).unwrap().unwrap().name,
                "dropped",
                "reads see own writes"
            );
        }
        assert_eq!(db.store.users().get(ann.id).unwrap().unwrap().name, "ann");
        assert_pool_idle(&db.store);
        db.store.users().update(ann.id, rename("next")).unwrap();
    });
}

#[test]
fn explicit_rollback_discards_writes() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let tx = db.store.begin().unwrap();
        tx.users().delete(ann.id).unwrap();
        tx.rollback().unwrap();
        assert!(db.store.users().get(ann.id).unwrap().is_some());
    });
}

#[test]
fn uncommitted_writes_never_reach_the_shared_cache() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        db.store.clear_cache();
        let tx = db.store.begin().unwrap();
        tx.users().update(ann.id, rename("uncommitted")).unwrap();
        tx.users().get(ann.id).unwrap();
        assert!(
            db.store.users().cached(ann.id).is_none(),
            "a read in a tx must not fill"
        );
        tx.commit().unwrap();
        assert_eq!(
            db.store.users().get(ann.id).unwrap().unwrap().name,
            "uncommitted"
        );
    });
}

#[test]
fn a_commit_invalidates_what_the_tx_wrote() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let before = db.store.users().get(ann.id).unwrap().unwrap();
        let tx = db.store.begin().unwrap();
        tx.users().update(ann.id, rename("committed")).unwrap();
        assert!(
            Arc::ptr_eq(&db.store.users().get(ann.id).unwrap().unwrap(), &before),
            "not before commit"
        );
        tx.commit().unwrap();
        assert_eq!(
            db.store.users().get(ann.id).unwrap().unwrap().name,
            "committed"
        );
    });
}

#[test]
fn a_conflict_inside_a_transaction_rolls_back_its_earlier_writes() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let created = Cell::new(0);
        let result = db.store.transaction(|tx| {
            created.set(
                tx.users()
                    .create(NewUser {
                        name: "bob".into(),
                        email: "bob@example.org".into(),
                    })?
                    .id,
            );
            tx.users().create(NewUser {
                name: "dup".into(),
                email: ann.email.clone(),
            })
        });
        assert!(result.unwrap_err().is_conflict());
        assert!(user_in_db(&db.store, created.get()).is_none());
    });
}

/// An autocommitted write is in the database the moment its statement ends:
/// application code that panics after it (here inside `Repo::write`'s
/// closure) must not take the row's invalidation down with it.
#[test]
fn a_panic_after_an_autocommitted_statement_still_invalidates_its_row() {
    each_backend(|target| {
        let db = target.fresh_with(|b| b.coherence(false));
        let ann = user(&db.store, "ann");
        assert_eq!(db.store.users().get(ann.id).unwrap().unwrap().name, "ann");
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            db.store.users().write(ann.id, |conn| {
                let _stored = User::update(conn, ann.id, &rename("after"))?;
                panic!("application code panics after its UPDATE ran");
            })
        }));
        assert!(panicked.is_err());
        assert_eq!(user_in_db(&db.store, ann.id).unwrap().name, "after");
        assert_eq!(
            db.store.users().get(ann.id).unwrap().unwrap().name,
            "after",
            "the autocommitted update was never invalidated"
        );
        assert_pool_idle(&db.store);
    });
}

/// A panic after the COMMIT succeeded and before the caches heard of it (a
/// tracing subscriber's, here; a cached value's destructor could do the same)
/// must still invalidate what the transaction wrote.
#[test]
fn a_panic_between_the_commit_and_the_caches_still_invalidates() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tracing::field::{Field, Visit};

    /// Panics on the first "transaction committed" event after it is armed.
    struct PanicsAfterCommit(AtomicBool);
    struct Message(bool);
    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0 |= field.name() == "message" && format!("{value:?}") == "transaction committed";
        }
    }
    impl tracing::Subscriber for PanicsAfterCommit {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut message = Message(false);
            event.record(&mut message);
            if message.0 && self.0.swap(false, Ordering::SeqCst) {
                panic!("the subscriber panics");
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    each_backend(|target| {
        let db = target.fresh_with(|b| b.coherence(false));
        let ann = user(&db.store, "ann");
        assert_eq!(db.store.users().get(ann.id).unwrap().unwrap().name, "ann");
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            tracing::subscriber::with_default(PanicsAfterCommit(AtomicBool::new(true)), || {
                tracing::callsite::rebuild_interest_cache();
                db.store.transaction(|tx| {
                    tx.users().update(ann.id, rename("after"))?;
                    Ok::<_, Error>(())
                })
            })
        }));
        tracing::callsite::rebuild_interest_cache();
        assert!(panicked.is_err(), "the premise: the subscriber panicked");
        assert_eq!(user_in_db(&db.store, ann.id).unwrap().name, "after");
        assert_eq!(
            db.store.users().get(ann.id).unwrap().unwrap().name,
            "after",
            "a committed update was never invalidated"
        );
    });
}

/// A user whose delete runs its statement and then reports an error that is
/// not the database's (as a hand-written entity's read-back may): the
/// transaction is not poisoned, and the caller may commit anyway.
#[derive(Debug)]
struct DeleteThenFail(User);

impl larder::Entity for DeleteThenFail {
    const TABLE: &'static str = "users";
    type New = NewUser;
    type Changes = larder_blog::UserChanges;

    fn id(&self) -> i64 {
        self.0.id
    }
    fn find(conn: &mut larder::Connection, id: i64) -> diesel::QueryResult<Option<Self>> {
        Ok(User::find(conn, id)?.map(DeleteThenFail))
    }
    fn insert(conn: &mut larder::Connection, new: &NewUser) -> diesel::QueryResult<Self> {
        User::insert(conn, new).map(DeleteThenFail)
    }
    fn update(
        conn: &mut larder::Connection,
        id: i64,
        changes: &larder_blog::UserChanges,
    ) -> diesel::QueryResult<Option<Self>> {
        Ok(User::update(conn, id, changes)?.map(DeleteThenFail))
    }
    fn delete(conn: &mut larder::Connection, id: i64) -> diesel::QueryResult<bool> {
        User::delete(conn, id)?;
        Err(diesel::result::Error::DeserializationError(
            "the read-back after the delete failed".into(),
        ))
    }
}

#[test]
fn a_delete_that_ran_and_then_failed_still_invalidates_its_row_at_commit() {
    each_backend(|target| {
        let db = target.fresh_with(|b| b.coherence(false));
        let bob = user(&db.store, "bob");
        let users = db.store.repo::<DeleteThenFail>();
        assert!(users.get(bob.id).unwrap().is_some(), "cached");
        db.store
            .transaction(|tx| {
                let failed = tx.repo::<DeleteThenFail>().delete(bob.id);
                assert!(failed.is_err(), "the premise: the delete reported an error");
                Ok::<_, Error>(()) // the caller carries on and commits
            })
            .unwrap();
        assert!(user_in_db(&db.store, bob.id).is_none(), "deleted");
        assert!(
            users.get(bob.id).unwrap().is_none(),
            "a deleted row is still served from the cache"
        );
    });
}

/// A transaction's read takes MySQL's REPEATABLE READ snapshot; another
/// writer then commits a change to a row and invalidates it. A write of the
/// row later in the transaction that returns it without changing it (an
/// empty change reads the row back; an update to the values it already has
/// changes nothing) returns the row from that snapshot, older than the
/// committed one: were it cached at commit, every later `get` would serve the
/// older row, and nothing would ever invalidate it.
#[test]
fn a_write_that_returns_a_row_from_an_old_snapshot_does_not_cache_it() {
    each_backend(|target| {
        let db = target.fresh();
        if db.is(larder::Backend::Sqlite) {
            return; // a SQLite transaction keeps every other writer out
        }
        let store = &db.store;
        let (ann, bob) = (user(store, "ann"), user(store, "bob"));
        let cases = [
            // Nothing to change: the row is read back.
            (ann.id, "ann, renamed", larder_blog::UserChanges::default()),
            // The values the other writer just stored: MySQL changes nothing.
            (bob.id, "bob, renamed", rename("bob, renamed")),
        ];
        for (id, other, changes) in cases {
            let tx = store.begin().unwrap();
            tx.users().get(id).unwrap(); // the snapshot
            common::on_another_thread(|| store.users().update(id, rename(other)).unwrap());
            tx.users().update(id, changes).unwrap();
            tx.commit().unwrap();
            assert_eq!(
                store.users().get(id).unwrap().unwrap().name,
                user_in_db(store, id).unwrap().name,
                "the cache serves a row older than the database's"
            );
        }
    });
}

/// The same snapshot under a delete's cascade: a comment committed after the
/// transaction's first read is not in its snapshot, so a plain read of the
/// rows a delete cascades to misses it. The database's cascade removes it all
/// the same, and the comment and its post's list stayed cached. Both of the
/// blog's cascades: a post's comments, and a user's comments on others' posts.
#[test]
fn a_cascade_in_a_transaction_finds_children_committed_after_its_snapshot() {
    each_backend(|target| {
        let db = target.fresh();
        if db.is(larder::Backend::Sqlite) {
            return; // a SQLite transaction keeps every other writer out
        }
        let store = &db.store;
        let (ann, bob) = (user(store, "ann"), user(store, "bob"));
        let (doomed, kept) = (
            common::post(store, &ann, "doomed"),
            common::post(store, &ann, "kept"),
        );
        let tx = store.begin().unwrap();
        tx.users().get(ann.id).unwrap(); // the snapshot
        let (on_doomed, by_bob) = common::on_another_thread(|| {
            (
                common::comment(store, &doomed, &ann, "late"),
                common::comment(store, &kept, &bob, "late too"),
            )
        });
        for post in [&doomed, &kept] {
            assert_eq!(store.comments().of_post(post.id).unwrap().len(), 1);
        }
        assert!(tx.posts().delete(doomed.id).unwrap());
        assert!(tx.users().delete(bob.id).unwrap());
        tx.commit().unwrap();
        for (comment, post) in [(on_doomed, doomed), (by_bob, kept)] {
            assert!(
                store.comments().get(comment.id).unwrap().is_none(),
                "a comment the cascade removed is still served from the cache"
            );
            assert!(
                store.comments().of_post(post.id).unwrap().is_empty(),
                "a post's cached list still holds a comment the cascade removed"
            );
        }
    });
}

/// MySQL ends a transaction it picks as a deadlock's victim, and the
/// statements the caller sends on afterwards each commit on their own. A
/// caller that goes on writing (retrying the statement, say) and then rolls
/// back, or drops the transaction, has changed the database: what it wrote
/// must not stay cached as it was.
#[test]
fn writes_after_a_deadlock_ended_the_transaction_do_not_stay_cached_stale() {
    each_backend(|target| {
        let db = target.fresh();
        if !db.is(larder::Backend::Mysql) {
            return; // the others keep the transaction open, or keep writers out
        }
        let store = &db.store;
        let ann = user(store, "ann");
        let others: Vec<i64> = ["bob", "cid", "dan"]
            .iter()
            .map(|name| user(store, name).id)
            .collect();
        let victim = store.begin().unwrap();
        victim.users().update(ann.id, rename("victim")).unwrap();
        let (locked, has_locked) = std::sync::mpsc::channel();
        let other_store = store.clone();
        let (first, ann_id) = (others[0], ann.id);
        let heavier = std::thread::spawn(move || {
            // More rows locked than the victim: InnoDB rolls back the lighter.
            let tx = other_store.begin().unwrap();
            for id in &others {
                tx.users().update(*id, rename("heavier")).unwrap();
            }
            locked.send(()).unwrap();
            tx.users().update(ann_id, rename("heavier")).unwrap();
            tx.commit().unwrap();
        });
        has_locked.recv().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300)); // waits for ann
        let deadlock = victim.users().update(first, rename("victim"));
        assert!(deadlock.is_err(), "no deadlock: {deadlock:?}");
        heavier.join().unwrap();
        assert_eq!(store.users().get(ann.id).unwrap().unwrap().name, "heavier");
        // The caller carries on in what it takes for its transaction.
        let _ = victim.users().update(ann.id, rename("after the deadlock"));
        drop(victim);
        assert_eq!(
            store.users().get(ann.id).unwrap().unwrap().name,
            user_in_db(store, ann.id).unwrap().name,
            "the cache serves a row older than the database's"
        );
    });
}

/// Runs `work` on a thread of its own and fails the test if it has not
/// finished within `limit` (a hang must fail, not stall the suite).
fn within<T: Send + 'static>(limit: Duration, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(work());
    });
    finished.recv_timeout(limit).unwrap_or_else(|_| {
        panic!("still waiting after {limit:?}: it waits on its own transaction")
    })
}

fn is_inside_transaction<T: std::fmt::Debug>(result: &Result<T, Error>) -> bool {
    matches!(result, Err(Error::InsideTransaction { .. }))
}

/// A write through the store (not `tx`) inside the same thread's open
/// transaction runs on another pooled connection, outside the transaction,
/// and waits for the locks the transaction holds: on PostgreSQL for ever, on
/// MySQL for `innodb_lock_wait_timeout`, on SQLite for the busy timeout. It
/// is refused at once instead, and the transaction goes on.
#[test]
fn a_store_write_inside_the_threads_own_transaction_is_refused_at_once() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann").id;
        let store = db.store.clone();
        let outside = within(Duration::from_secs(20), move || {
            store
                .transaction(|tx| {
                    tx.users().update(ann, rename("in tx"))?;
                    let update = store.users().update(ann, rename("outside"));
                    let create = store.users().create(NewUser {
                        name: "bob".into(),
                        email: "bob@example.org".into(),
                    });
                    let delete = store.users().delete(ann);
                    let nested = store.begin().map(drop);
                    // Reads through the store still work: they wait on nothing.
                    let read = store.users().get(ann)?.map(|u| u.name.clone());
                    Ok::<_, Error>((update, create, delete, nested, read))
                })
                .unwrap()
        });
        let (update, create, delete, nested, read) = outside;
        assert!(is_inside_transaction(&update), "update: {update:?}");
        assert!(is_inside_transaction(&create), "create: {create:?}");
        assert!(is_inside_transaction(&delete), "delete: {delete:?}");
        assert!(is_inside_transaction(&nested), "nested begin: {nested:?}");
        assert_eq!(
            read.as_deref(),
            Some("ann"),
            "a read sees what is committed"
        );
        // Refused means unchanged: the transaction's own write committed.
        assert_eq!(db.store.users().get(ann).unwrap().unwrap().name, "in tx");
        assert_eq!(user_in_db(&db.store, ann).unwrap().name, "in tx");
        assert_pool_idle(&db.store);
    });
}

/// The refusal is for the thread whose transaction it is: another thread
/// writes as usual, and once the transaction ends, however it ends, so
/// does this one.
#[test]
fn only_the_thread_holding_the_transaction_is_refused_and_only_while_it_is_open() {
    each_backend(|target| {
        // SQLite's other thread waits for the one write lock, briefly.
        let db = target.fresh_with(|b| b.busy_timeout(Duration::from_millis(300)));
        let store = &db.store;
        let (ann, bob) = (user(store, "ann"), user(store, "bob"));
        let other_thread = store
            .transaction(|tx| {
                tx.users().update(ann.id, rename("in tx"))?;
                Ok::<_, Error>(std::thread::scope(|s| {
                    s.spawn(|| store.users().update(bob.id, rename("other thread")))
                        .join()
                        .unwrap()
                }))
            })
            .unwrap();
        if db.is(larder::Backend::Sqlite) {
            assert!(
                matches!(other_thread, Err(Error::Busy { .. })),
                "{other_thread:?}"
            );
        } else {
            assert!(other_thread.is_ok(), "{other_thread:?}");
        }
        let endings: [&dyn Fn(); 4] = [
            &|| store.begin().unwrap().commit().unwrap(),
            &|| store.begin().unwrap().rollback().unwrap(),
            &|| drop(store.begin().unwrap()),
            &|| {
                let failed: Result<(), Error> = store.transaction(|_| {
                    Err(Error::Migration {
                        message: "no".into(),
                    })
                });
                assert!(failed.is_err());
            },
        ];
        for (n, end) in endings.iter().enumerate() {
            end();
            let after = store.users().update(bob.id, rename(&format!("after {n}")));
            assert!(after.is_ok(), "ending {n}: {after:?}");
        }
        // A transaction begun here and ended on another thread ends here too.
        let tx = store.begin().unwrap();
        std::thread::scope(|s| s.spawn(move || tx.commit().unwrap()).join().unwrap());
        store
            .users()
            .update(bob.id, rename("after a moved tx"))
            .unwrap();
    });
}

/// A `Tx` is `Send`: moved to another thread and used there, it is that
/// thread's transaction. The thread now holding it is refused a write
/// through the store (it would wait for the transaction's own locks: on
/// PostgreSQL for ever), and the thread that began it, holding nothing, is
/// not (on SQLite it waits its turn for the write lock instead).
#[test]
fn a_transaction_moved_to_another_thread_is_that_threads() {
    each_backend(|target| {
        let db = target.fresh_with(|b| b.busy_timeout(Duration::from_millis(300)));
        let store = db.store.clone();
        let (ann, bob) = (user(&store, "ann").id, user(&store, "bob").id);
        let sqlite = db.is(larder::Backend::Sqlite);
        let (holder, origin) = within(Duration::from_secs(20), move || {
            let tx = store.begin().unwrap();
            let (used, holder_used) = std::sync::mpsc::channel();
            let (wrote, origin_wrote) = std::sync::mpsc::channel();
            std::thread::scope(|s| {
                let store = &store;
                let holder = s.spawn(move || {
                    tx.users().update(ann, rename("moved")).unwrap();
                    used.send(()).unwrap();
                    origin_wrote.recv().unwrap();
                    let outside = store.users().update(ann, rename("outside"));
                    tx.commit().unwrap();
                    outside
                });
                holder_used.recv().unwrap();
                let origin = store.users().update(bob, rename("origin"));
                wrote.send(()).unwrap();
                (holder.join().unwrap(), origin)
            })
        });
        assert!(is_inside_transaction(&holder), "holder: {holder:?}");
        if sqlite {
            assert!(matches!(origin, Err(Error::Busy { .. })), "{origin:?}");
        } else {
            assert!(origin.is_ok(), "origin: {origin:?}");
        }
        assert_eq!(user_in_db(&db.store, ann).unwrap().name, "moved");
        assert_pool_idle(&db.store);
    });
}

/// On SQLite a named lock draws its fencing token with a write, which needs
/// the write lock the thread's own transaction holds: it would wait out the
/// busy timeout and fail with `Busy`, every time. It is refused at once.
#[test]
fn a_sqlite_named_lock_inside_the_threads_own_transaction_is_refused_at_once() {
    let db = common::fresh_with(|b| b.busy_timeout(Duration::from_secs(10)));
    let store = db.store.clone();
    let (locked, elapsed) = within(Duration::from_secs(8), move || {
        let began = std::time::Instant::now();
        let tx = store.begin().unwrap();
        let locked = store.lock("report").map(drop);
        tx.commit().unwrap();
        (locked, began.elapsed())
    });
    assert!(
        is_inside_transaction(&locked),
        "{locked:?} after {elapsed:?}"
    );
    drop(db.store.lock("report").unwrap()); // once it ends, the lock is taken
}

/// A write whose connection is lost while the server still runs it (waiting
/// for a row lock here; a slow commit alike) has an unknown outcome, and
/// larder invalidates its row. But the server goes on: the statement commits
/// once the lock is released, after the invalidation. A `get` in between
/// loaded the row as it was and cached it, and with nothing to retire it
/// (this process the database's only writer, coherence off) the cache served
/// it for good.
#[test]
fn a_write_lost_while_the_server_still_runs_it_does_not_leave_its_row_stale() {
    each_backend(|target| {
        if target.backend == larder::Backend::Sqlite {
            return; // an embedded database has no connection to lose
        }
        let db = target.fresh();
        let proxy = common::proxy::Proxy::start(&db.url());
        let store = lost::only_writer(&proxy);
        let ann = user(&store, "ann");
        let mut holder = lost::row_locked(&db.url(), "users", ann.id);
        // The update waits for the lock when its connection is reset.
        lost::lose_in_flight(&proxy, Duration::from_millis(300), || {
            store.users().update(ann.id, rename("lost"))
        });
        assert_eq!(store.users().get(ann.id).unwrap().unwrap().name, "ann");
        use diesel::connection::SimpleConnection;
        holder.batch_execute("COMMIT").unwrap();
        // Whatever the server did with the lost write is done by now.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            store.users().get(ann.id).unwrap().unwrap().name,
            user_in_db(&store, ann.id).unwrap().name,
            "the cache serves a row older than the database's"
        );
        common::assert_pool_idle(&store);
    });
}

/// A transaction that writes a row through its repository and then again
/// with its own SQL (`run`, the docs' way to run raw statements in a
/// transaction) committed the row as the repository's write had returned
/// it, not as the database held it: the commit cached that first version,
/// and a store that is the database's only writer (coherence off) served it
/// for good.
#[test]
fn a_row_written_again_by_run_in_the_same_transaction_is_not_cached_as_first_written() {
    each_backend(|target| {
        let db = target.fresh();
        let store = larder_blog::builder(&db.url())
            .coherence(false)
            .build()
            .unwrap();
        let ann = user(&store, "ann");
        store
            .transaction(|tx| {
                tx.users().update(ann.id, rename("first"))?;
                tx.users().run(Some(ann.id), |conn| {
                    let sql = format!("UPDATE users SET name = 'second' WHERE id = {}", ann.id);
                    larder::with_connection!(conn, |c| {
                        diesel::RunQueryDsl::execute(diesel::sql_query(sql), c)
                    })
                })
            })
            .unwrap();
        assert_eq!(user_in_db(&store, ann.id).unwrap().name, "second");
        assert_eq!(
            store.users().get(ann.id).unwrap().unwrap().name,
            "second",
            "the commit cached the row as the repository's write returned it"
        );
    });
}

/// PostgreSQL aborts a transaction at its first failed statement, and
/// answers a later COMMIT with a silent ROLLBACK (no error). A statement
/// that failed inside an application's `run` closure, its error handled
/// there (an insert tried and a duplicate tolerated), never reached larder,
/// which took the COMMIT for a commit and cached what the transaction had
/// written: a row the database never held, served for good.
#[test]
fn a_failed_statement_handled_inside_run_does_not_let_a_silent_rollback_fill_the_cache() {
    each_backend(|target| {
        let db = target.fresh();
        let store = &db.store;
        let ann = user(store, "ann");
        store.users().get(ann.id).unwrap();
        let outcome = store.transaction(|tx| {
            tx.users().update(ann.id, rename("never committed"))?;
            tx.users().run(None, |conn| {
                use diesel::connection::SimpleConnection;
                // Its failure is the application's to handle: tolerated.
                let _ = conn.batch_execute("INSERT INTO no_such_table VALUES (1)");
                Ok(())
            })
        });
        let in_db = user_in_db(store, ann.id).unwrap().name.clone();
        if in_db == "never committed" {
            assert!(outcome.is_ok(), "{outcome:?}");
        }
        assert_eq!(
            store.users().get(ann.id).unwrap().unwrap().name,
            in_db,
            "the cache serves a row the database does not hold (commit said {outcome:?})"
        );
        common::assert_pool_idle(store);
    });
}

/// A transaction ended inside `run` by the application's own SQL, here a
/// raw ROLLBACK (MySQL's deadlock victim and SQLite's `INSERT OR ROLLBACK`
/// end one the same way, out of larder's sight): the database then answers
/// larder's COMMIT with success (MySQL, PostgreSQL) although the
/// repository's write before it never committed. It must not be cached.
#[test]
fn a_transaction_ended_inside_run_does_not_cache_the_write_it_lost() {
    each_backend(|target| {
        let db = target.fresh();
        let (store, ann) = only_writer_with_ann_cached(&db);
        let outcome = store.transaction(|tx| {
            tx.users().update(ann.id, rename("rolled back"))?;
            tx.users().run(None, |conn| {
                use diesel::connection::SimpleConnection;
                conn.batch_execute("ROLLBACK")
            })
        });
        assert_eq!(user_in_db(&store, ann.id).unwrap().name, "ann");
        assert_eq!(
            store.users().get(ann.id).unwrap().unwrap().name,
            "ann",
            "the cache serves a write that was rolled back (commit said {outcome:?})"
        );
        common::assert_pool_idle(&store);
    });
}

/// The converse: a transaction committed inside `run` by the application's
/// own SQL (a raw COMMIT here; on MySQL any DDL, `TRUNCATE` or `LOCK
/// TABLES` commits implicitly), then rolled back by larder because a later
/// step failed. The repository's write before it is in the database, but a
/// rollback left the cache as it was: the old row, served for good by a
/// store that is the database's only writer.
#[test]
fn a_transaction_committed_inside_run_then_rolled_back_does_not_leave_its_write_stale() {
    each_backend(|target| {
        let db = target.fresh();
        let (store, ann) = only_writer_with_ann_cached(&db);
        let outcome = store.transaction(|tx| {
            tx.users().update(ann.id, rename("committed"))?;
            tx.users().run(None, |conn| {
                use diesel::connection::SimpleConnection;
                conn.batch_execute("COMMIT")
            })?;
            // A later step fails: larder rolls back what is left.
            tx.users().update(i64::MAX, rename("no such user"))
        });
        assert!(
            matches!(outcome, Err(Error::NotFound { .. })),
            "{outcome:?}"
        );
        assert_eq!(user_in_db(&store, ann.id).unwrap().name, "committed");
        assert_eq!(
            store.users().get(ann.id).unwrap().unwrap().name,
            "committed",
            "the cache serves the row a committed write replaced"
        );
        common::assert_pool_idle(&store);
    });
}

/// As above for the application's SQL in a `write` or list query closure
/// (review HH's note: a MySQL `write` closure that sends `BEGIN` commits
/// what came before it): only `run` was counted as SQL that may end the
/// transaction, so the rollback after a commit in either left the
/// repository's committed write stale for good.
#[test]
fn a_transaction_committed_inside_a_write_or_query_closure_then_rolled_back_leaves_nothing_stale() {
    type Closure = fn(&larder::Tx<'_>, i64) -> larder::Result<()>;
    let commit_in_write: Closure = |tx, id| {
        tx.users()
            .write(id, |conn| {
                use diesel::connection::SimpleConnection;
                conn.batch_execute("COMMIT").map(|()| None)
            })
            .map(drop)
    };
    let commit_in_query: Closure = |tx, _| {
        tx.users()
            .query(|conn| {
                use diesel::connection::SimpleConnection;
                conn.batch_execute("COMMIT").map(|()| Vec::new())
            })
            .map(drop)
    };
    for (what, commit) in [("write", commit_in_write), ("query", commit_in_query)] {
        each_backend(|target| {
            let db = target.fresh();
            let (store, ann) = only_writer_with_ann_cached(&db);
            let outcome = store.transaction(|tx| {
                tx.users().update(ann.id, rename("committed"))?;
                commit(tx, ann.id)?;
                tx.users().update(i64::MAX, rename("no such user"))
            });
            assert!(
                matches!(outcome, Err(Error::NotFound { .. })),
                "{what}: {outcome:?}"
            );
            assert_eq!(user_in_db(&store, ann.id).unwrap().name, "committed");
            assert_eq!(
                store.users().get(ann.id).unwrap().unwrap().name,
                "committed",
                "{what}: the cache serves the row a committed write replaced"
            );
            common::assert_pool_idle(&store);
        });
    }
}

/// The same for a COMMIT in flight (held here by a deferred trigger that
/// sleeps): the server finishes it after the connection was lost.
#[test]
fn a_commit_lost_while_the_server_still_runs_it_does_not_leave_its_row_stale() {
    each_backend(|target| {
        if target.backend != larder::Backend::Postgres {
            return; // a deferred trigger holds a PostgreSQL COMMIT
        }
        let db = target.fresh();
        db.raw(
            "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$; \
             CREATE CONSTRAINT TRIGGER slow_commit AFTER UPDATE ON users \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()",
        );
        let proxy = common::proxy::Proxy::start(&db.url());
        let store = lost::only_writer(&proxy);
        let ann = user(&store, "ann");
        // The COMMIT runs the sleeping trigger when its connection is reset.
        lost::lose_in_flight(&proxy, Duration::from_millis(300), || {
            store.transaction(|tx| tx.users().update(ann.id, rename("lost")))
        });
        store.users().get(ann.id).unwrap();
        std::thread::sleep(Duration::from_millis(1500)); // the trigger is done
        assert_eq!(
            store.users().get(ann.id).unwrap().unwrap().name,
            user_in_db(&store, ann.id).unwrap().name,
            "the cache serves a row older than the database's"
        );
        common::assert_pool_idle(&store);
    });
}

/// A panic inside a savepoint the application opened in `run` (diesel's
/// own `transaction`, which leaves its savepoint open when its closure
/// panics), caught there, left the connection one level deeper than larder
/// began it. On SQLite and MySQL the COMMIT then only released that
/// savepoint and reported success: larder cached the row the transaction
/// had inserted, while the outer transaction stayed open and was rolled
/// back when the pool discarded the connection: a row the database never
/// held, served for good, and a write reported committed that was lost.
#[test]
fn a_savepoint_left_open_by_a_caught_panic_does_not_let_the_commit_cache_a_rolled_back_write() {
    each_backend(|target| {
        let db = target.fresh();
        let store = &db.store;
        let created = Cell::new(0);
        let outcome = store.transaction(|tx| {
            tx.users().run(None, |conn| {
                let nested = catch_unwind(AssertUnwindSafe(|| {
                    larder::with_connection!(conn, |c| {
                        diesel::Connection::transaction::<(), diesel::result::Error, _>(c, |_| {
                            panic!("a bug in a nested step")
                        })
                    })
                }));
                assert!(nested.is_err(), "the premise: the nested step panicked");
                Ok(())
            })?;
            let bob = tx.users().create(NewUser {
                name: "bob".into(),
                email: "bob@example.org".into(),
            })?;
            created.set(bob.id);
            Ok::<_, Error>(bob)
        });
        let in_db = user_in_db(store, created.get()).map(|u| u.name.clone());
        let cached = store.users().get(created.get()).unwrap();
        assert_eq!(
            cached.map(|u| u.name.clone()),
            in_db,
            "the cache serves a row the database does not hold (commit said {outcome:?})"
        );
        if outcome.is_ok() {
            assert_eq!(
                in_db.as_deref(),
                Some("bob"),
                "a commit reported for a write rolled back"
            );
        }
        common::assert_pool_idle(store);
    });
}

/// A `run` closure that reaches back into its own transaction (`tx.users()`
/// instead of the connection it was given) asks for the connection `run`
/// already lends: a typed error, not a `RefCell` panic in the caller, and
/// the transaction still commits what it wrote.
#[test]
fn a_transaction_used_inside_its_own_run_closure_is_an_error_not_a_panic() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let inner = Cell::new(None);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            db.store.transaction(|tx| {
                tx.users().update(ann.id, rename("renamed"))?;
                tx.users().run(None, |_conn| {
                    inner.set(Some(tx.users().get(ann.id).map(|_| ())));
                    Ok(())
                })
            })
        }));
        let outcome = outcome.expect("a panic reached the caller");
        assert!(outcome.is_ok(), "{outcome:?}");
        let inner = inner.take().expect("the closure ran");
        assert!(
            matches!(inner, Err(Error::InvalidConfig { .. })),
            "{inner:?}"
        );
        assert_eq!(user_in_db(&db.store, ann.id).unwrap().name, "renamed");
        assert_pool_idle(&db.store);
    });
}

/// A store that is its database's only writer (coherence off, so nothing
/// but its own commits retires what it caches), with user "ann" cached.
fn only_writer_with_ann_cached(db: &common::TestDb) -> (larder::Store, Arc<User>) {
    let store = larder_blog::builder(&db.url())
        .coherence(false)
        .build()
        .unwrap();
    let ann = user(&store, "ann");
    store.users().get(ann.id).unwrap();
    (store, ann)
}
