//! The locks of the cache, routed through one module (as quick_cache's `shim`
//! does) so that the same code runs under shuttle's model checker. Normal
//! builds use `parking_lot` (and std's atomics); the test-only `shuttle` feature swaps in
//! shuttle's locks and atomics behind the same API, and every `lock()` becomes a point
//! where the checker may switch threads.

#[cfg(not(feature = "shuttle"))]
pub(crate) use parking_lot::{Condvar, Mutex};
#[cfg(not(feature = "shuttle"))]
pub(crate) use std::sync::atomic::AtomicUsize;

#[cfg(feature = "shuttle")]
pub(crate) use model::{Condvar, Mutex};
#[cfg(feature = "shuttle")]
pub(crate) use shuttle::sync::atomic::AtomicUsize;

#[cfg(feature = "shuttle")]
mod model {
    use std::ops::{Deref, DerefMut};
    use std::sync::PoisonError;

    /// shuttle's mutex with `parking_lot`'s API: no poisoning, guards returned directly.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(shuttle::sync::Mutex<T>);

    /// The guard keeps shuttle's guard in an `Option` so [`Condvar::wait`] can
    /// hand it to shuttle and take it back, as `parking_lot` waits on `&mut guard`.
    pub(crate) struct MutexGuard<'a, T>(Option<shuttle::sync::MutexGuard<'a, T>>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Mutex<T> {
            Mutex(shuttle::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard(Some(self.0.lock().unwrap_or_else(PoisonError::into_inner)))
        }

        #[allow(dead_code)] // used by tests that probe for held locks
        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok().map(|guard| MutexGuard(Some(guard)))
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;

        fn deref(&self) -> &T {
            self.0
                .as_deref()
                .expect("a guard holds its lock until dropped")
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.0
                .as_deref_mut()
                .expect("a guard holds its lock until dropped")
        }
    }

    #[derive(Debug, Default)]
    pub(crate) struct Condvar(shuttle::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Condvar {
            Condvar(shuttle::sync::Condvar::new())
        }

        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            if let Some(inner) = guard.0.take() {
                guard.0 = Some(self.0.wait(inner).unwrap_or_else(PoisonError::into_inner));
            }
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}
