//! The accept loop: each connection served by hyper's HTTP/1 with a timer,
//! so that a client must send each request's head within a bound.
//! `axum::serve` configures no timer, and without one hyper never enforces
//! its header timeout: a client that sent half a head and then nothing held
//! its connection (a file descriptor, a task) for ever, and kept a graceful
//! shutdown waiting for it (slowloris).

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long a client has to send a request's head, from its first byte
/// (or, on a kept-alive connection, from the end of the previous answer).
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the loop pauses after a failed accept (no file descriptor left):
/// retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` until `stop` resolves, then waits for the
/// connections to finish the requests they are answering.
pub(crate) async fn serve(listener: TcpListener, app: Router, stop: impl Future<Output = ()>) {
    let (stopping, stopped) = watch::channel(());
    let mut stop = pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, app.clone(), stopped.clone()));
            }
            // A client that gave up while queued: nothing to wait for.
            Err(err) if client_gone(&err) => {}
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener);
    let _ = stopping.send(());
    drop(stopped);
    // Resolves once every connection task has dropped its receiver.
    stopping.closed().await;
}

/// Whether a failed accept only lost one client's connection.
fn client_gone(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// One connection, until the client closes it, its head times out, or the
/// server stops (then the request in flight is answered first).
async fn connection(stream: TcpStream, app: Router, mut stop: watch::Receiver<()>) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    let mut conn = pin!(conn);
    let done = tokio::select! {
        done = conn.as_mut() => done,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = done {
        tracing::trace!(error = %err, "connection ended");
    }
}
