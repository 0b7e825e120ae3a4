//! Bad input gets a clear, typed error and changes nothing.

mod common;

use common::{each_backend, post, user};
use diesel::prelude::*;
use larder::{ConflictKind, Error, Store};
use larder_blog::prelude::*;
use larder_blog::schema::{posts, users};
use larder_blog::{NewComment, NewPost, NewUser, UserChanges};

fn users_with_email(store: &Store, email: &str) -> usize {
    let email = email.to_owned();
    store
        .users()
        .query(move |conn| {
            let query = users::table.filter(users::email.eq(email));
            larder::with_connection!(conn, |c| query.load(c))
        })
        .unwrap()
        .len()
}

#[test]
fn a_duplicate_email_is_a_conflict_and_writes_nothing() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let err = db
            .store
            .users()
            .create(NewUser {
                name: "impostor".into(),
                email: ann.email.clone(),
            })
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Conflict {
                    table: Some("users"),
                    kind: ConflictKind::Unique,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("users"), "{err}");
        assert_eq!(users_with_email(&db.store, &ann.email), 1);
    });
}

#[test]
fn an_update_to_a_taken_email_is_a_conflict_and_changes_nothing() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let bob = user(&db.store, "bob");
        let changes = UserChanges {
            email: Some(ann.email.clone()),
            name: Some("renamed".into()),
        };
        let err = db.store.users().update(bob.id, changes).unwrap_err();
        assert!(
            matches!(err, Error::Conflict { id: Some(id), .. } if id == bob.id),
            "{err:?}"
        );
        assert_eq!(db.store.users().get(bob.id).unwrap().unwrap().name, "bob");
    });
}

#[test]
fn a_post_for_a_missing_author_is_a_conflict_and_writes_nothing() {
    each_backend(|target| {
        let db = target.fresh();
        let err = db
            .store
            .posts()
            .create(NewPost {
                author_id: 999,
                title: "orphan".into(),
                body: "b".into(),
            })
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Conflict {
                    table: Some("posts"),
                    kind: ConflictKind::ForeignKey,
                    ..
                }
            ),
            "{err:?}"
        );
        let count: i64 = db
            .store
            .posts()
            .query(|conn| larder::with_connection!(conn, |c| posts::table.load(c)))
            .unwrap()
            .len() as i64;
        assert_eq!(count, 0);
    });
}

#[test]
fn a_comment_on_a_missing_post_is_a_conflict() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let err = db
            .store
            .comments()
            .create(NewComment {
                post_id: 12345,
                author_id: ann.id,
                body: "c".into(),
            })
            .unwrap_err();
        assert!(err.is_conflict(), "{err:?}");
    });
}

#[test]
fn missing_rows_are_not_found_or_none() {
    each_backend(|target| {
        let db = target.fresh();
        for id in [0, -1, i64::MIN, i64::MAX, 42] {
            assert!(db.store.users().get(id).unwrap().is_none());
            assert!(!db.store.posts().delete(id).unwrap());
            let err = db
                .store
                .users()
                .update(id, UserChanges::default())
                .unwrap_err();
            assert!(
                matches!(err, Error::NotFound { table: "users", id: got } if got == id),
                "{err:?}"
            );
        }
    });
}

#[test]
fn hostile_text_is_stored_and_returned_verbatim() {
    each_backend(|target| {
        let db = target.fresh();
        let nasty = "Robert'); DROP TABLE users;-- \" \\ % _ ünï € 🦀";
        let ann = db
            .store
            .users()
            .create(NewUser {
                name: nasty.into(),
                email: "x'or'1'='1@example.org".into(),
            })
            .unwrap();
        db.store.clear_cache();
        let loaded = db.store.users().get(ann.id).unwrap().unwrap();
        assert_eq!(loaded.name, nasty);
        assert_eq!(loaded.email, "x'or'1'='1@example.org");
        let p = post(&db.store, &ann, "");
        let big = "x".repeat(1 << 20);
        let changes = larder_blog::PostChanges {
            body: Some(big.clone()),
            ..Default::default()
        };
        db.store.posts().update(p.id, changes).unwrap();
        db.store.clear_cache();
        let p = db.store.posts().get(p.id).unwrap().unwrap();
        assert_eq!((p.title.as_str(), p.body.len()), ("", big.len()));
    });
}

/// A NUL character is text to SQLite and MySQL, but PostgreSQL cannot store it:
/// there it must be a typed error that writes nothing.
#[test]
fn a_nul_character_round_trips_or_is_a_typed_error() {
    each_backend(|target| {
        let db = target.fresh();
        let name = "before\u{0}after".to_owned();
        let email = "nul@example.org";
        match db.store.users().create(NewUser {
            name: name.clone(),
            email: email.into(),
        }) {
            Ok(user) => {
                db.store.clear_cache();
                assert_eq!(db.store.users().get(user.id).unwrap().unwrap().name, name);
            }
            Err(err) => {
                assert!(
                    matches!(
                        err,
                        Error::InvalidValue {
                            table: Some("users"),
                            ..
                        }
                    ),
                    "{err:?}"
                );
                assert_eq!(err.status_code(), 422);
                assert_eq!(users_with_email(&db.store, email), 0);
            }
        }
    });
}

/// A value its column cannot hold (PostgreSQL: a NUL character; MySQL and
/// MariaDB in their default strict mode: text over a `TEXT` column's 65,535
/// bytes) is the caller's bad input, not the server's failure: a typed
/// `Error::InvalidValue` a web handler answers with 422, and nothing written,
/// on create and on update alike.
#[test]
fn a_value_its_column_cannot_hold_is_an_invalid_value_error() {
    each_backend(|target| {
        let db = target.fresh();
        let bad = match db.backend {
            larder::Backend::Postgres => "a NUL: \u{0}".to_owned(),
            larder::Backend::Mysql => "x".repeat(70_000),
            _ => return, // SQLite stores both
        };
        let ann = user(&db.store, "ann");
        let kept = post(&db.store, &ann, "kept");
        let is_invalid_value = |err: &Error| {
            matches!(
                err,
                Error::InvalidValue {
                    table: Some("posts"),
                    ..
                }
            ) && err.status_code() == 422
                && !err.is_retryable()
        };
        let changes = larder_blog::PostChanges {
            title: Some(bad.clone()),
            ..Default::default()
        };
        let err = db.store.posts().update(kept.id, changes).unwrap_err();
        assert!(is_invalid_value(&err), "update: {err:?}");
        let err = db
            .store
            .posts()
            .create(NewPost {
                author_id: ann.id,
                title: bad,
                body: "body".into(),
            })
            .unwrap_err();
        assert!(is_invalid_value(&err), "create: {err:?}");
        db.store.clear_cache();
        assert_eq!(
            db.store.posts().get(kept.id).unwrap().unwrap().title,
            "kept"
        );
        assert_eq!(db.store.posts().by_author(ann.id).unwrap().len(), 1);
    });
}

#[test]
fn unusable_urls_are_invalid_url_errors() {
    for url in [
        "",
        "ftp://host/db",
        "redis://localhost",
        "sqlite://:memory:",
        "/no/such/dir/blog.db",
    ] {
        let err = Store::open(url).unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err:?}");
    }
    let err = Store::open("sqlite:///no/such/dir/blog.db").unwrap_err();
    assert!(err.to_string().contains("/no/such/dir"), "{err}");
}

/// SQLite URI filenames (`file:…`, which the README lists) that open an
/// in-memory database or, with an empty path, a private temporary one: each
/// pooled connection would see its own empty database, so migrations applied
/// on one were missing on the next (`larder database setup --database-url
/// file:` reported them applied, to a database gone at exit). Refused as
/// `sqlite://:memory:` is.
#[test]
fn sqlite_uri_filenames_of_a_database_per_connection_are_invalid_url_errors() {
    for url in [
        "file::memory:",
        "file::memory:?cache=shared",
        "sqlite:file::memory:",
        "file:",
        "file:?mode=rwc",
        "sqlite:file://localhost",
    ] {
        let err = Store::open(url).unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err:?}");
    }
}

#[test]
fn passwords_never_appear_in_errors() {
    for url in [
        "postgres://app:pw-s3cret@db.example:5432/blog",
        "mysql://root:pw-s3cret@localhost/blog",
        "postgres://db/blog?password=pw-s3cret",
        "gopher://app:pw-s3cret@host/x",
    ] {
        let err = Store::open(url).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("pw-s3cret"), "{shown}");
        let builder = format!("{:?}", Store::builder(url));
        assert!(!builder.contains("pw-s3cret"), "{builder}");
    }
}

#[test]
fn out_of_range_settings_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("x.db").display().to_string();
    let err = Store::builder(&url).pool_size(0).build().unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    let err = Store::builder(&url)
        .connection_timeout(std::time::Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
}

#[test]
fn an_entity_not_registered_at_build_is_registered_on_first_use() {
    each_backend(|target| {
        #[derive(Debug)]
        struct Unknown;
        impl larder::Entity for Unknown {
            const TABLE: &'static str = "unknown";
            type New = ();
            type Changes = ();
            fn id(&self) -> i64 {
                0
            }
            fn find(_: &mut larder::Connection, _: i64) -> QueryResult<Option<Unknown>> {
                Ok(None)
            }
            fn insert(_: &mut larder::Connection, _: &()) -> QueryResult<Unknown> {
                Ok(Unknown)
            }
            fn update(_: &mut larder::Connection, _: i64, _: &()) -> QueryResult<Option<Unknown>> {
                Ok(None)
            }
            fn delete(_: &mut larder::Connection, _: i64) -> QueryResult<bool> {
                Ok(false)
            }
        }
        let db = target.fresh();
        assert!(!db.store.stats().entities.contains_key("unknown"));
        assert!(db.store.repo::<Unknown>().get(1).unwrap().is_none());
        assert!(db.store.stats().entities.contains_key("unknown"));
        let tx = db.store.begin().unwrap();
        assert!(tx.repo::<Unknown>().get(1).unwrap().is_none());
    });
}

/// A timeout longer than the databases can wait (SQLite reads a busy
/// timeout past 2³¹ − 1 ms as zero; `Instant` arithmetic on `Duration::MAX`
/// panics) is a config error, never a panic or a silent zero.
#[test]
fn timeouts_too_long_to_honour_are_config_errors() {
    use std::time::Duration;
    type Setter = fn(larder::StoreBuilder, Duration) -> larder::StoreBuilder;
    let setters: [(&str, Setter); 3] = [
        ("connection_timeout", |b, t| b.connection_timeout(t)),
        ("busy_timeout", |b, t| b.busy_timeout(t)),
        ("lock_timeout", |b, t| b.lock_timeout(t)),
    ];
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("x.db").display().to_string();
    for (name, set) in setters {
        for too_long in [Duration::MAX, Duration::from_secs(30 * 24 * 3600)] {
            let built = std::panic::catch_unwind(|| set(Store::builder(&url), too_long).build());
            let err = built
                .unwrap_or_else(|_| panic!("{name}({too_long:?}) panicked"))
                .expect_err(name);
            assert!(
                matches!(err, Error::InvalidConfig { .. }),
                "{name}: {err:?}"
            );
            assert!(err.to_string().contains(name), "{err}");
        }
        let longest = Duration::from_millis(i32::MAX as u64);
        set(Store::builder(&url), longest)
            .build()
            .unwrap_or_else(|err| panic!("{name}({longest:?}): {err}"));
    }
}

/// A pool or a cache too large to hold (its bookkeeping overflows, or is
/// allocated up front beyond any memory) is a config error naming the
/// setting, never a panic, nor an aborted process when the first `get`
/// makes the cache.
#[test]
fn sizes_too_large_to_hold_are_config_errors() {
    use larder_blog::User;
    type Setter = fn(larder::StoreBuilder) -> larder::StoreBuilder;
    let setters: [(&str, Setter); 5] = [
        ("query_cache_capacity", |b| {
            b.query_cache_capacity(usize::MAX)
        }),
        ("cache_capacity", |b| {
            b.cache_capacity(usize::MAX).entity::<User>()
        }),
        ("cache_capacity", |b| b.cache_capacity(usize::MAX)),
        ("cache_capacity", |b| {
            b.entity_with_capacity::<User>(usize::MAX)
        }),
        ("pool_size", |b| b.pool_size(u32::MAX)),
    ];
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("x.db").display().to_string();
    for (name, set) in setters {
        let built = std::panic::catch_unwind(|| {
            let store = set(Store::builder(&url).coherence(false)).build()?;
            store.repo::<User>().get(1) // the cache of an entity not registered is made now
        });
        let err = built
            .unwrap_or_else(|_| panic!("{name} panicked"))
            .expect_err(name);
        assert!(
            matches!(err, Error::InvalidConfig { .. }),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
}

/// Key column names are no part of the triggers' names: a key column as
/// long as the database allows (60 bytes here; PostgreSQL takes 63, MySQL
/// 64), which the derive and the key read before a write accept, is captured
/// too, and a change reports its value.
#[test]
fn a_key_column_as_long_as_the_database_allows_is_captured() {
    each_backend(|target| {
        let db = target.fresh();
        let column = format!("owner_{}", "x".repeat(54));
        db.raw(&format!(
            "CREATE TABLE owned (id BIGINT PRIMARY KEY, {column} BIGINT NOT NULL)"
        ));
        let sql = larder::capture_sql_with_keys(db.backend, "owned", &[&column])
            .unwrap_or_else(|err| panic!("{}-byte key column refused: {err}", column.len()));
        db.raw(&sql.up);
        db.raw(&format!("INSERT INTO owned (id, {column}) VALUES (1, 7)"));
        db.raw(&sql.down);
    });
}

/// A table name `capture_sql` accepts gets triggers the database takes:
/// MySQL names a trigger in at most 64 bytes, and larder's trigger names add
/// 25 to the table's. A name it cannot capture is refused up front, never
/// half installed (MySQL commits each `CREATE TRIGGER` on its own).
#[test]
fn every_table_name_capture_sql_accepts_can_be_captured() {
    each_backend(|target| {
        let db = target.fresh();
        for length in [39, 40] {
            let table = format!("captured_{}", "x".repeat(length - 9));
            db.raw(&format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY)"));
            match larder::capture_sql(db.backend, &table) {
                Ok(sql) => {
                    db.raw(&sql.up);
                    db.raw(&sql.down);
                }
                Err(err) => assert!(
                    matches!(err, Error::InvalidConfig { .. }) && length > 39,
                    "{table}: {err}"
                ),
            }
        }
    });
}

/// `Migrator::lock_timeout` takes any `Duration`, and its docs set no bound:
/// a runner told to wait "for ever" (`Duration::MAX`) behind another one
/// must wait, then migrate, never panic on `Instant` arithmetic.
#[test]
fn a_migrator_told_to_wait_for_ever_waits_and_migrates() {
    use std::time::Duration;
    each_backend(|target| {
        let db = target.fresh();
        let (taken, is_taken) = std::sync::mpsc::channel();
        let store = db.store.clone();
        let releaser = std::thread::spawn(move || {
            let held = store.lock("larder.migrations").unwrap();
            taken.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        is_taken.recv().unwrap();
        let mut migrator = larder::Migrator::open(&db.url())
            .unwrap()
            .lock_timeout(Duration::MAX);
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| migrator.run()));
        releaser.join().unwrap();
        let ran = ran.unwrap_or_else(|_| panic!("{:?}: lock_timeout(MAX) panicked", db.backend));
        ran.unwrap_or_else(|err| panic!("{:?}: {err}", db.backend));
    });
}

/// `capture_sql` refuses larder's own tables, and `capture_sql_with_keys`
/// refuses `id` and a column given twice. SQLite and MySQL read names in any
/// case (MySQL's columns always, its tables where `lower_case_table_names`
/// is set): `LARDER_CHANGES` is the change log there, and `ID` the id, so
/// their case variants must be refused alike.
#[test]
fn capture_sql_refuses_case_variants_of_the_names_it_refuses() {
    use larder::Backend;
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::Mysql] {
        for own in [
            "LARDER_CHANGES",
            "Larder_Lock_Tokens",
            "larder_Migration_Attempts",
        ] {
            let refused = larder::capture_sql(backend, own);
            assert!(
                matches!(refused, Err(Error::InvalidConfig { .. })),
                "{backend:?}: {own:?} accepted"
            );
        }
        for keys in [&["ID"][..], &["Id"], &["post_id", "POST_ID"]] {
            let refused = larder::capture_sql_with_keys(backend, "comments", keys);
            assert!(
                matches!(refused, Err(Error::InvalidConfig { .. })),
                "{backend:?}: {keys:?} accepted"
            );
        }
    }
}
