//! When to flush: the staleness bound kept by the clock.
//!
//! The watcher thread runs checks (reads of the change stream); what it has
//! confirmed lives in a [`View`] shared with a small guard thread. After each
//! check the watcher decides ([`ViewState::after_check`]); while a check is
//! running, the guard decides ([`ViewState::guard`]), so a check stuck on a
//! dead network path cannot hold the flush off. Neither holds the view's lock
//! across anything but these few comparisons.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{Context, FlushReason, Source};
use crate::error::{Error, Result};

/// What one check achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Every change committed before this moment has been applied.
    Confirmed(Instant),
    /// Nothing new was confirmed, and nothing failed.
    Nothing,
    /// The check failed; the view stays unconfirmed for this reason.
    Failed(FlushReason),
}

impl Outcome {
    pub(super) fn of(result: &Result<Option<Instant>>) -> Outcome {
        match result {
            Ok(Some(at)) => Outcome::Confirmed(*at),
            Ok(None) => Outcome::Nothing,
            Err(Error::Migration { .. }) => Outcome::Failed(FlushReason::NoChangeLog),
            Err(_) => Outcome::Failed(FlushReason::ConnectionLost),
        }
    }
}

/// What the watcher does after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// The view is confirmed recently enough.
    Keep,
    /// The view is old but nothing failed: the check answered late, or did
    /// not try to confirm. Confirm once more at once, and flush only if that
    /// does not do. (Had the check been stuck, the guard would have flushed
    /// already; an answer that is late without that means the whole process
    /// was held up, the guard too, and a prompt answer now confirms as much
    /// as a flush would.)
    ConfirmAgain,
    /// Empty every cache.
    Flush(FlushReason),
}

/// The bookkeeping of the bound, free of threads and clocks so it can be
/// tested with made-up instants.
#[derive(Debug, Clone, Copy)]
pub(super) struct ViewState {
    /// Everything committed before this moment is reflected in the caches:
    /// the start of the last check that confirmed, or the last flush (a
    /// flush forgets everything, so it confirms as much as a check).
    settled: Instant,
    /// Why the last check did not confirm, while it did not.
    down: Option<FlushReason>,
    /// While a check runs: when the guard flushes if it has not returned.
    deadline: Option<Instant>,
    /// Whether the guard already gave the running check more time.
    extended: bool,
    /// The watcher thread unwound (a panic): no check will ever run again,
    /// so the guard flushes every `trust` for as long as the store lives.
    dead: bool,
}

impl ViewState {
    pub(super) fn new(now: Instant) -> ViewState {
        ViewState {
            settled: now,
            down: None,
            deadline: None,
            extended: false,
            dead: false,
        }
    }

    /// The watcher thread unwound at `now`: from now on the guard treats it
    /// as a check that never returns, flushing at once and every `trust`.
    pub(super) fn watcher_died(&mut self, now: Instant) {
        self.dead = true;
        self.deadline = Some(now);
        self.extended = true;
    }

    /// A check starts at `now`. It may take up to `trust`: one that started
    /// late (the watcher overslept) gets its full time, since its answer
    /// confirms as much as a flush would.
    pub(super) fn begin_check(&mut self, now: Instant, trust: Duration) {
        self.deadline = Some(self.settled.max(now) + trust);
        self.extended = false;
    }

    /// The check returned at `now` with `outcome`. `may_retry` is false for
    /// a check that was itself a retry.
    pub(super) fn after_check(
        &mut self,
        outcome: Outcome,
        now: Instant,
        trust: Duration,
        may_retry: bool,
    ) -> Decision {
        self.deadline = None;
        match outcome {
            Outcome::Confirmed(at) => {
                self.settled = self.settled.max(at);
                self.down = None;
            }
            Outcome::Failed(reason) => self.down = Some(reason),
            Outcome::Nothing => {}
        }
        if now.saturating_duration_since(self.settled) <= trust {
            return Decision::Keep;
        }
        if may_retry && self.down.is_none() {
            return Decision::ConfirmAgain;
        }
        self.settled = now;
        Decision::Flush(self.down.unwrap_or(FlushReason::Unconfirmed))
    }

    /// The guard's turn at `now`: a check running past its deadline is
    /// stuck, and the caches are flushed now and every `trust` until it
    /// returns. Except once: when the guard itself `woke_late`, whatever held
    /// it up (a starved or stopped process) held the check up too, which
    /// then gets `trust` more to answer.
    pub(super) fn guard(
        &mut self,
        now: Instant,
        trust: Duration,
        woke_late: bool,
    ) -> Option<FlushReason> {
        let deadline = self.deadline?;
        if now <= deadline {
            return None;
        }
        self.deadline = Some(now + trust);
        if woke_late && !std::mem::replace(&mut self.extended, true) {
            return None;
        }
        self.settled = now;
        Some(FlushReason::StuckCheck)
    }

    /// A flush starting at `at`, for whatever reason.
    pub(super) fn flushed(&mut self, at: Instant) {
        self.settled = self.settled.max(at);
    }

    /// How long the guard may sleep: until the running check's deadline, or
    /// `idle` when no check runs.
    fn guard_sleep(&self, now: Instant, idle: Duration) -> Duration {
        self.deadline.map_or(idle, |deadline| {
            deadline
                .saturating_duration_since(now)
                .clamp(Duration::from_millis(1), idle)
        })
    }
}

/// The state shared by the watcher and its guard.
#[derive(Debug)]
pub(super) struct View {
    state: Mutex<ViewState>,
}

impl View {
    pub(super) fn new() -> View {
        View {
            state: Mutex::new(ViewState::new(Instant::now())),
        }
    }

    pub(super) fn flushed(&self, at: Instant) {
        self.state.lock().flushed(at);
    }
}

/// Tells the watcher's threads to stop, and wakes them when it does; tells
/// whoever stops them when they have ended.
#[derive(Debug, Default)]
pub(super) struct Stop {
    state: Mutex<Stopping>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Stopping {
    stopped: bool,
    /// Threads that have returned (or unwound) from their work.
    ended: usize,
}

impl Stop {
    pub(super) fn stop(&self) {
        self.state.lock().stopped = true;
        self.wake.notify_all();
    }

    /// Sleeps for `timeout` unless stopped; returns whether to stop.
    fn wait(&self, timeout: Duration) -> bool {
        let mut state = self.state.lock();
        if !state.stopped && !timeout.is_zero() {
            self.wake.wait_for(&mut state, timeout);
        }
        state.stopped
    }

    /// Records that one thread ended its work.
    pub(super) fn ended(&self) {
        self.state.lock().ended += 1;
        self.wake.notify_all();
    }

    /// Waits until `threads` threads have ended, at most until `deadline`;
    /// returns whether they have.
    pub(super) fn wait_ended(&self, threads: usize, deadline: Instant) -> bool {
        let mut state = self.state.lock();
        while state.ended < threads {
            if self.wake.wait_until(&mut state, deadline).timed_out() {
                break;
            }
        }
        state.ended >= threads
    }
}

/// The watcher thread: checks every tick, or whenever a source that waits
/// for changes is due to, and decides after each check.
pub(super) fn watch(ctx: &Context, mut source: Box<dyn Source>, stop: &Stop) {
    let _unwinding = Unwinding(ctx);
    let trust = ctx.timing.trust;
    loop {
        let waited = source.wait(ctx);
        if stop.wait(if waited {
            Duration::ZERO
        } else {
            ctx.timing.tick
        }) {
            break;
        }
        let mut retry = false;
        loop {
            ctx.view.state.lock().begin_check(Instant::now(), trust);
            let result = source.check(ctx, retry);
            if let Err(err) = &result {
                tracing::debug!(error = %err, "coherence check failed");
            }
            let outcome = Outcome::of(&result);
            let decision =
                ctx.view
                    .state
                    .lock()
                    .after_check(outcome, Instant::now(), trust, !retry);
            match decision {
                Decision::Keep => break,
                Decision::ConfirmAgain => retry = true,
                Decision::Flush(reason) => {
                    ctx.flush(reason);
                    break;
                }
            }
        }
    }
    tracing::debug!("coherence thread stopped");
}

/// Tells the view when the watcher thread unwinds (a panic in the
/// application's tracing layer on one of its events, a bug): between checks
/// the guard has no deadline to keep, and the caches would never hear of
/// another process's change again. Nothing is logged here, on a thread
/// already panicking: the guard does it.
struct Unwinding<'a>(&'a Context);

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.view.state.lock().watcher_died(Instant::now());
        }
    }
}

/// The guard thread: flushes by the clock while a check is stuck, or for
/// good once the watcher thread died.
pub(super) fn guard(ctx: &Context, stop: &Stop) {
    let trust = ctx.timing.trust;
    let mut told_dead = false;
    loop {
        let sleep = ctx.view.state.lock().guard_sleep(Instant::now(), trust);
        let planned = Instant::now() + sleep;
        if stop.wait(sleep) {
            return;
        }
        let now = Instant::now();
        // Late by more than half the trust: this thread was not running.
        let woke_late = now.saturating_duration_since(planned) > trust / 2;
        let (due, dead) = {
            let mut state = ctx.view.state.lock();
            (state.guard(now, trust, woke_late), state.dead)
        };
        if dead && !std::mem::replace(&mut told_dead, true) {
            tracing::error!(
                "the coherence watcher thread panicked: every cache is flushed every {trust:?} \
                 from now on (changes of other processes are no longer read); restart the process"
            );
        }
        if let Some(reason) = due {
            ctx.flush(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRUST: Duration = Duration::from_millis(50);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A view confirmed at `t0`, and `t0`.
    fn view() -> (ViewState, Instant) {
        let t0 = Instant::now();
        (ViewState::new(t0), t0)
    }

    /// Between checks the guard has no deadline; once the watcher died it
    /// flushes at once and every `trust` after, late wake-ups included.
    #[test]
    fn a_dead_watcher_is_flushed_for_every_trust_from_then_on() {
        let (mut view, t0) = view();
        assert_eq!(
            view.guard(t0 + ms(500), TRUST, false),
            None,
            "no check runs"
        );
        let died = t0 + ms(500);
        view.watcher_died(died);
        let mut now = died;
        for _ in 0..5 {
            now += TRUST + ms(1);
            assert_eq!(view.guard(now, TRUST, true), Some(FlushReason::StuckCheck));
        }
    }

    #[test]
    fn woke_late_and_the_check_confirms_no_flush() {
        let (mut view, t0) = view();
        // Starved for 4 × trust; the check then starts and answers promptly.
        let woke = t0 + ms(200);
        view.begin_check(woke, TRUST);
        assert_eq!(view.guard(woke + ms(1), TRUST, false), None);
        let outcome = Outcome::Confirmed(woke);
        assert_eq!(
            view.after_check(outcome, woke + ms(2), TRUST, true),
            Decision::Keep
        );
    }

    #[test]
    fn woke_late_and_the_check_fails_flush_with_its_reason() {
        let (mut view, t0) = view();
        let woke = t0 + ms(200);
        view.begin_check(woke, TRUST);
        let failed = Outcome::Failed(FlushReason::ConnectionLost);
        assert_eq!(
            view.after_check(failed, woke + ms(1), TRUST, true),
            Decision::Flush(FlushReason::ConnectionLost)
        );
        let (mut view, t0) = self::view();
        let missing = Outcome::Failed(FlushReason::NoChangeLog);
        assert_eq!(
            view.after_check(missing, t0 + ms(200), TRUST, true),
            Decision::Flush(FlushReason::NoChangeLog)
        );
    }

    #[test]
    fn a_late_answer_is_confirmed_again_before_any_flush() {
        // Held up inside the check (its answer waited for the CPU).
        let (mut view, t0) = view();
        view.begin_check(t0 + ms(10), TRUST);
        let late = Outcome::Confirmed(t0 + ms(10));
        assert_eq!(
            view.after_check(late, t0 + ms(300), TRUST, true),
            Decision::ConfirmAgain
        );
        view.begin_check(t0 + ms(300), TRUST);
        let again = Outcome::Confirmed(t0 + ms(300));
        assert_eq!(
            view.after_check(again, t0 + ms(302), TRUST, false),
            Decision::Keep
        );
        // Likewise a check that did not try to confirm (not its turn yet).
        let (mut view, t0) = self::view();
        assert_eq!(
            view.after_check(Outcome::Nothing, t0 + ms(40), TRUST, true),
            Decision::Keep
        );
        assert_eq!(
            view.after_check(Outcome::Nothing, t0 + ms(60), TRUST, true),
            Decision::ConfirmAgain
        );
    }

    #[test]
    fn a_retry_that_is_late_too_flushes() {
        let (mut view, t0) = view();
        let late = Outcome::Confirmed(t0 + ms(10));
        assert_eq!(
            view.after_check(late, t0 + ms(70), TRUST, true),
            Decision::ConfirmAgain
        );
        let again = Outcome::Confirmed(t0 + ms(70));
        assert_eq!(
            view.after_check(again, t0 + ms(130), TRUST, false),
            Decision::Flush(FlushReason::Unconfirmed)
        );
    }

    #[test]
    fn while_down_a_flush_counts_as_a_confirmation() {
        let (mut view, t0) = view();
        let lost = Outcome::Failed(FlushReason::ConnectionLost);
        assert_eq!(
            view.after_check(lost, t0 + ms(60), TRUST, true),
            Decision::Flush(FlushReason::ConnectionLost)
        );
        // Still down: no flush until the flush itself is older than trust,
        // and then the reason is still the lost connection, with no retry.
        assert_eq!(
            view.after_check(Outcome::Nothing, t0 + ms(100), TRUST, true),
            Decision::Keep
        );
        assert_eq!(
            view.after_check(Outcome::Nothing, t0 + ms(120), TRUST, true),
            Decision::Flush(FlushReason::ConnectionLost)
        );
        // Back: confirmed, the reason forgotten.
        let back = Outcome::Confirmed(t0 + ms(125));
        assert_eq!(
            view.after_check(back, t0 + ms(126), TRUST, true),
            Decision::Keep
        );
        assert_eq!(
            view.after_check(Outcome::Nothing, t0 + ms(200), TRUST, false),
            Decision::Flush(FlushReason::Unconfirmed)
        );
    }

    #[test]
    fn a_stuck_check_is_flushed_by_the_guard_every_trust() {
        let (mut view, t0) = view();
        view.begin_check(t0 + ms(25), TRUST);
        assert_eq!(view.guard(t0 + ms(60), TRUST, false), None, "may answer");
        let stuck = Some(FlushReason::StuckCheck);
        assert_eq!(view.guard(t0 + ms(76), TRUST, false), stuck);
        assert_eq!(view.guard(t0 + ms(100), TRUST, false), None, "flushed");
        assert_eq!(view.guard(t0 + ms(127), TRUST, false), stuck);
        // It returns at last, with an answer from before the flushes: kept.
        let answer = Outcome::Confirmed(t0 + ms(25));
        assert_eq!(
            view.after_check(answer, t0 + ms(130), TRUST, true),
            Decision::Keep
        );
        assert_eq!(view.guard(t0 + ms(500), TRUST, false), None, "idle");
    }

    #[test]
    fn a_guard_that_woke_late_gives_the_check_more_time_once() {
        let (mut view, t0) = view();
        view.begin_check(t0 + ms(25), TRUST);
        // The whole process stood still for a second, the guard included.
        assert_eq!(view.guard(t0 + ms(1025), TRUST, true), None);
        // The check answers once it runs, and confirms again: no flush.
        let answer = Outcome::Confirmed(t0 + ms(25));
        assert_eq!(
            view.after_check(answer, t0 + ms(1026), TRUST, true),
            Decision::ConfirmAgain
        );
        view.begin_check(t0 + ms(1026), TRUST);
        let again = Outcome::Confirmed(t0 + ms(1026));
        assert_eq!(
            view.after_check(again, t0 + ms(1027), TRUST, false),
            Decision::Keep
        );
        // A check that stays stuck is flushed after that extra time.
        let (mut view, t0) = self::view();
        view.begin_check(t0, TRUST);
        assert_eq!(view.guard(t0 + ms(1000), TRUST, true), None);
        assert_eq!(view.guard(t0 + ms(1049), TRUST, true), None);
        assert_eq!(
            view.guard(t0 + ms(1051), TRUST, true),
            Some(FlushReason::StuckCheck),
            "one extension per check"
        );
    }

    #[test]
    fn the_guard_sleeps_until_the_deadline() {
        let (mut view, t0) = view();
        assert_eq!(view.guard_sleep(t0, TRUST), TRUST);
        view.begin_check(t0 + ms(20), TRUST);
        assert_eq!(view.guard_sleep(t0 + ms(30), TRUST), ms(40));
        assert_eq!(view.guard_sleep(t0 + ms(90), TRUST), ms(1));
    }
}
