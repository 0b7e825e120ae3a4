//! Everything the server asks of the database, as async functions: the one
//! module of the server that calls larder. Page reads go through larder's
//! async repositories: whatever is cached is served on the handler's own
//! thread, with no hop to the blocking pool; a miss, a write and a
//! transaction run on tokio's blocking pool, never on a runtime worker.

use std::future::Future;
use std::sync::Arc;

use tokio::task::JoinError;

use larder::Store;
use larder_blog::prelude::*;
use larder_blog::{Comment, NewComment, Post, PostChanges, User};

use super::pages::{self, CommentView, FrontItem, PostView};
use super::plain::Plain;

/// How many posts the front page lists.
pub(crate) const FRONT_POSTS: i64 = 20;

/// Where the pages come from: larder's cached repositories, or the plain
/// diesel + r2d2 version a user without larder would write.
#[derive(Clone)]
pub(crate) enum Data {
    /// Through larder's store (its cache on or off).
    Larder(Store),
    /// Hand-written diesel queries on a pool of their own, no cache.
    Plain(Plain),
}

/// A request the database could not serve, with the HTTP status it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) status: u16,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }
}

impl From<larder::Error> for Failure {
    fn from(err: larder::Error) -> Failure {
        Failure::new(status_of(&err), client_text(&err))
    }
}

/// What a client is told of a write a constraint refused, in both modes:
/// the database's own words name its constraints and tables (MySQL's, the
/// database too), which are no client's business.
pub(crate) const REFUSED: &str = "the write was refused: it conflicts with the stored data";

/// The text of `err` a client may read. larder's messages hold no password,
/// but a refused write's carries the database's message, which is logged
/// (at debug) and replaced by the blog's words; a version conflict reads as
/// it does in plain mode. A 5xx's text is never shown (see `routes`).
fn client_text(err: &larder::Error) -> String {
    use larder::{ConflictKind, Error};
    match err {
        Error::Conflict {
            table: Some(table),
            id: Some(id),
            kind: ConflictKind::VersionMismatch { expected, actual },
            ..
        } => stale_version(table, *id, *actual, *expected),
        Error::Conflict { .. } | Error::InvalidValue { .. } => {
            tracing::debug!(error = %err, "write refused");
            REFUSED.to_owned()
        }
        _ => err.to_string(),
    }
}

/// The 409 text of an edit of `version` when the row is at `actual`.
pub(crate) fn stale_version(table: &str, id: i64, actual: i64, version: i64) -> String {
    format!("{table} {id} is at version {actual}, not {version}: reload and edit again")
}

/// The HTTP status of a larder error: larder's own mapping
/// ([`larder::Error::status_code`]): a missing row is 404, a rejected write
/// (a constraint, a stale version) 409, anything a retry can fix (no free
/// connection, a lost one, a lock held too long) 503, the rest 500.
pub(crate) fn status_of(err: &larder::Error) -> u16 {
    err.status_code()
}

/// Pool connections: open, and idle in the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolState {
    pub(crate) connections: u32,
    pub(crate) idle: u32,
}

impl Data {
    /// The front page's HTML: the recent posts with their authors' names
    /// and comment counts, built from this request's reads.
    pub(crate) async fn front_page(&self) -> Result<String, Failure> {
        match self {
            Data::Larder(store) => Ok(retrying(|| front_page(store)).await?),
            Data::Plain(plain) => plain.front_page().await,
        }
    }

    /// Post `id` with its author and its comments with theirs; `None` when
    /// there is no such post.
    pub(crate) async fn post_page(
        &self,
        id: i64,
    ) -> Result<Option<(PostView, Vec<CommentView>)>, Failure> {
        match self {
            Data::Larder(store) => Ok(retrying(|| post_page(store, id)).await?),
            Data::Plain(plain) => plain.post_page(id).await,
        }
    }

    /// Adds a comment to post `post_id` in one transaction; returns its id.
    pub(crate) async fn add_comment(
        &self,
        post_id: i64,
        author_id: i64,
        body: String,
    ) -> Result<i64, Failure> {
        match self {
            Data::Larder(store) => {
                blocking(store, move |store| {
                    add_comment(store, post_id, author_id, body)
                })
                .await
            }
            Data::Plain(plain) => plain.add_comment(post_id, author_id, body).await,
        }
    }

    /// Changes post `id`'s title and body if its version is still
    /// `version`; returns the new version (409 when another edit came first).
    pub(crate) async fn edit_post(
        &self,
        id: i64,
        version: i64,
        title: String,
        body: String,
    ) -> Result<i64, Failure> {
        match self {
            Data::Larder(store) => {
                blocking(store, move |store| {
                    let changes = PostChanges {
                        title: Some(title),
                        body: Some(body),
                        published: None,
                    };
                    Ok(store
                        .posts()
                        .update_versioned(id, version, changes)?
                        .version)
                })
                .await
            }
            Data::Plain(plain) => plain.edit_post(id, version, title, body).await,
        }
    }

    /// Whether a pooled connection answers a query.
    pub(crate) async fn health(&self) -> Result<(), Failure> {
        match self {
            Data::Larder(store) => {
                blocking(store, |store| {
                    store.users().run(None, |conn| {
                        use diesel::RunQueryDsl;
                        larder::with_connection!(conn, |c| diesel::sql_query("SELECT 1").execute(c))
                    })?;
                    Ok(())
                })
                .await
            }
            Data::Plain(plain) => plain.health().await,
        }
    }

    /// Opens a transaction, writes a comment in it, and panics while holding
    /// it: the debug route that shows a panic leaks no connection and
    /// commits nothing.
    pub(crate) async fn panic_in_tx(&self) -> Result<(), Failure> {
        match self {
            Data::Larder(store) => blocking(store, panic_in_tx).await,
            Data::Plain(plain) => plain.panic_in_tx().await,
        }
    }

    /// The pool's connections now.
    pub(crate) fn pool_state(&self) -> PoolState {
        match self {
            Data::Larder(store) => {
                let pool = store.stats().pool;
                PoolState {
                    connections: pool.connections,
                    idle: pool.idle,
                }
            }
            Data::Plain(plain) => plain.pool_state(),
        }
    }

    /// Cache and coherence statistics as JSON (`null` in plain mode).
    pub(crate) fn cache_stats(&self) -> serde_json::Value {
        let Data::Larder(store) = self else {
            return serde_json::Value::Null;
        };
        let stats = store.stats();
        let counters = |s: &larder::CacheStats| {
            serde_json::json!({
                "hits": s.hits,
                "misses": s.misses,
                "hit_ratio": s.hit_ratio(),
                "stale_fills_dropped": s.stale_fills_dropped,
                "invalidations": s.invalidations,
                "evictions": s.evictions,
                "entries": s.entries,
                "capacity": s.capacity,
            })
        };
        let entities: serde_json::Map<_, _> = stats
            .entities
            .iter()
            .map(|(table, s)| ((*table).to_owned(), counters(s)))
            .collect();
        let c = &stats.coherence;
        serde_json::json!({
            "entities": entities,
            "lists": counters(&stats.queries),
            "coherence": {
                "enabled": c.enabled,
                "changes": c.changes,
                "flushes": c.flushes,
                "connection_losses": c.connection_losses,
                "reconnects": c.reconnects,
            },
        })
    }
}

/// Runs `work` on tokio's blocking pool with a clone of the store: a miss
/// may wait for the database, and a runtime worker must never wait. A panic
/// in `work` is a 500; larder's guards have already rolled back and
/// returned its connection by then.
async fn blocking<T, F>(store: &Store, work: F) -> Result<T, Failure>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, Failure> + Send + 'static,
{
    let store = store.clone();
    joined(tokio::task::spawn_blocking(move || work(&store)).await)
}

/// The outcome of a handler's blocking work, including work that never
/// finished: it panicked, or the runtime dropped it unstarted.
pub(crate) fn joined<T>(outcome: Result<Result<T, Failure>, JoinError>) -> Result<T, Failure> {
    match outcome {
        Ok(result) => result,
        Err(failed) if failed.is_cancelled() => Err(Failure::new(
            503,
            "the server is shutting down; the request was not run",
        )),
        Err(_) => Err(panicked()),
    }
}

/// The answer to a handler whose blocking work panicked.
pub(crate) fn panicked() -> Failure {
    Failure::new(500, "the handler panicked; its transaction was rolled back")
}

/// Attempts of a page read that meets lost connections.
const READ_ATTEMPTS: u32 = 3;

/// Runs the page read `read` again when the database closed its connection
/// under it (a terminated backend, a restart): larder retries a read whose
/// idle connection had died, but not one whose connection was killed
/// mid-query. A read changes nothing, so running it again is safe; the
/// lost connection is discarded, so the next attempt gets another.
async fn retrying<T, R>(mut read: impl FnMut() -> R) -> larder::Result<T>
where
    R: Future<Output = larder::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match read().await {
            Err(larder::Error::ConnectionLost { .. }) if attempt < READ_ATTEMPTS => attempt += 1,
            other => return other,
        }
    }
}

/// Rendered here, from the rows as read: the page borrows their texts.
async fn front_page(store: &Store) -> larder::Result<String> {
    let posts = store.async_repo::<Post>().recent(FRONT_POSTS).await?;
    let authors = users(store, posts.iter().map(|post| post.author_id)).await?;
    let ids: Vec<i64> = posts.iter().map(|post| post.id).collect();
    let counts = store.async_repo::<Comment>().counts_of_posts(&ids).await?;
    let items: Vec<FrontItem<'_>> = posts
        .iter()
        .map(|post| FrontItem {
            id: post.id,
            title: &post.title,
            author: name_of(&authors, post.author_id),
            comments: counts.get(&post.id).copied().unwrap_or(0),
        })
        .collect();
    Ok(pages::front(&items))
}

async fn post_page(store: &Store, id: i64) -> larder::Result<Option<(PostView, Vec<CommentView>)>> {
    let Some(post) = store.async_repo::<Post>().get(id).await? else {
        return Ok(None);
    };
    let comments = store.async_repo::<Comment>().of_post(id).await?;
    let authors = users(
        store,
        std::iter::once(post.author_id).chain(comments.iter().map(|c| c.author_id)),
    )
    .await?;
    let view = PostView {
        id: post.id,
        title: post.title.clone(),
        body: post.body.clone(),
        version: post.version,
        author: name_of(&authors, post.author_id).to_owned(),
    };
    let comments = comments
        .iter()
        .map(|c| CommentView {
            id: c.id,
            author: name_of(&authors, c.author_id).to_owned(),
            body: c.body.clone(),
        })
        .collect();
    Ok(Some((view, comments)))
}

fn add_comment(store: &Store, post_id: i64, author_id: i64, body: String) -> Result<i64, Failure> {
    let comment = store.transaction(|tx| {
        // Checked first so that a missing post is a 404, not a foreign-key 409.
        if tx.posts().get(post_id)?.is_none() {
            return Err(larder::Error::NotFound {
                table: "posts",
                id: post_id,
            });
        }
        tx.comments().create(NewComment {
            post_id,
            author_id,
            body,
        })
    })?;
    Ok(comment.id)
}

fn panic_in_tx(store: &Store) -> Result<(), Failure> {
    let newest = store.posts().recent(1)?;
    let tx = store.begin()?;
    if let Some(post) = newest.first() {
        tx.comments().create(NewComment {
            post_id: post.id,
            author_id: post.author_id,
            body: "written by a handler that then panics".into(),
        })?;
    }
    panic!("debug route: a handler panics while holding a transaction");
}

/// The users of `ids` that exist, sorted by id, in one `get_many` (hits from
/// the cache): a page's few authors are found by binary search, with no map
/// to build.
async fn users(store: &Store, ids: impl Iterator<Item = i64>) -> larder::Result<Vec<Arc<User>>> {
    let mut ids: Vec<i64> = ids.collect();
    ids.sort_unstable();
    ids.dedup();
    // `get_many` keeps the order of `ids`, leaving out the missing.
    store.async_repo::<User>().get_many(ids).await
}

/// A user deleted since its post was read shows as such, not as an error.
fn name_of(users: &[Arc<User>], id: i64) -> &str {
    users
        .binary_search_by_key(&id, |user| user.id)
        .map_or("(deleted)", |at| &users[at].name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_statuses_a_client_acts_on() {
        let missing = larder::Error::NotFound {
            table: "posts",
            id: 1,
        };
        assert_eq!(status_of(&missing), 404);
        assert_eq!(
            status_of(&larder::Error::version_mismatch("posts", 1, 1, 2)),
            409
        );
        let config = larder::Error::InvalidConfig { reason: "x".into() };
        assert_eq!(status_of(&config), 500);
    }

    /// Work the runtime dropped before it ran (a graceful shutdown drops the
    /// blocking pool's queue) neither panicked nor touched the database: the
    /// client is told to come back, not that the server failed.
    #[tokio::test]
    async fn work_dropped_unstarted_answers_503_not_a_panic() {
        let never = tokio::spawn(std::future::pending::<Result<(), Failure>>());
        never.abort();
        let failure = joined(never.await).expect_err("cancelled work has no value");
        assert_eq!(failure.status, 503, "{failure:?}");
        assert!(!failure.message.contains("panicked"), "{failure:?}");
    }

    #[tokio::test]
    async fn work_that_panicked_answers_500() {
        let panics = tokio::spawn(async { panic!("handler bug") });
        let failure = joined::<()>(panics.await).expect_err("panicked work has no value");
        assert_eq!(failure.status, 500, "{failure:?}");
    }
}
