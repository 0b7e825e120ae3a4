//! One shard of an identity map: an LRU of immutable entries, the shard's
//! invalidation epoch, its in-progress loads and its counters. Every method here
//! is in-memory work done by a caller that holds the shard lock.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;

use super::flight::Flight;
use super::stats::CacheStats;

pub(crate) struct Shard<T> {
    entries: LruCache<i64, Arc<T>>,
    /// Bumped by every invalidation; a load that saw another epoch is not filled.
    epoch: u64,
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

impl<T> Shard<T> {
    pub(crate) fn new(capacity: NonZeroUsize) -> Shard<T> {
        Shard {
            entries: LruCache::new(capacity),
            epoch: 0,
            flights: HashMap::new(),
            counters: CacheStats {
                capacity: capacity.get() as u64,
                ..CacheStats::default()
            },
        }
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(crate) fn lookup(&mut self, id: i64) -> Lookup<T> {
        if let Some(value) = self.entries.get(&id) {
            self.counters.hits += 1;
            return Lookup::Hit(Arc::clone(value));
        }
        self.counters.misses += 1;
        if let Some(flight) = self.flights.get(&id) {
            return Lookup::Wait(Arc::clone(flight));
        }
        self.counters.loads += 1;
        let flight = Flight::new(self.epoch);
        self.flights.insert(id, Arc::clone(&flight));
        Lookup::Lead(flight)
    }

    /// Ends `flight` for `id` and fills `value` unless an invalidation happened
    /// since the flight began; returns whether it filled.
    pub(crate) fn finish_flight(
        &mut self,
        id: i64,
        flight: &Arc<Flight<T>>,
        value: Option<&Arc<T>>,
    ) -> bool {
        // An invalidation may already have removed this flight and a newer one
        // may stand in its place: only remove our own.
        if self
            .flights
            .get(&id)
            .is_some_and(|f| Arc::ptr_eq(f, flight))
        {
            self.flights.remove(&id);
        }
        value.is_some_and(|value| self.fill_if_epoch(id, value, flight.epoch))
    }

    /// Caches `value` only if no invalidation happened since `epoch` was read.
    pub(crate) fn fill_if_epoch(&mut self, id: i64, value: &Arc<T>, epoch: u64) -> bool {
        if self.epoch != epoch {
            self.counters.stale_fills_dropped += 1;
            return false;
        }
        self.counters.fills += 1;
        if let Some((evicted, _)) = self.entries.push(id, Arc::clone(value)) {
            if evicted != id {
                self.counters.evictions += 1;
            }
        }
        true
    }

    /// Removes `id`, detaches its in-progress load and moves the epoch, all under
    /// the one lock the caller holds, so no load that began earlier can fill.
    pub(crate) fn invalidate(&mut self, id: i64) {
        self.entries.pop(&id);
        self.flights.remove(&id);
        self.epoch += 1;
        self.counters.invalidations += 1;
    }

    /// Applies a committed write: the key is invalidated, and its new value (if
    /// any) is cached only when nothing else invalidated this shard since the
    /// write read `epoch_at_write`.
    pub(crate) fn apply_write(&mut self, id: i64, value: Option<&Arc<T>>, epoch_at_write: u64) {
        let untouched_since_write = self.epoch == epoch_at_write;
        self.invalidate(id);
        if let (true, Some(value)) = (untouched_since_write, value) {
            let epoch = self.epoch;
            self.fill_if_epoch(id, value, epoch);
        }
    }

    /// Returns the cached entry for `id` if there is one, else caches `value`;
    /// `value` was loaded by a query that began at shard epoch `epoch`.
    pub(crate) fn intern(&mut self, id: i64, value: Arc<T>, epoch: u64) -> Arc<T> {
        if self.epoch != epoch {
            return value;
        }
        if let Some(cached) = self.entries.get(&id) {
            return Arc::clone(cached);
        }
        self.fill_if_epoch(id, &value, epoch);
        value
    }

    pub(crate) fn clear(&mut self) {
        self.counters.invalidations += self.entries.len() as u64;
        self.entries.clear();
        self.flights.clear();
        self.epoch += 1;
    }

    pub(crate) fn peek(&self, id: i64) -> Option<Arc<T>> {
        self.entries.peek(&id).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}
