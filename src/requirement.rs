//! The required position: the primary's WAL position that every change this
//! store has applied an invalidation for is known to lie at or before. A
//! replica may serve a load only once it has replayed up to it.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// A position in the primary's WAL (a `pg_lsn` as a number).
pub(crate) type Lsn = u64;

/// The high-water mark, or "unknown" after an invalidation whose position
/// could not be read (a flush, a failed commit, a user's `invalidate`):
/// every load then goes to the primary until a position read that started
/// after the last such invalidation repairs it.
///
/// A mutex, not an atomic: "unknown" must be repaired only by a read that
/// started after it was set, which an atomic compare-and-swap on the value
/// alone cannot tell apart from an older read (ABA).
#[derive(Debug, Default)]
pub(crate) struct Requirement {
    /// Only a store with replicas pays for position reads.
    enabled: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// `None` while unknown.
    lsn: Option<Lsn>,
    /// How many times it became unknown: what a [`Ticket`] compares.
    forgotten: u64,
}

/// Taken before a position read starts; says whether the read may repair an
/// unknown requirement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

impl Requirement {
    /// Turns position tracking on (a store built with replicas).
    pub(crate) fn enable(&self) {
        self.enabled.store(true, Ordering::SeqCst);
    }

    /// Whether this store routes reads to replicas at all.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The position a replica must have replayed, `None` when unknown.
    pub(crate) fn get(&self) -> Option<Lsn> {
        self.state.lock().lsn
    }

    /// Take before sending the query whose answer goes to [`raise`](Requirement::raise).
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket(self.state.lock().forgotten)
    }

    /// Raises the requirement to `lsn`, a primary position read after the
    /// changes about to be invalidated had committed. Call it BEFORE the
    /// invalidation: a load that starts after the invalidation then sees it.
    /// Repairs an unknown requirement only when nothing was forgotten since
    /// `ticket` was taken (the read started after every such moment).
    pub(crate) fn raise(&self, lsn: Lsn, ticket: Ticket) {
        let mut state = self.state.lock();
        match state.lsn {
            Some(old) => state.lsn = Some(old.max(lsn)),
            None if state.forgotten == ticket.0 => state.lsn = Some(lsn),
            None => {}
        }
    }

    /// Sets an unknown requirement to `lsn` when the read started after the
    /// last forget (as [`raise`](Requirement::raise)); leaves a known one
    /// alone, so that the watcher's heartbeats do not raise it for nothing.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))] // the listener's
    pub(crate) fn repair(&self, lsn: Lsn, ticket: Ticket) {
        let mut state = self.state.lock();
        if state.lsn.is_none() && state.forgotten == ticket.0 {
            state.lsn = Some(lsn);
        }
    }

    /// Makes the requirement unknown. Call it BEFORE an invalidation whose
    /// position is not known.
    pub(crate) fn forget(&self) {
        if !self.enabled() {
            return;
        }
        let mut state = self.state.lock();
        state.lsn = None;
        state.forgotten += 1;
    }
}

/// Parses PostgreSQL's text form of a `pg_lsn`, `"16/B374D848"`.
pub(crate) fn parse_lsn(text: &str) -> Option<Lsn> {
    let (high, low) = text.trim().split_once('/')?;
    let high = u32::from_str_radix(high, 16).ok()?;
    let low = u32::from_str_radix(low, 16).ok()?;
    Some((u64::from(high) << 32) | u64::from(low))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> Requirement {
        let requirement = Requirement::default();
        requirement.enable();
        requirement
    }

    #[test]
    fn lsns_parse_or_are_refused() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn(" 1/0\n"), Some(1 << 32));
        for bad in ["", "0", "x/1", "1/", "/1", "100000000/0"] {
            assert_eq!(parse_lsn(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn it_only_rises() {
        let requirement = enabled();
        requirement.raise(10, requirement.ticket());
        requirement.raise(5, requirement.ticket());
        assert_eq!(requirement.get(), Some(10));
    }

    #[test]
    fn only_a_read_started_after_the_last_forget_repairs_it() {
        let requirement = enabled();
        let early = requirement.ticket();
        requirement.forget();
        requirement.raise(7, early);
        assert_eq!(requirement.get(), None, "a read older than the forget");
        let late = requirement.ticket();
        requirement.raise(9, late);
        assert_eq!(requirement.get(), Some(9));
        // A read started before a forget that someone else already repaired
        // may still raise: raising is always safe.
        requirement.raise(12, early);
        assert_eq!(requirement.get(), Some(12));
    }

    #[test]
    fn a_repair_leaves_a_known_requirement_alone() {
        let requirement = enabled();
        requirement.raise(4, requirement.ticket());
        requirement.repair(40, requirement.ticket());
        assert_eq!(requirement.get(), Some(4));
        let early = requirement.ticket();
        requirement.forget();
        requirement.repair(41, early);
        assert_eq!(requirement.get(), None);
        requirement.repair(42, requirement.ticket());
        assert_eq!(requirement.get(), Some(42));
    }

    #[test]
    fn a_store_without_replicas_never_forgets() {
        let requirement = Requirement::default();
        requirement.raise(3, requirement.ticket());
        requirement.forget();
        assert_eq!(requirement.get(), Some(3));
    }
}
