//! The identity map: per entity, sharded immutable `Arc` entries kept by a
//! W-TinyLFU admission policy under one capacity shared by all shards, with
//! invalidation epochs and single-flight loads.
//!
//! Lock discipline, all of it in this module and `shard.rs`:
//! - a shard lock is held only for in-memory work (lookup, fill, remove, epoch
//!   bump), in blocks that end before any database call or user code runs;
//! - at most one shard lock is held at a time;
//! - concurrent misses of one key wait on that key's [`Flight`], not on the shard.

mod evicted;
mod flight;
#[cfg(test)]
mod footprint;
#[cfg(test)]
mod hit_ratio;
#[cfg(all(test, feature = "shuttle"))]
mod model;
mod policy;
#[cfg(test)]
mod proptests;
mod query;
mod shard;
mod sketch;
mod stats;

use std::sync::Arc;

use crate::sync::Mutex;

use flight::Flight;
#[cfg_attr(not(feature = "tokio"), allow(unused_imports))]
pub(crate) use flight::Landing;
use policy::{Budget, Entries};
pub(crate) use query::{Generations, QueryCache, QueryKey};
use shard::{Fill, Lookup, Shard};
pub use stats::CacheStats;

/// A cached value of any entity type, for the type-erased face of a map.
pub(crate) type AnyValue = Arc<dyn std::any::Any + Send + Sync>;

/// Most shards an identity map uses; enough to keep two to four threads off
/// each other's locks, few enough that each shard's LRU order and frequency
/// sketch see enough of the traffic to stay meaningful.
const MAX_SHARDS: usize = 16;

/// Fewest units of capacity a shard is meant to hold. Shards keep the
/// units they took while the map filled (until a flush), so the split is
/// decided by the first fills: with a few units per shard, a shard the
/// first fills happened to miss could cache nothing at all. At 64 or more
/// per shard, hashed ids leave none without (16 shards missing all of
/// 1,024 random fills has odds near 10^-28), and a small map is one shard.
const MIN_SHARE: usize = 64;

/// The cache of one entity type.
pub(crate) struct IdentityMap<T> {
    /// The entity's table, for tracing.
    table: &'static str,
    shards: Box<[CacheLine<Mutex<Shard<T>>>]>,
    /// The capacity all shards share.
    budget: Budget,
    /// False when the capacity is 0: every `get` loads and nothing is kept.
    enabled: bool,
}

impl<T: Send + Sync + 'static> IdentityMap<T> {
    /// A map of `table`'s rows holding at most `capacity` entries in total;
    /// 0 disables caching.
    pub(crate) fn new(table: &'static str, capacity: usize) -> IdentityMap<T> {
        let shard_count = prev_power_of_two((capacity / MIN_SHARE).clamp(1, MAX_SHARDS));
        IdentityMap::with_shards(table, capacity, shard_count)
    }

    /// [`new`](Self::new) with `shard_count` shards (a power of two), so
    /// that tests can split a small capacity and race its shards for it.
    pub(crate) fn with_shards(
        table: &'static str,
        capacity: usize,
        shard_count: usize,
    ) -> IdentityMap<T> {
        debug_assert!(shard_count.is_power_of_two());
        let shards = (0..shard_count)
            .map(|_| CacheLine(Mutex::new(Shard::new(capacity, shard_count))))
            .collect();
        IdentityMap {
            table,
            shards,
            budget: Budget::new(capacity),
            enabled: capacity > 0,
        }
    }

    fn shard_index(&self, id: i64) -> usize {
        // Fibonacci hashing spreads sequential ids over the shards.
        let hash = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        hash as usize & (self.shards.len() - 1)
    }

    fn shard(&self, id: i64) -> &Mutex<Shard<T>> {
        &self.shards[self.shard_index(id)]
    }

    /// The cached value of `id`, without loading and without touching the LRU order.
    pub(crate) fn peek(&self, id: i64) -> Option<Arc<T>> {
        let shard = self.shard(id).lock();
        shard.peek(id)
    }

    /// Returns the cached value of `id`, or loads it with `load` (run with no
    /// lock held) and caches it unless `id` was invalidated meanwhile.
    /// Concurrent callers missing the same key share one `load`.
    pub(crate) fn get_or_load<F, E>(&self, id: i64, load: F) -> Result<Option<Arc<T>>, E>
    where
        F: FnOnce() -> Result<Option<T>, E>,
    {
        if !self.enabled {
            return self.load_uncached(id, load);
        }
        let lookup = { self.shard(id).lock().lookup(id, false) };
        if let Lookup::Hit(value) = lookup {
            tracing::trace!(table = self.table, id, "cache hit");
            return Ok(Some(value));
        }
        self.load_missed(id, lookup, load)
    }

    /// The rest of [`get_or_load`](Self::get_or_load) after a miss: out of
    /// line, so that a hit runs only the lock, the lookup and the trace check.
    #[cold]
    #[inline(never)]
    fn load_missed<F, E>(&self, id: i64, lookup: Lookup<T>, load: F) -> Result<Option<Arc<T>>, E>
    where
        F: FnOnce() -> Result<Option<T>, E>,
    {
        match lookup {
            Lookup::Hit(value) => Ok(Some(value)),
            Lookup::Lead(flight) => self.lead(Lease { id, flight }, load),
            Lookup::Wait(flight) => {
                tracing::trace!(
                    table = self.table,
                    id,
                    "cache miss: waiting for a load in flight"
                );
                match flight.wait() {
                    Some(value) => Ok(value),
                    None => self.load_alone(id, load),
                }
            }
        }
    }

    /// What an async caller does about `id`, decided under the shard lock and
    /// counted exactly as [`get_or_load`](Self::get_or_load) counts it (a hit,
    /// or a miss, and a load for the leader), the admission policy told alike:
    /// take the cached value, await the load in flight, or lead a new one.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn probe(&self, id: i64) -> Probe<T> {
        if !self.enabled {
            return Probe::Uncached;
        }
        // A lead is queued for the blocking pool: no thread may wait for it
        // until a thread of that pool begins it (see `Flight::wait`).
        let lookup = { self.shard(id).lock().lookup(id, true) };
        match lookup {
            Lookup::Hit(value) => {
                tracing::trace!(table = self.table, id, "cache hit");
                Probe::Hit(value)
            }
            Lookup::Wait(flight) => {
                tracing::trace!(
                    table = self.table,
                    id,
                    "cache miss: awaiting a load in flight"
                );
                Probe::Wait(Landing::new(flight))
            }
            Lookup::Lead(flight) => Probe::Lead(Lease { id, flight }),
        }
    }

    /// Runs the load a [`Lease`] leads, with no lock held, and ends its
    /// flight: the value is filled unless the key was invalidated meanwhile,
    /// and every waiter gets what the leader gets. An `Err` or a panic of
    /// `load` ends the flight too (its waiters then load for themselves).
    pub(crate) fn lead<F, E>(&self, lease: Lease<T>, load: F) -> Result<Option<Arc<T>>, E>
    where
        F: FnOnce() -> Result<Option<T>, E>,
    {
        let Lease { id, flight } = lease;
        flight.start();
        // The guard first: if anything below panics (a tracing
        // subscriber included), its drop still ends the flight.
        let leader = Leader {
            shard: self.shard(id),
            budget: &self.budget,
            id,
            flight: Some(flight),
        };
        tracing::trace!(table = self.table, id, "cache miss: loading");
        let value = load()?.map(Arc::new);
        let (value, filled) = leader.finish(value);
        tracing::trace!(table = self.table, id, filled, "cache fill");
        Ok(value)
    }

    /// Ends a [`Lease`] whose load will never run: its waiters load for themselves.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn abandon(&self, lease: Lease<T>) {
        drop(Leader {
            shard: self.shard(lease.id),
            budget: &self.budget,
            id: lease.id,
            flight: Some(lease.flight),
        });
    }

    /// The fallback when the leader of a flight failed: load without coalescing,
    /// still under the epoch rule.
    pub(crate) fn load_alone<F, E>(&self, id: i64, load: F) -> Result<Option<Arc<T>>, E>
    where
        F: FnOnce() -> Result<Option<T>, E>,
    {
        let shard = self.shard(id);
        let epoch = {
            let mut shard = shard.lock();
            shard.counters.loads += 1;
            shard.epoch()
        };
        let Some(value) = load()?.map(Arc::new) else {
            return Ok(None);
        };
        let fill = { shard.lock().fill_if_epoch(id, &value, epoch, &self.budget) };
        Ok(Some(fill.resolve(&value)))
    }

    fn load_uncached<F, E>(&self, id: i64, load: F) -> Result<Option<Arc<T>>, E>
    where
        F: FnOnce() -> Result<Option<T>, E>,
    {
        {
            let mut shard = self.shard(id).lock();
            shard.counters.misses += 1;
            shard.counters.loads += 1;
        }
        Ok(load()?.map(Arc::new))
    }

    /// The cached values of `ids` (in order, `None` where not cached), each
    /// counted as a hit or a miss, for a batch that loads the misses at once.
    pub(crate) fn get_cached(&self, ids: &[i64]) -> Vec<Option<Arc<T>>> {
        ids.iter()
            .map(|&id| {
                if !self.enabled {
                    return None;
                }
                let mut shard = self.shard(id).lock();
                shard.get_counted(id)
            })
            .collect()
    }

    /// Counts a batch load of `n` rows.
    pub(crate) fn count_loads(&self, n: usize) {
        let mut shard = self.shards[0].lock();
        shard.counters.loads += n as u64;
    }

    /// The epoch of `id`'s shard in `epochs` (as read by [`epochs`](Self::epochs)),
    /// for a write whose key was not known before its statement ran (an insert).
    pub(crate) fn epoch_in(&self, epochs: &[u64], id: i64) -> u64 {
        epochs[self.shard_index(id)]
    }

    /// The epoch of `id`'s shard, read before a write or a list query.
    pub(crate) fn epoch_of(&self, id: i64) -> u64 {
        self.shard(id).lock().epoch()
    }

    /// Every shard's epoch, read one shard lock at a time before a list query.
    pub(crate) fn epochs(&self) -> Vec<u64> {
        self.shards
            .iter()
            .map(|shard| shard.lock().epoch())
            .collect()
    }

    /// Puts rows a list query loaded through the identity map: a row already
    /// cached comes back as the cached `Arc`, an uncached row is filled unless
    /// its shard was invalidated since `epochs` were read.
    pub(crate) fn intern(
        &self,
        rows: Vec<T>,
        epochs: &[u64],
        id_of: impl Fn(&T) -> i64,
    ) -> Vec<Arc<T>> {
        rows.into_iter()
            .map(|row| {
                let id = id_of(&row);
                let row = Arc::new(row);
                if !self.enabled {
                    return row;
                }
                let index = self.shard_index(id);
                // What the fill evicted, or the row's copy when the cached
                // one was kept: user code either way, dropped after the lock.
                let (row, removed) = {
                    let mut shard = self.shards[index].lock();
                    shard.intern(id, row, epochs[index], &self.budget)
                };
                drop(removed);
                row
            })
            .collect()
    }

    /// Applies a committed write of `id`; see [`Shard::apply_write`].
    pub(crate) fn apply_write(&self, id: i64, value: Option<&Arc<T>>, epoch_at_write: u64) {
        let value = value.filter(|_| self.enabled);
        let removed = {
            let mut shard = self.shard(id).lock();
            shard.apply_write(id, value, epoch_at_write, &self.budget)
        };
        drop(removed);
        tracing::trace!(table = self.table, id, "invalidated by a committed write");
    }

    /// Removes `id` and makes every load of it that is in progress unfillable.
    pub(crate) fn invalidate(&self, id: i64) {
        let removed = {
            let mut shard = self.shard(id).lock();
            shard.invalidate(id)
        };
        drop(removed);
        tracing::trace!(table = self.table, id, "invalidated");
    }

    /// Empties the map and makes every load in progress unfillable. Every
    /// shard is emptied before any row is dropped: a row's destructor is
    /// application code, and one that panics must not leave the shards after
    /// it serving their rows. The first panic goes on once all are dropped.
    pub(crate) fn clear(&self) {
        let removed: Vec<_> = self
            .shards
            .iter()
            .map(|shard| {
                let empty = Entries::empty_regions();
                // One shard lock at a time, released as the closure returns;
                // the rows it hands back are dropped after every shard is empty.
                let mut shard = shard.lock();
                shard.clear(empty, &self.budget)
            })
            .collect();
        let mut panic = None;
        for removed in removed {
            let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(removed)));
            if let Err(payload) = dropped {
                panic.get_or_insert(payload);
            }
        }
        if let Some(payload) = panic {
            std::panic::resume_unwind(payload);
        }
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let mut total = CacheStats::default();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            let mut counters = shard.counters;
            counters.entries = shard.len() as u64;
            total += counters;
        }
        total.capacity = self.budget.capacity() as u64;
        total
    }
}

/// What [`IdentityMap::probe`] found.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) enum Probe<T> {
    Hit(Arc<T>),
    /// Another caller is loading the key: await this.
    Wait(Landing<T>),
    /// This caller must load the key: hand the lease to
    /// [`IdentityMap::lead`], or to [`IdentityMap::abandon`] if it cannot.
    Lead(Lease<T>),
    /// Caching is off (capacity 0): load without a flight.
    Uncached,
}

/// The duty to lead one key's load: a flight other callers now wait on.
#[must_use = "a lease must be led or abandoned, or its key's waiters wait for nothing"]
pub(crate) struct Lease<T> {
    id: i64,
    flight: Arc<Flight<T>>,
}

impl<T> Lease<T> {
    /// The key to load.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn id(&self) -> i64 {
        self.id
    }
}

/// The leader of a single-flight load. Dropping it without `finish` (the load
/// returned `Err` or panicked) detaches the flight and wakes its waiters, who
/// then load for themselves: no waiter is left blocked.
struct Leader<'a, T> {
    shard: &'a Mutex<Shard<T>>,
    budget: &'a Budget,
    id: i64,
    flight: Option<Arc<Flight<T>>>,
}

impl<T> Leader<'_, T> {
    /// Ends the flight with the loaded value; returns what the leader and the
    /// waiters get (the entry already cached, if one is still current) and
    /// whether the value was cached.
    fn finish(mut self, value: Option<Arc<T>>) -> (Option<Arc<T>>, bool) {
        let Some(flight) = self.flight.take() else {
            return (value, false);
        };
        let fill = {
            let mut shard = self.shard.lock();
            shard.finish_flight(self.id, &flight, value.as_ref(), self.budget)
        };
        let filled = fill.as_ref().is_some_and(Fill::filled);
        let value = match (&fill, value) {
            (Some(fill), Some(value)) => Some(fill.resolve(&value)),
            (_, value) => value,
        };
        flight.complete(Some(value.clone()));
        drop(fill); // what the fill evicted, dropped after the lock
        (value, filled)
    }
}

impl<T> Drop for Leader<'_, T> {
    fn drop(&mut self) {
        if let Some(flight) = self.flight.take() {
            {
                let mut shard = self.shard.lock();
                shard.finish_flight(self.id, &flight, None, self.budget);
            }
            flight.complete(None);
        }
    }
}

impl<T> IdentityMap<T> {
    /// Units of the shared budget all shards hold; equals the budget's count.
    #[cfg(test)]
    fn units(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().units()).sum()
    }
}

/// A value alone on its cache lines: two threads hitting neighbouring
/// shards would otherwise write the same line (the lock word, the counters).
#[repr(align(64))]
struct CacheLine<T>(T);

impl<T> std::ops::Deref for CacheLine<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

fn prev_power_of_two(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// The type-erased face of an identity map, for the invalidation bus and
/// statistics, which work by table name rather than by entity type.
pub(crate) trait CacheControl: Send + Sync {
    /// Applies a committed write; `value` must be an `Arc<T>` of this map's type.
    fn apply_write_any(&self, id: i64, value: Option<AnyValue>, epoch: u64);
    fn invalidate(&self, id: i64);
    fn clear(&self);
    fn stats(&self) -> CacheStats;
}

impl<T: Send + Sync + 'static> CacheControl for IdentityMap<T> {
    fn apply_write_any(&self, id: i64, value: Option<AnyValue>, epoch: u64) {
        match value.map(|v| v.downcast::<T>()) {
            Some(Ok(value)) => self.apply_write(id, Some(&value), epoch),
            // A value of another type cannot be cached here; invalidating is always safe.
            Some(Err(_)) | None => self.apply_write(id, None, epoch),
        }
    }

    fn invalidate(&self, id: i64) {
        IdentityMap::invalidate(self, id);
    }

    fn clear(&self) {
        IdentityMap::clear(self);
    }

    fn stats(&self) -> CacheStats {
        IdentityMap::stats(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;
    use std::time::Duration;

    fn map(capacity: usize) -> IdentityMap<String> {
        IdentityMap::new("test", capacity)
    }

    type Result<T> = std::result::Result<T, String>;

    fn load(value: &str) -> impl FnOnce() -> Result<Option<String>> + '_ {
        move || Ok(Some(value.to_owned()))
    }

    #[test]
    fn hit_returns_the_same_arc() {
        let map = map(8);
        let first = map.get_or_load(1, load("a")).unwrap().unwrap();
        let second = map.get_or_load(1, load("other")).unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        let stats = map.stats();
        assert_eq!((stats.hits, stats.misses, stats.fills), (1, 1, 1));
    }

    #[test]
    fn capacity_bounds_entries_and_the_newest_is_kept() {
        let map = map(2);
        for id in 0..10 {
            map.get_or_load(id, load("v")).unwrap();
        }
        let stats = map.stats();
        assert_eq!(stats.entries, 2);
        assert_eq!(stats.evictions, 8);
        // A new entry enters the admission window, whatever its frequency.
        assert!(map.peek(9).is_some());
    }

    /// Shards keep the units of capacity they took while the map filled,
    /// so a shard the first fills happened to miss could hold none: every
    /// key of it, however hot, lost its admission duel to no victim at all
    /// until the next flush. Here the fills all land in one shard: in a small
    /// map the first few keys decide the split. (A map large enough for
    /// several shards gives each at least `MIN_SHARE` units, and hashed ids
    /// spread its fills too evenly for one to be left without any.)
    #[test]
    fn a_hot_key_is_cached_whichever_shard_the_fills_went_to() {
        for capacity in [16, 64, 100] {
            let map = map(capacity);
            let home = map.shard_index(0);
            let fills = (0..).filter(|&id| map.shard_index(id) == home);
            for id in fills.take(capacity) {
                map.get_or_load(id, load("fill")).unwrap();
            }
            let elsewhere = (1_000_000..1_010_000).find(|&id| map.shard_index(id) != home);
            let hot = elsewhere.unwrap_or(1_000_000);
            for _ in 0..50 {
                map.get_or_load(hot, load("hot")).unwrap();
            }
            assert!(
                map.peek(hot).is_some(),
                "capacity {capacity}: a key read 50 times is not cached"
            );
        }
    }

    #[test]
    fn the_reported_capacity_is_the_configured_one() {
        for capacity in [0, 1, 2, 3, 15, 16, 17, 1000, 10_007] {
            assert_eq!(map(capacity).stats().capacity, capacity as u64);
        }
    }

    #[test]
    fn invalidation_during_load_drops_the_fill() {
        let map = map(8);
        let value = map
            .get_or_load(1, || {
                // A writer commits and invalidates while this load is in flight.
                map.invalidate(1);
                Ok::<_, String>(Some("stale".to_owned()))
            })
            .unwrap();
        assert_eq!(value.as_deref().map(String::as_str), Some("stale"));
        assert!(
            map.peek(1).is_none(),
            "a load that raced an invalidation must not fill"
        );
        assert_eq!(map.stats().stale_fills_dropped, 1);
        let fresh = map.get_or_load(1, load("fresh")).unwrap().unwrap();
        assert_eq!(*fresh, "fresh");
    }

    #[test]
    fn a_load_older_than_an_evicted_fill_does_not_take_its_key_back_in_time() {
        // Capacity 1: one shard, and the second key's fill evicts the first.
        let map = map(1);
        // A list query begins and reads row 1 as it was ("v1")...
        let epochs = map.epochs();
        // ...another process commits "v2" (its invalidation is still on its
        // way), and a get loads and caches it...
        let newer = map.get_or_load(1, load("v2")).unwrap().unwrap();
        assert_eq!(*newer, "v2");
        // ...until a fill of another key evicts it.
        map.get_or_load(2, load("other")).unwrap();
        assert!(map.peek(1).is_none(), "the fill of key 2 evicted key 1");
        // The list query's older row lands now: caching it would serve "v1"
        // to a caller that was already served "v2".
        let listed = map.intern(vec!["v1".to_owned()], &epochs, |_| 1);
        assert_eq!(*listed[0], "v1", "the query's caller gets what it read");
        let again = map.get_or_load(1, load("v2")).unwrap().unwrap();
        assert_eq!(*again, "v2", "a get went back in time");
    }

    #[test]
    fn a_write_applied_after_a_newer_row_was_loaded_does_not_take_its_key_back_in_time() {
        let map = map(8);
        // Two writers of row 1 read the epoch and commit "v1", then "v2"
        // (the row lock orders them); neither has applied its write yet...
        let first = map.epoch_of(1);
        let second = map.epoch_of(1);
        // ...when a get loads the newer row and caches it.
        let newer = map.get_or_load(1, load("v2")).unwrap().unwrap();
        assert_eq!(*newer, "v2");
        // The first writer applies its older row now: caching it would
        // serve "v1" to a caller that was already served "v2".
        map.apply_write(1, Some(&Arc::new("v1".to_owned())), first);
        let again = map.get_or_load(1, load("v2")).unwrap().unwrap();
        assert_eq!(*again, "v2", "a get went back in time");
        map.apply_write(1, Some(&Arc::new("v2".to_owned())), second);
        let last = map.get_or_load(1, load("v2")).unwrap().unwrap();
        assert_eq!(*last, "v2");
    }

    #[test]
    fn load_runs_without_any_shard_lock() {
        let map = map(64);
        map.get_or_load(1, || {
            for shard in map.shards.iter() {
                assert!(
                    shard.try_lock().is_some(),
                    "a shard lock is held during a load"
                );
            }
            Ok::<_, String>(Some("v".to_owned()))
        })
        .unwrap();
    }

    #[test]
    fn apply_write_fills_only_when_nothing_intervened() {
        let map = map(8);
        let epoch = map.epoch_of(1);
        map.apply_write(1, Some(&Arc::new("new".to_owned())), epoch);
        assert_eq!(map.peek(1).as_deref().map(String::as_str), Some("new"));

        let epoch = map.epoch_of(2);
        map.invalidate(2); // another writer's invalidation lands first
        map.apply_write(2, Some(&Arc::new("mine".to_owned())), epoch);
        assert!(map.peek(2).is_none());
    }

    #[test]
    fn concurrent_misses_of_one_key_load_once() {
        let map = Arc::new(map(8));
        let loads = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (map, loads, start) = (map.clone(), loads.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    map.get_or_load(7, || {
                        loads.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(200));
                        Ok::<_, String>(Some("v".to_owned()))
                    })
                    .unwrap()
                    .unwrap()
                })
            })
            .collect();
        let values: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert!(values.iter().all(|v| Arc::ptr_eq(v, &values[0])));
    }

    #[test]
    fn failed_leader_releases_its_waiters() {
        let map = Arc::new(map(8));
        let started = Arc::new(Barrier::new(2));
        let leader = {
            let (map, started) = (map.clone(), started.clone());
            std::thread::spawn(move || {
                map.get_or_load(3, || -> Result<Option<String>> {
                    started.wait();
                    std::thread::sleep(Duration::from_millis(100));
                    panic!("loader panics");
                })
            })
        };
        started.wait();
        let waiter = map.get_or_load(3, load("second try")).unwrap().unwrap();
        assert!(leader.join().is_err());
        assert_eq!(*waiter, "second try");
    }

    #[test]
    fn capacity_zero_disables_caching() {
        let map = map(0);
        let a = map.get_or_load(1, load("a")).unwrap().unwrap();
        let b = map.get_or_load(1, load("b")).unwrap().unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(map.stats().loads, 2);
        assert_eq!(map.stats().capacity, 0);
    }

    /// A value whose destructor records whether any shard lock of its map is
    /// held when it runs: a destructor is user code and must run after the lock.
    struct Probe {
        map: Arc<std::sync::OnceLock<std::sync::Weak<IdentityMap<Probe>>>>,
        dropped_under_lock: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            let Some(map) = self.map.get().and_then(std::sync::Weak::upgrade) else {
                return;
            };
            if map.shards.iter().any(|shard| shard.try_lock().is_none()) {
                self.dropped_under_lock.store(true, Ordering::SeqCst);
            }
        }
    }

    /// A map of `capacity` whose probes report to one flag: the map, a maker
    /// of probes, and the flag.
    fn probed(
        capacity: usize,
    ) -> (
        Arc<IdentityMap<Probe>>,
        impl Fn() -> Probe,
        Arc<std::sync::atomic::AtomicBool>,
    ) {
        let map = Arc::new(IdentityMap::<Probe>::new("test", capacity));
        let cell = Arc::new(std::sync::OnceLock::new());
        cell.set(Arc::downgrade(&map)).ok();
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reported = Arc::clone(&flag);
        let probe = move || Probe {
            map: Arc::clone(&cell),
            dropped_under_lock: Arc::clone(&reported),
        };
        (map, probe, flag)
    }

    #[test]
    fn values_leaving_the_cache_are_dropped_after_the_shard_lock() {
        let (map, probe, flag) = probed(1);
        for id in 0..3 {
            map.get_or_load(id, || Ok::<_, String>(Some(probe())))
                .unwrap(); // evicts the one before
        }
        map.invalidate(2);
        map.get_or_load(3, || Ok::<_, String>(Some(probe())))
            .unwrap();
        map.apply_write(3, Some(&Arc::new(probe())), map.epoch_of(3));
        map.intern(vec![probe()], &map.epochs(), |_| 4); // evicts 3
        map.clear();
        assert!(
            !flag.load(Ordering::SeqCst),
            "an entity's destructor ran under a shard lock"
        );
    }

    /// A list query (`query`, `cached_query`, `get_many`) that loads a row
    /// already cached hands out the cached `Arc` and lets its own copy go:
    /// that copy's destructor is user code too, and must not run under the
    /// shard lock (a list of hot rows drops one copy per row).
    #[test]
    fn a_loaded_copy_of_a_cached_row_is_dropped_after_the_shard_lock() {
        let (map, probe, flag) = probed(8);
        let cached = map
            .get_or_load(1, || Ok::<_, String>(Some(probe())))
            .unwrap()
            .unwrap();
        let rows = map.intern(vec![probe()], &map.epochs(), |_| 1);
        assert!(Arc::ptr_eq(&rows[0], &cached), "the premise: kept");
        assert!(
            !flag.load(Ordering::SeqCst),
            "a loaded copy's destructor ran under a shard lock"
        );
    }

    /// Panics on the first event: a tracing subscriber is user code too.
    struct PanickingSubscriber;

    impl tracing::Subscriber for PanickingSubscriber {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {
            panic!("the subscriber panics");
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn a_panic_while_starting_a_load_leaves_no_flight_behind() {
        let map = Arc::new(map(8));
        // Another test's thread registering a callsite for the first time may
        // store "no interest" over the rebuilt one: try again, on a new key.
        let key = (5..25).find(|&key| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                tracing::subscriber::with_default(PanickingSubscriber, || {
                    // Ask the callsites again with this subscriber in place.
                    tracing::callsite::rebuild_interest_cache();
                    map.get_or_load(key, load("never loaded"))
                })
            }))
            .is_err()
        });
        let key = key.expect("the premise: the subscriber panicked");
        let (done, finished) = std::sync::mpsc::channel();
        let next = Arc::clone(&map);
        std::thread::spawn(move || {
            let _ = done.send(next.get_or_load(key, load("v")).map(|v| v.is_some()));
        });
        let result = finished.recv_timeout(Duration::from_secs(10));
        assert!(
            matches!(result, Ok(Ok(true))),
            "a later get of the key waited on an abandoned flight: {result:?}"
        );
    }
}
