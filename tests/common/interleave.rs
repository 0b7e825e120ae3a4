//! Test doubles for interleavings: a latch between threads, and an entity on
//! the users table whose loader runs test code after reading its row.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A one-shot signal between threads.
pub struct Latch {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Latch {
    pub const fn new() -> Latch {
        Latch {
            open: Mutex::new(false),
            cv: Condvar::new(),
        }
    }

    pub fn reset(&self) {
        *self.open.lock().unwrap() = false;
    }

    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }

    pub fn wait(&self) {
        let guard = self.open.lock().unwrap();
        let (_guard, timeout) = self
            .cv
            .wait_timeout_while(guard, Duration::from_secs(30), |open| !*open)
            .unwrap();
        assert!(!timeout.timed_out(), "latch never opened");
    }
}

/// Declares an entity on the users table whose loader runs `$after_read`
/// after reading the row, inside the database call.
#[macro_export]
macro_rules! user_entity {
    ($name:ident, $after_read:expr) => {
        #[derive(Debug)]
        struct $name(larder_blog::User);

        impl larder::Entity for $name {
            const TABLE: &'static str = "users";
            type New = larder_blog::NewUser;
            type Changes = larder_blog::UserChanges;

            fn id(&self) -> i64 {
                self.0.id
            }

            fn find(conn: &mut larder::Connection, id: i64) -> diesel::QueryResult<Option<$name>> {
                let row = <larder_blog::User as larder::Entity>::find(conn, id)?;
                $after_read();
                Ok(row.map($name))
            }

            fn insert(
                conn: &mut larder::Connection,
                new: &larder_blog::NewUser,
            ) -> diesel::QueryResult<$name> {
                <larder_blog::User as larder::Entity>::insert(conn, new).map($name)
            }

            fn update(
                conn: &mut larder::Connection,
                id: i64,
                changes: &larder_blog::UserChanges,
            ) -> diesel::QueryResult<Option<$name>> {
                Ok(<larder_blog::User as larder::Entity>::update(conn, id, changes)?.map($name))
            }

            fn delete(conn: &mut larder::Connection, id: i64) -> diesel::QueryResult<bool> {
                <larder_blog::User as larder::Entity>::delete(conn, id)
            }
        }
    };
}

/// Set to make the next dropped entity of [`panicky_user_entity!`] panic:
/// an application's `Drop` with a bug, run as the cache lets a row go.
pub static PANIC_ON_DROP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Declares an entity on the users table whose destructor panics once
/// [`PANIC_ON_DROP`] is set (which it clears).
#[macro_export]
macro_rules! panicky_user_entity {
    ($name:ident) => {
        user_entity!($name, || {});

        impl Drop for $name {
            fn drop(&mut self) {
                use std::sync::atomic::Ordering;
                if $crate::common::interleave::PANIC_ON_DROP.swap(false, Ordering::SeqCst) {
                    panic!("an entity's destructor panics");
                }
            }
        }
    };
}
