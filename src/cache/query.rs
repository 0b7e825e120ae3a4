//! The query cache: results of list queries by key, each stored with the
//! generations of the tables it read. A table's generation moves with every
//! invalidation of that table, so an entry is served only while nothing it
//! read has changed; its rows are the identity map's own `Arc`s.

use std::any::{Any, TypeId};
use std::num::NonZeroUsize;
use std::sync::Arc;

use crate::sync::Mutex;
use lru::LruCache;

use super::CacheStats;

type QueryKey = (TypeId, String);

struct CachedList {
    /// `(table, generation)` for every table the query read, taken before it ran.
    read: Vec<(&'static str, u64)>,
    rows: Arc<dyn Any + Send + Sync>,
}

struct Inner {
    entries: LruCache<QueryKey, CachedList>,
    counters: CacheStats,
}

pub(crate) struct QueryCache {
    inner: Option<Mutex<Inner>>,
}

impl QueryCache {
    /// A cache of at most `capacity` lists; 0 disables it.
    pub(crate) fn new(capacity: usize) -> QueryCache {
        QueryCache {
            inner: NonZeroUsize::new(capacity).map(|capacity| {
                Mutex::new(Inner {
                    entries: LruCache::new(capacity),
                    counters: CacheStats {
                        capacity: capacity.get() as u64,
                        ..CacheStats::default()
                    },
                })
            }),
        }
    }

    /// The cached rows of `key` if every table it read is still at the
    /// generation it was read at; `generation` gives a table's current one.
    pub(crate) fn get<T: Send + Sync + 'static>(
        &self,
        key: &QueryKey,
        generation: impl Fn(&str) -> Option<u64>,
    ) -> Option<Arc<Vec<Arc<T>>>> {
        let mut inner = self.inner.as_ref()?.lock();
        let fresh = inner.entries.get(key).map(|list| {
            list.read
                .iter()
                .all(|(table, seen)| generation(table) == Some(*seen))
        });
        match fresh {
            Some(true) => {
                inner.counters.hits += 1;
                let rows = inner.entries.get(key).map(|list| Arc::clone(&list.rows));
                rows.and_then(|rows| rows.downcast::<Vec<Arc<T>>>().ok())
            }
            Some(false) => {
                inner.entries.pop(key);
                inner.counters.misses += 1;
                None
            }
            None => {
                inner.counters.misses += 1;
                None
            }
        }
    }

    /// Stores `rows` for `key`, read at the generations `read`, unless one of
    /// those tables has moved on already.
    pub(crate) fn fill<T: Send + Sync + 'static>(
        &self,
        key: QueryKey,
        read: Vec<(&'static str, u64)>,
        rows: Arc<Vec<Arc<T>>>,
        generation: impl Fn(&str) -> Option<u64>,
    ) {
        let Some(inner) = &self.inner else { return };
        let mut inner = inner.lock();
        if !read
            .iter()
            .all(|(table, seen)| generation(table) == Some(*seen))
        {
            inner.counters.stale_fills_dropped += 1;
            return;
        }
        inner.counters.fills += 1;
        let replaces = inner.entries.contains(&key);
        if inner.entries.push(key, CachedList { read, rows }).is_some() && !replaces {
            inner.counters.evictions += 1;
        }
    }

    pub(crate) fn clear(&self) {
        if let Some(inner) = &self.inner {
            inner.lock().entries.clear();
        }
    }

    pub(crate) fn stats(&self) -> CacheStats {
        match &self.inner {
            None => CacheStats::default(),
            Some(inner) => {
                let inner = inner.lock();
                CacheStats {
                    entries: inner.entries.len() as u64,
                    ..inner.counters
                }
            }
        }
    }
}
