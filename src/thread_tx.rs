//! Which stores this thread (or tokio task) holds an open transaction of.
//!
//! A write through the store itself (not through the transaction) runs on
//! another pooled connection and waits for the locks that transaction holds,
//! which it keeps until the thread that is now waiting ends it: a
//! self-deadlock, for ever on PostgreSQL. Knowing the thread's open
//! transactions lets such a write be refused at once
//! ([`Error::InsideTransaction`](crate::Error::InsideTransaction)).
//!
//! A transaction counts for its holder: the thread that began it or, once
//! moved (a `Tx` is `Send`), the thread that last used it; inside a tokio
//! task (with the `tokio` feature), the task instead, whichever worker it
//! runs on by then, since a task may hold a `Tx` across an `.await` and its
//! async writes hop to the blocking pool. It counts until it ends, on
//! whichever thread that happens: its mark is a shared flag, not an entry
//! only the marking thread could remove.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, ThreadId};

use crate::error::{Error, Result};

/// Store id and "still open" flag of each open transaction of one holder.
type Marks = Vec<(u64, Arc<AtomicBool>)>;

thread_local! {
    /// The open transactions this thread holds outside any task.
    static OPEN: RefCell<Marks> = const { RefCell::new(Vec::new()) };
}

/// Who holds a transaction: a tokio task, wherever it runs, or else a thread.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Holder {
    Thread(ThreadId),
    #[cfg(feature = "tokio")]
    Task(tokio::task::Id),
}

impl Holder {
    fn current() -> Holder {
        #[cfg(feature = "tokio")]
        if let Some(task) = tokio::task::try_id() {
            return Holder::Task(task);
        }
        Holder::Thread(thread::current().id())
    }
}

/// Runs `f` on the marks of `holder`, the current holder.
fn with_marks<T>(holder: Holder, f: impl FnOnce(&mut Marks) -> T) -> T {
    match holder {
        Holder::Thread(_) => OPEN.with(|marks| f(&mut marks.borrow_mut())),
        #[cfg(feature = "tokio")]
        Holder::Task(task) => tasks::with(task, f),
    }
}

/// Whether `found` holds for the marks that count here: this thread's, and
/// inside a task the task's too. A thread's marks are made outside any task
/// (plain sync code, a `block_on`'s own future), and the tasks that thread
/// runs inside such a `block_on` are waited for by that transaction's holder.
fn visible(mut found: impl FnMut(&mut Marks) -> bool) -> bool {
    let thread = OPEN.with(|marks| found(&mut marks.borrow_mut()));
    match Holder::current() {
        Holder::Thread(_) => thread,
        #[cfg(feature = "tokio")]
        Holder::Task(task) => thread || tasks::with(task, found),
    }
}

/// Marks a transaction of one store open for its holder, until the mark is
/// dropped (on any thread).
pub(crate) struct OpenMark {
    store: u64,
    /// The holder it is marked for, and the flag that holder reads. A `Tx`
    /// is used by one thread at a time (it is not `Sync`), so a `RefCell` does.
    held: RefCell<(Holder, Arc<AtomicBool>)>,
}

impl OpenMark {
    /// Marks a transaction of store `store` open for the current holder.
    pub(crate) fn begin(store: u64) -> OpenMark {
        let holder = Holder::current();
        OpenMark {
            store,
            held: RefCell::new((holder, mark(holder, store))),
        }
    }

    /// The transaction is used here: if it was moved to another thread (or
    /// task), it is now that one's (whose store writes would wait for it)
    /// and no longer the one's it left (which may write again).
    pub(crate) fn used_here(&self) {
        let here = Holder::current();
        let mut held = self.held.borrow_mut();
        if held.0 != here {
            held.1.store(false, Ordering::Release);
            *held = (here, mark(here, self.store));
        }
    }
}

/// A new "open" flag for a transaction of `store` held by `holder`, the
/// current holder; ended flags are pruned first, so a holder's list stays
/// as long as its open transactions.
fn mark(holder: Holder, store: u64) -> Arc<AtomicBool> {
    let open = Arc::new(AtomicBool::new(true));
    with_marks(holder, |marks| {
        marks.retain(|(_, open)| open.load(Ordering::Acquire));
        marks.push((store, Arc::clone(&open)));
    });
    open
}

impl Drop for OpenMark {
    fn drop(&mut self) {
        self.held.get_mut().1.store(false, Ordering::Release);
    }
}

/// Refuses `operation` (on `table`) through store `store` when the current
/// holder (this task, else this thread) holds one of its open transactions.
pub(crate) fn refuse_inside(
    store: u64,
    operation: &'static str,
    table: Option<&'static str>,
) -> Result<()> {
    let inside = |marks: &mut Marks| {
        marks
            .iter()
            .any(|(id, open)| *id == store && open.load(Ordering::Acquire))
    };
    if visible(inside) {
        return Err(Error::InsideTransaction { operation, table });
    }
    Ok(())
}

/// The open transactions of the current holder, for work it hands to
/// another thread and waits for (the async layer's hop to the blocking
/// pool): that work counts as inside them, so its store writes are refused
/// as the holder's own would be, instead of waiting for the holder's locks.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) struct Inherited(Marks);

#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
impl Inherited {
    /// The current holder's open transactions.
    pub(crate) fn here() -> Inherited {
        let mut open = Marks::new();
        visible(|marks| {
            let marks = marks
                .iter()
                .filter(|(_, open)| open.load(Ordering::Acquire));
            open.extend(marks.cloned());
            false
        });
        Inherited(open)
    }

    /// Marks them open for the current holder too, until the guard drops.
    pub(crate) fn install(self) -> Installed {
        let holder = Holder::current();
        if !self.0.is_empty() {
            with_marks(holder, |marks| marks.extend(self.0.iter().cloned()));
        }
        Installed {
            holder,
            marks: self.0,
        }
    }
}

/// Inherited marks installed for a holder; dropped, they are removed (a
/// thread of the blocking pool goes on to other work).
pub(crate) struct Installed {
    holder: Holder,
    marks: Marks,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if self.marks.is_empty() {
            return;
        }
        with_marks(self.holder, |marks| {
            marks.retain(|(_, open)| !self.marks.iter().any(|(_, ours)| Arc::ptr_eq(open, ours)));
        });
    }
}

/// The open transactions of tokio tasks, which move between a runtime's
/// threads: one map for the process, behind a lock taken only while some
/// task holds one (a count read first keeps every other caller off it).
#[cfg(feature = "tokio")]
mod tasks {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use parking_lot::Mutex;

    use super::Marks;

    static TASKS: Mutex<Option<HashMap<tokio::task::Id, Marks>>> = Mutex::new(None);
    /// Entries in `TASKS`, written under its lock.
    static HELD: AtomicUsize = AtomicUsize::new(0);

    /// Runs `f` on `task`'s marks (empty, and not stored, when no task
    /// holds any: a task's own marks were stored by that task, before).
    /// Pruned as any task's marks are touched: a task with no open mark
    /// left, including one that ended holding transactions since ended, so
    /// the map stays as large as the tasks holding open ones.
    pub(super) fn with<T>(task: tokio::task::Id, f: impl FnOnce(&mut Marks) -> T) -> T {
        if HELD.load(Ordering::Acquire) == 0 {
            let mut marks = Marks::new();
            let out = f(&mut marks);
            if marks.is_empty() {
                return out;
            }
            return store(task, marks, out);
        }
        let mut tasks = TASKS.lock();
        let map = tasks.get_or_insert_with(HashMap::new);
        let out = f(map.entry(task).or_default());
        prune(map);
        HELD.store(map.len(), Ordering::Release);
        out
    }

    /// Adds `marks`, made while no task held any, as `task`'s.
    fn store<T>(task: tokio::task::Id, marks: Marks, out: T) -> T {
        let mut tasks = TASKS.lock();
        let map = tasks.get_or_insert_with(HashMap::new);
        map.entry(task).or_default().extend(marks);
        prune(map);
        HELD.store(map.len(), Ordering::Release);
        out
    }

    /// Tasks with open marks, as last counted.
    #[cfg(test)]
    pub(super) fn held() -> usize {
        HELD.load(Ordering::Acquire)
    }

    fn prune(map: &mut HashMap<tokio::task::Id, Marks>) {
        map.retain(|_, marks| {
            marks.retain(|(_, open)| open.load(Ordering::Acquire));
            !marks.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_refuses_its_store_on_its_thread_until_dropped_anywhere() {
        let mark = OpenMark::begin(7);
        assert!(refuse_inside(7, "write", None).is_err());
        assert!(refuse_inside(8, "write", None).is_ok(), "another store");
        std::thread::spawn(|| assert!(refuse_inside(7, "write", None).is_ok()))
            .join()
            .unwrap();
        std::thread::spawn(move || drop(mark)).join().unwrap();
        assert!(refuse_inside(7, "write", None).is_ok());
    }

    #[test]
    fn a_mark_used_on_another_thread_moves_there() {
        let mark = OpenMark::begin(7);
        let mark = std::thread::spawn(move || {
            mark.used_here();
            assert!(refuse_inside(7, "write", None).is_err(), "the holder");
            mark
        })
        .join()
        .unwrap();
        assert!(
            refuse_inside(7, "write", None).is_ok(),
            "the thread it left"
        );
        mark.used_here();
        assert!(refuse_inside(7, "write", None).is_err(), "moved back");
        drop(mark);
        assert!(refuse_inside(7, "write", None).is_ok());
    }

    /// Inside a task a mark is the task's, on whichever thread it runs; the
    /// map of tasks' marks empties as their transactions end, even when the
    /// task ended first.
    #[cfg(feature = "tokio")]
    #[test]
    fn a_tasks_marks_follow_the_task_and_are_pruned_once_ended() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let kept = runtime.block_on(async {
            let held = tokio::spawn(async {
                let mark = OpenMark::begin(11);
                tokio::task::yield_now().await;
                assert!(refuse_inside(11, "write", None).is_err(), "the task");
                mark
            })
            .await
            .unwrap();
            let other = tokio::spawn(async { refuse_inside(11, "write", None).is_ok() });
            assert!(other.await.unwrap(), "another task");
            held
        });
        assert!(refuse_inside(11, "write", None).is_ok(), "a thread");
        drop(kept);
        runtime
            .block_on(runtime.spawn(async { drop(OpenMark::begin(12)) }))
            .unwrap();
        // The next task to touch the map prunes what has ended.
        let checked = runtime.spawn(async { refuse_inside(12, "write", None).is_ok() });
        assert!(runtime.block_on(checked).unwrap());
        assert_eq!(tasks::held(), 0, "ended marks are pruned");
    }

    #[test]
    fn ended_marks_are_pruned_as_new_ones_begin() {
        for _ in 0..100 {
            drop(OpenMark::begin(1));
        }
        let _open = OpenMark::begin(1);
        assert_eq!(OPEN.with(|marks| marks.borrow().len()), 1);
    }
}
