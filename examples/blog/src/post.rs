use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::backend::Backend;
use diesel::deserialize::{self, FromStaticSqlRow, Queryable};
use diesel::prelude::*;

use super::schema::{comments, posts};
use larder::Connection;
use larder::{AsyncRepo, Error, Read, Repository, Result};
use larder::{Entity, Key};

/// A blog post. `version` starts at 1 and every update increments it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Post {
    /// Primary key.
    pub id: i64,
    /// The writing [`User`](crate::User); deleting the user deletes the post.
    pub author_id: i64,
    /// Title.
    pub title: String,
    /// Body text.
    pub body: String,
    /// Whether readers can see it; new posts are unpublished.
    pub published: bool,
    /// Optimistic-locking version: 1 when created, +1 on every update.
    pub version: i64,
    /// When the post was created.
    pub created_at: DateTime<Utc>,
    /// When the post was last updated.
    pub updated_at: DateTime<Utc>,
}

/// What creating a post takes; a missing author is a [`Conflict`](larder::Error::Conflict).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
pub struct NewPost {
    /// The writing user.
    pub author_id: i64,
    /// Title.
    pub title: String,
    /// Body text.
    pub body: String,
}

/// A change to a post; `None` fields are left as they are. Every update, even
/// an empty one, increments the version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
pub struct PostChanges {
    /// New title.
    pub title: Option<String>,
    /// New body.
    pub body: Option<String>,
    /// Publish or unpublish.
    pub published: Option<bool>,
}

type PostRow = (
    i64,
    i64,
    String,
    String,
    bool,
    i64,
    NaiveDateTime,
    NaiveDateTime,
);

impl<DB: Backend> Queryable<posts::SqlType, DB> for Post
where
    PostRow: FromStaticSqlRow<posts::SqlType, DB>,
{
    type Row = PostRow;

    fn build(row: PostRow) -> deserialize::Result<Post> {
        let (id, author_id, title, body, published, version, created_at, updated_at) = row;
        Ok(Post {
            id,
            author_id,
            title,
            body,
            published,
            version,
            created_at: super::utc(created_at),
            updated_at: super::utc(updated_at),
        })
    }
}

impl Post {
    /// Updates post `id` only if its version is still `expected_version`.
    fn update_if_version(
        conn: &mut Connection,
        id: i64,
        expected_version: Option<i64>,
        changes: &PostChanges,
    ) -> QueryResult<Option<Post>> {
        let changes = (
            changes.title.as_ref().map(|title| posts::title.eq(title)),
            changes.body.as_ref().map(|body| posts::body.eq(body)),
            changes
                .published
                .map(|published| posts::published.eq(published)),
            posts::version.eq(posts::version + 1),
            posts::updated_at.eq(super::now()),
        );
        match expected_version {
            Some(expected) => {
                let row = posts::table
                    .filter(posts::id.eq(id))
                    .filter(posts::version.eq(expected));
                let update = diesel::update(row).set(changes);
                crate::update_returning!(conn, update, posts::table, id)
            }
            None => {
                let update = diesel::update(posts::table.find(id)).set(changes);
                crate::update_returning!(conn, update, posts::table, id)
            }
        }
    }

    fn by_author(conn: &mut Connection, author_id: i64) -> QueryResult<Vec<Post>> {
        let query = posts::table
            .filter(posts::author_id.eq(author_id))
            .order(posts::id);
        larder::with_connection!(conn, |c| query.load(c))
    }

    fn recent(conn: &mut Connection, limit: i64) -> QueryResult<Vec<Post>> {
        let query = posts::table.order(posts::id.desc()).limit(limit.max(0));
        larder::with_connection!(conn, |c| query.load(c))
    }
}

impl Entity for Post {
    larder::entity_slot!();
    const SINGLE_STATEMENT_WRITES: bool = true;
    const TABLE: &'static str = "posts";
    /// Lists of an author's posts are retired only by changes to their own.
    const KEY_COLUMNS: &'static [&'static str] = &["author_id"];
    type New = NewPost;
    type Changes = PostChanges;

    fn id(&self) -> i64 {
        self.id
    }

    fn key_value(&self, column: &str) -> Option<i64> {
        (column == "author_id").then_some(self.author_id)
    }

    fn find(conn: &mut Connection, id: i64) -> QueryResult<Option<Post>> {
        larder::with_connection!(conn, |c| posts::table.find(id).get_result(c).optional())
    }

    fn find_many(conn: &mut Connection, ids: &[i64]) -> QueryResult<Vec<Post>> {
        let query = posts::table.filter(posts::id.eq_any(ids));
        larder::with_connection!(conn, |c| query.load(c))
    }

    fn insert(conn: &mut Connection, new: &NewPost) -> QueryResult<Post> {
        let now = super::now();
        let insert = diesel::insert_into(posts::table).values((
            posts::author_id.eq(new.author_id),
            posts::title.eq(&new.title),
            posts::body.eq(&new.body),
            posts::published.eq(false),
            posts::version.eq(1),
            posts::created_at.eq(now),
            posts::updated_at.eq(now),
        ));
        crate::insert_returning!(conn, insert, posts::table)
    }

    fn update(conn: &mut Connection, id: i64, changes: &PostChanges) -> QueryResult<Option<Post>> {
        Post::update_if_version(conn, id, None, changes)
    }

    fn delete(conn: &mut Connection, id: i64) -> QueryResult<bool> {
        let removed =
            larder::with_connection!(conn, |c| diesel::delete(posts::table.find(id)).execute(c))?;
        Ok(removed > 0)
    }

    /// A post's comments go with it.
    fn cascade(conn: &mut Connection, id: i64) -> QueryResult<Vec<Key>> {
        // The post row locked first keeps out new comments on it until the
        // delete commits (their foreign key check waits for the lock).
        let _: Vec<i64> = crate::load_for_update!(conn, posts::table.find(id).select(posts::id))?;
        // Locked too: a locking read sees the latest rows, where a plain one
        // in a transaction reads its snapshot (MySQL's REPEATABLE READ), which
        // misses comments committed since the transaction's first read.
        let query = comments::table
            .filter(comments::post_id.eq(id))
            .select(comments::id);
        let comment_ids: Vec<i64> = crate::load_for_update!(conn, query)?;
        Ok(comment_ids
            .into_iter()
            .map(|id| Key::new("comments", id))
            .collect())
    }
}

/// The blog's queries on posts, on the store (cached) and inside a
/// transaction (seeing its own writes) alike.
pub trait PostQueries: Repository<Post> {
    /// Updates post `id` only if its version is still `expected_version`
    /// (optimistic locking); the stored version is then `expected_version + 1`.
    /// On the store it commits on its own. Concurrent read-modify-write loops
    /// that retry on conflict lose no update.
    ///
    /// ```
    /// use larder_blog::prelude::*;
    /// use larder_blog::{NewPost, NewUser, PostChanges};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = larder_blog::open(dir.path().join("doc.db").to_str().unwrap()).unwrap();
    /// # let ann = store.users().create(NewUser { name: "ann".into(), email: "a@example.org".into() })?;
    /// let post = store.posts().create(NewPost { author_id: ann.id, title: "t".into(), body: "b".into() })?;
    /// let changes = PostChanges { published: Some(true), ..Default::default() };
    /// let v2 = store.posts().update_versioned(post.id, 1, changes.clone())?;
    /// assert_eq!(v2.version, 2);
    /// assert!(store.posts().update_versioned(post.id, 1, changes).unwrap_err().is_conflict());
    /// # Ok::<(), larder::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] with
    /// [`ConflictKind::VersionMismatch`](larder::ConflictKind::VersionMismatch)
    /// naming the key when another writer got there first (built with
    /// [`Error::version_mismatch`]), [`Error::NotFound`] when there is no such
    /// post.
    fn update_versioned(
        &self,
        id: i64,
        expected_version: i64,
        changes: PostChanges,
    ) -> Result<Arc<Post>> {
        let written = self.write(id, |conn| {
            Post::update_if_version(conn, id, Some(expected_version), &changes)
        })?;
        if let Some(post) = written {
            return Ok(post);
        }
        match self.run(Some(id), |conn| Post::find(conn, id))? {
            None => Err(Error::NotFound {
                table: Post::TABLE,
                id,
            }),
            Some(current) => Err(Error::version_mismatch(
                Post::TABLE,
                id,
                expected_version,
                current.version,
            )),
        }
    }

    /// Posts by `author_id`, oldest first; on the store from the query cache
    /// until a post of that author changes, as the identity map's `Arc`s.
    ///
    /// # Errors
    ///
    /// A database error.
    fn by_author(&self, author_id: i64) -> Result<Vec<Arc<Post>>> {
        let key = format!("posts.by_author({author_id})");
        let reads = [Read::eq(Post::TABLE, "author_id", author_id)];
        self.cached_query(&key, &reads, |conn| Post::by_author(conn, author_id))
    }

    /// The `limit` most recent posts, newest first; on the store from the
    /// query cache until `posts` changes.
    ///
    /// # Errors
    ///
    /// A database error.
    fn recent(&self, limit: i64) -> Result<Vec<Arc<Post>>> {
        self.cached_query(&recent_key(limit), &[Post::TABLE], |conn| {
            Post::recent(conn, limit)
        })
    }
}

impl<R: Repository<Post>> PostQueries for R {}

/// The query cache's key of [`PostQueries::recent`], shared by the sync and
/// the async call so that both serve one cached list.
fn recent_key(limit: i64) -> String {
    format!("posts.recent({limit})")
}

/// [`PostQueries`] for async callers, on larder's [`AsyncRepo`]: the same
/// cached lists (a cached one served without leaving the task's thread).
///
/// ```
/// use larder_blog::{AsyncPostQueries, NewPost, NewUser, Post, User};
/// # let dir = tempfile::tempdir().unwrap();
/// # let store = larder_blog::open(dir.path().join("doc.db").to_str().unwrap()).unwrap();
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let ann = store.async_repo::<User>()
///     .create(NewUser { name: "ann".into(), email: "a@example.org".into() }).await?;
/// let posts = store.async_repo::<Post>();
/// posts.create(NewPost { author_id: ann.id, title: "Hi".into(), body: "…".into() }).await?;
/// assert_eq!(posts.recent(10).await?[0].title, "Hi");
/// # Ok::<(), larder::Error>(())
/// # }).unwrap();
/// ```
pub trait AsyncPostQueries {
    /// As [`PostQueries::recent`], the cached list shared rather than copied.
    ///
    /// # Errors
    ///
    /// A database error, or [`Error::Interrupted`].
    fn recent(&self, limit: i64) -> impl Future<Output = Result<Arc<Vec<Arc<Post>>>>> + Send;
}

impl AsyncPostQueries for AsyncRepo<Post> {
    fn recent(&self, limit: i64) -> impl Future<Output = Result<Arc<Vec<Arc<Post>>>>> + Send {
        self.cached_query_shared(recent_key(limit), vec![Post::TABLE], move |conn| {
            Post::recent(conn, limit)
        })
    }
}
