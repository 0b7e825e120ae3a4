//! Single-flight loads: concurrent misses of one key meet at a `Flight`; the
//! first caller (the leader) loads, the others wait on the flight, not on the
//! shard lock: a thread blocks on its condvar ([`Flight::wait`]), an async
//! task awaits it ([`Landing`]) without blocking its runtime's worker.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::sync::{Condvar, Mutex};

enum State<T> {
    Loading,
    Loaded(Option<Arc<T>>),
    /// The leader failed or panicked; waiters must load for themselves.
    Abandoned,
}

/// The state and the async waiters, under one lock so that a waiter that
/// found the load still running is always registered before it completes.
struct Inner<T> {
    state: State<T>,
    /// The leader has not begun to load: an async caller's load waiting for
    /// a thread of the runtime's blocking pool (see [`Flight::wait`]).
    queued: bool,
    /// The waiting tasks' wakers, each under the key of the [`Landing`]
    /// that registered it, so that a landing dropped before the load ends
    /// takes its own back (and no other landing's of the same task). A map,
    /// so that a burst of cancelled requests on one slow load costs one
    /// removal each, not a scan of every waiter under this lock.
    wakers: HashMap<u64, Waker>,
    /// The key the next landing to register gets.
    next_key: u64,
}

/// One in-progress load of one key.
pub(crate) struct Flight<T> {
    /// The shard epoch when the load began; the fill is dropped if it moved.
    pub(crate) epoch: u64,
    inner: Mutex<Inner<T>>,
    done: Condvar,
}

impl<T> Flight<T> {
    /// A flight whose leader loads at once (`queued` false), or only once a
    /// thread takes up its load (`queued`: an async leader, until [`start`](Self::start)).
    pub(crate) fn new(epoch: u64, queued: bool) -> Arc<Flight<T>> {
        Arc::new(Flight {
            epoch,
            inner: Mutex::new(Inner {
                state: State::Loading,
                queued,
                wakers: HashMap::new(),
                next_key: 0,
            }),
            done: Condvar::new(),
        })
    }

    /// The leader begins its load, on the thread that runs it: from now on
    /// a thread may wait for it.
    pub(crate) fn start(&self) {
        self.inner.lock().queued = false;
    }

    /// Publishes the leader's result and wakes every waiter, threads and tasks.
    pub(crate) fn complete(&self, value: Option<Option<Arc<T>>>) {
        let wakers = {
            let mut inner = self.inner.lock();
            inner.state = match value {
                Some(value) => State::Loaded(value),
                None => State::Abandoned,
            };
            std::mem::take(&mut inner.wakers)
        };
        self.done.notify_all();
        // Waking runs the runtime's code: after the lock.
        for waker in wakers.into_values() {
            waker.wake();
        }
    }

    /// Blocks until the leader finishes. `None` means it failed, or has not
    /// begun (it is queued), and the caller must load by itself: a queued
    /// load waits for a thread of the runtime's blocking pool, and the caller
    /// may be on one, as may every other thread of the pool, each waiting for
    /// that load which then never runs.
    pub(crate) fn wait(&self) -> Option<Option<Arc<T>>> {
        let mut inner = self.inner.lock();
        loop {
            match &inner.state {
                State::Loading if inner.queued => return None,
                State::Loading => self.done.wait(&mut inner),
                State::Loaded(value) => return Some(value.clone()),
                State::Abandoned => return None,
            }
        }
    }
}

/// The end of a flight, awaited: resolves as [`Flight::wait`] returns, and
/// parks no thread meanwhile. Dropping it stops waiting; the load goes on.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) struct Landing<T> {
    flight: Arc<Flight<T>>,
    /// The key of the waker it registered, once polled while loading.
    key: Option<u64>,
}

impl<T> Landing<T> {
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn new(flight: Arc<Flight<T>>) -> Landing<T> {
        Landing { flight, key: None }
    }
}

/// A landing dropped while the load runs (its request cancelled) takes its
/// waker back: a waker keeps its task's allocation alive, and a long load
/// under requests that keep giving up would otherwise hold one per request.
impl<T> Drop for Landing<T> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let removed = self.flight.inner.lock().wakers.remove(&key);
            // A task's waker may run runtime code when dropped: after the lock.
            drop(removed);
        }
    }
}

impl<T> Future for Landing<T> {
    type Output = Option<Option<Arc<T>>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let flight = Arc::clone(&self.flight);
        let mut inner = flight.inner.lock();
        match &inner.state {
            State::Loaded(value) => Poll::Ready(Some(value.clone())),
            State::Abandoned => Poll::Ready(None),
            State::Loading => {
                // A landing polled again before the load ends keeps one
                // entry, its waker replaced if the task gave another.
                let key = self.key;
                let mine = key.and_then(|key| inner.wakers.get_mut(&key));
                let replaced = match mine {
                    Some(waker) if waker.will_wake(cx.waker()) => None,
                    Some(waker) => Some(std::mem::replace(waker, cx.waker().clone())),
                    None => {
                        let key = inner.next_key;
                        inner.next_key += 1;
                        inner.wakers.insert(key, cx.waker().clone());
                        drop(inner);
                        self.key = Some(key);
                        return Poll::Pending;
                    }
                };
                drop(inner);
                drop(replaced);
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll<T>(landing: &mut Landing<T>) -> Poll<Option<Option<Arc<T>>>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(landing).poll(&mut cx)
    }

    #[test]
    fn a_landing_is_pending_until_the_flight_completes() {
        let flight = Flight::<u8>::new(0, true);
        let mut landing = Landing::new(Arc::clone(&flight));
        assert!(poll(&mut landing).is_pending());
        assert!(poll(&mut landing).is_pending());
        // One entry per landing, however its waker compares.
        assert_eq!(
            flight.inner.lock().wakers.len(),
            1,
            "one landing, one waker"
        );
        let value = Arc::new(7);
        flight.complete(Some(Some(Arc::clone(&value))));
        match poll(&mut landing) {
            Poll::Ready(Some(Some(got))) => assert!(Arc::ptr_eq(&got, &value)),
            other => panic!("expected the loaded value, got {:?}", other.is_ready()),
        }
        assert!(flight.inner.lock().wakers.is_empty());
    }

    #[test]
    fn an_abandoned_flight_sends_its_landings_to_load_for_themselves() {
        let flight = Flight::<u8>::new(0, true);
        let mut landing = Landing::new(Arc::clone(&flight));
        assert!(poll(&mut landing).is_pending());
        flight.complete(None);
        assert!(matches!(poll(&mut landing), Poll::Ready(None)));
    }

    #[test]
    fn a_thread_does_not_wait_for_a_load_no_thread_has_begun() {
        let flight = Flight::<u8>::new(0, true);
        assert!(flight.wait().is_none(), "queued: load for yourself");
        flight.start();
        let waiter = {
            let flight = Arc::clone(&flight);
            std::thread::spawn(move || flight.wait())
        };
        flight.complete(Some(Some(Arc::new(7))));
        assert_eq!(waiter.join().unwrap(), Some(Some(Arc::new(7))));
    }

    /// A task that stops waiting (a client that hung up, a timeout) takes
    /// its waker back: a load that takes long (a row lock held elsewhere)
    /// while requests for its key keep giving up must not keep one waker,
    /// and with it the whole allocation of each cancelled task, per request.
    #[test]
    fn a_dropped_landing_leaves_no_waker_behind() {
        use std::task::Wake;

        struct Task;
        impl Wake for Task {
            fn wake(self: Arc<Self>) {}
        }
        let flight = Flight::<u8>::new(0, true);
        let tasks: Vec<Arc<Task>> = (0..100).map(|_| Arc::new(Task)).collect();
        for task in &tasks {
            let waker = Waker::from(Arc::clone(task));
            let mut landing = Landing::new(Arc::clone(&flight));
            assert!(Pin::new(&mut landing)
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
        } // each landing dropped, as its request was cancelled
        assert!(flight.inner.lock().wakers.is_empty(), "wakers kept");
        assert!(tasks.iter().all(|task| Arc::strong_count(task) == 1));

        // Two landings of one task (the same waker): dropping one still
        // leaves the other woken when the load ends.
        let task = Arc::new(Task);
        let waker = Waker::from(Arc::clone(&task));
        let mut cx = Context::from_waker(&waker);
        let mut first = Landing::new(Arc::clone(&flight));
        let mut second = Landing::new(Arc::clone(&flight));
        assert!(Pin::new(&mut first).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut second).poll(&mut cx).is_pending());
        drop(first);
        assert_eq!(flight.inner.lock().wakers.len(), 1, "the second's waker");
        flight.complete(Some(None));
        assert!(matches!(
            Pin::new(&mut second).poll(&mut cx),
            Poll::Ready(Some(None))
        ));
    }

    #[test]
    fn completing_wakes_the_waiting_task() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::task::Wake;

        struct Flag(AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&flag));
        let flight = Flight::<u8>::new(0, true);
        let mut landing = Landing::new(Arc::clone(&flight));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut landing).poll(&mut cx).is_pending());
        assert!(!flag.0.load(Ordering::SeqCst));
        flight.complete(Some(None));
        assert!(flag.0.load(Ordering::SeqCst), "the task was not woken");
    }
}
