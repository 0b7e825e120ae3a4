//! One shard of an identity map: its immutable entries (kept by the W-TinyLFU
//! [`policy`](super::policy)), the shard's invalidation epoch, its in-progress
//! loads and its counters. Every method here
//! is in-memory work done by a caller that holds the shard lock. Values leaving
//! the shard are handed back to the caller (as quick_cache's shards do), so
//! that their destructors, which are user code, run after the lock is released.

use std::collections::HashMap;
use std::sync::Arc;

use super::evicted::RecentEvictions;
use super::flight::Flight;
use super::policy::{Budget, Cleared, Entries};
use super::stats::CacheStats;

pub(crate) struct Shard<T> {
    entries: Entries<T>,
    /// Moved by every invalidation, eviction and fill; a load records it when
    /// it begins, and its fill is judged against what moved it since.
    epoch: u64,
    /// The epoch right after the last invalidation or flush: a load that
    /// began before it fills nothing.
    invalidated_at: u64,
    /// Keys the policy pushed out lately: a load of one of them that began
    /// before it left may be older than the row that was cached.
    evicted: RecentEvictions,
    /// Keys a load (or a write) filled lately, each with the epoch its fill
    /// moved to: a write that read its epoch before such a fill may be older
    /// than the row filled (writes of one row commit in order, but apply in
    /// any order), and caches nothing.
    filled: RecentEvictions,
    flights: HashMap<i64, Arc<Flight<T>>>,
    pub(crate) counters: CacheStats,
}

/// What a lookup found, decided under the shard lock and acted on after it is released.
pub(crate) enum Lookup<T> {
    Hit(Arc<T>),
    /// Another caller is loading this key: wait on its flight.
    Wait(Arc<Flight<T>>),
    /// This caller must load the key and finish the flight.
    Lead(Arc<Flight<T>>),
}

/// What a fill did.
pub(crate) enum Fill<T> {
    /// The value is now the cached entry; carries the entry it evicted, if any.
    Filled(Option<Arc<T>>),
    /// An entry for the key is cached: it stays, for identity, and the caller
    /// should hand out this one instead of its own copy. It is as current as
    /// the copy: an invalidation of the key removes its entry, so one that is
    /// there was cached before the load began and not invalidated since, or
    /// cached after the invalidation that made the load stale.
    Kept(Arc<T>),
    /// The key's shard was invalidated since the load began and the key is
    /// not cached: nothing cached.
    Stale,
}

impl<T> Fill<T> {
    /// The object callers of this load should see: the cached one when it was kept.
    pub(crate) fn resolve(&self, loaded: &Arc<T>) -> Arc<T> {
        match self {
            Fill::Kept(cached) => Arc::clone(cached),
            Fill::Filled(_) | Fill::Stale => Arc::clone(loaded),
        }
    }

    pub(crate) fn filled(&self) -> bool {
        matches!(self, Fill::Filled(_))
    }
}

/// Values let go of under a shard's lock, dropped by the caller after it:
/// at most an invalidated entry, the one a fill evicted, and a loaded copy
/// the cached entry was kept over, held inline so that a removal allocates
/// nothing.
#[must_use = "dropped by the caller once the shard lock is released"]
pub(crate) struct Removed<T> {
    // Held only to be dropped: their destructors are user code.
    _invalidated: Option<Arc<T>>,
    _evicted: Option<Arc<T>>,
    _unused: Option<Arc<T>>,
}

impl<T> Removed<T> {
    fn nothing() -> Removed<T> {
        Removed {
            _invalidated: None,
            _evicted: None,
            _unused: None,
        }
    }
}

impl<T> Shard<T> {
    /// One of `shards` shards of a map of `capacity` entries.
    pub(crate) fn new(capacity: usize, shards: usize) -> Shard<T> {
        Shard {
            entries: Entries::new(capacity, shards),
            epoch: 0,
            invalidated_at: 0,
            evicted: RecentEvictions::new(),
            filled: RecentEvictions::new(),
            flights: HashMap::new(),
            counters: CacheStats::default(),
        }
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The cached value of `id`, or the load in flight to wait for, or a new
    /// one to lead; `queued` when the caller leads it only once a thread of
    /// a blocking pool takes it up (see [`Flight::wait`]).
    #[inline]
    pub(crate) fn lookup(&mut self, id: i64, queued: bool) -> Lookup<T> {
        if let Some(value) = self.entries.get(id) {
            self.counters.hits += 1;
            return Lookup::Hit(value);
        }
        self.missed(id, queued)
    }

    /// A [`lookup`](Self::lookup) that missed: join the load in flight or lead one.
    #[cold]
    #[inline(never)]
    fn missed(&mut self, id: i64, queued: bool) -> Lookup<T> {
        self.counters.misses += 1;
        if let Some(flight) = self.flights.get(&id) {
            return Lookup::Wait(Arc::clone(flight));
        }
        self.counters.loads += 1;
        let flight = Flight::new(self.epoch, queued);
        self.flights.insert(id, Arc::clone(&flight));
        Lookup::Lead(flight)
    }

    /// The cached value of `id`, counted as a hit, or `None`, counted as a
    /// miss; no load is started (a batch load follows).
    pub(crate) fn get_counted(&mut self, id: i64) -> Option<Arc<T>> {
        match self.entries.get(id) {
            Some(value) => {
                self.counters.hits += 1;
                Some(value)
            }
            None => {
                self.counters.misses += 1;
                None
            }
        }
    }

    /// Ends `flight` for `id` and fills `value` unless an invalidation happened
    /// since the flight began (`None` when there was nothing to fill).
    pub(crate) fn finish_flight(
        &mut self,
        id: i64,
        flight: &Arc<Flight<T>>,
        value: Option<&Arc<T>>,
        budget: &Budget,
    ) -> Option<Fill<T>> {
        // An invalidation may already have removed this flight and a newer one
        // may stand in its place: only remove our own.
        if self
            .flights
            .get(&id)
            .is_some_and(|f| Arc::ptr_eq(f, flight))
        {
            self.flights.remove(&id);
        }
        value.map(|value| self.fill_if_epoch(id, value, flight.epoch, budget))
    }

    /// Whether a load of `id` that began at `epoch` may still fill: nothing
    /// was invalidated since, and no newer copy of `id` was cached and then
    /// evicted since (a load that began later may have seen a newer row).
    fn fillable(&self, id: i64, epoch: u64) -> bool {
        self.invalidated_at <= epoch && !self.evicted.since(id, epoch)
    }

    /// Caches `value` only if it is [fillable](Self::fillable), and never in
    /// place of an entry already cached: that entry is as current as `value`
    /// and callers may hold it (identity).
    /// The policy may turn the value away at once (it lost its admission
    /// duel): it still counts as filled, and as evicted.
    pub(crate) fn fill_if_epoch(
        &mut self,
        id: i64,
        value: &Arc<T>,
        epoch: u64,
        budget: &Budget,
    ) -> Fill<T> {
        let fillable = self.fillable(id, epoch);
        if !fillable {
            self.counters.stale_fills_dropped += 1;
        }
        if let Some(cached) = self.entries.touch(id) {
            return Fill::Kept(cached);
        }
        if !fillable {
            return Fill::Stale;
        }
        self.counters.fills += 1;
        let evicted = self.entries.insert(id, Arc::clone(value), budget);
        // A tick of its own, so that a write that read the epoch before
        // this fill tells it from one that read it after.
        self.epoch += 1;
        self.filled.record(id, self.epoch);
        Fill::Filled(evicted.map(|(key, value)| {
            self.counters.evictions += 1;
            self.epoch += 1;
            self.evicted.record(key, self.epoch);
            value
        }))
    }

    /// Removes `id`, detaches its in-progress load and moves the epoch, all under
    /// the one lock the caller holds, so no load that began earlier can fill.
    pub(crate) fn invalidate(&mut self, id: i64) -> Removed<T> {
        self.flights.remove(&id);
        self.epoch += 1;
        self.invalidated_at = self.epoch;
        self.counters.invalidations += 1;
        Removed {
            _invalidated: self.entries.remove(id),
            ..Removed::nothing()
        }
    }

    /// Applies a committed write: the key is invalidated, and its new value (if
    /// any) is cached only when nothing else invalidated this shard, and no
    /// load filled the key, since the write read `epoch_at_write`.
    pub(crate) fn apply_write(
        &mut self,
        id: i64,
        value: Option<&Arc<T>>,
        epoch_at_write: u64,
        budget: &Budget,
    ) -> Removed<T> {
        // Evictions since do not matter: the write's row is newer than any
        // a load could have read before its commit. A fill since does: its
        // load may have read a later writer's commit of the row.
        let untouched_since_write =
            self.invalidated_at <= epoch_at_write && !self.filled.since(id, epoch_at_write);
        let mut removed = self.invalidate(id);
        if let (true, Some(value)) = (untouched_since_write, value) {
            let epoch = self.epoch;
            if let Fill::Filled(evicted) = self.fill_if_epoch(id, value, epoch, budget) {
                removed._evicted = evicted;
            }
        }
        removed
    }

    /// Returns the cached entry for `id` if there is one, else caches `value`;
    /// `value` was loaded by a query that began at shard epoch `epoch`.
    /// The second value returned is what the fill evicted, or `value` itself
    /// when the cached entry was kept: either is the caller's to drop after
    /// the lock.
    pub(crate) fn intern(
        &mut self,
        id: i64,
        value: Arc<T>,
        epoch: u64,
        budget: &Budget,
    ) -> (Arc<T>, Removed<T>) {
        match self.fill_if_epoch(id, &value, epoch, budget) {
            Fill::Kept(cached) => {
                let removed = Removed {
                    _unused: Some(value),
                    ..Removed::nothing()
                };
                (cached, removed)
            }
            Fill::Filled(evicted) => {
                let removed = Removed {
                    _evicted: evicted,
                    ..Removed::nothing()
                };
                (value, removed)
            }
            Fill::Stale => (value, Removed::nothing()),
        }
    }

    /// Empties the shard: puts `empty` (made by [`Entries::empty_regions`]
    /// before the lock was taken) in place of the entries and returns the old
    /// ones, so that neither allocating nor freeing them happens under the lock.
    pub(crate) fn clear(&mut self, empty: Cleared<T>, budget: &Budget) -> Cleared<T> {
        self.counters.invalidations += self.entries.len() as u64;
        self.flights.clear();
        self.epoch += 1;
        self.invalidated_at = self.epoch;
        self.entries.clear(empty, budget)
    }

    pub(crate) fn peek(&self, id: i64) -> Option<Arc<T>> {
        self.entries.peek(id).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Units of the shared budget this shard holds (entries and reserved units).
    #[cfg(test)]
    pub(crate) fn units(&self) -> usize {
        self.entries.units()
    }
}
