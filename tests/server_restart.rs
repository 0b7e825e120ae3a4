//! A real server restart under load: while a worker reads and writes, the
//! PostgreSQL or MariaDB server is stopped and started again. While it is down
//! calls fail with typed errors (no panic, no hang); once it is back the store
//! recovers fully and its cache agrees with the database.
//!
//! This restarts the machine's database servers, so it runs only when
//! `LARDER_TEST_SERVER_RESTARTS=1` (CI sets it). It is the only test in this
//! binary, and cargo runs test binaries one at a time, so no other test is
//! using the servers meanwhile.

mod common;

use larder_blog::prelude::*;
use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{each_backend, user, user_in_db};
use larder::{Backend, Error};
use larder_blog::UserChanges;

fn sh(script: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .status()
        .is_ok_and(|s| s.success())
}

fn wait_until(what: &str, probe: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sh(probe) {
        assert!(Instant::now() < deadline, "{what} did not come back");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stop(backend: Backend) -> bool {
    match backend {
        Backend::Postgres => {
            sh("pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main stop")
        }
        _ => sh("mysqladmin -h 127.0.0.1 -u root shutdown"),
    }
}

fn start(backend: Backend) {
    match backend {
        Backend::Postgres => {
            sh("pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start");
            wait_until("PostgreSQL", "pg_isready -q -h 127.0.0.1 -p 5432");
        }
        _ => {
            sh("start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd");
            wait_until(
                "MariaDB",
                "mysqladmin -h 127.0.0.1 -u root status >/dev/null 2>&1",
            );
        }
    }
}

fn typed_outage_error(err: &Error) -> bool {
    matches!(
        err,
        Error::ConnectionLost { .. }
            | Error::Connection { .. }
            | Error::PoolTimeout { .. }
            | Error::Database { .. }
    )
}

#[test]
fn a_server_restart_mid_run_gives_typed_errors_then_full_recovery() {
    if std::env::var("LARDER_TEST_SERVER_RESTARTS").as_deref() != Ok("1") {
        let _ = writeln!(
            std::io::stderr(),
            "note: server restart test skipped: LARDER_TEST_SERVER_RESTARTS=1 is not set"
        );
        return;
    }
    each_backend(|target| {
        if target.backend == Backend::Sqlite {
            return;
        }
        let db = target.fresh_with(|b| {
            b.pool_size(3)
                .connection_timeout(Duration::from_secs(1))
                .coherence(true)
        });
        let ids: Vec<i64> = (0..10)
            .map(|n| user(&db.store, &format!("u{n}")).id)
            .collect();
        let stop_flag = Arc::new(AtomicBool::new(false));
        let worker = {
            let (store, ids, stop_flag) = (db.store.clone(), ids.clone(), stop_flag.clone());
            std::thread::spawn(move || {
                let (mut ok, mut failed, mut n) = (0u64, 0u64, 0usize);
                while !stop_flag.load(Ordering::SeqCst) {
                    n += 1;
                    let id = ids[n % ids.len()];
                    let result = if n % 4 == 0 {
                        let changes = UserChanges {
                            name: Some(format!("n{n}")),
                            ..Default::default()
                        };
                        store.users().update(id, changes).map(drop)
                    } else {
                        store.users().get(id).map(drop)
                    };
                    match result {
                        Ok(()) => ok += 1,
                        Err(err) => {
                            assert!(
                                typed_outage_error(&err),
                                "untyped error during the outage: {err:?}"
                            );
                            failed += 1;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
                (ok, failed)
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            stop(target.backend),
            "could not stop the {} server",
            target.backend.name()
        );
        std::thread::sleep(Duration::from_secs(1));
        start(target.backend);
        std::thread::sleep(Duration::from_millis(500));
        stop_flag.store(true, Ordering::SeqCst);
        let (ok, failed) = worker.join().expect("the worker panicked");
        assert!(failed > 0, "the outage was not noticed");

        // Recovery: every call succeeds again and the cache agrees with the rows.
        let recovered = Instant::now();
        for &id in &ids {
            db.store
                .users()
                .update(
                    id,
                    UserChanges {
                        name: Some("after".into()),
                        ..Default::default()
                    },
                )
                .unwrap();
            assert_eq!(db.store.users().get(id).unwrap().unwrap().name, "after");
            // The entry may already be gone again: the watcher's echo of this
            // update, or its flush after reconnecting, can land between the
            // two calls (seen once in CI). What must hold is that a cached
            // entry is never another version than the row.
            let cached = db.store.users().cached(id);
            assert!(
                cached.is_none() || cached == user_in_db(&db.store, id),
                "the cache disagrees with the row after recovery: {cached:?}"
            );
        }
        eprintln!(
            "{}: {ok} calls succeeded and {failed} failed with typed errors around the restart; recovered in {:?}",
            target.backend.name(),
            recovered.elapsed()
        );
    });
}
