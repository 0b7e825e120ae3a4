//! Which stores this thread holds an open transaction of.
//!
//! A write through the store itself (not through the transaction) runs on
//! another pooled connection and waits for the locks that transaction holds,
//! which it keeps until the thread that is now waiting ends it: a
//! self-deadlock, for ever on PostgreSQL. Knowing the thread's open
//! transactions lets such a write be refused at once
//! ([`Error::InsideTransaction`](crate::Error::InsideTransaction)).
//!
//! A transaction counts for the thread that began it or, once moved (a `Tx`
//! is `Send`), for the thread that last used it, until it ends on whichever
//! thread that happens: its mark is a shared flag, not an entry only the
//! marking thread could remove.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, ThreadId};

use crate::error::{Error, Result};

thread_local! {
    /// Store id and "still open" flag of each transaction begun on this thread.
    static OPEN: RefCell<Vec<(u64, Arc<AtomicBool>)>> = const { RefCell::new(Vec::new()) };
}

/// Marks a transaction of one store open on the thread that holds it, until
/// the mark is dropped (on any thread).
pub(crate) struct OpenMark {
    store: u64,
    /// The thread it is marked on, and the flag that thread reads. A `Tx` is
    /// used by one thread at a time (it is not `Sync`), so a `RefCell` does.
    held: RefCell<(ThreadId, Arc<AtomicBool>)>,
}

impl OpenMark {
    /// Marks a transaction of store `store` open on this thread.
    pub(crate) fn begin(store: u64) -> OpenMark {
        OpenMark {
            store,
            held: RefCell::new((thread::current().id(), mark_here(store))),
        }
    }

    /// The transaction is used on this thread: if it was moved here, it is
    /// now this thread's (whose store writes would wait for it) and no
    /// longer the thread's it left (which may write again).
    pub(crate) fn used_here(&self) {
        let here = thread::current().id();
        let mut held = self.held.borrow_mut();
        if held.0 != here {
            held.1.store(false, Ordering::Release);
            *held = (here, mark_here(self.store));
        }
    }
}

/// A new "open" flag for a transaction of `store` on this thread; ended
/// flags are pruned first, so the thread's list stays as long as its open
/// transactions.
fn mark_here(store: u64) -> Arc<AtomicBool> {
    let open = Arc::new(AtomicBool::new(true));
    OPEN.with(|marks| {
        let mut marks = marks.borrow_mut();
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

/// Refuses `operation` (on `table`) through store `store` when this thread
/// holds one of its open transactions.
pub(crate) fn refuse_inside(
    store: u64,
    operation: &'static str,
    table: Option<&'static str>,
) -> Result<()> {
    let inside = OPEN.with(|marks| {
        marks
            .borrow()
            .iter()
            .any(|(id, open)| *id == store && open.load(Ordering::Acquire))
    });
    if inside {
        return Err(Error::InsideTransaction { operation, table });
    }
    Ok(())
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

    #[test]
    fn ended_marks_are_pruned_as_new_ones_begin() {
        for _ in 0..100 {
            drop(OpenMark::begin(1));
        }
        let _open = OpenMark::begin(1);
        assert_eq!(OPEN.with(|marks| marks.borrow().len()), 1);
    }
}
