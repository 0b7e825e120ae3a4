//! [`AsyncRepo`]: the repository of an entity for async callers.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use diesel::QueryResult;

use super::pool::on_blocking_pool;
use crate::cache::{Lease, Probe};
use crate::entity::Entity;
use crate::error::Result;
use crate::pool::Connection;
use crate::read::Read;
use crate::repo::{unique, Repo};
use crate::store::Store;

/// The repository of entity `E` for async code (cargo feature `tokio`), from
/// [`Store::async_repo`]. What the sync [`Repo`] does, without blocking a
/// runtime worker:
///
/// - a hit ([`get`](AsyncRepo::get), [`get_many`](AsyncRepo::get_many), a
///   cached list of [`cached_query`](AsyncRepo::cached_query)) is served
///   inline: one shard lock held for nanoseconds, no thread hop, counted and
///   fed to the admission policy exactly as the sync call would;
/// - a miss loads on tokio's blocking pool, once however many callers miss
///   the same key at the same moment: the others, async or sync, wait for
///   that load, an async one by awaiting it, with no thread parked;
/// - writes ([`create`](AsyncRepo::create), [`update`](AsyncRepo::update),
///   [`delete`](AsyncRepo::delete)) run on the blocking pool, committed on
///   their own; [`Store::transaction_async`] runs several as one.
///
/// It is `Clone` (a [`Store`] clone inside), and every future it returns is
/// `Send`. A panic on the blocking pool comes back as
/// [`Error::Interrupted`](crate::Error::Interrupted). With the `axum`
/// feature, `?` turns any error into a response (see [`Error::status_code`](crate::Error::status_code)).
///
/// ```
/// use larder_blog::{NewUser, User};
/// # let dir = tempfile::tempdir().unwrap();
/// # // Coherence off: the watcher (its echo of a write, its flush when it
/// # // falls behind on a loaded machine) may retire an entry before the assert.
/// # let store = larder_blog::builder(dir.path().join("doc.db").to_str().unwrap())
/// #     .coherence(false).build().unwrap();
/// # larder_blog::migrate(&store).unwrap();
/// # let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # runtime.block_on(async {
/// let users = store.async_repo::<User>(); // keep it in the application's state, or make one per call
/// let ann = users.create(NewUser { name: "ann".into(), email: "ann@example.org".into() }).await?;
/// let same = users.get(ann.id).await?.expect("cached"); // a hit: no thread hop, no blocking
/// assert!(std::sync::Arc::ptr_eq(&ann, &same));
/// let task = tokio::spawn({
///     let users = users.clone(); // a Store clone inside: 'static, Send
///     async move { users.get(ann.id).await }
/// });
/// assert!(task.await.unwrap()?.is_some());
/// # Ok::<(), larder::Error>(())
/// # }).unwrap();
/// ```
pub struct AsyncRepo<E> {
    store: Store,
    entity: PhantomData<fn() -> E>,
}

impl<E: Entity> AsyncRepo<E> {
    pub(crate) fn new(store: Store) -> AsyncRepo<E> {
        AsyncRepo {
            store,
            entity: PhantomData,
        }
    }

    fn repo(&self) -> Repo<'_, E> {
        self.store.repo::<E>()
    }

    /// Row `id`: a cached row at once, without leaving the task's thread;
    /// else loaded on the blocking pool and cached (unless a write
    /// invalidated it meanwhile). Concurrent misses of `id` share one load;
    /// an async caller waiting for another's load awaits it.
    ///
    /// # Errors
    ///
    /// As [`Repo::get`], and [`Error::Interrupted`](crate::Error::Interrupted).
    pub async fn get(&self, id: i64) -> Result<Option<Arc<E>>> {
        match self.repo().probe(id) {
            Probe::Hit(value) => Ok(Some(value)),
            // Boxed: the hit's future stays a few words, not the size of
            // every miss path's state.
            miss => Box::pin(self.get_missed(id, miss)).await,
        }
    }

    /// The rest of [`get`](AsyncRepo::get) after a miss.
    async fn get_missed(&self, id: i64, probe: Probe<E>) -> Result<Option<Arc<E>>> {
        match probe {
            Probe::Hit(value) => Ok(Some(value)),
            Probe::Wait(landing) => match landing.await {
                Some(value) => Ok(value),
                // The leader failed: load without it, as a sync waiter does.
                None => self.on_pool("load", move |repo| repo.load_alone(id)).await,
            },
            Probe::Lead(lease) => {
                let leading = Leading {
                    store: self.store.clone(),
                    lease: Some(lease),
                };
                on_blocking_pool("load", move || leading.run()).await
            }
            Probe::Uncached => self.on_pool("load", move |repo| repo.get(id)).await,
        }
    }

    /// The rows of `ids` that exist, in the order of `ids` (each once): when
    /// every one is cached, at once; else the missing ones in one query on
    /// the blocking pool.
    ///
    /// # Errors
    ///
    /// As [`Repo::get_many`], and [`Error::Interrupted`](crate::Error::Interrupted).
    pub async fn get_many(&self, ids: Vec<i64>) -> Result<Vec<Arc<E>>> {
        let ids = unique(&ids);
        let cached = self.repo().get_cached(&ids);
        if cached.iter().all(Option::is_some) {
            // Sized up front: a flattening collect cannot know its length,
            // and grew the Vec several times per call.
            let mut rows = Vec::with_capacity(cached.len());
            rows.extend(cached.into_iter().flatten());
            return Ok(rows);
        }
        self.on_pool("get_many", move |repo| repo.load_missing(&ids, cached))
            .await
    }

    /// Inserts a row on the blocking pool, committed on its own; see [`Repo::create`].
    ///
    /// # Errors
    ///
    /// As [`Repo::create`], and [`Error::Interrupted`](crate::Error::Interrupted).
    pub async fn create(&self, new: E::New) -> Result<Arc<E>>
    where
        E::New: Send + 'static,
    {
        self.on_pool("create", move |repo| repo.create(new)).await
    }

    /// Updates row `id` on the blocking pool, committed on its own; see [`Repo::update`].
    ///
    /// # Errors
    ///
    /// As [`Repo::update`], and [`Error::Interrupted`](crate::Error::Interrupted).
    pub async fn update(&self, id: i64, changes: E::Changes) -> Result<Arc<E>>
    where
        E::Changes: Send + 'static,
    {
        self.on_pool("update", move |repo| repo.update(id, changes))
            .await
    }

    /// Deletes row `id` (and what cascades from it) on the blocking pool;
    /// returns whether a row was removed. See [`Repo::delete`].
    ///
    /// # Errors
    ///
    /// As [`Repo::delete`], and [`Error::Interrupted`](crate::Error::Interrupted).
    pub async fn delete(&self, id: i64) -> Result<bool> {
        self.on_pool("delete", move |repo| repo.delete(id)).await
    }

    /// [`Repo::cached_query`] for async code: a list still cached is served
    /// at once, without a query or a thread hop; else the query runs on the
    /// blocking pool and its result is cached.
    ///
    /// ```
    /// # use diesel::prelude::*;
    /// # use larder_blog::schema::users;
    /// # use larder_blog::{NewUser, User};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = larder_blog::open(dir.path().join("doc.db").to_str().unwrap()).unwrap();
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let users = store.async_repo::<User>();
    /// let named_ann = || {
    ///     users.cached_query("users named ann".into(), vec!["users"], |conn| {
    ///         let query = users::table.filter(users::name.eq("ann")).order(users::id);
    ///         larder::with_connection!(conn, |c| query.load(c))
    ///     })
    /// };
    /// assert!(named_ann().await?.is_empty()); // queried on the blocking pool, cached
    /// users.create(NewUser { name: "ann".into(), email: "a@example.org".into() }).await?;
    /// assert_eq!(named_ann().await?.len(), 1); // the insert retired the cached list
    /// # Ok::<(), larder::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Repo::cached_query`], and [`Error::Interrupted`](crate::Error::Interrupted).
    pub async fn cached_query<R, F>(
        &self,
        key: String,
        reads: Vec<R>,
        query: F,
    ) -> Result<Vec<Arc<E>>>
    where
        R: Into<Read> + Copy + Send + 'static,
        F: FnOnce(&mut Connection) -> QueryResult<Vec<E>> + Send + 'static,
    {
        Ok(Arc::unwrap_or_clone(
            self.cached_query_shared(key, reads, query).await?,
        ))
    }

    /// [`cached_query`](AsyncRepo::cached_query), the list shared as cached
    /// instead of copied: a hit then costs no allocation and touches no
    /// row's reference count, for a caller that only reads the rows (a page).
    ///
    /// ```
    /// # use diesel::prelude::*;
    /// # use larder_blog::schema::users;
    /// # use larder_blog::User;
    /// # let dir = tempfile::tempdir().unwrap();
    /// # // Coherence off: the watcher (its echo of a write, its flush when it
    /// # // falls behind on a loaded machine) may retire an entry before the assert.
    /// # let store = larder_blog::builder(dir.path().join("doc.db").to_str().unwrap())
    /// #     .coherence(false).build().unwrap();
    /// # larder_blog::migrate(&store).unwrap();
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let users = store.async_repo::<User>();
    /// let all = || {
    ///     users.cached_query_shared("all users".into(), vec!["users"], |conn| {
    ///         larder::with_connection!(conn, |c| users::table.order(users::id).load(c))
    ///     })
    /// };
    /// let (first, second) = (all().await?, all().await?);
    /// assert!(std::sync::Arc::ptr_eq(&first, &second), "one cached list, shared");
    /// # Ok::<(), larder::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// As [`cached_query`](AsyncRepo::cached_query).
    pub async fn cached_query_shared<R, F>(
        &self,
        key: String,
        reads: Vec<R>,
        query: F,
    ) -> Result<Arc<Vec<Arc<E>>>>
    where
        R: Into<Read> + Copy + Send + 'static,
        F: FnOnce(&mut Connection) -> QueryResult<Vec<E>> + Send + 'static,
    {
        let reads: Vec<Read> = reads.into_iter().map(Into::into).collect();
        if let Some(rows) = self.repo().query_hit::<Vec<Arc<E>>>(&key, &reads) {
            return Ok(rows);
        }
        self.on_pool("cached_query", move |repo| {
            repo.cached_query_shared(&key, &reads, query)
        })
        .await
    }

    /// [`Repo::cached_value`] for async code (a count, a sum): served at once
    /// while cached, else computed on the blocking pool and cached.
    ///
    /// # Errors
    ///
    /// As [`Repo::cached_value`], and [`Error::Interrupted`](crate::Error::Interrupted).
    pub async fn cached_value<R, T, F>(&self, key: String, reads: Vec<R>, query: F) -> Result<T>
    where
        R: Into<Read> + Copy + Send + 'static,
        T: Clone + Send + Sync + 'static,
        F: FnOnce(&mut Connection) -> QueryResult<T> + Send + 'static,
    {
        Ok(Arc::unwrap_or_clone(
            self.cached_value_shared(key, reads, query).await?,
        ))
    }

    /// [`cached_value`](AsyncRepo::cached_value), the value shared as cached
    /// instead of cloned (a map of counts is not copied on every hit); `T`
    /// need not be `Clone`.
    ///
    /// ```
    /// # use diesel::prelude::*;
    /// # use larder_blog::schema::users;
    /// # use larder_blog::User;
    /// # let dir = tempfile::tempdir().unwrap();
    /// # // Coherence off: the watcher (its echo of a write, its flush when it
    /// # // falls behind on a loaded machine) may retire an entry before the assert.
    /// # let store = larder_blog::builder(dir.path().join("doc.db").to_str().unwrap())
    /// #     .coherence(false).build().unwrap();
    /// # larder_blog::migrate(&store).unwrap();
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let users = store.async_repo::<User>();
    /// let names = || {
    ///     users.cached_value_shared("names".into(), vec!["users"], |conn| {
    ///         larder::with_connection!(conn, |c| users::table.select(users::name).load::<String>(c))
    ///     })
    /// };
    /// let (first, second) = (names().await?, names().await?);
    /// assert!(std::sync::Arc::ptr_eq(&first, &second), "one cached value, shared");
    /// # Ok::<(), larder::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// As [`cached_value`](AsyncRepo::cached_value).
    pub async fn cached_value_shared<R, T, F>(
        &self,
        key: String,
        reads: Vec<R>,
        query: F,
    ) -> Result<Arc<T>>
    where
        R: Into<Read> + Copy + Send + 'static,
        T: Send + Sync + 'static,
        F: FnOnce(&mut Connection) -> QueryResult<T> + Send + 'static,
    {
        let reads: Vec<Read> = reads.into_iter().map(Into::into).collect();
        if let Some(value) = self.repo().query_hit::<T>(&key, &reads) {
            return Ok(value);
        }
        self.on_pool("cached_value", move |repo| {
            repo.cached_value_shared(&key, &reads, query)
        })
        .await
    }

    /// The cached value of `id`, if cached, without loading it or counting a
    /// hit; see [`Repo::cached`].
    pub fn cached(&self, id: i64) -> Option<Arc<E>> {
        self.repo().cached(id)
    }

    /// Runs `work` with this entity's sync repository on the blocking pool.
    async fn on_pool<T, F>(&self, name: &'static str, work: F) -> Result<T>
    where
        F: FnOnce(&Repo<'_, E>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store.clone();
        on_blocking_pool(name, move || work(&store.repo::<E>())).await
    }
}

/// A lease to load a key, on its way to the blocking pool. If the runtime
/// drops the work before it runs (it is shutting down), the drop ends the
/// flight, so no caller waits for a load that never comes.
struct Leading<E: Entity> {
    store: Store,
    lease: Option<Lease<E>>,
}

impl<E: Entity> Leading<E> {
    fn run(mut self) -> Result<Option<Arc<E>>> {
        match self.lease.take() {
            Some(lease) => self.store.repo::<E>().lead(lease),
            // Only `run` and `drop` take the lease, and each runs once.
            None => Ok(None),
        }
    }
}

impl<E: Entity> Drop for Leading<E> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.store.repo::<E>().abandon(lease);
        }
    }
}

impl<E> Clone for AsyncRepo<E> {
    fn clone(&self) -> Self {
        AsyncRepo {
            store: self.store.clone(),
            entity: PhantomData,
        }
    }
}

impl<E> fmt::Debug for AsyncRepo<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncRepo")
            .field("entity", &std::any::type_name::<E>())
            .field("store", &self.store)
            .finish()
    }
}
