//! The keys a cache pushed out lately (an identity map's shard, whose
//! admission policy evicts; the query cache, an LRU), each with the cache's
//! epoch or eviction count right after it left, so that a load of such a key
//! that began before it left cannot fill.
//!
//! Why: two loads of one key need not share a flight (a list query interns
//! its rows without one), so an older load may still be reading while a
//! newer one, which saw a commit whose invalidation is still on its way,
//! fills its key. The older load's fill is refused while the newer entry is
//! cached ([`Fill::Kept`](super::shard::Fill::Kept)), and after an
//! invalidation by the epoch; once the policy has evicted the newer entry,
//! only this record stops the older row from taking its place and sending a
//! caller already served the newer row back in time.

/// How many evictions an identity map's shard remembers. Loads take a
/// database round trip; a shard sees only a few evictions in that time, so a
/// load is refused for lack of memory (see [`RecentEvictions::forgotten`])
/// only under heavy churn. One such case is a list query whose rows evict
/// more than this many keys of one shard of a full map: the rest of its rows
/// in that shard are returned but not cached, as the admission policy would
/// mostly have done with a scan's rows anyway. The query cache, one map for
/// every query, keeps more.
pub(crate) const SHARD_REMEMBERS: usize = 16;

/// A fixed ring of the latest `N` evictions: recording one allocates
/// nothing (it runs under the cache's lock).
pub(crate) struct RecentEvictions<const N: usize = SHARD_REMEMBERS> {
    slots: [(i64, u64); N],
    next: usize,
    /// The latest epoch of an eviction the ring no longer holds: a load that
    /// began before it may have been overtaken by that key, and fills nothing.
    forgotten: u64,
}

impl<const N: usize> RecentEvictions<N> {
    pub(crate) fn new() -> RecentEvictions<N> {
        RecentEvictions {
            slots: [(0, 0); N],
            next: 0,
            forgotten: 0,
        }
    }

    /// `id` left the shard; `epoch` is the shard's epoch right after.
    pub(crate) fn record(&mut self, id: i64, epoch: u64) {
        let slot = &mut self.slots[self.next];
        self.forgotten = self.forgotten.max(slot.1);
        *slot = (id, epoch);
        self.next = (self.next + 1) % N;
    }

    /// Whether `id` may have left the shard after a load that began at epoch `began`.
    pub(crate) fn since(&self, id: i64, began: u64) -> bool {
        self.forgotten > began
            || self
                .slots
                .iter()
                .any(|&(key, left)| key == id && left > began)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eviction_refuses_only_older_loads_of_its_key() {
        let mut recent: RecentEvictions = RecentEvictions::new();
        recent.record(7, 5);
        assert!(recent.since(7, 4), "a load that began before the eviction");
        assert!(!recent.since(7, 5), "a load that began after it");
        assert!(!recent.since(8, 4), "another key");
    }

    #[test]
    fn a_forgotten_eviction_refuses_every_older_load() {
        let mut recent: RecentEvictions = RecentEvictions::new();
        for n in 0..=SHARD_REMEMBERS as u64 {
            recent.record(100 + n as i64, n + 1);
        }
        // Key 100 (left at epoch 1) fell out of the ring: no load that began
        // before epoch 1 may fill, whatever its key; later ones may.
        assert!(recent.since(100, 0) && recent.since(5, 0));
        assert!(!recent.since(5, 1));
    }
}
