//! `#[derive(larder::Entity)]` on an application's own table: the entity is
//! cached, written and invalidated like the blog's on every backend, and an
//! insert returns its own row even when a trigger inserts into another table.

mod common;

use larder_blog::prelude::*;
use std::sync::Arc;

use common::{each_backend, post, serial_key, user};
use diesel::prelude::*;
use larder::{Backend, Entity};

/// The application's schema, a module of its own so that the derive's
/// `table` is a path.
mod schema {
    diesel::table! {
        labels (id) {
            id -> BigInt,
            post_id -> BigInt,
            name -> Text,
        }
    }

    diesel::table! {
        label_audit (id) {
            id -> BigInt,
            label_id -> BigInt,
        }
    }
}
use schema::{label_audit, labels};

#[derive(Debug, PartialEq, Queryable, larder::Entity)]
#[larder(table = schema::labels, new = NewLabel, changes = LabelChanges, deleted_with = ["posts"])]
struct Label {
    id: i64,
    post_id: i64,
    name: String,
}

#[derive(Insertable)]
#[diesel(table_name = labels)]
struct NewLabel {
    post_id: i64,
    name: String,
}

#[derive(AsChangeset, Default)]
#[diesel(table_name = labels)]
struct LabelChanges {
    name: Option<String>,
}

fn new_label(post_id: i64, name: &str) -> NewLabel {
    NewLabel {
        post_id,
        name: name.into(),
    }
}

/// A database with the blog's tables and `labels`, whose rows go with their post.
fn labels_db(target: &common::Target) -> common::TestDb {
    let db = target.fresh_with(|b| b.entity::<Label>());
    db.raw(&format!(
        "CREATE TABLE labels (id {}, post_id BIGINT NOT NULL, name TEXT NOT NULL, \
         FOREIGN KEY (post_id) REFERENCES posts (id) ON DELETE CASCADE)",
        serial_key(db.backend)
    ));
    db
}

#[test]
fn the_derive_declares_the_table_and_its_parents() {
    assert_eq!(Label::TABLE, "labels");
    assert_eq!(Label::DELETED_WITH, ["posts"]);
}

/// `entity!`'s primary-key load binds no `LIMIT` (SQLite re-prepares a
/// statement with a bound LIMIT every time it is bound again).
#[test]
fn a_derived_entity_loads_by_key_without_a_limit() {
    each_backend(|target| {
        let db = labels_db(target);
        let ann = user(&db.store, "ann");
        let p = post(&db.store, &ann, "p");
        let rust = db
            .store
            .repo::<Label>()
            .create(new_label(p.id, "rust"))
            .unwrap();
        let (found, sent) =
            common::statements_sent(&db, |conn| Label::find(conn, rust.id).unwrap());
        assert_eq!(found.map(|l| l.id), Some(rust.id));
        assert_eq!(sent.len(), 1, "one statement per load: {sent:?}");
        assert!(!sent[0].to_uppercase().contains("LIMIT"), "{}", sent[0]);
    });
}

/// `entity!`'s writes keep their prepared statements: diesel prepares an
/// `UPDATE` or an `INSERT` again on every call otherwise, and on SQLite that
/// compiles the table's triggers too (a fifth of an update's time).
#[test]
fn a_derived_entity_prepares_each_write_once_per_connection() {
    each_backend(|target| {
        let db = labels_db(target);
        let ann = user(&db.store, "ann");
        let p = post(&db.store, &ann, "p");
        let (written, prepared) = common::statements_prepared(&db, |conn| {
            let mut written = Vec::new();
            for name in ["a", "b", "c"] {
                let label = Label::insert(conn, &new_label(p.id, name)).unwrap();
                for rename in ["x", "y"] {
                    let changes = LabelChanges {
                        name: Some(format!("{name}{rename}")),
                    };
                    written.push(Label::update(conn, label.id, &changes).unwrap().unwrap());
                }
            }
            written
        });
        let names: Vec<_> = written.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["ax", "ay", "bx", "by", "cx", "cy"]);
        common::assert_each_write_prepared_once(&db, &prepared);
    });
}

#[test]
fn a_derived_entity_is_cached_written_and_invalidated() {
    each_backend(|target| {
        let db = labels_db(target);
        let ann = user(&db.store, "ann");
        let p = post(&db.store, &ann, "p");
        let labels = db.store.repo::<Label>();

        let rust = labels.create(new_label(p.id, "rust")).unwrap();
        assert_eq!((rust.post_id, rust.name.as_str()), (p.id, "rust"));
        assert!(
            Arc::ptr_eq(&labels.get(rust.id).unwrap().unwrap(), &rust),
            "a second get must be served from the cache"
        );

        let renamed = labels
            .update(
                rust.id,
                LabelChanges {
                    name: Some("Rust".into()),
                },
            )
            .unwrap();
        assert_eq!(renamed.name, "Rust");
        assert_eq!(labels.get(rust.id).unwrap().unwrap().name, "Rust");
        let unchanged = labels.update(rust.id, LabelChanges::default()).unwrap();
        assert_eq!(
            *unchanged, *renamed,
            "an empty changeset leaves the row as it is"
        );

        let locks = db
            .store
            .transaction(|tx| tx.repo::<Label>().create(new_label(p.id, "locks")))
            .unwrap();
        let both = labels.get_many(&[locks.id, 999_999, rust.id]).unwrap();
        let names: Vec<&str> = both.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["locks", "Rust"], "the rows of the ids, in order");
        assert!(Arc::ptr_eq(
            &both[0],
            &labels.get(locks.id).unwrap().unwrap()
        ));

        assert!(labels.delete(locks.id).unwrap());
        assert!(labels.get(locks.id).unwrap().is_none());
        assert!(!labels.delete(locks.id).unwrap());

        // labels.post_id cascades from posts: DELETED_WITH empties the cache.
        assert!(labels.cached(rust.id).is_some());
        assert!(db.store.posts().delete(p.id).unwrap());
        assert!(
            labels.cached(rust.id).is_none(),
            "deleting a post must empty the label cache"
        );
        assert!(labels.get(rust.id).unwrap().is_none());
    });
}

/// An audit table whose ids run far ahead of `labels`' (from 1001), filled by
/// a trigger on every insert into `labels`.
fn audit_trigger_sql(backend: Backend) -> Vec<String> {
    let table = format!(
        "CREATE TABLE label_audit (id {}, label_id BIGINT NOT NULL)",
        serial_key(backend)
    );
    match backend {
        Backend::Sqlite => vec![
            table,
            "INSERT INTO label_audit (id, label_id) VALUES (1000, 0)".into(),
            "CREATE TRIGGER labels_audit AFTER INSERT ON labels \
             BEGIN INSERT INTO label_audit (label_id) VALUES (NEW.id); END"
                .into(),
        ],
        Backend::Postgres => vec![
            table,
            "SELECT setval('label_audit_id_seq', 1000)".into(),
            "CREATE FUNCTION label_audit() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN INSERT INTO label_audit (label_id) VALUES (NEW.id); RETURN NEW; END $$"
                .into(),
            "CREATE TRIGGER labels_audit AFTER INSERT ON labels \
             FOR EACH ROW EXECUTE FUNCTION label_audit()"
                .into(),
        ],
        _ => vec![
            format!("{table} AUTO_INCREMENT = 1001"),
            "CREATE TRIGGER labels_audit AFTER INSERT ON labels \
             FOR EACH ROW INSERT INTO label_audit (label_id) VALUES (NEW.id)"
                .into(),
        ],
    }
}

/// The insert must return the row it inserted, not the one a trigger put in
/// another table: an insert that read its id back with PostgreSQL's
/// `lastval()` would get the audit row's id (1001) and find no such label.
#[test]
fn an_insert_returns_its_own_row_when_a_trigger_inserts_into_another_table() {
    each_backend(|target| {
        let db = labels_db(target);
        for sql in audit_trigger_sql(db.backend) {
            db.raw(&sql);
        }
        let ann = user(&db.store, "ann");
        let p = post(&db.store, &ann, "p");
        let labels = db.store.repo::<Label>();

        let rust = labels.create(new_label(p.id, "rust")).unwrap();
        let locks = db
            .store
            .transaction(|tx| tx.repo::<Label>().create(new_label(p.id, "locks")))
            .unwrap();

        let mut conn = larder::Connection::establish(&db.url()).unwrap();
        let audit: Vec<(i64, i64)> = larder::with_connection!(&mut conn, |c| label_audit::table
            .select((label_audit::id, label_audit::label_id))
            .filter(label_audit::label_id.ne(0))
            .order(label_audit::id)
            .load(c))
        .unwrap();
        assert_eq!(
            audit,
            [(1001, rust.id), (1002, locks.id)],
            "the trigger ran, from its own sequence"
        );
        let stored: Vec<(i64, String)> = larder::with_connection!(&mut conn, |c| labels::table
            .select((labels::id, labels::name))
            .order(labels::id)
            .load(c))
        .unwrap();
        assert_eq!(
            stored,
            [(rust.id, "rust".to_owned()), (locks.id, "locks".to_owned())],
            "each create returned the row it inserted"
        );
        assert!(Arc::ptr_eq(&labels.get(rust.id).unwrap().unwrap(), &rust));
    });
}

/// A diesel table whose SQL name is not its module's (`#[sql_name]`).
mod renamed {
    diesel::table! {
        #[sql_name = "tag_rows"]
        tags (id) {
            id -> BigInt,
            name -> Text,
        }
    }
}

#[test]
fn an_entity_is_named_by_its_tables_sql_name() {
    assert_eq!(Tag::TABLE, "tag_rows");
}

#[derive(Debug, Queryable, larder::Entity)]
#[larder(table = renamed::tags, new = NewTag, changes = TagChanges)]
struct Tag {
    id: i64,
    name: String,
}

#[derive(Insertable)]
#[diesel(table_name = renamed::tags)]
struct NewTag {
    name: String,
}

#[derive(AsChangeset)]
#[diesel(table_name = renamed::tags)]
struct TagChanges {
    name: Option<String>,
}

/// The capture triggers report a change under the table's SQL name, the
/// name `capture_sql` must be given: the entity must be known by it, or a
/// change made elsewhere never reaches its cache (and `uncaptured_tables`
/// looks for a table that does not exist, so nothing warns either).
#[test]
fn a_table_with_its_own_sql_name_hears_changes_made_elsewhere() {
    const BOUND: std::time::Duration = std::time::Duration::from_millis(400);
    each_backend(|target| {
        let db = target.fresh();
        db.raw(&format!(
            "CREATE TABLE tag_rows (id {}, name TEXT NOT NULL)",
            serial_key(db.backend)
        ));
        db.raw(&larder::capture_sql(db.backend, "tag_rows").unwrap().up);
        let store = larder::Store::builder(&db.url())
            .max_staleness(BOUND)
            .entity::<Tag>()
            .build()
            .unwrap();
        let tag = store
            .repo::<Tag>()
            .create(NewTag {
                name: "draft".into(),
            })
            .unwrap();
        std::thread::sleep(BOUND); // the store's own insert comes back too
        assert_eq!(
            store.repo::<Tag>().get(tag.id).unwrap().unwrap().name,
            "draft"
        );

        db.raw(&format!(
            "UPDATE tag_rows SET name = 'final' WHERE id = {}",
            tag.id
        ));
        std::thread::sleep(2 * BOUND);
        assert_eq!(
            store.repo::<Tag>().get(tag.id).unwrap().unwrap().name,
            "final",
            "a change made elsewhere must reach the cache"
        );
        let changes = TagChanges {
            name: Some("again".into()),
        };
        let again = store.repo::<Tag>().update(tag.id, changes).unwrap();
        assert_eq!(again.name, "again");
    });
}

/// A table and a key column named by reserved words, quoted by diesel.
mod reserved {
    diesel::table! {
        order (id) {
            id -> BigInt,
            group -> BigInt,
            name -> Text,
        }
    }
}

#[derive(Debug, Queryable, larder::Entity)]
#[larder(table = reserved::order, new = NewOrder, changes = OrderChanges)]
struct Order {
    id: i64,
    #[larder(key)]
    group: i64,
    name: String,
}

#[derive(Insertable)]
#[diesel(table_name = reserved::order)]
struct NewOrder {
    group: i64,
    name: String,
}

#[derive(AsChangeset)]
#[diesel(table_name = reserved::order)]
struct OrderChanges {
    name: Option<String>,
}

/// `capture_sql` accepts `order` and `group` (plain identifiers), so the
/// triggers it writes must run, and so must the key read before an update.
#[test]
fn a_table_and_key_column_named_by_reserved_words_are_captured() {
    const BOUND: std::time::Duration = std::time::Duration::from_millis(400);
    each_backend(|target| {
        let db = target.fresh();
        let q = |name: &str| match db.backend {
            Backend::Mysql => format!("`{name}`"),
            _ => format!("\"{name}\""),
        };
        db.raw(&format!(
            "CREATE TABLE {} (id {}, {} BIGINT NOT NULL, name TEXT NOT NULL)",
            q("order"),
            serial_key(db.backend),
            q("group")
        ));
        let capture = larder::capture_sql_with_keys(db.backend, "order", &["group"]).unwrap();
        db.raw(&capture.up);
        let store = larder::Store::builder(&db.url())
            .max_staleness(BOUND)
            .entity::<Order>()
            .build()
            .unwrap();
        assert!(store.uncaptured_tables().unwrap().is_empty());
        let orders = store.repo::<Order>();
        let order = orders
            .create(NewOrder {
                group: 7,
                name: "new".into(),
            })
            .unwrap();
        let changes = OrderChanges {
            name: Some("paid".into()),
        };
        assert_eq!(orders.update(order.id, changes).unwrap().name, "paid");
        std::thread::sleep(BOUND); // the store's own writes come back too
        assert_eq!(orders.get(order.id).unwrap().unwrap().name, "paid");

        db.raw(&format!(
            "UPDATE {} SET name = 'sent' WHERE id = {}",
            q("order"),
            order.id
        ));
        std::thread::sleep(2 * BOUND);
        assert_eq!(orders.get(order.id).unwrap().unwrap().name, "sent");
        db.raw(&capture.down);
    });
}

/// A key column whose SQL name is not its field's (`#[sql_name]`).
mod pinned {
    diesel::table! {
        pins (id) {
            id -> BigInt,
            #[sql_name = "board"]
            board_id -> BigInt,
            name -> Text,
        }
    }
}

#[derive(Debug, Queryable, larder::Entity)]
#[larder(table = pinned::pins, new = NewPin, changes = PinChanges)]
struct Pin {
    id: i64,
    #[larder(key)]
    board_id: i64,
    name: String,
}

#[derive(Insertable)]
#[diesel(table_name = pinned::pins)]
struct NewPin {
    board_id: i64,
    name: String,
}

#[derive(AsChangeset)]
#[diesel(table_name = pinned::pins)]
struct PinChanges {
    name: Option<String>,
}

/// A key column is known by its SQL name, the name its capture triggers and
/// the key read before a write use: an update must work, and a list of one
/// board's pins must be retired by a pin added elsewhere.
#[test]
fn a_key_column_with_its_own_sql_name_is_read_and_captured() {
    const BOUND: std::time::Duration = std::time::Duration::from_millis(400);
    each_backend(|target| {
        let db = target.fresh();
        db.raw(&format!(
            "CREATE TABLE pins (id {}, board BIGINT NOT NULL, name TEXT NOT NULL)",
            serial_key(db.backend)
        ));
        db.raw(
            &larder::capture_sql_with_keys(db.backend, "pins", &["board"])
                .unwrap()
                .up,
        );
        let store = larder::Store::builder(&db.url())
            .max_staleness(BOUND)
            .entity::<Pin>()
            .build()
            .unwrap();
        let pins = store.repo::<Pin>();
        let pin = pins
            .create(NewPin {
                board_id: 7,
                name: "a".into(),
            })
            .unwrap();
        let changes = PinChanges {
            name: Some("b".into()),
        };
        assert_eq!(pins.update(pin.id, changes).unwrap().name, "b");
        std::thread::sleep(BOUND); // the store's own writes come back too
        let board = || {
            let reads = [larder::Read::eq("pins", Pin::KEY_COLUMNS[0], 7)];
            pins.cached_query("pins of board 7", &reads, |conn| {
                let query = pinned::pins::table
                    .filter(pinned::pins::board_id.eq(7))
                    .order(pinned::pins::id);
                larder::with_connection!(conn, |c| query.load(c))
            })
            .unwrap()
        };
        assert_eq!(board().len(), 1);
        db.raw("INSERT INTO pins (board, name) VALUES (7, 'c')");
        std::thread::sleep(2 * BOUND);
        assert_eq!(
            board().len(),
            2,
            "the insert elsewhere must retire the list"
        );
    });
}

/// A table whose SQL name is longer than most: 45 bytes, well within what
/// every backend allows (PostgreSQL 63, MySQL 64).
mod long_named {
    diesel::table! {
        subscription_invoice_line_items_with_discount (id) {
            id -> BigInt,
            invoice_id -> BigInt,
            cents -> BigInt,
        }
    }
}

#[derive(Debug, Queryable, larder::Entity)]
#[larder(table = long_named::subscription_invoice_line_items_with_discount, new = NewLine, changes = LineChanges)]
struct Line {
    id: i64,
    #[larder(key)]
    invoice_id: i64,
    cents: i64,
}

#[derive(Insertable)]
#[diesel(table_name = long_named::subscription_invoice_line_items_with_discount)]
struct NewLine {
    invoice_id: i64,
    cents: i64,
}

#[derive(AsChangeset)]
#[diesel(table_name = long_named::subscription_invoice_line_items_with_discount)]
struct LineChanges {
    cents: Option<i64>,
}

/// The derive accepts the table, so its writes must work: a keyed entity's
/// update and delete read the row's key values first, by the table's name.
#[test]
fn a_keyed_entity_of_a_long_named_table_can_be_updated_and_deleted() {
    each_backend(|target| {
        let db = target.fresh();
        db.raw(&format!(
            "CREATE TABLE subscription_invoice_line_items_with_discount \
             (id {}, invoice_id BIGINT NOT NULL, cents BIGINT NOT NULL)",
            serial_key(db.backend)
        ));
        let lines = db.store.repo::<Line>();
        let line = lines
            .create(NewLine {
                invoice_id: 3,
                cents: 100,
            })
            .unwrap();
        let changes = LineChanges { cents: Some(250) };
        assert_eq!(lines.update(line.id, changes).unwrap().cents, 250);
        assert!(lines.delete(line.id).unwrap());
        assert!(lines.get(line.id).unwrap().is_none());
    });
}
