//! Counters a cache keeps about itself, and their public snapshot.

use std::ops::AddAssign;

/// A snapshot of one entity's cache counters.
///
/// ```
/// let stats = larder::CacheStats::default();
/// assert_eq!(stats.hit_ratio(), 0.0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// `get` calls answered from the cache.
    pub hits: u64,
    /// `get` calls that found nothing cached.
    pub misses: u64,
    /// Database loads made for misses (concurrent misses of one key share one load).
    pub loads: u64,
    /// Loaded or written values put into the cache.
    pub fills: u64,
    /// Loaded values dropped because the key was invalidated while they loaded.
    pub stale_fills_dropped: u64,
    /// Keys invalidated by writes (present in the cache or not).
    pub invalidations: u64,
    /// Entries pushed out by the capacity bound.
    pub evictions: u64,
    /// Entries cached now.
    pub entries: u64,
    /// The configured capacity in entries.
    pub capacity: u64,
}

impl CacheStats {
    /// Hits divided by lookups, or 0 when nothing was looked up.
    pub fn hit_ratio(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }
}

impl AddAssign for CacheStats {
    fn add_assign(&mut self, other: CacheStats) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.loads += other.loads;
        self.fills += other.fills;
        self.stale_fills_dropped += other.stale_fills_dropped;
        self.invalidations += other.invalidations;
        self.evictions += other.evictions;
        self.entries += other.entries;
        self.capacity += other.capacity;
    }
}
