//! The blog larder was first written for: users, their posts, and comments on
//! posts, built on larder's public API alone, the way any application embeds
//! it. It is larder's demo, its benchmark workload and the proof that an
//! application's own tables get everything: the identity map, transactions,
//! commit-time and cross-process invalidation.
//!
//! ```
//! use larder_blog::prelude::*;
//! use larder_blog::{NewComment, NewPost, NewUser};
//!
//! # let dir = tempfile::tempdir().unwrap();
//! # let url = format!("sqlite://{}", dir.path().join("blog.db").display());
//! let store = larder_blog::open(&url)?; // built, larder's and the blog's migrations run
//! let ann = store.users().create(NewUser { name: "ann".into(), email: "ann@example.org".into() })?;
//! let post = store.transaction(|tx| {
//!     let p = tx.posts().create(NewPost { author_id: ann.id, title: "Threading and Locks".into(), body: "…".into() })?;
//!     tx.comments().create(NewComment { post_id: p.id, author_id: ann.id, body: "use with".into() })?;
//!     Ok::<_, larder::Error>(p)
//! })?;
//! assert_eq!(store.comments().of_post(post.id)?.len(), 1);
//! assert_eq!(store.comments().count_of_post(post.id)?, 1);
//! store.users().delete(ann.id)?; // cascades: the post and comment leave the cache too
//! assert!(store.posts().get(post.id)?.is_none());
//! # Ok::<(), larder::Error>(())
//! ```

#![deny(missing_docs, unreachable_pub)]
#![warn(clippy::unwrap_used)]

mod comment;
mod front_page;
mod post;
pub mod schema;
mod user;

pub use comment::{AsyncCommentQueries, Comment, CommentChanges, CommentQueries, NewComment};
pub use front_page::{front_page, rebuild_front_page, write_front_page, Rebuilt, FRONT_PAGE_LOCK};
pub use post::{AsyncPostQueries, NewPost, Post, PostChanges, PostQueries};
pub use user::{NewUser, User, UserChanges};

use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use larder::{Backend, Repos, Store, StoreBuilder};

/// The blog's accessors, its query methods and larder's repository traits:
/// `use larder_blog::prelude::*;`.
pub mod prelude {
    pub use crate::{AsyncCommentQueries, AsyncPostQueries, Blog, CommentQueries, PostQueries};
    pub use larder::{Repos, Repository};
}

/// The blog's SQLite schema: its tables and their change-capture triggers.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
/// The blog's PostgreSQL schema.
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
/// The blog's MySQL/MariaDB schema.
pub const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");

/// The blog's migrations for `backend`.
pub fn migrations(backend: Backend) -> EmbeddedMigrations {
    match backend {
        Backend::Postgres => POSTGRES_MIGRATIONS,
        Backend::Mysql => MYSQL_MIGRATIONS,
        _ => SQLITE_MIGRATIONS,
    }
}

/// A store builder for `url` with the blog's entities registered.
pub fn builder(url: &str) -> StoreBuilder {
    Store::builder(url)
        .entity::<User>()
        .entity::<Post>()
        .entity::<Comment>()
}

/// Runs larder's own pending migrations, then the blog's; returns the
/// versions applied.
///
/// # Errors
///
/// [`larder::Error::Migration`] naming the migration that failed.
pub fn migrate(store: &Store) -> larder::Result<Vec<String>> {
    let mut applied = store.migrate()?;
    applied.extend(store.run_migrations(migrations(store.url().backend()))?);
    Ok(applied)
}

/// A store on `url` with the blog's entities, built and migrated.
///
/// # Errors
///
/// As [`StoreBuilder::build`] and [`migrate`].
pub fn open(url: &str) -> larder::Result<Store> {
    let store = builder(url).build()?;
    migrate(&store)?;
    Ok(store)
}

/// `users()`, `posts()` and `comments()` on a [`Store`] and on a
/// [`Tx`](larder::Tx) alike.
pub trait Blog: Repos {
    /// The users repository.
    fn users(&self) -> Self::Repo<'_, User> {
        self.repo::<User>()
    }

    /// The posts repository.
    fn posts(&self) -> Self::Repo<'_, Post> {
        self.repo::<Post>()
    }

    /// The comments repository.
    fn comments(&self) -> Self::Repo<'_, Comment> {
        self.repo::<Comment>()
    }
}

impl<T: Repos> Blog for T {}

/// Loads `$query` with its rows locked `FOR UPDATE` where the backend has row
/// locks. A delete that first finds the rows its cascade will remove locks
/// them (and their parent) this way, so that no child can be inserted under
/// them between that read and the DELETE, unseen by the invalidation. SQLite
/// needs no lock: its write transaction (`BEGIN IMMEDIATE`) excludes every
/// other writer already.
macro_rules! load_for_update {
    ($conn:expr, $query:expr) => {{
        #[allow(unused_imports)]
        use diesel::prelude::*;
        let query = $query;
        larder::match_backend!($conn, |c| {
            Sqlite => query.load(c),
            Postgres => query.for_update().load(c),
            Mysql => query.for_update().load(c),
        })
    }};
}
pub(crate) use load_for_update;

/// Runs an insert and returns the stored row: `RETURNING` where the backend
/// has it, else (MySQL) the insert, its generated id and a select.
macro_rules! insert_returning {
    ($conn:expr, $insert:expr, $table:path) => {{
        #[allow(unused_imports)]
        use diesel::{prelude::*, query_builder::AsQuery};
        // Kept prepared: diesel would prepare an insert again on every call.
        let insert = $insert;
        larder::match_backend!($conn, |c| {
            // Read to the end (`get_results`): SQLite checkpoints its WAL
            // only after a write stepped to completion.
            Sqlite => larder::KeepPrepared::new(insert.as_query()).get_results(c)?.into_iter().next().ok_or(diesel::result::Error::NotFound),
            Postgres => larder::KeepPrepared::new(insert.as_query()).get_results(c)?.into_iter().next().ok_or(diesel::result::Error::NotFound),
            Mysql => {
                larder::KeepPrepared::new(insert).execute(c)?;
                let id: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                    "CAST(LAST_INSERT_ID() AS SIGNED)",
                ))
                .get_result(c)?;
                $table.find(id).get_result(c)
            },
        })
    }};
}
pub(crate) use insert_returning;

/// Runs an update of row `$id` and returns the stored row, or `None` when no
/// row matched: `RETURNING` where the backend has it, else (MySQL) the update
/// and a select.
macro_rules! update_returning {
    ($conn:expr, $update:expr, $table:path, $id:expr) => {{
        #[allow(unused_imports)]
        use diesel::{prelude::*, query_builder::AsQuery};
        // Kept prepared, as in `insert_returning!`.
        let update = $update;
        larder::match_backend!($conn, |c| {
            // Read to the end, as in `insert_returning!`.
            Sqlite => larder::KeepPrepared::new(update.as_query()).get_results(c).map(|rows| rows.into_iter().next()),
            Postgres => larder::KeepPrepared::new(update.as_query()).get_results(c).map(|rows| rows.into_iter().next()),
            Mysql => match larder::KeepPrepared::new(update).execute(c)? {
                0 => Ok(None),
                _ => $table.find($id).get_result(c).optional(),
            },
        })
    }};
}
pub(crate) use update_returning;

use chrono::{DateTime, NaiveDateTime, Timelike, Utc};

/// Timestamps are stored as UTC without an offset, the one form all backends share.
fn utc(stored: NaiveDateTime) -> DateTime<Utc> {
    stored.and_utc()
}

/// Now, to the microsecond: the finest precision every backend stores, so a
/// row written and read back compares equal.
fn now() -> NaiveDateTime {
    let now = Utc::now().naive_utc();
    now.with_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now)
}
