//! A realistic blog for an empty database: thousands of users, posts and
//! comments, written in batched inserts in one transaction so that a fresh
//! server is ready in a second or two. Runs once, before the server listens
//! and before anything is cached, so its raw inserts need no invalidation
//! (the capture triggers still tell other processes).

use std::str::FromStr;

use chrono::{NaiveDateTime, Timelike};
use diesel::prelude::*;
use larder::Store;
use larder_blog::prelude::*;
use larder_blog::schema::{comments, posts, users};

/// How much to seed: `USERS,POSTS,COMMENTS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seed {
    pub(crate) users: u32,
    pub(crate) posts: u32,
    pub(crate) comments: u32,
}

impl FromStr for Seed {
    type Err = String;

    fn from_str(text: &str) -> Result<Seed, String> {
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        let [users, posts, comments] = parts[..] else {
            return Err(format!("expected USERS,POSTS,COMMENTS, got {text:?}"));
        };
        let number = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| format!("{s:?} is not a count in {text:?}"))
        };
        let seed = Seed {
            users: number(users)?,
            posts: number(posts)?,
            comments: number(comments)?,
        };
        if seed.users == 0 && (seed.posts > 0 || seed.comments > 0) {
            return Err("posts and comments need at least one user".into());
        }
        if seed.posts == 0 && seed.comments > 0 {
            return Err("comments need at least one post".into());
        }
        Ok(seed)
    }
}

/// Rows per INSERT: well under every backend's limit of bound parameters.
const BATCH: usize = 500;

/// The named lock a seed is written under: of two servers starting together
/// on an empty database, the second waits for the first's seed, then finds
/// its users and writes none.
const SEED_LOCK: &str = "larder-blog seed";

/// Seeds the database when it has no user yet; returns whether it did.
pub(crate) fn seed_if_empty(store: &Store, seed: Seed) -> larder::Result<bool> {
    if seed.users == 0 {
        return Ok(false);
    }
    store.with_lock(SEED_LOCK, || seed_unless_seeded(store, seed))
}

/// Seeds unless a user exists; the caller holds [`SEED_LOCK`].
fn seed_unless_seeded(store: &Store, seed: Seed) -> larder::Result<bool> {
    let any: Option<i64> = store.users().run(None, |conn| {
        larder::with_connection!(conn, |c| users::table.select(users::id).first(c).optional())
    })?;
    if any.is_some() {
        return Ok(false);
    }
    store.transaction(|tx| {
        tx.users().run(None, |conn| {
            // One body, compiled once per backend by the macro.
            larder::with_connection!(conn, |c| {
                let rows = Rows::new(seed);
                for chunk in rows.users().chunks(BATCH) {
                    diesel::insert_into(users::table).values(chunk).execute(c)?;
                }
                let user_ids: Vec<i64> = users::table.select(users::id).order(users::id).load(c)?;
                for chunk in rows.posts(&user_ids).chunks(BATCH) {
                    diesel::insert_into(posts::table).values(chunk).execute(c)?;
                }
                let post_ids: Vec<i64> = posts::table.select(posts::id).order(posts::id).load(c)?;
                for chunk in rows.comments(&post_ids, &user_ids).chunks(BATCH) {
                    diesel::insert_into(comments::table)
                        .values(chunk)
                        .execute(c)?;
                }
                QueryResult::Ok(())
            })
        })
    })?;
    // Planner statistics, as a database that has run for a while has them:
    // without them PostgreSQL scans every comment to count a page's, which
    // would make the cache-off and plain baselines look slower than they are.
    store.users().run(None, |conn| {
        larder::match_backend!(conn, |c| {
            Sqlite => diesel::sql_query("ANALYZE").execute(c),
            Postgres => diesel::sql_query("ANALYZE").execute(c),
            // InnoDB recomputes its statistics after a bulk change by itself.
            Mysql => {
                let _ = c;
                QueryResult::Ok(0)
            },
        })
    })?;
    Ok(true)
}

type UserRow = (
    diesel::dsl::Eq<users::name, String>,
    diesel::dsl::Eq<users::email, String>,
    diesel::dsl::Eq<users::created_at, NaiveDateTime>,
);

type PostRow = (
    diesel::dsl::Eq<posts::author_id, i64>,
    diesel::dsl::Eq<posts::title, String>,
    diesel::dsl::Eq<posts::body, String>,
    diesel::dsl::Eq<posts::published, bool>,
    diesel::dsl::Eq<posts::version, i64>,
    diesel::dsl::Eq<posts::created_at, NaiveDateTime>,
    diesel::dsl::Eq<posts::updated_at, NaiveDateTime>,
);

type CommentRow = (
    diesel::dsl::Eq<comments::post_id, i64>,
    diesel::dsl::Eq<comments::author_id, i64>,
    diesel::dsl::Eq<comments::body, String>,
    diesel::dsl::Eq<comments::created_at, NaiveDateTime>,
);

/// The seeded rows, with a fixed pseudo-random spread so that every run
/// seeds the same blog: some posts get many comments, most a few.
struct Rows {
    seed: Seed,
    now: NaiveDateTime,
}

impl Rows {
    fn new(seed: Seed) -> Rows {
        let now = chrono::Utc::now().naive_utc();
        let now = now.with_nanosecond(0).unwrap_or(now);
        Rows { seed, now }
    }

    fn users(&self) -> Vec<UserRow> {
        (0..self.seed.users)
            .map(|n| {
                (
                    users::name.eq(format!("user {n}")),
                    users::email.eq(format!("user{n}@example.org")),
                    users::created_at.eq(self.now),
                )
            })
            .collect()
    }

    fn posts(&self, user_ids: &[i64]) -> Vec<PostRow> {
        let mut pick = Pick::new(1);
        (0..self.seed.posts)
            .map(|n| {
                (
                    posts::author_id.eq(pick.uniform(user_ids)),
                    posts::title.eq(format!("Post {n}: threading & locks")),
                    posts::body.eq(format!(
                        "Post {n}. A lock that is not released on an exception hangs the site; \
                         a cache that is not invalidated serves a stale page."
                    )),
                    posts::published.eq(true),
                    posts::version.eq(1),
                    posts::created_at.eq(self.now),
                    posts::updated_at.eq(self.now),
                )
            })
            .collect()
    }

    fn comments(&self, post_ids: &[i64], user_ids: &[i64]) -> Vec<CommentRow> {
        let mut pick = Pick::new(2);
        (0..self.seed.comments)
            .map(|n| {
                (
                    comments::post_id.eq(pick.skewed(post_ids)),
                    comments::author_id.eq(pick.uniform(user_ids)),
                    comments::body.eq(format!("comment {n}: use a with-block")),
                    comments::created_at.eq(self.now),
                )
            })
            .collect()
    }
}

/// A small deterministic generator (xorshift): the seed needs a spread, not
/// randomness, and the same blog every time.
struct Pick(u64);

impl Pick {
    fn new(stream: u64) -> Pick {
        Pick(0x9E37_79B9_7F4A_7C15 ^ stream)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn uniform(&mut self, ids: &[i64]) -> i64 {
        ids[(self.next() % ids.len() as u64) as usize]
    }

    /// Half the picks go to the newest tenth (the front page's posts get the
    /// most comments), the rest spread over all.
    fn skewed(&mut self, ids: &[i64]) -> i64 {
        if self.next().is_multiple_of(2) {
            let recent = &ids[ids.len() - (ids.len() / 10).max(1)..];
            self.uniform(recent)
        } else {
            self.uniform(ids)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_counts_parse_and_bad_ones_are_refused() {
        let seed: Seed = "3, 4,5".parse().expect("three counts");
        assert_eq!((seed.users, seed.posts, seed.comments), (3, 4, 5));
        assert!("1,2".parse::<Seed>().is_err());
        assert!("0,1,0".parse::<Seed>().is_err());
        assert!("1,0,1".parse::<Seed>().is_err());
        assert!("a,1,1".parse::<Seed>().is_err());
        assert!("0,0,0".parse::<Seed>().is_ok());
    }
}
