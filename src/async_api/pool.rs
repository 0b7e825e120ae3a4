//! The one way the async layer leaves a runtime worker: tokio's blocking
//! pool, with the ways that can fail turned into [`Error::Interrupted`].

use crate::error::{Error, Interruption, Result};
use crate::thread_tx::Inherited;

/// Runs `work` on the blocking pool of the runtime the caller runs on.
pub(crate) async fn on_blocking_pool<T, F>(name: &'static str, work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let interrupted = |interruption| Error::Interrupted {
        work: name,
        interruption,
    };
    // `spawn_blocking` panics outside a runtime: a typed error instead.
    let runtime =
        tokio::runtime::Handle::try_current().map_err(|_| interrupted(Interruption::NoRuntime))?;
    // The caller waits for this work: inside the caller's open transactions,
    // its store writes would wait for their locks, which the waiting caller
    // never releases. They are refused there as they would be here.
    let inherited = Inherited::here();
    let work = move || {
        let _inside = inherited.install();
        work()
    };
    match runtime.spawn_blocking(work).await {
        Ok(result) => result,
        Err(err) if err.is_panic() => {
            tracing::warn!(work = name, "work on the blocking pool panicked");
            Err(interrupted(Interruption::Panicked))
        }
        Err(_) => Err(interrupted(Interruption::Shutdown)),
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    #[test]
    fn outside_a_runtime_the_call_is_an_error_not_a_panic() {
        // Polled on a thread with no runtime: no blocking pool to hand it to.
        let work = on_blocking_pool("test", || Ok(1));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let result = std::pin::pin!(work).poll(&mut cx);
        assert!(matches!(
            result,
            std::task::Poll::Ready(Err(Error::Interrupted {
                interruption: Interruption::NoRuntime,
                ..
            }))
        ));
    }

    #[test]
    fn a_panic_comes_back_as_an_error() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let result: Result<()> =
            runtime.block_on(on_blocking_pool("test", || panic!("on purpose")));
        let err = result.unwrap_err();
        assert!(matches!(
            err,
            Error::Interrupted {
                work: "test",
                interruption: Interruption::Panicked
            }
        ));
        assert_eq!(err.status_code(), 500);
    }
}
