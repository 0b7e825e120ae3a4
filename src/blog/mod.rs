//! The blog larder was first written for: users, their posts, and comments on
//! posts. Each is an ordinary [`Entity`](crate::Entity), the same public
//! mechanism an application uses for its own tables.

mod comment;
mod post;
pub mod schema;
mod user;

pub use comment::{Comment, CommentChanges, NewComment};
pub use post::{NewPost, Post, PostChanges};
pub use user::{NewUser, User, UserChanges};

use chrono::{DateTime, NaiveDateTime, Utc};

/// Timestamps are stored as UTC without an offset, the one form all backends share.
fn utc(stored: NaiveDateTime) -> DateTime<Utc> {
    stored.and_utc()
}

fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}
