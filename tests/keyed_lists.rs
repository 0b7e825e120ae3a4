//! Lists read with `Read::eq` (the blog's `comments().of_post(id)`,
//! `count_of_post(id)`, `posts().by_author(id)`): a write retires the lists of
//! the key values its row had before and has after it, and no other, whether
//! it is made here or heard from another process; a change whose key values
//! are unknown retires every list of its table; and no interleaving of
//! writers leaves a list that differs from the database.

mod common;

use larder_blog::prelude::*;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use common::{comment, each_backend, post, user, TestDb};
use diesel::prelude::*;
use larder::{Backend, Store};
use larder_blog::schema::comments;
use larder_blog::{Comment, CommentChanges, NewComment, Post, User};

/// The coherence bound of the "other process" stores.
const BOUND: Duration = Duration::from_millis(300);

/// Comment ids on `post`, as the database has them now (read in a
/// transaction, so no cache is consulted or filled).
fn in_db(store: &Store, post: i64) -> Vec<i64> {
    let tx = store.begin().unwrap();
    let ids = tx.comments().of_post(post).unwrap();
    ids.iter().map(|c| c.id).collect()
}

fn ids(list: &[Arc<Comment>]) -> Vec<i64> {
    list.iter().map(|c| c.id).collect()
}

/// The store's list-cache hits so far.
fn hits(store: &Store) -> u64 {
    store.stats().queries.hits
}

/// Whether `read` is served from the list cache.
fn is_hit<T>(store: &Store, read: impl FnOnce(&Store) -> T) -> bool {
    let before = hits(store);
    read(store);
    hits(store) > before
}

/// Three posts by ann, the first two with a comment each.
fn three_posts(db: &TestDb) -> (Arc<User>, [Arc<Post>; 3]) {
    let ann = user(&db.store, "ann");
    let posts = ["a", "b", "c"].map(|t| post(&db.store, &ann, t));
    comment(&db.store, &posts[0], &ann, "on a");
    comment(&db.store, &posts[1], &ann, "on b");
    (ann, posts)
}

/// Caches every list of `posts` and of `author`'s posts on `store`.
fn cache_lists(store: &Store, author: &User, posts: &[Arc<Post>]) {
    for p in posts {
        store.comments().of_post(p.id).unwrap();
        store.comments().count_of_post(p.id).unwrap();
    }
    store.posts().by_author(author.id).unwrap();
}

fn new_comment(post: &Post, author: &User, body: &str) -> NewComment {
    NewComment {
        post_id: post.id,
        author_id: author.id,
        body: body.into(),
    }
}

fn move_to(post: &Post) -> CommentChanges {
    CommentChanges {
        post_id: Some(post.id),
        ..Default::default()
    }
}

/// A store on `db`'s database with coherence on: another process, as far as
/// caches go.
fn other_process(db: &TestDb) -> Store {
    larder_blog::builder(&db.url())
        .max_staleness(BOUND)
        .build()
        .expect("coherent store")
}

#[test]
fn a_comment_on_one_post_leaves_the_other_posts_lists_cached() {
    each_backend(|target| {
        let db = target.fresh();
        let store = &db.store;
        let (ann, [a, b, _]) = three_posts(&db);
        cache_lists(store, &ann, &[a.clone(), b.clone()]);
        let added = store
            .comments()
            .create(new_comment(&a, &ann, "more"))
            .unwrap();

        assert!(is_hit(store, |s| s.comments().of_post(b.id).unwrap()));
        assert!(is_hit(store, |s| s.comments().count_of_post(b.id).unwrap()));
        assert!(is_hit(store, |s| s.posts().by_author(ann.id).unwrap()));
        assert!(!is_hit(store, |s| s.comments().of_post(a.id).unwrap()));
        assert_eq!(
            ids(&store.comments().of_post(a.id).unwrap()).last(),
            Some(&added.id)
        );
        assert_eq!(store.comments().count_of_post(a.id).unwrap(), 2);

        let edit = CommentChanges {
            body: Some("edited".into()),
            ..Default::default()
        };
        store.comments().update(added.id, edit).unwrap();
        assert!(is_hit(store, |s| s.comments().of_post(b.id).unwrap()));
        assert_eq!(store.comments().of_post(a.id).unwrap()[1].body, "edited");
    });
}

#[test]
fn moving_a_comment_retires_the_lists_of_both_posts() {
    each_backend(|target| {
        let db = target.fresh();
        let store = &db.store;
        let (ann, posts) = three_posts(&db);
        cache_lists(store, &ann, &posts);
        let [a, b, c] = posts;
        let moving = store.comments().of_post(a.id).unwrap()[0].id;

        store.comments().update(moving, move_to(&b)).unwrap();
        assert!(store.comments().of_post(a.id).unwrap().is_empty(), "left a");
        assert!(
            ids(&store.comments().of_post(b.id).unwrap()).contains(&moving),
            "joined b"
        );
        assert_eq!(store.comments().count_of_post(a.id).unwrap(), 0);
        assert_eq!(store.comments().count_of_post(b.id).unwrap(), 2);
        assert!(
            is_hit(store, |s| s.comments().of_post(c.id).unwrap()),
            "c untouched"
        );
    });
}

#[test]
fn a_delete_retires_its_posts_lists() {
    each_backend(|target| {
        let db = target.fresh();
        let store = &db.store;
        let (ann, posts) = three_posts(&db);
        cache_lists(store, &ann, &posts);
        let [a, b, _] = posts;
        let doomed = store.comments().of_post(a.id).unwrap()[0].id;
        assert!(store.comments().delete(doomed).unwrap());
        assert!(store.comments().of_post(a.id).unwrap().is_empty());
        assert_eq!(store.comments().count_of_post(a.id).unwrap(), 0);
        assert!(is_hit(store, |s| s.comments().of_post(b.id).unwrap()));
    });
}

#[test]
fn writes_heard_from_another_process_retire_only_their_posts_lists() {
    each_backend(|target| {
        let db = target.fresh();
        let (ann, posts) = three_posts(&db);
        // Opened after the seeding: its watcher hears only what follows.
        let other = other_process(&db);
        cache_lists(&other, &ann, &posts);
        let [a, b, c] = posts;
        let wait = || std::thread::sleep(BOUND);

        // An insert on a.
        let added = db
            .store
            .comments()
            .create(new_comment(&a, &ann, "more"))
            .unwrap();
        wait();
        assert!(
            is_hit(&other, |s| s.comments().of_post(b.id).unwrap()),
            "insert"
        );
        assert_eq!(
            ids(&other.comments().of_post(a.id).unwrap()),
            in_db(&db.store, a.id)
        );

        // A move from a to b.
        db.store.comments().update(added.id, move_to(&b)).unwrap();
        wait();
        assert!(
            is_hit(&other, |s| s.comments().of_post(c.id).unwrap()),
            "move"
        );
        for p in [&a, &b] {
            assert_eq!(
                ids(&other.comments().of_post(p.id).unwrap()),
                in_db(&db.store, p.id)
            );
        }
        assert!(ids(&other.comments().of_post(b.id).unwrap()).contains(&added.id));

        // A delete on b.
        db.store.comments().delete(added.id).unwrap();
        wait();
        assert!(
            is_hit(&other, |s| s.comments().of_post(a.id).unwrap()),
            "delete"
        );
        assert_eq!(
            ids(&other.comments().of_post(b.id).unwrap()),
            in_db(&db.store, b.id)
        );
        assert_eq!(other.comments().count_of_post(b.id).unwrap(), 1);
    });
}

#[test]
fn a_trigger_without_key_values_retires_every_list_of_its_table() {
    each_backend(|target| {
        let db = target.fresh();
        // The comments' capture as larder wrote it before key columns.
        let keyed = larder::capture_sql_with_keys(db.backend, "comments", &["post_id"]).unwrap();
        let plain = larder::capture_sql(db.backend, "comments").unwrap();
        db.raw(&keyed.down);
        db.raw(&plain.up);
        let (ann, posts) = three_posts(&db);
        let other = other_process(&db);
        cache_lists(&other, &ann, &posts);
        let [a, b, _] = posts;

        db.store
            .comments()
            .create(new_comment(&a, &ann, "more"))
            .unwrap();
        std::thread::sleep(BOUND);
        assert!(
            !is_hit(&other, |s| s.comments().of_post(b.id).unwrap()),
            "fallback"
        );
        assert_eq!(
            ids(&other.comments().of_post(a.id).unwrap()),
            in_db(&db.store, a.id)
        );
        assert_eq!(other.comments().count_of_post(a.id).unwrap(), 2);
    });
}

/// The dangerous interleaving of a move: writer 1 reads the comment's post
/// (a) before its update, writer 2 moves the comment to b and commits, a
/// reader caches b's list with the comment in it, and writer 1's update then
/// moves the comment on to c. Writer 1 retires a (what it read) and c (what
/// it wrote), never b: unless its read locked the row, b's list keeps a
/// comment that is no longer there. With the lock, writer 2 waits for writer
/// 1 instead, and reads c.
#[test]
fn a_move_racing_another_move_leaves_no_list_stale() {
    each_backend(|target| {
        let db = target.fresh();
        let store = db.store.clone();
        let ann = user(&store, "ann");
        let [a, b, c] = ["a", "b", "c"].map(|t| post(&store, &ann, t));
        let moving = comment(&store, &a, &ann, "moving").id;
        let (read, has_read) = mpsc::channel::<()>();
        let (go, proceed) = mpsc::channel::<()>();
        let (done, second_done) = mpsc::channel::<()>();

        let (first_store, target_post) = (store.clone(), c.id);
        let first = std::thread::spawn(move || {
            first_store
                .comments()
                .write(moving, move |conn| {
                    read.send(()).unwrap();
                    proceed.recv().unwrap();
                    let update = diesel::update(comments::table.find(moving))
                        .set(comments::post_id.eq(target_post));
                    larder::with_connection!(conn, |c| update.execute(c))?;
                    <Comment as larder::Entity>::find(conn, moving)
                })
                .unwrap()
        });
        has_read.recv().unwrap();
        let (second_store, to_b) = (store.clone(), move_to(&b));
        let second = std::thread::spawn(move || {
            second_store.comments().update(moving, to_b).unwrap();
            done.send(()).unwrap();
        });
        // With the lock, the second writer is still waiting for the first.
        let waited = second_done
            .recv_timeout(Duration::from_millis(500))
            .is_err();
        store.comments().of_post(b.id).unwrap();
        go.send(()).unwrap();
        first.join().unwrap();
        second.join().unwrap();
        if db.is(Backend::Sqlite) {
            assert!(waited, "SQLite's write transaction let a second writer in");
        }
        for p in [&a, &b, &c] {
            assert_eq!(
                ids(&store.comments().of_post(p.id).unwrap()),
                in_db(&store, p.id),
                "post {} list stale",
                p.title
            );
        }
    });
}

/// A small deterministic generator, so a failure replays.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn after_random_writes_no_cached_list_differs_from_the_database() {
    each_backend(|target| {
        let db = target.fresh();
        let store = &db.store;
        let ann = user(store, "ann");
        let posts: Vec<Arc<Post>> = (0..4)
            .map(|n| post(store, &ann, &format!("p{n}")))
            .collect();
        let mut rng = Lcg(0x5eed);
        let mut live: Vec<i64> = Vec::new();
        for step in 0..150 {
            let target = &posts[rng.below(4) as usize];
            match rng.below(5) {
                0 | 1 => live.push(
                    store
                        .comments()
                        .create(new_comment(target, &ann, &format!("c{step}")))
                        .unwrap()
                        .id,
                ),
                2 if !live.is_empty() => {
                    let id = live[rng.below(live.len() as u64) as usize];
                    store.comments().update(id, move_to(target)).unwrap();
                }
                3 if !live.is_empty() => {
                    let id = live.swap_remove(rng.below(live.len() as u64) as usize);
                    store.comments().delete(id).unwrap();
                }
                _ => {
                    let id = store.posts().by_author(ann.id).unwrap().len();
                    assert_eq!(id, 4);
                }
            }
            for p in &posts {
                let cached = ids(&store.comments().of_post(p.id).unwrap());
                let count = store.comments().count_of_post(p.id).unwrap();
                let fresh = in_db(store, p.id);
                assert_eq!(cached, fresh, "step {step}, post {}", p.title);
                assert_eq!(count as usize, fresh.len(), "step {step}, post {}", p.title);
            }
        }
        assert!(hits(store) > 0, "some lists were served from the cache");
    });
}

/// A keyed write first reads its row's key values, locked, so that its
/// commit retires the lists the row leaves. A row that is not there yet
/// cannot be locked: another session may insert it (an application choosing
/// its ids, as for a row keyed by its owner's id) and commit before the
/// write's statement runs, which then changes that row. The write knew no
/// value before, so its commit must retire every list of the table, not
/// only those of the values it wrote. Only PostgreSQL interleaves so:
/// SQLite's write transaction and InnoDB's lock on the gap where the row
/// would be both hold such an insert back until the write ends.
#[test]
fn a_write_to_a_row_inserted_after_its_key_read_retires_the_lists_it_left() {
    each_backend(|target| {
        let db = target.fresh();
        if !db.is(Backend::Postgres) {
            return;
        }
        let store = &db.store;
        let (ann, [a, b, _]) = three_posts(&db);
        let id = 1_000_000;
        let moved = store
            .comments()
            .write(id, |conn| {
                // The key read found no row: the insert of another session
                // commits now, and a's list is read and cached with it.
                db.raw(&format!(
                    "INSERT INTO comments (id, post_id, author_id, body, created_at) \
                     VALUES ({id}, {}, {}, 'late', now())",
                    a.id, ann.id
                ));
                let listed = ids(&store.comments().of_post(a.id).unwrap());
                assert!(listed.contains(&id), "a's list read after the insert");
                <Comment as larder::Entity>::update(conn, id, &move_to(&b))
            })
            .unwrap()
            .expect("the write found the inserted row");
        assert_eq!(moved.post_id, b.id);
        assert_eq!(
            ids(&store.comments().of_post(a.id).unwrap()),
            in_db(store, a.id),
            "a's cached list kept the comment moved away"
        );
        assert_eq!(
            ids(&store.comments().of_post(b.id).unwrap()),
            in_db(store, b.id)
        );
    });
}

/// A transaction that moves a comment through its repository (a to b) and
/// then again with a statement of its own (`run`, b to c): the commit
/// invalidates the comment rather than caching it as the repository's write
/// returned it, since the statement may have changed it again. Its lists
/// must go the same way: retiring only a and b, the values the repository's
/// write saw, left c's cached list without the comment that is now on c.
#[test]
fn a_statement_of_its_own_after_a_move_retires_the_lists_it_moved_to() {
    each_backend(|target| {
        let db = target.fresh();
        let store = &db.store;
        let (ann, posts) = three_posts(&db);
        cache_lists(store, &ann, &posts);
        let [a, b, c] = posts;
        let moving = store.comments().of_post(a.id).unwrap()[0].id;
        store
            .transaction(|tx| {
                tx.comments().update(moving, move_to(&b))?;
                let to_c = c.id;
                tx.comments().run(Some(moving), move |conn| {
                    let update = diesel::update(comments::table.find(moving))
                        .set(comments::post_id.eq(to_c));
                    larder::with_connection!(conn, |c| update.execute(c))
                })
            })
            .unwrap();
        for p in [&a, &b, &c] {
            assert_eq!(
                ids(&store.comments().of_post(p.id).unwrap()),
                in_db(store, p.id),
                "post {} list stale",
                p.title
            );
            assert_eq!(
                store.comments().count_of_post(p.id).unwrap() as usize,
                in_db(store, p.id).len(),
                "post {} count stale",
                p.title
            );
        }
    });
}

/// A cached list's key must name its parameters. One that does not (a new
/// user's `"comments of a post"` for every post) while its reads name the
/// post (`Read::eq`) was served post a's list for post b: the two reads
/// compare different buckets whose generations happened to be equal, and
/// the entry kept no trace of the value it was read for. The reads say
/// which rows the list holds: a list read for another value is not it.
#[test]
fn a_key_reused_for_another_key_value_is_not_served_that_values_list() {
    let db = common::fresh();
    let store = &db.store;
    let (_, [a, b, _]) = three_posts(&db);
    let of_post = |post: i64| {
        let reads = [larder::Read::eq("comments", "post_id", post)];
        store
            .comments()
            .cached_query("comments of a post", &reads, |conn| {
                let query = comments::table
                    .filter(comments::post_id.eq(post))
                    .order(comments::id);
                larder::with_connection!(conn, |c| query.load(c))
            })
            .unwrap()
    };
    assert_eq!(ids(&of_post(a.id)), in_db(store, a.id));
    assert_eq!(ids(&of_post(b.id)), in_db(store, b.id), "b served a's list");
    assert_eq!(ids(&of_post(a.id)), in_db(store, a.id), "a served b's list");
}

/// A transaction's count (`cached_value`, a plain query inside it) after
/// its write is a read, not a statement of the application's own that may
/// have written the row again: the commit retires the written post's lists
/// only, and the other posts' stay cached.
#[test]
fn a_count_read_after_a_write_in_a_transaction_retires_only_that_posts_lists() {
    each_backend(|target| {
        let db = target.fresh();
        let store = &db.store;
        let (ann, posts) = three_posts(&db);
        cache_lists(store, &ann, &posts);
        let [a, b, _] = posts;
        store
            .transaction(|tx| {
                tx.comments().create(new_comment(&a, &ann, "more"))?;
                assert_eq!(tx.comments().count_of_post(a.id)?, 2);
                Ok::<_, larder::Error>(())
            })
            .unwrap();
        assert!(is_hit(store, |s| s.comments().of_post(b.id).unwrap()));
        assert_eq!(
            ids(&store.comments().of_post(a.id).unwrap()),
            in_db(store, a.id)
        );
    });
}
