//! Where a change-log reader stands: the highest id read, the ids skipped
//! below it (gaps), and what is known of the transactions that may hold them.
//!
//! On MySQL a transaction takes its log id when it writes and may commit after
//! a later id did, or roll back and leave its id unused for good. A gap is
//! read again on every poll until its row appears. It is settled without a
//! row only on proof that the transaction holding it has ended: the row is
//! then there or never will be. Proof comes from snapshots of the open
//! transactions (MySQL) or from commits being serialized (SQLite). A gap given
//! up without proof, or one that may have been pruned before it was read,
//! asks for a flush. A gap given up may still commit after that flush, so
//! each give-up also asks for a second flush once every transaction open
//! after it has ended (or, with no way to know, after [`GAP_TIMEOUT`] more).
//! Ids below the window watched at the start are not: see `poll::end`.
//! Everything here is bookkeeping, without I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::FlushReason;

/// How long a gap waits for proof before it is given up (with a flush).
pub(super) const GAP_TIMEOUT: Duration = Duration::from_secs(300);
/// Most gaps remembered; beyond it the oldest are given up (with a flush).
pub(super) const MAX_GAPS: usize = 10_000;

/// Database transaction ids (InnoDB `trx_id`).
pub(super) type Transactions = BTreeSet<u64>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// Recorded after the last snapshot of open transactions.
    Unwatched,
    /// Its transaction, if it was still open, is in this snapshot.
    Snapshot(u64),
    /// Its transaction has ended: the next read finds its row or proves
    /// there is none.
    Ended,
}

#[derive(Debug, Clone, Copy)]
struct Gap {
    since: Instant,
    watch: Watch,
}

/// The reader's position in the change log.
#[derive(Debug, Default)]
pub(super) struct Cursor {
    /// Every id up to here has been read, except the gaps.
    last: i64,
    gaps: BTreeMap<i64, Gap>,
    /// Gaps given up (with a flush) whose transactions may still be open and
    /// commit after it: one entry per give-up, watched like a gap, asking for
    /// a second flush once its transactions have ended.
    given_up: Vec<Gap>,
    /// Open transactions when each snapshot was taken, by sequence number.
    snapshots: BTreeMap<u64, Transactions>,
    next_snapshot: u64,
    /// The log's oldest id when [`behind`](Cursor::behind) last asked for a
    /// flush: the watched ids below it have been flushed for once, and
    /// their end, read or unread, is settled like any gap's.
    flushed_below: i64,
    /// When the last snapshot of open transactions came, or the last flush
    /// of give-ups that waited a timeout without one: InnoDB serves the list
    /// stale for as long as others read it more often than every 100 ms.
    proven_at: Option<Instant>,
}

impl Cursor {
    /// A reader starting after `last` with nothing skipped.
    pub(super) fn new(last: i64) -> Cursor {
        Cursor {
            last,
            ..Cursor::default()
        }
    }

    /// A reader starting at the log's end `last`, where the ids in
    /// `(low, last]` that are not `present` may belong to transactions still
    /// open: they are gaps, read when they commit.
    pub(super) fn at_end(last: i64, low: i64, present: &[i64], now: Instant) -> Cursor {
        let mut cursor = Cursor::new(last);
        let present: BTreeSet<i64> = present.iter().copied().collect();
        let missing = (low.max(0) + 1..last).filter(|id| !present.contains(id));
        cursor.gaps.extend(missing.map(|id| (id, Gap::new(now))));
        cursor
    }

    pub(super) fn last(&self) -> i64 {
        self.last
    }

    /// The gap ids, to read again.
    pub(super) fn gaps(&self) -> Vec<i64> {
        self.gaps.keys().copied().collect()
    }

    /// The lowest id not read yet: pruning must stay below it.
    pub(super) fn first_unread(&self) -> i64 {
        self.gaps.keys().next().copied().unwrap_or(self.last + 1)
    }

    /// Row `id` was read: a gap filled, or a new high-water mark with the
    /// ids skipped on the way remembered as gaps. Asks for a flush when more
    /// than [`MAX_GAPS`] would be remembered: the oldest are given up.
    pub(super) fn read(&mut self, id: i64, now: Instant) -> Option<FlushReason> {
        if self.gaps.remove(&id).is_some() || id <= self.last {
            return None;
        }
        let low = (self.last + 1).max(id.saturating_sub(MAX_GAPS as i64));
        let mut given_up = low > self.last + 1;
        self.gaps
            .extend((low..id).map(|skipped| (skipped, Gap::new(now))));
        self.last = id;
        while self.gaps.len() > MAX_GAPS {
            self.gaps.pop_first();
            given_up = true;
        }
        self.forget_unused_snapshots();
        self.gave_up(given_up, now)
    }

    /// After gaps were given up (if `given_up`): asks for the flush now, and
    /// watches for the end of the transactions that may hold them.
    fn gave_up(&mut self, given_up: bool, now: Instant) -> Option<FlushReason> {
        if !given_up {
            return None;
        }
        // One not watched yet stands for this one too (the snapshot that
        // will watch it is taken after both), its clock restarted: a give-up
        // every poll through a long bulk write keeps one entry, not thousands.
        match self.given_up.last_mut() {
            Some(last) if last.watch == Watch::Unwatched => last.since = now,
            _ => self.given_up.push(Gap::new(now)),
        }
        Some(FlushReason::GapGivenUp)
    }

    /// Whether some gap, or some give-up, still waits for its transactions to end.
    pub(super) fn watching(&self) -> bool {
        self.gaps.values().any(|gap| gap.watch != Watch::Ended) || !self.given_up.is_empty()
    }

    /// `open`: the transactions open now, as seen after every read so far.
    /// Gaps recorded since the last snapshot get this one; every snapshot
    /// none of whose transactions is still open has ended, and its gaps with
    /// it (a transaction open at an earlier snapshot and still open now is
    /// in every later one, so no gap is settled too early).
    /// Asks for the second flush of a give-up whose transactions have all
    /// ended: any of its ids that committed after the first did so before now.
    pub(super) fn open_transactions(
        &mut self,
        open: &Transactions,
        now: Instant,
    ) -> Option<FlushReason> {
        self.proven_at = Some(now);
        let watched = self.gaps.values_mut().chain(&mut self.given_up);
        let unwatched: Vec<&mut Gap> = watched
            .filter(|gap| gap.watch == Watch::Unwatched)
            .collect();
        if !unwatched.is_empty() {
            let seq = self.next_snapshot;
            self.next_snapshot += 1;
            self.snapshots.insert(seq, open.clone());
            for gap in unwatched {
                gap.watch = Watch::Snapshot(seq);
            }
        }
        let ended: Vec<u64> = self
            .snapshots
            .iter()
            .filter(|(_, then)| then.is_disjoint(open))
            .map(|(&seq, _)| seq)
            .collect();
        for seq in ended {
            self.snapshots.remove(&seq);
            for gap in self.gaps.values_mut().chain(&mut self.given_up) {
                if gap.watch == Watch::Snapshot(seq) {
                    gap.watch = Watch::Ended;
                }
            }
        }
        let before = self.given_up.len();
        self.given_up.retain(|gap| gap.watch != Watch::Ended);
        (self.given_up.len() < before).then_some(FlushReason::GapGivenUp)
    }

    /// Commits are serialized (SQLite): an id missing below one that was
    /// read will never appear, so every gap is final as of the read that
    /// recorded it.
    pub(super) fn all_ended(&mut self) {
        for gap in self.gaps.values_mut() {
            gap.watch = Watch::Ended;
        }
        self.given_up.clear();
        self.snapshots.clear();
    }

    /// Whether [`settle`](Cursor::settle) has work (and needs the log's oldest id).
    pub(super) fn has_ended(&self) -> bool {
        self.gaps.values().any(|gap| gap.watch == Watch::Ended)
    }

    /// After a read that followed the proof: ended gaps it did not find had
    /// their transactions roll back, and are dropped. One below `oldest`
    /// (the log's lowest id, `None` when it is empty) may have been pruned
    /// before it was read: asks for a flush.
    pub(super) fn settle(&mut self, oldest: Option<i64>) -> Option<FlushReason> {
        let mut pruned = false;
        self.gaps.retain(|&id, gap| {
            if gap.watch != Watch::Ended {
                return true;
            }
            pruned |= oldest.is_none_or(|oldest| id < oldest);
            false
        });
        pruned.then_some(FlushReason::FellBehindPruning)
    }

    /// Gives up gaps that waited [`GAP_TIMEOUT`] for proof; asks for a flush
    /// if there were any. `provable`: proof of ended transactions can come
    /// (snapshots); without it, a give-up's second flush comes after another
    /// [`GAP_TIMEOUT`] instead, which covers what commits within it.
    pub(super) fn expire(&mut self, now: Instant, provable: bool) -> Option<FlushReason> {
        let old = |gap: &Gap| now.duration_since(gap.since) >= GAP_TIMEOUT;
        let before = (self.gaps.len(), self.given_up.len());
        self.gaps.retain(|_, gap| !old(gap));
        if !provable {
            self.given_up.retain(|gap| !old(gap));
        }
        let expired_gaps = self.gaps.len() < before.0;
        let expired_give_ups = self.given_up.len() < before.1 || self.unproven(now, provable);
        self.forget_unused_snapshots();
        self.gave_up(expired_gaps, now)
            .or(expired_give_ups.then_some(FlushReason::GapGivenUp))
    }

    /// With proof possible, whether give-ups have waited a timeout without
    /// any snapshot coming (nor such a flush): InnoDB's list kept stale by
    /// other readers. A transaction holding their ids may have committed
    /// after the last flush, unread: flushes again, once each timeout, and
    /// keeps waiting for the proof.
    fn unproven(&mut self, now: Instant, provable: bool) -> bool {
        let newest = self.given_up.iter().map(|gap| gap.since).max();
        let Some(since) = newest.filter(|_| provable) else {
            return false;
        };
        let since = self.proven_at.map_or(since, |proven| proven.max(since));
        if now.saturating_duration_since(since) < GAP_TIMEOUT {
            return false;
        }
        self.proven_at = Some(now);
        true
    }

    /// The log's lowest id is `oldest` (`None`: the log is empty). Ids
    /// below it that were not read may have been pruned unread: asks for a
    /// flush, which covers them, once for each id found below it (not again
    /// at every look while the id stays watched). An id below it that may still be held by
    /// an open transaction stays watched, though: an open transaction's id
    /// can lie below every committed row (a log that was empty when it
    /// began, or pruned since), and its change must still be read when it
    /// commits. So a gap not proven ended is kept, and the mark stays where
    /// it is: the next read records the ids past it as gaps, settled (with
    /// a flush) once their transactions have ended.
    pub(super) fn behind(&mut self, oldest: Option<i64>) -> Option<FlushReason> {
        let oldest = oldest?;
        let newly_below = self.gaps.range(self.flushed_below..oldest).next().is_some();
        let skipped = oldest > self.last + 1 || newly_below;
        if skipped {
            self.flushed_below = self.flushed_below.max(oldest);
        }
        let kept = self.gaps.split_off(&oldest);
        let below = std::mem::replace(&mut self.gaps, kept);
        self.gaps.extend(
            below
                .into_iter()
                .filter(|(_, gap)| gap.watch != Watch::Ended),
        );
        self.forget_unused_snapshots();
        skipped.then_some(FlushReason::FellBehindPruning)
    }

    fn forget_unused_snapshots(&mut self) {
        let (gaps, given_up) = (&self.gaps, &self.given_up);
        self.snapshots.retain(|&seq, _| {
            let watches = |gap: &Gap| gap.watch == Watch::Snapshot(seq);
            gaps.values().any(watches) || given_up.iter().any(watches)
        });
    }
}

impl Gap {
    fn new(since: Instant) -> Gap {
        Gap {
            since,
            watch: Watch::Unwatched,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(ids: &[i64]) -> Cursor {
        let mut cursor = Cursor::new(0);
        for &id in ids {
            assert_eq!(cursor.read(id, Instant::now()), None);
        }
        cursor
    }

    fn trx(ids: &[u64]) -> Transactions {
        ids.iter().copied().collect()
    }

    #[test]
    fn ids_in_order_leave_no_gaps() {
        let cursor = after(&[1, 2, 3]);
        assert_eq!((cursor.last(), cursor.gaps()), (3, vec![]));
    }

    #[test]
    fn skipped_ids_are_gaps_until_they_are_read() {
        assert_eq!(after(&[1, 4]).gaps(), [2, 3]);
        assert_eq!(after(&[1, 4, 3]).gaps(), [2]);
        assert!(after(&[1, 4, 3, 2, 5]).gaps().is_empty());
        let twice = after(&[4, 4]);
        assert_eq!((twice.last(), twice.gaps()), (4, vec![1, 2, 3]));
        assert_eq!(after(&[1, 4]).first_unread(), 2);
        assert_eq!(after(&[1, 2]).first_unread(), 3);
    }

    #[test]
    fn at_start_ids_missing_below_the_end_are_gaps() {
        let cursor = Cursor::at_end(10, 6, &[7, 9, 10], Instant::now());
        assert_eq!((cursor.last(), cursor.gaps()), (10, vec![8]));
        let empty = Cursor::at_end(0, 0, &[], Instant::now());
        assert_eq!((empty.last(), empty.gaps()), (0, vec![]));
    }

    #[test]
    fn too_many_gaps_give_up_the_oldest_and_ask_for_a_flush() {
        let mut cursor = Cursor::new(0);
        let far = 3 * MAX_GAPS as i64;
        assert_eq!(
            cursor.read(far, Instant::now()),
            Some(FlushReason::GapGivenUp)
        );
        let gaps = cursor.gaps();
        assert_eq!(gaps.len(), MAX_GAPS);
        assert_eq!(gaps.last(), Some(&(far - 1)));
        // At the limit, and then over it by one.
        let mut cursor = Cursor::new(0);
        assert_eq!(cursor.read(MAX_GAPS as i64 + 1, Instant::now()), None);
        assert_eq!(
            cursor.read(MAX_GAPS as i64 + 3, Instant::now()),
            Some(FlushReason::GapGivenUp)
        );
    }

    /// A transaction holding given-up ids may commit after the give-up's
    /// flush, and its change is never read: a second flush follows once every
    /// transaction open after the give-up has ended.
    #[test]
    fn a_give_up_flushes_again_once_its_transactions_have_ended() {
        let mut cursor = Cursor::new(0);
        let far = 3 * MAX_GAPS as i64;
        assert_eq!(
            cursor.read(far, Instant::now()),
            Some(FlushReason::GapGivenUp)
        );
        // The bulk transaction 70 still holds the given-up ids.
        assert_eq!(cursor.open_transactions(&trx(&[70]), Instant::now()), None);
        assert_eq!(
            cursor.open_transactions(&trx(&[70, 71]), Instant::now()),
            None
        );
        assert!(cursor.watching());
        // 70 committed (or rolled back); 71 began after the give-up.
        assert_eq!(
            cursor.open_transactions(&trx(&[71]), Instant::now()),
            Some(FlushReason::GapGivenUp)
        );
        assert_eq!(
            cursor.open_transactions(&trx(&[71]), Instant::now()),
            None,
            "once"
        );
    }

    #[test]
    fn give_ups_before_the_next_snapshot_share_one_second_flush() {
        let t0 = Instant::now();
        let mut cursor = Cursor::new(0);
        let step = 3 * MAX_GAPS as i64;
        for n in 1..=50 {
            assert_eq!(cursor.read(n * step, t0), Some(FlushReason::GapGivenUp));
        }
        assert_eq!(cursor.given_up.len(), 1);
        // Without proof, the second flush comes a timeout after the last one.
        let later = t0 + GAP_TIMEOUT / 2;
        assert_eq!(cursor.read(51 * step, later), Some(FlushReason::GapGivenUp));
        cursor.gaps.clear();
        assert_eq!(cursor.expire(t0 + GAP_TIMEOUT, false), None);
        assert_eq!(
            cursor.expire(later + GAP_TIMEOUT, false),
            Some(FlushReason::GapGivenUp)
        );
    }

    #[test]
    fn gaps_waiting_too_long_are_given_up_with_a_flush() {
        let t0 = Instant::now();
        let mut cursor = Cursor::new(0);
        cursor.read(3, t0);
        assert_eq!(cursor.expire(t0 + GAP_TIMEOUT / 2, false), None);
        assert_eq!(cursor.gaps(), [1, 2]);
        assert_eq!(
            cursor.expire(t0 + GAP_TIMEOUT, false),
            Some(FlushReason::GapGivenUp)
        );
        assert!(cursor.gaps().is_empty());
        // With no way to prove the transactions ended: a second flush after
        // another timeout covers what they committed within it.
        assert_eq!(cursor.expire(t0 + GAP_TIMEOUT * 3 / 2, false), None);
        assert_eq!(
            cursor.expire(t0 + GAP_TIMEOUT * 2, false),
            Some(FlushReason::GapGivenUp)
        );
        assert!(!cursor.watching());
        assert_eq!(cursor.expire(t0 + GAP_TIMEOUT * 3, false), None);
    }

    #[test]
    fn with_proof_a_gap_given_up_by_the_clock_is_flushed_for_when_it_ends() {
        let t0 = Instant::now();
        let mut cursor = Cursor::new(0);
        cursor.read(3, t0); // 1 and 2 held by transaction 70, open for long
        assert_eq!(cursor.open_transactions(&trx(&[70]), Instant::now()), None);
        assert_eq!(
            cursor.expire(t0 + GAP_TIMEOUT, true),
            Some(FlushReason::GapGivenUp)
        );
        // Snapshots keep coming (every 200 ms), 70 in each.
        let late = t0 + GAP_TIMEOUT * 5;
        assert_eq!(cursor.open_transactions(&trx(&[70]), late), None);
        assert_eq!(
            cursor.expire(late, true),
            None,
            "waits for proof while snapshots come"
        );
        assert_eq!(cursor.open_transactions(&trx(&[70]), late), None);
        assert_eq!(
            cursor.open_transactions(&trx(&[]), late),
            Some(FlushReason::GapGivenUp)
        );
        assert!(!cursor.watching());
    }

    /// InnoDB serves its list of open transactions from a cache refreshed
    /// only after 100 ms without readers: other pollers, or a monitor,
    /// reading it more often keep every snapshot stale, for as long as they
    /// go on. A give-up then waited for a proof that never came, and a
    /// transaction holding its ids that committed after the first flush was
    /// never flushed for: its rows stayed stale. Without a fresh snapshot
    /// for a timeout, a give-up flushes again, once each timeout, until
    /// its proof comes.
    #[test]
    fn a_give_up_without_fresh_snapshots_flushes_again_by_the_clock() {
        let t0 = Instant::now();
        let mut cursor = Cursor::new(0);
        cursor.read(3, t0); // 1 and 2 held by a long transaction
        assert_eq!(
            cursor.expire(t0 + GAP_TIMEOUT, true),
            Some(FlushReason::GapGivenUp)
        );
        assert_eq!(cursor.expire(t0 + GAP_TIMEOUT * 3 / 2, true), None);
        assert_eq!(
            cursor.expire(t0 + GAP_TIMEOUT * 2, true),
            Some(FlushReason::GapGivenUp),
            "no fresh snapshot came for a timeout: flushed again by the clock"
        );
        assert!(cursor.watching(), "and still waiting for the proof");
        assert_eq!(cursor.expire(t0 + GAP_TIMEOUT * 5 / 2, true), None);
        assert_eq!(
            cursor.expire(t0 + GAP_TIMEOUT * 3, true),
            Some(FlushReason::GapGivenUp)
        );
    }

    #[test]
    fn a_gap_settles_once_every_transaction_open_when_it_was_seen_has_ended() {
        let mut cursor = after(&[1, 3]); // 2 skipped
        assert!(cursor.watching());
        cursor.open_transactions(&trx(&[70, 71]), Instant::now());
        assert!(!cursor.has_ended(), "70 or 71 may hold id 2");
        cursor.open_transactions(&trx(&[71, 72]), Instant::now());
        assert!(!cursor.has_ended(), "71 still open");
        cursor.open_transactions(&trx(&[72]), Instant::now());
        assert!(cursor.has_ended() && !cursor.watching());
        // The read after that proof did not find it: rolled back, dropped.
        assert_eq!(cursor.settle(Some(1)), None);
        assert!(cursor.gaps().is_empty());
    }

    #[test]
    fn with_no_transaction_open_a_gap_settles_at_once() {
        let mut cursor = after(&[1, 3]);
        cursor.open_transactions(&trx(&[]), Instant::now());
        assert!(cursor.has_ended());
    }

    #[test]
    fn gaps_recorded_later_wait_for_a_later_snapshot() {
        let mut cursor = after(&[1, 3]); // gap 2
        cursor.open_transactions(&trx(&[70]), Instant::now());
        cursor.read(5, Instant::now()); // gap 4, after that snapshot
        cursor.open_transactions(&trx(&[70, 80]), Instant::now());
        cursor.open_transactions(&trx(&[80]), Instant::now());
        assert_eq!(cursor.settle(Some(1)), None, "gap 2 settled");
        assert_eq!(cursor.gaps(), [4], "80 may hold id 4");
        cursor.open_transactions(&trx(&[]), Instant::now());
        assert_eq!(cursor.settle(Some(1)), None);
        assert!(cursor.gaps().is_empty());
    }

    #[test]
    fn a_gap_read_before_its_proof_is_simply_filled() {
        let mut cursor = after(&[1, 3]);
        cursor.open_transactions(&trx(&[70]), Instant::now());
        assert_eq!(cursor.read(2, Instant::now()), None);
        assert!(cursor.gaps().is_empty() && !cursor.watching());
    }

    #[test]
    fn serialized_commits_end_every_gap() {
        let mut cursor = after(&[1, 4]);
        cursor.all_ended();
        assert_eq!(cursor.settle(Some(1)), None);
        assert!(cursor.gaps().is_empty());
    }

    #[test]
    fn a_settled_gap_below_the_oldest_row_may_have_been_pruned() {
        let mut cursor = after(&[1, 5]); // gaps 2, 3, 4
        cursor.all_ended();
        assert_eq!(cursor.settle(Some(5)), Some(FlushReason::FellBehindPruning));
        assert!(cursor.gaps().is_empty());
        let mut emptied = after(&[1, 3]);
        emptied.all_ended();
        assert_eq!(emptied.settle(None), Some(FlushReason::FellBehindPruning));
    }

    #[test]
    fn a_log_pruned_past_the_mark_asks_for_a_flush() {
        let mut cursor = after(&[1, 2]);
        assert_eq!(cursor.behind(Some(1)), None);
        assert_eq!(cursor.behind(Some(3)), None, "3 is next, not skipped");
        assert_eq!(cursor.behind(Some(9)), Some(FlushReason::FellBehindPruning));
        assert_eq!(
            cursor.behind(None),
            None,
            "an empty log: nothing to compare"
        );
        // The ids skipped up to the oldest row may be held by transactions
        // still open: the read that finds that row watches them as gaps.
        assert_eq!(cursor.last(), 2);
        assert_eq!(cursor.read(9, Instant::now()), None);
        assert_eq!(cursor.gaps(), [3, 4, 5, 6, 7, 8]);
        cursor.open_transactions(&trx(&[70]), Instant::now());
        assert_eq!(
            cursor.behind(Some(9)),
            None,
            "the ids already flushed for are not flushed for again at every look \
             while they stay watched (their end unread flushes, below)"
        );
        assert_eq!(cursor.read(5, Instant::now()), None, "committed late: read");
        cursor.open_transactions(&trx(&[]), Instant::now());
        assert_eq!(
            cursor.settle(Some(9)),
            Some(FlushReason::FellBehindPruning),
            "the others ended unread, pruned"
        );
        assert!(cursor.gaps().is_empty());

        let mut gapped = after(&[1, 5]); // gaps 2, 3, 4
        gapped.all_ended();
        assert_eq!(gapped.behind(Some(4)), Some(FlushReason::FellBehindPruning));
        assert_eq!((gapped.last(), gapped.gaps()), (5, vec![4]));
    }

    /// An open transaction's id below every committed row (its log was empty
    /// when it began) cannot have been pruned: it stays watched, so that its
    /// change is read when it commits.
    #[test]
    fn an_open_gap_below_the_oldest_row_stays_watched() {
        let mut cursor = after(&[1, 5]); // gaps 2, 3, 4, none proven ended
        assert_eq!(cursor.behind(Some(4)), Some(FlushReason::FellBehindPruning));
        assert_eq!((cursor.last(), cursor.gaps()), (5, vec![2, 3, 4]));
        assert_eq!(cursor.first_unread(), 2, "pruning stays below them");
    }
}
