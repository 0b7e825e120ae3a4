//! The `larder` binary: migrations, the demo, exit codes and one-line errors.

use std::path::Path;
use std::process::{Command, Output};

fn larder(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .expect("run larder")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
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
    assert!(
        stdout(&status).contains("applied  2026-11-24-000001_blog"),
        "{}",
        stdout(&status)
    );

    assert_ok(&larder(
        dir.path(),
        &["migrate", "redo", "--database-url", url],
    ));

    let revert = larder(dir.path(), &["migrate", "revert", "--database-url", url]);
    assert_ok(&revert);
    let status = larder(dir.path(), &["migrate", "status", "--database-url", url]);
    assert!(stdout(&status).contains("pending"), "{}", stdout(&status));

    let nothing = larder(dir.path(), &["migrate", "revert", "--database-url", url]);
    assert_one_line_failure(&nothing, "no applied migration");

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
fn the_default_database_is_a_sqlite_file_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&larder(dir.path(), &["migrate", "run"]));
    assert!(dir.path().join("larder.db").exists());
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

#[test]
fn the_demo_runs_on_a_fresh_file_and_prints_cache_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("demo.db").display());
    let output = larder(
        dir.path(),
        &[
            "demo",
            "--users",
            "5",
            "--reads",
            "3",
            "--database-url",
            &url,
        ],
    );
    assert_ok(&output);
    let out = stdout(&output);
    for expected in [
        "wrote 5 users, 10 posts, 30 comments",
        "entity",
        "posts",
        "hit%",
        "pool:",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}
