//! Repositories: the cached face of an [`Entity`]. [`Repo`] works on the
//! store (reads through the identity map, each write committed on its own),
//! [`TxRepo`] inside a [`Tx`](crate::Tx). [`Repository`] is what both do, so
//! an application writes a query method once and runs it either way, and
//! [`Repos`] hands out repositories from a store or a transaction alike.

mod before;
mod store;
mod tx;

use std::sync::Arc;

use diesel::QueryResult;

use crate::entity::Entity;
use crate::error::Result;
use crate::pool::Connection;
use crate::read::Read;

#[cfg(feature = "tokio")]
pub(crate) use store::unique;
pub use store::Repo;
pub use tx::TxRepo;

/// The operations of a repository of `E`, on the store ([`Repo`]) or inside a
/// transaction ([`TxRepo`]). Write an application's query methods against it
/// once: on the store they are cached, inside a transaction they see the
/// transaction's own writes.
///
/// ```
/// use std::sync::Arc;
/// use diesel::prelude::*;
/// use larder::Repository;
/// use larder_blog::schema::posts;
/// use larder_blog::{Blog, NewPost, NewUser, Post};
///
/// /// Methods the application adds to every repository of posts.
/// trait Drafts: Repository<Post> {
///     fn drafts_of(&self, author: i64) -> larder::Result<Vec<Arc<Post>>> {
///         let key = format!("posts.drafts_of({author})");
///         self.cached_query(&key, &["posts"], |conn| {
///             let query = posts::table
///                 .filter(posts::author_id.eq(author).and(posts::published.eq(false)))
///                 .order(posts::id);
///             larder::with_connection!(conn, |c| query.load(c))
///         })
///     }
/// }
/// impl<R: Repository<Post>> Drafts for R {}
///
/// # let dir = tempfile::tempdir().unwrap();
/// # let store = larder_blog::open(&format!("sqlite://{}", dir.path().join("doc.db").display()))?;
/// let ann = store.users().create(NewUser { name: "ann".into(), email: "ann@example.org".into() })?;
/// store.transaction(|tx| {
///     tx.posts().create(NewPost { author_id: ann.id, title: "draft".into(), body: "…".into() })?;
///     assert_eq!(tx.posts().drafts_of(ann.id)?.len(), 1); // sees its own write
///     Ok::<_, larder::Error>(())
/// })?;
/// assert_eq!(store.posts().drafts_of(ann.id)?.len(), 1); // cached on the store
/// # Ok::<(), larder::Error>(())
/// ```
pub trait Repository<E: Entity> {
    /// Row `id`: from the cache on the store, from the transaction inside one.
    ///
    /// # Errors
    ///
    /// [`Error::PoolTimeout`](crate::Error::PoolTimeout) or a database error
    /// when a load was needed and failed.
    fn get(&self, id: i64) -> Result<Option<Arc<E>>>;

    /// The rows of `ids` that exist, in the order of `ids` (each once): on the
    /// store the cached ones from the cache and every other in one query.
    ///
    /// # Errors
    ///
    /// As [`get`](Repository::get).
    fn get_many(&self, ids: &[i64]) -> Result<Vec<Arc<E>>>;

    /// Inserts a row and returns it as stored.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`](crate::Error::Conflict) when a constraint rejects the row.
    fn create(&self, new: E::New) -> Result<Arc<E>>;

    /// Updates row `id` and returns it as stored.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`](crate::Error::NotFound) when there is no such row,
    /// [`Error::Conflict`](crate::Error::Conflict) when a constraint rejects the change.
    fn update(&self, id: i64, changes: E::Changes) -> Result<Arc<E>>;

    /// Deletes row `id` (and what cascades from it); returns whether a row was removed.
    ///
    /// # Errors
    ///
    /// A database error; nothing is removed then.
    fn delete(&self, id: i64) -> Result<bool>;

    /// Runs a write of row `id` that returns the row as stored (`None` when it
    /// wrote nothing), and applies it to the cache once committed. On the
    /// store it commits on its own, autocommitted when the entity declares
    /// [`Entity::SINGLE_STATEMENT_WRITES`] (then `write` must run exactly one
    /// write statement).
    ///
    /// # Errors
    ///
    /// The write's database error.
    fn write<F>(&self, id: i64, write: F) -> Result<Option<Arc<E>>>
    where
        F: FnOnce(&mut Connection) -> QueryResult<Option<E>>;

    /// Runs a query returning rows of `E`, through the identity map on the
    /// store (a cached row comes back as the cached `Arc`).
    ///
    /// # Errors
    ///
    /// [`Error::PoolTimeout`](crate::Error::PoolTimeout) or the query's database error.
    fn query<F>(&self, query: F) -> Result<Vec<Arc<E>>>
    where
        F: FnOnce(&mut Connection) -> QueryResult<Vec<E>>;

    /// Like [`query`](Repository::query), with the result cached on the store
    /// under `key` (which must identify the query and its parameters) until
    /// something in `reads` changes, here or in any process larder hears of:
    /// a table (`"comments"`, [`Read::table`]), or only its rows with a key
    /// column equal to a value ([`Read::eq`]). A table no entity of the store
    /// maps is never invalidated, so a query reading one is not cached.
    /// Inside a transaction it is a plain query.
    ///
    /// # Errors
    ///
    /// As [`query`](Repository::query), and
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) when `reads`
    /// (not empty) leave out `E`'s own table, whose rows the list holds.
    fn cached_query<R, F>(&self, key: &str, reads: &[R], query: F) -> Result<Vec<Arc<E>>>
    where
        R: Into<Read> + Copy,
        F: FnOnce(&mut Connection) -> QueryResult<Vec<E>>;

    /// Any value a query computes (a count, an existence check, a sum),
    /// cached on the store like [`cached_query`](Repository::cached_query).
    ///
    /// # Errors
    ///
    /// As [`query`](Repository::query).
    fn cached_value<R, T, F>(&self, key: &str, reads: &[R], query: F) -> Result<T>
    where
        R: Into<Read> + Copy,
        T: Clone + Send + Sync + 'static,
        F: FnOnce(&mut Connection) -> QueryResult<T>;

    /// Runs `work` on a connection (the transaction's inside one), its errors
    /// mapped for this entity's table and row `id`; nothing is cached.
    ///
    /// # Errors
    ///
    /// `work`'s database error.
    fn run<T, F>(&self, id: Option<i64>, work: F) -> Result<T>
    where
        F: FnOnce(&mut Connection) -> QueryResult<T>;
}

/// Refuses a cached list of `E` whose `reads` leave out `E`'s own table:
/// its rows are rows of that table, and a change to one of them would not
/// retire it (empty `reads` stay allowed: such a list is not cached).
fn check_list_reads<E: Entity>(reads: &[Read]) -> Result<()> {
    if reads.is_empty() || reads.iter().any(|read| read.table_name() == E::TABLE) {
        return Ok(());
    }
    let named: Vec<&str> = reads.iter().map(Read::table_name).collect();
    Err(crate::error::Error::InvalidConfig {
        reason: format!(
            "a cached list of {table} reads {named:?}, which leaves out {table:?}: \
             a change to one of its rows would not retire it; add Read::table({table:?}) \
             (or a Read::eq on one of its key columns)",
            table = E::TABLE
        ),
    })
}

/// Hands out repositories: implemented by [`Store`](crate::Store) and
/// [`Tx`](crate::Tx), so an application's accessors (`users()`, `posts()`)
/// can be written once for both, as an extension trait:
///
/// ```
/// use larder::{Repos, Repository};
/// # use larder::Entity;
/// # diesel::table! { notes (id) { id -> BigInt, body -> Text } }
/// # #[derive(Debug, diesel::Queryable)] pub struct Note { pub id: i64, pub body: String }
/// # #[derive(diesel::Insertable)] #[diesel(table_name = notes)] pub struct NewNote { pub body: String }
/// # #[derive(diesel::AsChangeset, Default)] #[diesel(table_name = notes)] pub struct NoteChanges { pub body: Option<String> }
/// # larder::entity!(Note { table: notes, new: NewNote, changes: NoteChanges });
///
/// pub trait Notebook: Repos {
///     fn notes(&self) -> Self::Repo<'_, Note> {
///         self.repo::<Note>()
///     }
/// }
/// impl<T: Repos> Notebook for T {}
/// ```
pub trait Repos {
    /// The repository type: [`Repo`] on the store, [`TxRepo`] in a transaction.
    type Repo<'a, E: Entity>: Repository<E>
    where
        Self: 'a;

    /// The repository of `E`, registered with the store on first use.
    fn repo<E: Entity>(&self) -> Self::Repo<'_, E>;
}

impl Repos for crate::Store {
    type Repo<'a, E: Entity> = Repo<'a, E>;

    fn repo<E: Entity>(&self) -> Repo<'_, E> {
        crate::Store::repo(self)
    }
}

impl<'s> Repos for crate::Tx<'s> {
    type Repo<'a, E: Entity>
        = TxRepo<'a, E>
    where
        Self: 'a;

    fn repo<E: Entity>(&self) -> TxRepo<'_, E> {
        crate::Tx::repo(self)
    }
}
