//! A snapshot of what a store's caches and pool are doing.

use std::collections::BTreeMap;
use std::fmt;

use crate::cache::CacheStats;
use crate::coherence::CoherenceStats;
use crate::replica::ReplicaStats;

/// Connections the pool holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolState {
    /// Connections open, idle or checked out.
    pub connections: u32,
    /// Connections idle in the pool.
    pub idle: u32,
}

/// Per-entity cache statistics and the pool's state, from [`Store::stats`](crate::Store::stats).
///
/// `Display` prints a table.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Cache counters by table name.
    pub entities: BTreeMap<&'static str, CacheStats>,
    /// The query cache's counters (cached list results).
    pub queries: CacheStats,
    /// The pool's connections.
    pub pool: PoolState,
    /// Changes from other processes and the watcher's health.
    pub coherence: CoherenceStats,
    /// How loads were shared between the primary and its replicas.
    pub replicas: ReplicaStats,
}

impl Stats {
    /// The counters of `table` (all zero when it is not cached).
    pub fn entity(&self, table: &str) -> CacheStats {
        self.entities.get(table).copied().unwrap_or_default()
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<10} {:>8} {:>8} {:>7} {:>7} {:>7} {:>6} {:>7} {:>9} {:>8}",
            "entity",
            "hits",
            "misses",
            "hit%",
            "loads",
            "fills",
            "stale",
            "invals",
            "evictions",
            "entries"
        )?;
        for (table, s) in &self.entities {
            writeln!(
                f,
                "{:<10} {:>8} {:>8} {:>6.1}% {:>7} {:>7} {:>6} {:>7} {:>9} {:>8}",
                table,
                s.hits,
                s.misses,
                s.hit_ratio() * 100.0,
                s.loads,
                s.fills,
                s.stale_fills_dropped,
                s.invalidations,
                s.evictions,
                s.entries
            )?;
        }
        let q = &self.queries;
        writeln!(
            f,
            "{:<10} {:>8} {:>8} {:>6.1}% {:>7} {:>7} {:>6} {:>7} {:>9} {:>8}",
            "(lists)",
            q.hits,
            q.misses,
            q.hit_ratio() * 100.0,
            q.misses,
            q.fills,
            q.stale_fills_dropped,
            "-",
            q.evictions,
            q.entries
        )?;
        writeln!(
            f,
            "pool: {} connections, {} idle",
            self.pool.connections, self.pool.idle
        )?;
        let r = &self.replicas;
        if r.replicas > 0 {
            writeln!(
                f,
                "replicas: {} loads on {} replicas ({:.1}%), {} on the primary; skipped {} lagging, \
                 {} down; {} position checks",
                r.replica_loads,
                r.replicas,
                r.replica_share() * 100.0,
                r.primary_loads,
                r.skipped_lagging,
                r.skipped_down,
                r.position_checks
            )?;
        }
        let c = &self.coherence;
        if !c.enabled {
            return write!(f, "coherence: off");
        }
        write!(
            f,
            "coherence: {} changes read, {} flushes",
            c.changes, c.flushes
        )?;
        let reasons: Vec<String> = c
            .flushes_by_reason
            .iter()
            .filter(|&(_, n)| n > 0)
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        if !reasons.is_empty() {
            write!(f, " ({})", reasons.join(", "))?;
        }
        write!(
            f,
            ", {} connection losses, {} reconnects",
            c.connection_losses, c.reconnects
        )
    }
}
