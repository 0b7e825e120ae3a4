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

/// A table and a key column named in mixed case, with the column types the
/// blog has none of: booleans, floats, a blob, nullable text, and a key
/// column that may be NULL.
mod audit {
    diesel::table! {
        #[sql_name = "AuditEntries"]
        audit_entries (id) {
            id -> BigInt,
            #[sql_name = "OwnerId"]
            owner_id -> Nullable<BigInt>,
            done -> Bool,
            score -> Double,
            ratio -> Nullable<Double>,
            payload -> Binary,
            note -> Nullable<Text>,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Queryable, larder::Entity)]
#[larder(table = audit::audit_entries, new = NewEntry, changes = EntryChanges)]
struct AuditEntry {
    id: i64,
    #[larder(key)]
    owner_id: Option<i64>,
    done: bool,
    score: f64,
    ratio: Option<f64>,
    payload: Vec<u8>,
    note: Option<String>,
}

#[derive(Insertable)]
#[diesel(table_name = audit::audit_entries)]
struct NewEntry {
    owner_id: Option<i64>,
    done: bool,
    score: f64,
    ratio: Option<f64>,
    payload: Vec<u8>,
    note: Option<String>,
}

#[derive(AsChangeset, Default)]
#[diesel(table_name = audit::audit_entries)]
struct EntryChanges {
    owner_id: Option<Option<i64>>,
    done: Option<bool>,
    score: Option<f64>,
    ratio: Option<Option<f64>>,
    payload: Option<Vec<u8>>,
    note: Option<Option<String>>,
}

fn audit_db(target: &common::Target) -> common::TestDb {
    let db = target.fresh();
    let (q, blob) = match db.backend {
        Backend::Mysql => ("`", "LONGBLOB"),
        Backend::Postgres => ("\"", "BYTEA"),
        _ => ("\"", "BLOB"),
    };
    db.raw(&format!(
        "CREATE TABLE {q}AuditEntries{q} (id {}, {q}OwnerId{q} BIGINT NULL, done BOOLEAN NOT NULL, \
         score DOUBLE PRECISION NOT NULL, ratio DOUBLE PRECISION NULL, payload {blob} NOT NULL, \
         note TEXT NULL)",
        serial_key(db.backend)
    ));
    db.raw(
        &larder::capture_sql_with_keys(db.backend, "AuditEntries", &["OwnerId"])
            .unwrap()
            .up,
    );
    db
}

fn new_entry(owner_id: Option<i64>) -> NewEntry {
    NewEntry {
        owner_id,
        done: false,
        score: 0.1 + 0.2,
        ratio: None,
        payload: (0..=255u8).cycle().take(200_000).collect(),
        note: Some("it's \"quoted\", a\\b, ünïcödé, 日本".into()),
    }
}

/// The entries of one owner, cached until a change touches that owner.
fn of_owner(store: &larder::Store, owner: i64) -> Vec<i64> {
    let reads = [larder::Read::eq("AuditEntries", "OwnerId", owner)];
    store
        .repo::<AuditEntry>()
        .cached_query(&format!("owner {owner}"), &reads, |conn| {
            let query = audit::audit_entries::table
                .filter(audit::audit_entries::owner_id.eq(owner))
                .order(audit::audit_entries::id);
            larder::with_connection!(conn, |c| query.load(c))
        })
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect()
}

/// Two stores on one database, standing for two processes: every write one
/// makes, the key column moving from NULL to 7 to 8 and back to NULL, reaches
/// the other's rows and keyed lists, and the rows round-trip whole.
#[test]
fn a_mixed_case_table_of_unusual_columns_stays_coherent_across_two_stores() {
    const BOUND: std::time::Duration = std::time::Duration::from_millis(400);
    each_backend(|target| {
        let db = audit_db(target);
        let open = || {
            larder::Store::builder(&db.url())
                .max_staleness(BOUND)
                .entity::<AuditEntry>()
                .build()
                .unwrap()
        };
        let (a, b) = (open(), open());
        assert!(a.uncaptured_tables().unwrap().is_empty());
        let entry = a.repo::<AuditEntry>().create(new_entry(None)).unwrap();
        let stored = b.repo::<AuditEntry>().get(entry.id).unwrap().unwrap();
        assert_eq!(*stored, *entry, "the row round-trips whole");
        assert_eq!(of_owner(&b, 7), Vec::<i64>::new());

        for (owner, done) in [(Some(7), true), (Some(8), false), (None, true)] {
            let changes = EntryChanges {
                owner_id: Some(owner),
                done: Some(done),
                score: Some(-1.5e300),
                ratio: Some(Some(f64::MIN_POSITIVE)),
                note: Some(None),
                ..Default::default()
            };
            let updated = a.repo::<AuditEntry>().update(entry.id, changes).unwrap();
            assert_eq!((updated.owner_id, updated.done), (owner, done));
            let listed = |v| of_owner(&a, v).contains(&entry.id);
            assert_eq!(listed(7), owner == Some(7), "list of 7 after {owner:?}");
            assert_eq!(listed(8), owner == Some(8), "list of 8 after {owner:?}");
            std::thread::sleep(2 * BOUND);
            let seen = b.repo::<AuditEntry>().get(entry.id).unwrap().unwrap();
            assert_eq!(*seen, *updated, "the other store, after {owner:?}");
            let listed = |v| of_owner(&b, v).contains(&entry.id);
            assert_eq!(
                listed(7),
                owner == Some(7),
                "other store: list of 7 after {owner:?}"
            );
            assert_eq!(
                listed(8),
                owner == Some(8),
                "other store: list of 8 after {owner:?}"
            );
        }
        assert!(a.repo::<AuditEntry>().delete(entry.id).unwrap());
        std::thread::sleep(2 * BOUND);
        assert!(b.repo::<AuditEntry>().get(entry.id).unwrap().is_none());
        drop((a, b));
    });
}

/// Values a column cannot hold (a NUL in PostgreSQL text, 70 kB in a MySQL
/// `TEXT`, a NaN that SQLite stores as NULL, an infinity MySQL refuses) are
/// either stored as given or refused with a typed error (`InvalidValue` or
/// `Conflict`) that changes nothing: no row added, the row and its cached
/// copy as they were.
#[test]
fn values_a_column_cannot_hold_are_typed_errors_and_change_nothing() {
    each_backend(|target| {
        let db = audit_db(target);
        let entries = db.store.repo::<AuditEntry>();
        let entry = entries.create(new_entry(Some(1))).unwrap();
        let count = || {
            let mut conn = larder::Connection::establish(&db.url()).unwrap();
            larder::with_connection!(&mut conn, |c| audit::audit_entries::table
                .count()
                .get_result::<i64>(c))
            .unwrap()
        };
        let fresh_copy = |id| {
            let other = larder::Store::builder(&db.url())
                .coherence(false)
                .build()
                .unwrap();
            let row = other.repo::<AuditEntry>().get(id).unwrap().unwrap();
            AuditEntry::clone(&row)
        };
        let refused = |what: &str, err: larder::Error| {
            assert!(
                matches!(
                    err,
                    larder::Error::InvalidValue { .. } | larder::Error::Conflict { .. }
                ),
                "{what}: {err:?}"
            );
            assert!(matches!(err.status_code(), 409 | 422), "{what}: {err:?}");
        };
        type Spoil = Box<dyn Fn(&mut NewEntry, &mut EntryChanges)>;
        let bad: Vec<(&str, Spoil)> = vec![
            (
                "NUL",
                Box::new(|n, c| {
                    n.note = Some("a\0b".into());
                    c.note = Some(n.note.clone());
                }),
            ),
            (
                "70 kB",
                Box::new(|n, c| {
                    n.note = Some("x".repeat(70_000));
                    c.note = Some(n.note.clone());
                }),
            ),
            (
                "NaN",
                Box::new(|n, c| {
                    n.score = f64::NAN;
                    c.score = Some(n.score);
                }),
            ),
            (
                "infinity",
                Box::new(|n, c| {
                    n.score = f64::INFINITY;
                    c.score = Some(n.score);
                }),
            ),
        ];
        for (what, make) in bad {
            let (mut new, mut changes) = (new_entry(Some(1)), EntryChanges::default());
            make(&mut new, &mut changes);
            let before = (count(), fresh_copy(entry.id));
            let cached = entries.get(entry.id).unwrap().unwrap();
            match entries.create(new) {
                Ok(row) => assert_eq!(fresh_copy(row.id).note, row.note, "{what}"),
                Err(err) => {
                    refused(what, err);
                    assert_eq!(count(), before.0, "{what}: a refused create added a row");
                }
            }
            match entries.update(entry.id, changes) {
                Ok(row) => assert_eq!(row.note, fresh_copy(entry.id).note, "{what}"),
                Err(err) => {
                    refused(what, err);
                    assert_eq!(
                        fresh_copy(entry.id),
                        before.1,
                        "{what}: changed by a refused update"
                    );
                    let now = entries.get(entry.id).unwrap().unwrap();
                    assert!(
                        std::sync::Arc::ptr_eq(&now, &cached),
                        "{what}: the cached row went"
                    );
                }
            }
            // Put the row back as it was for the next value.
            let reset = EntryChanges {
                score: Some(before.1.score),
                note: Some(before.1.note.clone()),
                ..Default::default()
            };
            entries.update(entry.id, reset).unwrap();
        }
    });
}

/// The same SQL table declared twice, as an application does for a slim
/// view of a wide row: two entities share `AuditEntries`.
mod audit_slim {
    diesel::table! {
        #[sql_name = "AuditEntries"]
        entries (id) {
            id -> BigInt,
            done -> Bool,
        }
    }
}

#[derive(Debug, Queryable, larder::Entity)]
#[larder(table = audit_slim::entries, new = SlimDone, changes = SlimDone)]
struct SlimEntry {
    id: i64,
    done: bool,
}

#[derive(Debug, Insertable, AsChangeset)]
#[diesel(table_name = audit_slim::entries)]
struct SlimDone {
    done: bool,
}

/// A write through either entity retires the other's copy of the row and
/// lists, in this store and in another.
#[test]
fn two_entities_of_one_table_retire_each_others_rows_and_lists() {
    const BOUND: std::time::Duration = std::time::Duration::from_millis(400);
    each_backend(|target| {
        let db = audit_db(target);
        let open = || {
            larder::Store::builder(&db.url())
                .max_staleness(BOUND)
                .entity::<SlimEntry>()
                .entity::<AuditEntry>()
                .entity::<SlimEntry>()
                .build()
                .unwrap()
        };
        let (a, b) = (open(), open());
        let entry = a.repo::<AuditEntry>().create(new_entry(Some(7))).unwrap();
        std::thread::sleep(BOUND);
        for store in [&a, &b] {
            assert!(
                !store
                    .repo::<SlimEntry>()
                    .get(entry.id)
                    .unwrap()
                    .unwrap()
                    .done
            );
            assert!(
                !store
                    .repo::<AuditEntry>()
                    .get(entry.id)
                    .unwrap()
                    .unwrap()
                    .done
            );
            assert_eq!(of_owner(store, 7), [entry.id]);
        }
        let slim = a
            .repo::<SlimEntry>()
            .update(entry.id, SlimDone { done: true })
            .unwrap();
        assert!(slim.done);
        assert!(a.repo::<AuditEntry>().get(entry.id).unwrap().unwrap().done);
        std::thread::sleep(2 * BOUND);
        assert!(b.repo::<AuditEntry>().get(entry.id).unwrap().unwrap().done);
        assert!(b.repo::<SlimEntry>().get(entry.id).unwrap().unwrap().done);
        let changes = EntryChanges {
            owner_id: Some(Some(8)),
            done: Some(false),
            ..Default::default()
        };
        a.repo::<AuditEntry>().update(entry.id, changes).unwrap();
        assert!(!a.repo::<SlimEntry>().get(entry.id).unwrap().unwrap().done);
        assert_eq!(of_owner(&a, 7), Vec::<i64>::new());
        std::thread::sleep(2 * BOUND);
        assert!(!b.repo::<SlimEntry>().get(entry.id).unwrap().unwrap().done);
        assert_eq!(of_owner(&b, 7), Vec::<i64>::new());
        assert!(a.repo::<SlimEntry>().delete(entry.id).unwrap());
        assert!(a.repo::<AuditEntry>().get(entry.id).unwrap().is_none());
        assert_eq!(of_owner(&a, 8), Vec::<i64>::new());
        std::thread::sleep(2 * BOUND);
        assert!(b.repo::<AuditEntry>().get(entry.id).unwrap().is_none());
        assert_eq!(of_owner(&b, 8), Vec::<i64>::new());
        drop((a, b));
    });
}

/// Threaded replies: a reply's children go with it (`ON DELETE CASCADE` on
/// its own table), which it declares by naming its own table.
mod threads {
    diesel::table! {
        replies (id) {
            id -> BigInt,
            parent_id -> Nullable<BigInt>,
            body -> Text,
        }
    }
}

#[derive(Debug, Queryable, larder::Entity)]
#[larder(table = threads::replies, new = NewReply, changes = NewReply, deleted_with = ["replies"])]
struct Reply {
    id: i64,
    #[larder(key)]
    parent_id: Option<i64>,
    body: String,
}

#[derive(Debug, Insertable, AsChangeset)]
#[diesel(table_name = threads::replies)]
struct NewReply {
    parent_id: Option<i64>,
    body: String,
}

#[test]
fn a_table_deleted_with_itself_drops_the_children_of_a_deleted_row() {
    each_backend(|target| {
        let db = target.fresh();
        db.raw(&format!(
            "CREATE TABLE replies (id {}, parent_id BIGINT NULL, body TEXT NOT NULL, \
             FOREIGN KEY (parent_id) REFERENCES replies (id) ON DELETE CASCADE)",
            serial_key(db.backend)
        ));
        let replies = db.store.repo::<Reply>();
        let reply = |parent_id, body: &str| {
            replies
                .create(NewReply {
                    parent_id,
                    body: body.into(),
                })
                .unwrap()
        };
        let root = reply(None, "root");
        let child = reply(Some(root.id), "child");
        let grandchild = reply(Some(child.id), "grandchild");
        assert_eq!(replies.get(child.id).unwrap().unwrap().body, "child");
        let children_of = |parent: i64| {
            let reads = [larder::Read::eq("replies", "parent_id", parent)];
            replies
                .cached_query(&format!("children of {parent}"), &reads, |conn| {
                    let query = threads::replies::table
                        .filter(threads::replies::parent_id.eq(parent))
                        .order(threads::replies::id);
                    larder::with_connection!(conn, |c| query.load(c))
                })
                .unwrap()
                .len()
        };
        assert_eq!((children_of(root.id), children_of(child.id)), (1, 1));
        assert!(replies.get(grandchild.id).unwrap().is_some());
        assert!(replies.delete(root.id).unwrap());
        assert!(replies.get(child.id).unwrap().is_none());
        assert!(replies.get(grandchild.id).unwrap().is_none());
        assert_eq!((children_of(root.id), children_of(child.id)), (0, 0));
    });
}

/// A row another program wrote with text that is not UTF-8 (SQLite stores
/// what it is given): reading it is a typed error, not a panic, and other
/// rows are served as usual.
#[test]
fn a_row_that_cannot_be_decoded_is_a_typed_error() {
    let db = common::sqlite().fresh();
    db.raw(
        "CREATE TABLE labels (id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, \
         post_id BIGINT NOT NULL, name TEXT NOT NULL)",
    );
    db.raw("INSERT INTO labels (id, post_id, name) VALUES (1, 1, CAST(X'FF00FE' AS TEXT))");
    db.raw("INSERT INTO labels (id, post_id, name) VALUES (2, 1, 'fine')");
    let labels = db.store.repo::<Label>();
    let undecodable = |err: larder::Error| {
        assert!(
            matches!(
                &err,
                larder::Error::Database {
                    table: Some("labels"),
                    source: diesel::result::Error::DeserializationError(_),
                    ..
                }
            ),
            "{err:?}"
        );
    };
    undecodable(labels.get(1).unwrap_err());
    undecodable(labels.get_many(&[1, 2]).unwrap_err());
    assert_eq!(labels.get(2).unwrap().unwrap().name, "fine");
    let changes = LabelChanges {
        name: Some("mended".into()),
    };
    assert_eq!(labels.update(1, changes).unwrap().name, "mended");
    assert_eq!(labels.get(1).unwrap().unwrap().name, "mended");
}

/// Rows whose ids an application chooses (imported from elsewhere): the
/// extremes of `i64` included.
mod imported {
    diesel::table! {
        accounts (id) {
            id -> BigInt,
            #[sql_name = "ParentId"]
            parent_id -> Nullable<BigInt>,
            name -> Text,
        }
    }
}

#[derive(Debug, Queryable, larder::Entity)]
#[larder(table = imported::accounts, new = NewAccount, changes = AccountChanges)]
struct Account {
    id: i64,
    #[larder(key)]
    parent_id: Option<i64>,
    name: String,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = imported::accounts)]
struct NewAccount {
    id: i64,
    parent_id: Option<i64>,
    name: String,
}

#[derive(Debug, AsChangeset, Default)]
#[diesel(table_name = imported::accounts)]
struct AccountChanges {
    parent_id: Option<Option<i64>>,
    name: Option<String>,
}

#[test]
fn ids_and_key_values_at_the_extremes_of_i64_are_cached_and_heard() {
    const BOUND: std::time::Duration = std::time::Duration::from_millis(400);
    each_backend(|target| {
        let db = target.fresh();
        db.raw(&format!(
            "CREATE TABLE accounts (id {}, {q}ParentId{q} BIGINT NULL, name TEXT NOT NULL)",
            serial_key(db.backend),
            q = if db.is(Backend::Mysql) { "`" } else { "\"" },
        ));
        db.raw(
            &larder::capture_sql_with_keys(db.backend, "accounts", &["ParentId"])
                .unwrap()
                .up,
        );
        let open = || {
            larder::Store::builder(&db.url())
                .max_staleness(BOUND)
                .entity::<Account>()
                .build()
                .unwrap()
        };
        let (a, b) = (open(), open());
        let children = |store: &larder::Store, parent: i64| -> Vec<i64> {
            let reads = [larder::Read::eq("accounts", "ParentId", parent)];
            store
                .repo::<Account>()
                .cached_query(&format!("children of {parent}"), &reads, |conn| {
                    let query = imported::accounts::table
                        .filter(imported::accounts::parent_id.eq(parent))
                        .order(imported::accounts::id);
                    larder::with_connection!(conn, |c| query.load(c))
                })
                .unwrap()
                .iter()
                .map(|a| a.id)
                .collect()
        };
        let (max, min) = (i64::MAX, i64::MIN);
        for (id, parent) in [(max, Some(min)), (min, Some(max)), (-1, None)] {
            let made = a
                .repo::<Account>()
                .create(NewAccount {
                    id,
                    parent_id: parent,
                    name: format!("n{id}"),
                })
                .unwrap();
            assert_eq!((made.id, made.parent_id), (id, parent));
        }
        std::thread::sleep(BOUND);
        for store in [&a, &b] {
            assert_eq!(children(store, min), [max]);
            assert_eq!(children(store, max), [min]);
            assert_eq!(
                store.repo::<Account>().get(min).unwrap().unwrap().name,
                format!("n{min}")
            );
        }
        let moved = AccountChanges {
            parent_id: Some(Some(min)),
            name: Some("moved".into()),
        };
        a.repo::<Account>().update(min, moved).unwrap();
        std::thread::sleep(2 * BOUND);
        for store in [&a, &b] {
            assert_eq!(children(store, min), [min, max]);
            assert_eq!(children(store, max), Vec::<i64>::new());
            assert_eq!(
                store.repo::<Account>().get(min).unwrap().unwrap().name,
                "moved"
            );
        }
        // Id 0: stored as given, except on MySQL, which generates an id for
        // it, past the largest: a typed error there, nothing written.
        let zero = a.repo::<Account>().create(NewAccount {
            id: 0,
            parent_id: None,
            name: "zero".into(),
        });
        match (db.backend, zero) {
            (Backend::Mysql, Err(larder::Error::InvalidValue { .. })) => {
                assert!(a.repo::<Account>().get(0).unwrap().is_none());
            }
            (Backend::Mysql, other) => panic!("{other:?}"),
            (_, zero) => assert_eq!(zero.unwrap().id, 0),
        }
        drop((a, b));
    });
}

/// SQLite keeps what another program wrote, whatever the column's type: a
/// key column holding 7.5 loads as 7 (diesel reads it as an integer), while
/// its text form, which the key read before a write parses, is `7.5`. The
/// row must still be writable, and the lists it joins retired.
#[test]
fn a_key_value_that_is_not_an_integer_in_the_database_still_lets_the_row_be_written() {
    let db = audit_db(&common::sqlite());
    db.raw(
        "INSERT INTO \"AuditEntries\" (id, \"OwnerId\", done, score, payload) \
         VALUES (1, 7.5, 0, 1, X'00'), (2, 'seven', 0, 1, X'00'), (3, 7, 0, 1, X'00')",
    );
    let entries = db.store.repo::<AuditEntry>();
    assert_eq!(of_owner(&db.store, 7), [3]);
    for id in [1, 2] {
        let changes = EntryChanges {
            owner_id: Some(Some(7)),
            ..Default::default()
        };
        assert_eq!(entries.update(id, changes).unwrap().owner_id, Some(7));
    }
    assert_eq!(
        of_owner(&db.store, 7),
        [1, 2, 3],
        "a list of 7 was left stale"
    );
    db.raw("UPDATE \"AuditEntries\" SET \"OwnerId\" = 8.5 WHERE id = 3");
    assert!(entries.delete(3).unwrap());
    assert_eq!(of_owner(&db.store, 7), [1, 2]);
}
