//! Transactions: commit on Ok, rollback on Err, panic or drop; the shared cache
//! changes only after a commit; the connection always goes back usable.

mod common;

use larder_blog::prelude::*;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use common::{assert_pool_idle, each_backend, rename, user, user_in_db};
use larder::Error;
use larder_blog::{NewComment, NewPost, NewUser};

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
