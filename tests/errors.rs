//! What larder's errors carry on the real backends: the violated constraint's
//! name, the database error as `source()`, and the variants a handler maps to a
//! status (a deadlock is a retryable `Serialization`).

mod common;

use std::error::Error as _;
use std::sync::Barrier;

use common::{each_backend, rename, user};
use diesel::RunQueryDsl;
use larder::{Backend, ConflictKind, Error};
use larder_blog::prelude::*;
use larder_blog::{NewPost, NewUser};

/// The constraint name each backend reports for the blog's `users.email`
/// uniqueness: PostgreSQL's default name, which the MySQL migration also
/// gives it; SQLite names no constraint.
fn email_constraint(backend: Backend) -> Option<&'static str> {
    match backend {
        Backend::Sqlite => None,
        _ => Some("users_email_key"),
    }
}

#[test]
fn a_unique_violation_names_its_constraint_and_chains_to_diesel() {
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
        match &err {
            Error::Conflict {
                table: Some("users"),
                kind: ConflictKind::Unique,
                constraint,
                ..
            } => assert_eq!(
                constraint.as_deref(),
                email_constraint(db.backend),
                "{err:?}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(err.is_conflict() && !err.is_retryable() && !err.is_not_found());
        if let Some(name) = email_constraint(db.backend) {
            assert!(
                err.to_string().starts_with(&format!(
                    "conflict writing users: Unique (constraint {name}): "
                )),
                "{err}"
            );
        }
        let source = err.source().expect("the database error");
        assert!(
            matches!(
                source.downcast_ref::<diesel::result::Error>(),
                Some(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _
                ))
            ),
            "{source:?}"
        );
    });
}

#[test]
fn a_foreign_key_violation_names_its_constraint() {
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
        let expected = match db.backend {
            Backend::Postgres => Some("posts_author_id_fkey"),
            Backend::Mysql => Some("posts_author_fk"),
            _ => None,
        };
        match &err {
            Error::Conflict {
                table: Some("posts"),
                kind: ConflictKind::ForeignKey,
                constraint,
                ..
            } => assert_eq!(constraint.as_deref(), expected, "{err:?}"),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn a_check_violation_is_a_conflict_naming_its_constraint() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let post = common::post(&db.store, &ann, "t");
        let err = db
            .store
            .posts()
            .run(Some(post.id), |conn| {
                larder::with_connection!(conn, |c| diesel::sql_query(
                    "UPDATE posts SET version = 0"
                )
                .execute(c))
            })
            .unwrap_err();
        let expected = match db.backend {
            Backend::Postgres => Some("posts_version_check"),
            Backend::Mysql => Some("posts_version_positive"),
            _ => None,
        };
        match &err {
            Error::Conflict {
                table: Some("posts"),
                kind: ConflictKind::Check,
                constraint,
                ..
            } => assert_eq!(constraint.as_deref(), expected, "{err:?}"),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn a_missing_row_is_not_found() {
    each_backend(|target| {
        let db = target.fresh();
        let err = db.store.users().update(4242, rename("x")).unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
        assert_eq!(err.to_string(), "users 4242 not found");
    });
}

/// Two transactions that each lock the row the other wants next: the
/// database rolls one back, and larder says that running it again can work.
#[test]
fn a_deadlock_is_a_retryable_serialization_error() {
    each_backend(|target| {
        if target.backend == Backend::Sqlite {
            return; // BEGIN IMMEDIATE queues SQLite's writers: they cannot deadlock
        }
        let db = target.fresh_with(|b| b.pool_size(3));
        let ann = user(&db.store, "ann");
        let bob = user(&db.store, "bob");
        let both_locked = Barrier::new(2);
        let results: Vec<larder::Result<()>> = std::thread::scope(|scope| {
            let cross = |first: i64, second: i64| {
                let (store, both_locked) = (&db.store, &both_locked);
                scope.spawn(move || {
                    let tx = store.begin()?;
                    tx.users().update(first, rename("first"))?;
                    both_locked.wait();
                    tx.users().update(second, rename("second"))?;
                    tx.commit()
                })
            };
            let one = cross(ann.id, bob.id);
            let other = cross(bob.id, ann.id);
            vec![one.join().unwrap(), other.join().unwrap()]
        });
        let failed: Vec<&Error> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(failed.len(), 1, "exactly one loses: {results:?}");
        let err = failed[0];
        assert!(
            matches!(
                err,
                Error::Serialization {
                    table: Some("users"),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.is_retryable() && !err.is_conflict(), "{err:?}");
        assert!(err
            .source()
            .is_some_and(|s| s.is::<diesel::result::Error>()));
        common::assert_pool_idle(&db.store);
    });
}
