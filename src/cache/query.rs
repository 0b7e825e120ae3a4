//! The query cache: results of queries by key (lists of rows, counts), each
//! stored with the generations of the tables it read. A table's generation
//! moves with every invalidation of that table, so an entry is served only
//! while nothing it read has changed; a list's rows are the identity map's own
//! `Arc`s.

use std::any::{Any, TypeId};
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::sync::Mutex;
use lru::LruCache;

use super::evicted::RecentEvictions;
use super::CacheStats;

/// A cached result's key: the type of the value and the caller's key string.
pub(crate) type QueryKey = (TypeId, String);

/// What a query read, each part named (a table, or a key column) with the
/// value it was read for (a key column's; 0 for a table) and its generation
/// when it was read. The value belongs to what is compared: a list cached
/// under a key for one value is not the list of another value read under
/// the same key, however equal their generations.
pub(crate) type Generations = Vec<(&'static str, i64, u64)>;

struct CachedValue {
    /// The generation of everything the query read, taken before it ran.
    read: Generations,
    value: Arc<dyn Any + Send + Sync>,
}

struct Inner {
    entries: LruCache<QueryKey, CachedValue>,
    counters: CacheStats,
    /// Keys (hashed) evicted lately, with the eviction count right after:
    /// a load of one that began before it may be older than the evicted value.
    evicted: RecentEvictions<QUERIES_REMEMBERED>,
}

/// Evictions the query cache remembers: one map for every query, so more
/// evictions happen while one load runs than in an identity map's shard.
const QUERIES_REMEMBERED: usize = 64;

/// Cached results of queries (lists of rows, counts, any value), each valid
/// while the tables it read keep the generations they had when it was read.
/// Generations are read by the caller before it takes this cache's lock, so
/// no other lock is ever taken under it; replaced values are dropped after it.
pub(crate) struct QueryCache {
    inner: Option<Mutex<Inner>>,
    /// The most results it holds (0 when disabled): known without the lock,
    /// so that [`clear`](Self::clear) builds the empty map before taking it.
    capacity: usize,
    /// Evictions so far, moved under the lock; a load reads it before it
    /// runs ([`began`](Self::began)) and hands it to its fill.
    evictions: AtomicU64,
    /// Hashes keys for [`Inner::evicted`]; a collision only refuses a fill.
    hasher: RandomState,
}

impl QueryCache {
    /// A cache of at most `capacity` results; 0 disables it.
    pub(crate) fn new(capacity: usize) -> QueryCache {
        QueryCache {
            inner: NonZeroUsize::new(capacity).map(|capacity| {
                Mutex::new(Inner {
                    entries: LruCache::new(capacity),
                    counters: CacheStats {
                        capacity: capacity.get() as u64,
                        ..CacheStats::default()
                    },
                    evicted: RecentEvictions::new(),
                })
            }),
            capacity,
            evictions: AtomicU64::new(0),
            hasher: RandomState::new(),
        }
    }

    /// Read by a load before it runs, and passed to its [`fill`](Self::fill).
    pub(crate) fn began(&self) -> u64 {
        self.evictions.load(Ordering::Acquire)
    }

    fn hash(&self, key: &QueryKey) -> i64 {
        self.hasher.hash_one(key) as i64
    }

    /// The cached value of `key` if the tables it read are still at the
    /// generations it was read at, which are `current` now.
    pub(crate) fn get<V: Send + Sync + 'static>(
        &self,
        key: &QueryKey,
        current: &Generations,
    ) -> Option<Arc<V>> {
        self.lookup(key, current, true)
    }

    /// As [`get`](Self::get) when the value is cached and current (counted as
    /// a hit); otherwise `None` with nothing counted or removed, for a caller
    /// that checks here first and, on a miss, calls `get` elsewhere (an async
    /// caller, on the blocking pool), which counts the miss once.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn hit<V: Send + Sync + 'static>(
        &self,
        key: &QueryKey,
        current: &Generations,
    ) -> Option<Arc<V>> {
        self.lookup(key, current, false)
    }

    fn lookup<V: Send + Sync + 'static>(
        &self,
        key: &QueryKey,
        current: &Generations,
        count_miss: bool,
    ) -> Option<Arc<V>> {
        let inner = self.inner.as_ref()?;
        let (found, stale) = {
            let mut inner = inner.lock();
            match inner.entries.get(key) {
                Some(cached) if same(&cached.read, current) => {
                    let value = Arc::clone(&cached.value);
                    inner.counters.hits += 1;
                    (Some(value), None)
                }
                // Read after this caller's generations: it stays (taking it
                // out would be an eviction no older load is told of).
                // Or read for other key values (a key that does not name
                // them): another list, which a fill replaces as an eviction.
                Some(cached)
                    if count_miss
                        && (later(&cached.read, current) || !same_reads(&cached.read, current)) =>
                {
                    inner.counters.misses += 1;
                    (None, None)
                }
                Some(_) if count_miss => {
                    inner.counters.misses += 1;
                    (None, inner.entries.pop(key))
                }
                None if count_miss => {
                    inner.counters.misses += 1;
                    (None, None)
                }
                Some(_) | None => (None, None),
            }
        };
        drop(stale);
        found.and_then(|value| value.downcast::<V>().ok())
    }

    /// Stores `value` for `key`, read at the generations `read` by a load
    /// that [`began`](Self::began) at `began`, unless a table it read moved on
    /// while it ran (`current` differs from `read`), and returns the value to
    /// hand the loader's caller. A value already cached at the same
    /// generations stays, and is returned instead: two loads read at one
    /// generation may straddle a commit whose invalidation is not applied
    /// yet, and replacing the first value with the second could take a caller
    /// already served the newer one back to the older (the identity map's
    /// rule: a fill never replaces a current entry). For the same reason a
    /// load older than an eviction of its key fills nothing: the evicted
    /// value may have been the newer one; nor does a load whose generations
    /// are older than the cached value's (they moved on after it compared
    /// them), which would otherwise evict that value unannounced.
    pub(crate) fn fill<V: Send + Sync + 'static>(
        &self,
        key: QueryKey,
        read: Generations,
        value: Arc<V>,
        current: &Generations,
        began: u64,
    ) -> Arc<V> {
        let Some(inner) = &self.inner else {
            return value;
        };
        let fresh = same(&read, current);
        let hash = self.hash(&key);
        let (cached, evicted) = {
            let mut inner = inner.lock();
            // A value read at later generations than `read` (which were
            // current when the caller compared them) stays: replaced, it
            // would be an eviction no older load is told of.
            let behind = inner
                .entries
                .peek(&key)
                .is_some_and(|cached| later(&cached.read, &read));
            if !fresh || behind || inner.evicted.since(hash, began) {
                inner.counters.stale_fills_dropped += 1;
                return value;
            }
            let kept = match inner.entries.get(&key) {
                Some(cached) if same(&cached.read, &read) => Some(Arc::clone(&cached.value)),
                _ => None,
            };
            match kept {
                Some(kept) => (Some(kept), None),
                None => {
                    inner.counters.fills += 1;
                    let replaces = inner.entries.contains(&key);
                    // The list of other key values under this key goes as
                    // an eviction would: a load of it may be in flight.
                    let other_list = inner
                        .entries
                        .peek(&key)
                        .is_some_and(|cached| !same_reads(&cached.read, &read));
                    let value = Arc::clone(&value) as Arc<dyn Any + Send + Sync>;
                    let removed = inner.entries.push(key, CachedValue { read, value });
                    let evicted_hash = match &removed {
                        Some((evicted_key, _)) if !replaces || other_list => {
                            Some(self.hash(evicted_key))
                        }
                        _ => None,
                    };
                    if let Some(evicted_hash) = evicted_hash {
                        inner.counters.evictions += 1;
                        let at = self.evictions.fetch_add(1, Ordering::AcqRel) + 1;
                        inner.evicted.record(evicted_hash, at);
                    }
                    (None, removed)
                }
            }
        };
        drop(evicted);
        cached
            .and_then(|cached| cached.downcast::<V>().ok())
            .unwrap_or(value)
    }

    pub(crate) fn clear(&self) {
        let (Some(inner), Some(capacity)) = (&self.inner, NonZeroUsize::new(self.capacity)) else {
            return;
        };
        // The empty map's table is allocated, and the old entries dropped,
        // with no lock held: readers wait only for the swap.
        let empty = LruCache::new(capacity);
        let entries = { std::mem::replace(&mut inner.lock().entries, empty) };
        drop(entries);
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

/// `a == b`, the generations and values compared first: they are what
/// differs, and the names, `&'static str`s of the same reads, are usually
/// the same pointers (a page's counts compare forty parts under the lock).
fn same(a: &Generations, b: &Generations) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((x, v, m), (y, w, n))| m == n && v == w && (std::ptr::eq(*x, *y) || x == y))
}

/// Whether `a` and `b` name the same reads: the same tables and key
/// columns, for the same values, at any generations.
fn same_reads(a: &Generations, b: &Generations) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((x, v, _), (y, w, _))| x == y && v == w)
}

/// Whether `a` was read after `b`: the same reads (names and values), one
/// of them at a later generation (generations only move forward).
fn later(a: &Generations, b: &Generations) -> bool {
    same_reads(a, b) && a.iter().zip(b).any(|((_, _, m), (_, _, n))| m > n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> QueryKey {
        (TypeId::of::<u64>(), "users.count".to_owned())
    }

    /// Two loads of one query that both read the same generations can end in
    /// either order; the database may have changed between their reads (a
    /// commit whose invalidation is not applied yet). Were the second fill to
    /// replace the first, a caller served the newer value from the cache could
    /// then be served the older one: reads would go back in time.
    #[test]
    fn a_fill_keeps_a_value_already_current_and_hands_it_to_its_caller() {
        let cache = QueryCache::new(10);
        let read: Generations = vec![("users", 0, 7)];
        let newer = cache.fill(key(), read.clone(), Arc::new(2_u64), &read, cache.began());
        assert_eq!(*newer, 2);
        let older = cache.fill(key(), read.clone(), Arc::new(1_u64), &read, cache.began());
        assert_eq!(*older, 2, "the loader is handed the value already cached");
        assert_eq!(cache.get::<u64>(&key(), &read).as_deref(), Some(&2));
    }

    /// The same, once the newer value has been evicted: the older load's
    /// fill finds nothing cached, yet must not cache what it read.
    #[test]
    fn a_fill_older_than_an_evicted_value_is_not_cached() {
        let cache = QueryCache::new(1);
        let read: Generations = vec![("users", 0, 7)];
        let older_began = cache.began();
        cache.fill(key(), read.clone(), Arc::new(2_u64), &read, cache.began());
        let other = (TypeId::of::<u64>(), "posts.count".to_owned());
        cache.fill(other, read.clone(), Arc::new(0_u64), &read, cache.began());
        assert!(cache.get::<u64>(&key(), &read).is_none(), "evicted");
        let older = cache.fill(key(), read.clone(), Arc::new(1_u64), &read, older_began);
        assert_eq!(*older, 1, "the loader's caller gets what it read");
        assert_ne!(
            cache.get::<u64>(&key(), &read).as_deref(),
            Some(&1),
            "a cached value went back in time"
        );
    }

    /// A reader whose generations were read just before they moved on
    /// finds the value a load of the newer generations cached since. Taking
    /// it out (as a value of older generations) is an eviction no load is
    /// told of: an older load of the newer generations, which read the
    /// database before a commit whose invalidation is not applied yet, then
    /// fills in its place, and a caller already served the newer value is
    /// served the older one.
    #[test]
    fn a_reader_of_older_generations_leaves_a_newer_value_cached() {
        let cache = QueryCache::new(10);
        let (old, new): (Generations, Generations) = (vec![("users", 0, 7)], vec![("users", 0, 8)]);
        let older_began = cache.began();
        cache.fill(key(), new.clone(), Arc::new(2_u64), &new, cache.began());
        assert_eq!(cache.get::<u64>(&key(), &new).as_deref(), Some(&2));
        assert!(cache.get::<u64>(&key(), &old).is_none(), "7 is not current");
        let older = cache.fill(key(), new.clone(), Arc::new(1_u64), &new, older_began);
        assert_eq!(*older, 2, "the loader is handed the value already cached");
        assert_eq!(
            cache.get::<u64>(&key(), &new).as_deref(),
            Some(&2),
            "a cached value went back in time"
        );
    }

    /// The same through a fill: a load that read and compared its
    /// generations before they moved on must not replace the newer value.
    #[test]
    fn a_fill_of_older_generations_leaves_a_newer_value_cached() {
        let cache = QueryCache::new(10);
        let (old, new): (Generations, Generations) = (vec![("users", 0, 7)], vec![("users", 0, 8)]);
        let older_began = cache.began();
        cache.fill(key(), new.clone(), Arc::new(2_u64), &new, cache.began());
        let behind = cache.fill(key(), old.clone(), Arc::new(0_u64), &old, cache.began());
        assert_eq!(*behind, 0, "the loader's caller gets what it read");
        cache.fill(key(), new.clone(), Arc::new(1_u64), &new, older_began);
        assert_eq!(
            cache.get::<u64>(&key(), &new).as_deref(),
            Some(&2),
            "a cached value went back in time"
        );
    }

    /// A key that does not name its `Read::eq` value holds one value's list
    /// at a time: a fill of another value's list takes the first one out,
    /// and must count as an eviction of it, or an older load of the first
    /// list (straddling a commit whose invalidation is not applied yet)
    /// fills in its place and takes a caller already served the newer list
    /// back in time.
    #[test]
    fn a_list_of_another_key_value_replacing_one_counts_as_its_eviction() {
        let cache = QueryCache::new(10);
        let of = |post: i64| -> Generations { vec![("comments", 0, 3), ("post_id", post, 5)] };
        let older_began = cache.began();
        cache.fill(key(), of(7), Arc::new(2_u64), &of(7), cache.began());
        assert!(
            cache.get::<u64>(&key(), &of(8)).is_none(),
            "7's list is not 8's"
        );
        cache.fill(key(), of(8), Arc::new(9_u64), &of(8), cache.began());
        cache.fill(key(), of(7), Arc::new(1_u64), &of(7), older_began);
        assert_ne!(
            cache.get::<u64>(&key(), &of(7)).as_deref(),
            Some(&1),
            "a cached value went back in time"
        );
    }

    #[test]
    fn a_fill_replaces_a_value_of_older_generations() {
        let cache = QueryCache::new(10);
        let old: Generations = vec![("users", 0, 7)];
        let new: Generations = vec![("users", 0, 8)];
        cache.fill(key(), old.clone(), Arc::new(1_u64), &old, cache.began());
        let value = cache.fill(key(), new.clone(), Arc::new(2_u64), &new, cache.began());
        assert_eq!(*value, 2);
        assert_eq!(cache.get::<u64>(&key(), &new).as_deref(), Some(&2));
    }

    #[test]
    fn a_fill_that_read_older_generations_is_dropped_and_returned_as_loaded() {
        let cache = QueryCache::new(10);
        let old: Generations = vec![("users", 0, 7)];
        let new: Generations = vec![("users", 0, 8)];
        let value = cache.fill(key(), old, Arc::new(1_u64), &new, cache.began());
        assert_eq!(*value, 1);
        assert!(cache.get::<u64>(&key(), &new).is_none());
        assert_eq!(cache.stats().stale_fills_dropped, 1);
    }
}
