//! Named locks across processes and hosts: [`Store::lock`](crate::Store::lock),
//! [`Store::try_lock`](crate::Store::try_lock), [`Store::with_lock`](crate::Store::with_lock) and their guard, [`LockGuard`].
//!
//! The database is the arbiter, so every process sharing it agrees:
//! PostgreSQL session advisory locks (`advisory`), MySQL/MariaDB `GET_LOCK`
//! (`get_lock`), and on SQLite a `flock` on a file beside the database
//! (`flock`, with larder's own deadlock detector in `waits`). Each
//! acquisition draws a fencing token (`token`). The locks of one thread are
//! taken on one dedicated session per store (`session`), never on a pooled
//! connection.

#[cfg(feature = "postgres")]
mod advisory;
#[cfg(feature = "sqlite")]
mod flock;
#[cfg(feature = "mysql")]
mod get_lock;
mod migration;
mod name;
mod session;
mod token;
#[cfg(feature = "sqlite")]
mod waits;

use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::dialect::Backend;
use crate::error::{Error, Result};
use crate::pool::Connection;
use crate::url::DatabaseUrl;

pub(crate) use migration::MigrationLock;
use name::LockName;
use session::Session;

/// A named lock held across processes and hosts, from [`Store::lock`](crate::Store::lock) or
/// [`Store::try_lock`](crate::Store::try_lock). Dropping it releases the lock: at the end of its
/// scope, on an early `?` and during a panic alike. If the holding process
/// dies instead (even by `SIGKILL`), the database server (or, for SQLite,
/// the OS) releases it.
///
/// A guard belongs to the thread that took it (it is neither `Send` nor
/// `Sync`): the thread's locks share one database session, which is what
/// lets the server see a deadlock between processes.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let url = format!("sqlite://{}", dir.path().join("app.db").display());
/// let store = larder::Store::open(&url)?;
/// store.migrate()?; // the fencing tokens' table
/// let guard = store.lock("front-page")?;
/// assert_eq!(guard.name(), "front-page");
/// assert!(guard.is_held());
/// let first = guard.fencing_token();
/// drop(guard); // released
/// assert!(store.lock("front-page")?.fencing_token() > first);
/// # Ok::<(), larder::Error>(())
/// ```
#[must_use = "dropping a LockGuard releases the lock at once"]
pub struct LockGuard {
    session: Rc<Session>,
    name: LockName,
    /// `None` once released.
    held: Option<Held>,
    token: u64,
}

/// What one backend's mechanism needs to release and check a held lock.
#[derive(Debug)]
enum Held {
    #[cfg(feature = "sqlite")]
    File(flock::FileLock),
    #[cfg(feature = "postgres")]
    Advisory,
    /// The name the server knows the lock by.
    #[cfg(feature = "mysql")]
    GetLock(String),
}

/// How long an acquisition may wait (PostgreSQL's bound is the session's
/// `lock_timeout`, set when it opens, unless the wait is shorter).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(any(feature = "sqlite", feature = "mysql")), allow(dead_code))]
enum Wait {
    Upto(Duration),
    No,
}

impl Wait {
    /// What is left of this wait after `spent`; `None` when nothing is.
    fn left_after(self, spent: Duration) -> Option<Wait> {
        match self {
            Wait::No => Some(Wait::No),
            Wait::Upto(t) => t
                .checked_sub(spent)
                .filter(|left| !left.is_zero())
                .map(Wait::Upto),
        }
    }
}

/// Whose locks these are: what the lock module needs of a store, so that
/// it does not depend on the store (which takes the migration lock).
pub(crate) struct Owner<'a> {
    /// The store's id: this thread's sessions are kept per store.
    pub(crate) id: u64,
    /// Where its sessions connect (the store's session URL).
    pub(crate) url: &'a DatabaseUrl,
    pub(crate) busy_timeout: Duration,
    pub(crate) lock_timeout: Duration,
    /// How long opening a session may take (the store's connection timeout).
    pub(crate) connect_timeout: Duration,
}

/// [`Store::lock`](crate::Store::lock) for `owner`.
pub(crate) fn lock(owner: &Owner<'_>, name: &str) -> Result<LockGuard> {
    match acquire(owner, name, Wait::Upto(owner.lock_timeout))? {
        Some(guard) => Ok(guard),
        None => Err(Error::LockTimeout {
            name: name::shown(name),
            timeout: owner.lock_timeout,
        }),
    }
}

/// [`Store::try_lock`](crate::Store::try_lock) for `owner`.
pub(crate) fn try_lock(owner: &Owner<'_>, name: &str) -> Result<Option<LockGuard>> {
    acquire(owner, name, Wait::No)
}

/// [`Store::with_lock`](crate::Store::with_lock) for `owner`.
pub(crate) fn with_lock<T, E, F>(
    owner: &Owner<'_>,
    name: &str,
    work: F,
) -> std::result::Result<T, E>
where
    F: FnOnce() -> std::result::Result<T, E>,
    E: From<Error>,
{
    let guard = lock(owner, name)?;
    let value = work()?;
    if !guard.is_held() {
        return Err(Error::LockLost {
            name: guard.name.shown(),
        }
        .into());
    }
    // A failed release closes the session, which releases the lock: the
    // work's result stands (the failure is logged).
    drop(guard);
    Ok(value)
}

/// Takes the lock `name` for `owner` (see [`Store::lock`](crate::Store::lock)).
fn acquire(owner: &Owner<'_>, name: &str, wait: Wait) -> Result<Option<LockGuard>> {
    let name = LockName::new(name)?;
    if owner.url.backend() == Backend::Sqlite {
        // The fencing token is a write, and the thread's own transaction
        // holds SQLite's one write lock: it would wait out the busy timeout.
        crate::thread_tx::refuse_inside(owner.id, "lock", None)?;
    }
    let started = Instant::now();
    let (session, held) = match take_on_session(owner, &name, wait) {
        Err(err @ Error::ConnectionLost { .. }) => {
            // The thread's session died unnoticed (reset while its locks
            // were held quietly): it is marked dead now, and nothing is held
            // on a lost session, so a new one serves the lock, within what
            // is left of the wait (a session lost while waiting spent some).
            let Some(left) = wait.left_after(started.elapsed()) else {
                return Err(err);
            };
            tracing::debug!(lock = %name.shown(), "lock session lost; taking the lock on a new one");
            take_on_session(owner, &name, left)?
        }
        taken => taken?,
    };
    let Some(held) = held else {
        return Ok(None);
    };
    let mut guard = LockGuard {
        session,
        name,
        held: Some(held),
        token: 0,
    };
    // On an error here the guard is dropped, which releases the lock.
    guard.token = guard.draw_token()?;
    tracing::debug!(lock = %guard.name.shown(), token = guard.token, "lock acquired");
    Ok(Some(guard))
}

/// Takes the lock `name` on this thread's session for `owner`; `None`
/// when it was not free or the wait timed out.
fn take_on_session(
    owner: &Owner<'_>,
    name: &LockName,
    wait: Wait,
) -> Result<(Rc<Session>, Option<Held>)> {
    let timeout = owner.lock_timeout;
    let session = Session::for_owner(owner, |conn| setup(conn, timeout))?;
    if !session.claim(name.key()) {
        return Err(Error::LockHeld { name: name.shown() });
    }
    match take(owner, &session, name, wait) {
        Ok(Some(held)) => Ok((session, Some(held))),
        other => {
            session.unclaim(name.key());
            other.map(|_| (session, None))
        }
    }
}

impl LockGuard {
    /// The lock's name, as given to [`Store::lock`](crate::Store::lock).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = larder::Store::open(dir.path().join("app.db").to_str().unwrap())?;
    /// # store.migrate()?;
    /// assert_eq!(store.lock("digest")?.name(), "digest");
    /// # Ok::<(), larder::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// This acquisition's fencing token: larger than the token of every
    /// earlier acquisition of the same name, by any process on any host,
    /// before or after restarts (the counter lives in the database, table
    /// `larder_lock_tokens`).
    ///
    /// A holder can be paused (a long GC, a stopped VM, a lost network)
    /// until its lock is lost and another process takes it; when it wakes
    /// up it still believes it holds the lock. Writes made under the lock
    /// that carry the token, and that the database applies only if no
    /// larger token was seen (`UPDATE … SET token = $token WHERE token <
    /// $token`), refuse that late holder (Kleppmann, "How to do
    /// distributed locking"). The blog's `rebuild_front_page` does so.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = larder::Store::open(dir.path().join("app.db").to_str().unwrap())?;
    /// # store.migrate()?;
    /// let first = store.lock("front-page")?.fencing_token();
    /// let second = store.lock("front-page")?.fencing_token();
    /// assert!(second > first);
    /// # Ok::<(), larder::Error>(())
    /// ```
    pub fn fencing_token(&self) -> u64 {
        self.token
    }

    /// Whether the lock is still held: false once its database session was
    /// lost (a server restart, `pg_terminate_backend`, `KILL`, a network
    /// cut), after which another process may hold it, and on SQLite when
    /// its lock file was deleted or replaced. Asks the database (one round
    /// trip on PostgreSQL and MySQL).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = larder::Store::open(dir.path().join("app.db").to_str().unwrap())?;
    /// # store.migrate()?;
    /// let guard = store.lock("front-page")?;
    /// assert!(guard.is_held());
    /// # Ok::<(), larder::Error>(())
    /// ```
    pub fn is_held(&self) -> bool {
        let Some(held) = &self.held else {
            return false;
        };
        let asked = self.session.with_conn(|conn| match (held, conn) {
            #[cfg(feature = "sqlite")]
            (Held::File(file), _) => Ok(file.is_current()),
            #[cfg(feature = "postgres")]
            (Held::Advisory, Connection::Postgres(c)) => {
                advisory::is_held(c, self.name.key()).map_err(|e| Error::from_diesel(e, None, None))
            }
            #[cfg(feature = "mysql")]
            (Held::GetLock(server_name), Connection::Mysql(c)) => {
                get_lock::is_held(c, server_name).map_err(|e| Error::from_diesel(e, None, None))
            }
            #[allow(unreachable_patterns)]
            _ => Ok(false),
        });
        matches!(asked, Some(Ok(true)))
    }

    /// Releases the lock now, reporting a failure that dropping the guard
    /// would only log. Either way the lock is not held afterwards: when the
    /// release statement fails, the session is closed, which makes the
    /// server release every lock it held (this thread's other locks on
    /// this store then report [`is_held`](LockGuard::is_held) false).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = larder::Store::open(dir.path().join("app.db").to_str().unwrap())?;
    /// # store.migrate()?;
    /// store.lock("front-page")?.release()?;
    /// # Ok::<(), larder::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::ConnectionLost`] or [`Error::Database`] when the release
    /// statement failed; [`Error::LockFile`] when SQLite's lock file could
    /// not be unlocked (closing it unlocks it).
    pub fn release(mut self) -> Result<()> {
        self.release_held()
    }

    fn release_held(&mut self) -> Result<()> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        let key = self.name.key();
        let released = match held {
            #[cfg(feature = "sqlite")]
            Held::File(file) => file.release().map_err(|source| Error::LockFile {
                name: self.name.shown(),
                source,
            }),
            #[cfg(feature = "postgres")]
            Held::Advisory => self.unlock_on_session(|conn| match conn {
                Connection::Postgres(c) => advisory::unlock(c, key),
                #[allow(unreachable_patterns)]
                _ => Ok(false),
            }),
            #[cfg(feature = "mysql")]
            Held::GetLock(server_name) => self.unlock_on_session(|conn| match conn {
                Connection::Mysql(c) => get_lock::unlock(c, &server_name),
                #[allow(unreachable_patterns)]
                _ => Ok(false),
            }),
        };
        self.session.unclaim(key);
        if released.is_err() {
            // Whatever the server still holds for this session goes with it.
            self.session.close();
        }
        tracing::debug!(lock = %self.name.shown(), ok = released.is_ok(), "lock released");
        released
    }

    /// Runs a release statement; a closed session has released everything.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    fn unlock_on_session(
        &self,
        unlock: impl FnOnce(&mut Connection) -> diesel::QueryResult<bool>,
    ) -> Result<()> {
        let outcome = self
            .session
            .with_conn(|conn| unlock(conn).map_err(|e| Error::from_diesel(e, None, None)));
        match outcome {
            None | Some(Ok(true)) => Ok(()),
            Some(Ok(false)) => {
                tracing::warn!(lock = %self.name.shown(), "lock was not held when released (session lost and replaced?)");
                Ok(())
            }
            Some(Err(err)) => Err(err),
        }
    }

    fn draw_token(&self) -> Result<u64> {
        let key = self.name.key();
        let drawn = self.session.with_conn(|conn| {
            token::next(conn, key).map_err(|e| Error::from_diesel(e, Some(token::TABLE), None))
        });
        let token = drawn.unwrap_or_else(|| Err(lost_before_token(&self.name)))?;
        // Tokens start at 1 and only grow: never negative.
        Ok(u64::try_from(token).unwrap_or_default())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Err(err) = self.release_held() {
            tracing::warn!(lock = %self.name.shown(), error = %err, "releasing a lock failed; its session was closed, which releases it");
        }
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("fencing_token", &self.token)
            .finish_non_exhaustive()
    }
}

/// Prepares a new lock session; returns its scope (MySQL: the database).
fn setup(conn: &mut Connection, timeout: Duration) -> Result<String> {
    let _ = timeout;
    let prepared = match conn {
        #[cfg(feature = "sqlite")]
        Connection::Sqlite(_) => Ok(String::new()),
        #[cfg(feature = "postgres")]
        Connection::Postgres(c) => advisory::setup(c, timeout).map(|()| String::new()),
        #[cfg(feature = "mysql")]
        Connection::Mysql(c) => get_lock::scope(c),
    };
    prepared.map_err(|e| Error::from_diesel(e, None, None))
}

/// Takes the lock with the session's backend mechanism; `None` when it was
/// not free (`try_lock`) or the wait timed out.
fn take(owner: &Owner<'_>, session: &Session, name: &LockName, wait: Wait) -> Result<Option<Held>> {
    let _ = owner; // the servers' lock timeout
    let taken = session.with_conn(|conn| match conn {
        #[cfg(feature = "sqlite")]
        Connection::Sqlite(c) => {
            let dir = flock::lock_dir(c).map_err(|e| Error::from_diesel(e, None, None))?;
            let upto = match wait {
                Wait::Upto(t) => Some(t),
                Wait::No => None,
            };
            match flock::lock(&dir, name.key(), session.owner(), upto) {
                Ok(file) => Ok(file.map(Held::File)),
                Err(flock::Refused::Timeout) => Ok(None),
                Err(flock::Refused::Deadlock) => Err(Error::Deadlock { name: name.shown() }),
                Err(flock::Refused::Io(source)) => Err(Error::LockFile {
                    name: name.shown(),
                    source,
                }),
            }
        }
        #[cfg(feature = "postgres")]
        Connection::Postgres(c) => {
            let taken = match wait {
                Wait::Upto(t) if t < owner.lock_timeout => {
                    advisory::lock_within(c, name.key(), t, owner.lock_timeout).map(|()| true)
                }
                Wait::Upto(_) => advisory::lock(c, name.key()).map(|()| true),
                Wait::No => advisory::try_lock(c, name.key()),
            };
            taken
                .map(|ok| ok.then_some(Held::Advisory))
                .map_err(|e| waiting_error(e, name, owner.lock_timeout))
        }
        #[cfg(feature = "mysql")]
        Connection::Mysql(c) => {
            let server_name = get_lock::server_name(&session.scope, name);
            let upto = match wait {
                Wait::Upto(t) => Some(t),
                Wait::No => None,
            };
            get_lock::lock(c, &server_name, upto)
                .map(|ok| ok.then_some(Held::GetLock(server_name)))
                .map_err(|e| waiting_error(e, name, owner.lock_timeout))
        }
    });
    taken.unwrap_or_else(|| Err(lost_before_token(name)))
}

/// A failed wait for a lock: the server's lock timeout and deadlock
/// reports (which larder's error mapping reads as a busy database and a
/// lost transaction) are the lock's own errors.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn waiting_error(err: diesel::result::Error, name: &LockName, timeout: Duration) -> Error {
    match Error::from_diesel(err, None, None) {
        Error::Busy { .. } => Error::LockTimeout {
            name: name.shown(),
            timeout,
        },
        Error::Serialization { .. } => Error::Deadlock { name: name.shown() },
        other => other,
    }
}

/// The session was closed (a failed release) between opening and use.
fn lost_before_token(name: &LockName) -> Error {
    Error::LockLost { name: name.shown() }
}
