//! Races between a write and whatever else touches the same row meanwhile:
//! another writer, a list query, a concurrent insert of a child row. Each is
//! made deterministic by a test entity that runs a hook inside its database
//! call, at the moment the race matters.

mod common;

use larder_blog::prelude::*;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{each_backend, rename, user, user_in_db};
use diesel::prelude::*;
use larder::{Connection, Entity, Key};
use larder_blog::{NewComment, NewUser, Post, User, UserChanges};

type Hook = Box<dyn FnOnce(i64) + Send>;

/// Takes and runs the hook in `slot`, if any, with row `id`.
fn run_hook(slot: &Mutex<Option<Hook>>, id: i64) {
    let hook = slot.lock().unwrap().take();
    if let Some(hook) = hook {
        hook(id);
    }
}

static AFTER_INSERT: Mutex<Option<Hook>> = Mutex::new(None);

/// A user whose writes autocommit, and whose insert runs `AFTER_INSERT` once
/// its INSERT statement has run (and so, in autocommit, committed).
#[derive(Debug)]
struct AutocommitUser(User);

impl Entity for AutocommitUser {
    const TABLE: &'static str = "users";
    const SINGLE_STATEMENT_WRITES: bool = true;
    type New = NewUser;
    type Changes = UserChanges;

    fn id(&self) -> i64 {
        self.0.id
    }

    fn find(conn: &mut Connection, id: i64) -> diesel::QueryResult<Option<Self>> {
        Ok(User::find(conn, id)?.map(AutocommitUser))
    }

    fn insert(conn: &mut Connection, new: &NewUser) -> diesel::QueryResult<Self> {
        let row = User::insert(conn, new)?;
        run_hook(&AFTER_INSERT, row.id);
        Ok(AutocommitUser(row))
    }

    fn update(
        conn: &mut Connection,
        id: i64,
        changes: &UserChanges,
    ) -> diesel::QueryResult<Option<Self>> {
        Ok(User::update(conn, id, changes)?.map(AutocommitUser))
    }

    fn delete(conn: &mut Connection, id: i64) -> diesel::QueryResult<bool> {
        User::delete(conn, id)
    }
}

/// An autocommitted insert is visible to others the moment its statement
/// ends. Another writer updates the new row before `create` has applied its
/// own write to the cache: the create must not cache its older row over the
/// newer committed one (it did when it read the shard epoch after the insert).
#[test]
fn an_autocommitted_insert_raced_by_an_update_caches_nothing_stale() {
    each_backend(|target| {
        let db = target.fresh_with(|b| b.entity::<AutocommitUser>());
        let store = db.store.clone();
        *AFTER_INSERT.lock().unwrap() = Some(Box::new(move |id| {
            // Another thread, as another request would: the row is committed.
            let other = std::thread::spawn(move || {
                let repo = store.repo::<AutocommitUser>();
                repo.update(id, rename("renamed by another writer"))
                    .unwrap();
            });
            other.join().unwrap();
        }));
        let repo = db.store.repo::<AutocommitUser>();
        let created = repo
            .create(NewUser {
                name: "as inserted".into(),
                email: "race@example.org".into(),
            })
            .unwrap();
        assert_eq!(created.0.name, "as inserted", "the insert's own row");
        let in_db = user_in_db(&db.store, created.0.id).unwrap();
        assert_eq!(in_db.name, "renamed by another writer", "the premise");
        let cached = repo.get(created.0.id).unwrap().unwrap();
        assert_eq!(
            cached.0.name, in_db.name,
            "the create filled its older row over a newer committed one"
        );
    });
}

static AFTER_LOAD: Mutex<Option<Hook>> = Mutex::new(None);

/// A user whose load runs `AFTER_LOAD` after reading its row.
#[derive(Debug)]
struct PausedUser(User);

impl Entity for PausedUser {
    const TABLE: &'static str = "users";
    type New = NewUser;
    type Changes = UserChanges;

    fn id(&self) -> i64 {
        self.0.id
    }

    fn find(conn: &mut Connection, id: i64) -> diesel::QueryResult<Option<Self>> {
        let row = User::find(conn, id)?;
        run_hook(&AFTER_LOAD, id);
        Ok(row.map(PausedUser))
    }

    fn insert(conn: &mut Connection, new: &NewUser) -> diesel::QueryResult<Self> {
        User::insert(conn, new).map(PausedUser)
    }

    fn update(
        conn: &mut Connection,
        id: i64,
        changes: &UserChanges,
    ) -> diesel::QueryResult<Option<Self>> {
        Ok(User::update(conn, id, changes)?.map(PausedUser))
    }

    fn delete(conn: &mut Connection, id: i64) -> diesel::QueryResult<bool> {
        User::delete(conn, id)
    }
}

/// Identity: a load that began before a list query cached the same unchanged
/// row must not replace the cached `Arc` when it finishes: every `get` of an
/// unchanged row returns the one object that is cached.
#[test]
fn a_load_finishing_after_a_list_query_keeps_the_cached_object() {
    each_backend(|target| {
        let db = target.fresh_with(|b| b.entity::<PausedUser>());
        let id = user(&db.store, "ann").id;
        db.store.clear_cache();
        let (listed_tx, listed_rx) = mpsc::channel();
        let store = db.store.clone();
        *AFTER_LOAD.lock().unwrap() = Some(Box::new(move |_| {
            // While this load is between its read and its fill, a list query
            // reads the same row and caches it.
            let lister = std::thread::spawn(move || {
                store
                    .repo::<PausedUser>()
                    .query(|conn| {
                        let rows = User::find(conn, id)?;
                        Ok(rows.map(PausedUser).into_iter().collect())
                    })
                    .unwrap()
            });
            listed_tx.send(lister.join().unwrap()).unwrap();
        }));
        let repo = db.store.repo::<PausedUser>();
        let loaded = repo.get(id).unwrap().unwrap();
        let listed = listed_rx.recv().unwrap().pop().unwrap();
        let again = repo.get(id).unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&listed, &again),
            "the load replaced the object the list query had cached"
        );
        assert!(
            Arc::ptr_eq(&loaded, &again),
            "the load returned an object other than the cached one"
        );
    });
}

static AFTER_CASCADE: Mutex<Option<Hook>> = Mutex::new(None);

/// A post whose delete runs `AFTER_CASCADE` between finding the rows the
/// delete cascades to and the DELETE itself.
#[derive(Debug)]
struct CascadingPost(Post);

impl Entity for CascadingPost {
    const TABLE: &'static str = "posts";
    type New = larder_blog::NewPost;
    type Changes = larder_blog::PostChanges;

    fn id(&self) -> i64 {
        self.0.id
    }

    fn find(conn: &mut Connection, id: i64) -> diesel::QueryResult<Option<Self>> {
        Ok(Post::find(conn, id)?.map(CascadingPost))
    }

    fn insert(conn: &mut Connection, new: &larder_blog::NewPost) -> diesel::QueryResult<Self> {
        Post::insert(conn, new).map(CascadingPost)
    }

    fn update(
        conn: &mut Connection,
        id: i64,
        changes: &larder_blog::PostChanges,
    ) -> diesel::QueryResult<Option<Self>> {
        Ok(Post::update(conn, id, changes)?.map(CascadingPost))
    }

    fn delete(conn: &mut Connection, id: i64) -> diesel::QueryResult<bool> {
        Post::delete(conn, id)
    }

    fn cascade(conn: &mut Connection, id: i64) -> diesel::QueryResult<Vec<Key>> {
        let keys = Post::cascade(conn, id)?;
        run_hook(&AFTER_CASCADE, id);
        Ok(keys)
    }
}

/// A comment inserted and cached by another writer after a post's delete
/// found the comments it cascades to, but before the DELETE ran: the cascade
/// removes it, so it must not stay cached. Either the delete's lock keeps the
/// insert out until the delete commits (the insert then fails: its post is
/// gone), or the cascade's invalidation covers it.
#[test]
fn a_child_inserted_during_a_cascading_delete_is_not_left_cached() {
    each_backend(|target| {
        let db = target.fresh_with(|b| b.entity::<CascadingPost>());
        let ann = user(&db.store, "ann");
        let post = common::post(&db.store, &ann, "doomed");
        let (created_tx, created_rx) = mpsc::channel();
        let store = db.store.clone();
        let author = ann.id;
        *AFTER_CASCADE.lock().unwrap() = Some(Box::new(move |post_id| {
            let inserter = std::thread::spawn(move || {
                let comment = store.comments().create(NewComment {
                    post_id,
                    author_id: author,
                    body: "late".into(),
                });
                created_tx.send(comment).unwrap();
            });
            // Give the insert time to land, or to block on the delete's lock;
            // either way the delete goes on afterwards.
            let _ = inserter;
            std::thread::sleep(Duration::from_millis(500));
        }));
        assert!(db.store.repo::<CascadingPost>().delete(post.id).unwrap());
        let created = created_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        if let Ok(comment) = created {
            assert!(
                db.store.comments().get(comment.id).unwrap().is_none(),
                "a comment the cascade removed is still served from the cache"
            );
        }
        assert!(db.store.posts().get(post.id).unwrap().is_none());
    });
}

/// A custom write that changes its row but answers `None` (a mistake an
/// application can make) still leaves no stale entry: the key is recorded
/// before the statement and stays recorded when no row comes back.
#[test]
fn a_write_that_returns_no_row_still_invalidates_its_key() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        assert!(db.store.users().cached(ann.id).is_some());
        let written = db
            .store
            .users()
            .write(ann.id, |conn| {
                let update = diesel::update(larder_blog::schema::users::table.find(ann.id))
                    .set(larder_blog::schema::users::name.eq("Ann"));
                larder::with_connection!(conn, |c| update.execute(c))?;
                Ok(None)
            })
            .unwrap();
        assert!(written.is_none());
        assert_eq!(
            db.store.users().get(ann.id).unwrap().unwrap().name,
            "Ann",
            "the cache kept the row as it was before the write"
        );
    });
}
