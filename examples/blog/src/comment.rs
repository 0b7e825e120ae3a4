use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::backend::Backend;
use diesel::deserialize::{self, FromStaticSqlRow, Queryable};
use diesel::prelude::*;

use super::schema::comments;
use larder::Connection;
use larder::Entity;
use larder::{AsyncRepo, Read, Repository, Result};

/// A comment on a post.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Comment {
    /// Primary key.
    pub id: i64,
    /// The post commented on; deleting the post deletes the comment.
    pub post_id: i64,
    /// The commenting user; deleting the user deletes the comment.
    pub author_id: i64,
    /// Comment text.
    pub body: String,
    /// When the comment was written.
    pub created_at: DateTime<Utc>,
}

/// What creating a comment takes; a missing post or author is a
/// [`Conflict`](larder::Error::Conflict).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
pub struct NewComment {
    /// The post commented on.
    pub post_id: i64,
    /// The commenting user.
    pub author_id: i64,
    /// Comment text.
    pub body: String,
}

/// A change to a comment; `None` fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
pub struct CommentChanges {
    /// New text.
    pub body: Option<String>,
    /// Moves the comment to another post.
    pub post_id: Option<i64>,
}

type CommentRow = (i64, i64, i64, String, NaiveDateTime);

impl<DB: Backend> Queryable<comments::SqlType, DB> for Comment
where
    CommentRow: FromStaticSqlRow<comments::SqlType, DB>,
{
    type Row = CommentRow;

    fn build(
        (id, post_id, author_id, body, created_at): Self::Row,
    ) -> deserialize::Result<Comment> {
        Ok(Comment {
            id,
            post_id,
            author_id,
            body,
            created_at: super::utc(created_at),
        })
    }
}

impl Comment {
    fn of_post(conn: &mut Connection, post_id: i64) -> QueryResult<Vec<Comment>> {
        let query = comments::table
            .filter(comments::post_id.eq(post_id))
            .order(comments::id);
        larder::with_connection!(conn, |c| query.load(c))
    }

    fn counts_of_posts(conn: &mut Connection, post_ids: &[i64]) -> QueryResult<HashMap<i64, i64>> {
        let mut counts: HashMap<i64, i64> = post_ids.iter().map(|id| (*id, 0)).collect();
        // Well under every backend's limit of bound parameters (SQLite 32,766).
        for chunk in post_ids.chunks(COUNTED_PER_STATEMENT) {
            let query = comments::table
                .filter(comments::post_id.eq_any(chunk))
                .group_by(comments::post_id)
                .select((comments::post_id, diesel::dsl::count_star()));
            let counted: Vec<(i64, i64)> = larder::with_connection!(conn, |c| query.load(c))?;
            counts.extend(counted);
        }
        Ok(counts)
    }

    fn count_of_post(conn: &mut Connection, post_id: i64) -> QueryResult<i64> {
        let query = comments::table
            .filter(comments::post_id.eq(post_id))
            .count();
        larder::with_connection!(conn, |c| query.get_result(c))
    }
}

impl Entity for Comment {
    larder::entity_slot!();
    const SINGLE_STATEMENT_WRITES: bool = true;
    const TABLE: &'static str = "comments";
    /// Lists of a post's comments are retired only by changes to its own.
    const KEY_COLUMNS: &'static [&'static str] = &["post_id"];
    type New = NewComment;
    type Changes = CommentChanges;

    fn id(&self) -> i64 {
        self.id
    }

    fn key_value(&self, column: &str) -> Option<i64> {
        (column == "post_id").then_some(self.post_id)
    }

    fn find(conn: &mut Connection, id: i64) -> QueryResult<Option<Comment>> {
        larder::with_connection!(conn, |c| comments::table.find(id).get_result(c).optional())
    }

    fn find_many(conn: &mut Connection, ids: &[i64]) -> QueryResult<Vec<Comment>> {
        let query = comments::table.filter(comments::id.eq_any(ids));
        larder::with_connection!(conn, |c| query.load(c))
    }

    fn insert(conn: &mut Connection, new: &NewComment) -> QueryResult<Comment> {
        let insert = diesel::insert_into(comments::table).values((
            comments::post_id.eq(new.post_id),
            comments::author_id.eq(new.author_id),
            comments::body.eq(&new.body),
            comments::created_at.eq(super::now()),
        ));
        crate::insert_returning!(conn, insert, comments::table)
    }

    fn update(
        conn: &mut Connection,
        id: i64,
        changes: &CommentChanges,
    ) -> QueryResult<Option<Comment>> {
        if changes.body.is_none() && changes.post_id.is_none() {
            return Comment::find(conn, id);
        }
        let set = (
            changes.body.as_ref().map(|body| comments::body.eq(body)),
            changes.post_id.map(|post| comments::post_id.eq(post)),
        );
        let update = diesel::update(comments::table.find(id)).set(set);
        crate::update_returning!(conn, update, comments::table, id)
    }

    fn delete(conn: &mut Connection, id: i64) -> QueryResult<bool> {
        let removed = larder::with_connection!(conn, |c| diesel::delete(comments::table.find(id))
            .execute(c))?;
        Ok(removed > 0)
    }
}

/// The blog's queries on comments, on the store (cached) and inside a
/// transaction (seeing its own writes) alike.
pub trait CommentQueries: Repository<Comment> {
    /// Comments on `post_id`, oldest first; on the store from the query cache
    /// until a comment on that post changes (is written, deleted, or moved to
    /// or from it), as the identity map's `Arc`s.
    ///
    /// # Errors
    ///
    /// A database error.
    fn of_post(&self, post_id: i64) -> Result<Vec<Arc<Comment>>> {
        self.cached_query(&of_post_key(post_id), &[on_post(post_id)], |conn| {
            Comment::of_post(conn, post_id)
        })
    }

    /// How many comments `post_id` has: one `COUNT` query, cached on the
    /// store until a comment on that post changes.
    ///
    /// # Errors
    ///
    /// A database error.
    fn count_of_post(&self, post_id: i64) -> Result<i64> {
        self.cached_value(&count_key(post_id), &[on_post(post_id)], |conn| {
            Comment::count_of_post(conn, post_id)
        })
    }

    /// How many comments each of `post_ids` has (0 for a post without any),
    /// for a page listing several posts: one `COUNT … GROUP BY` query and one
    /// cached value, retired when a comment on any of those posts changes.
    ///
    /// ```
    /// use larder_blog::prelude::*;
    /// use larder_blog::{NewComment, NewPost, NewUser};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = larder_blog::open(dir.path().join("doc.db").to_str().unwrap()).unwrap();
    /// let ann = store.users().create(NewUser { name: "ann".into(), email: "a@example.org".into() })?;
    /// let post = |title: &str| store.posts().create(NewPost { author_id: ann.id, title: title.into(), body: "…".into() });
    /// let (one, two) = (post("one")?, post("two")?);
    /// let comment = NewComment { post_id: two.id, author_id: ann.id, body: "hi".into() };
    /// store.comments().create(comment)?;
    /// let counts = store.comments().counts_of_posts(&[one.id, two.id])?;
    /// assert_eq!((counts[&one.id], counts[&two.id]), (0, 1));
    /// let comment = NewComment { post_id: one.id, author_id: ann.id, body: "hello".into() };
    /// store.comments().create(comment)?; // retires the cached counts
    /// assert_eq!(store.comments().counts_of_posts(&[one.id, two.id])?[&one.id], 1);
    /// # Ok::<(), larder::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A database error.
    fn counts_of_posts(&self, post_ids: &[i64]) -> Result<HashMap<i64, i64>> {
        let ids = post_ids.to_vec();
        let reads: Vec<Read> = post_ids.iter().map(|id| on_post(*id)).collect();
        self.cached_value(&counts_key(post_ids), &reads, |conn| {
            Comment::counts_of_posts(conn, &ids)
        })
    }
}

impl<R: Repository<Comment>> CommentQueries for R {}

// The query cache's keys and reads of the comment lists, shared by the sync
// and the async calls so that both serve one cached value.
/// Posts whose comments one statement counts: `counts_of_posts` takes any
/// number, a statement at most this many.
const COUNTED_PER_STATEMENT: usize = 10_000;

fn of_post_key(post_id: i64) -> String {
    format!("comments.of_post({post_id})")
}

fn count_key(post_id: i64) -> String {
    format!("comments.count_of_post({post_id})")
}

/// Built on every call of a front page, cached or not: written without the
/// formatting machinery, which cost more than the cache lookup it keys.
fn counts_key(post_ids: &[i64]) -> String {
    const PREFIX: &str = "comments.counts_of_posts(";
    let mut key = String::with_capacity(PREFIX.len() + 1 + post_ids.len() * 8);
    key.push_str(PREFIX);
    let mut number = itoa::Buffer::new();
    for (at, id) in post_ids.iter().enumerate() {
        if at > 0 {
            key.push(',');
        }
        key.push_str(number.format(*id));
    }
    key.push(')');
    key
}

fn on_post(post_id: i64) -> Read {
    Read::eq(Comment::TABLE, "post_id", post_id)
}

/// [`CommentQueries`] for async callers, on larder's [`AsyncRepo`]: the same
/// cached lists and counts (a cached one served without leaving the task's
/// thread).
///
/// ```
/// use larder_blog::{AsyncCommentQueries, Comment};
/// # let dir = tempfile::tempdir().unwrap();
/// # let store = larder_blog::open(dir.path().join("doc.db").to_str().unwrap()).unwrap();
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let comments = store.async_repo::<Comment>();
/// assert_eq!(comments.count_of_post(1).await?, 0);
/// assert!(comments.of_post(1).await?.is_empty());
/// # Ok::<(), larder::Error>(())
/// # }).unwrap();
/// ```
pub trait AsyncCommentQueries {
    /// As [`CommentQueries::of_post`], the cached list shared rather than
    /// copied.
    ///
    /// # Errors
    ///
    /// A database error, or [`larder::Error::Interrupted`].
    fn of_post(&self, post_id: i64) -> impl Future<Output = Result<Arc<Vec<Arc<Comment>>>>> + Send;

    /// As [`CommentQueries::count_of_post`].
    ///
    /// # Errors
    ///
    /// A database error, or [`larder::Error::Interrupted`].
    fn count_of_post(&self, post_id: i64) -> impl Future<Output = Result<i64>> + Send;

    /// As [`CommentQueries::counts_of_posts`], the cached map shared rather
    /// than copied.
    ///
    /// # Errors
    ///
    /// A database error, or [`larder::Error::Interrupted`].
    fn counts_of_posts(
        &self,
        post_ids: &[i64],
    ) -> impl Future<Output = Result<Arc<HashMap<i64, i64>>>> + Send;
}

impl AsyncCommentQueries for AsyncRepo<Comment> {
    fn of_post(&self, post_id: i64) -> impl Future<Output = Result<Arc<Vec<Arc<Comment>>>>> + Send {
        self.cached_query_shared(of_post_key(post_id), vec![on_post(post_id)], move |conn| {
            Comment::of_post(conn, post_id)
        })
    }

    fn count_of_post(&self, post_id: i64) -> impl Future<Output = Result<i64>> + Send {
        self.cached_value(count_key(post_id), vec![on_post(post_id)], move |conn| {
            Comment::count_of_post(conn, post_id)
        })
    }

    fn counts_of_posts(
        &self,
        post_ids: &[i64],
    ) -> impl Future<Output = Result<Arc<HashMap<i64, i64>>>> + Send {
        let ids = post_ids.to_vec();
        let reads: Vec<Read> = post_ids.iter().map(|id| on_post(*id)).collect();
        self.cached_value_shared(counts_key(post_ids), reads, move |conn| {
            Comment::counts_of_posts(conn, &ids)
        })
    }
}
