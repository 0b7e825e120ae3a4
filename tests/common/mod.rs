//! Helpers shared by the integration tests: each test gets its own SQLite file.
#![allow(dead_code)]

use std::sync::Arc;

use larder::{NewComment, NewPost, NewUser, Post, Store, StoreBuilder, User};
use tempfile::TempDir;

/// A migrated store on a fresh file; keep the `TempDir` alive as long as the store.
pub struct TestDb {
    pub store: Store,
    pub dir: TempDir,
}

impl TestDb {
    pub fn url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("test.db").display())
    }
}

pub fn fresh() -> TestDb {
    fresh_with(|builder| builder)
}

pub fn fresh_with(configure: impl FnOnce(StoreBuilder) -> StoreBuilder) -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = configure(Store::builder(&url)).build().expect("open store");
    store.migrate().expect("migrate");
    TestDb { store, dir }
}

pub fn user(store: &Store, name: &str) -> Arc<User> {
    store
        .users()
        .create(NewUser {
            name: name.into(),
            email: format!("{name}@example.org"),
        })
        .expect("create user")
}

pub fn post(store: &Store, author: &User, title: &str) -> Arc<Post> {
    store
        .posts()
        .create(NewPost {
            author_id: author.id,
            title: title.into(),
            body: "body".into(),
        })
        .expect("create post")
}

pub fn comment(store: &Store, post: &Post, author: &User, body: &str) -> Arc<larder::Comment> {
    store
        .comments()
        .create(NewComment {
            post_id: post.id,
            author_id: author.id,
            body: body.into(),
        })
        .expect("create comment")
}

/// The user row as the database has it now, read inside a transaction so the
/// shared cache is neither consulted nor filled.
pub fn user_in_db(store: &Store, id: i64) -> Option<Arc<User>> {
    let tx = store.begin().expect("begin");
    tx.users().get(id).expect("read user")
}

/// Every pooled connection is back and idle.
pub fn assert_pool_idle(store: &Store) {
    let pool = store.stats().pool;
    assert_eq!(
        pool.idle, pool.connections,
        "a connection was not returned: {pool:?}"
    );
}
