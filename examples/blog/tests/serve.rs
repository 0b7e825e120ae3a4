//! `larder-blog serve` as its users meet it: the binary started on an
//! ephemeral port against SQLite and every configured server backend, driven
//! over HTTP. Each route answers as documented, a panicking handler leaks
//! nothing, and the plain diesel baseline serves the very same pages.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{each_backend, Target, TestDb};
use larder_blog::prelude::*;
use larder_blog::{NewComment, NewPost, NewUser};

/// A running server, killed when dropped (declare it after its database).
struct Server {
    child: Child,
    base: String,
    agent: ureq::Agent,
}

impl Server {
    fn start(url: &str, extra: &[&str]) -> Server {
        Server::ready(Server::spawn(url, extra))
    }

    /// The process, started; [`ready`](Server::ready) waits for it to listen.
    fn spawn(url: &str, extra: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_larder-blog"))
            .args(["--url", url, "serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            // The panic route's panics are expected: their message is enough.
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start larder-blog serve")
    }

    /// Waits for `child` to print that it listens.
    fn ready(child: Child) -> Server {
        Server::try_ready(child).unwrap_or_else(|failure| panic!("{failure}"))
    }

    /// As [`ready`](Server::ready), a server that exited instead being an `Err`.
    fn try_ready(mut child: Child) -> Result<Server, String> {
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let Some(base) = line.trim().strip_prefix("listening on ") else {
            let status = child.wait().expect("wait");
            return Err(format!("the server did not start ({status}): {line:?}"));
        };
        let agent = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Ok(Server {
            base: base.to_owned(),
            child,
            agent,
        })
    }

    fn get(&self, path: &str) -> (u16, String) {
        let mut response = self
            .agent
            .get(&format!("{}{path}", self.base))
            .call()
            .expect("GET");
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().expect("body"))
    }

    /// POSTs a form: the status and the `Location` header.
    fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let response = self
            .agent
            .post(&format!("{}{path}", self.base))
            .send_form(form.iter().copied())
            .expect("POST");
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (response.status().as_u16(), location)
    }

    /// POSTs a form: the status and the page sent back.
    fn post_page(&self, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let mut response = self
            .agent
            .post(&format!("{}{path}", self.base))
            .send_form(form.iter().copied())
            .expect("POST");
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().expect("body"))
    }

    fn stats(&self) -> serde_json::Value {
        let (status, body) = self.get("/stats");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("stats JSON")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A post by a user whose name needs escaping, with two comments, written
/// before the server starts.
fn blog(db: &TestDb) -> (i64, i64) {
    let store = &db.store;
    let ann = store
        .users()
        .create(NewUser {
            name: "ann <b>&</b>".into(),
            email: "ann@example.org".into(),
        })
        .unwrap();
    let post = store
        .posts()
        .create(NewPost {
            author_id: ann.id,
            title: "Threading & Locks".into(),
            body: "release them".into(),
        })
        .unwrap();
    for body in ["first", "second"] {
        store
            .comments()
            .create(NewComment {
                post_id: post.id,
                author_id: ann.id,
                body: body.into(),
            })
            .unwrap();
    }
    (post.id, ann.id)
}

/// Counted by SQL: the test's own store has coherence off, so its cache
/// would not see the server's writes.
fn comment_count(db: &TestDb, post: i64) -> i64 {
    use diesel::prelude::*;
    use larder_blog::schema::comments;
    let query = comments::table.filter(comments::post_id.eq(post)).count();
    db.store
        .comments()
        .run(None, |conn| {
            larder::with_connection!(conn, |c| query.get_result(c))
        })
        .unwrap()
}

/// axum's own rejections (a path id that is not a number, a malformed
/// form) are `text/plain` pages quoting what the client sent: a browser
/// that sniffed one as HTML would run a script planted in the URL.
#[test]
fn every_answer_forbids_content_sniffing() {
    let db = common::sqlite().fresh();
    let server = Server::start(&db.url(), &["--seed", "1,1,1"]);
    for path in [
        "/",
        "/posts/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "/posts/999999",
        "/health",
    ] {
        let response = server
            .agent
            .get(&format!("{}{path}", server.base))
            .call()
            .expect("GET");
        let sniffing = response.headers().get("x-content-type-options");
        assert_eq!(
            sniffing.and_then(|v| v.to_str().ok()),
            Some("nosniff"),
            "{path}: {}",
            response.status()
        );
    }
}

#[test]
fn every_route_answers_as_documented() {
    each_backend(|target| {
        let db = target.fresh();
        let (post, ann) = blog(&db);
        let server = Server::start(&db.url(), &["--seed", "0,0,0"]);

        let (status, front) = server.get("/");
        assert_eq!(status, 200);
        assert!(front.contains("Threading &amp; Locks"), "{front}");
        assert!(front.contains("ann &lt;b&gt;&amp;&lt;/b&gt;"), "{front}");
        assert!(front.contains("2 comments"), "{front}");

        let (status, location) = server.post(
            &format!("/posts/{post}/comments"),
            &[("author_id", &ann.to_string()), ("body", "<i>third</i>")],
        );
        assert_eq!(status, 303);
        let id = location
            .rsplit_once("#c")
            .and_then(|(_, id)| id.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("no comment id in {location:?}"));
        let (status, page) = server.get(&format!("/posts/{post}"));
        assert_eq!(status, 200);
        assert!(
            page.contains(&format!("data-comment-id=\"{id}\"")),
            "{page}"
        );
        assert!(page.contains("&lt;i&gt;third&lt;/i&gt;"), "{page}");
        assert!(server.get("/").1.contains("3 comments"));
        assert_eq!(comment_count(&db, post), 3);

        let edit = |version: &str| {
            server.post(
                &format!("/posts/{post}/edit"),
                &[
                    ("title", "Locks, revised"),
                    ("body", "b"),
                    ("version", version),
                ],
            )
        };
        assert_eq!(edit("1").0, 303);
        assert_eq!(edit("1").0, 409, "a stale version is a conflict");
        assert!(server
            .get(&format!("/posts/{post}"))
            .1
            .contains("Locks, revised"));

        assert_eq!(server.get("/posts/999999").0, 404);
        let (status, _) = server.post(
            "/posts/999999/comments",
            &[("author_id", &ann.to_string()), ("body", "x")],
        );
        assert_eq!(status, 404);
        assert_eq!(server.get("/health"), (200, "ok".to_owned()));
        let (status, static_page) = server.get("/static");
        assert_eq!(status, 200);
        assert!(static_page.contains("Threading &amp; Locks"));
        assert_eq!(
            server.get("/debug/panic-in-tx").0,
            404,
            "debug routes are off by default"
        );

        let stats = server.stats();
        assert_eq!(stats["mode"], "larder");
        assert_eq!(stats["pool"]["in_use"], 0, "{stats}");
        assert!(stats["larder"]["entities"]["posts"]["hits"].as_u64() > Some(0));
    });
}

/// Text some backend cannot store is refused before anything is written,
/// alike on every backend: a NUL (PostgreSQL's text cannot hold one) and a
/// title over MySQL's `TEXT` (65,535 bytes) are a 422 naming the field,
/// never a 500, and change nothing.
#[test]
fn text_a_backend_cannot_store_is_refused_with_422_and_changes_nothing() {
    each_backend(|target| {
        let db = target.fresh();
        let (post, ann) = blog(&db);
        let server = Server::start(&db.url(), &["--seed", "0,0,0"]);
        let author = ann.to_string();
        let (status, _) = server.post(
            &format!("/posts/{post}/comments"),
            &[("author_id", &author), ("body", "a\0b")],
        );
        assert_eq!(status, 422, "a NUL in a comment, on {:?}", target.backend);
        let long = "t".repeat(65_536);
        for (title, body) in [("t\0", "b"), ("t", "b\0"), (long.as_str(), "b")] {
            let (status, _) = server.post(
                &format!("/posts/{post}/edit"),
                &[("title", title), ("body", body), ("version", "1")],
            );
            assert_eq!(
                status,
                422,
                "title of {} bytes, on {:?}",
                title.len(),
                target.backend
            );
        }
        assert_eq!(comment_count(&db, post), 2, "no comment was written");
        let (status, page) = server.get(&format!("/posts/{post}"));
        assert_eq!(status, 200);
        assert!(page.contains("Threading &amp; Locks"), "{page}");
        let (status, _) = server.post(
            &format!("/posts/{post}/edit"),
            &[
                ("title", &"t".repeat(65_535)),
                ("body", "b"),
                ("version", "1"),
            ],
        );
        assert_eq!(
            status, 303,
            "the post is still at version 1, and 65,535 bytes fit"
        );
        assert_eq!(server.stats()["pool"]["in_use"], 0);
    });
}

/// A server error's page says what happened in general terms and keeps the
/// database's own words (table names, SQL, the driver's message) for the
/// server's log: a client learns nothing about the schema from a 500.
#[test]
fn a_server_error_shows_no_database_text() {
    each_backend(|target| {
        let db = target.fresh();
        let (post, _) = blog(&db);
        let server = Server::start(&db.url(), &["--seed", "0,0,0"]);
        db.store
            .comments()
            .run(None, |conn| {
                larder::with_connection!(conn, |c| {
                    diesel::RunQueryDsl::execute(
                        diesel::sql_query("ALTER TABLE comments RENAME TO comments_gone"),
                        c,
                    )
                })
            })
            .unwrap();
        let (status, page) = server.get(&format!("/posts/{post}"));
        assert_eq!(status, 500, "on {:?}: {page}", target.backend);
        for leak in ["comments", "database error", "exist", "no such table"] {
            assert!(
                !page.to_lowercase().contains(leak),
                "the page shows {leak:?} on {:?}: {page}",
                target.backend
            );
        }
    });
}

/// A careless submit (the comment box left empty, the title field cleared)
/// is a 422 that writes nothing: a blank comment says nothing, and a post
/// with a blank title is listed on the front page as a link with no text,
/// which no reader can click.
#[test]
fn blank_comments_and_titles_are_refused_with_422_and_change_nothing() {
    each_backend(|target| {
        let db = target.fresh();
        let (post, ann) = blog(&db);
        let server = Server::start(&db.url(), &["--seed", "0,0,0"]);
        let author = ann.to_string();
        for body in ["", " \r\n\t "] {
            let (status, page) = server.post_page(
                &format!("/posts/{post}/comments"),
                &[("author_id", &author), ("body", body)],
            );
            assert_eq!(
                status, 422,
                "comment {body:?} on {:?}: {page}",
                target.backend
            );
        }
        for title in ["", "  \n"] {
            let (status, page) = server.post_page(
                &format!("/posts/{post}/edit"),
                &[("title", title), ("body", "b"), ("version", "1")],
            );
            assert_eq!(
                status, 422,
                "title {title:?} on {:?}: {page}",
                target.backend
            );
        }
        assert_eq!(comment_count(&db, post), 2, "no comment was written");
        assert!(server.get("/").1.contains("Threading &amp; Locks"));
    });
}

/// A title is one line: the edit form shows it in an `<input>`, whose value
/// a browser gives back without its line breaks, so a title holding one
/// changed at every save through the form. It is a 422 that changes nothing.
#[test]
fn a_title_with_a_line_break_is_refused_with_422_and_changes_nothing() {
    let db = common::sqlite().fresh();
    let (post, _) = blog(&db);
    let server = Server::start(&db.url(), &["--seed", "0,0,0"]);
    for title in ["two\nlines", "a\rb", "\r\n"] {
        let (status, page) = server.post_page(
            &format!("/posts/{post}/edit"),
            &[("title", title), ("body", "b"), ("version", "1")],
        );
        assert_eq!(status, 422, "title {title:?}: {page}");
    }
    let (_, page) = server.get(&format!("/posts/{post}"));
    assert!(page.contains("data-version=\"1\""), "{page}");
}

/// A post page shows every comment in full, so a comment's size is paid by
/// every reader of its post: 30 comments of 2 MB (axum's body limit) made
/// one post page 60 MB, 23 s to serve, and the server 1.1 GB with 16
/// readers. A comment over 16 KiB is a 422 that writes nothing.
#[test]
fn a_comment_over_16_kib_is_refused_with_422_and_changes_nothing() {
    let db = common::sqlite().fresh();
    let (post, ann) = blog(&db);
    let server = Server::start(&db.url(), &["--seed", "0,0,0"]);
    let author = ann.to_string();
    let path = format!("/posts/{post}/comments");
    let (status, page) = server.post_page(
        &path,
        &[("author_id", &author), ("body", &"c".repeat(16_385))],
    );
    assert_eq!(status, 422, "{page}");
    assert_eq!(comment_count(&db, post), 2, "no comment was written");
    let fits = "c".repeat(16_384);
    let (status, _) = server.post(&path, &[("author_id", &author), ("body", &fits)]);
    assert_eq!(status, 303, "16 KiB fit");
}

/// A write the database refuses (a comment by a user who does not exist, an
/// edit of a stale version) is the client's 409, and its page says what to
/// change in the blog's words: never the database's (its constraint and
/// table names, MySQL's database name), and the same bytes in both modes.
#[test]
fn a_rejected_write_shows_no_database_text() {
    each_backend(|target| {
        let db = target.fresh();
        let (post, _) = blog(&db);
        let larder = Server::start(&db.url(), &["--seed", "0,0,0"]);
        let plain = Server::start(&db.url(), &["--seed", "0,0,0", "--mode", "plain"]);
        let comment = format!("/posts/{post}/comments");
        let missing_author = [("author_id", "999999"), ("body", "x")];
        let edit = format!("/posts/{post}/edit");
        let stale = [("title", "t"), ("body", "b"), ("version", "7")];
        let database = db.url().rsplit('/').next().unwrap_or_default().to_owned();
        for (path, form) in [(&comment, &missing_author[..]), (&edit, &stale[..])] {
            let page = larder.post_page(path, form);
            assert_eq!(page.0, 409, "{path} on {:?}: {}", target.backend, page.1);
            let lower = page.1.to_lowercase();
            for leak in ["constraint", "foreign", "violat", "fkey", "{", &database] {
                assert!(
                    !lower.contains(leak),
                    "the page shows {leak:?} on {:?}: {}",
                    target.backend,
                    page.1
                );
            }
            assert_eq!(plain.post_page(path, form), page, "plain mode, {path}");
        }
        assert_eq!(comment_count(&db, post), 2, "nothing was written");
    });
}

/// The site larder was born from hung because a transaction was not
/// released when a handler failed. Here more handlers than the pool has
/// connections panic while holding one: every connection must come back,
/// the writes must be rolled back, and the site must keep answering before
/// the pool timeout would turn a leak into 503s.
#[test]
fn a_handler_that_panics_in_a_transaction_leaks_nothing() {
    each_backend(|target| {
        let db = target.fresh();
        let (post, ann) = blog(&db);
        let server = Server::start(
            &db.url(),
            &[
                "--seed",
                "0,0,0",
                "--debug-routes",
                "--pool-size",
                "2",
                "--pool-timeout-ms",
                "2000",
            ],
        );
        for _ in 0..5 {
            assert_eq!(server.post("/debug/panic-in-tx", &[]).0, 500);
        }
        assert_eq!(server.get("/").0, 200, "the site keeps answering");
        assert_eq!(server.get(&format!("/posts/{post}")).0, 200);
        let pool = &server.stats()["pool"];
        assert_eq!(pool["in_use"], 0, "every connection is back: {pool}");
        assert_eq!(
            comment_count(&db, post),
            2,
            "the panicked writes rolled back"
        );
        // Every pooled connection commits again: a connection returned still
        // inside its panicked transaction would fail these or commit its
        // leftovers with them.
        for n in 0..4 {
            let form = [
                ("author_id", ann.to_string()),
                ("body", format!("after {n}")),
            ];
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert_eq!(
                server.post(&format!("/posts/{post}/comments"), &form).0,
                303
            );
        }
        assert_eq!(
            comment_count(&db, post),
            6,
            "only the four comments committed"
        );
    });
}

/// `--mode plain` is the baseline the benchmarks divide by: it must serve
/// the same bytes for the same data, or the comparison is meaningless.
#[test]
fn plain_mode_serves_the_same_pages_as_larder() {
    each_backend(|target| {
        let db = target.fresh();
        let seed = ["--seed", "30,60,300"];
        let larder = Server::start(&db.url(), &seed);
        let plain = Server::start(&db.url(), &[&seed[..], &["--mode", "plain"]].concat());
        assert_eq!(plain.stats()["mode"], "plain");
        let (status, front) = larder.get("/");
        assert_eq!(status, 200);
        assert_eq!(plain.get("/"), (200, front.clone()));
        assert_eq!(front.matches("<li>").count(), 20);
        let post_ids = ids_on_front_page(&front);
        let mut comments_seen = 0;
        for id in post_ids {
            let page = larder.get(&format!("/posts/{id}"));
            assert_eq!(page.0, 200);
            comments_seen += page.1.matches("data-comment-id").count();
            assert_eq!(plain.get(&format!("/posts/{id}")), page, "post {id}");
        }
        assert!(comments_seen > 0, "the seed wrote comments on recent posts");
        assert_eq!(plain.get("/posts/999999"), larder.get("/posts/999999"));
        seed_is_not_repeated(target, &db);
    });
}

/// Replicas of a service start together: two servers started at once on a
/// database nothing has migrated yet must both migrate it (or find it
/// migrated), seed it once and serve. Several rounds, each on an emptied
/// database, so that the two start-ups overlap.
#[test]
fn two_servers_started_at_once_on_an_empty_database_both_serve_one_seed() {
    each_backend(|target| {
        let db = target.fresh();
        let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(db.backend.name());
        for round in 0..5 {
            // Everything reverted, larder's own tables included: as created.
            larder::Migrator::open_with_dir(&db.url(), &migrations)
                .and_then(|mut m| m.revert_all())
                .expect("empty the database");
            let seed = ["--seed", "30,60,300"];
            let first = Server::spawn(&db.url(), &seed);
            let second = Server::spawn(&db.url(), &seed);
            // Both waited for before either is judged: none is left running.
            let (first, second) = (Server::try_ready(first), Server::try_ready(second));
            let (first, second) = (first.unwrap(), second.unwrap());
            let front = first.get("/");
            assert_eq!(front.0, 200, "round {round} on {:?}", target.backend);
            assert_eq!(second.get("/"), front, "round {round}");
            seed_is_not_repeated(target, &db);
        }
    });
}

fn seed_is_not_repeated(target: &Target, db: &TestDb) {
    use diesel::prelude::*;
    use larder_blog::schema::users;
    let users: i64 = db
        .store
        .users()
        .run(None, |conn| {
            larder::with_connection!(conn, |c| users::table.count().get_result(c))
        })
        .unwrap();
    // One seed of 30 users, though two servers started on the database.
    assert_eq!(users, 30, "on {:?}", target.backend);
}

fn ids_on_front_page(front: &str) -> Vec<i64> {
    front
        .split("href=\"/posts/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next()?.parse().ok())
        .collect()
}

/// SIGTERM lets in-flight requests finish and ends the process with success.
/// Slowloris: a client that sends half a request head and then nothing
/// must lose its connection within the server's header timeout (10 s), not
/// hold it (a file descriptor, a task) for ever, and a SIGTERM meanwhile
/// must still stop the server.
#[test]
fn a_client_that_never_finishes_its_request_head_is_cut_off() {
    use std::io::{Read, Write};
    let db = common::sqlite().fresh();
    let mut server = Server::start(&db.url(), &["--seed", "0,0,0"]);
    let half_a_head = || {
        let addr = server.base.trim_start_matches("http://");
        let mut slow = std::net::TcpStream::connect(addr).expect("connect");
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .expect("half a head");
        slow.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        slow
    };
    let mut slow = half_a_head();
    let started = std::time::Instant::now();
    assert_eq!(server.get("/").0, 200, "others are served meanwhile");
    let read = slow.read_to_end(&mut Vec::new());
    assert!(
        read.is_ok() || started.elapsed() < Duration::from_secs(19),
        "the half-sent request still held its connection after {:?}",
        started.elapsed()
    );
    let _slow = half_a_head();
    // Let the server read the half head before it is told to stop.
    std::thread::sleep(Duration::from_millis(200));
    terminate(&server);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.child.try_wait().expect("try_wait").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGTERM did not stop a server holding a half-sent request"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_shuts_the_server_down_gracefully() {
    let db = common::sqlite().fresh();
    let mut server = Server::start(&db.url(), &["--seed", "2,2,2"]);
    assert_eq!(server.get("/").0, 200);
    terminate(&server);
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// From the moment the server says it listens, SIGTERM stops it gracefully:
/// a deployment that stops a server as soon as it is up (a rollback, a
/// failed health check elsewhere) must not find it killed by the signal.
/// (The handlers were installed only once axum polled its shutdown future,
/// on a task of its own: a signal sent at once killed the process.)
#[test]
fn sigterm_right_after_start_up_is_graceful_too() {
    let db = common::sqlite().fresh();
    let mut server = Server::start(&db.url(), &["--seed", "2,2,2"]);
    terminate(&server);
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

fn terminate(server: &Server) {
    let pid = i32::try_from(server.child.id()).unwrap();
    // SAFETY: sends a signal to our own child process, which is still running.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

/// A port already taken is a start-up error that changes nothing: the
/// server exits non-zero before it opens the database, so no SQLite file is
/// created, migrated or seeded for a server that never served.
#[test]
fn a_taken_port_fails_the_start_before_the_database_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blog.db");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_larder-blog"))
        .args(["--url", &format!("sqlite://{}", file.display())])
        .args(["serve", "--listen", &addr, "--seed", "20,40,80"])
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .expect("run larder-blog serve");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("Address already in use"), "{err}");
    assert!(!file.exists(), "the database was created: {err}");
}
