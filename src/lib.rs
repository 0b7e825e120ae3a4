//! larder: a cached, lock-safe repository layer over diesel.
//!
//! An application embeds larder as its persistence layer. A [`Store`] puts an
//! identity-map cache (sharded LRU behind `parking_lot` locks) over an r2d2
//! connection pool. Repositories serve `get` from the cache, load misses once
//! however many callers race for them, and run writes in transactions that
//! invalidate what they changed only when they commit. Every transaction and
//! lock is a scoped guard, released on `Err` and on panic alike.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! # let url = format!("sqlite://{}", dir.path().join("blog.db").display());
//! use larder::{NewComment, NewPost, NewUser, Store};
//!
//! let store = Store::open(&url)?;
//! store.migrate()?;
//! let ann = store.users().create(NewUser { name: "ann".into(), email: "ann@example.org".into() })?;
//! let post = store.transaction(|tx| {
//!     let p = tx.posts().create(NewPost { author_id: ann.id, title: "Threading and Locks".into(), body: "…".into() })?;
//!     tx.comments().create(NewComment { post_id: p.id, author_id: ann.id, body: "use with".into() })?;
//!     Ok::<_, larder::Error>(p)
//! })?;
//! assert_eq!(store.comments().of_post(post.id)?.len(), 1);
//! store.users().delete(ann.id)?; // cascades: the post and comment leave the cache too
//! assert!(store.posts().get(post.id)?.is_none());
//! # Ok::<(), larder::Error>(())
//! ```
//!
//! Several processes may share the database: triggers installed by larder's
//! migrations capture every committed change, and each store's background
//! watcher invalidates what other processes (or plain SQL clients) changed,
//! within [`StoreBuilder::max_staleness`]; see the README's deployment section.
//!
//! Design and invariants: see the README's design section.

#![deny(
    missing_docs,
    unsafe_code,
    missing_debug_implementations,
    unreachable_pub
)]
#![warn(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod backend;
mod blog;
mod builder;
mod cache;
mod coherence;
mod database;
mod entity;
mod error;
mod migrate;
mod pool;
mod registry;
mod repo;
mod stats;
mod store;
mod tx;
mod url;

pub use backend::Connection;
pub use blog::schema;
pub use blog::{
    Comment, CommentChanges, NewComment, NewPost, NewUser, Post, PostChanges, User, UserChanges,
};
pub use builder::StoreBuilder;
pub use cache::CacheStats;
pub use coherence::capture::{capture_sql, CaptureSql};
pub use coherence::{CoherenceStats, FlushCounts, FlushReason};
pub use database::{create_database, database_exists, drop_database};
#[doc(hidden)]
pub use entity::is_empty_changeset;
pub use entity::{Entity, Key};
pub use error::{ConflictKind, Error, Result};
#[cfg(feature = "mysql")]
pub use migrate::MYSQL_MIGRATIONS;
#[cfg(feature = "postgres")]
pub use migrate::POSTGRES_MIGRATIONS;
pub use migrate::{MigrationStatus, Migrator, SQLITE_MIGRATIONS};
pub use repo::{Repo, TxRepo};
pub use stats::{PoolState, Stats};
pub use store::Store;
pub use tx::Tx;
pub use url::{Backend, DatabaseUrl};
