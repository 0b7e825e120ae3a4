use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::backend::Backend;
use diesel::deserialize::{self, FromStaticSqlRow, Queryable};
use diesel::prelude::*;

use super::schema::{comments, posts, users};
use larder::Connection;
use larder::{Entity, Key};

/// A registered user of the blog.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct User {
    /// Primary key.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Email address, unique across users.
    pub email: String,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
}

/// What creating a user takes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
pub struct NewUser {
    /// Display name.
    pub name: String,
    /// Email address; a duplicate is a [`Conflict`](larder::Error::Conflict).
    pub email: String,
}

/// A change to a user; `None` fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
pub struct UserChanges {
    /// New display name.
    pub name: Option<String>,
    /// New email address.
    pub email: Option<String>,
}

type UserRow = (i64, String, String, NaiveDateTime);

impl<DB: Backend> Queryable<users::SqlType, DB> for User
where
    UserRow: FromStaticSqlRow<users::SqlType, DB>,
{
    type Row = UserRow;

    fn build((id, name, email, created_at): Self::Row) -> deserialize::Result<User> {
        Ok(User {
            id,
            name,
            email,
            created_at: super::utc(created_at),
        })
    }
}

impl Entity for User {
    larder::entity_slot!();
    const SINGLE_STATEMENT_WRITES: bool = true;
    const TABLE: &'static str = "users";
    type New = NewUser;
    type Changes = UserChanges;

    fn id(&self) -> i64 {
        self.id
    }

    fn find(conn: &mut Connection, id: i64) -> QueryResult<Option<User>> {
        larder::with_connection!(conn, |c| users::table.find(id).get_result(c).optional())
    }

    fn find_many(conn: &mut Connection, ids: &[i64]) -> QueryResult<Vec<User>> {
        let query = users::table.filter(users::id.eq_any(ids));
        larder::with_connection!(conn, |c| query.load(c))
    }

    fn insert(conn: &mut Connection, new: &NewUser) -> QueryResult<User> {
        let insert = diesel::insert_into(users::table).values((
            users::name.eq(&new.name),
            users::email.eq(&new.email),
            users::created_at.eq(super::now()),
        ));
        crate::insert_returning!(conn, insert, users::table)
    }

    fn update(conn: &mut Connection, id: i64, changes: &UserChanges) -> QueryResult<Option<User>> {
        if changes.name.is_none() && changes.email.is_none() {
            return User::find(conn, id);
        }
        let update = diesel::update(users::table.find(id)).set((
            changes.name.as_ref().map(|name| users::name.eq(name)),
            changes.email.as_ref().map(|email| users::email.eq(email)),
        ));
        crate::update_returning!(conn, update, users::table, id)
    }

    fn delete(conn: &mut Connection, id: i64) -> QueryResult<bool> {
        let removed =
            larder::with_connection!(conn, |c| diesel::delete(users::table.find(id)).execute(c))?;
        Ok(removed > 0)
    }

    /// A user's posts, the comments on them, and the user's own comments go with it.
    fn cascade(conn: &mut Connection, id: i64) -> QueryResult<Vec<Key>> {
        // Locked, parents first: the user row keeps out new posts and comments
        // by the user, its posts' rows keep out new comments on them.
        let _: Vec<i64> = crate::load_for_update!(conn, users::table.find(id).select(users::id))?;
        let posts_of_user = posts::table
            .filter(posts::author_id.eq(id))
            .select(posts::id);
        let post_ids: Vec<i64> = crate::load_for_update!(conn, posts_of_user)?;
        let doomed_comments = comments::table
            .filter(
                comments::author_id
                    .eq(id)
                    .or(comments::post_id.eq_any(&post_ids)),
            )
            .select(comments::id);
        // Locked too, to read the latest rows rather than the transaction's
        // snapshot (see `Post::cascade`).
        let comment_ids: Vec<i64> = crate::load_for_update!(conn, doomed_comments)?;
        let posts = post_ids.into_iter().map(|id| Key::new("posts", id));
        let comments = comment_ids.into_iter().map(|id| Key::new("comments", id));
        Ok(posts.chain(comments).collect())
    }
}
