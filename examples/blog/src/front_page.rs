//! The front page, rebuilt once however many workers ask, under a named lock
//! whose fencing token guards the write.

use diesel::prelude::*;
use larder::{Result, Store};

use crate::schema::front_page;
use crate::{Blog, PostQueries};

/// The named lock every process rebuilding the front page takes.
pub const FRONT_PAGE_LOCK: &str = "front-page";

/// How many posts the front page lists.
const FRONT_PAGE_POSTS: i64 = 10;

/// What one [`rebuild_front_page`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// The fencing token the rebuild held the lock with.
    pub token: u64,
    /// Whether its page was stored: false when a rebuild with a newer token
    /// had already stored its own.
    pub written: bool,
}

/// Renders the front page from the most recent posts and stores it, holding
/// the lock [`FRONT_PAGE_LOCK`]: every worker of every host may call it, and
/// the rebuilds run one at a time. The page is stored with the lock's
/// fencing token, so that a rebuild whose process was paused past losing
/// its lock cannot overwrite a newer page when it wakes up.
///
/// ```
/// use larder_blog::{front_page, rebuild_front_page};
/// # let dir = tempfile::tempdir().unwrap();
/// # let url = format!("sqlite://{}", dir.path().join("blog.db").display());
/// let store = larder_blog::open(&url)?;
/// let rebuilt = rebuild_front_page(&store)?;
/// assert!(rebuilt.written);
/// assert_eq!(front_page(&store)?.1, rebuilt.token);
/// # Ok::<(), larder::Error>(())
/// ```
///
/// # Errors
///
/// [`larder::Error::LockTimeout`] when another rebuild held the lock past
/// the lock timeout, and the database errors of reading posts or writing
/// the page.
pub fn rebuild_front_page(store: &Store) -> Result<Rebuilt> {
    let guard = store.lock(FRONT_PAGE_LOCK)?;
    let html = render(store)?;
    let token = guard.fencing_token();
    let written = write_front_page(store, &html, token)?;
    Ok(Rebuilt { token, written })
}

/// Stores `html` as the front page if `token` is newer than the token of
/// the page stored; returns whether it was stored. The check and the write
/// are one statement, so the database itself refuses a stale holder.
///
/// ```
/// use larder_blog::{front_page, write_front_page};
/// # let dir = tempfile::tempdir().unwrap();
/// # let url = format!("sqlite://{}", dir.path().join("blog.db").display());
/// let store = larder_blog::open(&url)?;
/// assert!(write_front_page(&store, "<p>new</p>", 7)?);
/// assert!(!write_front_page(&store, "<p>late</p>", 6)?, "a smaller token is refused");
/// assert_eq!(front_page(&store)?, ("<p>new</p>".to_owned(), 7));
/// # Ok::<(), larder::Error>(())
/// ```
///
/// # Errors
///
/// The database error of the update.
pub fn write_front_page(store: &Store, html: &str, token: u64) -> Result<bool> {
    let token = i64::try_from(token).unwrap_or(i64::MAX);
    let update = diesel::update(
        front_page::table
            .filter(front_page::id.eq(1))
            .filter(front_page::token.lt(token)),
    )
    .set((front_page::html.eq(html), front_page::token.eq(token)));
    let rows = store.posts().run(None, |conn| {
        larder::with_connection!(conn, |c| update.execute(c))
    })?;
    Ok(rows == 1)
}

/// The stored front page and the fencing token of the rebuild that wrote it
/// (`0` before the first).
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let url = format!("sqlite://{}", dir.path().join("blog.db").display());
/// let store = larder_blog::open(&url)?;
/// assert_eq!(larder_blog::front_page(&store)?, (String::new(), 0));
/// # Ok::<(), larder::Error>(())
/// ```
///
/// # Errors
///
/// The database error of the read.
pub fn front_page(store: &Store) -> Result<(String, u64)> {
    let query = front_page::table
        .filter(front_page::id.eq(1))
        .select((front_page::html, front_page::token));
    let (html, token): (String, i64) = store.posts().run(None, |conn| {
        larder::with_connection!(conn, |c| query.get_result(c))
    })?;
    Ok((html, u64::try_from(token).unwrap_or_default()))
}

fn render(store: &Store) -> Result<String> {
    let posts = store.posts().recent(FRONT_PAGE_POSTS)?;
    let items: String = posts
        .iter()
        .map(|post| format!("<li>{}</li>", escape(&post.title)))
        .collect();
    Ok(format!("<ul>{items}</ul>"))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
