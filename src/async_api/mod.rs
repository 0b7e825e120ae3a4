//! The async face of the store, for tokio applications (cargo feature
//! `tokio`): [`AsyncRepo`] and [`Store::transaction_async`] /
//! [`Store::blocking`]. A thin layer over the sync API: a hit is taken inline
//! (a shard lock held for nanoseconds, no thread hop); whatever may wait on
//! the database runs on tokio's blocking pool, never on a runtime worker; an
//! async miss of a key another caller is loading awaits that load's flight.

mod pool;
mod repo;
#[cfg(feature = "axum")]
mod response;

pub use repo::AsyncRepo;

use crate::entity::Entity;
use crate::error::Result;
use crate::store::Store;
use crate::tx::Tx;

use pool::on_blocking_pool;

impl Store {
    /// An async repository of entity `E`: hits are served inline, misses and
    /// writes run on tokio's blocking pool. It owns a clone of the store, so
    /// it can be kept in an application's state or moved into a task.
    ///
    /// ```
    /// # use larder_blog::{Blog, NewUser, User};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # // Coherence off: the watcher (its echo of a write, its flush when it
    /// # // falls behind on a loaded machine) may retire an entry before the assert.
    /// # let store = larder_blog::builder(dir.path().join("doc.db").to_str().unwrap())
    /// #     .coherence(false).build().unwrap();
    /// # larder_blog::migrate(&store).unwrap();
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let users = store.async_repo::<User>();
    /// let ann = users.create(NewUser { name: "ann".into(), email: "ann@example.org".into() }).await?;
    /// let again = users.get(ann.id).await?.expect("just created"); // a hit: no thread hop
    /// assert!(std::sync::Arc::ptr_eq(&ann, &again));
    /// # Ok::<(), larder::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn async_repo<E: Entity>(&self) -> AsyncRepo<E> {
        AsyncRepo::new(self.clone())
    }

    /// Runs `work`, a closure of sync repository calls, as one transaction
    /// on tokio's blocking pool, with [`Store::transaction`]'s guarantees: it
    /// commits when `work` returns `Ok` and rolls back on `Err`; the cache
    /// learns of its writes only once committed.
    ///
    /// A panic in `work` rolls the transaction back and the pool discards
    /// its connection, as in [`Store::transaction`]; instead of unwinding
    /// through the awaiting task, it is returned as
    /// [`Error::Interrupted`](crate::Error::Interrupted) (status 500), so an
    /// async handler answers its request and the runtime's workers are
    /// untouched. The panic hook has reported its message.
    ///
    /// ```
    /// # use larder_blog::{Blog, NewPost, NewUser};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = larder_blog::open(dir.path().join("doc.db").to_str().unwrap()).unwrap();
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let post = store
    ///     .transaction_async(|tx| {
    ///         let ann = tx.users().create(NewUser { name: "ann".into(), email: "ann@example.org".into() })?;
    ///         tx.posts().create(NewPost { author_id: ann.id, title: "hello".into(), body: "…".into() })
    ///     })
    ///     .await?; // both rows, or neither
    /// assert_eq!(store.async_repo::<larder_blog::Post>().get(post.id).await?.unwrap().title, "hello");
    /// # Ok::<(), larder::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// The error `work` returned, the error of beginning or committing, or
    /// [`Error::Interrupted`](crate::Error::Interrupted) when `work` panicked
    /// or no tokio runtime runs the call.
    pub async fn transaction_async<T, F>(&self, work: F) -> Result<T>
    where
        F: FnOnce(&Tx<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.clone();
        on_blocking_pool("transaction", move || store.transaction(work)).await
    }

    /// Runs any sync work with the store on tokio's blocking pool: several
    /// repository calls, [`Repo::cached_query`](crate::Repo::cached_query)
    /// methods of an application's own, a named lock. A panic in `work` is
    /// returned as [`Error::Interrupted`](crate::Error::Interrupted), as in
    /// [`transaction_async`](Store::transaction_async).
    ///
    /// ```
    /// # use larder_blog::{Blog, NewUser};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = larder_blog::open(dir.path().join("doc.db").to_str().unwrap()).unwrap();
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let pages = store
    ///     .blocking(|store| store.with_lock("front-page", || Ok::<_, larder::Error>(1)))
    ///     .await?;
    /// assert_eq!(pages, 1);
    /// # Ok::<(), larder::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// The error `work` returned, or [`Error::Interrupted`](crate::Error::Interrupted).
    pub async fn blocking<T, F>(&self, work: F) -> Result<T>
    where
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.clone();
        on_blocking_pool("blocking work", move || work(&store)).await
    }
}
