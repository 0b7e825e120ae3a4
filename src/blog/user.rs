use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::deserialize::{self, Queryable};
use diesel::prelude::*;
use diesel::sqlite::Sqlite;

use super::schema::{comments, posts, users};
use crate::entity::{Entity, Key};
use crate::pool::Connection;

/// A registered user of the blog.
#[derive(Debug, Clone, PartialEq, Eq)]
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
pub struct NewUser {
    /// Display name.
    pub name: String,
    /// Email address; a duplicate is a [`Conflict`](crate::Error::Conflict).
    pub email: String,
}

/// A change to a user; `None` fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChanges {
    /// New display name.
    pub name: Option<String>,
    /// New email address.
    pub email: Option<String>,
}

impl Queryable<users::SqlType, Sqlite> for User {
    type Row = (i64, String, String, NaiveDateTime);

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
    const TABLE: &'static str = "users";
    type New = NewUser;
    type Changes = UserChanges;

    fn id(&self) -> i64 {
        self.id
    }

    fn find(conn: &mut Connection, id: i64) -> QueryResult<Option<User>> {
        users::table.find(id).first(conn).optional()
    }

    fn insert(conn: &mut Connection, new: &NewUser) -> QueryResult<User> {
        diesel::insert_into(users::table)
            .values((
                users::name.eq(&new.name),
                users::email.eq(&new.email),
                users::created_at.eq(super::now()),
            ))
            .get_result(conn)
    }

    fn update(conn: &mut Connection, id: i64, changes: &UserChanges) -> QueryResult<Option<User>> {
        if changes.name.is_none() && changes.email.is_none() {
            return User::find(conn, id);
        }
        diesel::update(users::table.find(id))
            .set((
                changes.name.as_ref().map(|name| users::name.eq(name)),
                changes.email.as_ref().map(|email| users::email.eq(email)),
            ))
            .get_result(conn)
            .optional()
    }

    fn delete(conn: &mut Connection, id: i64) -> QueryResult<bool> {
        Ok(diesel::delete(users::table.find(id)).execute(conn)? > 0)
    }

    /// A user's posts, the comments on them, and the user's own comments go with it.
    fn cascade(conn: &mut Connection, id: i64) -> QueryResult<Vec<Key>> {
        let post_ids: Vec<i64> = posts::table
            .filter(posts::author_id.eq(id))
            .select(posts::id)
            .load(conn)?;
        let comment_ids: Vec<i64> = comments::table
            .filter(
                comments::author_id
                    .eq(id)
                    .or(comments::post_id.eq_any(&post_ids)),
            )
            .select(comments::id)
            .load(conn)?;
        let posts = post_ids.into_iter().map(|id| Key::new("posts", id));
        let comments = comment_ids.into_iter().map(|id| Key::new("comments", id));
        Ok(posts.chain(comments).collect())
    }
}
