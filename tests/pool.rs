//! Bounded waits: an exhausted pool and a locked database give typed errors
//! within their timeouts, and the store recovers once they are released.

mod common;

use larder_blog::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::threads::{alone_in_this_process, live_threads};
use common::{assert_pool_idle, each_backend, fresh_with, rename, user};
use larder::Error;
use larder_blog::{User, UserChanges};

#[test]
fn pool_exhaustion_is_a_timeout_error_then_recovers() {
    each_backend(|target| {
        let timeout = Duration::from_millis(300);
        let db = target.fresh_with(|b| b.pool_size(1).connection_timeout(timeout));
        let ann = user(&db.store, "ann");
        db.store.clear_cache();

        let held = db.store.begin().unwrap(); // the only connection
        let started = Instant::now();
        let err = db.store.users().get(ann.id).unwrap_err();
        let waited = started.elapsed();
        assert!(
            matches!(err, Error::PoolTimeout { timeout: t, cause: None, .. } if t == timeout),
            "{err:?}"
        );
        assert!(waited >= timeout, "gave up before the timeout: {waited:?}");
        assert!(waited < timeout * 20, "no bounded wait: {waited:?}");
        assert!(err.to_string().contains("pool exhausted"), "{err}");

        drop(held);
        assert_eq!(db.store.users().get(ann.id).unwrap().unwrap().name, "ann");
        assert_pool_idle(&db.store);
    });
}

#[test]
fn a_writer_blocked_past_the_busy_timeout_gets_a_busy_error() {
    let db = fresh_with(|b| b.pool_size(2).busy_timeout(Duration::from_millis(200)));
    let ann = user(&db.store, "ann");
    let writer = db.store.begin().unwrap(); // holds SQLite's write lock
    writer
        .users()
        .update(
            ann.id,
            UserChanges {
                name: Some("held".into()),
                ..Default::default()
            },
        )
        .unwrap();

    let changes = UserChanges {
        name: Some("blocked".into()),
        ..Default::default()
    };
    // Another thread: this one's store writes are refused while it holds `writer`.
    let err = common::on_another_thread(|| db.store.users().update(ann.id, changes).unwrap_err());
    assert!(matches!(err, Error::Busy { .. }), "{err:?}");
    // Readers are not blocked by the writer (WAL), and see committed data only.
    assert_eq!(db.store.users().get(ann.id).unwrap().unwrap().name, "ann");

    writer.commit().unwrap();
    assert_eq!(db.store.users().get(ann.id).unwrap().unwrap().name, "held");
    assert_pool_idle(&db.store);
}

#[test]
fn a_second_writer_waits_its_turn_within_the_busy_timeout() {
    let db = fresh_with(|b| b.pool_size(2).busy_timeout(Duration::from_secs(20)));
    let ann = user(&db.store, "ann");
    let writer = db.store.begin().unwrap();
    let store = db.store.clone();
    let second = std::thread::spawn(move || {
        let changes = UserChanges {
            name: Some("second".into()),
            ..Default::default()
        };
        store.users().update(ann.id, changes)
    });
    std::thread::sleep(Duration::from_millis(100));
    writer.commit().unwrap();
    assert_eq!(second.join().unwrap().unwrap().name, "second");
}

/// A checkout that times out because the database cannot be reached says so,
/// with the driver's reason: "database down" must not read as "pool exhausted".
#[test]
fn a_checkout_timeout_while_the_database_is_unreachable_names_the_cause() {
    each_backend(|target| {
        if target.backend != larder::Backend::Postgres {
            return; // a server whose database can vanish under the pool
        }
        let timeout = Duration::from_millis(500);
        let db = target.fresh_with(|b| b.pool_size(2).connection_timeout(timeout));
        let ann = user(&db.store, "ann");
        db.store.clear_cache();
        let name = db.url().rsplit('/').next().unwrap().to_owned();
        let admin = std::env::var("LARDER_TEST_POSTGRES_URL").unwrap();
        let mut conn = larder::Connection::establish(&admin).unwrap();
        diesel::connection::SimpleConnection::batch_execute(
            &mut conn,
            &format!("DROP DATABASE {name} WITH (FORCE)"),
        )
        .unwrap();
        let err = db.store.users().get(ann.id).unwrap_err();
        assert!(matches!(err, Error::PoolTimeout { .. }), "{err:?}");
        let shown = err.to_string();
        assert!(
            shown.contains("does not exist") && !shown.contains("pool exhausted"),
            "the cause is lost: {shown}"
        );
    });
}

/// A dropped store opens no connection afterwards: the pool used to open one
/// in the background whenever a checkout took its last idle connection (r2d2's
/// `min_idle`), and one still opening after the store was dropped created
/// the SQLite file again after `larder database drop` had removed it (seen
/// once in CI's `database_setup_reset_and_drop`).
#[test]
fn a_dropped_store_does_not_create_its_database_again() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("gone.db").display());
        let store = larder::Store::builder(&url)
            .coherence(false)
            .build()
            .unwrap();
        larder_blog::migrate(&store).unwrap();
        // Misses at once check out the pool's idle connections.
        std::thread::scope(|scope| {
            for id in 1..=4 {
                let store = &store;
                scope.spawn(move || assert!(store.users().get(id).unwrap().is_none()));
            }
        });
        drop(store);
        let files = ["", "-wal", "-shm"].map(|suffix| dir.path().join(format!("gone.db{suffix}")));
        for file in &files {
            let _ = std::fs::remove_file(file);
        }
        std::thread::sleep(Duration::from_millis(50));
        for file in &files {
            assert!(
                !file.exists(),
                "round {round}: something opened the dropped store's database again ({})",
                file.display()
            );
        }
    }
}

/// Stores built and dropped one after another (a test suite, a tenant's
/// store reopened, a configuration reload) leave no thread behind: r2d2's
/// pool kept its three worker threads until its next reaper run, up to 30 s
/// after the pool was dropped, so 100 stores dropped within a few seconds
/// left 300 threads, and a process under a thread limit (a container's
/// `pids.max`) failed to build its next store.
#[test]
fn dropped_stores_leave_no_threads_behind() {
    // Runs alone in its own process so other tests' threads do not count.
    let test = "dropped_stores_leave_no_threads_behind";
    if !alone_in_this_process(test, "LARDER_THREAD_COUNT") {
        return;
    }
    each_backend(|target| {
        let db = target.fresh();
        let before = live_threads().len();
        for round in 0..100 {
            let store = larder_blog::builder(&db.url())
                .coherence(round % 2 == 0)
                .build()
                .unwrap();
            assert!(store.users().get(round).unwrap().is_none());
            drop(store);
        }
        // Exiting threads are not joined: wait for them to begin their exit.
        let deadline = Instant::now() + Duration::from_secs(10);
        while live_threads().len() > before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            live_threads().len(),
            before,
            "threads of 100 dropped stores still running"
        );
    });
}

/// A server that accepts connections and then never answers (a hung server,
/// a black-holed path behind a load balancer) must not hold `build` past its
/// connection timeout: the first connection is opened on the caller's
/// thread, and without a connect timeout libpq waits for the server for as
/// long as the socket stays open. PostgreSQL only: diesel's MySQL client
/// takes no connect timeout from the URL (docs/deployment.md).
#[test]
fn building_on_a_server_that_never_answers_fails_within_the_connection_timeout() {
    each_backend(|target| {
        if target.backend != larder::Backend::Postgres {
            return;
        }
        let db = target.fresh();
        let proxy = common::proxy::Proxy::start(&db.url());
        let url = proxy.url();
        let result = proxy
            .run_frozen(move || {
                larder::Store::builder(&url)
                    .connection_timeout(Duration::from_secs(2))
                    .build()
                    .map(|_| ())
            })
            .expect("build waited for a server that never answered");
        assert!(
            matches!(result, Err(Error::Connection { .. })),
            "{result:?}"
        );
    });
}

/// A server host that vanishes without a word (a power cut, a failed path,
/// a NAT or firewall that drops the flow): its kernel answers nothing, so no
/// RST ever comes. A pooled connection waiting for an answer to a statement
/// it sent (a `get`, a write, a `COMMIT`, a lock's release) then waits for
/// good, or for the kernel's retransmissions (about 15 minutes) while its
/// request is unacknowledged; every later caller of the same key waits on
/// its flight meanwhile. libpq bounds both with TCP keepalives probing
/// soon and `tcp_user_timeout`, which the watcher's connection sets; the
/// pool's (and the lock sessions') kept libpq's defaults: keepalives after
/// the kernel's two idle hours, no user timeout. The test proxy's kernel
/// acknowledges (as a stopped server's does), so the settings are read
/// where the kernel shows them: an idle connection's keepalive timer
/// (`/proc/net/tcp`: timer kind 2, due in clock ticks of 1/100 s) must
/// fall due within a minute. PostgreSQL only: diesel's MySQL client takes
/// no such setting (docs/deployment.md).
#[test]
fn pooled_and_lock_connections_to_postgres_carry_tcp_keepalives() {
    each_backend(|target| {
        if target.backend != larder::Backend::Postgres {
            return;
        }
        let db = target.fresh();
        let proxy = common::proxy::Proxy::start(&db.url());
        let store = larder::Store::builder(&proxy.url())
            .coherence(false)
            .pool_size(2)
            .build()
            .expect("store through the proxy");
        let ann = user(&store, "ann");
        store.clear_cache();
        store.users().get(ann.id).unwrap();
        let lock = store.lock("keepalive").unwrap();
        let port = proxy
            .url()
            .split(':')
            .nth(2)
            .and_then(|rest| rest.split(['/', '?']).next()?.parse::<u16>().ok());
        let port = port.expect("the proxy's port");
        // A connection with a statement's bytes in flight shows its
        // retransmission timer (kind 1) in place of the keepalive one for
        // that moment (seen in CI): sample until none is mid-send. Without
        // keepalives an idle connection shows no timer at all (kind 0).
        let mut timers = timers_of_connections_to(port);
        for _ in 0..40 {
            if timers.iter().all(|&(kind, _)| kind != 1) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            timers = timers_of_connections_to(port);
        }
        assert!(
            timers.len() >= 2,
            "the pool's and the lock's connections: {timers:?}"
        );
        assert!(
            timers
                .iter()
                .all(|&(kind, due)| kind == 2 && due <= 60 * 100),
            "connections without a keepalive probe within a minute \
             ((timer kind, due in 1/100 s): {timers:?}, kind 2 is keepalive)"
        );
        drop(lock);
    });
}

/// What no connection setting bounds (docs/deployment.md): a server process
/// that stopped answering on a host whose kernel still acknowledges (the
/// test proxy frozen). Loads that reach it wait, but the wait spreads no
/// further than the connections they hold: hits are served, a miss that
/// finds every connection held fails with `PoolTimeout` within the
/// connection timeout, and once the server answers again the stuck loads
/// finish and the pool is whole.
#[test]
fn loads_stuck_on_a_stopped_server_leave_hits_served_and_other_misses_bounded() {
    each_backend(|target| {
        if target.backend != larder::Backend::Postgres {
            return;
        }
        let db = target.fresh();
        let proxy = common::proxy::Proxy::start(&db.url());
        let timeout = Duration::from_secs(1);
        let store = larder::Store::builder(&proxy.url())
            .coherence(false)
            .pool_size(2)
            .connection_timeout(timeout)
            .build()
            .expect("store through the proxy");
        let ids: Vec<i64> = ["ann", "bob", "cy", "dee"]
            .iter()
            .map(|name| user(&store, name).id)
            .collect();
        // Both connections open before the freeze: a transaction holds one
        // while a read takes the other.
        let open = store.begin().unwrap();
        open.users().get(ids[1]).unwrap();
        store.users().get(ids[0]).unwrap();
        drop(open);
        store.clear_cache();
        store.users().get(ids[0]).unwrap();
        proxy.freeze();
        // A forwarding thread already in a read forwards what it reads.
        std::thread::sleep(Duration::from_millis(100));
        let stuck: Vec<_> = ids[1..3]
            .iter()
            .map(|&id| {
                let store = store.clone();
                std::thread::spawn(move || store.users().get(id).map(|row| row.is_some()))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        assert!(store.users().get(ids[0]).unwrap().is_some(), "a hit");
        assert!(started.elapsed() < Duration::from_secs(1), "the hit waited");
        let (sender, done) = std::sync::mpsc::channel();
        let other = store.clone();
        let miss = ids[3];
        std::thread::spawn(move || {
            let _ = sender.send(other.users().get(miss).map(|row| row.is_some()));
        });
        let result = done
            .recv_timeout(Duration::from_secs(30))
            .expect("a miss waited for a pool held by stuck loads");
        assert!(
            matches!(result, Err(Error::PoolTimeout { .. })),
            "{result:?}"
        );
        // A load that found every connection taken (r2d2 may still have
        // been opening the second) failed with `PoolTimeout`; the others
        // waited, and finish once the server answers.
        let ended: Vec<_> = stuck.iter().map(|thread| thread.is_finished()).collect();
        proxy.thaw();
        for (thread, ended) in stuck.into_iter().zip(ended) {
            let outcome = thread.join().unwrap();
            if ended {
                assert!(
                    matches!(outcome, Err(Error::PoolTimeout { .. })),
                    "a load ended on a server that does not answer: {outcome:?}"
                );
            } else {
                assert!(outcome.unwrap(), "a stuck load, once answered");
            }
        }
        assert!(store.users().get(miss).unwrap().is_some());
        assert_pool_idle(&store);
    });
}

/// The timer of each TCP connection of this host to `127.0.0.1:port`:
/// `/proc/net/tcp`'s `tr` (0 none, 1 retransmit, 2 keepalive, 4 window
/// probe) and `tm->when`, when it falls due in clock ticks (1/100 s).
fn timers_of_connections_to(port: u16) -> Vec<(u8, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Established connections only (state 01).
            (fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"01"))
                .then(|| {
                    let (kind, due) = fields.get(5)?.split_once(':')?;
                    Some((kind.parse().ok()?, u64::from_str_radix(due, 16).ok()?))
                })
                .flatten()
        })
        .collect()
}

/// Processes starting together on a new SQLite file (every host of a
/// deployment, or `larder migrate run`s at once) all open it: the first to
/// switch it to WAL holds a lock the others' switch cannot wait for through
/// the busy handler, and an open failed with "database is locked" (seen in
/// CI: three `larder migrate run`s at once). Openers at once must all succeed.
#[test]
fn stores_opening_a_new_sqlite_file_at_once_all_succeed() {
    for round in 0..20 {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("new.db").display());
        let openers = 8;
        let start = std::sync::Barrier::new(openers);
        let results: Vec<larder::Result<()>> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..openers)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        larder::Store::builder(&url)
                            .coherence(false)
                            .pool_size(1)
                            .build()
                            .map(drop)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        for result in results {
            assert!(result.is_ok(), "round {round}: {result:?}");
        }
    }
}

/// The row's name as the database has it, read on a connection of its own
/// (neither the store's pool nor its cache).
/// A store of one pooled connection (each caller gets the connection the
/// one before used, and whatever it left there), coherence off, with user
/// "ann".
fn one_connection_with_ann(target: &common::Target) -> (common::TestDb, Arc<User>) {
    let db = target.fresh_with(|b| b.pool_size(1).coherence(false));
    let ann = user(&db.store, "ann");
    (db, ann)
}

/// The next caller's autocommitted write of row `id` on the pool's
/// connection must reach the database (not run in a transaction someone
/// left open there), and the connection come back to the pool.
fn next_write_commits(db: &common::TestDb, id: i64, name: &str, context: &str) {
    db.store.users().update(id, rename(name)).unwrap();
    assert_eq!(
        name_in_db(&db.url(), id),
        name,
        "{context}: a write reported committed is not in the database"
    );
    assert_eq!(
        db.store.users().get(id).unwrap().unwrap().name,
        name,
        "{context}: the cache serves another row than the write's"
    );
    assert_pool_idle(&db.store);
}

fn name_in_db(url: &str, id: i64) -> String {
    use diesel::prelude::*;
    use larder_blog::schema::users;
    let mut conn = larder::Connection::establish(url).expect("a connection of its own");
    let query = users::table.find(id).select(users::name);
    larder::with_connection!(&mut conn, |c| query.first::<String>(c)).expect("read the row")
}

/// An application's own SQL run through `Repo::run` that opened a
/// transaction and failed before ending it (a batch `BEGIN; …; COMMIT`
/// whose middle statement fails) gave its connection back to the pool
/// still inside that transaction: the next caller's autocommitted write ran
/// in it and was reported, and cached, as committed, but never was (on
/// SQLite the open transaction held the database's write lock meanwhile).
#[test]
fn a_transaction_left_open_by_failed_raw_sql_is_not_handed_to_the_next_caller() {
    each_backend(|target| {
        let (db, ann) = one_connection_with_ann(target);
        let store = &db.store;
        let failed = store.users().run(None, |conn| {
            use diesel::connection::SimpleConnection;
            conn.batch_execute("BEGIN; UPDATE no_such_table SET x = 1; COMMIT")
        });
        assert!(failed.is_err(), "the premise: the batch failed");
        next_write_commits(&db, ann.id, "bob", "after the failed batch");
    });
}

/// The same through `Repo::write`, whose closure runs autocommitted (the
/// blog's users write with single statements): a closure whose own batch
/// opened a transaction and failed left it open on the connection.
#[test]
fn a_transaction_left_open_by_a_failed_write_closure_is_not_handed_to_the_next_caller() {
    each_backend(|target| {
        let (db, ann) = one_connection_with_ann(target);
        let store = &db.store;
        let failed = store.users().write(ann.id, |conn| {
            use diesel::connection::SimpleConnection;
            conn.batch_execute("BEGIN; UPDATE no_such_table SET x = 1; COMMIT")?;
            Ok(None)
        });
        assert!(failed.is_err(), "the premise: the batch failed");
        next_write_commits(&db, ann.id, "bob", "after the failed batch");
    });
}

/// The statements that open a transaction (or, on MySQL, make every later
/// statement open one) and succeed, on `backend`.
fn openers(backend: larder::Backend) -> Vec<&'static str> {
    use larder::Backend;
    match backend {
        Backend::Sqlite => vec!["BEGIN", "BEGIN IMMEDIATE", "SAVEPOINT app"],
        Backend::Postgres => vec!["BEGIN", "START TRANSACTION ISOLATION LEVEL REPEATABLE READ"],
        // MySQL and MariaDB.
        _ => vec!["BEGIN", "START TRANSACTION", "SET autocommit = 0"],
    }
}

/// review DD: an application's own SQL through `Repo::run` that opened a
/// transaction and SUCCEEDED without ending it (a `BEGIN`, a `SAVEPOINT`
/// outside any on SQLite, MySQL's `SET autocommit = 0`) gave its connection
/// back to the pool inside that transaction: the caller was told `Ok`, its
/// own write was never committed, and the next caller's autocommitted write
/// ran in it, reported and cached as committed, never committed. Refused
/// with a typed error now, the transaction rolled back.
#[test]
fn a_transaction_left_open_by_successful_raw_sql_is_refused_and_rolled_back() {
    each_backend(|target| {
        let (db, ann) = one_connection_with_ann(target);
        let store = &db.store;
        for (round, opener) in openers(db.backend).into_iter().enumerate() {
            let before = name_in_db(&db.url(), ann.id);
            let left_open = store.users().run(Some(ann.id), |conn| {
                use diesel::connection::SimpleConnection;
                conn.batch_execute(&format!(
                    "{opener}; UPDATE users SET name = 'eve' WHERE id = {}",
                    ann.id
                ))
            });
            assert!(
                matches!(&left_open, Err(Error::InvalidConfig { reason }) if reason.contains("transaction")),
                "{opener}: {left_open:?}"
            );
            assert_eq!(
                name_in_db(&db.url(), ann.id),
                before,
                "{opener}: what the open transaction wrote was rolled back"
            );
            let name = format!("bob{round}");
            let changes = UserChanges {
                name: Some(name.clone()),
                ..Default::default()
            };
            store.users().update(ann.id, changes).unwrap();
            assert_eq!(
                name_in_db(&db.url(), ann.id),
                name,
                "{opener}: a write reported committed is not in the database"
            );
            assert_pool_idle(store);
        }
    });
}

/// review DD: the same through `Repo::write`'s autocommitted closure, and
/// through a list query's: the write's row, read back on the same connection
/// inside the transaction left open, was cached uncommitted (and then rolled
/// back by nobody, or by the server when the connection closed).
#[test]
fn a_transaction_left_open_by_a_successful_write_or_query_closure_is_refused() {
    each_backend(|target| {
        let (db, ann) = one_connection_with_ann(target);
        let store = &db.store;
        let written = store.users().write(ann.id, |conn| {
            use diesel::connection::SimpleConnection;
            conn.batch_execute(&format!(
                "BEGIN; UPDATE users SET name = 'eve' WHERE id = {}",
                ann.id
            ))?;
            Ok(None)
        });
        assert!(
            matches!(&written, Err(Error::InvalidConfig { .. })),
            "{written:?}"
        );
        assert_eq!(store.users().get(ann.id).unwrap().unwrap().name, "ann");
        assert_eq!(name_in_db(&db.url(), ann.id), "ann");
        let listed = store.users().query(|conn| {
            use diesel::connection::SimpleConnection;
            use diesel::prelude::*;
            conn.batch_execute("BEGIN")?;
            larder::with_connection!(conn, |c| larder_blog::schema::users::table.load(c))
        });
        assert!(
            matches!(&listed, Err(Error::InvalidConfig { .. })),
            "{listed:?}"
        );
        next_write_commits(&db, ann.id, "bob", "after it");
    });
}

/// review DD: MySQL's `SET autocommit = 0`, run by the application's own
/// SQL inside a transaction of larder's, outlives that transaction: its
/// connection went back to the pool opening a transaction at every
/// statement, and the next caller's autocommitted write was reported (and
/// cached) committed, never committed. Turned back on when the transaction
/// ends, committed or rolled back.
#[test]
fn autocommit_turned_off_inside_a_transaction_does_not_outlive_it() {
    each_backend(|target| {
        if target.backend != larder::Backend::Mysql {
            return;
        }
        let (db, ann) = one_connection_with_ann(target);
        let store = &db.store;
        for (round, commit) in [true, false].into_iter().enumerate() {
            let tx = store.begin().unwrap();
            tx.users()
                .run(None, |conn| {
                    use diesel::connection::SimpleConnection;
                    conn.batch_execute("SET autocommit = 0")
                })
                .unwrap();
            if commit {
                tx.commit().unwrap();
            } else {
                drop(tx);
            }
            let name = format!("bob{round}");
            next_write_commits(&db, ann.id, &name, &format!("commit {commit}"));
        }
    });
}

/// PostgreSQL's `SET session_replication_role = replica`, run by the
/// application's own SQL, outlives its call on the pooled connection; the
/// capture triggers fire `ALWAYS`, so later writes on that connection are
/// still heard by other processes (review DD: a guard, not a defect).
#[test]
fn writes_after_a_session_set_replication_role_replica_are_still_heard_elsewhere() {
    each_backend(|target| {
        let db = target.fresh_with(|b| b.pool_size(1));
        if !db.is(larder::Backend::Postgres) {
            return;
        }
        let store = &db.store;
        let ann = user(store, "ann");
        let other = larder_blog::builder(&db.url())
            .max_staleness(Duration::from_secs(60))
            .build()
            .unwrap();
        assert_eq!(other.users().get(ann.id).unwrap().unwrap().name, "ann");
        store
            .users()
            .run(None, |conn| {
                use diesel::connection::SimpleConnection;
                conn.batch_execute("SET session_replication_role = replica")
            })
            .unwrap();
        store.users().update(ann.id, rename("bob")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while other.users().get(ann.id).unwrap().unwrap().name != "bob" {
            assert!(
                Instant::now() < deadline,
                "another process never heard of a committed write"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_pool_idle(store);
    });
}

/// review DD: MySQL's recommended way to lock tables (`SET autocommit = 0;
/// LOCK TABLES …`), run by the application's own SQL and left open, is
/// refused and rolled back, but a ROLLBACK releases no table lock: the
/// pooled connection kept `users` locked, and every other connection's
/// read or write of it waited for `lock_wait_timeout` (a year by default).
#[test]
fn table_locks_left_by_raw_sql_are_released_with_its_transaction() {
    each_backend(|target| {
        if target.backend != larder::Backend::Mysql {
            return;
        }
        let (db, ann) = one_connection_with_ann(target);
        let store = &db.store;
        let left = store.users().run(None, |conn| {
            use diesel::connection::SimpleConnection;
            conn.batch_execute("SET autocommit = 0; LOCK TABLES users WRITE")
        });
        assert!(matches!(left, Err(Error::InvalidConfig { .. })), "{left:?}");
        let mut other = larder::Connection::establish(&db.url()).unwrap();
        larder::with_connection!(&mut other, |c| {
            use diesel::connection::SimpleConnection;
            c.batch_execute(&format!(
                "SET SESSION lock_wait_timeout = 2; UPDATE users SET name = 'eve' WHERE id = {}",
                ann.id
            ))
        })
        .expect("users still locked by a pooled connection");
        assert_pool_idle(store);
    });
}

/// review FF: a transaction the application's SQL opened through diesel's
/// own transaction manager (`begin_test_transaction`, or
/// `AnsiTransactionManager::begin_transaction` on the connection
/// `with_connection!` lends) and left open was taken for larder's own and
/// never checked: the call returned `Ok` though what it wrote was never
/// committed. A test transaction is not even discarded by the pool
/// (diesel keeps it on purpose): the next caller's write ran inside it as
/// a savepoint, reported and cached committed, never committed; a `write`
/// closure's row was read back inside it and cached uncommitted.
#[test]
fn a_transaction_diesel_opened_for_the_application_and_left_open_is_refused() {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    use diesel::Connection as _;
    each_backend(|target| {
        let (db, ann) = one_connection_with_ann(target);
        let store = &db.store;
        let update = format!("UPDATE users SET name = 'eve' WHERE id = {}", ann.id);
        for (round, test_transaction) in [true, false].into_iter().enumerate() {
            let left_open = store.users().run(Some(ann.id), |conn| {
                larder::with_connection!(conn, |c| {
                    if test_transaction {
                        c.begin_test_transaction()?;
                    } else {
                        AnsiTransactionManager::begin_transaction(c)?;
                    }
                    diesel::RunQueryDsl::execute(diesel::sql_query(&update), c)
                })
            });
            assert!(
                matches!(&left_open, Err(Error::InvalidConfig { reason }) if reason.contains("transaction")),
                "test transaction {test_transaction}: {left_open:?}"
            );
            let name = format!("bob{round}");
            next_write_commits(
                &db,
                ann.id,
                &name,
                &format!("test transaction {test_transaction}"),
            );
        }
        let written = store.users().write(ann.id, |conn| {
            larder::with_connection!(conn, |c| {
                c.begin_test_transaction()?;
                diesel::RunQueryDsl::execute(diesel::sql_query(&update), c)
            })?;
            Ok(None)
        });
        assert!(
            matches!(&written, Err(Error::InvalidConfig { .. })),
            "{written:?}"
        );
        assert_eq!(name_in_db(&db.url(), ann.id), "bob1");
        assert_eq!(store.users().get(ann.id).unwrap().unwrap().name, "bob1");
        assert_pool_idle(store);
    });
}

/// review FF: MySQL's `completion_type = CHAIN` (1), set by the
/// application's own SQL, opens no transaction, so the check after it
/// found none; but it outlives the call on the pooled connection, and
/// every later COMMIT (larder's own) or ROLLBACK (larder's, of SQL it
/// refused) then opens a new transaction that nobody ends: the connection
/// went back to the pool inside it, and its next reads saw that
/// transaction's old snapshot.
#[test]
fn completion_type_chain_set_by_raw_sql_does_not_outlive_its_call() {
    each_backend(|target| {
        if target.backend != larder::Backend::Mysql {
            return;
        }
        let (db, ann) = one_connection_with_ann(target);
        let store = &db.store;
        // Whether the pooled connection's session is in a transaction (a
        // statement naming no word the watch looks for).
        let in_transaction = || {
            store
                .users()
                .run(None, |conn| {
                    use diesel::dsl::sql;
                    use diesel::sql_types::BigInt;
                    larder::with_connection!(conn, |c| diesel::RunQueryDsl::get_result::<i64>(
                        diesel::select(sql::<BigInt>("CAST(@@in_transaction AS SIGNED)")),
                        c
                    ))
                })
                .unwrap()
        };
        for (round, setting) in [
            "SET completion_type = 1",
            "SET SESSION completion_type = 'CHAIN'",
        ]
        .into_iter()
        .enumerate()
        {
            let _ = store.users().run(None, |conn| {
                use diesel::connection::SimpleConnection;
                conn.batch_execute(setting)
            });
            let tx = store.begin().unwrap();
            tx.users()
                .update(ann.id, rename(&format!("bob{round}")))
                .unwrap();
            tx.commit().unwrap();
            assert_eq!(in_transaction(), 0, "{setting}: after larder's COMMIT");
            // The same setting with a transaction left open: refused, and
            // its ROLLBACK must not chain another.
            let _ = store.users().run(None, |conn| {
                use diesel::connection::SimpleConnection;
                conn.batch_execute(&format!("{setting}; BEGIN"))
            });
            assert_eq!(in_transaction(), 0, "{setting}: after larder's ROLLBACK");
            assert_pool_idle(store);
        }
    });
}

/// review FF: MySQL's executable comments run their text, and the version
/// they carry may touch it (`/*!50000BEGIN*/`): the watch read one word,
/// `50000begin`, named no opener, and the transaction the SQL left open (or
/// autocommit turned off) went back to the pool unchecked, `Ok`.
#[test]
fn an_opener_in_a_versioned_executable_comment_is_spotted() {
    each_backend(|target| {
        if target.backend != larder::Backend::Mysql {
            return;
        }
        let (db, ann) = one_connection_with_ann(target);
        let store = &db.store;
        for (round, opener) in [
            "/*!50000BEGIN*/",
            "/*!50000START TRANSACTION*/",
            "SET /*!50000autocommit*/ = 0",
        ]
        .into_iter()
        .enumerate()
        {
            let left_open = store.users().run(Some(ann.id), |conn| {
                use diesel::connection::SimpleConnection;
                conn.batch_execute(&format!(
                    "{opener}; UPDATE users SET name = 'eve' WHERE id = {}",
                    ann.id
                ))
            });
            assert!(
                matches!(&left_open, Err(Error::InvalidConfig { .. })),
                "{opener}: {left_open:?}"
            );
            let name = format!("bob{round}");
            next_write_commits(&db, ann.id, &name, opener);
        }
    });
}

/// review FF: a list query's closure inside a transaction of larder's
/// (`TxRepo::query`, and so `cached_query` and `cached_value` through the
/// `Repository` trait) is the application's SQL as much as `TxRepo::run`'s,
/// but was not noted as such: MySQL's `SET autocommit = 0` in it outlived
/// the transaction, and the next caller's autocommitted write was reported
/// committed, never committed.
#[test]
fn autocommit_turned_off_in_a_list_query_inside_a_transaction_does_not_outlive_it() {
    each_backend(|target| {
        if target.backend != larder::Backend::Mysql {
            return;
        }
        let (db, ann) = one_connection_with_ann(target);
        let store = &db.store;
        let tx = store.begin().unwrap();
        let rows = tx
            .users()
            .query(|conn| {
                use diesel::connection::SimpleConnection;
                use diesel::prelude::*;
                conn.batch_execute("SET autocommit = 0")?;
                larder::with_connection!(conn, |c| larder_blog::schema::users::table.load(c))
            })
            .unwrap();
        assert_eq!(rows.len(), 1);
        tx.commit().unwrap();
        next_write_commits(&db, ann.id, "bob", "after it");
    });
}

/// Runs `sql` on a connection of its own to `db`'s database (the
/// application's schema objects: functions, triggers, procedures).
fn run_elsewhere(db: &common::TestDb, sql: &str) {
    use diesel::connection::SimpleConnection;
    let mut conn = larder::Connection::establish(&db.url()).expect("a connection of its own");
    conn.batch_execute(sql).expect(sql);
}

/// `SELECT function()`, then every user: a list query's closure.
fn call_then_list(
    conn: &mut larder::Connection,
    function: &str,
) -> diesel::QueryResult<Vec<larder_blog::User>> {
    use diesel::prelude::*;
    larder::with_connection!(conn, |c| {
        diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>(&format!(
            "{function}()"
        )))
        .get_result::<i32>(c)?;
        larder_blog::schema::users::table.load(c)
    })
}

/// review OO: MySQL's `completion_type` set where the watch cannot see it,
/// by a stored function (`SELECT f()` in a list query's closure) or a
/// trigger firing on larder's own UPDATE: larder's own COMMIT and ROLLBACK
/// (diesel's plain ones) then chained a new transaction nobody ended, and
/// the connection went back to the pool inside it (the next caller's
/// autocommitted write was reported committed, never committed), or with
/// `RELEASE` the server ended the session at larder's COMMIT.
#[test]
fn completion_type_set_by_a_function_or_trigger_does_not_chain_larders_commit() {
    each_backend(|target| {
        if target.backend != larder::Backend::Mysql {
            return;
        }
        let (db, ann) = one_connection_with_ann(target);
        let store = &db.store;
        run_elsewhere(
            &db,
            "CREATE FUNCTION revoo_chain() RETURNS INT NO SQL \
             BEGIN SET completion_type = 1; RETURN 1; END",
        );
        run_elsewhere(
            &db,
            "CREATE FUNCTION revoo_release() RETURNS INT NO SQL \
             BEGIN SET completion_type = 2; RETURN 1; END",
        );
        // Through a list query's closure, outside and inside a transaction,
        // then larder's COMMIT or ROLLBACK.
        let mut round = 0;
        for function in ["revoo_chain", "revoo_release"] {
            for (inside, commit) in [(false, true), (true, true), (true, false)] {
                round += 1;
                if !inside {
                    let rows = store.users().query(|c| call_then_list(c, function));
                    assert_eq!(rows.unwrap().len(), 1);
                }
                let tx = store.begin().unwrap();
                if inside {
                    let rows = tx.users().query(|c| call_then_list(c, function));
                    assert_eq!(rows.unwrap().len(), 1);
                }
                tx.users()
                    .update(ann.id, rename(&format!("tx{round}")))
                    .unwrap();
                if commit {
                    tx.commit().unwrap();
                } else {
                    drop(tx);
                }
                let context = format!("{function}, inside {inside}, commit {commit}");
                next_write_commits(&db, ann.id, &format!("bob{round}"), &context);
            }
        }
        // A trigger of the application's, firing on larder's own UPDATE.
        run_elsewhere(
            &db,
            "CREATE TRIGGER revoo_chain_users BEFORE UPDATE ON users \
             FOR EACH ROW SET completion_type = 1",
        );
        for commit in [true, false] {
            round += 1;
            let tx = store.begin().unwrap();
            tx.users()
                .update(ann.id, rename(&format!("tx{round}")))
                .unwrap();
            if commit {
                tx.commit().unwrap();
            } else {
                drop(tx);
            }
            let context = format!("trigger, commit {commit}");
            next_write_commits(&db, ann.id, &format!("bob{round}"), &context);
        }
    });
}

/// review OO: with `completion_type = CHAIN` set where the watch cannot
/// see it (a stored function, a trigger), the application's own `COMMIT`
/// or `ROLLBACK` opens a new transaction, even with none open; neither
/// word was watched, so the call returned `Ok` and its connection went
/// back to the pool inside that transaction: the next caller's
/// autocommitted write was reported committed, never committed.
#[test]
fn a_raw_commit_chained_by_a_hidden_completion_type_is_not_handed_on() {
    each_backend(|target| {
        if target.backend != larder::Backend::Mysql {
            return;
        }
        let (db, ann) = one_connection_with_ann(target);
        let store = &db.store;
        run_elsewhere(
            &db,
            "CREATE FUNCTION revoo_chain() RETURNS INT NO SQL \
             BEGIN SET completion_type = 1; RETURN 1; END",
        );
        for (round, end) in ["COMMIT", "ROLLBACK", "COMMIT WORK"]
            .into_iter()
            .enumerate()
        {
            let rows = store.users().query(|c| call_then_list(c, "revoo_chain"));
            assert_eq!(rows.unwrap().len(), 1);
            let _ = store.users().run(Some(ann.id), |conn| {
                use diesel::connection::SimpleConnection;
                conn.batch_execute(&format!(
                    "UPDATE users SET name = 'eve{round}' WHERE id = {}; {end}",
                    ann.id
                ))
            });
            next_write_commits(&db, ann.id, &format!("bob{round}"), end);
        }
    });
}

/// review OO: a MySQL stored procedure may leave a transaction open, turn
/// autocommit off or set `completion_type` for the session it is `CALL`ed
/// on; `CALL` is a watched word, so each is refused and undone, outside a
/// transaction of larder's and at the end of one (a guard, not a defect).
#[test]
fn what_a_stored_procedure_leaves_open_is_refused_and_undone() {
    each_backend(|target| {
        if target.backend != larder::Backend::Mysql {
            return;
        }
        let (db, ann) = one_connection_with_ann(target);
        let store = &db.store;
        let procedures = [
            (
                "revoo_open",
                format!(
                    "START TRANSACTION; UPDATE users SET name = 'eve' WHERE id = {}",
                    ann.id
                ),
            ),
            ("revoo_manual", "SET autocommit = 0".to_owned()),
            ("revoo_chain", "SET completion_type = 1".to_owned()),
            ("revoo_release", "SET completion_type = 2".to_owned()),
        ];
        let mut round = 0;
        for (name, body) in &procedures {
            run_elsewhere(&db, &format!("CREATE PROCEDURE {name}() BEGIN {body}; END"));
            round += 1;
            let left = store.users().run(Some(ann.id), |conn| {
                use diesel::connection::SimpleConnection;
                conn.batch_execute(&format!("CALL {name}()"))
            });
            assert!(
                matches!(left, Err(Error::InvalidConfig { .. })),
                "{name}: {left:?}"
            );
            next_write_commits(&db, ann.id, &format!("bob{round}"), name);
            for commit in [true, false] {
                round += 1;
                let tx = store.begin().unwrap();
                tx.users()
                    .run(None, |conn| {
                        use diesel::connection::SimpleConnection;
                        conn.batch_execute(&format!("CALL {name}()"))
                    })
                    .unwrap();
                if commit {
                    tx.commit().unwrap();
                } else {
                    drop(tx);
                }
                let context = format!("{name} in a transaction, commit {commit}");
                next_write_commits(&db, ann.id, &format!("bob{round}"), &context);
            }
        }
    });
}
