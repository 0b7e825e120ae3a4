//! larder: a cached, lock-safe repository layer over diesel.
//!
//! An application embeds larder as its persistence layer. A [`Store`] puts an
//! identity-map cache (sharded LRU behind `parking_lot` locks) over an r2d2
//! connection pool. Repositories serve `get` from the cache, load misses once
//! however many callers race for them, and run writes that invalidate what
//! they changed only once committed. Every transaction and lock is a scoped
//! guard, released on `Err` and on panic alike.
//!
//! An application declares its tables as entities and gets all of it:
//!
//! ```
//! use diesel::prelude::*;
//!
//! diesel::table! { notes (id) { id -> BigInt, body -> Text } }
//!
//! #[derive(Debug, Queryable)]
//! pub struct Note { pub id: i64, pub body: String }
//!
//! #[derive(Insertable)]
//! #[diesel(table_name = notes)]
//! pub struct NewNote { pub body: String }
//!
//! #[derive(AsChangeset, Default)]
//! #[diesel(table_name = notes)]
//! pub struct NoteChanges { pub body: Option<String> }
//!
//! larder::entity!(Note { table: notes, new: NewNote, changes: NoteChanges });
//!
//! # let dir = tempfile::tempdir().unwrap();
//! # let url = format!("sqlite://{}", dir.path().join("notes.db").display());
//! let store = larder::Store::open(&url)?;
//! store.migrate()?; // larder's own change log
//! # diesel::connection::SimpleConnection::batch_execute(&mut larder::Connection::establish(&url)?,
//! #     "CREATE TABLE notes (id INTEGER PRIMARY KEY NOT NULL, body TEXT NOT NULL)").unwrap();
//! let notes = store.repo::<Note>();
//! let note = notes.create(NewNote { body: "hello".into() })?;
//! let again = notes.get(note.id)?.expect("just created");
//! assert!(std::sync::Arc::ptr_eq(&note, &again)); // one object per cached row
//! store.transaction(|tx| {
//!     tx.repo::<Note>().update(note.id, NoteChanges { body: Some("hi".into()) })?;
//!     Ok::<_, larder::Error>(())
//! })?; // the cache learns of the update only once it is committed
//! assert_eq!(notes.get(note.id)?.unwrap().body, "hi");
//! # Ok::<(), larder::Error>(())
//! ```
//!
//! Several processes may share the database: triggers (see [`capture_sql`])
//! capture every committed change, and each store's background watcher
//! invalidates what other processes (or plain SQL clients) changed, within
//! [`StoreBuilder::max_staleness`].
//!
//! The blog application larder was first written for (`larder-blog`, in the
//! repository's `examples/blog`) is built on this public API alone.

#![deny(missing_docs, unreachable_pub)]
#![warn(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod backend;
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
mod sync;
mod tx;
mod url;

pub use backend::Connection;
pub use builder::StoreBuilder;
pub use cache::CacheStats;
pub use coherence::capture::{capture_sql, CaptureSql};
pub use coherence::{CoherenceStats, FlushCounts, FlushReason};
pub use database::{create_database, database_exists, drop_database};
pub use entity::{Entity, Key};
pub use error::{ConflictKind, Error, Result};
#[cfg(feature = "derive")]
pub use larder_derive::Entity;
#[cfg(feature = "mysql")]
pub use migrate::MYSQL_MIGRATIONS;
#[cfg(feature = "postgres")]
pub use migrate::POSTGRES_MIGRATIONS;
pub use migrate::{MigrationStatus, Migrator, SQLITE_MIGRATIONS};
pub use repo::{Repo, Repos, Repository, TxRepo};
pub use stats::{PoolState, Stats};
pub use store::Store;
pub use tx::Tx;
pub use url::{Backend, DatabaseUrl};

/// What the macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::entity::{is_empty_changeset, slot_by_type, EntitySlot};
}
