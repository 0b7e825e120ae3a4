//! The `larder` binary: migrations (larder's own and an application's folder,
//! here the blog's), database setup/reset/drop, exit codes and one-line errors.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::write_migration;
use diesel::connection::SimpleConnection;

fn larder(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("MIGRATION_DIRECTORY")
        .env_remove("RUST_LOG")
        .output()
        .expect("run larder")
}

/// Runs `larder` in `dir` with `leading` (the flags a test gives every
/// command) before `args`, so tests need no closure of their own for it.
fn larder_with(dir: &Path, leading: &[&str], args: &[&str]) -> Output {
    larder(dir, &[leading, args].concat())
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The blog's migrations for `backend`, as an application keeps its own.
fn blog_migrations(backend: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/blog/migrations")
        .join(backend)
}

/// Copies the blog's SQLite migrations to `root/migrations/sqlite`, where
/// `larder` looks when no folder is named (as diesel_cli looks in `./migrations`).
fn with_blog_migrations(root: &Path) {
    with_blog_migrations_for(root, "sqlite");
}

fn with_blog_migrations_for(root: &Path, backend: &str) {
    let target = root.join("migrations").join(backend);
    for entry in fs::read_dir(blog_migrations(backend)).unwrap() {
        let from = entry.unwrap().path();
        let to = target.join(from.file_name().unwrap());
        fs::create_dir_all(&to).unwrap();
        for file in ["up.sql", "down.sql"] {
            fs::copy(from.join(file), to.join(file)).unwrap();
        }
    }
}

fn assert_ok(output: &Output) {
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        stdout(output),
        stderr(output)
    );
}

fn assert_one_line_failure(output: &Output, mentions: &str) {
    assert!(!output.status.success(), "should fail: {}", stdout(output));
    let err = stderr(output);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(mentions), "{err}");
}

#[test]
fn migrate_run_status_revert_redo() {
    let dir = tempfile::tempdir().unwrap();
    with_blog_migrations(dir.path());
    let url = format!("sqlite://{}", dir.path().join("cli.db").display());
    let url = url.as_str();

    let run = larder(dir.path(), &["migrate", "run", "--database-url", url]);
    assert_ok(&run);
    assert!(stdout(&run).contains("applied"), "{}", stdout(&run));

    let again = larder(dir.path(), &["migrate", "run", "--database-url", url]);
    assert_ok(&again);
    assert!(stdout(&again).contains("no pending"), "{}", stdout(&again));

    let status = larder(dir.path(), &["--database-url", url, "migrate", "status"]);
    assert_ok(&status);
    for applied in [
        "applied  2026-11-24-000001_blog",
        "applied  2026-11-25-000001_change_log",
        "applied  2026-11-25-000002_blog_capture",
    ] {
        assert!(stdout(&status).contains(applied), "{}", stdout(&status));
    }

    assert_ok(&larder(
        dir.path(),
        &["migrate", "redo", "--database-url", url],
    ));

    // The blog's four (schema, capture, capture with key values, front page);
    // larder's own three (change log, its key values column, lock tokens) stay.
    for _ in 0..4 {
        let revert = larder(dir.path(), &["migrate", "revert", "--database-url", url]);
        assert_ok(&revert);
    }
    let status = larder(dir.path(), &["migrate", "status", "--database-url", url]);
    assert!(stdout(&status).contains("pending"), "{}", stdout(&status));
    assert!(
        stdout(&status).contains("applied  2026-11-25-000001_change_log"),
        "{}",
        stdout(&status)
    );

    let nothing = larder(dir.path(), &["migrate", "revert", "--database-url", url]);
    assert_one_line_failure(&nothing, "no application migration");

    assert_ok(&larder(
        dir.path(),
        &["migrate", "run", "--database-url", url],
    ));
    let all = larder(
        dir.path(),
        &["migrate", "revert", "--all", "--database-url", url],
    );
    assert_ok(&all);
    assert!(stdout(&all).contains("reverted"), "{}", stdout(&all));
}

#[test]
fn database_url_comes_from_the_environment_or_a_dotenv_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "DATABASE_URL=sqlite://from-dotenv.db\n",
    )
    .unwrap();
    assert_ok(&larder(dir.path(), &["migrate", "run"]));
    assert!(dir.path().join("from-dotenv.db").exists());

    let output = Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(["migrate", "run"])
        .current_dir(dir.path())
        .env("DATABASE_URL", "sqlite://from-env.db")
        .output()
        .unwrap();
    assert_ok(&output);
    assert!(dir.path().join("from-env.db").exists());
}

#[test]
fn a_malformed_dotenv_file_fails_instead_of_migrating_the_default_database() {
    // dotenvy stops at a line it cannot parse and sets nothing: the
    // DATABASE_URL below it was ignored, and `migrate run` migrated
    // sqlite://larder.db instead, reporting success.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "!!not a line\nDATABASE_URL=postgres://app:s3cret@db.invalid/app\n",
    )
    .unwrap();
    let output = larder(dir.path(), &["migrate", "run"]);
    assert_one_line_failure(&output, ".env");
    assert!(!dir.path().join("larder.db").exists());
    // A malformed line may hold a password: its text is not shown.
    std::fs::write(
        dir.path().join(".env"),
        "DATABASE_URL=\"postgres://app:s3cret@db.invalid/app\n",
    )
    .unwrap();
    let output = larder(dir.path(), &["migrate", "run"]);
    assert_one_line_failure(&output, ".env");
    assert!(!stderr(&output).contains("s3cret"), "{}", stderr(&output));
    assert!(!dir.path().join("larder.db").exists());
}

#[test]
fn the_default_database_is_a_sqlite_file_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&larder(dir.path(), &["migrate", "run"]));
    assert!(dir.path().join("larder.db").exists());
    // Without an application's migrations, larder's own change log only.
    assert!(has_table(
        &sqlite_url(dir.path(), "larder.db"),
        "larder_changes"
    ));
    assert!(!has_table(&sqlite_url(dir.path(), "larder.db"), "users"));
}

#[test]
fn bad_urls_fail_with_one_line_and_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let scheme = larder(
        dir.path(),
        &["migrate", "run", "--database-url", "ftp://u:pw-s3cret@h/db"],
    );
    assert_one_line_failure(&scheme, "unknown scheme");
    assert!(!stderr(&scheme).contains("pw-s3cret"));

    let missing = larder(
        dir.path(),
        &["migrate", "status", "--database-url", "/no/such/dir/x.db"],
    );
    assert_one_line_failure(&missing, "does not exist");
}

#[test]
fn unknown_commands_fail_with_usage() {
    let dir = tempfile::tempdir().unwrap();
    let output = larder(dir.path(), &["migrate", "sideways"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("Usage"), "{}", stderr(&output));
}

/// An application's own migrations folder holding two migrations, `tags` then `notes`.
fn app_migrations(root: &Path) -> PathBuf {
    let dir = root.join("app-migrations");
    for (name, table) in [
        ("2027-01-01-000001_create_tags", "tags"),
        ("2027-01-02-000001_create_notes", "notes"),
    ] {
        write_migration(
            &dir,
            name,
            &format!("CREATE TABLE {table} (id INTEGER PRIMARY KEY, label TEXT NOT NULL);"),
            &format!("DROP TABLE {table};"),
        );
    }
    dir
}

/// The URL of a database named `name` plus this process's id on the server
/// `env` points at, when it is set and larder was built for `backend`.
fn server_database_url(env: &str, backend: larder::Backend, name: &str) -> Option<String> {
    let admin = std::env::var(env).ok().filter(|u| !u.is_empty())?;
    if !backend.is_built() {
        return None;
    }
    let (scheme, rest) = admin.split_once("://")?;
    let host = &rest[..rest.find('/').unwrap_or(rest.len())];
    Some(format!("{scheme}://{host}/{name}_{}", std::process::id()))
}

fn sqlite_url(dir: &Path, file: &str) -> String {
    format!("sqlite://{}", dir.join(file).display())
}

/// Whether `table` exists in the SQLite file at `url`.
fn has_table(url: &str, table: &str) -> bool {
    let path = url.strip_prefix("sqlite://").unwrap();
    let mut conn = larder::Connection::establish(path).unwrap();
    conn.batch_execute(&format!("SELECT * FROM {table}"))
        .is_ok()
}

/// The folders directly inside `dir`.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    found.sort();
    found
}

#[test]
fn migrate_pending_lists_what_run_would_apply() {
    let dir = tempfile::tempdir().unwrap();
    with_blog_migrations(dir.path());
    let url = sqlite_url(dir.path(), "pending.db");

    let before = larder(dir.path(), &["migrate", "pending", "--database-url", &url]);
    assert_ok(&before);
    assert!(
        stdout(&before).contains("2026-11-24-000001_blog"),
        "{}",
        stdout(&before)
    );

    assert_ok(&larder(
        dir.path(),
        &["migrate", "run", "--database-url", &url],
    ));
    let after = larder(dir.path(), &["migrate", "pending", "--database-url", &url]);
    assert_ok(&after);
    assert_eq!(stdout(&after).trim(), "no pending migrations");
}

#[test]
fn an_apps_own_migrations_dir_runs_lists_and_reverts_n() {
    let dir = tempfile::tempdir().unwrap();
    let migrations = app_migrations(dir.path());
    let migrations = migrations.to_str().unwrap();
    let url = sqlite_url(dir.path(), "app.db");
    let cli = |args: &[&str]| {
        let mut all = vec![
            "--database-url",
            url.as_str(),
            "--migrations-dir",
            migrations,
        ];
        all.extend_from_slice(args);
        larder(dir.path(), &all)
    };

    let pending = cli(&["migrate", "pending"]);
    assert_ok(&pending);
    let listed = stdout(&pending);
    assert!(
        listed.contains("2027-01-01-000001_create_tags")
            && listed.contains("2027-01-02-000001_create_notes")
            && !listed.contains("blog"),
        "{listed}"
    );

    let run = cli(&["migrate", "run"]);
    assert_ok(&run);
    assert!(
        stdout(&run).contains("applied 20270102000001"),
        "{}",
        stdout(&run)
    );
    assert!(has_table(&url, "tags") && has_table(&url, "notes"));
    assert!(!has_table(&url, "users"), "the blog migrations ran too");
    assert_eq!(
        stdout(&cli(&["migrate", "pending"])).trim(),
        "no pending migrations"
    );

    let status = stdout(&cli(&["migrate", "status"]));
    assert!(
        status.contains("applied  2027-01-01-000001_create_tags")
            && status.contains("applied  2027-01-02-000001_create_notes"),
        "{status}"
    );

    let redo = cli(&["migrate", "redo", "-n", "2"]);
    assert_ok(&redo);
    assert_eq!(
        stdout(&redo).matches("redone").count(),
        2,
        "{}",
        stdout(&redo)
    );

    let revert = cli(&["migrate", "revert", "-n", "2"]);
    assert_ok(&revert);
    let reverted = stdout(&revert);
    assert!(
        reverted.contains("reverted 20270102000001")
            && reverted.contains("reverted 20270101000001"),
        "{reverted}"
    );
    assert!(!has_table(&url, "tags") && !has_table(&url, "notes"));
    let status = stdout(&cli(&["migrate", "status"]));
    assert_eq!(status.matches("pending").count(), 2, "{status}");
    assert!(
        status.contains("applied  2026-11-25-000001_change_log"),
        "larder's own stays: {status}"
    );

    // larder's own three (lock tokens, the change log's key values, the change
    // log) are no application's to revert; --all takes them too.
    let nothing = cli(&["migrate", "revert", "-n", "3"]);
    assert_one_line_failure(&nothing, "no application migration");
    let own = cli(&["migrate", "revert", "--all"]);
    assert_ok(&own);
    for version in ["20261125100000", "20261125000003", "20261125000001"] {
        assert!(
            stdout(&own).contains(&format!("reverted {version}")),
            "{}",
            stdout(&own)
        );
    }
}

#[test]
fn the_migrations_dir_can_come_from_migration_directory() {
    let dir = tempfile::tempdir().unwrap();
    let migrations = app_migrations(dir.path());
    let url = sqlite_url(dir.path(), "env.db");
    let output = Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(["migrate", "run", "--database-url", &url])
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env("MIGRATION_DIRECTORY", &migrations)
        .output()
        .unwrap();
    assert_ok(&output);
    assert!(has_table(&url, "tags") && !has_table(&url, "users"));
}

#[test]
fn a_missing_or_malformed_migrations_dir_fails_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path(), "never.db");
    for action in ["run", "status", "pending", "revert"] {
        let output = larder(
            dir.path(),
            &[
                "migrate",
                action,
                "--database-url",
                &url,
                "--migrations-dir",
                "no-such-dir",
            ],
        );
        assert_one_line_failure(&output, "migrations directory no-such-dir does not exist");
    }
    assert!(
        !dir.path().join("never.db").exists(),
        "a database was created"
    );

    fs::create_dir_all(dir.path().join("bad/not_a_migration")).unwrap();
    let malformed = larder(
        dir.path(),
        &[
            "migrate",
            "run",
            "--database-url",
            &url,
            "--migrations-dir",
            "bad",
        ],
    );
    assert_one_line_failure(&malformed, "not_a_migration is not a migration");
}

#[test]
fn generate_creates_up_and_down_under_the_migrations_dir() {
    let dir = tempfile::tempdir().unwrap();
    let output = larder(
        dir.path(),
        &[
            "--migrations-dir",
            "mine",
            "migrate",
            "generate",
            "create_tags",
        ],
    );
    assert_ok(&output);
    let created = subdirs(&dir.path().join("mine"));
    assert_eq!(created.len(), 1, "{created:?}");
    let name = created[0].file_name().unwrap().to_str().unwrap().to_owned();
    // <YYYY-MM-DD-HHMMSS>_<name>
    assert_eq!(name.len(), "2027-01-01-000000_create_tags".len(), "{name}");
    assert!(
        name.ends_with("_create_tags") && name.as_bytes()[4] == b'-',
        "{name}"
    );
    assert!(created[0].join("up.sql").is_file() && created[0].join("down.sql").is_file());
    assert!(stdout(&output).contains("up.sql"), "{}", stdout(&output));

    // The generated (comment-only) migration runs and reverts.
    let url = sqlite_url(dir.path(), "gen.db");
    let run = larder(
        dir.path(),
        &[
            "--migrations-dir",
            "mine",
            "--database-url",
            &url,
            "migrate",
            "run",
        ],
    );
    assert_ok(&run);
    assert_ok(&larder(
        dir.path(),
        &[
            "--migrations-dir",
            "mine",
            "--database-url",
            &url,
            "migrate",
            "revert",
        ],
    ));
}

#[test]
fn generate_defaults_to_migrations_sqlite_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&larder(dir.path(), &["migrate", "generate", "add_index"]));
    let created = subdirs(&dir.path().join("migrations/sqlite"));
    assert_eq!(created.len(), 1, "{created:?}");
    assert!(created[0].to_str().unwrap().ends_with("_add_index"));
    assert!(created[0].join("up.sql").is_file() && created[0].join("down.sql").is_file());
}

/// An application whose migrations live in `./migrations` itself (diesel's
/// layout, which `migrate run` reads when there is no `migrations/<backend>`):
/// `generate` wrote into a new `migrations/sqlite`, which every later command
/// then read instead, so the application's earlier migrations disappeared
/// from `status`, `run` and `revert`.
#[test]
fn generate_writes_where_migrate_run_reads_a_flat_migrations_folder() {
    let dir = tempfile::tempdir().unwrap();
    write_migration(
        &dir.path().join("migrations"),
        "2026-01-01-000000_first",
        "CREATE TABLE first_t (id INTEGER PRIMARY KEY);",
        "DROP TABLE first_t;",
    );
    let url = sqlite_url(dir.path(), "flat.db");
    let with = |args: &[&str]| larder_with(dir.path(), &["--database-url", &url], args);
    assert_ok(&with(&["migrate", "generate", "second"]));
    assert!(
        !dir.path().join("migrations/sqlite").exists(),
        "generate made a folder that hides ./migrations"
    );
    let status = stdout(&with(&["migrate", "status"]));
    assert!(
        status.contains("pending  2026-01-01-000000_first") && status.contains("_second"),
        "{status}"
    );
}

#[test]
fn generate_rejects_a_bad_name_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (name, mentions) in [
        ("bad-name", "invalid migration name"),
        ("../escape", "invalid migration name"),
        ("two words", "invalid migration name"),
        ("", "the migration name is empty"),
    ] {
        let output = larder(
            dir.path(),
            &["--migrations-dir", "mine", "migrate", "generate", name],
        );
        assert_one_line_failure(&output, mentions);
    }
    assert!(!dir.path().join("mine").exists(), "something was created");
}

#[test]
fn database_setup_reset_and_drop() {
    use larder_blog::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    with_blog_migrations(dir.path());
    let file = dir.path().join("setup.db");
    let url = sqlite_url(dir.path(), "setup.db");
    let url = url.as_str();

    let setup = larder(dir.path(), &["database", "setup", "--database-url", url]);
    assert_ok(&setup);
    assert!(file.is_file());
    assert!(
        stdout(&setup).contains("created database"),
        "{}",
        stdout(&setup)
    );
    let status = stdout(&larder(
        dir.path(),
        &["migrate", "status", "--database-url", url],
    ));
    assert!(
        status.contains("applied  2026-11-24-000001_blog"),
        "{status}"
    );
    assert_ok(&larder(
        dir.path(),
        &["database", "setup", "--database-url", url],
    ));

    let store = larder::Store::open(url).unwrap();
    let ann = store
        .users()
        .create(larder_blog::NewUser {
            name: "ann".into(),
            email: "ann@example.org".into(),
        })
        .unwrap();
    drop(store);

    assert_ok(&larder(
        dir.path(),
        &["database", "reset", "--database-url", url],
    ));
    let store = larder::Store::open(url).unwrap();
    assert!(
        store.users().get(ann.id).unwrap().is_none(),
        "the row survived"
    );
    assert!(store.migration_status().unwrap().iter().all(|m| m.applied));
    assert!(
        has_table(url, "users"),
        "the application's migrations ran too"
    );
    drop(store);

    // The migration lock's directory, which drop removes with the file.
    assert!(dir.path().join("setup.db.locks").is_dir());
    let dropped = larder(dir.path(), &["database", "drop", "--database-url", url]);
    assert_ok(&dropped);
    for suffix in ["", "-wal", "-shm", ".locks"] {
        assert!(
            !dir.path().join(format!("setup.db{suffix}")).exists(),
            "{suffix}"
        );
    }
    let again = larder(dir.path(), &["database", "drop", "--database-url", url]);
    assert_one_line_failure(&again, "does not exist");

    // reset of a database that is not there just sets it up.
    assert_ok(&larder(
        dir.path(),
        &["database", "reset", "--database-url", url],
    ));
    assert!(has_table(url, "users"));
}

#[test]
fn database_setup_uses_an_apps_own_migrations_dir() {
    let dir = tempfile::tempdir().unwrap();
    let migrations = app_migrations(dir.path());
    let url = sqlite_url(dir.path(), "app.db");
    let setup = larder(
        dir.path(),
        &[
            "database",
            "setup",
            "--database-url",
            &url,
            "--migrations-dir",
            migrations.to_str().unwrap(),
        ],
    );
    assert_ok(&setup);
    assert!(has_table(&url, "notes") && !has_table(&url, "users"));

    let missing = larder(
        dir.path(),
        &[
            "database",
            "reset",
            "--database-url",
            &url,
            "--migrations-dir",
            "gone",
        ],
    );
    assert_one_line_failure(&missing, "does not exist");
    assert!(
        has_table(&url, "notes"),
        "reset dropped before checking the folder"
    );
}

#[test]
fn database_commands_on_an_unreachable_server_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for action in ["setup", "reset", "drop"] {
        let output = larder(
            dir.path(),
            &[
                "database",
                action,
                "--database-url",
                "postgres://u:pw-s3cret@127.0.0.1:1/db",
            ],
        );
        assert_one_line_failure(&output, "cannot connect");
        assert!(!stderr(&output).contains("pw-s3cret"));
    }
}

/// `database setup | drop` and `migrate status` against each configured server.
#[test]
fn database_and_migrate_commands_work_on_servers() {
    for (env, kind, backend) in [
        (
            "LARDER_TEST_POSTGRES_URL",
            larder::Backend::Postgres,
            "postgres",
        ),
        ("LARDER_TEST_MYSQL_URL", larder::Backend::Mysql, "mysql"),
    ] {
        let Some(url) = server_database_url(env, kind, "larder_cli") else {
            continue;
        };
        let dir = tempfile::tempdir().unwrap();
        with_blog_migrations_for(dir.path(), backend);
        assert_ok(&larder(
            dir.path(),
            &["database", "setup", "--database-url", &url],
        ));
        let status = larder(dir.path(), &["migrate", "status", "--database-url", &url]);
        assert!(
            stdout(&status).contains("applied  2026-11-24-000001_blog"),
            "{backend}: {}",
            stdout(&status)
        );
        assert_ok(&larder(
            dir.path(),
            &["database", "reset", "--database-url", &url],
        ));
        assert_ok(&larder(
            dir.path(),
            &["database", "drop", "--database-url", &url],
        ));
        let again = larder(dir.path(), &["database", "drop", "--database-url", &url]);
        assert_one_line_failure(&again, "does not exist");
    }
}

/// `migrate redo` of an application's migrations that create tables, on each
/// server: MySQL commits DDL at once, which ended the transaction redo ran
/// in, so every redo failed ("SAVEPOINT diesel_savepoint_1 does not exist")
/// after its reverts had run, leaving the migrations reverted.
#[test]
fn migrate_redo_of_table_migrations_works_on_servers() {
    for (env, kind) in [
        ("LARDER_TEST_POSTGRES_URL", larder::Backend::Postgres),
        ("LARDER_TEST_MYSQL_URL", larder::Backend::Mysql),
    ] {
        let Some(url) = server_database_url(env, kind, "larder_cli_redo") else {
            continue;
        };
        let dir = tempfile::tempdir().unwrap();
        app_migrations(dir.path());
        let leading = ["--migrations-dir", "app-migrations", "--database-url", &url];
        let with = |args: &[&str]| larder_with(dir.path(), &leading, args);
        assert_ok(&with(&["database", "setup"]));
        let one = with(&["migrate", "redo"]);
        let two = with(&["migrate", "redo", "-n", "2"]);
        let status = stdout(&with(&["migrate", "status"]));
        let tables = larder::Connection::establish(&url)
            .unwrap()
            .batch_execute("SELECT * FROM tags; SELECT * FROM notes");
        with(&["database", "drop"]);
        assert_ok(&one);
        assert_ok(&two);
        assert_eq!(stdout(&two).matches("redone").count(), 2, "{kind:?}");
        assert_eq!(status.matches("pending").count(), 0, "{kind:?}: {status}");
        assert!(tables.is_ok(), "{kind:?}: {tables:?}");
    }
}

#[test]
fn help_names_every_command_and_shows_examples() {
    let dir = tempfile::tempdir().unwrap();
    let help = larder(dir.path(), &["--help"]);
    assert_ok(&help);
    let text = stdout(&help);
    for expected in [
        "migrate",
        "database",
        "--database-url",
        "--migrations-dir",
        "Examples:",
        "larder migrate revert -n 2",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let migrate = stdout(&larder(dir.path(), &["migrate", "--help"]));
    for command in [
        "run", "revert", "redo", "status", "pending", "generate", "resolve",
    ] {
        assert!(
            migrate.contains(command),
            "missing {command:?} in:\n{migrate}"
        );
    }
    let database = stdout(&larder(dir.path(), &["database", "--help"]));
    for command in ["setup", "reset", "drop"] {
        assert!(
            database.contains(command),
            "missing {command:?} in:\n{database}"
        );
    }
}

#[test]
fn generate_capture_writes_the_triggers_of_an_application_table() {
    use diesel::connection::SimpleConnection;
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path(), "app.db");
    assert_ok(&larder(
        dir.path(),
        &["--database-url", &url, "migrate", "run"],
    ));
    write_migration(
        &dir.path().join("mine"),
        "2026-01-01-000000_notes",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY NOT NULL, body TEXT NOT NULL);",
        "DROP TABLE notes;",
    );
    let mine = [
        "--migrations-dir",
        "mine",
        "--database-url",
        &url,
        "migrate",
    ];
    let generate = larder_with(
        dir.path(),
        &mine,
        &["generate", "capture_notes", "--capture", "notes"],
    );
    assert_ok(&generate);
    assert_ok(&larder_with(dir.path(), &mine, &["run"]));

    let mut conn = larder::Connection::establish(&url).unwrap();
    let logged = || -> Vec<String> {
        common::change_log(&url)
            .into_iter()
            .map(|(table, ..)| table)
            .collect()
    };
    conn.batch_execute("INSERT INTO notes (body) VALUES ('x')")
        .unwrap();
    assert_eq!(logged(), ["notes"]);

    assert_ok(&larder_with(dir.path(), &mine, &["revert"]));
    conn.batch_execute("INSERT INTO notes (body) VALUES ('y')")
        .unwrap();
    assert_eq!(logged(), ["notes"], "reverted: no trigger left");

    let bad = larder_with(
        dir.path(),
        &mine,
        &["generate", "bad", "--capture", "no;tes"],
    );
    assert_one_line_failure(&bad, "not a table name");
    let own = larder_with(
        dir.path(),
        &mine,
        &["generate", "own", "--capture", "larder_changes"],
    );
    assert_one_line_failure(&own, "larder's own");

    // TABLE:KEYS also reports the key columns' values.
    let keyed = larder_with(
        dir.path(),
        &mine,
        &["generate", "tag_keys", "--capture", "tags:post_id"],
    );
    assert_ok(&keyed);
    let folder = std::fs::read_dir(dir.path().join("mine"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.to_string_lossy().ends_with("_tag_keys"))
        .expect("the generated migration");
    let up = std::fs::read_to_string(folder.join("up.sql")).unwrap();
    assert!(
        up.contains("key_values") && up.contains(r#"OLD."post_id""#),
        "{up}"
    );
    let bad_key = larder_with(
        dir.path(),
        &mine,
        &["generate", "bad_key", "--capture", "tags:post id"],
    );
    assert_one_line_failure(&bad_key, "column name");
}

/// Listing or reverting reads a database: on a SQLite path that holds none,
/// `status` and `pending` list every migration as pending and `revert` and
/// `redo` say there is no database, and none of them creates a file there.
#[test]
fn migrate_commands_that_read_a_missing_sqlite_database_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path(), "missing.db");
    let migrate = |action: &str| larder(dir.path(), &["migrate", action, "--database-url", &url]);
    for action in ["status", "pending"] {
        let output = migrate(action);
        assert_ok(&output);
        assert!(
            stdout(&output).contains("pending  2026-11-25-000001_change_log"),
            "{}",
            stdout(&output)
        );
        assert!(!stdout(&output).contains("applied"), "{}", stdout(&output));
    }
    for action in ["revert", "redo"] {
        assert_one_line_failure(&migrate(action), "does not exist");
    }
    assert!(
        !dir.path().join("missing.db").exists(),
        "a file was created"
    );
}

/// A migration's version is its timestamp, to the second: two generated in the
/// same second shared one, and diesel, which records versions alone, applied
/// only one of them while `status` showed both applied. `generate` takes a
/// version no migration in the folder has.
#[test]
fn generate_never_reuses_a_version_in_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let mine = dir.path().join("mine");
    // Every second from a little before now to well after it is taken.
    let now = chrono::Utc::now();
    for s in -2..60 {
        let stamp = (now + chrono::Duration::seconds(s)).format("%Y-%m-%d-%H%M%S");
        write_migration(&mine, &format!("{stamp}_taken"), "SELECT 1;", "SELECT 1;");
    }
    let generate = |name: &str| {
        let args = ["--migrations-dir", "mine", "migrate", "generate", name];
        assert_ok(&larder(dir.path(), &args));
    };
    generate("create_tags");
    generate("create_notes");
    let mut versions: Vec<String> = subdirs(&mine)
        .iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_str().unwrap();
            name.split_once('_').unwrap().0.to_owned()
        })
        .collect();
    let all = versions.len();
    versions.dedup();
    assert_eq!(
        versions.len(),
        all,
        "a version was reused: {:?}",
        subdirs(&mine)
    );

    let url = sqlite_url(dir.path(), "gen.db");
    let with = |action: &str| {
        let args = [
            "--migrations-dir",
            "mine",
            "--database-url",
            &url,
            "migrate",
            action,
        ];
        larder(dir.path(), &args)
    };
    assert_ok(&with("run"));
    let pending = with("pending");
    assert_ok(&pending);
    assert_eq!(stdout(&pending).trim(), "no pending migrations");
}

/// PostgreSQL refuses to drop a database other sessions use after waiting 5 s
/// for them. MySQL waited for their metadata locks for `lock_wait_timeout` (a
/// day on MariaDB, a year on MySQL), with every new query on those tables queued
/// behind it: `larder database drop` and `reset` hung while any transaction
/// that had read a table was open. They give up like PostgreSQL, with one line,
/// and the database stays.
#[test]
fn dropping_a_mysql_database_a_transaction_holds_fails_instead_of_hanging() {
    let Some(url) = server_database_url(
        "LARDER_TEST_MYSQL_URL",
        larder::Backend::Mysql,
        "larder_cli_held",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&larder(
        dir.path(),
        &["database", "setup", "--database-url", &url],
    ));
    let mut holder = larder::Connection::establish(&url).unwrap();
    holder
        .batch_execute("BEGIN; SELECT COUNT(*) INTO @n FROM larder_changes;")
        .unwrap();

    for action in ["drop", "reset"] {
        let started = std::time::Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_larder"))
            .args(["database", action, "--database-url", &url])
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("MIGRATION_DIRECTORY")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        while child.try_wait().unwrap().is_none() && started.elapsed().as_secs() < 30 {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            child.wait().unwrap();
            drop(holder);
            larder(dir.path(), &["database", "drop", "--database-url", &url]);
            panic!("`larder database {action}` still waiting after 30 s");
        }
        assert_one_line_failure(&child.wait_with_output().unwrap(), "in use");
    }
    drop(holder);
    let status = larder(dir.path(), &["migrate", "status", "--database-url", &url]);
    assert!(
        stdout(&status).contains("applied  2026-11-25-000001_change_log"),
        "{}",
        stdout(&status)
    );
    assert_ok(&larder(
        dir.path(),
        &["database", "drop", "--database-url", &url],
    ));
}

/// MySQL commits DDL statement by statement: a migration that fails part way
/// leaves what it did before the failing statement, while `status` showed it
/// pending and every `run` failed on what is already there. The error says
/// what stayed done and what to do, `status` marks it failed, `run` refuses
/// until `migrate resolve`, and then applies it.
#[test]
fn a_mysql_migration_that_fails_part_way_says_what_stayed_done() {
    let Some(url) = server_database_url(
        "LARDER_TEST_MYSQL_URL",
        larder::Backend::Mysql,
        "larder_cli_partway",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let migration = write_migration(
        &dir.path().join("mine"),
        "2030-01-01-000000_two_tables",
        "CREATE TABLE first_one (id BIGINT PRIMARY KEY); THIS IS NOT SQL;",
        "DROP TABLE first_one;",
    );
    let leading = ["--migrations-dir", "mine", "--database-url", &url];
    let with = |args: &[&str]| larder_with(dir.path(), &leading, args);
    let setup = with(&["database", "setup"]);
    let status = with(&["migrate", "status"]);
    let refused = with(&["migrate", "run"]);
    // The operator drops the table it left and fixes the migration.
    fs::write(
        migration.join("up.sql"),
        "CREATE TABLE first_one (id BIGINT PRIMARY KEY);",
    )
    .unwrap();
    let mut conn = larder::Connection::establish(&url).unwrap();
    conn.batch_execute("DROP TABLE first_one").unwrap();
    drop(conn);
    let unknown = with(&["migrate", "resolve", "2030-12-31-000000_nothing"]);
    let resolved = with(&["migrate", "resolve", "2030-01-01-000000_two_tables"]);
    let run = with(&["migrate", "run"]);
    with(&["database", "drop"]);
    assert_one_line_failure(&setup, "two_tables");
    assert!(
        stdout(&status).contains("failed   2030-01-01-000000_two_tables"),
        "{}",
        stdout(&status)
    );
    let err = stderr(&setup);
    assert!(
        err.contains("stays done") && err.contains("larder migrate resolve 20300101000000"),
        "{err}"
    );
    assert_one_line_failure(&refused, "failed part way in an earlier run");
    assert_one_line_failure(&unknown, "no migration");
    assert_ok(&resolved);
    assert_ok(&run);
    assert!(
        stdout(&run).contains("applied 20300101000000"),
        "{}",
        stdout(&run)
    );
}

/// SQLite (and PostgreSQL) check the columns a trigger reads only when it
/// fires: `--capture` of a table without an `id` column, or with a key column
/// it does not have, made a migration that applied, after which every write to
/// the table failed ("no such column: NEW.id"). The migration fails instead,
/// and the table stays writable.
#[test]
fn capturing_a_table_without_its_columns_fails_the_migration_not_its_writes() {
    for (capture, missing) in [("notes", "id"), ("tags:post_id", "post_id")] {
        let dir = tempfile::tempdir().unwrap();
        write_migration(
            &dir.path().join("mine"),
            "2025-01-01-000000_tables",
            "CREATE TABLE notes (note_id INTEGER PRIMARY KEY, body TEXT); \
             CREATE TABLE tags (id INTEGER PRIMARY KEY, label TEXT);",
            "DROP TABLE tags; DROP TABLE notes;",
        );
        let url = sqlite_url(dir.path(), "cap.db");
        let leading = ["--migrations-dir", "mine", "--database-url", &url];
        let with = |args: &[&str]| larder_with(dir.path(), &leading, args);
        assert_ok(&with(&[
            "migrate",
            "generate",
            "capture",
            "--capture",
            capture,
        ]));
        let run = with(&["migrate", "run"]);
        assert_one_line_failure(&run, missing);
        let pending = with(&["migrate", "pending"]);
        assert!(
            stdout(&pending).contains("_capture"),
            "{}",
            stdout(&pending)
        );
        let path = url.strip_prefix("sqlite://").unwrap();
        let mut conn = larder::Connection::establish(path).unwrap();
        conn.batch_execute(
            "INSERT INTO notes (body) VALUES ('x'); INSERT INTO tags (label) VALUES ('y');",
        )
        .unwrap();
    }
}

/// `database reset` checked only that the migrations folder existed before
/// dropping: with a folder that cannot be read as migrations (a stray folder,
/// two of one version) it dropped the database, rows and all, then failed.
#[test]
fn database_reset_with_a_migrations_folder_it_cannot_run_drops_nothing() {
    for stray in ["not_a_migration", "2025-01-01-000000_again"] {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("mine");
        write_migration(
            &mine,
            "2025-01-01-000000_t",
            "CREATE TABLE t (id INTEGER PRIMARY KEY);",
            "DROP TABLE t;",
        );
        let url = sqlite_url(dir.path(), "reset.db");
        let leading = ["--migrations-dir", "mine", "--database-url", &url];
        let with = |args: &[&str]| larder_with(dir.path(), &leading, args);
        assert_ok(&with(&["database", "setup"]));
        let path = url.strip_prefix("sqlite://").unwrap();
        larder::Connection::establish(path)
            .unwrap()
            .batch_execute("INSERT INTO t (id) VALUES (42)")
            .unwrap();

        let bad = mine.join(stray);
        fs::create_dir_all(&bad).unwrap();
        fs::write(bad.join("up.sql"), "SELECT 1;").unwrap();
        if stray == "not_a_migration" {
            fs::remove_file(bad.join("up.sql")).unwrap();
        }
        let reset = with(&["database", "reset"]);
        assert_one_line_failure(&reset, stray);
        assert!(
            !stdout(&reset).contains("dropped"),
            "{stray}: {}",
            stdout(&reset)
        );
        assert!(has_table(&url, "t"), "{stray}: the database was dropped");
    }
}

/// A name longer than a folder name can be failed only when the folder was
/// made, after the migrations directory had been created: bad input left an
/// empty `migrations/sqlite` behind. It is refused first, like any bad name.
#[test]
fn generate_refuses_a_name_too_long_for_a_folder_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let name = "a".repeat(300);
    let output = larder(dir.path(), &["migrate", "generate", &name]);
    assert_one_line_failure(&output, "too long");
    assert!(
        !dir.path().join("migrations").exists(),
        "something was created"
    );
    let longest = "a".repeat(255 - "2027-01-01-000000_".len());
    assert_ok(&larder(dir.path(), &["migrate", "generate", &longest]));
}

/// `migrate status` listed only the migrations it had folders for: one applied
/// and then removed from the folder (or applied by another checkout) was not
/// shown, though `revert` then refused to go past it.
#[test]
fn migrate_status_shows_an_applied_migration_it_has_no_folder_for() {
    let dir = tempfile::tempdir().unwrap();
    let mine = app_migrations(dir.path());
    let url = sqlite_url(dir.path(), "status.db");
    let leading = [
        "--migrations-dir",
        mine.to_str().unwrap(),
        "--database-url",
        &url,
    ];
    let with = |args: &[&str]| larder_with(dir.path(), &leading, args);
    assert_ok(&with(&["migrate", "run"]));
    fs::remove_dir_all(mine.join("2027-01-02-000001_create_notes")).unwrap();
    let status = with(&["migrate", "status"]);
    assert_ok(&status);
    let shown = stdout(&status);
    assert!(
        shown
            .lines()
            .any(|line| line.starts_with("applied") && line.contains("20270102000001")),
        "{shown}"
    );
    assert!(
        shown.contains("applied  2027-01-01-000001_create_tags"),
        "{shown}"
    );
}

/// Every host of a deploy running `larder migrate run` at once: they take
/// turns on the database's migration lock, all succeed and each migration is
/// applied once. A runner that cannot get the lock within `--lock-timeout`
/// fails on one line saying another migration is running, and changes nothing.
#[test]
fn concurrent_migrate_runs_take_turns_and_one_past_its_lock_timeout_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    with_blog_migrations(dir.path());
    let url = sqlite_url(dir.path(), "app.db");
    let runners: Vec<_> = (0..3)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_larder"))
                .args(["migrate", "run", "--database-url", &url])
                .current_dir(dir.path())
                .env_remove("RUST_LOG")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run larder")
        })
        .collect();
    let mut applied: Vec<String> = Vec::new();
    for runner in runners {
        let output = runner.wait_with_output().unwrap();
        assert_ok(&output);
        applied.extend(
            stdout(&output)
                .lines()
                .filter_map(|l| l.strip_prefix("applied "))
                .map(str::to_owned),
        );
    }
    let status = stdout(&larder(
        dir.path(),
        &["migrate", "status", "--database-url", &url],
    ));
    assert!(!status.contains("pending"), "{status}");
    let mut unique = applied.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), applied.len(), "applied twice: {applied:?}");
    assert_eq!(applied.len(), status.lines().count(), "{applied:?}");

    assert_ok(&larder(
        dir.path(),
        &["migrate", "revert", "--database-url", &url],
    ));
    let before = stdout(&larder(
        dir.path(),
        &["migrate", "status", "--database-url", &url],
    ));
    let store = larder::Store::builder(&url)
        .coherence(false)
        .build()
        .unwrap();
    let other = store.lock("larder.migrations").unwrap();
    let waited = larder(
        dir.path(),
        &[
            "--lock-timeout",
            "0",
            "migrate",
            "run",
            "--database-url",
            &url,
        ],
    );
    assert_one_line_failure(&waited, "another migration is running");
    let after = stdout(&larder(
        dir.path(),
        &["migrate", "status", "--database-url", &url],
    ));
    assert_eq!(before, after, "nothing changed");
    drop(other);
    assert_ok(&larder(
        dir.path(),
        &[
            "--lock-timeout",
            "0",
            "migrate",
            "run",
            "--database-url",
            &url,
        ],
    ));
}

/// A query value may hold `@` and `/` (`application_name=deploy@web/blue`, a
/// socket or certificate path): `database drop` and `setup` must act on the
/// database the URL's path names, the one the driver connects to. They took
/// the URL's last `@` for the end of its user info and dropped the database
/// named after the query value's last `/` instead.
#[test]
fn database_commands_act_on_the_database_the_path_names_when_a_query_value_holds_an_at_sign() {
    for (env, kind, param) in [
        (
            "LARDER_TEST_POSTGRES_URL",
            larder::Backend::Postgres,
            "application_name",
        ),
        ("LARDER_TEST_MYSQL_URL", larder::Backend::Mysql, "note"),
    ] {
        let (Some(keep), Some(other)) = (
            server_database_url(env, kind, "larder_cli_at_keep"),
            server_database_url(env, kind, "larder_cli_at_other"),
        ) else {
            continue;
        };
        let dir = tempfile::tempdir().unwrap();
        let other_name = other.rsplit('/').next().unwrap();
        let tricky = format!("{keep}?{param}=deploy@web/{other_name}");
        assert_ok(&larder(
            dir.path(),
            &["database", "setup", "--database-url", &other],
        ));
        let setup = larder(
            dir.path(),
            &["database", "setup", "--database-url", &tricky],
        );
        let dropped = larder(dir.path(), &["database", "drop", "--database-url", &tricky]);
        let other_exists = larder::database_exists(&other).unwrap();
        let keep_exists = larder::database_exists(&keep).unwrap();
        for url in [&keep, &other] {
            larder(dir.path(), &["database", "drop", "--database-url", url]);
        }
        assert_ok(&setup);
        assert!(
            stdout(&setup).contains("created database"),
            "{kind:?}: {}",
            stdout(&setup)
        );
        assert_ok(&dropped);
        assert!(
            other_exists,
            "{kind:?}: dropped the database the query named"
        );
        assert!(!keep_exists, "{kind:?}: left the database the URL names");
    }
}

/// libpq reads a `dbname` query parameter after the URL's path, and connects
/// to the database it names: `postgres://host/a?dbname=b` is database `b`.
/// `database drop` dropped `a` instead, a database the URL does not connect
/// to (and `setup` created `a` and migrated `b`): such a URL is refused.
#[test]
fn database_commands_refuse_a_postgres_url_whose_dbname_parameter_names_another_database() {
    let (Some(a), Some(b)) = (
        server_database_url(
            "LARDER_TEST_POSTGRES_URL",
            larder::Backend::Postgres,
            "larder_cli_dbname_a",
        ),
        server_database_url(
            "LARDER_TEST_POSTGRES_URL",
            larder::Backend::Postgres,
            "larder_cli_dbname_b",
        ),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for url in [&a, &b] {
        assert_ok(&larder(
            dir.path(),
            &["database", "setup", "--database-url", url],
        ));
    }
    let b_name = b.rsplit('/').next().unwrap();
    let twice = format!("{a}?dbname={b_name}");
    let dropped = larder(dir.path(), &["database", "drop", "--database-url", &twice]);
    let both_exist = larder::database_exists(&a).unwrap() && larder::database_exists(&b).unwrap();
    for url in [&a, &b] {
        larder(dir.path(), &["database", "drop", "--database-url", url]);
    }
    assert_one_line_failure(&dropped, "dbname");
    assert!(both_exist, "a database was dropped");
}

/// A table given to `--capture` twice (once more with its keys, or in
/// another case on SQLite, whose names ignore it) made a migration that
/// created its triggers twice: it was written, and every `migrate run`
/// then failed on it ("trigger … already exists"). It is refused with one
/// line, before anything is written.
#[test]
fn generate_refuses_a_table_captured_twice_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path(), "app.db");
    for twice in [
        ["notes", "notes"],
        ["tags", "tags:post_id"],
        ["notes", "NOTES"],
    ] {
        let output = larder(
            dir.path(),
            &[
                "--database-url",
                &url,
                "migrate",
                "generate",
                "capture",
                "--capture",
                twice[0],
                "--capture",
                twice[1],
            ],
        );
        assert_one_line_failure(&output, "twice");
        assert!(
            !dir.path().join("migrations").exists(),
            "{twice:?}: a migration was written"
        );
    }
}
