//! Which entries a shard keeps: W-TinyLFU (as Caffeine does) over three
//! `lru::LruCache`s, under a capacity that all shards of a map share.
//!
//! A new entry always enters a small *window* LRU (about 1% of the capacity),
//! so that a key read twice in quick succession is served the second time
//! whatever its history. When the window overflows and the map has no budget
//! left, the window's least recent entry (the candidate) duels the main
//! region's victim, and the one the [`Sketch`] has seen more often stays.
//! The main region is a segmented LRU: entries arrive in *probation* and move
//! to *protected* (80% of the capacity) when read again, so victims are taken
//! from entries not read since their admission, and a hot entry that was not
//! read for a moment is not thrown out for a newcomer. A one-off scan of every
//! row passes through the window and loses its duels, leaving the hot set as
//! it was.
//!
//! The policy only decides which of two entries a fill displaces; an
//! invalidation removes its key whatever the policy thinks of it (see
//! [`Entries::remove`]), so no admission decision can keep a stale value.
//!
//! Measured on the workload (seeded, `hit_ratio.rs`): 0.7425 against
//! 0.761 for the oracle that keeps exactly the 10,000 most popular keys, 0.695
//! for plain LRU; moka 0.12 gets 0.727 on the same key sequence.
//!
//! A hit in protected (where hot keys live) costs one hash probe, the node's
//! move to the front and the sketch update; the other regions are probed out
//! of line. In the criterion bench a hit costs about 2.4× a bare
//! `Mutex<LruCache>` get (106 / 44 ns, medians of five interleaved rounds):
//! 421 instructions against 78 (callgrind), of which the sketch update is
//! about 130, and a cache miss or two more (docs/benchmarks.md, the hit path).

use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;

use super::sketch::Sketch;
use crate::sync::AtomicUsize;
use std::sync::atomic::Ordering;

/// One LRU region of a shard, most recently used first.
pub(crate) type Region<T> = LruCache<i64, Arc<T>>;

/// The window's share of a map's capacity, in percent.
const WINDOW_PERCENT: usize = 1;
/// The protected part of the main region, in percent of the capacity.
const PROTECTED_PERCENT: usize = 80;

/// The entries all shards of one map may hold together. Shards take a unit
/// for each entry they add and give it back for each entry they drop, so the
/// map fills to its capacity however unevenly hot keys spread over shards,
/// and never holds more: the count is exact (no slack), because a unit is
/// taken by one atomic read-modify-write that fails at the capacity. Only
/// inserts and removals touch it, never a hit.
pub(crate) struct Budget {
    capacity: usize,
    used: AtomicUsize,
}

impl Budget {
    pub(crate) fn new(capacity: usize) -> Budget {
        Budget {
            capacity,
            used: AtomicUsize::new(0),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Takes one unit; false when the map is at its capacity.
    fn try_take(&self) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used < self.capacity).then_some(used + 1)
            })
            .is_ok()
    }

    fn give_back(&self, units: usize) {
        if units > 0 {
            self.used.fetch_sub(units, Ordering::Relaxed);
        }
    }

    /// Entries held by all shards together.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// A shard's entries: the window, the main region (probation and protected)
/// and the frequency sketch.
pub(crate) struct Entries<T> {
    window: Region<T>,
    /// Main entries not read since they were admitted: the victims come from here.
    probation: Region<T>,
    /// Main entries read again after their admission.
    protected: Region<T>,
    window_capacity: usize,
    protected_capacity: usize,
    /// Units of the budget this shard holds for keys it invalidated: their
    /// next fill (or any other fill of this shard) takes one back. Keeping
    /// them stops shards' sizes from drifting apart, one invalidation at a
    /// time, as other shards' misses would otherwise take them.
    reserved: usize,
    /// The most entries probation held since its table was last fitted.
    probation_peak: usize,
    sketch: Sketch,
}

/// What [`Entries::clear`] took out, to be dropped after the shard lock.
pub(crate) type Cleared<T> = [Region<T>; 3];

impl<T> Entries<T> {
    /// The entries of one of `shards` shards of a map of `capacity` entries.
    pub(crate) fn new(capacity: usize, shards: usize) -> Entries<T> {
        let share = capacity.div_ceil(shards.max(1));
        Entries {
            window: LruCache::unbounded(),
            probation: LruCache::unbounded(),
            protected: LruCache::unbounded(),
            window_capacity: (share * WINDOW_PERCENT / 100).max(1),
            protected_capacity: share * PROTECTED_PERCENT / 100,
            reserved: 0,
            probation_peak: 0,
            sketch: Sketch::new(share),
        }
    }

    /// Empty regions, made before a flush takes the shard lock so that
    /// neither allocating nor freeing happens under it.
    pub(crate) fn empty_regions() -> Cleared<T> {
        [
            LruCache::unbounded(),
            LruCache::unbounded(),
            LruCache::unbounded(),
        ]
    }

    /// The cached value of `id`, counted as an access (hit or miss) of `id`
    /// and moved to the front of its region.
    pub(crate) fn get(&mut self, id: i64) -> Option<Arc<T>> {
        self.sketch.increment(id);
        self.touch(id)
    }

    /// The cached value of `id`, moved to the front of its region (from
    /// probation to protected), without counting an access. The value comes
    /// back owned: a borrowed one would keep `protected` borrowed on the
    /// paths that miss it, and the lookup would have to hash twice.
    #[inline]
    pub(crate) fn touch(&mut self, id: i64) -> Option<Arc<T>> {
        // Protected first: it holds the hot keys, so most hits probe one table.
        if let Some(value) = self.protected.get(&id) {
            return Some(Arc::clone(value));
        }
        self.touch_unprotected(id)
    }

    /// [`touch`](Self::touch) of a key not in protected: out of line, so that
    /// a hit in protected runs only the few instructions above.
    #[cold]
    #[inline(never)]
    fn touch_unprotected(&mut self, id: i64) -> Option<Arc<T>> {
        if let Some(value) = self.probation.pop(&id) {
            self.protect(id, value);
            // Protected may have sent it straight back (a share of one entry).
            return self.peek(id).cloned();
        }
        self.window.get(&id).cloned()
    }

    /// Every entry enters probation here, so that its peak is known.
    fn push_probation(&mut self, id: i64, value: Arc<T>) {
        self.probation.push(id, value);
        self.probation_peak = self.probation_peak.max(self.probation.len());
    }

    /// Fits probation's table to its entries once they fell to a quarter of
    /// their peak. While a map fills, every entry passes through probation,
    /// so its table grows to the shard's whole share; the hot entries then
    /// move on to protected, and without this the map kept a second table
    /// of that size, mostly empty. lru's only way to shrink its table is a
    /// change of capacity (which regions, unbounded, never use otherwise).
    /// The refit rehashes at most a quarter of the peak's entries under the
    /// shard lock, as a table's growth does, about once per fill.
    fn fit_probation(&mut self) {
        const SMALLEST_PEAK: usize = 64;
        if self.probation_peak < SMALLEST_PEAK || self.probation.len() * 4 > self.probation_peak {
            return;
        }
        let toggled = if self.probation.cap() == NonZeroUsize::MAX {
            NonZeroUsize::new(usize::MAX - 1)
        } else {
            Some(NonZeroUsize::MAX)
        };
        if let Some(capacity) = toggled {
            self.probation.resize(capacity);
        }
        self.probation_peak = self.probation.len();
    }

    /// Moves a main entry read again into protected; protected's least
    /// recent entry goes back to probation when protected is over its share.
    fn protect(&mut self, id: i64, value: Arc<T>) {
        self.fit_probation();
        self.protected.push(id, value);
        if self.protected.len() > self.protected_capacity {
            if let Some((old, value)) = self.protected.pop_lru() {
                self.push_probation(old, value);
            }
        }
    }

    pub(crate) fn peek(&self, id: i64) -> Option<&Arc<T>> {
        self.protected
            .peek(&id)
            .or_else(|| self.probation.peek(&id))
            .or_else(|| self.window.peek(&id))
    }

    /// Adds `id`, which is not cached, and returns the entry this pushed out
    /// of the map, if any, with its key: a main victim that lost its duel, or
    /// the candidate that lost it (possibly `id` itself).
    pub(crate) fn insert(
        &mut self,
        id: i64,
        value: Arc<T>,
        budget: &Budget,
    ) -> Option<(i64, Arc<T>)> {
        self.window.push(id, value);
        let paid = if self.reserved > 0 {
            self.reserved -= 1;
            true
        } else {
            budget.try_take()
        };
        if paid && self.window.len() <= self.window_capacity {
            return None;
        }
        let (candidate, value) = self.window.pop_lru()?;
        if paid {
            // The map had room: the candidate moves on to main, no duel.
            self.push_probation(candidate, value);
            return None;
        }
        let victim = self
            .probation
            .peek_lru()
            .or_else(|| self.protected.peek_lru())
            .map(|(&victim, _)| victim);
        let victim_wins = match victim {
            Some(victim) => self.sketch.frequency(candidate) <= self.sketch.frequency(victim),
            None => true,
        };
        if victim_wins {
            return Some((candidate, value));
        }
        let evicted = self
            .probation
            .pop_lru()
            .or_else(|| self.protected.pop_lru());
        self.push_probation(candidate, value);
        evicted
    }

    /// Removes `id` from whichever region holds it, admission aside. The
    /// unit it used stays with this shard (see `reserved`).
    pub(crate) fn remove(&mut self, id: i64) -> Option<Arc<T>> {
        let removed = self
            .protected
            .pop(&id)
            .or_else(|| self.probation.pop(&id))
            .or_else(|| self.window.pop(&id));
        self.reserved += usize::from(removed.is_some());
        removed
    }

    /// Puts `empty` in place of the regions and returns the old ones. The
    /// sketch stays: a flush is about staleness, and which keys are popular
    /// is as true after it as before.
    pub(crate) fn clear(&mut self, empty: Cleared<T>, budget: &Budget) -> Cleared<T> {
        budget.give_back(self.len() + std::mem::take(&mut self.reserved));
        let [window, probation, protected] = empty;
        [
            std::mem::replace(&mut self.window, window),
            std::mem::replace(&mut self.probation, probation),
            std::mem::replace(&mut self.protected, protected),
        ]
    }

    pub(crate) fn len(&self) -> usize {
        self.window.len() + self.probation.len() + self.protected.len()
    }

    /// Units of the budget held: the entries and the reserved units.
    #[cfg(test)]
    pub(crate) fn units(&self) -> usize {
        self.len() + self.reserved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(n: i64) -> Arc<i64> {
        Arc::new(n)
    }

    #[test]
    fn the_budget_is_exact() {
        let budget = Budget::new(2);
        assert!(budget.try_take() && budget.try_take());
        assert!(!budget.try_take(), "a third unit of a budget of two");
        budget.give_back(1);
        assert!(budget.try_take());
        assert_eq!(budget.used(), 2);
    }

    #[test]
    fn a_frequent_candidate_displaces_a_rare_victim() {
        let budget = Budget::new(3);
        let mut entries = Entries::new(3, 1);
        for id in [1, 2, 3] {
            assert!(entries.get(id).is_none());
            assert!(entries.insert(id, value(id), &budget).is_none());
        }
        // Key 9 is asked for often; each miss counts.
        for _ in 0..5 {
            entries.get(9);
        }
        let evicted = entries.insert(9, value(9), &budget);
        // The map is full: the window's oldest, 3 (seen once), duels main's
        // least recent, 1 (seen once), and loses; 9 waits in the window.
        assert_eq!(evicted.map(|(id, _)| id), Some(3));
        // A new key pushes 9 out of the window: seen five times, it beats 1.
        let evicted = entries.insert(10, value(10), &budget);
        assert_eq!(evicted.map(|(id, _)| id), Some(1));
        assert!(entries.peek(9).is_some() && entries.peek(10).is_some());
        assert_eq!(entries.len(), 3);
        assert_eq!(budget.used(), 3);
    }

    #[test]
    fn removal_ignores_the_policy_and_the_shard_keeps_the_unit() {
        let budget = Budget::new(2);
        let mut entries = Entries::new(2, 1);
        for _ in 0..10 {
            entries.get(1);
        }
        entries.insert(1, value(1), &budget);
        assert_eq!(entries.remove(1).as_deref(), Some(&1));
        assert!(entries.peek(1).is_none());
        assert!(entries.remove(1).is_none());
        assert_eq!((entries.len(), entries.units(), budget.used()), (0, 1, 1));
        // The next fill of this shard uses the unit it kept.
        entries.insert(2, value(2), &budget);
        assert_eq!((entries.len(), entries.units(), budget.used()), (1, 1, 1));
        let cleared = entries.clear(Entries::empty_regions(), &budget);
        assert_eq!(cleared.iter().map(Region::len).sum::<usize>(), 1);
        assert_eq!(budget.used(), 0, "a flush returns every unit");
    }

    #[test]
    fn fitting_probation_keeps_its_entries_in_their_order() {
        let budget = Budget::new(200);
        let mut entries = Entries::new(200, 1);
        for id in 0..100 {
            entries.get(id);
            entries.insert(id, value(id), &budget);
        }
        let peak = entries.probation.len();
        assert!(peak >= 64, "probation held {peak}");
        // The first 80 are read again and move on to protected.
        for id in 0..80 {
            assert_eq!(entries.get(id).as_deref(), Some(&id));
        }
        assert_ne!(entries.probation.cap(), NonZeroUsize::MAX, "not fitted");
        assert!(entries.probation_peak < peak);
        let oldest_first: Vec<i64> = entries.probation.iter().rev().map(|(&id, _)| id).collect();
        assert_eq!(
            oldest_first,
            (80..80 + oldest_first.len() as i64).collect::<Vec<_>>()
        );
        assert_eq!(entries.len(), 100);
        assert_eq!(budget.used(), 100);
    }

    #[test]
    fn an_entry_read_again_is_protected_from_duels() {
        let budget = Budget::new(3);
        let mut entries = Entries::new(3, 1);
        for id in [1, 2, 3] {
            entries.get(id);
            entries.insert(id, value(id), &budget);
        }
        // 1 is read again: protected. Probation now holds only 2.
        assert!(entries.get(1).is_some());
        for _ in 0..5 {
            entries.get(9);
        }
        entries.insert(9, value(9), &budget);
        // 9 pushes 3 out of the window; 3 loses to 2, 2 stays. Then 10
        // pushes 9 out: 9 beats probation's 2, not protected 1.
        assert_eq!(
            entries.insert(10, value(10), &budget).map(|(id, _)| id),
            Some(2)
        );
        assert!(entries.peek(1).is_some());
    }
}
