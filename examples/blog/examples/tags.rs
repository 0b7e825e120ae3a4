//! An application that adds its own table, tags on posts, and gets larder's
//! cache, transactions and invalidation for it without writing cache code.
//!
//! Run with `cargo run -p larder-blog --example tags`.

use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use larder_blog::prelude::*;
use larder_blog::{NewPost, NewUser};

/// The application's own migrations, applied after larder's and the blog's.
const MIGRATIONS: EmbeddedMigrations = embed_migrations!("examples/tags_migrations");

diesel::table! {
    tags (id) {
        id -> BigInt,
        post_id -> BigInt,
        label -> Text,
    }
}

/// A label on a post. tags.post_id cascades from posts, so a deleted post (or
/// its deleted author) must empty the tag cache too: `deleted_with`.
#[derive(Debug, Queryable, larder::Entity)]
#[larder(table = tags, new = NewTag, changes = TagChanges, deleted_with = ["posts"])]
pub struct Tag {
    pub id: i64,
    pub post_id: i64,
    pub label: String,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = tags)]
pub struct NewTag {
    pub post_id: i64,
    pub label: String,
}

#[derive(Debug, AsChangeset, Default)]
#[diesel(table_name = tags)]
pub struct TagChanges {
    pub label: Option<String>,
}

fn main() -> larder::Result<()> {
    let dir = std::env::temp_dir().join(format!("larder-tags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| larder::Error::InvalidConfig {
        reason: e.to_string(),
    })?;
    let store = larder_blog::builder(&format!("sqlite://{}", dir.join("tags.db").display()))
        .entity::<Tag>()
        .build()?;
    larder_blog::migrate(&store)?;
    store.run_migrations(MIGRATIONS)?;

    let ann = store.users().create(NewUser {
        name: "ann".into(),
        email: "ann@example.org".into(),
    })?;
    let post = store.posts().create(NewPost {
        author_id: ann.id,
        title: "Locks".into(),
        body: "…".into(),
    })?;
    let tags = store.repo::<Tag>();
    let rust = store.transaction(|tx| {
        let repo = tx.repo::<Tag>();
        let rust = repo.create(NewTag {
            post_id: post.id,
            label: "rust".into(),
        })?;
        repo.create(NewTag {
            post_id: post.id,
            label: "concurrency".into(),
        })?;
        Ok::<_, larder::Error>(rust)
    })?;
    let on_post = tags.cached_query(&format!("tags.of_post({})", post.id), &["tags"], |conn| {
        let query = tags::table
            .filter(tags::post_id.eq(post.id))
            .order(tags::id);
        larder::with_connection!(conn, |c| query.load(c))
    })?;
    println!(
        "post {} is tagged {:?}",
        post.id,
        on_post.iter().map(|t| &t.label).collect::<Vec<_>>()
    );
    assert!(std::sync::Arc::ptr_eq(
        &tags.get(rust.id)?.expect("cached"),
        &rust
    ));

    store.users().delete(ann.id)?; // cascades to the post, and from it to its tags
    assert!(tags.get(rust.id)?.is_none());
    println!(
        "after deleting the author, tag {} is gone from the cache too",
        rust.id
    );
    println!("\n{}", store.stats());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
