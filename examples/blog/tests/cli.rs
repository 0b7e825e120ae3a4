//! The `larder-blog` binary: the demo, read-only statistics, exit codes and
//! one-line errors.

use std::process::{Command, Output};

fn larder_blog(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_larder-blog"))
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .expect("run larder-blog")
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
        "failed: {}\n{}",
        stdout(output),
        stderr(output)
    );
}

fn assert_one_line_failure(output: &Output, mentions: &str) {
    assert!(!output.status.success(), "succeeded: {}", stdout(output));
    let err = stderr(output);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(mentions), "{err}");
}

#[test]
fn the_demo_runs_on_a_fresh_file_and_prints_cache_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("demo.db").display());
    let output = larder_blog(
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

#[test]
fn stats_renders_pages_of_an_existing_database_and_prints_hit_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("blog.db").display());
    assert_ok(&larder_blog(
        dir.path(),
        &[
            "demo",
            "--users",
            "4",
            "--reads",
            "1",
            "--database-url",
            &url,
        ],
    ));
    let output = larder_blog(
        dir.path(),
        &["stats", "--pages", "5", "--database-url", &url],
    );
    assert_ok(&output);
    let out = stdout(&output);
    for expected in [
        "rendered 5 front pages",
        "users",
        "posts",
        "comments",
        "(lists)",
        "hit%",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    // The second and later pages hit the query cache and the identity map.
    let users_line = out.lines().find(|l| l.starts_with("users")).unwrap();
    assert!(!users_line.contains(" 0.0%"), "{users_line}");

    let empty = format!("sqlite://{}", dir.path().join("empty.db").display());
    let failed = larder_blog(dir.path(), &["stats", "--database-url", &empty]);
    assert_one_line_failure(&failed, "does not exist");
    assert!(
        !dir.path().join("empty.db").exists(),
        "reading only: nothing created"
    );
}

/// `larder … | head -1`: the reader goes away early; larder must end without a
/// panic (as Unix tools do, by SIGPIPE), not print a backtrace.
#[test]
fn a_closed_stdout_ends_the_program_without_a_panic() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("pipe.db").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_larder-blog"))
        .args(["demo", "--users", "200", "--database-url", &url])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here: the pipe closes.
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(first.starts_with("database:"), "{first}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(output.status.code(), Some(101), "{stderr}");
}

/// `check-pages` and `probe-coherence` only read the database (and talk to
/// servers): pointed at a SQLite file that does not exist (a mistyped path,
/// or no `--url` in the wrong directory, which means `./larder.db`) they say
/// so on one line, before any server is asked, and create no file.
#[test]
fn the_page_checkers_create_no_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("missing.db").display());
    // Port 9 (discard) on loopback: nothing must be asked of it anyway.
    let server = "http://127.0.0.1:9";
    let runs: [&[&str]; 4] = [
        &[
            "check-pages",
            "--server",
            server,
            "--database-url",
            &missing,
        ],
        &["check-pages", "--server", server],
        &[
            "probe-coherence",
            "--writer",
            server,
            "--reader",
            server,
            "--database-url",
            &missing,
        ],
        &["probe-coherence", "--writer", server, "--reader", server],
    ];
    for args in runs {
        let failed = larder_blog(dir.path(), args);
        assert_one_line_failure(&failed, "does not exist");
        let created: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(created.is_empty(), "{args:?} created {created:?}");
    }
}

/// A wait no one means (`--after-ms` of 2⁶⁴ − 1: half a billion years) is a
/// usage error at once, exit status 2, not a process that sleeps forever.
#[test]
fn check_pages_refuses_a_wait_too_long_to_mean() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_larder-blog"))
        .args(["check-pages", "--server", "http://127.0.0.1:9"])
        .args(["--after-ms", "18446744073709551615"])
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A hang guard, not a timing assertion: a usage error takes milliseconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still sleeping after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(2), "{status}");
}

#[test]
fn a_malformed_dotenv_file_fails_instead_of_using_the_default_database() {
    // dotenvy stops at a line it cannot parse: the DATABASE_URL below it was
    // ignored, and the command went on with sqlite://larder.db instead.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "!!not a line\nDATABASE_URL=sqlite://from-dotenv.db\n",
    )
    .unwrap();
    let output = larder_blog(dir.path(), &["stats"]);
    assert_one_line_failure(&output, ".env");
    assert!(!dir.path().join("larder.db").exists());
    // A malformed line may hold a password: its text is not shown.
    std::fs::write(
        dir.path().join(".env"),
        "DATABASE_URL=\"postgres://app:s3cret@db.invalid/app\n",
    )
    .unwrap();
    let output = larder_blog(dir.path(), &["stats"]);
    assert_one_line_failure(&output, ".env");
    assert!(!stderr(&output).contains("s3cret"), "{}", stderr(&output));
}
