//! Single-flight loads: concurrent misses of one key meet at a `Flight`; the
//! first caller (the leader) loads, the others wait on the flight, not on the
//! shard lock.

use std::sync::Arc;

use crate::sync::{Condvar, Mutex};

enum State<T> {
    Loading,
    Loaded(Option<Arc<T>>),
    /// The leader failed or panicked; waiters must load for themselves.
    Abandoned,
}

/// One in-progress load of one key.
pub(crate) struct Flight<T> {
    /// The shard epoch when the load began; the fill is dropped if it moved.
    pub(crate) epoch: u64,
    state: Mutex<State<T>>,
    done: Condvar,
}

impl<T> Flight<T> {
    pub(crate) fn new(epoch: u64) -> Arc<Flight<T>> {
        Arc::new(Flight {
            epoch,
            state: Mutex::new(State::Loading),
            done: Condvar::new(),
        })
    }

    /// Publishes the leader's result and wakes every waiter.
    pub(crate) fn complete(&self, value: Option<Option<Arc<T>>>) {
        {
            let mut state = self.state.lock();
            *state = match value {
                Some(value) => State::Loaded(value),
                None => State::Abandoned,
            };
        }
        self.done.notify_all();
    }

    /// Blocks until the leader finishes. `None` means it failed and the caller
    /// must load by itself.
    pub(crate) fn wait(&self) -> Option<Option<Arc<T>>> {
        let mut state = self.state.lock();
        loop {
            match &*state {
                State::Loading => self.done.wait(&mut state),
                State::Loaded(value) => return Some(value.clone()),
                State::Abandoned => return None,
            }
        }
    }
}
