//! Faults and attacks: optimistic locking under contention, corrupt rows,
//! tampered migration state, a read-only or vanished database.

mod common;

use larder_blog::prelude::*;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{each_backend, fresh, post, user, write_migration};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use larder::{ConflictKind, Error, Migrator, Store};
use larder_blog::{NewUser, PostChanges};

fn set_body(body: String) -> PostChanges {
    PostChanges {
        body: Some(body),
        ..Default::default()
    }
}

#[test]
fn a_stale_version_is_a_conflict_naming_the_key() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let p = post(&db.store, &ann, "t");
        db.store
            .posts()
            .update_versioned(p.id, 1, set_body("v2".into()))
            .unwrap();
        let err = db
            .store
            .posts()
            .update_versioned(p.id, 1, set_body("lost".into()))
            .unwrap_err();
        match &err {
            Error::Conflict {
                table: Some("posts"),
                id: Some(id),
                kind:
                    ConflictKind::VersionMismatch {
                        expected: 1,
                        actual: 2,
                    },
                ..
            } if *id == p.id => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string().contains(&format!("posts {}", p.id)),
            "{err}"
        );
        assert_eq!(db.store.posts().get(p.id).unwrap().unwrap().body, "v2");
        let missing = db
            .store
            .posts()
            .update_versioned(9999, 1, set_body("x".into()))
            .unwrap_err();
        assert!(
            matches!(
                missing,
                Error::NotFound {
                    table: "posts",
                    id: 9999
                }
            ),
            "{missing:?}"
        );
    });
}

/// Read-modify-write loops that retry on conflict: every increment survives.
#[test]
fn concurrent_versioned_increments_lose_no_update() {
    each_backend(|target| {
        const THREADS: usize = 4;
        const INCREMENTS: usize = 25;
        let db = target.fresh_with(|b| {
            b.pool_size(4)
                .busy_timeout(std::time::Duration::from_secs(30))
        });
        let ann = user(&db.store, "ann");
        let id = post(&db.store, &ann, "counter").id;
        db.store
            .posts()
            .update_versioned(id, 1, set_body("0".into()))
            .unwrap();
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let store = db.store.clone();
                std::thread::spawn(move || {
                    let mut conflicts = 0;
                    for _ in 0..INCREMENTS {
                        loop {
                            let current = store.posts().get(id).unwrap().unwrap();
                            let next = current.body.parse::<u64>().unwrap() + 1;
                            match store.posts().update_versioned(
                                id,
                                current.version,
                                set_body(next.to_string()),
                            ) {
                                Ok(_) => break,
                                Err(e) if e.is_conflict() => conflicts += 1,
                                Err(e) => panic!("{e}"),
                            }
                            assert!(
                                conflicts < 100_000,
                                "no progress: the cache keeps serving a stale version"
                            );
                        }
                    }
                    conflicts
                })
            })
            .collect();
        let conflicts: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
        let last = db.store.posts().get(id).unwrap().unwrap();
        assert_eq!(
            last.body,
            (THREADS * INCREMENTS).to_string(),
            "an update was lost ({conflicts} conflicts)"
        );
        assert_eq!(last.version, 2 + (THREADS * INCREMENTS) as i64);
    });
}

fn raw(db: &common::TestDb, sql: &str) {
    db.raw(sql);
}

#[test]
fn a_row_with_invalid_utf8_is_an_error_not_a_panic() {
    let db = fresh();
    let ann = user(&db.store, "ann");
    raw(
        &db,
        &format!(
            "UPDATE users SET name = CAST(x'66ff6f' AS TEXT) WHERE id = {}",
            ann.id
        ),
    );
    db.store.clear_cache();
    let err = db.store.users().get(ann.id).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Database {
                table: Some("users"),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(db.store.users().cached(ann.id).is_none());
    // The store keeps working for other rows.
    let bob = user(&db.store, "bob");
    assert_eq!(db.store.users().get(bob.id).unwrap().unwrap().name, "bob");
}

#[test]
fn a_failing_down_migration_is_a_migration_error_and_changes_nothing() {
    each_backend(|target| {
        let db = target.fresh();
        user(&db.store, "ann");
        let blog = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/blog/migrations")
            .join(db.backend.name());
        let mut migrator = Migrator::open_with_dir(&db.url(), &blog).unwrap();
        // The blog's front page, change capture with key values, change
        // capture; larder's own migrations stay.
        assert_eq!(migrator.revert_n(3).unwrap().len(), 3);
        raw(&db, "DROP TABLE comments"); // an operator's hand edit the down.sql does not expect
        let err = migrator.revert().unwrap_err();
        assert!(matches!(err, Error::Migration { .. }), "{err:?}");
        assert!(err.to_string().contains("comments"), "{err}");
        let status = migrator.status().unwrap();
        let applied = |name: &str| status.iter().any(|m| m.name.ends_with(name) && m.applied);
        assert!(
            applied("_blog") && !applied("_blog_capture"),
            "the failed revert was rolled back: {status:?}"
        );
        assert_eq!(
            db.store
                .users()
                .query(
                    |c| larder::with_connection!(c, |c| larder_blog::schema::users::table.load(c))
                )
                .unwrap()
                .len(),
            1
        );
    });
}

#[test]
fn an_unknown_applied_version_does_not_break_migrate() {
    each_backend(|target| {
        let db = target.fresh();
        raw(
            &db,
            "INSERT INTO __diesel_schema_migrations (version) VALUES ('99999999999999')",
        );
        let mut migrator = Migrator::open(&db.url()).unwrap();
        assert!(migrator.run().unwrap().is_empty());
        assert!(migrator.status().unwrap().iter().all(|m| m.applied));
    });
}

/// Clears the immutable attribute again, whatever the test did.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(paths: &[&Path]) -> Option<Immutable> {
        let ok = Command::new("chattr")
            .arg("+i")
            .args(paths)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
        Some(Immutable(paths.iter().map(|p| p.to_path_buf()).collect()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").args(&self.0).status();
    }
}

/// `chattr +i` makes the file and its directory read-only even for root.
#[test]
fn a_read_only_database_gives_clear_errors_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.db");
    let url = format!("sqlite://{}", path.display());
    {
        let store = Store::open(&url).unwrap();
        larder_blog::migrate(&store).unwrap();
        user(&store, "ann");
    }
    // Leave WAL mode so that the file alone holds the database.
    let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    conn.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA journal_mode = DELETE;")
        .unwrap();
    drop(conn);
    let Some(_guard) = Immutable::set(&[path.as_path(), dir.path()]) else {
        println!("skipped a_read_only_database_gives_clear_errors_and_no_panic: chattr +i is not available here");
        return;
    };
    let outcome = std::panic::catch_unwind(|| match Store::open(&url) {
        Err(err) => {
            assert!(matches!(err, Error::Connection { .. }), "{err:?}");
            err.to_string()
        }
        Ok(store) => {
            let err = store
                .users()
                .create(NewUser {
                    name: "bob".into(),
                    email: "bob@example.org".into(),
                })
                .unwrap_err();
            assert!(
                matches!(err, Error::Database { .. } | Error::Busy { .. }),
                "{err:?}"
            );
            err.to_string()
        }
    });
    let message = outcome.expect("no panic on a read-only database");
    println!("read-only database: {message}");
    assert!(
        message.contains("readonly")
            || message.contains("read-only")
            || message.contains("unable to open"),
        "{message}"
    );
}

#[test]
fn a_vanished_database_directory_gives_clear_errors_and_no_panic() {
    let db = fresh();
    let ann = user(&db.store, "ann");
    std::fs::remove_dir_all(db.dir.path()).unwrap();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        db.store.clear_cache();
        // Open connections may still reach the unlinked file; either way the
        // answer is a value or a typed error, never a panic or a hang.
        let _ = db.store.users().get(ann.id);
        let _ = db.store.users().create(NewUser {
            name: "x".into(),
            email: "x@example.org".into(),
        });
    }));
    assert!(result.is_ok());
    let err = Store::open(&db.url()).unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn entries_survive_a_panicking_reader() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let store = db.store.clone();
        let id = ann.id;
        let result = std::thread::spawn(move || {
            let _user = store.users().get(id).unwrap();
            panic!("a request handler panics holding a cached Arc");
        })
        .join();
        assert!(result.is_err());
        assert!(Arc::ptr_eq(
            &db.store.users().get(ann.id).unwrap().unwrap(),
            &ann
        ));
    });
}

/// An application's migrations folder tampered with: invalid SQL in an
/// up.sql, a migration without up.sql. Each is a Migration error naming what
/// failed; the failed migration is not recorded as applied, and on SQLite and
/// PostgreSQL its statements are rolled back (MySQL commits DDL statement by
/// statement, so there the statements before the bad one stay done).
#[test]
fn a_tampered_migrations_folder_is_a_migration_error_and_changes_nothing() {
    each_backend(|target| {
        let db = target.fresh();
        let dir = tempfile::tempdir().unwrap();
        write_migration(
            dir.path(),
            "2030-01-01-000000_tags",
            "CREATE TABLE tags (id BIGINT PRIMARY KEY);",
            "DROP TABLE tags;",
        );
        write_migration(
            dir.path(),
            "2030-01-02-000000_broken",
            "CREATE TABLE broken (id BIGINT PRIMARY KEY); THIS IS NOT SQL;",
            "DROP TABLE broken;",
        );

        let mut migrator = Migrator::open_with_dir(&db.url(), dir.path()).unwrap();
        let err = migrator.run().unwrap_err();
        assert!(matches!(err, Error::Migration { .. }), "{err:?}");
        assert!(err.to_string().contains("broken"), "{err}");
        let pending = migrator.pending().unwrap();
        assert_eq!(
            pending.len(),
            1,
            "the good migration applied, the broken one not: {pending:?}"
        );

        std::fs::remove_file(dir.path().join("2030-01-02-000000_broken/up.sql")).unwrap();
        let err = Migrator::open_with_dir(&db.url(), dir.path())
            .and_then(|mut m| m.run())
            .unwrap_err();
        assert!(matches!(err, Error::Migration { .. }), "{err:?}");
        // The blog schema is untouched by all of it.
        user(&db.store, "ann");
    });
}

/// Gives user `id` an email that is not UTF-8, which SQLite stores and
/// diesel cannot decode.
fn corrupt_email(db: &common::TestDb, id: i64) {
    raw(
        db,
        &format!("UPDATE users SET email = CAST(x'66ff6f' AS TEXT) WHERE id = {id}"),
    );
}

/// How many users the database has named `name`, read around larder.
fn users_named(db: &common::TestDb, name: &str) -> i64 {
    let mut conn = larder::Connection::establish(&db.url()).unwrap();
    larder::with_connection!(&mut conn, |c| {
        larder_blog::schema::users::table
            .filter(larder_blog::schema::users::name.eq(name))
            .count()
            .get_result(c)
    })
    .unwrap()
}

#[test]
fn an_autocommitted_update_that_fails_after_writing_leaves_no_stale_entry() {
    // SQLite commits an `UPDATE … RETURNING` even when the returned row then
    // cannot be decoded (here: an email that is not UTF-8). The caller gets an
    // error, and the cache must not keep serving the row as it was before.
    let db = common::fresh();
    let ann = user(&db.store, "ann");
    assert!(db.store.users().cached(ann.id).is_some());
    corrupt_email(&db, ann.id);
    let err = db
        .store
        .users()
        .update(ann.id, common::rename("Ann"))
        .unwrap_err();
    assert!(matches!(err, Error::Database { .. }), "{err:?}");
    assert_eq!(
        users_named(&db, "Ann"),
        1,
        "the premise: the update did commit"
    );
    assert!(
        db.store.users().cached(ann.id).is_none(),
        "the update committed: the old entry must go"
    );
}

#[test]
fn a_write_in_a_transaction_that_fails_after_writing_leaves_no_stale_entry() {
    // As above, inside a transaction: the statement ran, its returned row cannot
    // be decoded, and the caller handles that error and commits. The commit
    // makes the update visible, so it must invalidate the cached row too.
    let db = common::fresh();
    let ann = user(&db.store, "ann");
    assert!(db.store.users().cached(ann.id).is_some());
    corrupt_email(&db, ann.id);
    db.store
        .transaction(|tx| {
            let err = tx
                .users()
                .update(ann.id, common::rename("Ann"))
                .unwrap_err();
            assert!(matches!(err, Error::Database { .. }), "{err:?}");
            Ok::<_, Error>(())
        })
        .unwrap();
    assert_eq!(
        users_named(&db, "Ann"),
        1,
        "the premise: the update did commit"
    );
    assert!(
        db.store.users().cached(ann.id).is_none(),
        "the transaction committed the update: the old entry must go"
    );
}

/// A folder of application migrations, one `tags` table dated `version`.
fn tags_migration(dir: &Path, version: &str) {
    let up = "CREATE TABLE tags (id INTEGER PRIMARY KEY);";
    write_migration(dir, &format!("{version}_tags"), up, "DROP TABLE tags;");
}

/// An application migration dated before larder's own sorts below them:
/// `revert` and `redo` are the application's and leave larder's own tables
/// (its change log, its lock tokens) alone; only `revert_all` removes them.
#[test]
fn revert_and_redo_take_the_applications_latest_migration_not_larders() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", tmp.path().join("app.db").display());
    let dir = tmp.path().join("migrations");
    tags_migration(&dir, "2024-01-01-000000");
    let mut migrator = Migrator::open_with_dir(&url, &dir).unwrap();
    migrator.run().unwrap();
    assert_eq!(migrator.redo().unwrap(), "20240101000000");
    assert_eq!(migrator.revert().unwrap(), "20240101000000");
    let err = migrator.revert().unwrap_err();
    assert!(
        err.to_string().contains("no application migration"),
        "{err}"
    );
    let own_applied = migrator
        .status()
        .unwrap()
        .iter()
        .filter(|m| m.applied)
        .count();
    assert_eq!(own_applied, 3, "larder's own migrations stay applied");
    assert_eq!(
        migrator.revert_all().unwrap().len(),
        3,
        "revert_all removes them"
    );
}

/// Fencing tokens only grow, migrations or not: redoing the application's
/// latest migration used to redo larder's lock-token table (the latest by
/// version), and tokens started again at 1.
#[test]
fn a_redo_never_takes_fencing_tokens_backwards() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", tmp.path().join("app.db").display());
    let dir = tmp.path().join("migrations");
    tags_migration(&dir, "2024-01-01-000000");
    let store = Store::builder(&url).coherence(false).build().unwrap();
    let mut migrator = Migrator::open_with_dir(&url, &dir).unwrap();
    migrator.run().unwrap();
    let first = store.lock("front-page").unwrap().fencing_token();
    migrator.redo().unwrap();
    assert!(
        Migrator::open(&url).unwrap().redo().is_err(),
        "nothing of the app's to redo"
    );
    let second = store.lock("front-page").unwrap().fencing_token();
    assert!(
        second > first,
        "token went backwards: {first} then {second}"
    );
}

/// diesel records a migration by its version alone: of two migrations sharing
/// one (two generated in the same second, or an application's dated like one
/// of larder's own), `run` applied one and `status` showed both applied. The
/// folder is refused before anything runs, naming both.
#[test]
fn migrations_sharing_a_version_are_refused_before_anything_runs() {
    for (first, second) in [
        ("2030-01-01-000000_tags", "2030-01-01-000000_notes"),
        ("2026-11-25-000001_notes", "2030-01-01-000000_tags"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", tmp.path().join("app.db").display());
        let dir = tmp.path().join("migrations");
        for name in [first, second] {
            let table = name.split_once('_').unwrap().1;
            let up = format!("CREATE TABLE {table} (id INTEGER PRIMARY KEY);");
            write_migration(&dir, name, &up, &format!("DROP TABLE {table};"));
        }
        let err = Migrator::open_with_dir(&url, &dir)
            .and_then(|mut m| m.run())
            .unwrap_err();
        assert!(matches!(err, Error::Migration { .. }), "{err:?}");
        let shown = err.to_string();
        assert!(
            shown.contains("notes") && shown.contains("same version"),
            "{shown}"
        );
        assert!(
            !tmp.path().join("app.db").exists(),
            "a database was created for a folder that cannot run"
        );
    }
}

/// diesel takes a folder's name up to its first `_` as the version: a
/// folder named `tags` (version "tags") or `_tags` (no version at all) was
/// applied and recorded under that version. Refused before anything runs.
#[test]
fn migration_folders_without_a_version_are_refused_before_anything_runs() {
    for name in ["tags", "_tags", "v1_tags"] {
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", tmp.path().join("app.db").display());
        let dir = tmp.path().join("migrations");
        write_migration(
            &dir,
            name,
            "CREATE TABLE tags (id INTEGER PRIMARY KEY);",
            "DROP TABLE tags;",
        );
        let err = Migrator::open_with_dir(&url, &dir)
            .and_then(|mut m| m.run())
            .unwrap_err();
        assert!(matches!(err, Error::Migration { .. }), "{name}: {err:?}");
        let shown = err.to_string();
        assert!(
            shown.contains(name) && shown.contains("<version>_<name>"),
            "{shown}"
        );
        assert!(
            !tmp.path().join("app.db").exists(),
            "{name}: a database was created for a folder that cannot run"
        );
    }
}

/// The blog's migrations folder for `db`'s backend.
fn blog_migrations(db: &common::TestDb) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/blog/migrations")
        .join(db.backend.name())
}

/// `runners` migrators, each on its own connection, run every migration at
/// once, as the hosts of a rolling deploy do when each migrates on start.
fn run_at_once(url: &str, dir: &Path, runners: usize) -> Vec<larder::Result<Vec<String>>> {
    let start = std::sync::Barrier::new(runners);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..runners)
            .map(|_| {
                scope.spawn(|| {
                    let mut migrator = Migrator::open_with_dir(url, dir)?;
                    start.wait();
                    migrator.run()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

/// Two deploys migrating one database at once: each waits for the other,
/// then finds nothing left to do. Before, one failed (SQLite and
/// PostgreSQL: a migration's table already there, or its version already
/// recorded; MySQL ran migrations twice).
#[test]
fn concurrent_migration_runs_wait_for_each_other_and_apply_each_migration_once() {
    each_backend(|target| {
        let db = target.fresh();
        let dir = blog_migrations(&db);
        for _round in 0..3 {
            let all = Migrator::open_with_dir(&db.url(), &dir)
                .unwrap()
                .revert_all()
                .unwrap();
            let outcomes = run_at_once(&db.url(), &dir, 4);
            let mut applied = Vec::new();
            for outcome in outcomes {
                applied.extend(outcome.unwrap_or_else(|e| panic!("a runner failed: {e}")));
            }
            applied.sort();
            let mut expected = all.clone();
            expected.sort();
            assert_eq!(applied, expected, "every migration applied exactly once");
            let status = Migrator::open_with_dir(&db.url(), &dir)
                .unwrap()
                .status()
                .unwrap();
            assert!(status.iter().all(|m| m.applied), "{status:?}");
        }
    });
}

/// A runner that cannot get the migration lock in time (another process is
/// migrating: here, a store holds the lock by its name) gets the typed
/// error and changes nothing; once the lock is free it migrates. A runner
/// whose migration failed released the lock: the next one takes it at once.
#[test]
fn a_runner_kept_waiting_past_its_bound_gets_migration_locked_and_changes_nothing() {
    use std::time::Duration;
    each_backend(|target| {
        let db = target.fresh();
        let dir = blog_migrations(&db);
        let reverted = Migrator::open_with_dir(&db.url(), &dir)
            .unwrap()
            .revert_n(10)
            .unwrap();
        let before = Migrator::open_with_dir(&db.url(), &dir)
            .unwrap()
            .status()
            .unwrap();
        let other = db.store.lock("larder.migrations").unwrap();
        let mut waiting = Migrator::open_with_dir(&db.url(), &dir)
            .unwrap()
            .lock_timeout(Duration::from_millis(300));
        let err = waiting.run().unwrap_err();
        assert!(matches!(err, Error::MigrationLocked { .. }), "{err:?}");
        assert!(err.is_retryable());
        assert!(
            err.to_string().contains("another migration is running"),
            "{err}"
        );
        assert!(matches!(
            waiting.revert().unwrap_err(),
            Error::MigrationLocked { .. }
        ));
        assert_eq!(waiting.status().unwrap(), before, "nothing changed");
        drop(other);
        assert_eq!(waiting.run().unwrap().len(), reverted.len());

        // A failed migration releases the lock: a runner that does not wait
        // at all takes it.
        let broken = tempfile::tempdir().unwrap();
        write_migration(broken.path(), "2099-01-01-000000_broken", "NOT SQL;", "");
        let err = Migrator::open_with_dir(&db.url(), broken.path())
            .unwrap()
            .run()
            .unwrap_err();
        assert!(matches!(err, Error::Migration { .. }), "{err:?}");
        let mut next = Migrator::open_with_dir(&db.url(), &dir)
            .unwrap()
            .lock_timeout(Duration::ZERO);
        // (MySQL then refuses to run past the migration that failed part way.)
        let outcome = next.run();
        assert!(
            !matches!(outcome, Err(Error::MigrationLocked { .. })),
            "{outcome:?}"
        );
    });
}

/// MySQL commits DDL statement by statement: a migration that failed part
/// way left its first tables, while `status` showed it as simply pending and
/// the next `run` failed on what was already there (or, with `IF NOT EXISTS`
/// DDL, ran on over a half-done schema). The attempt is recorded before the
/// migration runs: the next `run` refuses, naming it and the way out,
/// and changes nothing.
#[test]
fn a_mysql_migration_that_failed_part_way_stops_later_runs_until_resolved() {
    each_backend(|target| {
        if target.backend != larder::Backend::Mysql {
            return;
        }
        let db = target.fresh();
        let dir = tempfile::tempdir().unwrap();
        write_migration(
            dir.path(),
            "2099-01-01-000000_half",
            "CREATE TABLE IF NOT EXISTS half_a (id BIGINT PRIMARY KEY); NOT SQL; \
             CREATE TABLE half_b (id BIGINT PRIMARY KEY);",
            "DROP TABLE IF EXISTS half_b; DROP TABLE IF EXISTS half_a;",
        );
        write_migration(
            dir.path(),
            "2099-01-02-000000_after",
            "CREATE TABLE after_half (id BIGINT PRIMARY KEY);",
            "DROP TABLE after_half;",
        );
        let mut migrator = Migrator::open_with_dir(&db.url(), dir.path()).unwrap();
        let first = migrator.run().unwrap_err();
        assert!(matches!(first, Error::Migration { .. }), "{first:?}");
        let again = migrator.run().unwrap_err();
        assert!(matches!(again, Error::Migration { .. }), "{again:?}");
        let shown = again.to_string();
        assert!(
            shown.contains("2099-01-01-000000_half")
                && shown.contains("part way")
                && shown.contains("larder migrate resolve"),
            "{shown}"
        );
        let tables: Vec<String> = {
            #[derive(QueryableByName)]
            struct Name {
                #[diesel(sql_type = diesel::sql_types::Text)]
                name: String,
            }
            let mut conn = larder::Connection::establish(&db.url()).unwrap();
            larder::with_connection!(&mut conn, |c| diesel::sql_query(
                "SELECT CAST(table_name AS CHAR) AS name FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name LIKE '%half%'"
            )
            .load::<Name>(c))
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect()
        };
        assert_eq!(tables, ["half_a"], "the refused run changed nothing");
        let status = migrator.status().unwrap();
        let half = status.iter().find(|m| m.name.ends_with("_half")).unwrap();
        assert!(half.failed && !half.applied, "{half:?}");
        assert!(
            status.iter().filter(|m| m.failed).count() == 1,
            "{status:?}"
        );

        // Resolving something that did not fail is refused and changes nothing.
        let err = migrator
            .resolve("2099-01-02-000000_after", false)
            .unwrap_err();
        assert!(matches!(err, Error::Migration { .. }), "{err:?}");
        assert_eq!(migrator.status().unwrap(), status);

        // The operator undoes it and fixes the migration, then resolves it.
        db.raw("DROP TABLE half_a");
        write_migration(
            dir.path(),
            "2099-01-01-000000_half",
            "CREATE TABLE half_a (id BIGINT PRIMARY KEY); CREATE TABLE half_b (id BIGINT PRIMARY KEY);",
            "DROP TABLE half_b; DROP TABLE half_a;",
        );
        migrator.resolve("20990101000000", false).unwrap();
        let mut migrator = Migrator::open_with_dir(&db.url(), dir.path()).unwrap();
        assert_eq!(
            migrator.run().unwrap(),
            ["20990101000000", "20990102000000"]
        );
        assert!(migrator
            .status()
            .unwrap()
            .iter()
            .all(|m| m.applied && !m.failed));
    });
}

/// Every process of an application that migrates at start-up (`store.migrate()`,
/// then `store.run_migrations(…)`, as the docs suggest) starts at once on a
/// deployment. They raced: each saw the same migrations pending, and all but
/// one failed ("table … already exists"), on every backend; MySQL's error even
/// said to undo by hand what another process had simply applied. Here four
/// stores (four connections, as four processes) migrate an empty database at
/// once: every one succeeds, and each migration is applied once.
#[test]
fn stores_migrating_one_database_at_once_all_succeed() {
    each_backend(|target| {
        let db = target.fresh();
        let url = db.url();
        let dir = blog_migrations(&db);
        Migrator::open_with_dir(&url, &dir)
            .and_then(|mut m| m.revert_all())
            .expect("back to an empty database");
        let stores: Vec<Store> = (0..4)
            .map(|_| larder_blog::builder(&url).coherence(false).build().unwrap())
            .collect();
        let barrier = std::sync::Barrier::new(stores.len());
        let results: Vec<larder::Result<Vec<String>>> = std::thread::scope(|scope| {
            let runs: Vec<_> = stores
                .iter()
                .map(|store| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        barrier.wait();
                        larder_blog::migrate(store)
                    })
                })
                .collect();
            runs.into_iter().map(|run| run.join().unwrap()).collect()
        });
        for result in &results {
            assert!(result.is_ok(), "{:?}: {result:?}", db.backend);
        }
        let applied: usize = results.iter().map(|r| r.as_ref().unwrap().len()).sum();
        let all = Migrator::open_with_dir(&url, &dir)
            .unwrap()
            .status()
            .unwrap();
        assert_eq!(applied, all.len(), "{:?}: each applied once", db.backend);
        assert!(all.iter().all(|m| m.applied), "{:?}", db.backend);
    });
}

/// Embedded migrations made at run time, as `embed_migrations!` makes them.
fn embedded(
    migrations: &'static [diesel_migrations::EmbeddedMigration],
) -> diesel_migrations::EmbeddedMigrations {
    diesel_migrations::EmbeddedMigrations::new(migrations)
}

fn embedded_one(name: &'static str, up: &'static str) -> diesel_migrations::EmbeddedMigration {
    use diesel_migrations::{EmbeddedMigration, EmbeddedName, TomlMetadataWrapper};
    EmbeddedMigration::new(
        up,
        Some(""),
        EmbeddedName::new(name),
        TomlMetadataWrapper::new(true),
    )
}

/// `Store::run_migrations` whose first migration rewrote a cached row and
/// whose second failed returned the error before emptying the store's own
/// caches: without a watcher (coherence off) the store served the row the
/// migration had rewritten for as long as it stayed cached (review N).
#[test]
fn a_run_of_migrations_that_fails_after_one_applied_empties_the_stores_cache() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        assert_eq!(db.store.users().get(ann.id).unwrap().unwrap().name, "ann");
        let migrations: &'static [diesel_migrations::EmbeddedMigration] = Box::leak(Box::new([
            embedded_one(
                "2099-02-01-000000_rename",
                "UPDATE users SET name = 'renamed';",
            ),
            embedded_one("2099-02-02-000000_broken", "NOT SQL;"),
        ]));
        let err = db.store.run_migrations(embedded(migrations)).unwrap_err();
        assert!(matches!(err, Error::Migration { .. }), "{err:?}");
        assert_eq!(
            db.store.users().get(ann.id).unwrap().unwrap().name,
            "renamed",
            "{:?}: the row the applied migration rewrote is served from the cache",
            db.backend
        );
    });
}

/// On MySQL, `Store::run_migrations` ran its migrations without recording
/// their attempts, unlike `Migrator::run`: one that failed part way (its DDL
/// committed what came before it) was neither marked failed nor refused, so
/// the next process to start ran it again over what it had done, applying
/// its data changes twice (review N).
#[test]
fn a_store_run_of_a_mysql_migration_that_failed_part_way_is_not_run_again() {
    each_backend(|target| {
        if target.backend != larder::Backend::Mysql {
            return;
        }
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let migrations: &'static [diesel_migrations::EmbeddedMigration] =
            Box::leak(Box::new([embedded_one(
                "2099-03-01-000000_half",
                "UPDATE users SET name = CONCAT(name, '!'); \
                 CREATE TABLE IF NOT EXISTS half_a (id BIGINT PRIMARY KEY); NOT SQL;",
            )]));
        let first = db.store.run_migrations(embedded(migrations)).unwrap_err();
        assert!(matches!(first, Error::Migration { .. }), "{first:?}");
        let again = db.store.run_migrations(embedded(migrations)).unwrap_err();
        assert!(again.to_string().contains("part way"), "{again}");
        assert_eq!(
            common::user_in_db(&db.store, ann.id).unwrap().name,
            "ann!",
            "the half-done migration's UPDATE ran again"
        );
    });
}

/// On MySQL, `Migrator::redo` applied the reverted migrations again without
/// recording their attempts, unlike `run`: one whose up.sql failed part way
/// in the redo (its DDL committing what came before) was shown as simply
/// pending, and the next `run` ran it again over what it had done, its
/// data changes applied twice (review N).
#[test]
fn a_mysql_migration_that_fails_part_way_in_a_redo_stops_later_runs() {
    each_backend(|target| {
        if target.backend != larder::Backend::Mysql {
            return;
        }
        let db = target.fresh();
        db.raw(
            "CREATE TABLE redo_counter (n BIGINT NOT NULL); INSERT INTO redo_counter VALUES (0);",
        );
        let dir = tempfile::tempdir().unwrap();
        // Its down.sql forgets redo_b: applying it again fails on it.
        write_migration(
            dir.path(),
            "2099-05-01-000000_redo",
            "CREATE TABLE IF NOT EXISTS redo_a (id BIGINT PRIMARY KEY); \
             UPDATE redo_counter SET n = n + 1; \
             CREATE TABLE redo_b (id BIGINT PRIMARY KEY);",
            "DROP TABLE redo_a;",
        );
        let counter = || -> i64 {
            #[derive(QueryableByName)]
            struct N {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            let mut conn = larder::Connection::establish(&db.url()).unwrap();
            larder::with_connection!(&mut conn, |c| diesel::sql_query(
                "SELECT n FROM redo_counter"
            )
            .get_result::<N>(c))
            .unwrap()
            .n
        };
        let mut migrator = Migrator::open_with_dir(&db.url(), dir.path()).unwrap();
        migrator.run().unwrap();
        assert_eq!(counter(), 1);
        let err = migrator.redo().unwrap_err();
        assert!(matches!(err, Error::Migration { .. }), "{err:?}");
        assert_eq!(counter(), 2, "the premise: the redo's UPDATE committed");
        let status = migrator.status().unwrap();
        let redo = status.iter().find(|m| m.name.ends_with("_redo")).unwrap();
        assert!(redo.failed && !redo.applied, "{redo:?}");
        let again = migrator.run().unwrap_err();
        assert!(again.to_string().contains("part way"), "{again}");
        assert_eq!(counter(), 2, "the half-done migration ran again");
    });
}

/// A store with coherence off (the database's only writer, as
/// docs/deployment.md shows) runs no watcher, and the watchers were the only
/// ones to prune the change log its capture triggers keep writing: on SQLite
/// and MySQL the log grew by a row per write for as long as the database
/// lived. PostgreSQL has no log (its changes are notified).
#[test]
fn a_store_without_a_watcher_still_prunes_the_change_log() {
    each_backend(|target| {
        if target.backend == larder::Backend::Postgres {
            return;
        }
        let db = target.fresh();
        for i in 0..10 {
            user(&db.store, &format!("old{i}"));
        }
        db.raw(if db.is(larder::Backend::Sqlite) {
            "UPDATE larder_changes SET changed_at = datetime('now', '-1 hour')"
        } else {
            "UPDATE larder_changes SET changed_at = NOW(6) - INTERVAL 1 HOUR"
        });
        assert!(common::change_log(&db.url()).len() >= 10);
        let store = larder_blog::builder(&db.url())
            .coherence(false)
            .build()
            .unwrap();
        user(&store, "new");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while common::change_log(&db.url()).len() > 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let log = common::change_log(&db.url());
        assert!(log.len() <= 2, "{:?}: never pruned: {log:?}", db.backend);
    });
}
