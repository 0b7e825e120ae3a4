//! The blog larder was first written for: users, their posts, and comments on
//! posts. Each is an ordinary [`Entity`](crate::Entity), the same public
//! mechanism an application uses for its own tables.

/// Runs an insert and returns the stored row: with `RETURNING` where the
/// backend has it, else (MySQL) the insert, its generated id and a select.
macro_rules! insert_returning {
    ($conn:expr, |$c:ident| $insert:expr, $table:path) => {{
        #[allow(unused_imports)]
        use diesel::prelude::*;
        match $conn {
            $crate::Connection::Sqlite($c) => $insert.get_result($c),
            #[cfg(feature = "postgres")]
            $crate::Connection::Postgres($c) => $insert.get_result($c),
            #[cfg(feature = "mysql")]
            $crate::Connection::Mysql($c) => {
                $insert.execute($c)?;
                let id: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                    "CAST(LAST_INSERT_ID() AS SIGNED)",
                ))
                .get_result($c)?;
                $table.find(id).first($c)
            }
        }
    }};
}

/// Runs an update of row `$id` and returns the stored row, or `None` when no
/// row matched: with `RETURNING` where the backend has it, else (MySQL) the
/// update and a select.
macro_rules! update_returning {
    ($conn:expr, |$c:ident| $update:expr, $table:path, $id:expr) => {{
        #[allow(unused_imports)]
        use diesel::prelude::*;
        match $conn {
            $crate::Connection::Sqlite($c) => $update.get_result($c).optional(),
            #[cfg(feature = "postgres")]
            $crate::Connection::Postgres($c) => $update.get_result($c).optional(),
            #[cfg(feature = "mysql")]
            $crate::Connection::Mysql($c) => match $update.execute($c)? {
                0 => Ok(None),
                _ => $table.find($id).first($c).optional(),
            },
        }
    }};
}
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
        match $conn {
            $crate::Connection::Sqlite(c) => $query.load(c),
            #[cfg(feature = "postgres")]
            $crate::Connection::Postgres(c) => $query.for_update().load(c),
            #[cfg(feature = "mysql")]
            $crate::Connection::Mysql(c) => $query.for_update().load(c),
        }
    }};
}

mod comment;
mod post;
pub mod schema;
mod user;

pub use comment::{Comment, CommentChanges, NewComment};
pub use post::{NewPost, Post, PostChanges};
pub use user::{NewUser, User, UserChanges};

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
