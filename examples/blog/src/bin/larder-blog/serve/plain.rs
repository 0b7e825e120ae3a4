//! `serve --mode plain`: the same pages the way a user without larder would
//! write them, the baseline larder is measured against. Plain diesel on an
//! r2d2 pool of its own, the best hand-written queries (a join for names, one
//! `COUNT … GROUP BY` for the front page's counts), no cache. larder's
//! `Connection` is used only as the enum that dispatches one diesel
//! connection per backend (and sets SQLite's WAL and busy timeout, as any
//! SQLite server must).

use std::time::Duration;

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{BigInt, Text};
use larder_blog::schema::{comments, posts, users};

use super::data::{joined, stale_version, Failure, PoolState, FRONT_POSTS, REFUSED};
use super::pages::{self, CommentView, FrontItem, PostView};

/// A pool of plain connections to one database.
#[derive(Clone)]
pub(crate) struct Plain {
    pool: r2d2::Pool<Manager>,
}

impl Plain {
    /// A pool of up to `size` connections to `url`; a checkout waits at most
    /// `timeout`.
    pub(crate) fn open(url: &str, size: u32, timeout: Duration) -> Result<Plain, Failure> {
        let pool = r2d2::Pool::builder()
            .max_size(size)
            .connection_timeout(timeout)
            .build(Manager {
                url: url.to_owned(),
            })
            .map_err(|e| Failure::new(503, e.to_string()))?;
        Ok(Plain { pool })
    }

    pub(crate) async fn front_page(&self) -> Result<String, Failure> {
        let rows = self.blocking(|conn| {
            let query = diesel::sql_query(format!(
                "SELECT p.id AS id, p.title AS title, u.name AS author, COUNT(c.id) AS comments \
                 FROM (SELECT id, title, author_id FROM posts ORDER BY id DESC LIMIT {FRONT_POSTS}) p \
                 JOIN users u ON u.id = p.author_id \
                 LEFT JOIN comments c ON c.post_id = p.id \
                 GROUP BY p.id, p.title, u.name \
                 ORDER BY p.id DESC"
            ));
            let rows: Vec<FrontRow> = larder::with_connection!(conn, |c| query.load(c))?;
            Ok(rows)
        })
        .await?;
        let items: Vec<FrontItem<'_>> = rows
            .iter()
            .map(|r| FrontItem {
                id: r.id,
                title: &r.title,
                author: &r.author,
                comments: r.comments,
            })
            .collect();
        Ok(pages::front(&items))
    }

    pub(crate) async fn post_page(
        &self,
        id: i64,
    ) -> Result<Option<(PostView, Vec<CommentView>)>, Failure> {
        self.blocking(move |conn| {
            let post = posts::table
                .inner_join(users::table)
                .filter(posts::id.eq(id))
                .select((
                    posts::id,
                    posts::title,
                    posts::body,
                    posts::version,
                    users::name,
                ));
            let post: Option<(i64, String, String, i64, String)> =
                larder::with_connection!(conn, |c| post.get_result(c).optional())?;
            let Some((id, title, body, version, author)) = post else {
                return Ok(None);
            };
            let comments = comments::table
                .inner_join(users::table.on(users::id.eq(comments::author_id)))
                .filter(comments::post_id.eq(id))
                .order(comments::id)
                .select((comments::id, users::name, comments::body));
            let comments: Vec<(i64, String, String)> =
                larder::with_connection!(conn, |c| comments.load(c))?;
            let view = PostView {
                id,
                title,
                body,
                version,
                author,
            };
            let comments = comments
                .into_iter()
                .map(|(id, author, body)| CommentView { id, author, body })
                .collect();
            Ok(Some((view, comments)))
        })
        .await
    }

    pub(crate) async fn add_comment(
        &self,
        post_id: i64,
        author_id: i64,
        body: String,
    ) -> Result<i64, Failure> {
        self.blocking(move |conn| {
            let exists = posts::table.find(post_id).select(posts::id);
            let exists: Option<i64> =
                larder::with_connection!(conn, |c| exists.first(c).optional())?;
            if exists.is_none() {
                return Err(Failure::new(404, format!("posts {post_id} not found")));
            }
            let insert = diesel::insert_into(comments::table).values((
                comments::post_id.eq(post_id),
                comments::author_id.eq(author_id),
                comments::body.eq(&body),
                comments::created_at.eq(now()),
            ));
            let id: i64 = larder::match_backend!(conn, |c| {
                // Read to the end, as larder's writes are: SQLite
                // checkpoints its WAL only after a write stepped to completion.
                Sqlite => insert.returning(comments::id).get_results(c)?.into_iter().next().ok_or(DieselError::NotFound),
                Postgres => insert.returning(comments::id).get_results(c)?.into_iter().next().ok_or(DieselError::NotFound),
                Mysql => {
                    insert.execute(c)?;
                    diesel::select(diesel::dsl::sql::<BigInt>("CAST(LAST_INSERT_ID() AS SIGNED)"))
                        .get_result(c)
                },
            })?;
            Ok(id)
        })
        .await
    }

    pub(crate) async fn edit_post(
        &self,
        id: i64,
        version: i64,
        title: String,
        body: String,
    ) -> Result<i64, Failure> {
        self.blocking(move |conn| {
            let update = diesel::update(
                posts::table
                    .filter(posts::id.eq(id))
                    .filter(posts::version.eq(version)),
            )
            .set((
                posts::title.eq(&title),
                posts::body.eq(&body),
                posts::version.eq(posts::version + 1),
                posts::updated_at.eq(now()),
            ));
            let rows = larder::with_connection!(conn, |c| update.execute(c))?;
            if rows == 1 {
                return Ok(version + 1);
            }
            let current = posts::table.find(id).select(posts::version);
            let current: Option<i64> =
                larder::with_connection!(conn, |c| current.get_result(c).optional())?;
            Err(match current {
                None => Failure::new(404, format!("posts {id} not found")),
                Some(v) => Failure::new(409, stale_version("posts", id, v, version)),
            })
        })
        .await
    }

    pub(crate) async fn health(&self) -> Result<(), Failure> {
        self.blocking(|conn| {
            larder::with_connection!(conn, |c| diesel::sql_query("SELECT 1").execute(c))?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn panic_in_tx(&self) -> Result<(), Failure> {
        self.blocking(|conn| {
            let newest = posts::table
                .order(posts::id.desc())
                .select((posts::id, posts::author_id));
            let _: QueryResult<()> = larder::with_connection!(conn, |c| c.transaction(|c| {
                if let Some((post_id, author_id)) = newest.first::<(i64, i64)>(c).optional()? {
                    diesel::insert_into(comments::table)
                        .values((
                            comments::post_id.eq(post_id),
                            comments::author_id.eq(author_id),
                            comments::body.eq("written by a handler that then panics"),
                            comments::created_at.eq(now()),
                        ))
                        .execute(c)?;
                }
                panic!("debug route: a handler panics while holding a transaction")
            }));
            Ok(())
        })
        .await
    }

    pub(crate) fn pool_state(&self) -> PoolState {
        let state = self.pool.state();
        PoolState {
            connections: state.connections,
            idle: state.idle_connections,
        }
    }

    /// Runs `work` with a pooled connection on tokio's blocking pool.
    async fn blocking<T, F>(&self, work: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(&mut larder::Connection) -> Result<T, Failure> + Send + 'static,
    {
        let pool = self.pool.clone();
        joined(
            tokio::task::spawn_blocking(move || {
                let mut conn = pool.get().map_err(|e| Failure::new(503, e.to_string()))?;
                work(&mut conn)
            })
            .await,
        )
    }
}

impl From<DieselError> for Failure {
    fn from(err: DieselError) -> Failure {
        let status = match &err {
            DieselError::NotFound => 404,
            DieselError::DatabaseError(
                DatabaseErrorKind::ForeignKeyViolation
                | DatabaseErrorKind::UniqueViolation
                | DatabaseErrorKind::CheckViolation,
                _,
            ) => 409,
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
            | DieselError::BrokenTransactionManager => 503,
            _ => 500,
        };
        if status == 409 {
            // The database's words name its constraints: larder mode's answer.
            tracing::debug!(error = %err, "write refused");
            return Failure::new(status, REFUSED);
        }
        Failure::new(status, err.to_string())
    }
}

#[derive(QueryableByName)]
struct FrontRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    title: String,
    #[diesel(sql_type = Text)]
    author: String,
    #[diesel(sql_type = BigInt)]
    comments: i64,
}

/// Now, to the microsecond every backend stores.
fn now() -> chrono::NaiveDateTime {
    use chrono::Timelike;
    let now = chrono::Utc::now().naive_utc();
    now.with_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now)
}

/// Opens plain connections for r2d2.
#[derive(Debug)]
struct Manager {
    url: String,
}

/// Why a plain connection could not be opened or checked (larder's
/// message, which never holds the password).
#[derive(Debug)]
struct ConnectError(String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

impl r2d2::ManageConnection for Manager {
    type Connection = larder::Connection;
    type Error = ConnectError;

    fn connect(&self) -> Result<larder::Connection, ConnectError> {
        larder::Connection::establish(&self.url).map_err(|e| ConnectError(e.to_string()))
    }

    fn is_valid(&self, conn: &mut larder::Connection) -> Result<(), ConnectError> {
        larder::with_connection!(conn, |c| diesel::sql_query("SELECT 1").execute(c))
            .map(drop)
            .map_err(|e| ConnectError(e.to_string()))
    }

    /// diesel's own r2d2 manager does the same: a connection returned while
    /// its thread unwinds may be inside a transaction, so it is not reused.
    fn has_broken(&self, _: &mut larder::Connection) -> bool {
        std::thread::panicking()
    }
}
