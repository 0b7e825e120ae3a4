//! Writes whose connection was lost while their statement or their COMMIT
//! was in flight (a load balancer resetting the flow, a proxy restarting):
//! the caller gets [`Error::ConnectionLost`](crate::Error::ConnectionLost),
//! but the server may not have noticed and may still commit the write, for
//! example once a lock it waits for is released. Told to the caches at once,
//! the write would retire the rows and lists it touched before it landed,
//! and a load in between would cache what was there before, for good on a
//! store that is its database's only writer. So the session is ended first
//! if it still runs a statement, from a connection of its own, and the
//! write's outcome is final once it runs none (ended, or done and idle).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::sql_types::BigInt;
use diesel::{QueryableByName, RunQueryDsl};

use crate::backend::{session_of, Connection, Manager, Session};
use crate::dialect;
use crate::pool::{with_network_timeouts, PoolConfig};
use crate::url::DatabaseUrl;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// How long the caller of a lost write waits for its session to end: past
/// it (a server that cannot be reached), the write is applied to the caches
/// as uncertain all the same.
const WAIT: Duration = Duration::from_secs(5);

/// Ends `session` on the server `url` names if it still runs a statement,
/// and waits until it runs none; returns whether that is known within
/// [`WAIT`]. The work runs on a thread of its own, so that a server that
/// cannot be reached holds the caller for [`WAIT`] at most.
pub(crate) fn end(url: &DatabaseUrl, config: &PoolConfig, session: Session) -> bool {
    let (url, busy_timeout) = (url.clone(), config.busy_timeout);
    let connect_timeout = config.connection_timeout.min(WAIT);
    within_wait(move || end_and_wait(&url, connect_timeout, busy_timeout, session))
}

/// Ends `session`, a lock session its holder found lost, idle or not, on
/// the server `url` names: a server that did not see the connection go
/// (a failed path, a dropped flow) would keep its locks until its own
/// keepalive or timeout noticed. Returns whether the statement ran within
/// [`WAIT`].
pub(crate) fn end_lock_session(
    url: &DatabaseUrl,
    connect_timeout: Duration,
    busy_timeout: Duration,
    session: Session,
) -> bool {
    let url = url.clone();
    let connect_timeout = connect_timeout.min(WAIT);
    within_wait(move || {
        let Some(mut conn) = connect_to_end(&url, connect_timeout, busy_timeout, session)? else {
            return Ok(true);
        };
        let dialect = dialect::of(conn.backend());
        // A failure may only mean the session is gone already.
        let _ = conn.batch_execute(&dialect.end_idle_session(session.id, session.started));
        Ok(true)
    })
}

/// Runs `work` on a thread of its own, so that a server that cannot be
/// reached holds the caller for [`WAIT`] at most; its outcome, false when
/// it failed or took longer.
fn within_wait(work: impl FnOnce() -> Result<bool, String> + Send + 'static) -> bool {
    let (sender, ended) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("larder-lost-session".into())
        .spawn(move || {
            let gone = work();
            if let Err(err) = &gone {
                tracing::debug!(error = %err, "could not end a lost session");
            }
            let _ = sender.send(gone.unwrap_or(false));
        });
    spawned.is_ok() && ended.recv_timeout(WAIT).unwrap_or(false)
}

/// A connection of its own to the server `session` ran on; `None` when that
/// server restarted since: the restart ended the session already, and its
/// id may now name another client's connection (MySQL), which must not be
/// ended. A server start that cannot be read counts as the same server.
fn connect_to_end(
    url: &DatabaseUrl,
    connect_timeout: Duration,
    busy_timeout: Duration,
    session: Session,
) -> Result<Option<Connection>, String> {
    let url = with_network_timeouts(url, connect_timeout).map_err(|e| e.to_string())?;
    let mut conn = Manager::new(url, busy_timeout).open().map_err(|e| e.0)?;
    let now = session_of(&mut conn).map_or(0, |ours| ours.started);
    let same = dialect::of(conn.backend()).same_server(session.started, now);
    Ok(same.then_some(conn))
}

fn end_and_wait(
    url: &DatabaseUrl,
    connect_timeout: Duration,
    busy_timeout: Duration,
    session: Session,
) -> Result<bool, String> {
    let Some(mut conn) = connect_to_end(url, connect_timeout, busy_timeout, session)? else {
        return Ok(true);
    };
    let dialect = dialect::of(conn.backend());
    // A failure may only mean the session is gone already: the count says.
    let _ = conn.batch_execute(&dialect.end_session(session.id, session.started));
    let runs = dialect.session_runs(session.id, session.started);
    let deadline = Instant::now() + WAIT;
    loop {
        let count = crate::with_connection!(&mut conn, |c| diesel::sql_query(&runs)
            .get_result::<Count>(c))
        .map_err(|e| e.to_string())?;
        if count.count == 0 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(all(test, feature = "mysql"))]
mod tests {
    use super::*;

    /// MySQL numbers connections from 1 again after a restart: a session
    /// recorded before one may share its id with another client's
    /// connection now, which ending it would kill. Stood for here by a
    /// session recorded with an earlier server start.
    #[test]
    fn a_mysql_session_from_before_a_server_restart_is_not_ended() {
        let Ok(url) = std::env::var("LARDER_TEST_MYSQL_URL") else {
            return;
        };
        let url = DatabaseUrl::parse(&url).unwrap();
        let timeout = Duration::from_secs(5);
        let mut busy = Manager::new(url.clone(), timeout).open().unwrap();
        let session = session_of(&mut busy).unwrap();
        let sleeping = std::thread::spawn(move || {
            crate::with_connection!(&mut busy, |c| {
                diesel::sql_query("SELECT SLEEP(2)").execute(c)
            })
        });
        std::thread::sleep(Duration::from_millis(300));
        let before_a_restart = Session {
            started: session.started - 3_600,
            ..session
        };
        assert_eq!(
            end_and_wait(&url, timeout, timeout, before_a_restart),
            Ok(true),
            "a session of an earlier server is gone with it"
        );
        assert!(
            sleeping.join().unwrap().is_ok(),
            "another connection that now has the id was killed"
        );
    }
}
