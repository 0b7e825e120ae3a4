//! Helpers shared by the integration tests. `each_backend` runs a test body
//! on SQLite and on every server backend whose URL is set
//! (`LARDER_TEST_POSTGRES_URL`, `LARDER_TEST_MYSQL_URL`), each run in a
//! database of its own so tests run in parallel without seeing each other.
#![allow(dead_code)]

pub mod interleave;
pub mod lost;
pub mod proxy;
pub mod threads;

use larder_blog::prelude::*;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use larder::{Backend, Store, StoreBuilder};
use larder_blog::{NewComment, NewPost, NewUser, Post, User};
use tempfile::TempDir;

/// A database under test; the store is dropped before its database is.
pub struct TestDb {
    pub store: Store,
    pub backend: Backend,
    url: String,
    server: Option<ServerDb>,
    /// Kept for SQLite: the database file lives in it.
    pub dir: TempDir,
}

impl TestDb {
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Runs SQL on a connection of its own, around larder.
    pub fn raw(&self, sql: &str) {
        use diesel::connection::SimpleConnection;
        let mut conn = larder::Connection::establish(&self.url).expect("raw connection");
        conn.batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// `sqlite`, `postgres` or `mysql`, for backend-specific SQL in tests.
    pub fn is(&self, backend: Backend) -> bool {
        self.backend == backend
    }
}

/// A database created on a server for one test, dropped after it.
struct ServerDb {
    admin_url: String,
    name: String,
    backend: Backend,
}

impl Drop for ServerDb {
    fn drop(&mut self) {
        let sql = match self.backend {
            Backend::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            _ => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        if let Ok(mut conn) = larder::Connection::establish(&self.admin_url) {
            use diesel::connection::SimpleConnection;
            let _ = conn.batch_execute(&sql);
        }
    }
}

/// One backend a test runs on.
pub struct Target {
    pub backend: Backend,
    admin_url: Option<String>,
}

impl Target {
    /// The server URL the suite was given for this backend (its maintenance
    /// database); `None` for SQLite.
    pub fn admin_url(&self) -> Option<&str> {
        self.admin_url.as_deref()
    }

    /// A new database and a store on it with cross-process coherence off:
    /// most suites test what one process does, and the watcher would bring
    /// this process's own commits back as invalidations at moments the test
    /// cannot control (harmless, but it turns exact cache assertions into
    /// races). `fresh_with(|b| b.coherence(true))` turns it back on.
    pub fn fresh(&self) -> TestDb {
        self.fresh_with(|builder| builder)
    }

    /// As [`fresh`](Target::fresh), the builder configured by `configure`.
    pub fn fresh_with(&self, configure: impl FnOnce(StoreBuilder) -> StoreBuilder) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, server) = match &self.admin_url {
            None => (
                format!("sqlite://{}", dir.path().join("test.db").display()),
                None,
            ),
            Some(admin) => {
                let server = create_database(admin, self.backend);
                (with_database(admin, &server.name), Some(server))
            }
        };
        let store = configure(larder_blog::builder(&url).coherence(false))
            .build()
            .expect("open store");
        larder_blog::migrate(&store).expect("migrate");
        TestDb {
            store,
            backend: self.backend,
            url,
            server,
            dir,
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn create_database(admin_url: &str, backend: Backend) -> ServerDb {
    use diesel::connection::SimpleConnection;
    let name = format!(
        "larder_t_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let mut conn = larder::Connection::establish(admin_url)
        .unwrap_or_else(|e| panic!("cannot reach the {} test server: {e}", backend.name()));
    conn.batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    ServerDb {
        admin_url: admin_url.to_owned(),
        name,
        backend,
    }
}

/// `admin_url` with its database name replaced by `name`.
fn with_database(admin_url: &str, name: &str) -> String {
    let (scheme, rest) = admin_url.split_once("://").expect("a server URL");
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let query = rest.find('?').map(|q| &rest[q..]).unwrap_or("");
    format!("{scheme}://{}/{name}{query}", &rest[..authority_end])
}

/// Says once per test binary that a backend is skipped. Written straight to
/// stderr, past the test harness's capture, so a skip is never silent.
fn announce_skip(backend: &str, why: &str) {
    static POSTGRES: Once = Once::new();
    static MYSQL: Once = Once::new();
    let once = if backend == "postgres" {
        &POSTGRES
    } else {
        &MYSQL
    };
    once.call_once(|| {
        let _ = writeln!(std::io::stderr(), "note: {backend} backend skipped: {why}");
    });
}

fn server_target(backend: Backend, env: &str) -> Option<Target> {
    let required = std::env::var("LARDER_REQUIRE_BACKENDS").unwrap_or_default();
    let required = required.split(',').any(|b| b.trim() == backend.name());
    let url = std::env::var(env).ok().filter(|u| !u.is_empty());
    let why = match (&url, backend.is_built()) {
        (Some(_), true) => {
            return url.map(|admin| Target {
                backend,
                admin_url: Some(admin),
            })
        }
        (None, _) => format!("{env} is not set"),
        (Some(_), false) => format!("larder was built without the `{}` feature", backend.name()),
    };
    assert!(
        !required,
        "LARDER_REQUIRE_BACKENDS names {} but {why}",
        backend.name()
    );
    announce_skip(backend.name(), &why);
    None
}

/// The backends tests run on: SQLite always, servers when configured.
pub fn targets() -> Vec<Target> {
    let mut targets = vec![Target {
        backend: Backend::Sqlite,
        admin_url: None,
    }];
    targets.extend(server_target(Backend::Postgres, "LARDER_TEST_POSTGRES_URL"));
    targets.extend(server_target(Backend::Mysql, "LARDER_TEST_MYSQL_URL"));
    targets
}

/// The URL of `db` (a database on the PostgreSQL test server) through the
/// transaction-mode PgBouncer of `scripts/pgbouncer.sh`; `None` (announced)
/// when `LARDER_TEST_PGBOUNCER_URL` is unset, and a failure instead when
/// `LARDER_REQUIRE_BACKENDS` names `pgbouncer` (CI).
pub fn through_pooler(db: &TestDb) -> Option<String> {
    let pooler = std::env::var("LARDER_TEST_PGBOUNCER_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let Some(pooler) = pooler else {
        let required = std::env::var("LARDER_REQUIRE_BACKENDS").unwrap_or_default();
        let why = "LARDER_TEST_PGBOUNCER_URL is not set (scripts/pgbouncer.sh start prints it)";
        assert!(
            !required.split(',').any(|b| b.trim() == "pgbouncer"),
            "LARDER_REQUIRE_BACKENDS names pgbouncer but {why}"
        );
        static POOLER: Once = Once::new();
        POOLER.call_once(|| {
            let _ = writeln!(std::io::stderr(), "note: pooler tests skipped: {why}");
        });
        return None;
    };
    let name = db.server.as_ref().map(|server| server.name.clone())?;
    Some(with_database(&pooler, &name))
}

/// Names the backend in the output of a test that fails on it.
struct Announce(Backend);

impl Drop for Announce {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "(the failure above happened on the {} backend)",
                self.0.name()
            );
        }
    }
}

/// Runs `test` once per backend under test.
pub fn each_backend(test: impl Fn(&Target)) {
    for target in targets() {
        let _announce = Announce(target.backend);
        test(&target);
    }
}

/// A migrated SQLite store on a fresh file, for tests of SQLite-only behaviour.
pub fn fresh() -> TestDb {
    sqlite().fresh()
}

pub fn fresh_with(configure: impl FnOnce(StoreBuilder) -> StoreBuilder) -> TestDb {
    sqlite().fresh_with(configure)
}

pub fn sqlite() -> Target {
    Target {
        backend: Backend::Sqlite,
        admin_url: None,
    }
}

pub fn user(store: &Store, name: &str) -> Arc<User> {
    store
        .users()
        .create(NewUser {
            name: name.into(),
            email: format!("{name}@example.org"),
        })
        .expect("create user")
}

pub fn post(store: &Store, author: &User, title: &str) -> Arc<Post> {
    store
        .posts()
        .create(NewPost {
            author_id: author.id,
            title: title.into(),
            body: "body".into(),
        })
        .expect("create post")
}

pub fn comment(store: &Store, post: &Post, author: &User, body: &str) -> Arc<larder_blog::Comment> {
    store
        .comments()
        .create(NewComment {
            post_id: post.id,
            author_id: author.id,
            body: body.into(),
        })
        .expect("create comment")
}

/// A generated BIGINT primary key, in `backend`'s SQL, for the tables tests
/// create of their own.
pub fn serial_key(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL",
        Backend::Postgres => "BIGSERIAL PRIMARY KEY",
        _ => "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
    }
}

/// Writes the migration `name` (`<version>_<what>`) into the folder `dir` and
/// returns its folder: the library's and the CLI's migration tests make many.
pub fn write_migration(dir: &std::path::Path, name: &str, up: &str, down: &str) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("up.sql"), up).unwrap();
    std::fs::write(folder.join("down.sql"), down).unwrap();
    folder
}

/// A change of a user's name only.
pub fn rename(name: &str) -> larder_blog::UserChanges {
    larder_blog::UserChanges {
        name: Some(name.into()),
        ..Default::default()
    }
}

/// The user row as the database has it now, read inside a transaction so the
/// shared cache is neither consulted nor filled.
pub fn user_in_db(store: &Store, id: i64) -> Option<Arc<User>> {
    let tx = store.begin().expect("begin");
    tx.users().get(id).expect("read user")
}

/// The change log's rows as `(table, row id, op)`, oldest first (SQLite and
/// MySQL databases, whose capture triggers write it), without the rows that
/// announce migrations (table `*`).
pub fn change_log(url: &str) -> Vec<(String, i64, String)> {
    use diesel::prelude::*;
    diesel::table! { larder_changes (id) { id -> BigInt, table_name -> Text, row_id -> BigInt, op -> Text } }
    let mut conn = larder::Connection::establish(url).expect("change log connection");
    let rows = larder_changes::table
        .select((
            larder_changes::table_name,
            larder_changes::row_id,
            larder_changes::op,
        ))
        .filter(larder_changes::table_name.ne("*"))
        .order(larder_changes::id);
    larder::with_connection!(&mut conn, |c| rows.load(c)).expect("read the change log")
}

/// Every pooled connection is back and idle, within a few seconds: a
/// store's own background work (a store with coherence off prunes the
/// change log on the pool's threads, through a pooled connection) may hold
/// one for a moment, while a connection that was never returned stays out.
pub fn assert_pool_idle(store: &Store) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut pool = store.stats().pool;
    while pool.idle != pool.connections && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        pool = store.stats().pool;
    }
    assert_eq!(
        pool.idle, pool.connections,
        "a connection was not returned: {pool:?}"
    );
}

/// A database on the private primary of `scripts/pg-replica.sh`, migrated
/// with the blog's tables, with its URL on the primary and on each replica.
pub struct Replicated {
    pub primary: String,
    /// The replica that applies WAL a known delay late (200 ms).
    pub lagging: String,
    /// The replica with no apply delay.
    pub fast: String,
    _db: ServerDb,
}

/// A fresh [`Replicated`] database, once both replicas have it; `None`
/// (announced) when `LARDER_TEST_PG_PRIMARY_URL` is unset, and a failure
/// instead when `LARDER_REQUIRE_BACKENDS` names `pg-replicas` (CI).
pub fn replicated() -> Option<Replicated> {
    let vars = [
        "LARDER_TEST_PG_PRIMARY_URL",
        "LARDER_TEST_PG_REPLICA_URL",
        "LARDER_TEST_PG_FAST_REPLICA_URL",
    ];
    let urls: Vec<String> = vars
        .iter()
        .filter_map(|var| std::env::var(var).ok().filter(|u| !u.is_empty()))
        .collect();
    let required = std::env::var("LARDER_REQUIRE_BACKENDS").unwrap_or_default();
    if urls.len() < vars.len() || !Backend::Postgres.is_built() {
        let why = format!(
            "{} are not all set (scripts/pg-replica.sh start prints them)",
            vars.join(", ")
        );
        assert!(
            !required.split(',').any(|b| b.trim() == "pg-replicas"),
            "LARDER_REQUIRE_BACKENDS names pg-replicas but {why}"
        );
        static REPLICAS: Once = Once::new();
        REPLICAS.call_once(|| {
            let _ = writeln!(std::io::stderr(), "note: replica tests skipped: {why}");
        });
        return None;
    }
    let db = create_database(&urls[0], Backend::Postgres);
    let primary = with_database(&urls[0], &db.name);
    let lagging = with_database(&urls[1], &db.name);
    let fast = with_database(&urls[2], &db.name);
    let store = larder_blog::builder(&primary)
        .coherence(false)
        .build()
        .expect("open the primary");
    larder_blog::migrate(&store).expect("migrate");
    drop(store);
    for replica in [&lagging, &fast] {
        wait_for_table(replica, "users");
    }
    Some(Replicated {
        primary,
        lagging,
        fast,
        _db: db,
    })
}

/// Waits until a replica has replayed the creation of `table` (a liveness
/// deadline, not a measurement).
fn wait_for_table(url: &str, table: &str) {
    use diesel::connection::SimpleConnection;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ready = larder::Connection::establish(url)
            .ok()
            .is_some_and(|mut conn| {
                conn.batch_execute(&format!("SELECT 1 FROM {table} LIMIT 1"))
                    .is_ok()
            });
        if ready {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica {url} never got {table}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The SQL text of every statement `run` sends on a connection of its own to
/// `db`'s database (diesel's instrumentation), with what `run` returned.
pub fn statements_sent<T>(
    db: &TestDb,
    run: impl FnOnce(&mut larder::Connection) -> T,
) -> (T, Vec<String>) {
    instrumented(db, run, |event| match event {
        diesel::connection::InstrumentationEvent::StartQuery { query, .. } => {
            Some(query.to_string())
        }
        _ => None,
    })
}

/// The SQL text of every statement `run` added to its connection's prepared
/// statement cache: a statement run again without appearing twice was reused.
#[allow(dead_code)] // not every test binary checks preparation
pub fn statements_prepared<T>(
    db: &TestDb,
    run: impl FnOnce(&mut larder::Connection) -> T,
) -> (T, Vec<String>) {
    instrumented(db, run, |event| match event {
        diesel::connection::InstrumentationEvent::CacheQuery { sql, .. } => Some(sql.to_string()),
        _ => None,
    })
}

/// Asserts that `prepared` (from [`statements_prepared`]) holds one `INSERT`
/// and one `UPDATE`: writes run several times on one connection were prepared
/// once (`larder::KeepPrepared`). Not on MySQL: diesel's MySQL connection
/// checks a statement through a reference, whose `QueryFragment` does not
/// forward `KeepPrepared`'s answer, so writes there are prepared each time.
#[allow(dead_code)] // not every test binary checks preparation
pub fn assert_each_write_prepared_once(db: &TestDb, prepared: &[String]) {
    if db.is(Backend::Mysql) {
        return;
    }
    for verb in ["INSERT", "UPDATE"] {
        let count = prepared
            .iter()
            .filter(|sql| sql.trim_start().to_uppercase().starts_with(verb))
            .count();
        assert_eq!(count, 1, "each {verb} prepared once: {prepared:?}");
    }
}

/// Runs `run` on a connection of its own to `db`'s database, recording what
/// `pick` takes from each of diesel's instrumentation events.
fn instrumented<T>(
    db: &TestDb,
    run: impl FnOnce(&mut larder::Connection) -> T,
    pick: fn(&diesel::connection::InstrumentationEvent<'_>) -> Option<String>,
) -> (T, Vec<String>) {
    use diesel::connection::{Connection as _, InstrumentationEvent};
    let mut conn = larder::Connection::establish(&db.url()).expect("connect");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    larder::with_connection!(&mut conn, |c| {
        let record = Arc::clone(&record);
        c.set_instrumentation(move |event: InstrumentationEvent<'_>| {
            if let Some(text) = pick(&event) {
                record.lock().expect("record").push(text);
            }
        })
    });
    let result = run(&mut conn);
    let seen = seen.lock().expect("seen").clone();
    (result, seen)
}

/// Runs `work` on another thread and waits for it: a writer other than the
/// current thread, whose open transaction would refuse its store writes.
pub fn on_another_thread<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(work).join().expect("the other thread panicked"))
}
