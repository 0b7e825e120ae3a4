//! Every committed write invalidates what it changed, cascades included.

mod common;

use larder_blog::prelude::*;
use std::sync::Arc;

use common::{comment, each_backend, post, user};
use larder_blog::{CommentChanges, PostChanges, UserChanges};

#[test]
fn an_update_is_seen_by_the_next_get() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let cached = db.store.users().get(ann.id).unwrap().unwrap();
        let changes = UserChanges {
            name: Some("Ann".into()),
            ..Default::default()
        };
        let updated = db.store.users().update(ann.id, changes).unwrap();
        let seen = db.store.users().get(ann.id).unwrap().unwrap();
        assert_eq!(seen.name, "Ann");
        assert!(!Arc::ptr_eq(&seen, &cached));
        assert!(Arc::ptr_eq(&seen, &updated), "the committed row is cached");
        assert_eq!(
            cached.name, "ann",
            "an entry is immutable: old holders keep their copy"
        );
    });
}

#[test]
fn post_updates_increment_the_version() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let p = post(&db.store, &ann, "t");
        assert_eq!(p.version, 1);
        let changes = PostChanges {
            title: Some("t2".into()),
            ..Default::default()
        };
        let p2 = db.store.posts().update(p.id, changes).unwrap();
        assert_eq!((p2.version, p2.title.as_str()), (2, "t2"));
        assert!(p2.updated_at >= p.updated_at);
        assert_eq!(db.store.posts().get(p.id).unwrap().unwrap().version, 2);
    });
}

#[test]
fn a_delete_is_seen_by_the_next_get() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let p = post(&db.store, &ann, "t");
        let c = comment(&db.store, &p, &ann, "c");
        db.store.comments().get(c.id).unwrap().unwrap();
        assert!(db.store.comments().delete(c.id).unwrap());
        assert!(db.store.comments().get(c.id).unwrap().is_none());
        assert!(
            !db.store.comments().delete(c.id).unwrap(),
            "nothing left to delete"
        );
    });
}

#[test]
fn deleting_a_user_invalidates_its_cascaded_posts_and_comments() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let bob = user(&db.store, "bob");
        let anns_post = post(&db.store, &ann, "ann's");
        let bobs_post = post(&db.store, &bob, "bob's");
        let bob_on_ann = comment(&db.store, &anns_post, &bob, "on ann's post");
        let ann_on_bob = comment(&db.store, &bobs_post, &ann, "ann's comment");
        let bob_on_bob = comment(&db.store, &bobs_post, &bob, "bob's own");
        for id in [anns_post.id, bobs_post.id] {
            db.store.posts().get(id).unwrap().unwrap();
        }
        for id in [bob_on_ann.id, ann_on_bob.id, bob_on_bob.id] {
            db.store.comments().get(id).unwrap().unwrap();
        }

        assert!(db.store.users().delete(ann.id).unwrap());

        assert!(db.store.users().get(ann.id).unwrap().is_none());
        assert!(db.store.posts().get(anns_post.id).unwrap().is_none());
        assert!(
            db.store.comments().get(bob_on_ann.id).unwrap().is_none(),
            "comment on a deleted post"
        );
        assert!(
            db.store.comments().get(ann_on_bob.id).unwrap().is_none(),
            "comment by a deleted user"
        );
        assert!(db.store.posts().get(bobs_post.id).unwrap().is_some());
        assert!(db.store.comments().get(bob_on_bob.id).unwrap().is_some());
    });
}

#[test]
fn deleting_a_post_invalidates_its_comments() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let p = post(&db.store, &ann, "t");
        let c = comment(&db.store, &p, &ann, "c");
        db.store.comments().get(c.id).unwrap().unwrap();
        assert!(db.store.posts().delete(p.id).unwrap());
        assert!(db.store.comments().get(c.id).unwrap().is_none());
        assert!(db.store.comments().of_post(p.id).unwrap().is_empty());
    });
}

#[test]
fn comment_updates_are_seen() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let p = post(&db.store, &ann, "t");
        let c = comment(&db.store, &p, &ann, "first");
        let changes = CommentChanges {
            body: Some("edited".into()),
            ..Default::default()
        };
        db.store.comments().update(c.id, changes).unwrap();
        assert_eq!(
            db.store.comments().get(c.id).unwrap().unwrap().body,
            "edited"
        );
        assert_eq!(db.store.comments().of_post(p.id).unwrap()[0].body, "edited");
    });
}

#[test]
fn a_manual_invalidation_drops_the_entry() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        assert!(db.store.users().cached(ann.id).is_some());
        db.store.users().invalidate(ann.id);
        assert!(db.store.users().cached(ann.id).is_none());
    });
}

/// `Repo::write` takes any statement: one that moves the row to another
/// primary key returns a row of another id, which must not be cached under
/// the id written (that row is gone) with nothing else to retire it.
#[test]
fn a_write_that_moves_its_row_to_another_id_leaves_neither_id_stale() {
    use diesel::prelude::*;
    use larder_blog::schema::users;
    use larder_blog::User;

    each_backend(|target| {
        let db = target.fresh_with(|b| b.coherence(false));
        let ann = user(&db.store, "ann");
        assert!(db.store.users().get(ann.id).unwrap().is_some());
        let (id, moved_to) = (ann.id, ann.id + 1_000_000);
        let moved = db
            .store
            .users()
            .write(id, move |conn| {
                let update = diesel::update(users::table.find(id)).set(users::id.eq(moved_to));
                larder::with_connection!(conn, |c| update.execute(c))?;
                <User as larder::Entity>::find(conn, moved_to)
            })
            .unwrap()
            .unwrap();
        assert_eq!(moved.id, moved_to);
        assert!(
            db.store.users().get(ann.id).unwrap().is_none(),
            "row {} moved away but is still cached under its old id",
            ann.id
        );
        assert_eq!(db.store.users().get(moved_to).unwrap().unwrap().name, "ann");
    });
}
