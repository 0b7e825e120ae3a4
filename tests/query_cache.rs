//! Cached list queries: served until a table they read changes, never filled
//! with a result that raced a write, made of the identity map's `Arc`s; and an
//! application entity built with `#[derive(larder::Entity)]`.

mod common;

use larder_blog::prelude::*;
use std::sync::Arc;

use common::{comment, each_backend, lost, post, user};
use diesel::prelude::*;
use larder_blog::schema::posts;
use larder_blog::{NewPost, PostChanges};

#[test]
fn a_list_is_served_from_the_query_cache_until_its_table_changes() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let p1 = post(&db.store, &ann, "one");
        let first = db.store.posts().by_author(ann.id).unwrap();
        let second = db.store.posts().by_author(ann.id).unwrap();
        assert_eq!(db.store.stats().queries.hits, 1);
        assert!(Arc::ptr_eq(&first[0], &second[0]) && Arc::ptr_eq(&first[0], &p1));

        let p2 = post(&db.store, &ann, "two");
        let after_create = db.store.posts().by_author(ann.id).unwrap();
        assert_eq!(after_create.len(), 2, "a create must invalidate the list");
        assert!(Arc::ptr_eq(&after_create[1], &p2));

        let changes = PostChanges {
            title: Some("ONE".into()),
            ..Default::default()
        };
        db.store.posts().update(p1.id, changes).unwrap();
        assert_eq!(db.store.posts().by_author(ann.id).unwrap()[0].title, "ONE");

        db.store.posts().delete(p2.id).unwrap();
        assert_eq!(db.store.posts().by_author(ann.id).unwrap().len(), 1);
    });
}

#[test]
fn a_rolled_back_write_leaves_cached_lists_alone_and_a_commit_invalidates_them() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let p = post(&db.store, &ann, "p");
        comment(&db.store, &p, &ann, "first");
        assert_eq!(db.store.comments().of_post(p.id).unwrap().len(), 1);
        {
            let tx = db.store.begin().unwrap();
            tx.comments()
                .create(larder_blog::NewComment {
                    post_id: p.id,
                    author_id: ann.id,
                    body: "rolled back".into(),
                })
                .unwrap();
            assert_eq!(
                tx.comments().of_post(p.id).unwrap().len(),
                2,
                "the tx sees its own write"
            );
        }
        let hits = db.store.stats().queries.hits;
        assert_eq!(db.store.comments().of_post(p.id).unwrap().len(), 1);
        assert_eq!(
            db.store.stats().queries.hits,
            hits + 1,
            "a rollback must not invalidate"
        );

        db.store
            .transaction(|tx| {
                tx.comments().create(larder_blog::NewComment {
                    post_id: p.id,
                    author_id: ann.id,
                    body: "second".into(),
                })
            })
            .unwrap();
        assert_eq!(db.store.comments().of_post(p.id).unwrap().len(), 2);
    });
}

/// A list read before a concurrent commit must not be cached: the query below
/// reads, then a writer commits before the result is stored.
#[test]
fn a_list_that_raced_a_write_is_not_cached() {
    each_backend(|target| {
        let db = target.fresh_with(|b| b.pool_size(2));
        let ann = user(&db.store, "ann");
        let racing = || {
            db.store
                .posts()
                .cached_query("all posts", &["posts"], |conn| {
                    let before =
                        larder::with_connection!(conn, |c| posts::table.order(posts::id).load(c))?;
                    db.store
                        .posts()
                        .create(NewPost {
                            author_id: ann.id,
                            title: "raced".into(),
                            body: "b".into(),
                        })
                        .unwrap();
                    Ok(before)
                })
        };
        assert!(
            racing().unwrap().is_empty(),
            "the query read before the insert"
        );
        let fresh_list = db
            .store
            .posts()
            .cached_query("all posts", &["posts"], |conn| {
                larder::with_connection!(conn, |c| posts::table.order(posts::id).load(c))
            })
            .unwrap();
        assert_eq!(fresh_list.len(), 1, "a stale list was cached");
        assert!(db.store.stats().queries.stale_fills_dropped >= 1);
    });
}

#[test]
fn a_cascaded_delete_invalidates_lists() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let p = post(&db.store, &ann, "p");
        comment(&db.store, &p, &ann, "c");
        assert_eq!(db.store.comments().of_post(p.id).unwrap().len(), 1);
        assert_eq!(db.store.posts().recent(10).unwrap().len(), 1);
        db.store.users().delete(ann.id).unwrap();
        assert!(db.store.comments().of_post(p.id).unwrap().is_empty());
        assert!(db.store.posts().recent(10).unwrap().is_empty());
    });
}

diesel::table! {
    tags (id) {
        id -> BigInt,
        post_id -> BigInt,
        label -> Text,
    }
}

#[derive(Debug, Queryable, PartialEq, larder::Entity)]
#[larder(table = tags, new = NewTag, changes = TagChanges, deleted_with = ["posts"])]
struct Tag {
    id: i64,
    post_id: i64,
    label: String,
}

#[derive(Insertable)]
#[diesel(table_name = tags)]
struct NewTag {
    post_id: i64,
    label: String,
}

#[derive(AsChangeset, Default)]
#[diesel(table_name = tags)]
struct TagChanges {
    label: Option<String>,
}

fn tags_db(target: &common::Target) -> common::TestDb {
    let db = target.fresh_with(|b| b.entity::<Tag>());
    let id = common::serial_key(db.backend);
    db.raw(&format!(
        "CREATE TABLE tags (id {id}, post_id BIGINT NOT NULL, label TEXT NOT NULL, \
         FOREIGN KEY (post_id) REFERENCES posts (id) ON DELETE CASCADE)"
    ));
    db
}

#[test]
fn a_derived_entity_is_cached_and_invalidated_like_the_blogs() {
    each_backend(|target| {
        let db = tags_db(target);
        let ann = user(&db.store, "ann");
        let p = post(&db.store, &ann, "p");
        let tags = db.store.repo::<Tag>();
        let rust = tags
            .create(NewTag {
                post_id: p.id,
                label: "rust".into(),
            })
            .unwrap();
        assert!(Arc::ptr_eq(&tags.get(rust.id).unwrap().unwrap(), &rust));

        let renamed = tags
            .update(
                rust.id,
                TagChanges {
                    label: Some("Rust".into()),
                },
            )
            .unwrap();
        assert_eq!(tags.get(rust.id).unwrap().unwrap().label, "Rust");
        let unchanged = tags.update(rust.id, TagChanges::default()).unwrap();
        assert_eq!(
            *unchanged, *renamed,
            "an empty changeset leaves the row as it is"
        );

        let err = tags
            .create(NewTag {
                post_id: 9999,
                label: "orphan".into(),
            })
            .unwrap_err();
        assert!(err.is_conflict(), "{err:?}");

        // tags.post_id cascades from posts: deleting the post's author removes it.
        db.store.users().delete(ann.id).unwrap();
        assert!(
            tags.get(rust.id).unwrap().is_none(),
            "DELETED_WITH must empty the tag cache"
        );
        assert!(!tags.delete(rust.id).unwrap());
    });
}

/// `cache_capacity(0)` is the switch that turns caching off: lists too, so a
/// change made behind larder's back is seen at once.
#[test]
fn cache_capacity_zero_caches_no_lists_either() {
    each_backend(|target| {
        let db = target.fresh_with(|b| b.cache_capacity(0));
        let ann = user(&db.store, "ann");
        post(&db.store, &ann, "one");
        assert_eq!(db.store.posts().by_author(ann.id).unwrap().len(), 1);
        db.raw(&format!(
            "INSERT INTO posts (author_id, title, body, published, version, created_at, updated_at) \
             VALUES ({}, 'two', 'b', false, 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
            ann.id
        ));
        assert_eq!(
            db.store.posts().by_author(ann.id).unwrap().len(),
            2,
            "a list was served from a cache that was switched off"
        );
        assert_eq!(db.store.stats().queries.capacity, 0);
    });
}

/// A commit that fails may have committed anyway (the connection can be lost
/// while COMMIT is in flight), so larder applies its deletes as if it had:
/// what is DELETED_WITH a deleted row's table goes too. Here the commit fails
/// on a deferred foreign key (SQLite checks those at COMMIT).
#[test]
fn a_failed_commit_empties_what_its_deletes_cascade_into() {
    let db = tags_db(&common::sqlite());
    let ann = user(&db.store, "ann");
    let p = post(&db.store, &ann, "p");
    let tags = db.store.repo::<Tag>();
    let tag = tags
        .create(NewTag {
            post_id: p.id,
            label: "rust".into(),
        })
        .unwrap();
    assert!(tags.cached(tag.id).is_some());
    let err = db
        .store
        .transaction(|tx| {
            tx.posts().query(|conn| {
                larder::with_connection!(conn, |c| {
                    diesel::connection::SimpleConnection::batch_execute(
                        c,
                        "PRAGMA defer_foreign_keys = ON",
                    )
                })?;
                Ok(Vec::new())
            })?;
            tx.posts().delete(p.id)?;
            tx.comments().create(larder_blog::NewComment {
                post_id: 999_999,
                author_id: ann.id,
                body: "orphan, refused at COMMIT".into(),
            })?;
            Ok::<_, larder::Error>(())
        })
        .unwrap_err();
    assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
    assert!(
        tags.cached(tag.id).is_none(),
        "a delete whose commit failed left what it cascades into cached"
    );
    assert_eq!(tags.get(tag.id).unwrap().unwrap().label, "rust");
    common::assert_pool_idle(&db.store);
}

/// Two loads of one cached value that read the same generations but straddle
/// a commit whose invalidation has not been applied (here: never, since the
/// change bypasses larder and coherence is off): the later fill must not
/// replace the value already served, or a caller that saw the newer value is
/// then served the older one.
#[test]
fn a_slow_load_finishing_last_does_not_take_a_cached_value_back_in_time() {
    each_backend(|target| {
        let db = target.fresh_with(|builder| builder.coherence(false));
        let ann = user(&db.store, "ann");
        let name_of_ann = |store: &larder::Store, pause: Option<&std::sync::Barrier>| {
            let id = ann.id;
            store
                .users()
                .cached_value("ann's name", &["users"], |conn| {
                    use larder_blog::schema::users;
                    let name = larder::with_connection!(conn, |c| users::table
                        .find(id)
                        .select(users::name)
                        .get_result::<String>(c))?;
                    if let Some(pause) = pause {
                        pause.wait(); // read the old name
                        pause.wait(); // the new name is committed and served
                    }
                    Ok(name)
                })
        };
        let pause = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            let slow = scope.spawn(|| name_of_ann(&db.store, Some(&pause)).unwrap());
            pause.wait();
            db.raw(&format!(
                "UPDATE users SET name = 'ann2' WHERE id = {}",
                ann.id
            ));
            assert_eq!(name_of_ann(&db.store, None).unwrap(), "ann2");
            pause.wait();
            slow.join().unwrap();
        });
        assert_eq!(
            name_of_ann(&db.store, None).unwrap(),
            "ann2",
            "a value already served came back older"
        );
    });
}

/// A cached query invalidated by nothing would be served forever: one that
/// names no table it reads (an empty `reads`, by mistake or for a query
/// thought constant) is run every time instead, as one reading a table no
/// entity maps is.
#[test]
fn a_query_that_names_nothing_it_reads_is_not_cached() {
    each_backend(|target| {
        let db = target.fresh();
        let count = |store: &larder::Store| {
            let reads: &[&str] = &[];
            store.posts().cached_value("posts.count", reads, |conn| {
                larder::with_connection!(conn, |c| posts::table.count().get_result::<i64>(c))
            })
        };
        assert_eq!(count(&db.store).unwrap(), 0);
        let ann = user(&db.store, "ann");
        post(&db.store, &ann, "one");
        assert_eq!(
            count(&db.store).unwrap(),
            1,
            "a value cached with no reads outlived the insert"
        );
        assert_eq!(db.store.stats().queries.hits, 0);
    });
}

// Two more entities of the users table, as an application may map one table
// twice (a summary and a full row): the first one's destructor opens a window
// inside an invalidation, between the maps of one table.
static IN_INVALIDATION: common::interleave::Latch = common::interleave::Latch::new();
static LISTED: common::interleave::Latch = common::interleave::Latch::new();
static HOLD_INVALIDATION: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
user_entity!(WindowUser, || {});
user_entity!(ListedUser, || {});

impl Drop for WindowUser {
    fn drop(&mut self) {
        if HOLD_INVALIDATION.swap(false, std::sync::atomic::Ordering::SeqCst) {
            IN_INVALIDATION.open();
            LISTED.wait();
        }
    }
}

/// Every user, in a list cached under one key that any users change retires.
fn all_users(listed: &larder::Repo<'_, ListedUser>) -> Vec<Arc<ListedUser>> {
    use larder_blog::schema::users;
    listed
        .cached_query("all users", &["users"], |conn| {
            let rows = larder::with_connection!(conn, |c| users::table
                .order(users::id)
                .load::<larder_blog::User>(c))?;
            Ok(rows.into_iter().map(ListedUser).collect())
        })
        .unwrap()
}

/// An invalidation of a row (here a write's, for every other map of its
/// table) retires the table's cached lists and removes the row from each
/// identity map. In the other order, a list queried in between reads the
/// retiring generations, finds the old row still cached, takes it for its
/// result (a list's rows are the identity map's `Arc`s) and is cached as
/// current: the old row served in that list until the table next changed,
/// while a `get` of the row served the new one. The window opens here by a
/// destructor run inside the invalidation; any pause of the invalidating
/// thread there (the watcher's, applying another process's commit) opens it.
#[test]
fn a_list_queried_during_an_invalidation_never_keeps_the_old_row() {
    each_backend(|target| {
        IN_INVALIDATION.reset();
        LISTED.reset();
        let db = target.fresh_with(|b| b.entity::<WindowUser>().entity::<ListedUser>());
        let ann = user(&db.store, "ann").id;
        drop(db.store.repo::<WindowUser>().get(ann).unwrap()); // cached, held by the map alone
        let listed = db.store.repo::<ListedUser>();
        assert_eq!(listed.get(ann).unwrap().unwrap().0.name, "ann");
        let all = || all_users(&listed);
        HOLD_INVALIDATION.store(true, std::sync::atomic::Ordering::SeqCst);
        let writer = std::thread::spawn({
            let store = db.store.clone();
            move || {
                store.users().update(ann, common::rename("bob")).unwrap();
            }
        });
        IN_INVALIDATION.wait(); // committed; the invalidation is under way
        let during = all();
        LISTED.open();
        writer.join().unwrap();
        assert_eq!(listed.get(ann).unwrap().unwrap().0.name, "bob");
        let after = all();
        assert_eq!(
            after[0].0.name, "bob",
            "a list cached during the invalidation kept the old row (it read {:?})",
            during[0].0.name
        );
    });
}

// A third entity of the users table whose destructor panics once asked to:
// an application's `Drop` with a bug, run as an invalidation lets the row go.
panicky_user_entity!(PanickyUser);
use common::interleave::PANIC_ON_DROP;

/// An invalidation goes to its end even when a row's destructor panics
/// part way (the panic then reaches the caller): the maps after the
/// panicking one, and the table's cached lists, are retired all the same.
/// Stopped at the panic, each would serve the old row until the table's
/// next change.
#[test]
fn an_invalidation_finishes_when_a_rows_destructor_panics() {
    let db = common::fresh_with(|b| b.entity::<PanickyUser>().entity::<ListedUser>());
    let ann = user(&db.store, "ann").id;
    drop(db.store.repo::<PanickyUser>().get(ann).unwrap()); // held by the map alone
    let listed = db.store.repo::<ListedUser>();
    let all = || all_users(&listed);
    assert_eq!(all()[0].0.name, "ann");
    assert_eq!(listed.get(ann).unwrap().unwrap().0.name, "ann");
    db.raw(&format!("UPDATE users SET name = 'bob' WHERE id = {ann}"));
    PANIC_ON_DROP.store(true, std::sync::atomic::Ordering::SeqCst);
    let invalidated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        db.store.invalidate(larder::Key::new("users", ann));
    }));
    assert!(
        invalidated.is_err(),
        "the destructor's panic reaches the caller"
    );
    assert_eq!(
        listed.get(ann).unwrap().unwrap().0.name,
        "bob",
        "a map after the panicking one kept the old row"
    );
    assert_eq!(all()[0].0.name, "bob", "the cached list kept the old row");
}

/// A flush (`Store::clear_cache`, and the watcher's flushes, truncates and
/// cascades' emptying, which share the map's `clear`) empties every shard
/// of a map even when a row's destructor panics in one of them: stopped
/// there, the shards after it kept their rows, and `get` served them after
/// the flush until each row next changed.
#[test]
fn a_flush_empties_every_shard_when_a_rows_destructor_panics() {
    let db = common::fresh_with(|b| b.entity::<PanickyUser>());
    let panicky = db.store.repo::<PanickyUser>();
    // Enough rows to fill several shards: the first one dropped panics, and
    // rows in the shards after its own must still go.
    let ids: Vec<i64> = (0..32)
        .map(|n| user(&db.store, &format!("user{n}")).id)
        .collect();
    for id in &ids {
        drop(panicky.get(*id).unwrap()); // held by the map alone
    }
    PANIC_ON_DROP.store(true, std::sync::atomic::Ordering::SeqCst);
    let flushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        db.store.clear_cache();
    }));
    PANIC_ON_DROP.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(
        flushed.is_err(),
        "the destructor's panic reaches the caller"
    );
    let kept: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| panicky.cached(*id).is_some())
        .collect();
    assert!(
        kept.is_empty(),
        "rows kept cached through a flush: {kept:?}"
    );
}

/// A write whose connection is lost while its statement is in flight (a
/// load balancer resetting the flow, a proxy restarting) fails with
/// `ConnectionLost`, but the server may not notice: here the autocommitted
/// insert waits for a lock another session holds on its post, and commits
/// once that lock goes. Told to the caches when the error came back, the
/// write retired the post's lists before it landed; a list read in between
/// was cached without the comment, and on a store that is the database's
/// only writer (coherence off) nothing retired it again: served for good.
#[test]
fn a_write_lost_in_flight_cannot_land_after_its_lists_were_read_again() {
    use diesel::connection::SimpleConnection;
    each_backend(|target| {
        let db = target.fresh();
        if db.is(larder::Backend::Sqlite) {
            return; // no connection to lose
        }
        let ann = user(&db.store, "ann");
        let on = post(&db.store, &ann, "on");
        let proxy = common::proxy::Proxy::start(&db.url());
        let store = lost::only_writer(&proxy);
        let listed = |store: &larder::Store| -> Vec<i64> {
            let list = store.comments().of_post(on.id).unwrap();
            list.iter().map(|c| c.id).collect()
        };
        assert!(listed(&store).is_empty());
        // The insert's foreign key check waits for this lock.
        let mut holder = lost::row_locked(&db.url(), "posts", on.id);
        lost::lose_in_flight(&proxy, std::time::Duration::from_millis(500), || {
            let new = larder_blog::NewComment {
                post_id: on.id,
                author_id: ann.id,
                body: "late".into(),
            };
            store.comments().create(new)
        });
        let between = listed(&store);
        holder.batch_execute("COMMIT").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let in_db = comment_ids_in_db(&db.store, on.id);
        assert_eq!(
            listed(&store),
            in_db,
            "the list read while the write was lost ({between:?}) stayed cached"
        );
    });
}

/// The same with the COMMIT in flight: a deferred constraint trigger of the
/// application makes a comment's move wait at COMMIT for a lock another
/// session holds on its author, and the connection is lost meanwhile.
/// Told to the caches at once, the move retired both posts' lists before
/// it landed; lists read in between kept the comment under its old post.
#[test]
fn a_commit_lost_in_flight_cannot_land_after_its_lists_were_read_again() {
    use diesel::connection::SimpleConnection;
    each_backend(|target| {
        let db = target.fresh();
        if !db.is(larder::Backend::Postgres) {
            return; // deferred triggers are PostgreSQL's
        }
        let ann = user(&db.store, "ann");
        let (from, to) = (post(&db.store, &ann, "from"), post(&db.store, &ann, "to"));
        let moving = comment(&db.store, &from, &ann, "moving").id;
        db.raw(
            "CREATE FUNCTION wait_for_author() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM 1 FROM users WHERE id = NEW.author_id FOR SHARE; RETURN NULL; END $$;
             CREATE CONSTRAINT TRIGGER wait_for_author AFTER UPDATE ON comments
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION wait_for_author();",
        );
        let proxy = common::proxy::Proxy::start(&db.url());
        let store = lost::only_writer(&proxy);
        let listed = |store: &larder::Store, post: i64| -> Vec<i64> {
            let list = store.comments().of_post(post).unwrap();
            list.iter().map(|c| c.id).collect()
        };
        assert_eq!(listed(&store, from.id), [moving]);
        assert!(listed(&store, to.id).is_empty());
        let mut holder = lost::row_locked(&db.url(), "users", ann.id);
        lost::lose_in_flight(&proxy, std::time::Duration::from_millis(500), || {
            let changes = larder_blog::CommentChanges {
                post_id: Some(to.id),
                ..Default::default()
            };
            store.comments().update(moving, changes)
        });
        let between = (listed(&store, from.id), listed(&store, to.id));
        holder.batch_execute("COMMIT").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        for post in [from.id, to.id] {
            let in_db = comment_ids_in_db(&db.store, post);
            assert_eq!(
                listed(&store, post),
                in_db,
                "post {post}: the lists read while the commit was lost ({between:?}) stayed cached"
            );
        }
    });
}

/// The ids of post `post`'s comments as the database has them: read inside
/// a transaction, whose reads never use or fill the shared cache.
fn comment_ids_in_db(store: &larder::Store, post: i64) -> Vec<i64> {
    let tx = store.begin().unwrap();
    let list = tx.comments().of_post(post).unwrap();
    list.iter().map(|c| c.id).collect()
}

/// A cached list's rows are rows of its entity's table, so whatever else it
/// reads, it reads that table. A new user's list of posts by authors named
/// ann, read `&["users"]` (the table the filter names), was retired only by
/// users' changes: a post added, edited or deleted left it as it was, the
/// edited post's old `Arc` included, for good. It is refused instead, with
/// an error that says what to read.
#[test]
fn a_list_whose_reads_leave_out_its_own_table_is_refused() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let by_anns = |store: &larder::Store| {
            use larder_blog::schema::users;
            store
                .posts()
                .cached_query("posts by users named ann", &["users"], |conn| {
                    let query = posts::table
                        .inner_join(users::table)
                        .filter(users::name.eq("ann"))
                        .select(posts::all_columns)
                        .order(posts::id);
                    larder::with_connection!(conn, |c| query.load(c))
                })
        };
        let first = by_anns(&db.store);
        post(&db.store, &ann, "one");
        let second = by_anns(&db.store);
        match (&first, &second) {
            (Err(larder::Error::InvalidConfig { reason }), Err(_)) => {
                assert!(reason.contains("posts"), "{reason}");
            }
            _ => panic!("served {first:?} then {second:?}: the new post's list went unretired"),
        }
        let in_tx = db.store.transaction(|tx| {
            tx.posts()
                .cached_query("posts", &["users"], |_| Ok(Vec::new()))
        });
        assert!(
            matches!(in_tx, Err(larder::Error::InvalidConfig { .. })),
            "refused the same inside a transaction: {in_tx:?}"
        );
    });
}
