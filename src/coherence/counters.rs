//! The watcher's counters, as [`CoherenceStats`] shows them, and the
//! reasons it flushes for.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Repeated flushes for one reason are logged at WARN at most this often;
/// the next warning says how many were not.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// Why the watcher emptied every cache, in [`CoherenceStats::flushes_by_reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlushReason {
    /// The watcher's checks did not confirm its view of the database within
    /// half of `max_staleness`, although they did not fail: answers came
    /// back too late (an overloaded server, or a watcher starved of CPU).
    Unconfirmed,
    /// A check has been running for longer than half of `max_staleness`
    /// (a dead network path, an unreachable server): flushed by the clock
    /// without waiting for it, and again every half bound until it returns.
    StuckCheck,
    /// The watcher's connection failed, or is still down.
    ConnectionLost,
    /// The PostgreSQL listener reconnected: notifications sent while it was
    /// away are lost.
    ListenerReconnected,
    /// The change log was dropped or recreated, so its ids started over.
    LogRecreated,
    /// There is no change log (larder's migrations have not run).
    NoChangeLog,
    /// A change-log id skipped by an uncommitted transaction was given up
    /// without proof that its transaction rolled back (waited too long, or
    /// too many such ids).
    GapGivenUp,
    /// Change-log rows may have been pruned before this store read them (it
    /// fell behind by minutes, or another process pruned past it).
    FellBehindPruning,
    /// Migrations ran on the database (`Migrator`, `larder migrate`,
    /// `Store::migrate`, `Store::run_migrations`): they may have changed rows
    /// without a trigger firing (a table dropped and re-created, rows
    /// rewritten with the triggers off).
    Migrated,
}

impl FlushReason {
    /// Every reason, in the order [`FlushCounts`] keeps them.
    pub const ALL: [FlushReason; 9] = [
        FlushReason::Unconfirmed,
        FlushReason::StuckCheck,
        FlushReason::ConnectionLost,
        FlushReason::ListenerReconnected,
        FlushReason::LogRecreated,
        FlushReason::NoChangeLog,
        FlushReason::GapGivenUp,
        FlushReason::FellBehindPruning,
        FlushReason::Migrated,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// A short lower-case name, as shown by [`Stats`](crate::Stats)' `Display`.
    pub fn name(self) -> &'static str {
        match self {
            FlushReason::Unconfirmed => "unconfirmed",
            FlushReason::StuckCheck => "stuck check",
            FlushReason::ConnectionLost => "connection lost",
            FlushReason::ListenerReconnected => "listener reconnected",
            FlushReason::LogRecreated => "log recreated",
            FlushReason::NoChangeLog => "no change log",
            FlushReason::GapGivenUp => "gap given up",
            FlushReason::FellBehindPruning => "fell behind pruning",
            FlushReason::Migrated => "migrated",
        }
    }
}

impl fmt::Display for FlushReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Flushes counted by [`FlushReason`].
///
/// ```
/// use larder::{FlushCounts, FlushReason};
///
/// let counts = FlushCounts::default();
/// assert_eq!(counts.get(FlushReason::StuckCheck), 0);
/// assert_eq!(counts.iter().count(), FlushReason::ALL.len());
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushCounts([u64; FlushReason::ALL.len()]);

/// Each count under its reason's name (`{StuckCheck: 3, Migrated: 1, …}`):
/// printing `stats().coherence` with `{:?}` is how the deployment guide
/// shows the flushes by reason, and a bare array tells none apart.
impl fmt::Debug for FlushCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl FlushCounts {
    /// How many flushes had `reason`.
    pub fn get(&self, reason: FlushReason) -> u64 {
        self.0[reason.index()]
    }

    /// Every reason with its count, zeros included.
    pub fn iter(&self) -> impl Iterator<Item = (FlushReason, u64)> + '_ {
        FlushReason::ALL
            .iter()
            .map(|&reason| (reason, self.get(reason)))
    }
}

/// Counters of the watcher, in [`Stats::coherence`](crate::Stats::coherence).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoherenceStats {
    /// Whether this store watches for changes made by other processes.
    pub enabled: bool,
    /// Changes read from the database (this process's own commits included:
    /// they come back too, and invalidating them again is harmless).
    pub changes: u64,
    /// Times every cache was emptied because changes may have been missed,
    /// for any reason: the sum of [`flushes_by_reason`](Self::flushes_by_reason).
    pub flushes: u64,
    /// The flushes by reason.
    pub flushes_by_reason: FlushCounts,
    /// Times the watcher's connection failed (and was dropped).
    pub connection_losses: u64,
    /// Times the watcher connected again after a loss.
    pub reconnects: u64,
}

/// Counters shared between the watcher's threads and `Store::stats`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    changes: AtomicU64,
    flushes: [AtomicU64; FlushReason::ALL.len()],
    losses: AtomicU64,
    reconnects: AtomicU64,
}

impl Counters {
    pub(super) fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn flushed(&self, reason: FlushReason) {
        self.flushes[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn lost(&self) {
        self.losses.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn reconnected(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self, enabled: bool) -> CoherenceStats {
        let mut by_reason = FlushCounts::default();
        for (count, counter) in by_reason.0.iter_mut().zip(&self.flushes) {
            *count = counter.load(Ordering::Relaxed);
        }
        CoherenceStats {
            enabled,
            changes: self.changes.load(Ordering::Relaxed),
            flushes: by_reason.0.iter().sum(),
            flushes_by_reason: by_reason,
            connection_losses: self.losses.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }
}

/// Keeps a watcher that flushes on every tick of an outage from writing a
/// warning on every tick: per reason, one warning per [`WARN_EVERY`], which
/// counts the flushes logged only at DEBUG since the last one.
#[derive(Debug, Default)]
pub(super) struct FlushLog {
    last_warned: [Option<Instant>; FlushReason::ALL.len()],
    quiet: [u64; FlushReason::ALL.len()],
}

impl FlushLog {
    /// Whether this flush gets a warning, and how many went unwarned before it.
    pub(super) fn warn(&mut self, reason: FlushReason, now: Instant) -> Option<u64> {
        let i = reason.index();
        let due = self.last_warned[i].is_none_or(|at| now.duration_since(at) >= WARN_EVERY);
        if !due {
            self.quiet[i] += 1;
            return None;
        }
        self.last_warned[i] = Some(now);
        Some(std::mem::take(&mut self.quiet[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_indexed_in_order() {
        for (i, reason) in FlushReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason}");
        }
    }

    #[test]
    fn flush_counts_debug_names_each_reason() {
        // docs/deployment.md prints `store.stats().coherence` with `{:?}` to
        // show the flushes by reason: a bare array of counts tells none apart.
        let mut counts = FlushCounts::default();
        counts.0[FlushReason::StuckCheck.index()] = 3;
        let shown = format!("{counts:?}");
        assert!(shown.contains("StuckCheck: 3"), "{shown}");
        assert!(shown.contains("Migrated: 0"), "{shown}");
    }

    #[test]
    fn repeated_flushes_warn_once_a_second_and_count_the_rest() {
        let mut log = FlushLog::default();
        let t0 = Instant::now();
        let lost = FlushReason::ConnectionLost;
        assert_eq!(log.warn(lost, t0), Some(0));
        assert_eq!(log.warn(lost, t0 + Duration::from_millis(100)), None);
        assert_eq!(log.warn(lost, t0 + Duration::from_millis(200)), None);
        assert_eq!(
            log.warn(FlushReason::StuckCheck, t0 + Duration::from_millis(300)),
            Some(0),
            "another reason warns at once"
        );
        assert_eq!(log.warn(lost, t0 + WARN_EVERY), Some(2));
    }

    #[test]
    fn stats_add_up_the_reasons() {
        let counters = Counters::default();
        counters.flushed(FlushReason::GapGivenUp);
        counters.flushed(FlushReason::GapGivenUp);
        counters.flushed(FlushReason::StuckCheck);
        let stats = counters.snapshot(true);
        assert_eq!(stats.flushes, 3);
        assert_eq!(stats.flushes_by_reason.get(FlushReason::GapGivenUp), 2);
        assert_eq!(stats.flushes_by_reason.get(FlushReason::Unconfirmed), 0);
        let shown = crate::Stats {
            coherence: stats,
            ..Default::default()
        }
        .to_string();
        assert!(
            shown.contains("3 flushes (1 stuck check, 2 gap given up)"),
            "{shown}"
        );
    }
}
