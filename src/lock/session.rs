//! Lock sessions: the dedicated connection the locks of one thread (per
//! store) are taken on, opened outside the pool.
//!
//! Why per thread, not per lock: PostgreSQL's and MariaDB's deadlock
//! detectors see sessions. A thread holding `x` on one connection and
//! waiting for `y` on another would look, to the server, like an idle
//! session and an unrelated waiter, and a deadlock between two processes
//! would hang until the lock timeout. With every lock of a thread on one
//! session, the server sees the cycle. Why not from the pool: a session is
//! held as long as any of its locks, and repositories must never wait for
//! a connection a lock keeps.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};

use super::Owner;
use crate::backend::{self, Manager};
use crate::error::{Error, Result};
use crate::pool::{with_network_timeouts, Connection};
use crate::url::DatabaseUrl;

thread_local! {
    /// This thread's live session per store id. Weak: a session closes (and
    /// its connection with it) when the last guard using it is dropped.
    static SESSIONS: RefCell<HashMap<u64, Weak<Session>>> = RefCell::new(HashMap::new());
}

/// One thread's lock session on one store's database.
pub(crate) struct Session {
    /// `None` once closed because a release failed: closing is what makes
    /// the server drop every lock the session still held.
    conn: RefCell<Option<Connection>>,
    /// Keys held on this session, to refuse re-entry instead of waiting on
    /// ourselves.
    held: RefCell<HashSet<i64>>,
    /// Set when the connection was lost or closed: new locks need a new session.
    dead: Cell<bool>,
    /// Its server session, read when it opened, and how to reach the
    /// server to end it once lost (see [`end_lost`](Session::end_lost)).
    server: Option<backend::Session>,
    ender: Ender,
    /// Who holds and waits, for the SQLite deadlock detector's records.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    owner: String,
    /// Per-database mechanism state (MySQL's database name).
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    pub(crate) scope: String,
}

impl Session {
    /// This thread's session for `store`, opened (with `setup` run on its new
    /// connection, which returns the session's scope) if there is none or the
    /// last one died.
    pub(crate) fn for_owner(
        owner: &Owner<'_>,
        setup: impl FnOnce(&mut Connection) -> Result<String>,
    ) -> Result<Rc<Session>> {
        let existing = SESSIONS.with(|sessions| {
            let sessions = sessions.borrow();
            sessions.get(&owner.id).and_then(Weak::upgrade)
        });
        if let Some(session) = existing.filter(|s| !s.dead.get()) {
            return Ok(session);
        }
        let url = owner.url;
        let manager = Manager::new(
            with_network_timeouts(url, owner.connect_timeout)?,
            owner.busy_timeout,
        );
        let mut conn = manager.open().map_err(|err| url.connection_error(&err.0))?;
        let scope = setup(&mut conn)?;
        let server = backend::session_of(&mut conn);
        let session = Rc::new(Session {
            conn: RefCell::new(Some(conn)),
            held: RefCell::new(HashSet::new()),
            dead: Cell::new(false),
            server,
            ender: Ender {
                url: url.clone(),
                connect_timeout: owner.connect_timeout,
                busy_timeout: owner.busy_timeout,
            },
            owner: new_owner(),
            scope,
        });
        SESSIONS.with(|sessions| {
            let mut sessions = sessions.borrow_mut();
            sessions.retain(|_, weak| weak.strong_count() > 0);
            sessions.insert(owner.id, Rc::downgrade(&session));
        });
        Ok(session)
    }

    /// Records `key` as held here; false if it already is (re-entry).
    pub(crate) fn claim(&self, key: i64) -> bool {
        self.held.borrow_mut().insert(key)
    }

    /// Forgets `key`: released, or never acquired.
    pub(crate) fn unclaim(&self, key: i64) {
        self.held.borrow_mut().remove(&key);
    }

    /// Runs `work` on the session's connection; `None` when it is closed.
    /// A connection-lost error marks the session dead.
    pub(crate) fn with_conn<T>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T>,
    ) -> Option<Result<T>> {
        let mut conn = self.conn.borrow_mut();
        let result = work(conn.as_mut()?);
        if matches!(result, Err(Error::ConnectionLost { .. })) && !self.dead.replace(true) {
            self.end_lost();
        }
        Some(result)
    }

    /// Ends the server session of this lost connection: a server that did
    /// not see it go would hold its locks, for a holder that knows it lost
    /// them, until its own keepalive or timeout noticed.
    fn end_lost(&self) {
        let Some(server) = self.server else {
            return;
        };
        let ender = &self.ender;
        if !crate::lost::end_lock_session(
            &ender.url,
            ender.connect_timeout,
            ender.busy_timeout,
            server,
        ) {
            tracing::warn!(
                "could not end a lost lock session: the server may hold its locks until it notices"
            );
        }
    }

    /// Closes the connection, so the server releases every lock the
    /// session holds: the only safe end after a release failed.
    pub(crate) fn close(&self) {
        self.dead.set(true);
        let conn = self.conn.borrow_mut().take();
        drop(conn);
    }

    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }
}

/// Where and how a lost session is ended.
struct Ender {
    url: DatabaseUrl,
    connect_timeout: std::time::Duration,
    busy_timeout: std::time::Duration,
}

/// A name no other live session on this host has: the process id, a
/// per-process counter and the clock (against process ids being reused).
pub(super) fn new_owner() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}.{}.{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
