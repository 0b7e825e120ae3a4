//! Cross-process coherence: a change committed by another OS process, through
//! larder or through plain SQL, reaches this process's cache within the
//! configured staleness bound, on every backend.
//!
//! The other process is this test binary started again to run only [`peer`],
//! which performs one write described by environment variables and exits.

mod common;

use larder_blog::prelude::*;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{each_backend, rename, Target, TestDb};
use larder::{Backend, Error, FlushReason, Store};

/// The bound the stores under test are built with. A test checks the cache
/// once this long after the peer's commit returned: that is the contract.
const BOUND: Duration = Duration::from_millis(500);

/// A store on `db`'s database with coherence on, as an application runs it.
fn coherent_store(db: &TestDb) -> Store {
    Store::builder(&db.url())
        .max_staleness(BOUND)
        .build()
        .expect("coherent store")
}

/// A database with a user, a post and a comment, written by the test's own
/// (coherence-off) store so the coherent store starts with nothing to hear.
fn seeded(target: &Target) -> (TestDb, i64, i64, i64) {
    let db = target.fresh();
    let ann = common::user(&db.store, "ann");
    let post = common::post(&db.store, &ann, "hello");
    let comment = common::comment(&db.store, &post, &ann, "first");
    (db, ann.id, post.id, comment.id)
}

/// Runs one write in another OS process and waits for it to exit.
fn in_other_process(db: &TestDb, action: &str) {
    let exe = std::env::current_exe().expect("test binary");
    let output = Command::new(exe)
        .args([
            "--exact",
            "peer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LARDER_PEER_URL", db.url())
        .env("LARDER_PEER_ACTION", action)
        .output()
        .expect("start the peer process");
    assert!(
        output.status.success(),
        "peer `{action}` failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The other process. Ignored so a plain `cargo test -- --ignored` run does
/// nothing harmful; without the variables it does nothing at all.
#[test]
#[ignore = "the peer process of the coherence tests, started by them"]
fn peer() {
    let (Ok(url), Ok(action)) = (
        std::env::var("LARDER_PEER_URL"),
        std::env::var("LARDER_PEER_ACTION"),
    ) else {
        return;
    };
    let (verb, arg) = action.split_once(' ').expect("verb and argument");
    match verb {
        "sql" => {
            use diesel::connection::SimpleConnection;
            let mut conn = larder::Connection::establish(&url).expect("raw connection");
            conn.batch_execute(arg).expect(arg);
        }
        "rename-user" => {
            let (id, name) = arg.split_once(' ').expect("id and name");
            let store = Store::open(&url).expect("peer store");
            store
                .users()
                .update(id.parse().expect("id"), rename(name))
                .expect("rename");
        }
        "delete-user" => {
            let store = Store::open(&url).expect("peer store");
            assert!(store
                .users()
                .delete(arg.parse().expect("id"))
                .expect("delete"));
        }
        other => panic!("unknown peer action {other}"),
    }
}

fn name_of(store: &Store, id: i64) -> Option<String> {
    store.users().get(id).unwrap().map(|u| u.name.clone())
}

/// A transaction on a connection of its own that ran `sql` and stays open
/// until the caller sends `COMMIT` (or drops the connection).
fn open_transaction(db: &TestDb, sql: &str) -> larder::Connection {
    use diesel::connection::SimpleConnection;
    let mut conn = larder::Connection::establish(&db.url()).unwrap();
    conn.batch_execute(&format!("BEGIN; {sql}")).unwrap();
    conn
}

/// MySQL's proof that a skipped id's transaction has ended reads every open
/// transaction on the server, so a test holding one open for long delays
/// every other test's proof. Tests that hold transactions open across the
/// watcher's checks, and tests that wait for a proof, take turns.
fn server_transactions() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn a_change_by_another_larder_process_reaches_the_cache() {
    each_backend(|target| {
        let (db, ann, _, _) = seeded(target);
        let a = coherent_store(&db);
        assert_eq!(name_of(&a, ann).as_deref(), Some("ann"));
        assert!(a.users().cached(ann).is_some());

        in_other_process(&db, &format!("rename-user {ann} Ann"));
        std::thread::sleep(BOUND);
        assert_eq!(name_of(&a, ann).as_deref(), Some("Ann"), "renamed");

        in_other_process(&db, &format!("delete-user {ann}"));
        std::thread::sleep(BOUND);
        assert_eq!(name_of(&a, ann), None, "deleted");
        assert!(a.stats().coherence.changes >= 2);
    });
}

#[test]
fn a_change_by_raw_sql_in_another_process_reaches_the_cache() {
    each_backend(|target| {
        let (db, ann, _, _) = seeded(target);
        let bob = common::user(&db.store, "bob").id;
        let a = coherent_store(&db);
        assert_eq!(name_of(&a, ann).as_deref(), Some("ann"));
        assert_eq!(name_of(&a, bob).as_deref(), Some("bob"));

        in_other_process(
            &db,
            &format!("sql UPDATE users SET name = 'Ann' WHERE id = {ann}"),
        );
        in_other_process(&db, &format!("sql DELETE FROM users WHERE id = {bob}"));
        std::thread::sleep(BOUND);
        assert_eq!(name_of(&a, ann).as_deref(), Some("Ann"), "updated");
        assert_eq!(name_of(&a, bob), None, "deleted");
    });
}

/// A URL with a libpq parameter the waiting client does not know gets a
/// listener that reads notifications every tick instead: changes still arrive.
#[test]
fn a_listener_on_a_url_only_libpq_understands_still_hears_changes() {
    each_backend(|target| {
        if target.backend != Backend::Postgres {
            return;
        }
        let (db, ann, _, _) = seeded(target);
        let url = format!("{}?keepalives_count=3", db.url());
        let a = Store::builder(&url)
            .max_staleness(BOUND)
            .build()
            .expect("coherent store");
        assert_eq!(name_of(&a, ann).as_deref(), Some("ann"));
        in_other_process(
            &db,
            &format!("sql UPDATE users SET name = 'Ann' WHERE id = {ann}"),
        );
        std::thread::sleep(BOUND);
        assert_eq!(name_of(&a, ann).as_deref(), Some("Ann"));
        assert_eq!(a.stats().coherence.flushes, 0, "{:?}", a.stats().coherence);
    });
}

#[test]
fn a_cascading_delete_in_another_process_empties_the_children() {
    each_backend(|target| {
        let (db, ann, post, comment) = seeded(target);
        let a = coherent_store(&db);
        assert!(a.posts().get(post).unwrap().is_some());
        assert!(a.comments().get(comment).unwrap().is_some());
        assert_eq!(a.posts().by_author(ann).unwrap().len(), 1);
        assert_eq!(a.comments().of_post(post).unwrap().len(), 1);

        // Plain SQL: no larder code knows about the cascade, only the triggers.
        in_other_process(&db, &format!("sql DELETE FROM users WHERE id = {ann}"));
        std::thread::sleep(BOUND);
        assert!(
            a.posts().cached(post).is_none(),
            "cascaded post still cached"
        );
        assert!(
            a.comments().cached(comment).is_none(),
            "cascaded comment still cached"
        );
        assert!(a.posts().get(post).unwrap().is_none());
        assert!(a.comments().get(comment).unwrap().is_none());
        assert!(a.posts().by_author(ann).unwrap().is_empty());
        assert!(a.comments().of_post(post).unwrap().is_empty());
    });
}

#[test]
fn an_insert_elsewhere_retires_cached_lists() {
    each_backend(|target| {
        let (db, ann, post, _) = seeded(target);
        let a = coherent_store(&db);
        assert_eq!(a.comments().of_post(post).unwrap().len(), 1);
        let now = match db.backend {
            Backend::Sqlite => "'2026-11-25 00:00:00'",
            _ => "CURRENT_TIMESTAMP",
        };
        in_other_process(
            &db,
            &format!(
                "sql INSERT INTO comments (post_id, author_id, body, created_at) \
                 VALUES ({post}, {ann}, 'second', {now})"
            ),
        );
        std::thread::sleep(BOUND);
        assert_eq!(a.comments().of_post(post).unwrap().len(), 2);
    });
}

#[test]
fn a_rolled_back_change_elsewhere_invalidates_nothing() {
    let _turn = server_transactions();
    each_backend(|target| {
        let (db, ann, _, _) = seeded(target);
        let a = coherent_store(&db);
        let cached = a.users().get(ann).unwrap().unwrap();
        let begin = if db.is(Backend::Sqlite) {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN"
        };
        in_other_process(
            &db,
            &format!("sql {begin}; UPDATE users SET name = 'nobody' WHERE id = {ann}; ROLLBACK"),
        );
        std::thread::sleep(BOUND);
        assert!(Arc::ptr_eq(&a.users().get(ann).unwrap().unwrap(), &cached));
        let stats = a.stats().coherence;
        assert_eq!((stats.changes, stats.flushes), (0, 0), "{stats:?}");
    });
}

#[test]
fn writes_through_the_store_still_invalidate_at_once_locally() {
    each_backend(|target| {
        let (db, ann, _, _) = seeded(target);
        let a = coherent_store(&db);
        a.users().get(ann).unwrap();
        a.users().update(ann, rename("Ann")).unwrap();
        assert_eq!(name_of(&a, ann).as_deref(), Some("Ann"));
    });
}

#[test]
fn an_application_table_with_generated_capture_is_coherent() {
    use diesel::prelude::*;
    diesel::table! { notes (id) { id -> BigInt, body -> Text } }
    #[derive(Debug, Clone, Queryable, Selectable)]
    #[diesel(table_name = notes)]
    struct Note {
        id: i64,
        body: String,
    }
    #[derive(Insertable)]
    #[diesel(table_name = notes)]
    struct NewNote {
        body: String,
    }
    #[derive(AsChangeset)]
    #[diesel(table_name = notes)]
    struct NoteChanges {
        body: Option<String>,
    }
    larder::entity!(Note {
        table: notes,
        new: NewNote,
        changes: NoteChanges,
    });

    each_backend(|target| {
        let db = target.fresh();
        db.raw(&format!(
            "CREATE TABLE notes (id {}, body TEXT NOT NULL)",
            common::serial_key(db.backend)
        ));
        db.raw(&larder::capture_sql(db.backend, "notes").unwrap().up);
        let a = Store::builder(&db.url())
            .max_staleness(BOUND)
            .entity::<Note>()
            .build()
            .unwrap();
        let note = a
            .repo::<Note>()
            .create(NewNote {
                body: "draft".into(),
            })
            .unwrap();
        std::thread::sleep(BOUND); // a's own insert comes back too
        assert_eq!(
            a.repo::<Note>().get(note.id).unwrap().unwrap().body,
            "draft"
        );

        in_other_process(
            &db,
            &format!("sql UPDATE notes SET body = 'final' WHERE id = {}", note.id),
        );
        std::thread::sleep(BOUND);
        let seen = a.repo::<Note>().get(note.id).unwrap().unwrap();
        assert_eq!(seen.body, "final");
    });
}

/// A table of the tests' own, outside the blog, created by each test that
/// uses it.
mod memo {
    use diesel::prelude::*;
    diesel::table! { memos (id) { id -> BigInt, body -> Text } }
    #[derive(Debug, Clone, Queryable, Selectable)]
    #[diesel(table_name = memos)]
    pub struct Memo {
        pub id: i64,
        pub body: String,
    }
    #[derive(Debug, Insertable)]
    #[diesel(table_name = memos)]
    pub struct NewMemo {
        pub body: String,
    }
    #[derive(Debug, AsChangeset)]
    #[diesel(table_name = memos)]
    pub struct MemoChanges {
        pub body: Option<String>,
    }
    larder::entity!(Memo {
        table: memos,
        new: NewMemo,
        changes: MemoChanges,
    });
}

/// A session in `session_replication_role = replica` fires only triggers
/// enabled `ALWAYS`: a logical replication subscriber's apply worker runs so,
/// and so does a bulk fix that skips foreign-key checks. Its changes must
/// reach other processes' caches too (review O).
#[test]
fn a_change_made_in_replica_role_on_postgres_reaches_the_cache() {
    use memo::Memo;

    each_backend(|target| {
        if target.backend != Backend::Postgres {
            return; // session_replication_role is PostgreSQL's
        }
        let db = target.fresh();
        db.raw("CREATE TABLE memos (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)");
        db.raw(&larder::capture_sql(db.backend, "memos").unwrap().up);
        db.raw("INSERT INTO memos (body) VALUES ('draft')");
        let a = Store::builder(&db.url())
            .max_staleness(BOUND)
            .entity::<Memo>()
            .build()
            .unwrap();
        let memo = a.repo::<Memo>().get(1).unwrap().unwrap();
        assert_eq!(memo.body, "draft");

        in_other_process(
            &db,
            "sql SET session_replication_role = replica; \
             UPDATE memos SET body = 'final' WHERE id = 1",
        );
        std::thread::sleep(BOUND);
        let seen = a.repo::<Memo>().get(1).unwrap().unwrap();
        assert_eq!(seen.body, "final", "{:?}", a.stats().coherence);
    });
}

/// A URL's `search_path` may name a schema of the application's own before
/// `public` (a tenant's, with shared tables left in `public`): the cache reads
/// the first table of that name the path finds, and `uncaptured_tables` must
/// look for that same table, not only in the path's first schema.
#[test]
fn uncaptured_tables_finds_a_table_through_the_search_path() {
    use memo::Memo;

    each_backend(|target| {
        if target.backend != Backend::Postgres {
            return; // search_path is PostgreSQL's
        }
        let db = target.fresh();
        db.raw("CREATE SCHEMA tenant; CREATE TABLE public.memos (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)");
        let separator = if db.url().contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{separator}options=-csearch_path%3Dtenant,public",
            db.url()
        );
        let store = Store::builder(&url)
            .max_staleness(BOUND)
            .entity::<Memo>()
            .build()
            .unwrap();
        assert_eq!(
            store.uncaptured_tables().unwrap(),
            ["memos"],
            "public.memos, found through the search_path, has no capture"
        );

        let mut conn = larder::Connection::establish(&url).unwrap();
        let capture = larder::capture_sql(db.backend, "memos").unwrap();
        diesel::connection::SimpleConnection::batch_execute(&mut conn, &capture.up).unwrap();
        assert!(store.uncaptured_tables().unwrap().is_empty());
        drop(store);
    });
}

/// PostgreSQL and MySQL tell `"Notes"` from `notes` (MySQL on a server
/// with case-sensitive table names, as Linux's default): both tables of one
/// schema can be captured, and their captures removed, one after the other.
#[test]
fn two_tables_whose_names_differ_only_in_case_are_both_captured() {
    each_backend(|target| {
        if target.backend == Backend::Sqlite {
            return; // one table to SQLite
        }
        let db = target.fresh();
        let q = if db.is(Backend::Mysql) { '`' } else { '"' };
        let key = common::serial_key(db.backend);
        for table in ["Notes", "notes"] {
            db.raw(&format!(
                "CREATE TABLE {q}{table}{q} (id {key}, body TEXT NOT NULL)"
            ));
        }
        let sql = |table| larder::capture_sql(db.backend, table).unwrap();
        db.raw(&sql("Notes").up);
        db.raw(&sql("notes").up);
        db.raw(&sql("Notes").down);
        db.raw(&sql("notes").down);
    });
}

/// larder's watcher threads of this process that have not begun to exit.
fn watcher_threads() -> usize {
    common::threads::live_threads()
        .iter()
        .filter(|name| matches!(name.as_str(), "larder-watcher" | "larder-guard"))
        .count()
}

#[test]
fn the_watcher_stops_with_the_last_clone_and_only_then() {
    // Runs alone in its own process so other tests' watchers do not count.
    let test = "the_watcher_stops_with_the_last_clone_and_only_then";
    if !common::threads::alone_in_this_process(test, "LARDER_WATCHER_COUNT") {
        return;
    }
    each_backend(|target| {
        let db = target.fresh();
        assert_eq!(watcher_threads(), 0, "coherence is off in `fresh`");
        let a = coherent_store(&db);
        let b = a.clone();
        // A new thread names itself once it runs; until then it has its parent's name.
        let deadline = Instant::now() + Duration::from_secs(5);
        while watcher_threads() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(watcher_threads(), 2, "the watcher and its guard");
        drop(a);
        assert_eq!(watcher_threads(), 2, "a clone still uses them");
        b.users().get(1).unwrap();
        drop(b);
        assert_eq!(watcher_threads(), 0, "stopped and joined by the last drop");
        if db.is(Backend::Postgres) {
            assert_eq!(listeners(&db), 0, "its connection is closed too");
        }
        let off = Store::builder(&db.url()).coherence(false).build().unwrap();
        assert_eq!(watcher_threads(), 0);
        assert!(!off.stats().coherence.enabled);
    });
}

/// Watcher connections to `db`'s PostgreSQL database, once the server has
/// noticed closed ones (it takes a moment).
fn listeners(db: &TestDb) -> i64 {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = larder::Connection::establish(&db.url()).unwrap();
    let sql = "SELECT count(*) AS n FROM pg_stat_activity \
               WHERE application_name = 'larder watcher' AND datname = current_database()";
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let count: Count =
            larder::with_connection!(&mut conn, |c| diesel::sql_query(sql).get_result(c)).unwrap();
        if count.n == 0 || Instant::now() > deadline {
            return count.n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn without_the_change_log_the_caches_are_flushed_until_it_exists() {
    // A store on a database whose migrations have not run cannot hear other
    // processes: once anyone commits anything, it keeps the bound by
    // flushing, and stops once migrated.
    use diesel::connection::SimpleConnection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    let store = Store::builder(&url).max_staleness(BOUND).build().unwrap();
    std::thread::sleep(BOUND * 2);
    assert_eq!(
        store.stats().coherence.flushes,
        0,
        "nobody committed: nothing can be stale"
    );
    let mut other = larder::Connection::establish(&url).unwrap();
    other
        .batch_execute("CREATE TABLE scratch (x INTEGER)")
        .unwrap();
    std::thread::sleep(BOUND * 2);
    assert!(
        store.stats().coherence.flushes > 0,
        "{:?}",
        store.stats().coherence
    );
    store.migrate().unwrap();
    std::thread::sleep(BOUND);
    let after_migrate = store.stats().coherence.flushes;
    std::thread::sleep(BOUND * 2);
    assert_eq!(
        store.stats().coherence.flushes,
        after_migrate,
        "healthy once the log exists"
    );
}

#[test]
fn a_staleness_bound_or_poll_interval_out_of_range_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    for bound in [
        Duration::ZERO,
        Duration::from_millis(9),
        Duration::from_secs(61),
    ] {
        let err = Store::builder(&url)
            .max_staleness(bound)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
        assert!(err.to_string().contains("max_staleness"), "{err}");
    }
    // Above a quarter of the bound the watcher could not confirm in time: it
    // would flush on every tick (100 ms == max_staleness was once accepted).
    for interval in [
        Duration::ZERO,
        Duration::from_millis(26),
        Duration::from_millis(100),
        Duration::from_millis(101),
    ] {
        let err = Store::builder(&url)
            .max_staleness(Duration::from_millis(100))
            .poll_interval(interval)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("poll_interval"), "{err}");
    }
    assert!(!dir.path().join("b.db").exists(), "nothing was created");
}

#[test]
fn a_killed_listener_flushes_the_cache_and_comes_back() {
    each_backend(|target| {
        if target.backend != Backend::Postgres {
            return;
        }
        let (db, ann, _, _) = seeded(target);
        let a = coherent_store(&db);
        a.users().get(ann).unwrap();
        db.raw(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'larder watcher' AND datname = current_database()",
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.stats().coherence.reconnects == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let stats = a.stats().coherence;
        assert_eq!(stats.connection_losses, 1, "{stats:?}");
        assert_eq!(stats.reconnects, 1, "{stats:?}");
        assert!(stats.flushes >= 1, "{stats:?}");
        assert!(a.users().cached(ann).is_none(), "flushed");

        assert_eq!(name_of(&a, ann).as_deref(), Some("ann"));
        in_other_process(
            &db,
            &format!("sql UPDATE users SET name = 'Ann' WHERE id = {ann}"),
        );
        std::thread::sleep(BOUND);
        assert_eq!(
            name_of(&a, ann).as_deref(),
            Some("Ann"),
            "heard after the reconnect"
        );
    });
}

#[test]
fn a_mysql_cascade_is_written_to_the_change_log() {
    // MySQL fires no trigger on rows a foreign key cascade removes; larder's
    // migration records them from the parent's trigger instead.
    each_backend(|target| {
        let (db, ann, post, comment) = seeded(target);
        if db.backend == Backend::Postgres {
            return; // no change log: notifications, covered above
        }
        db.raw(&format!("DELETE FROM users WHERE id = {ann}"));
        let deleted: Vec<(String, i64)> = common::change_log(&db.url())
            .into_iter()
            .filter(|(_, _, op)| op == "D")
            .map(|(table, id, _)| (table, id))
            .collect();
        for expected in [("users", ann), ("posts", post), ("comments", comment)] {
            assert!(
                deleted
                    .iter()
                    .any(|(t, id)| t == expected.0 && *id == expected.1),
                "{expected:?} missing from {deleted:?}"
            );
        }
    });
}

#[test]
fn a_change_committed_after_a_later_one_is_not_missed() {
    let _turn = server_transactions();
    // On MySQL a transaction takes its change-log id when it writes, and may
    // commit after a transaction that took a later id: the poller must come
    // back for the skipped id. (SQLite has one writer at a time.)
    each_backend(|target| {
        if target.backend == Backend::Sqlite {
            return;
        }
        use diesel::connection::SimpleConnection;
        let (db, ann, _, _) = seeded(target);
        let bob = common::user(&db.store, "bob").id;
        let a = coherent_store(&db);
        a.users().get(ann).unwrap();
        a.users().get(bob).unwrap();

        let mut slow = open_transaction(
            &db,
            &format!("UPDATE users SET name = 'Ann' WHERE id = {ann}"),
        );
        db.raw(&format!("UPDATE users SET name = 'Bob' WHERE id = {bob}"));
        std::thread::sleep(BOUND);
        assert_eq!(name_of(&a, bob).as_deref(), Some("Bob"));
        assert_eq!(
            name_of(&a, ann).as_deref(),
            Some("ann"),
            "not committed yet"
        );

        slow.batch_execute("COMMIT").unwrap();
        std::thread::sleep(BOUND);
        assert_eq!(
            name_of(&a, ann).as_deref(),
            Some("Ann"),
            "the earlier id was read late"
        );
    });
}

#[test]
fn old_change_log_rows_are_pruned() {
    each_backend(|target| {
        if target.backend == Backend::Postgres {
            return; // notifications leave nothing behind
        }
        let db = target.fresh();
        let long_ago = match db.backend {
            Backend::Sqlite => "datetime('now', '-1 hour')",
            _ => "NOW(6) - INTERVAL 1 HOUR",
        };
        // The log starts with the hour-old row (not after the migrations'
        // announcements, which are newer): pruning takes the log's old head.
        db.raw("DELETE FROM larder_changes");
        db.raw(&format!(
            "INSERT INTO larder_changes (table_name, row_id, op, changed_at) \
             VALUES ('users', 1, 'U', {long_ago}), ('users', 2, 'U', CURRENT_TIMESTAMP)"
        ));
        let a = coherent_store(&db);
        std::thread::sleep(BOUND);
        let left: Vec<i64> = common::change_log(&db.url())
            .into_iter()
            .map(|(_, id, _)| id)
            .collect();
        assert_eq!(left, [2], "the hour-old row is pruned, the new one kept");
        drop(a);
    });
}

#[test]
fn tables_without_capture_triggers_are_reported() {
    use diesel::prelude::*;
    diesel::table! { drafts (id) { id -> BigInt, body -> Text } }
    #[derive(Debug, Clone, Queryable, Selectable)]
    #[diesel(table_name = drafts)]
    #[allow(dead_code)] // never loaded: only its table matters here
    struct Draft {
        id: i64,
        body: String,
    }
    #[derive(Insertable)]
    #[diesel(table_name = drafts)]
    struct NewDraft {
        body: String,
    }
    #[derive(AsChangeset)]
    #[diesel(table_name = drafts)]
    struct DraftChanges {
        body: Option<String>,
    }
    larder::entity!(Draft {
        table: drafts,
        new: NewDraft,
        changes: DraftChanges,
    });

    each_backend(|target| {
        let db = target.fresh_with(|b| b.entity::<Draft>());
        assert!(
            db.store.uncaptured_tables().unwrap().is_empty(),
            "a table not created yet is not listed"
        );
        db.raw("CREATE TABLE drafts (id BIGINT PRIMARY KEY, body TEXT NOT NULL)");
        assert_eq!(db.store.uncaptured_tables().unwrap(), ["drafts"]);
        db.raw(&larder::capture_sql(db.backend, "drafts").unwrap().up);
        assert!(db.store.uncaptured_tables().unwrap().is_empty());

        // An entity on a view: no capture trigger fires for the writes to
        // the tables under it, so it is listed as well.
        let db = target.fresh_with(|b| b.entity::<Draft>());
        db.raw("CREATE VIEW drafts AS SELECT id, name AS body FROM users");
        assert_eq!(db.store.uncaptured_tables().unwrap(), ["drafts"], "a view");
    });
}

/// PostgreSQL: a capture trigger disabled (`ALTER TABLE … DISABLE TRIGGER
/// ALL` for a bulk load, never undone) fires for nothing, yet it was counted
/// as capture: `uncaptured_tables` and the start-up warning stayed silent
/// while every change made elsewhere went unheard (review O).
#[test]
fn a_table_whose_capture_trigger_is_disabled_is_reported() {
    each_backend(|target| {
        if target.backend != Backend::Postgres {
            return; // MySQL and SQLite cannot disable a trigger
        }
        let db = target.fresh();
        assert!(db.store.uncaptured_tables().unwrap().is_empty());
        db.raw("ALTER TABLE users DISABLE TRIGGER ALL");
        assert_eq!(db.store.uncaptured_tables().unwrap(), ["users"]);
        db.raw("ALTER TABLE users ENABLE ALWAYS TRIGGER larder_capture_users");
        assert_eq!(
            db.store.uncaptured_tables().unwrap(),
            ["users"],
            "its TRUNCATE trigger is still disabled"
        );
        db.raw("ALTER TABLE users ENABLE ALWAYS TRIGGER larder_capture_users_truncate");
        assert!(db.store.uncaptured_tables().unwrap().is_empty());
    });
}

/// MySQL fires no trigger for the rows an `ON DELETE CASCADE` removes: the
/// child's cache hears of them only through its `deleted_with` parent's own
/// delete, which other processes report only if the parent is captured. The
/// README's flow (`--capture` the entity's table, `deleted_with = ["posts"]`)
/// left the parent uncaptured, and a post deleted by another process left its
/// tags cached for good while `uncaptured_tables` reported nothing.
#[test]
fn on_mysql_an_uncaptured_deleted_with_parent_is_reported() {
    use diesel::prelude::*;
    diesel::table! { notes (id) { id -> BigInt, folder_id -> BigInt, body -> Text } }
    #[derive(Debug, Clone, Queryable, Selectable)]
    #[diesel(table_name = notes)]
    #[allow(dead_code)] // never loaded: only its tables matter here
    struct Note {
        id: i64,
        folder_id: i64,
        body: String,
    }
    #[derive(Insertable)]
    #[diesel(table_name = notes)]
    struct NewNote {
        folder_id: i64,
        body: String,
    }
    #[derive(AsChangeset)]
    #[diesel(table_name = notes)]
    struct NoteChanges {
        body: Option<String>,
    }
    larder::entity!(Note {
        table: notes,
        new: NewNote,
        changes: NoteChanges,
        deleted_with: ["folders"],
    });

    each_backend(|target| {
        let db = target.fresh_with(|b| b.entity::<Note>());
        db.raw("CREATE TABLE folders (id BIGINT PRIMARY KEY)");
        db.raw(
            "CREATE TABLE notes (id BIGINT PRIMARY KEY, \
             folder_id BIGINT NOT NULL REFERENCES folders (id) ON DELETE CASCADE, \
             body TEXT NOT NULL)",
        );
        db.raw(&larder::capture_sql(db.backend, "notes").unwrap().up);
        let uncaptured = db.store.uncaptured_tables().unwrap();
        if db.is(Backend::Mysql) {
            assert_eq!(uncaptured, ["folders"], "its cascades reach notes unheard");
            db.raw(&larder::capture_sql(db.backend, "folders").unwrap().up);
            assert!(db.store.uncaptured_tables().unwrap().is_empty());
        } else {
            assert!(uncaptured.is_empty(), "cascades fire notes' triggers");
        }
    });
}

#[test]
fn under_concurrent_writes_elsewhere_no_stale_entry_survives_the_bound() {
    // Readers keep the coherent store's cache busy while another store and a
    // plain SQL connection rename and delete rows; once the writes stop and
    // the bound has passed, every entry still cached must equal its row.
    use std::sync::atomic::{AtomicBool, Ordering};
    each_backend(|target| {
        let db = target.fresh_with(|b| b.pool_size(4));
        let ids: Vec<i64> = (0..16)
            .map(|n| common::user(&db.store, &format!("u{n}")).id)
            .collect();
        let a = coherent_store(&db);
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for reader in 0..2 {
                let (a, ids, stop) = (&a, &ids, &stop);
                scope.spawn(move || {
                    let mut n = reader;
                    while !stop.load(Ordering::Relaxed) {
                        let _ = a.users().get(ids[n % ids.len()]);
                        n += 7;
                    }
                });
            }
            let writer = scope.spawn(|| {
                let mut raw = larder::Connection::establish(&db.url()).unwrap();
                for round in 0..60 {
                    let id = ids[(round * 5) % ids.len()];
                    if round % 2 == 0 {
                        let _ = db.store.users().update(id, rename(&format!("r{round}")));
                    } else {
                        use diesel::connection::SimpleConnection;
                        let sql = if round % 11 == 0 {
                            format!("DELETE FROM users WHERE id = {id}")
                        } else {
                            format!("UPDATE users SET name = 's{round}' WHERE id = {id}")
                        };
                        let _ = raw.batch_execute(&sql);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
            writer.join().unwrap();
            std::thread::sleep(BOUND);
            stop.store(true, Ordering::Relaxed);
        });
        let mut checked = 0;
        for &id in &ids {
            let in_db = common::user_in_db(&db.store, id).map(|u| u.name.clone());
            if let Some(cached) = a.users().cached(id) {
                assert_eq!(Some(cached.name.clone()), in_db, "user {id} is stale");
                checked += 1;
            }
        }
        assert!(checked > 0, "the readers kept some rows cached");
    });
}

#[test]
fn a_truncate_on_postgres_empties_the_cached_tables() {
    each_backend(|target| {
        if target.backend != Backend::Postgres {
            return; // SQLite has no TRUNCATE; MySQL's fires no trigger (README)
        }
        let (db, ann, post, comment) = seeded(target);
        let a = coherent_store(&db);
        a.users().get(ann).unwrap();
        a.posts().get(post).unwrap();
        a.comments().get(comment).unwrap();
        in_other_process(&db, "sql TRUNCATE users CASCADE");
        std::thread::sleep(BOUND);
        assert!(a.users().cached(ann).is_none());
        assert!(a.posts().cached(post).is_none(), "truncated by the cascade");
        assert!(
            a.comments().cached(comment).is_none(),
            "truncated by the cascade"
        );
        assert!(a.users().get(ann).unwrap().is_none());
    });
}

#[test]
fn a_store_opened_before_its_migrations_hears_changes_after_them() {
    // The usual start-up: open, then migrate. The change log appears only
    // with the migration; the watcher must pick it up from its first row.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let a = Store::builder(&url).max_staleness(BOUND).build().unwrap();
    larder_blog::migrate(&a).unwrap();
    let ann = common::user(&a, "ann");
    std::thread::sleep(BOUND); // a's own insert comes back
    assert_eq!(name_of(&a, ann.id).as_deref(), Some("ann"));
    let mut other = larder::Connection::establish(&url).unwrap();
    use diesel::connection::SimpleConnection;
    other
        .batch_execute(&format!(
            "UPDATE users SET name = 'Ann' WHERE id = {}",
            ann.id
        ))
        .unwrap();
    std::thread::sleep(BOUND);
    assert_eq!(name_of(&a, ann.id).as_deref(), Some("Ann"));
    assert!(
        a.stats().coherence.changes >= 2,
        "{:?}",
        a.stats().coherence
    );
}

#[test]
fn a_change_held_open_when_the_store_starts_is_seen_when_it_commits() {
    let _turn = server_transactions();
    // MySQL: a transaction holding a change-log id below the log's end when
    // the store starts must still be read when it commits. (SQLite has one
    // writer at a time; PostgreSQL sends notifications at commit.)
    use diesel::connection::SimpleConnection;
    each_backend(|target| {
        if target.backend != Backend::Mysql {
            return;
        }
        let (db, ann, _, _) = seeded(target);
        let bob = common::user(&db.store, "bob").id;
        let mut slow = open_transaction(
            &db,
            &format!("UPDATE users SET name = 'Ann' WHERE id = {ann}"),
        );
        db.raw(&format!("UPDATE users SET name = 'Bob' WHERE id = {bob}"));

        let a = coherent_store(&db);
        assert_eq!(
            name_of(&a, ann).as_deref(),
            Some("ann"),
            "not committed yet"
        );
        slow.batch_execute("COMMIT").unwrap();
        std::thread::sleep(BOUND);
        assert_eq!(
            name_of(&a, ann).as_deref(),
            Some("Ann"),
            "the change held open at start-up was read when it committed"
        );
    });
}

#[test]
fn changes_pruned_before_the_store_read_them_flush_its_caches() {
    let _turn = server_transactions();
    // The change to ann leaves the log before the store reads it, as when
    // another process prunes past a store that fell behind; a later change
    // stays, as pruning always keeps the newest row. The store cannot know
    // what it missed: it must flush rather than keep serving ann's old row.
    each_backend(|target| {
        if target.backend == Backend::Postgres {
            return; // no change log
        }
        let (db, ann, _, _) = seeded(target);
        let bob = common::user(&db.store, "bob").id;
        let a = coherent_store(&db);
        assert_eq!(name_of(&a, ann).as_deref(), Some("ann"));
        // Past the first poll, which also looks for a log pruned past the
        // mark (and then not again for 30 s): this is the poll-by-poll path.
        std::thread::sleep(BOUND);
        let begin = if db.is(Backend::Sqlite) {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN"
        };
        db.raw(&format!(
            "{begin}; UPDATE users SET name = 'Ann' WHERE id = {ann}; \
             UPDATE users SET name = 'Bob' WHERE id = {bob}; \
             DELETE FROM larder_changes WHERE id < \
                 (SELECT m FROM (SELECT MAX(id) AS m FROM larder_changes) AS newest); \
             COMMIT"
        ));
        // Settling a skipped id may wait for other transactions on the
        // server to end: generous, the point is that it happens at all.
        let deadline = Instant::now() + BOUND * 10;
        while name_of(&a, ann).as_deref() != Some("Ann") && Instant::now() < deadline {
            std::thread::sleep(BOUND / 10);
        }
        assert_eq!(
            name_of(&a, ann).as_deref(),
            Some("Ann"),
            "a change pruned unread left a stale row: {:?}",
            a.stats().coherence
        );
        let stats = a.stats().coherence;
        assert!(
            stats.flushes_by_reason.get(FlushReason::FellBehindPruning) >= 1,
            "{stats:?}"
        );
    });
}

/// A coherent store on `db` whose connections go through a proxy the test can
/// freeze, with `ann`'s row read through it: the setup of the tests of a
/// server that stops answering the watcher.
fn through_proxy(db: &TestDb, bound: Duration, ann: i64) -> (common::proxy::Proxy, Store) {
    let proxy = common::proxy::Proxy::start(&db.url());
    let a = Store::builder(&proxy.url())
        .max_staleness(bound)
        .build()
        .unwrap();
    assert_eq!(name_of(&a, ann).as_deref(), Some("ann"));
    (proxy, a)
}

#[test]
fn a_stuck_check_does_not_hold_off_the_flush() {
    // The watcher's connection goes through a proxy that stops forwarding
    // but keeps its sockets open (a black-holed path): its next check waits
    // indefinitely. The caches must be emptied by the clock anyway.
    each_backend(|target| {
        if target.backend == Backend::Sqlite {
            return; // no network
        }
        let bound = Duration::from_millis(200);
        let (db, ann, _, _) = seeded(target);
        let (proxy, a) = through_proxy(&db, bound, ann);
        std::thread::sleep(bound * 2);
        assert!(a.users().cached(ann).is_some(), "healthy: kept");

        proxy.freeze();
        let deadline = Instant::now() + bound * 10;
        while a.users().cached(ann).is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let flushed = a.users().cached(ann).is_none();
        let stats = a.stats().coherence;
        proxy.thaw();
        assert!(flushed, "still cached while the check is stuck: {stats:?}");
        assert!(
            stats.flushes_by_reason.get(FlushReason::StuckCheck) >= 1,
            "{stats:?}"
        );

        // Once the check returns, the store caches again.
        std::thread::sleep(bound * 2);
        assert_eq!(name_of(&a, ann).as_deref(), Some("ann"));
        std::thread::sleep(bound * 2);
        assert!(
            a.users().cached(ann).is_some(),
            "healthy again: {:?}",
            a.stats().coherence
        );
    });
}

/// The pool's connections give up on a server that accepts the socket and
/// never answers (libpq's `connect_timeout` covers the whole startup); the
/// watcher's client bounds only the TCP connect, and its startup, `LISTEN`
/// and probe then waited as long as the socket stayed open: `build` never
/// returned. Here the session URL goes through a frozen proxy while the
/// store's URL reaches the server (review O).
#[test]
fn building_with_a_session_url_that_never_answers_fails_instead_of_hanging() {
    each_backend(|target| {
        if target.backend != Backend::Postgres {
            return; // session_url is PostgreSQL's
        }
        let db = target.fresh();
        let proxy = common::proxy::Proxy::start(&db.url());
        let (url, session) = (db.url(), proxy.url());
        let result = proxy
            .run_frozen(move || {
                Store::builder(&url)
                    .session_url(&session)
                    .build()
                    .map(|_| ())
            })
            .expect("build waited for a watcher's server that never answered");
        assert!(
            matches!(result, Err(Error::Connection { .. })),
            "{result:?}"
        );
    });
}

/// The bound the starved store runs with: long enough that the parent can
/// stop it inside a check well before its guard's deadline.
const STARVED_BOUND: Duration = Duration::from_millis(400);

#[test]
fn a_store_held_up_inside_a_check_confirms_again_instead_of_flushing() {
    // A process that gets no CPU for longer than the bound while its check's
    // answer waits (a starved web server) must, once it runs again, confirm
    // its view rather than empty its caches, and still not serve a row
    // changed meanwhile. Made deterministic: the watcher's connection goes
    // through a proxy frozen long enough for a heartbeat to be in flight, the
    // process is stopped (SIGSTOP), the proxy thawed (the answer and the
    // change's notification wait in its socket), and after more than the
    // bound the process continues (SIGCONT).
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    each_backend(|target| {
        if target.backend != Backend::Postgres {
            return; // a notification waiting in the socket is PostgreSQL's case
        }
        let (db, ann, _, _) = seeded(target);
        let proxy = common::proxy::Proxy::start(&db.url());
        let exe = std::env::current_exe().expect("test binary");
        let mut child = Command::new(exe)
            .args(["--exact", "starved_peer", "--ignored", "--nocapture"])
            .args(["--test-threads=1", "-q"])
            .env("LARDER_STARVED_URL", proxy.url())
            .env("LARDER_STARVED_USER", ann.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the starved peer");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next_line = || loop {
            let line = lines.next().expect("peer output").expect("read");
            if let Some(rest) = line.strip_prefix("peer: ") {
                return rest.to_owned();
            }
        };
        assert_eq!(next_line(), "ready");
        let pid = child.id().to_string();
        let signal = |name: &str| {
            let ok = Command::new("kill").args([name, &pid]).status().unwrap();
            assert!(ok.success(), "kill {name}");
        };

        std::thread::sleep(STARVED_BOUND);
        proxy.freeze();
        // A heartbeat is due every quarter bound; the guard would flush half
        // a bound after it started.
        std::thread::sleep(STARVED_BOUND / 3);
        signal("-STOP");
        proxy.thaw();
        db.raw(&format!("UPDATE users SET name = 'Ann' WHERE id = {ann}"));
        std::thread::sleep(STARVED_BOUND * 3);
        signal("-CONT");

        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "report").unwrap();
        let report = next_line();
        drop(stdin);
        assert!(child.wait().unwrap().success());
        assert_eq!(report, "name=Ann flushes=0", "after SIGCONT");
    });
}

/// The stopped process of the test above. Caches a user through a coherent
/// store, says `ready`, and on `report` (once it runs again) waits for the
/// bound and prints what it serves and how often it flushed.
#[test]
#[ignore = "the peer process of a coherence test, started by it"]
fn starved_peer() {
    use std::io::BufRead;
    let (Ok(url), Ok(id)) = (
        std::env::var("LARDER_STARVED_URL"),
        std::env::var("LARDER_STARVED_USER"),
    ) else {
        return;
    };
    let id: i64 = id.parse().expect("user id");
    let store = Store::builder(&url)
        .max_staleness(STARVED_BOUND)
        .build()
        .expect("store");
    assert_eq!(name_of(&store, id).as_deref(), Some("ann"));
    println!("peer: ready");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("stdin");
    std::thread::sleep(STARVED_BOUND);
    let name = name_of(&store, id).unwrap_or_default();
    let flushes = store.stats().coherence.flushes;
    println!("peer: name={name} flushes={flushes}");
}

/// A change whose operation this larder does not know (a newer version's
/// trigger, a hand-written one) may have changed anything in its table: it
/// empties the table's caches instead of being ignored.
#[test]
fn a_change_of_an_unknown_kind_empties_its_table() {
    each_backend(|target| {
        let (db, ann, _, _) = seeded(target);
        let a = coherent_store(&db);
        assert_eq!(name_of(&a, ann).as_deref(), Some("ann"));
        assert!(a.users().cached(ann).is_some(), "the premise: cached");
        match db.backend {
            Backend::Postgres => db.raw(&format!(
                "SELECT pg_notify('larder_changes', 'users X {ann}')"
            )),
            Backend::Sqlite => db.raw(&format!(
                "INSERT INTO larder_changes (table_name, row_id, op, changed_at) \
                 VALUES ('users', {ann}, 'X', CURRENT_TIMESTAMP)"
            )),
            _ => db.raw(&format!(
                "INSERT INTO larder_changes (table_name, row_id, op, changed_at) \
                 VALUES ('users', {ann}, 'X', NOW(6))"
            )),
        }
        std::thread::sleep(BOUND);
        assert!(
            a.users().cached(ann).is_none(),
            "a change of an unknown kind was ignored"
        );
        assert_eq!(a.stats().coherence.flushes, 0, "not a flush of everything");
    });
}

/// PostgreSQL: a notification that names a table but no row larder can read
/// (a hand-written trigger's text id, say) may stand for any row of it: the
/// table is emptied, as for an unknown operation, not the change ignored.
#[test]
fn a_notification_whose_row_id_does_not_parse_empties_its_table() {
    each_backend(|target| {
        if target.backend != Backend::Postgres {
            return; // the change log's row_id column is an integer
        }
        let (db, ann, _, _) = seeded(target);
        let a = coherent_store(&db);
        assert_eq!(name_of(&a, ann).as_deref(), Some("ann"));
        assert!(a.users().cached(ann).is_some(), "the premise: cached");
        db.raw("SELECT pg_notify('larder_changes', 'users U ann@example.org')");
        std::thread::sleep(BOUND);
        assert!(
            a.users().cached(ann).is_none(),
            "a change whose row id did not parse was ignored"
        );
        assert_eq!(a.stats().coherence.flushes, 0, "not a flush of everything");
    });
}

/// MySQL: a transaction holds change-log id k, uncommitted, while a later
/// change commits k + 1 into an empty log. The watcher's check of the log's
/// oldest row (k + 1) used to drop the gap k as pruned; the change was then
/// never read when its transaction committed.
#[test]
fn an_open_change_below_every_committed_row_is_read_when_it_commits() {
    let _turn = server_transactions();
    use diesel::connection::SimpleConnection;
    each_backend(|target| {
        if target.backend != Backend::Mysql {
            return; // SQLite commits in id order; PostgreSQL keeps no log
        }
        let (db, ann, post, _) = seeded(target);
        db.raw("DELETE FROM larder_changes");
        let a = coherent_store(&db);
        std::thread::sleep(BOUND);
        let mut slow = open_transaction(
            &db,
            &format!("UPDATE users SET name = 'Ann' WHERE id = {ann}"),
        );
        db.raw(&format!(
            "UPDATE posts SET title = 'later' WHERE id = {post}"
        ));
        // The watcher compares its gaps with the log's oldest row every 30 s.
        std::thread::sleep(Duration::from_secs(32));
        let pruned = FlushReason::FellBehindPruning;
        assert!(
            a.stats().coherence.flushes_by_reason.get(pruned) >= 1,
            "the premise: the watcher checked the log's oldest row"
        );
        assert_eq!(
            name_of(&a, ann).as_deref(),
            Some("ann"),
            "not committed yet"
        );
        slow.batch_execute("COMMIT").unwrap();
        std::thread::sleep(BOUND * 4);
        assert_eq!(
            name_of(&a, ann).as_deref(),
            Some("Ann"),
            "{:?}",
            a.stats().coherence
        );
    });
}

/// MySQL: one transaction writes more captured rows than the watcher follows
/// one by one (10,000) and stays open while a later change commits. Its ids
/// are given up with a flush; when it commits afterwards, its changes are
/// not read, so the caches are flushed once more when it has ended.
#[test]
fn a_bulk_transaction_whose_ids_were_given_up_is_flushed_for_when_it_commits() {
    let _turn = server_transactions();
    use diesel::connection::SimpleConnection;
    each_backend(|target| {
        if target.backend != Backend::Mysql {
            return; // SQLite commits in id order; PostgreSQL keeps no log
        }
        let (db, ann, post, _) = seeded(target);
        let rows: Vec<String> = (0..10_050)
            .map(|n| format!("('u{n}', 'u{n}@example.org', NOW(6))"))
            .collect();
        db.raw(&format!(
            "INSERT INTO users (name, email, created_at) VALUES {}",
            rows.join(",")
        ));
        let a = coherent_store(&db);
        std::thread::sleep(BOUND);
        let mut bulk =
            open_transaction(&db, "UPDATE users SET name = CONCAT(name, '!') ORDER BY id");
        db.raw(&format!(
            "UPDATE posts SET title = 'later' WHERE id = {post}"
        ));
        std::thread::sleep(BOUND);
        let given_up = || {
            a.stats()
                .coherence
                .flushes_by_reason
                .get(FlushReason::GapGivenUp)
        };
        assert!(given_up() >= 1, "the premise: {:?}", a.stats().coherence);
        assert_eq!(
            name_of(&a, ann).as_deref(),
            Some("ann"),
            "not committed yet"
        );
        bulk.batch_execute("COMMIT").unwrap();
        std::thread::sleep(BOUND * 4);
        assert_eq!(
            name_of(&a, ann).as_deref(),
            Some("ann!"),
            "{:?}",
            a.stats().coherence
        );
    });
}

#[test]
fn dropping_a_store_whose_server_stopped_answering_does_not_hang() {
    // The watcher's connection goes through a proxy that stops forwarding
    // (a server that hangs, a black-holed path): its check waits for an
    // answer that does not come. Dropping the store (a graceful shutdown, a
    // reload) must still return, not wait for the network to come back.
    each_backend(|target| {
        if target.backend == Backend::Sqlite {
            return; // no network
        }
        let bound = Duration::from_millis(200);
        let (db, ann, _, _) = seeded(target);
        let (proxy, a) = through_proxy(&db, bound, ann);
        proxy.freeze();
        // Stuck for sure once the guard flushed for it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while a
            .stats()
            .coherence
            .flushes_by_reason
            .get(FlushReason::StuckCheck)
            == 0
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let returned = proxy.run_frozen(move || drop(a)).is_some();
        assert!(returned, "dropping the store waited for the network");
    });
}

/// A migration can change rows without a trigger firing: it drops and
/// re-creates a table (its triggers go with it) and fills the new one, or
/// rewrites rows with the triggers off. Every process sharing the database
/// then forgets what it cached, instead of serving the old rows until they
/// are evicted.
#[test]
fn a_migration_makes_every_process_forget_what_it_cached() {
    use memo::Memo;

    each_backend(|target| {
        let db = target.fresh();
        let table = format!(
            "memos (id {}, body TEXT NOT NULL)",
            common::serial_key(db.backend)
        );
        db.raw(&format!("CREATE TABLE {table}"));
        db.raw(&larder::capture_sql(db.backend, "memos").unwrap().up);
        db.raw("INSERT INTO memos (body) VALUES ('before')");
        let a = Store::builder(&db.url())
            .max_staleness(BOUND)
            .entity::<Memo>()
            .build()
            .unwrap();
        std::thread::sleep(BOUND); // the insert's change, if heard, is applied
        assert_eq!(a.repo::<Memo>().get(1).unwrap().unwrap().body, "before");

        let dir = tempfile::tempdir().unwrap();
        common::write_migration(
            dir.path(),
            "2030-01-01-000000_rebuild_memos",
            &format!(
                "DROP TABLE memos;\nCREATE TABLE {table};\nINSERT INTO memos (body) VALUES ('after');\n"
            ),
            &format!("DROP TABLE memos;\nCREATE TABLE {table};\n"),
        );
        let mut migrator = larder::Migrator::open_with_dir(&db.url(), dir.path()).unwrap();
        assert_eq!(migrator.run().unwrap().len(), 1);
        std::thread::sleep(BOUND);
        assert_eq!(
            a.repo::<Memo>().get(1).unwrap().unwrap().body,
            "after",
            "a row the migration replaced is still served from the cache"
        );
        let flushes = a.stats().coherence.flushes_by_reason;
        assert_eq!(flushes.get(larder::FlushReason::Migrated), 1, "{flushes:?}");
    });
}

// An entity of the users table whose destructor panics once asked to: an
// application's `Drop` with a bug, run as the watcher's flush lets the row go.
panicky_user_entity!(PanickyUser);
use common::interleave::PANIC_ON_DROP;

/// A row's destructor that panics in a flush the watcher runs must not end
/// the watcher. Dead, it leaves the guard flushing everything every half
/// bound for the rest of the process (the check it died in never returned),
/// or, when it died in a flush decided after a check returned, nothing at
/// all: a row cached afterwards would be served stale for good. Here the
/// watcher flushes because the database has no change log (it was never
/// migrated), as in `without_the_change_log_the_caches_are_flushed_until_it_exists`.
#[test]
fn a_panicking_destructor_in_a_watcher_flush_does_not_end_the_watcher() {
    use diesel::connection::SimpleConnection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let mut other = larder::Connection::establish(&url).unwrap();
    other
        .batch_execute(
            "CREATE TABLE users (id INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL, \
             email TEXT NOT NULL UNIQUE, created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP); \
             INSERT INTO users (id, name, email) VALUES (1, 'ann', 'a@x'), (2, 'bob', 'b@x');",
        )
        .unwrap();
    let store = Store::builder(&url)
        .max_staleness(BOUND)
        .entity::<PanickyUser>()
        .build()
        .unwrap();
    let users = store.repo::<PanickyUser>();
    drop(users.get(1).unwrap()); // held by the map alone
    PANIC_ON_DROP.store(true, std::sync::atomic::Ordering::SeqCst);
    other
        .batch_execute("UPDATE users SET name = 'Ann' WHERE id = 1")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while PANIC_ON_DROP.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the watcher never flushed");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The panic happened in the watcher's flush. A row cached from now on
    // must still be retired within the bound when the database changes.
    let cached = users.get(2).unwrap().unwrap().0.name.clone();
    assert_eq!(cached, "bob");
    other
        .batch_execute("UPDATE users SET name = 'Bob' WHERE id = 2")
        .unwrap();
    std::thread::sleep(BOUND * 3);
    assert_eq!(
        users.get(2).unwrap().unwrap().0.name,
        "Bob",
        "served stale after the watcher's flush panicked ({:?})",
        store.stats().coherence
    );
    // Dead, the watcher leaves the guard flushing at every half bound; alive,
    // a check stalled on a loaded machine may let it flush once or twice.
    let stuck = || {
        let coherence = store.stats().coherence;
        coherence.flushes_by_reason.get(FlushReason::StuckCheck)
    };
    let before = stuck();
    std::thread::sleep(BOUND * 4);
    let more = stuck() - before;
    assert!(
        more <= 2,
        "the watcher died: the guard's clock flushed {more} times in {:?}",
        BOUND * 4
    );
}

// An entity of the users table whose destructor, once asked to, holds the
// watcher's flush open (it runs as the flush lets the row go) until the test
// says go on.
user_entity!(PausingUser, || {});
static PAUSE_ON_DROP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static PAUSED: common::interleave::Latch = common::interleave::Latch::new();
static GO_ON: common::interleave::Latch = common::interleave::Latch::new();

impl Drop for PausingUser {
    fn drop(&mut self) {
        if PAUSE_ON_DROP.swap(false, std::sync::atomic::Ordering::SeqCst) {
            PAUSED.open();
            GO_ON.wait();
        }
    }
}

/// How often [`slow_polling_store`] polls: its first poll, which is also
/// its first look for a recreated or pruned log, comes this long after it
/// starts, time for a test to set the log up even on a loaded machine (at
/// 2 s a stall in the setup would have left the log to the next look, 30 s on).
const SLOW_POLL: Duration = Duration::from_secs(5);

/// A coherent store that polls every [`SLOW_POLL`], its staleness bound far
/// enough that its guard never flushes during a test.
fn slow_polling_store(db: &TestDb) -> Store {
    Store::builder(&db.url())
        .max_staleness(Duration::from_secs(20))
        .poll_interval(SLOW_POLL)
        .build()
        .expect("slow polling store")
}

/// The change log dropped and created again, as `larder migrate redo` of
/// larder's own migrations does it: its ids start over.
fn recreate_change_log(backend: Backend) -> String {
    let (log, keys) = match backend {
        Backend::Sqlite => (
            include_str!("../migrations/sqlite/2026-11-25-000001_change_log/up.sql"),
            include_str!("../migrations/sqlite/2026-11-25-000003_change_keys/up.sql"),
        ),
        _ => (
            include_str!("../migrations/mysql/2026-11-25-000001_change_log/up.sql"),
            include_str!("../migrations/mysql/2026-11-25-000003_change_keys/up.sql"),
        ),
    };
    format!("DROP TABLE larder_changes;\n{log}\n{keys}")
}

/// A watcher that finds the change log recreated flushes and starts over at
/// the new log's end. It flushed first and read the end after: a change
/// committed in between (to a row cached again after the flush) lay below
/// the new position, was never read, and the row stayed stale for good.
#[test]
fn a_change_committed_while_a_recreated_log_is_flushed_for_is_not_missed() {
    each_backend(|target| {
        if target.backend == Backend::Postgres {
            return; // no change log
        }
        let (db, ann, _, _) = seeded(target);
        let bob = common::user(&db.store, "bob").id;
        // What follows happens before the first poll.
        let a = slow_polling_store(&db);
        let users = a.repo::<PausingUser>();
        drop(users.get(bob).unwrap()); // held by the map alone
        PAUSED.reset();
        GO_ON.reset();
        PAUSE_ON_DROP.store(true, std::sync::atomic::Ordering::SeqCst);
        db.raw(&recreate_change_log(db.backend));
        PAUSED.wait();
        // The watcher is flushing for the recreated log: ann is cached
        // again, then changed by another process.
        assert_eq!(users.get(ann).unwrap().unwrap().0.name, "ann");
        db.raw(&format!("UPDATE users SET name = 'Ann' WHERE id = {ann}"));
        GO_ON.open();
        let stats = a.stats().coherence;
        assert!(
            stats.flushes_by_reason.get(FlushReason::LogRecreated) >= 1,
            "{stats:?}"
        );
        std::thread::sleep(SLOW_POLL * 2 + Duration::from_millis(500));
        assert_eq!(
            users.get(ann).unwrap().unwrap().0.name,
            "Ann",
            "a change committed as the recreated log was flushed for was never read ({:?})",
            a.stats().coherence
        );
    });
}

#[derive(diesel::QueryableByName)]
struct Newest {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    newest: Option<i64>,
}

/// The change log's highest id.
fn newest_change(db: &TestDb) -> i64 {
    use diesel::RunQueryDsl;
    let mut conn = larder::Connection::establish(&db.url()).unwrap();
    let query = diesel::sql_query("SELECT MAX(id) AS newest FROM larder_changes");
    let row: Newest = larder::with_connection!(&mut conn, |c| query.get_result(c)).unwrap();
    row.newest.unwrap_or(0)
}

/// A recreated change log is told by its ids having moved back below the
/// watcher's position. One that other processes wrote past that position
/// before the watcher looked (a young log, busy writers, 30 s between looks)
/// went unnoticed: the watcher read on from its old position, and every
/// change below it, in the new log, was never read.
#[test]
fn a_recreated_log_already_past_the_watchers_position_is_noticed() {
    each_backend(|target| {
        if target.backend == Backend::Postgres {
            return; // no change log
        }
        let (db, ann, _, _) = seeded(target);
        // What follows happens before the first poll.
        let a = slow_polling_store(&db);
        assert_eq!(name_of(&a, ann).as_deref(), Some("ann"));
        let position = newest_change(&db);
        // Other processes' changes, past the position, to tables not cached here.
        let elsewhere: Vec<String> = (0..position + 5)
            .map(|n| format!("('elsewhere', {n}, 'U')"))
            .collect();
        db.raw(&format!(
            "{}\nUPDATE users SET name = 'Ann' WHERE id = {ann};\n\
             INSERT INTO larder_changes (table_name, row_id, op) VALUES {};",
            recreate_change_log(db.backend),
            elsewhere.join(", ")
        ));
        assert!(newest_change(&db) > position);
        std::thread::sleep(SLOW_POLL * 2 + Duration::from_millis(500));
        assert_eq!(
            name_of(&a, ann).as_deref(),
            Some("Ann"),
            "a change in a recreated log, below the watcher's old position, was never read ({:?})",
            a.stats().coherence
        );
        let stats = a.stats().coherence;
        assert!(
            stats.flushes_by_reason.get(FlushReason::LogRecreated) >= 1,
            "{stats:?}"
        );
    });
}

/// MySQL: a watcher that finds the log pruned past its position (it fell
/// behind: its connection was down, its process stopped) flushes and moves
/// its position up to the log's oldest row. An id between the two held by a
/// transaction still open was skipped with the pruned ones: not a gap, below
/// the position, its change was never read when the transaction committed,
/// after the flush.
#[test]
fn an_open_change_between_the_position_and_a_log_pruned_past_it_is_read_when_it_commits() {
    let _turn = server_transactions();
    use diesel::connection::SimpleConnection;
    each_backend(|target| {
        if target.backend != Backend::Mysql {
            return; // SQLite commits in id order; PostgreSQL keeps no log
        }
        let (db, ann, _, _) = seeded(target);
        let bob = common::user(&db.store, "bob").id;
        // What follows happens before the first poll.
        let a = slow_polling_store(&db);
        let position = newest_change(&db);
        let mut slow = open_transaction(
            &db,
            &format!("UPDATE users SET name = 'Ann' WHERE id = {ann}"),
        );
        db.raw(&format!("UPDATE users SET name = 'Bob' WHERE id = {bob}"));
        // Pruned by another process up to the newest row, the open one
        // aside (one id at a time: a range would wait for its lock).
        let deletes: Vec<String> = (1..=position)
            .map(|id| format!("DELETE FROM larder_changes WHERE id = {id};"))
            .collect();
        db.raw(&deletes.concat());
        std::thread::sleep(SLOW_POLL * 2 + Duration::from_millis(500));
        let pruned = FlushReason::FellBehindPruning;
        assert!(
            a.stats().coherence.flushes_by_reason.get(pruned) >= 1,
            "the premise: the watcher found the log pruned past its position"
        );
        assert_eq!(
            name_of(&a, ann).as_deref(),
            Some("ann"),
            "not committed yet"
        );
        slow.batch_execute("COMMIT").unwrap();
        std::thread::sleep(SLOW_POLL * 2 + Duration::from_millis(500));
        assert_eq!(
            name_of(&a, ann).as_deref(),
            Some("Ann"),
            "a change held open across the log's pruning was never read ({:?})",
            a.stats().coherence
        );
    });
}

/// An operator empties the change log (`DELETE FROM larder_changes` on
/// SQLite, `TRUNCATE larder_changes` on MySQL): its ids start over from 1.
/// The watcher looked for a recreated log only every 30 s; a poll before
/// that which found the new ids already past its position read them and took
/// the last one as its mark, so the next look found the mark in place and
/// the changes below the old position, in the emptied log, were never read:
/// the row they changed was served stale for good (found by review GG).
#[test]
fn an_emptied_log_written_past_the_watchers_position_between_looks_is_noticed() {
    each_backend(|target| {
        if target.backend == Backend::Postgres {
            return; // no change log
        }
        let (db, ann, _, _) = seeded(target);
        let a = coherent_store(&db);
        assert_eq!(name_of(&a, ann).as_deref(), Some("ann"));
        // Past the first poll, the first look for a recreated log: the next
        // one is 30 s away, and every poll in between reads past the mark.
        std::thread::sleep(BOUND * 2);
        let position = newest_change(&db);
        let empty = if db.is(Backend::Sqlite) {
            "DELETE FROM larder_changes"
        } else {
            "TRUNCATE larder_changes"
        };
        // Other processes' changes, past the position, to tables not cached here.
        let elsewhere: Vec<String> = (0..position + 5)
            .map(|n| format!("('elsewhere', {n}, 'U')"))
            .collect();
        db.raw(&format!(
            "{empty};\nUPDATE users SET name = 'Ann' WHERE id = {ann};\n\
             INSERT INTO larder_changes (table_name, row_id, op) VALUES {};",
            elsewhere.join(", ")
        ));
        assert!(newest_change(&db) > position);
        // Past the watcher's next look.
        std::thread::sleep(Duration::from_secs(33));
        assert_eq!(
            name_of(&a, ann).as_deref(),
            Some("Ann"),
            "a change in an emptied log, below the watcher's old position, was never read ({:?})",
            a.stats().coherence
        );
        let stats = a.stats().coherence;
        assert!(
            stats.flushes_by_reason.get(FlushReason::LogRecreated) >= 1,
            "{stats:?}"
        );
    });
}

/// An emptied change log whose new ids have not reached the watcher's
/// position yet was noticed only at the next look, up to 30 s later: until
/// then the changes in it were not read and the staleness bound did not
/// hold. The watcher's first read of each poll starts at its mark, so a log
/// holding nothing from there on says at once that it was emptied (pruning
/// always keeps the newest row).
#[test]
fn an_emptied_log_is_noticed_at_the_next_poll() {
    each_backend(|target| {
        if target.backend == Backend::Postgres {
            return; // no change log
        }
        let (db, ann, _, _) = seeded(target);
        let a = coherent_store(&db);
        assert_eq!(name_of(&a, ann).as_deref(), Some("ann"));
        std::thread::sleep(BOUND * 2);
        let position = newest_change(&db);
        let empty = if db.is(Backend::Sqlite) {
            "DELETE FROM larder_changes"
        } else {
            "TRUNCATE larder_changes"
        };
        db.raw(&format!(
            "{empty};\nUPDATE users SET name = 'Ann' WHERE id = {ann};"
        ));
        assert!(newest_change(&db) < position, "the premise: ids start over");
        std::thread::sleep(BOUND * 6);
        assert_eq!(
            name_of(&a, ann).as_deref(),
            Some("Ann"),
            "a change in an emptied log went unread ({:?})",
            a.stats().coherence
        );
        let stats = a.stats().coherence;
        assert!(
            stats.flushes_by_reason.get(FlushReason::LogRecreated) >= 1,
            "{stats:?}"
        );
    });
}
