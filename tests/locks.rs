//! Named locks across processes, on every backend: real OS processes (this
//! test binary run again as a worker: `worker_process` does nothing unless
//! `LARDER_LOCK_WORKER` names a role), real servers, `SIGKILL`,
//! `pg_terminate_backend` and `KILL`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{assert_pool_idle, each_backend, TestDb};
use diesel::connection::SimpleConnection;
use diesel::dsl::sql;
use diesel::sql_types::BigInt;
use diesel::RunQueryDsl;
use larder::{Backend, Error, Store};
use larder_blog::prelude::*;

const ROLE: &str = "LARDER_LOCK_WORKER";
const URL: &str = "LARDER_LOCK_URL";
/// Lines a worker prints for its parent start with this.
const SAYS: &str = "LOCK ";

// ---------------------------------------------------------------------------
// The worker side.

/// Not a test of its own: the body of every worker process.
#[test]
fn worker_process() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let url = std::env::var(URL).expect("worker URL");
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let store = Store::builder(&url)
        .coherence(false)
        .pool_size(2)
        .lock_timeout(Duration::from_secs(20))
        .build()
        .expect("worker store");
    match role.as_str() {
        "increment" => increment(
            &store,
            &url,
            env("COUNT").parse().unwrap(),
            env("BYPASS") == "1",
        ),
        "hold" => {
            let guard = store.lock(&env("NAME")).expect("hold the lock");
            say(&format!("held {}", guard.fencing_token()));
            std::thread::sleep(Duration::from_secs(120));
        }
        "deadlock" => {
            let _first = store.lock(&env("FIRST")).expect("first lock");
            say("holding");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            let outcome = match store.lock(&env("SECOND")) {
                Ok(_) => "ok".to_owned(),
                Err(Error::Deadlock { .. }) => "deadlock".to_owned(),
                Err(Error::LockTimeout { .. }) => "timeout".to_owned(),
                Err(other) => format!("other {other}"),
            };
            say(&format!("result {outcome}"));
        }
        "tokens" => {
            for _ in 0..env("COUNT").parse().unwrap() {
                let guard = store.lock("tokens").expect("token lock");
                say(&format!("token {}", guard.fencing_token()));
            }
        }
        other => panic!("unknown worker role {other}"),
    }
    say("done");
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{SAYS}{line}").unwrap();
    out.flush().unwrap();
}

/// Read, sleep, write: increments overlap (and get lost) unless excluded.
fn increment(store: &Store, url: &str, count: usize, bypass: bool) {
    let mut conn = larder::Connection::establish(url).expect("counter connection");
    for _ in 0..count {
        let mut step = || {
            let n: i64 = larder::with_connection!(&mut conn, |c| diesel::select(sql::<BigInt>(
                "(SELECT n FROM lock_counter WHERE id = 1)"
            ))
            .get_result(c))
            .expect("read the counter");
            std::thread::sleep(Duration::from_millis(2));
            conn.batch_execute(&format!(
                "UPDATE lock_counter SET n = {} WHERE id = 1",
                n + 1
            ))
            .expect("write the counter");
            Ok::<_, Error>(())
        };
        if bypass {
            step().unwrap();
        } else {
            store
                .with_lock("counter", step)
                .expect("increment under the lock");
        }
    }
}

// ---------------------------------------------------------------------------
// The parent side.

/// A worker process, killed if still running when dropped.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Worker {
    fn spawn(role: &str, url: &str, env: &[(&str, &str)]) -> Worker {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "worker_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, role)
            .env(URL, url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn a worker");
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The harness prints "test worker_process ... " before the
                // test's first line, on the same line.
                if let Some(at) = line.find(SAYS) {
                    let _ = send.send(line[at + SAYS.len()..].to_owned());
                }
            }
        });
        Worker {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    /// The worker's next line; fails the test if none comes within `within`.
    fn next(&self, within: Duration) -> String {
        self.lines
            .recv_timeout(within)
            .unwrap_or_else(|_| panic!("the worker said nothing within {within:?}"))
    }

    fn tell(&mut self) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for `done`, then for the process to exit successfully.
    fn finish(mut self, within: Duration) -> Vec<String> {
        let mut said = Vec::new();
        loop {
            let line = self.next(within);
            if line == "done" {
                break;
            }
            said.push(line);
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "worker failed: {status}");
        said
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A store on `db`'s database with its own lock timeout.
fn store_with_timeout(db: &TestDb, timeout: Duration) -> Store {
    Store::builder(&db.url())
        .coherence(false)
        .lock_timeout(timeout)
        .build()
        .unwrap()
}

fn counter(db: &TestDb) -> i64 {
    let mut conn = larder::Connection::establish(&db.url()).unwrap();
    larder::with_connection!(&mut conn, |c| diesel::select(sql::<BigInt>(
        "(SELECT n FROM lock_counter WHERE id = 1)"
    ))
    .get_result(c))
    .unwrap()
}

/// Runs `increments` read-sleep-write increments in each of `processes`
/// workers; returns the final count.
fn run_increments(db: &TestDb, processes: usize, increments: usize, bypass: bool) -> i64 {
    db.raw("CREATE TABLE lock_counter (id BIGINT PRIMARY KEY NOT NULL, n BIGINT NOT NULL)");
    db.raw("INSERT INTO lock_counter (id, n) VALUES (1, 0)");
    let count = increments.to_string();
    let bypass = if bypass { "1" } else { "0" };
    let workers: Vec<_> = (0..processes)
        .map(|_| {
            Worker::spawn(
                "increment",
                &db.url(),
                &[("COUNT", &count), ("BYPASS", bypass)],
            )
        })
        .collect();
    for worker in workers {
        worker.finish(Duration::from_secs(120));
    }
    counter(db)
}

#[test]
fn processes_incrementing_under_the_lock_lose_no_increment() {
    each_backend(|target| {
        let db = target.fresh();
        let (processes, increments) = (3, 20);
        let bypass = std::env::var("LARDER_LOCK_TEST_BYPASS").is_ok_and(|v| v == "1");
        let count = run_increments(&db, processes, increments, bypass);
        assert_eq!(count, (processes * increments) as i64);
    });
}

#[test]
fn a_holder_killed_with_sigkill_frees_the_lock_within_the_timeout() {
    each_backend(|target| {
        let db = target.fresh();
        let holder = Worker::spawn("hold", &db.url(), &[("NAME", "front-page")]);
        let said = holder.next(Duration::from_secs(30));
        let held_token: u64 = said.strip_prefix("held ").unwrap().parse().unwrap();

        // Held by another process: try_lock does not wait, lock waits its timeout.
        assert!(db.store.try_lock("front-page").unwrap().is_none());
        let impatient = store_with_timeout(&db, Duration::from_millis(300));
        let started = Instant::now();
        match impatient.lock("front-page") {
            Err(Error::LockTimeout { name, timeout, .. }) => {
                assert_eq!(name, "\"front-page\"");
                assert_eq!(timeout, Duration::from_millis(300));
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() >= Duration::from_millis(300));

        let mut holder = holder;
        holder.child.kill().unwrap(); // SIGKILL: no destructor runs
        holder.child.wait().unwrap();
        let patient = store_with_timeout(&db, Duration::from_secs(10));
        let started = Instant::now();
        let guard = patient
            .lock("front-page")
            .expect("the dead holder's lock is free");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(guard.fencing_token() > held_token);
    });
}

#[test]
fn a_deadlock_between_two_processes_fails_at_least_one_side() {
    each_backend(|target| {
        let db = target.fresh();
        let mut a = Worker::spawn("deadlock", &db.url(), &[("FIRST", "x"), ("SECOND", "y")]);
        let mut b = Worker::spawn("deadlock", &db.url(), &[("FIRST", "y"), ("SECOND", "x")]);
        assert_eq!(a.next(Duration::from_secs(30)), "holding");
        assert_eq!(b.next(Duration::from_secs(30)), "holding");
        a.tell();
        b.tell();
        // Well within the workers' 20 s lock timeout: a detector answered.
        let results: Vec<String> = [a, b]
            .into_iter()
            .map(|w| w.finish(Duration::from_secs(15)).remove(0))
            .collect();
        assert!(
            results.iter().any(|r| r == "result deadlock"),
            "{results:?}"
        );
        assert!(
            results
                .iter()
                .all(|r| r == "result deadlock" || r == "result ok"),
            "{results:?}"
        );
    });
}

#[test]
fn fencing_tokens_increase_across_processes_and_reopens() {
    each_backend(|target| {
        let db = target.fresh();
        let first = db.store.lock("tokens").unwrap().fencing_token();
        let workers: Vec<_> = (0..2)
            .map(|_| Worker::spawn("tokens", &db.url(), &[("COUNT", "10")]))
            .collect();
        let mut all = vec![first];
        for worker in workers {
            let tokens: Vec<u64> = worker
                .finish(Duration::from_secs(60))
                .iter()
                .map(|line| line.strip_prefix("token ").unwrap().parse().unwrap())
                .collect();
            assert_eq!(tokens.len(), 10);
            assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
            assert!(tokens[0] > first, "{tokens:?} after {first}");
            all.extend(tokens);
        }
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 21, "every acquisition has its own token");
        let reopened = store_with_timeout(&db, Duration::from_secs(5));
        let after = reopened.lock("tokens").unwrap().fencing_token();
        assert!(after > *all.last().unwrap());
    });
}

/// Whether another thread (so another session) can take `name` now.
fn free_for_another_thread(store: &Store, name: &str) -> bool {
    let store = store.clone();
    let name = name.to_owned();
    std::thread::spawn(move || store.try_lock(&name).unwrap().is_some())
        .join()
        .unwrap()
}

#[test]
fn err_and_panic_inside_with_lock_release_it_and_the_pool_is_whole() {
    each_backend(|target| {
        let db = target.fresh();
        let store = &db.store;
        let failed: Result<(), Error> = store.with_lock("job", || {
            assert!(!free_for_another_thread(store, "job"));
            Err(Error::InvalidConfig {
                reason: "the job failed".into(),
            })
        });
        assert!(matches!(failed, Err(Error::InvalidConfig { .. })));
        assert!(free_for_another_thread(store, "job"));

        let panicked = catch_unwind(AssertUnwindSafe(|| {
            store.with_lock("job", || -> larder::Result<()> {
                panic!("the job panicked")
            })
        }));
        assert!(panicked.is_err());
        assert!(free_for_another_thread(store, "job"));
        assert!(store.try_lock("job").unwrap().is_some(), "not left claimed");

        let value = store.with_lock("job", || Ok::<_, Error>(7)).unwrap();
        assert_eq!(value, 7);
        assert_pool_idle(store);
    });
}

#[test]
fn taking_a_lock_this_thread_holds_is_an_error_and_threads_exclude_each_other() {
    each_backend(|target| {
        let db = target.fresh();
        let store = &db.store;
        let guard = store.lock("a").unwrap();
        for again in [
            store.lock("a").map(drop),
            store.try_lock("a").map(drop),
            store.with_lock("a", || Ok(())),
        ] {
            match again {
                Err(Error::LockHeld { name, .. }) => assert_eq!(name, "\"a\""),
                other => panic!("expected LockHeld, got {other:?}"),
            }
        }
        assert!(guard.is_held(), "the refused re-entry released nothing");
        assert!(!free_for_another_thread(store, "a"));
        let url = db.url();
        let waited = std::thread::spawn(move || {
            let impatient = Store::builder(&url)
                .coherence(false)
                .connection_timeout(Duration::from_millis(200)) // the lock timeout's default
                .build()
                .unwrap();
            impatient.lock("a").map(drop)
        })
        .join()
        .unwrap();
        assert!(
            matches!(waited, Err(Error::LockTimeout { timeout, .. }) if timeout == Duration::from_millis(200)),
            "{waited:?}"
        );
        drop(guard);
        assert!(free_for_another_thread(store, "a"));
        assert!(store.lock("a").is_ok(), "free again for this thread");
    });
}

/// Ends the lock session's connection from outside, as an operator or a
/// failing network would: `pg_terminate_backend`, `KILL`; on SQLite the
/// lock directory is deleted.
fn kill_lock_session(db: &TestDb, name: &str) {
    match db.backend {
        Backend::Postgres => db.raw(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'larder lock' AND datname = current_database()",
        ),
        Backend::Mysql => {
            let mut conn = larder::Connection::establish(&db.url()).unwrap();
            let id: i64 = larder::with_connection!(&mut conn, |c| diesel::select(sql::<BigInt>(
                &format!("IS_USED_LOCK(CONCAT(DATABASE(), '.{name}'))")
            ))
            .get_result(c))
            .unwrap();
            conn.batch_execute(&format!("KILL {id}")).unwrap();
        }
        _ => {
            let locks = db.dir.path().join("test.db.locks");
            std::fs::remove_dir_all(locks).unwrap();
        }
    }
}

#[test]
fn a_lost_lock_session_is_detected_and_with_lock_reports_it() {
    each_backend(|target| {
        let db = target.fresh();
        let guard = db.store.lock("lost").unwrap();
        assert!(guard.is_held());
        kill_lock_session(&db, "lost");
        assert!(!guard.is_held(), "the guard knows its lock is gone");
        assert!(free_for_another_thread(&db.store, "lost"));
        drop(guard); // releasing a lost lock is quiet

        let result = db.store.with_lock("lost", || {
            kill_lock_session(&db, "lost");
            Ok::<_, Error>("ran")
        });
        match result {
            Err(Error::LockLost { name, .. }) => assert_eq!(name, "\"lost\""),
            other => panic!("expected LockLost, got {other:?}"),
        }
        let again = db
            .store
            .lock("lost")
            .expect("a new session after the lost one");
        assert!(again.is_held());
        assert_pool_idle(&db.store);
    });
}

#[test]
fn hostile_lock_names_get_typed_errors_or_work() {
    each_backend(|target| {
        let db = target.fresh();
        let store = &db.store;
        for bad in [String::new(), "x".repeat(1 << 20)] {
            let err = store.lock(&bad).unwrap_err();
            assert!(matches!(err, Error::InvalidLockName { .. }), "{err:?}");
            assert!(err.to_string().len() < 200, "the name is cut: {err}");
        }
        let names = [
            "nul\0inside".to_owned(),
            "it's \"quoted\"; DROP TABLE users; --".to_owned(),
            "日本語の🔒".to_owned(),
            "\u{202e}right-to-left\u{feff}".to_owned(),
            "%_\\ like wildcards".to_owned(),
            "n".repeat(100), // over MySQL's 64 characters: hashed there
            "m".repeat(1024),
        ];
        for name in &names {
            let guard = store.lock(name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
            assert_eq!(guard.name(), name);
            assert!(guard.is_held(), "{name:?}");
            assert!(!free_for_another_thread(store, name), "{name:?}");
            drop(guard);
            assert!(free_for_another_thread(store, name), "{name:?}");
        }
        // Names differing only past MySQL's limit are different locks.
        let a = store.lock(&format!("{}a", "n".repeat(100))).unwrap();
        assert!(free_for_another_thread(
            store,
            &format!("{}b", "n".repeat(100))
        ));
        drop(a);
        let err = store
            .lock("ctl\u{1b}[31m")
            .and_then(|g| store.lock("ctl\u{1b}[31m").map(|_| drop(g)))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "lock \"ctl\\u{1b}[31m\" is already held by this thread"
        );
        users_still_work(store);
    });
}

fn users_still_work(store: &Store) {
    let user = common::user(store, "still-works");
    assert_eq!(
        store.users().get(user.id).unwrap().unwrap().name,
        "still-works"
    );
}

#[test]
fn holding_more_locks_than_the_pool_has_connections_starves_no_repository() {
    each_backend(|target| {
        let db = target.fresh_with(|b| b.pool_size(2).connection_timeout(Duration::from_secs(2)));
        let threads = 4;
        let holding = Arc::new(Barrier::new(threads + 1));
        let done = Arc::new(Barrier::new(threads + 1));
        let holders: Vec<_> = (0..threads)
            .map(|t| {
                let (store, holding, done) = (db.store.clone(), holding.clone(), done.clone());
                std::thread::spawn(move || {
                    let guards: Vec<_> = (0..3)
                        .map(|i| store.lock(&format!("many-{t}-{i}")).unwrap())
                        .collect();
                    holding.wait();
                    done.wait();
                    drop(guards);
                })
            })
            .collect();
        holding.wait();
        // 12 locks held on 4 sessions; the pool of 2 serves repositories.
        for i in 0..5 {
            users_still_work_named(&db.store, &format!("u{i}"));
        }
        assert!(db.store.stats().pool.connections <= 2);
        done.wait();
        for holder in holders {
            holder.join().unwrap();
        }
        assert_pool_idle(&db.store);
    });
}

fn users_still_work_named(store: &Store, name: &str) {
    let user = common::user(store, name);
    assert_eq!(store.users().get(user.id).unwrap().unwrap().name, name);
}

#[test]
fn a_zero_lock_timeout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("z.db").display());
    let err = Store::builder(&url)
        .lock_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
}

/// Processes may name one SQLite file in different ways: through a
/// symlink to it, or as a URI filename whose percent-escapes SQLite decodes.
/// SQLite opens the one database either way; its locks must be taken in one
/// place too, or two processes hold the same lock at once.
#[test]
#[cfg(unix)] // symlinks
fn sqlite_locks_exclude_whatever_the_spelling_of_the_database_file() {
    let db = common::fresh();
    let dir = db.dir.path();
    let link = dir.join("link.db");
    std::os::unix::fs::symlink(dir.join("test.db"), &link).unwrap();
    let ann = common::user(&db.store, "ann");
    let guard = db.store.lock("shared").unwrap();
    let shared: Vec<String> = [
        format!("sqlite://{}", link.display()),
        format!("sqlite:file:{}/test%2Edb", dir.display()),
    ]
    .into_iter()
    .filter(|url| {
        let other = Store::builder(url).coherence(false).build().unwrap();
        assert!(
            common::user_in_db(&other, ann.id).is_some(),
            "{url} opened another database"
        );
        free_for_another_thread(&other, "shared")
    })
    .collect();
    assert!(
        shared.is_empty(),
        "a lock held through one name of the file was free through {shared:?}"
    );
    drop(guard);
}

/// A lock session whose connection the network reset (as a load balancer
/// that resets expired flows does, or MariaDB's `wait_timeout` closing a
/// session that held its lock quietly for long) is lost: its guard says so,
/// and the thread's next lock opens a new session instead of failing on the
/// dead one for as long as that guard lives.
#[test]
fn a_lock_session_reset_by_the_network_is_replaced() {
    each_backend(|target| {
        if target.backend == Backend::Sqlite {
            return; // no network
        }
        let db = target.fresh();
        let proxy = common::proxy::Proxy::start(&db.url());
        let store = Store::builder(&proxy.url())
            .coherence(false)
            .build()
            .unwrap();
        let guard = store.lock("long-held").unwrap();
        assert!(guard.is_held());
        proxy.reset();
        assert!(!guard.is_held(), "the guard knows its lock is gone");
        let other = store.lock("another").expect("a new session for the thread");
        assert!(other.is_held());
        drop(guard);
        drop(other);
        assert!(store.lock("long-held").unwrap().is_held());
    });
}

/// The same when nothing asked the guard first: the thread's next lock
/// found the dead session only by failing on it, and failed with
/// `ConnectionLost` although nothing was taken on it and a new session
/// would have served it.
#[test]
fn a_lock_taken_after_its_threads_session_was_reset_unnoticed_gets_a_new_session() {
    each_backend(|target| {
        if target.backend == Backend::Sqlite {
            return; // no network
        }
        let db = target.fresh();
        let proxy = common::proxy::Proxy::start(&db.url());
        let store = Store::builder(&proxy.url())
            .coherence(false)
            .build()
            .unwrap();
        let guard = store.lock("long-held").unwrap();
        proxy.reset();
        let other = store.lock("another");
        assert!(
            matches!(&other, Ok(other) if other.is_held()),
            "the next lock failed on the dead session: {other:?}"
        );
        assert!(!guard.is_held(), "the guard knows its lock is gone");
        drop(guard);
        drop(other);
        let tried = store.try_lock("long-held");
        assert!(matches!(tried, Ok(Some(_))), "{tried:?}");
    });
}

/// A lock session cut on the way (the holder's side reset, the server's
/// side left open: a failed path, a NAT that dropped the flow) is lost to
/// its holder, whose guard says so, but not to the server, which went on
/// holding the lock for the dead session until its own keepalive or
/// `wait_timeout` noticed, hours later: no process could take it again.
#[test]
fn a_lock_whose_session_was_cut_unseen_by_the_server_can_be_taken_again() {
    each_backend(|target| {
        if target.backend == Backend::Sqlite {
            return; // no network
        }
        let db = target.fresh();
        let proxy = common::proxy::Proxy::start(&db.url());
        let store = Store::builder(&proxy.url())
            .coherence(false)
            .lock_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let guard = store.lock("half-open").unwrap();
        proxy.reset_clients();
        assert!(!guard.is_held(), "the guard knows its lock is gone");
        drop(guard);
        let again = store.lock("half-open");
        assert!(
            matches!(&again, Ok(again) if again.is_held()),
            "the server still holds the lock for the cut session: {again:?}"
        );
    });
}

/// A lock session lost while it waited (the network reset it) ends the wait
/// within the lock timeout. The retry on a new session, meant for a session
/// found dead before anything was waited, waited the whole lock timeout
/// again: twice the bound the caller set.
#[test]
fn a_lock_session_lost_while_waiting_fails_within_the_lock_timeout() {
    each_backend(|target| {
        if target.backend == Backend::Sqlite {
            return; // no network
        }
        let db = target.fresh();
        let holder = db.store.lock("busy").unwrap();
        let proxy = common::proxy::Proxy::start(&db.url());
        let timeout = Duration::from_secs(4);
        let store = Store::builder(&proxy.url())
            .coherence(false)
            .lock_timeout(timeout)
            .build()
            .unwrap();
        let started = Instant::now();
        let waited = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_secs(3));
                proxy.reset();
            });
            store.lock("busy").map(drop)
        });
        let took = started.elapsed();
        assert!(
            matches!(
                waited,
                Err(Error::ConnectionLost { .. } | Error::LockTimeout { .. })
            ),
            "{waited:?}"
        );
        assert!(
            took < timeout + Duration::from_millis(1500),
            "a lock lost while waiting took {took:?}, its timeout {timeout:?} ({waited:?})"
        );
        drop(holder);
    });
}

/// A lock's session is a new connection: on a server that accepts sockets
/// and never answers (hung, or behind a black-holed path), taking a lock
/// must fail within the store's timeouts, not wait for the network. On
/// PostgreSQL the session connects with libpq's `connect_timeout`; MySQL's
/// client takes none from the URL (docs/deployment.md).
#[test]
fn a_lock_on_a_server_that_stopped_answering_fails_within_the_timeouts() {
    each_backend(|target| {
        if target.backend != larder::Backend::Postgres {
            return;
        }
        let db = target.fresh();
        let proxy = common::proxy::Proxy::start(&db.url());
        let store = larder::Store::builder(&proxy.url())
            .coherence(false)
            .connection_timeout(Duration::from_secs(2))
            .lock_timeout(Duration::from_secs(2))
            .build()
            .expect("store through the proxy");
        let result = proxy
            .run_frozen(move || store.lock("frozen").map(drop))
            .expect("the lock waited for a server that never answered");
        assert!(
            matches!(result, Err(larder::Error::Connection { .. })),
            "{result:?}"
        );
    });
}

/// SQLite: each lock name is a file in `<database>.locks`, and a release
/// only unlocked its file: an application locking one name per request
/// (`user-{id}`, `order-{id}`) left a file per name ever locked, for as long
/// as the database lived. A released lock leaves no file behind, and the
/// names still exclude each other across threads meanwhile.
#[test]
fn released_sqlite_locks_leave_no_files_behind() {
    let db = common::fresh();
    for n in 0..200 {
        let guard = db.store.lock(&format!("order-{n}")).unwrap();
        assert!(!free_for_another_thread(&db.store, &format!("order-{n}")));
        drop(guard);
        assert!(free_for_another_thread(&db.store, &format!("order-{n}")));
    }
    let locks = db.dir.path().join("test.db.locks");
    let left: Vec<_> = std::fs::read_dir(&locks)
        .unwrap()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "lock"))
        .map(|entry| entry.file_name())
        .collect();
    assert!(
        left.is_empty(),
        "{} lock files left: {:?}",
        left.len(),
        &left[..left.len().min(3)]
    );
}

/// Threads of two stores (as two processes would) taking and releasing one
/// name at once, its file removed at every release: each acquisition holds
/// the name alone.
#[test]
fn sqlite_lock_files_removed_on_release_still_exclude() {
    let db = common::fresh();
    let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let store = Store::builder(&db.url()).coherence(false).build().unwrap();
            let inside = Arc::clone(&inside);
            std::thread::spawn(move || {
                for _ in 0..100 {
                    let _guard = store.lock("hot").unwrap();
                    let before = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    assert_eq!(before, 0, "two holders of one lock");
                    std::thread::yield_now();
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}
