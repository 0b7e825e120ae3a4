//! The public mechanism that makes a table a cached entity.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, PoisonError, RwLock};

use std::sync::Arc;

use diesel::internal::table_macro::{Identifier, StaticQueryFragment};
use diesel::QueryResult;

use crate::cache::{AnyValue, CacheControl, IdentityMap};
use crate::pool::Connection;
pub use crate::registry::Key;
use crate::registry::{Registration, Registry};

/// Where an entity type's cache sits in every store: a small number given out
/// once per type and process, so that `store.repo::<E>()` finds the cache by
/// indexing an array rather than hashing a type. [`entity!`](crate::entity)
/// and `#[derive(Entity)]` give each entity a `static` slot; a hand-written
/// [`Entity`] gets one from [`entity_slot!`](crate::entity_slot) (or, without
/// it, from a shared table looked up by type, which is slower but as correct).
#[doc(hidden)]
#[derive(Debug)]
pub struct EntitySlot(OnceLock<usize>);

impl EntitySlot {
    /// An unassigned slot, for a `static`.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> EntitySlot {
        EntitySlot(OnceLock::new())
    }

    /// This type's index, assigned on first use.
    pub fn index(&self) -> usize {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        *self.0.get_or_init(|| NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// `E`'s identity map in `registry`, made and registered on first use (with
/// `capacity`, else the store's default).
pub(crate) fn identity_map<E: Entity>(
    registry: &Registry,
    capacity: Option<usize>,
) -> &IdentityMap<E> {
    let index = E::__larder_slot().index();
    let typed = registry.slot_or_register(index, || {
        let capacity = capacity.unwrap_or(registry.default_capacity());
        let map = Arc::new(IdentityMap::<E>::new(E::TABLE, capacity));
        let control: Arc<dyn CacheControl> = map.clone();
        let registration = Registration {
            entity: TypeId::of::<E>(),
            table: E::TABLE,
            deleted_with: E::DELETED_WITH,
            key_columns: E::KEY_COLUMNS,
            control,
        };
        (map as AnyValue, registration)
    });
    typed
        .downcast_ref::<IdentityMap<E>>()
        .expect("an entity slot holds the map of the entity it was given to")
}

/// The slot of an entity whose `Entity` impl names none: one per type, kept for
/// the life of the process (a few bytes per entity type).
#[doc(hidden)]
pub fn slot_by_type<E: 'static>() -> &'static EntitySlot {
    static SLOTS: OnceLock<RwLock<HashMap<TypeId, &'static EntitySlot>>> = OnceLock::new();
    let slots = SLOTS.get_or_init(Default::default);
    let found = slots
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&TypeId::of::<E>())
        .copied();
    if let Some(slot) = found {
        return slot;
    }
    let mut slots = slots.write().unwrap_or_else(PoisonError::into_inner);
    slots
        .entry(TypeId::of::<E>())
        .or_insert_with(|| Box::leak(Box::new(EntitySlot::new())))
}

/// Gives a hand-written [`Entity`] impl its own slot, which makes
/// `store.repo::<E>()` as cheap as for a derived entity. Put it inside the impl.
///
/// ```
/// # use larder::{Connection, Entity};
/// # struct Note { id: i64 }
/// impl Entity for Note {
///     larder::entity_slot!();
///     const TABLE: &'static str = "notes";
///     type New = ();
///     type Changes = ();
///     fn id(&self) -> i64 { self.id }
///     # fn find(_: &mut Connection, _: i64) -> diesel::QueryResult<Option<Note>> { Ok(None) }
///     # fn insert(_: &mut Connection, _: &()) -> diesel::QueryResult<Note> { Err(diesel::result::Error::NotFound) }
///     # fn update(_: &mut Connection, _: i64, _: &()) -> diesel::QueryResult<Option<Note>> { Ok(None) }
///     # fn delete(_: &mut Connection, _: i64) -> diesel::QueryResult<bool> { Ok(false) }
///     // find, insert, update, delete as usual
/// }
/// ```
#[macro_export]
macro_rules! entity_slot {
    () => {
        fn __larder_slot() -> &'static $crate::__private::EntitySlot {
            static SLOT: $crate::__private::EntitySlot = $crate::__private::EntitySlot::new();
            &SLOT
        }
    };
}

/// A table whose rows larder caches.
///
/// An implementation only says how to query its table: larder's
/// [`Repo`](crate::Repo) and [`TxRepo`](crate::TxRepo) add the identity map,
/// single-flight loads, transactions and commit-time invalidation around it.
/// Register the type with [`StoreBuilder::entity`](crate::StoreBuilder::entity).
///
/// A diesel model whose table has an `id BIGINT` primary key derives it
/// (cargo feature `derive`, on by default), which writes every query; the
/// derive expands to [`entity!`](crate::entity), which can be called directly
/// instead:
///
/// ```
/// use diesel::prelude::*;
/// use larder::Repository;
///
/// mod schema {
///     diesel::table! { tags (id) { id -> BigInt, post_id -> BigInt, label -> Text } }
/// }
/// use schema::tags;
///
/// #[derive(Debug, Queryable, larder::Entity)]
/// // `table` is the module of diesel's `table!`; `deleted_with` is optional:
/// // tags.post_id REFERENCES posts ON DELETE CASCADE.
/// #[larder(table = schema::tags, new = NewTag, changes = TagChanges, deleted_with = ["posts"])]
/// pub struct Tag { pub id: i64, #[larder(key)] pub post_id: i64, pub label: String }
///
/// #[derive(Insertable)]
/// #[diesel(table_name = tags)]
/// pub struct NewTag { pub post_id: i64, pub label: String }
///
/// #[derive(AsChangeset, Default)]
/// #[diesel(table_name = tags)]
/// pub struct TagChanges { pub label: Option<String> }
///
/// assert_eq!(<Tag as larder::Entity>::TABLE, "tags");
/// assert_eq!(<Tag as larder::Entity>::DELETED_WITH, ["posts"]);
/// assert_eq!(<Tag as larder::Entity>::KEY_COLUMNS, ["post_id"]); // #[larder(key)]
///
/// # let dir = tempfile::tempdir().unwrap();
/// # let url = format!("sqlite://{}", dir.path().join("tags.db").display());
/// let store = larder::Store::builder(&url).entity::<Tag>().build()?;
/// store.migrate()?; // larder's own change log
/// # diesel::connection::SimpleConnection::batch_execute(&mut larder::Connection::establish(&url)?,
/// #     "CREATE TABLE tags (id INTEGER PRIMARY KEY NOT NULL, post_id BIGINT NOT NULL, label TEXT NOT NULL)").unwrap();
/// let tag = store.repo::<Tag>().create(NewTag { post_id: 1, label: "rust".into() })?;
/// assert_eq!(store.repo::<Tag>().get(tag.id)?.unwrap().label, "rust");
/// # Ok::<(), larder::Error>(())
/// ```
///
/// Any other table implements it by hand, as the blog application does for
/// its users, posts and comments. Each method runs on the connection given:
/// the writes inside a transaction larder opened (`insert` and `update`
/// autocommitted instead when the entity declares
/// [`SINGLE_STATEMENT_WRITES`](Entity::SINGLE_STATEMENT_WRITES)), and the
/// loads of a store's misses (`find`, `find_many`) outside any transaction,
/// on a pooled connection or a replica's;
/// [`with_connection!`](crate::with_connection) runs a diesel query on it,
/// whichever backend it is.
///
/// ```
/// use diesel::prelude::*;
/// use larder::{Connection, Entity};
///
/// diesel::table! { tags (id) { id -> BigInt, label -> Text } }
///
/// #[derive(Debug, Queryable, Identifiable)]
/// struct Tag { id: i64, label: String }
///
/// #[derive(Insertable)]
/// #[diesel(table_name = tags)]
/// struct NewTag { label: String }
///
/// #[derive(AsChangeset)]
/// #[diesel(table_name = tags)]
/// struct TagChanges { label: Option<String> }
///
/// impl Entity for Tag {
///     larder::entity_slot!(); // a constant-time `store.repo::<Tag>()`
///     const TABLE: &'static str = "tags";
///     type New = NewTag;
///     type Changes = TagChanges;
///     fn id(&self) -> i64 { self.id }
///     fn find(conn: &mut Connection, id: i64) -> QueryResult<Option<Tag>> {
///         larder::with_connection!(conn, |c| tags::table.find(id).get_result(c).optional())
///     }
///     fn insert(conn: &mut Connection, new: &NewTag) -> QueryResult<Tag> {
///         // Portable: MySQL has no INSERT … RETURNING; it reads the row back
///         // by LAST_INSERT_ID(), which triggers do not disturb there.
///         // `get_results`, read to the end: SQLite checkpoints its WAL only
///         // after a write stepped to completion (see `insert` below).
///         let only = |rows: Vec<Tag>| rows.into_iter().next().ok_or(diesel::result::Error::NotFound);
///         match conn {
///             Connection::Sqlite(c) => diesel::insert_into(tags::table).values(new).get_results(c).and_then(only),
///             Connection::Postgres(c) => diesel::insert_into(tags::table).values(new).get_results(c).and_then(only),
///             #[allow(unreachable_patterns)]
///             _ => {
///                 larder::with_connection!(conn, |c| diesel::insert_into(tags::table).values(new).execute(c))?;
///                 let id = conn.last_insert_id()?;
///                 Tag::find(conn, id)?.ok_or(diesel::result::Error::NotFound)
///             }
///         }
///     }
///     fn update(conn: &mut Connection, id: i64, changes: &TagChanges) -> QueryResult<Option<Tag>> {
///         larder::with_connection!(conn, |c| diesel::update(tags::table.find(id)).set(changes).execute(c))?;
///         Tag::find(conn, id)
///     }
///     fn delete(conn: &mut Connection, id: i64) -> QueryResult<bool> {
///         Ok(larder::with_connection!(conn, |c| diesel::delete(tags::table.find(id)).execute(c))? > 0)
///     }
/// }
/// ```
pub trait Entity: Sized + Send + Sync + 'static {
    /// The table's name; it names the entity in errors, statistics and invalidations.
    const TABLE: &'static str;

    /// This entity's slot in every store; see [`entity_slot!`](crate::entity_slot).
    #[doc(hidden)]
    fn __larder_slot() -> &'static EntitySlot {
        slot_by_type::<Self>()
    }

    /// What `create` takes.
    type New;
    /// What `update` takes.
    type Changes;

    /// The row's primary key: the table's column named `id`, the name the
    /// capture triggers and a keyed entity's key reads use.
    fn id(&self) -> i64;

    /// Loads row `id`, or `None` when there is none. Every miss runs it.
    ///
    /// Write it with diesel's `get_result`, not `first`: `first` binds a
    /// `LIMIT ?`, and SQLite re-prepares a statement with a bound LIMIT each
    /// time it runs (measured: 17 µs a select instead of 4.4 µs).
    ///
    /// Read through `conn` alone: other callers of the same key wait for this
    /// load, so a `get` of that key through a store from inside it would wait
    /// for itself, for good.
    fn find(conn: &mut Connection, id: i64) -> QueryResult<Option<Self>>;

    /// Loads the rows of `ids` that exist, in any order. Defaults to one
    /// [`find`](Entity::find) per id; [`entity!`](crate::entity) and the derive
    /// load them in one query. [`Repo::get_many`](crate::Repo::get_many) passes
    /// at most 10,000 ids at a time, fewer than any backend binds to one statement.
    fn find_many(conn: &mut Connection, ids: &[i64]) -> QueryResult<Vec<Self>> {
        let mut rows = Vec::with_capacity(ids.len());
        for &id in ids {
            rows.extend(Self::find(conn, id)?);
        }
        Ok(rows)
    }

    /// Inserts a row and returns it as stored. Meant for a new row: a create
    /// knows only the row's new key values ([`KEY_COLUMNS`](Entity::KEY_COLUMNS)),
    /// so an upsert here (`ON CONFLICT … DO UPDATE`, MySQL's `ON DUPLICATE
    /// KEY UPDATE`) that changed an existing row's key value would leave the
    /// lists of its old value cached in this process until coherence reads
    /// the change. Upsert a row whose id is known through
    /// [`Repo::write`](crate::Repo::write), which reads its key values first.
    ///
    /// A `RETURNING` statement is read to its end (diesel's `get_results`,
    /// not `get_result`), here and in [`update`](Entity::update): SQLite
    /// checkpoints its WAL only after a write stepped to completion, and a
    /// write reset after its first row commits without one, so the WAL of a
    /// store whose writes were all of that kind grew without bound.
    ///
    /// Wrap the statement in [`KeepPrepared`](crate::KeepPrepared), here and
    /// in [`update`](Entity::update), as [`entity!`](crate::entity) does:
    /// diesel prepares every `INSERT` and `UPDATE` again otherwise, and on
    /// SQLite preparing one compiles the table's triggers (larder's capture
    /// triggers among them), a fifth of an update's time.
    fn insert(conn: &mut Connection, new: &Self::New) -> QueryResult<Self>;

    /// Updates row `id` and returns it as stored, or `None` when there is no such row.
    fn update(conn: &mut Connection, id: i64, changes: &Self::Changes)
        -> QueryResult<Option<Self>>;

    /// Deletes row `id`; returns whether a row was removed.
    fn delete(conn: &mut Connection, id: i64) -> QueryResult<bool>;

    /// Rows of any table that deleting row `id` removes by cascade. Called just
    /// before the delete, in the same transaction; their cached copies are
    /// invalidated when it commits. Lock what you read (`FOR UPDATE` on the
    /// parent row first, then on the children) on backends with row locks: a
    /// child inserted between this read and the delete would be removed by
    /// the cascade without being invalidated, and a plain read inside a
    /// transaction sees its snapshot (MySQL's REPEATABLE READ), which misses
    /// children committed since its first read; a locking read sees them.
    /// Defaults to none.
    fn cascade(conn: &mut Connection, id: i64) -> QueryResult<Vec<Key>> {
        let _ = (conn, id);
        Ok(Vec::new())
    }

    /// Tables whose deletes cascade into this one (`ON DELETE CASCADE` foreign
    /// keys pointing at them) without this entity being named in their
    /// [`cascade`](Entity::cascade), typically an application table hanging off
    /// the blog's `posts`. When a row of such a table is deleted, this entity's
    /// whole cache is emptied: coarse, but never stale. Defaults to none.
    ///
    /// Name the parent tables by their SQL names, as their capture triggers
    /// report them and as their own [`TABLE`](Entity::TABLE) is: for a table
    /// declared `#[sql_name = "project_rows"] projects`, `"project_rows"`,
    /// not the `table!` module's `"projects"`, which matches no delete, so
    /// the rows a cascade removed would stay cached. A foreign key
    /// `ON DELETE SET NULL` changes this table's rows when a parent row is
    /// deleted just as silently (MySQL fires no trigger for them at all):
    /// declare its parent here too.
    ///
    /// Name every ancestor a chain of cascades reaches this table from, not
    /// only its parent: for `notes` cascading from `labels`, which cascades
    /// from `posts`, `["labels", "posts"]`. The store knows of a cascade only
    /// from the entities a process has used, so with `["labels"]` alone a
    /// process that never used the `labels` entity kept the notes a post's
    /// delete removed (for good with coherence off, or on MySQL).
    const DELETED_WITH: &'static [&'static str] = &[];

    /// Whether [`insert`](Entity::insert) and [`update`](Entity::update) each
    /// run exactly one write statement (reads around it are fine). Then
    /// store-level `create` and `update` run it without an explicit transaction,
    /// since a single statement is atomic on its own, saving a `BEGIN` and a
    /// `COMMIT`; invalidation still happens after the write has committed.
    /// Defaults to false: every write runs in a transaction.
    const SINGLE_STATEMENT_WRITES: bool = false;

    /// Integer columns (foreign keys, as a rule) that cached lists filter on
    /// with [`Read::eq`](crate::Read::eq), such as `post_id` for comments
    /// listed by post: a write then retires only the lists of the values its
    /// row had before and has after it, instead of every list of the table.
    ///
    /// The price: an update, write or delete of such an entity first reads
    /// the row's key values, locked (`SELECT … FOR UPDATE` on PostgreSQL and
    /// MySQL; SQLite's write transaction excludes other writers already), in
    /// a transaction of its own even when the entity declares
    /// [`SINGLE_STATEMENT_WRITES`](Entity::SINGLE_STATEMENT_WRITES). Inserts
    /// pay nothing. Other processes' changes carry the values only if the
    /// table's capture triggers report them ([`capture_sql_with_keys`](crate::capture_sql_with_keys));
    /// otherwise they retire every list of the table, as before. Each column
    /// costs 8 KiB of generation counters per store.
    ///
    /// Only the key columns of the first entity registered for a table that
    /// declares any count. Names must be plain identifiers (letters, digits,
    /// `_`). Defaults to none; [`entity!`](crate::entity) takes `keys: [post_id]`
    /// and the derive `#[larder(key)]` on a field.
    const KEY_COLUMNS: &'static [&'static str] = &[];

    /// The value of key column `column` in this row, `None` when it is NULL
    /// (or not a key column). Must answer for every name in
    /// [`KEY_COLUMNS`](Entity::KEY_COLUMNS): a missing answer reads as NULL,
    /// and the lists of the row's real value would not be retired.
    ///
    /// ```
    /// # use larder::{Connection, Entity};
    /// struct Comment { id: i64, post_id: i64 }
    /// impl Entity for Comment {
    ///     const TABLE: &'static str = "comments";
    ///     const KEY_COLUMNS: &'static [&'static str] = &["post_id"];
    ///     fn key_value(&self, column: &str) -> Option<i64> {
    ///         (column == "post_id").then_some(self.post_id)
    ///     }
    ///     type New = ();
    ///     type Changes = ();
    ///     fn id(&self) -> i64 { self.id }
    ///     # fn find(_: &mut Connection, _: i64) -> diesel::QueryResult<Option<Comment>> { Ok(None) }
    ///     # fn insert(_: &mut Connection, _: &()) -> diesel::QueryResult<Comment> { Err(diesel::result::Error::NotFound) }
    ///     # fn update(_: &mut Connection, _: i64, _: &()) -> diesel::QueryResult<Option<Comment>> { Ok(None) }
    ///     # fn delete(_: &mut Connection, _: i64) -> diesel::QueryResult<bool> { Ok(false) }
    ///     // find, insert, update, delete as usual
    /// }
    /// assert_eq!(Comment { id: 1, post_id: 7 }.key_value("post_id"), Some(7));
    /// ```
    fn key_value(&self, column: &str) -> Option<i64> {
        let _ = column;
        None
    }
}

/// A field type [`entity!`]'s `keys` accept: an integer key, or a nullable one.
#[doc(hidden)]
pub trait KeyField {
    /// The value, `None` for NULL.
    fn key_field(&self) -> Option<i64>;
}

impl KeyField for i64 {
    fn key_field(&self) -> Option<i64> {
        Some(*self)
    }
}

impl KeyField for Option<i64> {
    fn key_field(&self) -> Option<i64> {
        *self
    }
}

/// Implements [`Entity`] for a diesel model whose table has an `id BIGINT`
/// primary key, from the table module (`tags`, or a path as `schema::tags`;
/// [`Entity::TABLE`] is the table's SQL name, its `#[sql_name]` if it has
/// one, which is the name its capture triggers report), the insertable type and the
/// changeset type: no query needs to be written. Inserts and updates return the stored
/// row with `RETURNING` on SQLite and PostgreSQL (so triggers drawing from
/// other sequences cannot confuse it), and read it back by its id on MySQL,
/// which has no `RETURNING`: the id the `new` value sets (bound as an
/// integer), else the id the insert generated (`LAST_INSERT_ID()`, read in
/// the same statement as the row). An all-`None` changeset leaves the row as
/// it is. `keys: [post_id]` (optional, after `deleted_with`) names fields of
/// type `i64` or `Option<i64>` whose columns of the same name in `table!`
/// are [`Entity::KEY_COLUMNS`], by their SQL names (`#[sql_name]`). `#[derive(larder::Entity)]` expands to this macro.
///
/// ```
/// use diesel::prelude::*;
///
/// diesel::table! { tags (id) { id -> BigInt, post_id -> BigInt, label -> Text } }
///
/// #[derive(Debug, Queryable)]
/// pub struct Tag { pub id: i64, pub post_id: i64, pub label: String }
///
/// #[derive(Insertable)]
/// #[diesel(table_name = tags)]
/// pub struct NewTag { pub post_id: i64, pub label: String }
///
/// #[derive(AsChangeset, Default)]
/// #[diesel(table_name = tags)]
/// pub struct TagChanges { pub label: Option<String> }
///
/// larder::entity!(Tag {
///     table: tags,
///     new: NewTag,
///     changes: TagChanges,
///     deleted_with: ["posts"], // tags.post_id REFERENCES posts ON DELETE CASCADE
///     keys: [post_id], // lists of a post's tags use larder::Read::eq("tags", "post_id", id)
/// });
///
/// use larder::Entity;
/// assert_eq!(Tag::TABLE, "tags");
/// assert_eq!(Tag::KEY_COLUMNS, ["post_id"]);
/// let tag = Tag { id: 1, post_id: 7, label: "rust".into() };
/// assert_eq!(tag.key_value("post_id"), Some(7));
/// ```
///
/// A table declared in a schema (`app.tags`) is refused at compile time: the
/// capture triggers and [`Store::uncaptured_tables`](crate::Store::uncaptured_tables)
/// name a table of the connection's schema (PostgreSQL's `search_path`,
/// MySQL's database), and would watch another table of that name, or none,
/// while the cache served `app.tags`. Declare it without the schema and
/// connect with the schema chosen.
///
/// ```compile_fail,E0277
/// use diesel::prelude::*;
///
/// diesel::table! { app.tags (id) { id -> BigInt, label -> Text } }
///
/// #[derive(Debug, Queryable)]
/// pub struct Tag { pub id: i64, pub label: String }
///
/// #[derive(Insertable, AsChangeset)]
/// #[diesel(table_name = tags)]
/// pub struct TagLabel { pub label: String }
///
/// larder::entity!(Tag { table: tags, new: TagLabel, changes: TagLabel });
/// ```
///
/// A `deleted_with` table is named as its capture triggers report it: a
/// plain SQL name, without a schema. One such as `"blog.posts"` matched no
/// delete, so the rows its cascades removed stayed cached; it is refused at
/// compile time:
///
/// ```compile_fail,E0080
/// use diesel::prelude::*;
///
/// diesel::table! { tags (id) { id -> BigInt, label -> Text } }
///
/// #[derive(Debug, Queryable)]
/// pub struct Tag { pub id: i64, pub label: String }
///
/// #[derive(Insertable, AsChangeset)]
/// #[diesel(table_name = tags)]
/// pub struct TagLabel { pub label: String }
///
/// larder::entity!(Tag { table: tags, new: TagLabel, changes: TagLabel, deleted_with: ["blog.posts"] });
/// ```
///
/// The primary key column must be named `id` in SQL too: the capture
/// triggers report a change by `id`, and a keyed entity's writes read the key
/// values `WHERE id = …`. A `table!` whose `id` has another SQL name is
/// refused at compile time (such a table's captures and keyed writes failed
/// at run time, on a column `id` it does not have):
///
/// ```compile_fail,E0080
/// use diesel::prelude::*;
///
/// diesel::table! { notes (id) { #[sql_name = "note_id"] id -> BigInt, body -> Text } }
///
/// #[derive(Debug, Queryable)]
/// pub struct Note { pub id: i64, pub body: String }
///
/// #[derive(Insertable, AsChangeset)]
/// #[diesel(table_name = notes)]
/// pub struct NoteBody { pub body: String }
///
/// larder::entity!(Note { table: notes, new: NoteBody, changes: NoteBody });
/// ```
///
/// That column must also be the primary key, alone: `find` loads by the
/// `table!`'s primary key, while the captures and the identity map name a
/// row by `id`. A table keyed by another column (`natural (code)` with an
/// `id` column beside it) cached row `code` under that key, and another
/// process's change to it, reported by `id`, never retired it. Refused at
/// compile time, as is a composite key:
///
/// ```compile_fail,E0277
/// use diesel::prelude::*;
///
/// diesel::table! { codes (code) { code -> BigInt, id -> BigInt, label -> Text } }
///
/// #[derive(Debug, Queryable)]
/// pub struct Code { pub code: i64, pub id: i64, pub label: String }
///
/// #[derive(Insertable, AsChangeset)]
/// #[diesel(table_name = codes)]
/// pub struct CodeLabel { pub label: String }
///
/// larder::entity!(Code { table: codes, new: CodeLabel, changes: CodeLabel });
/// ```
#[macro_export]
macro_rules! entity {
    ($model:ident { table: $($table:ident)::+, new: $new:ty, changes: $changes:ty $(, deleted_with: [$($parent:literal),* $(,)?])? $(, keys: [$($key:ident),* $(,)?])? $(,)? }) => {
        impl $crate::Entity for $model {
            $crate::entity_slot!();
            const TABLE: &'static str = $crate::__private::table_name::<$($table::)+table>();
            const DELETED_WITH: &'static [&'static str] = &[$($($parent),*)?];
            const SINGLE_STATEMENT_WRITES: bool = true;
            // The columns' SQL names (`#[sql_name]`), which the capture
            // triggers and the key read name them by.
            const KEY_COLUMNS: &'static [&'static str] = {
                #[allow(unused_imports)]
                use $($table)::+ as __larder_columns;
                &[$($(<__larder_columns::$key as ::diesel::Column>::NAME),*)?]
            };
            type New = $new;
            type Changes = $changes;

            fn id(&self) -> i64 {
                self.id
            }

            fn key_value(&self, column: &str) -> Option<i64> {
                #[allow(unused_imports)]
                use $($table)::+ as __larder_columns;
                $($(
                    if column == <__larder_columns::$key as ::diesel::Column>::NAME {
                        return $crate::__private::KeyField::key_field(&self.$key);
                    }
                )*)?
                let _ = column;
                None
            }

            fn find(conn: &mut $crate::Connection, id: i64) -> ::diesel::QueryResult<Option<Self>> {
                use ::diesel::prelude::*;
                // Named as the capture triggers report a table: a name with a
                // schema, or any other, would match no delete.
                $($(const _: () = ::core::assert!(
                    $crate::__private::is_plain_name($parent),
                    "larder: a deleted_with table is named by its plain SQL name, without a schema (\"posts\", not \"blog.posts\")"
                );)*)?
                // The capture triggers and the key read name the row by `id`.
                const _: () = ::core::assert!(
                    $crate::__private::is_named_id(<$($table::)+id as ::diesel::Column>::NAME),
                    "larder: the table's primary key column must be named `id` in SQL (no #[sql_name] on `id`)"
                );
                // `find` loads by the primary key, the captures name a row by `id`.
                $crate::__private::keyed_by_id::<$($table::)+table, $($table::)+id>();
                // `get_result`, not `first`: `first` binds `LIMIT ?`, and SQLite
                // (3.50) re-prepares a statement whose LIMIT is a bound
                // parameter every time it is bound, which tripled a miss's select.
                $crate::with_connection!(conn, |c| $($table::)+table.find(id).get_result(c).optional())
            }

            fn find_many(conn: &mut $crate::Connection, ids: &[i64]) -> ::diesel::QueryResult<Vec<Self>> {
                use ::diesel::prelude::*;
                $crate::with_connection!(conn, |c| $($table::)+table.filter($($table::)+id.eq_any(ids)).load(c))
            }

            fn insert(conn: &mut $crate::Connection, new: &$new) -> ::diesel::QueryResult<Self> {
                $crate::__larder_backends!(__larder_insert_returning!(conn, $($table::)+table, new))
            }

            fn update(conn: &mut $crate::Connection, id: i64, changes: &$changes) -> ::diesel::QueryResult<Option<Self>> {
                let updated = $crate::__larder_backends!(__larder_update_returning!(conn, $($table::)+table, id, changes));
                match updated {
                    Err(err) if $crate::__private::is_empty_changeset(&err) => Self::find(conn, id),
                    other => other,
                }
            }

            fn delete(conn: &mut $crate::Connection, id: i64) -> ::diesel::QueryResult<bool> {
                use ::diesel::prelude::*;
                Ok($crate::with_connection!(conn, |c| ::diesel::delete($($table::)+table.find(id)).execute(c))? > 0)
            }
        }
    };
}

/// One backend's insert into `$table` (a diesel table, as `tags::table`) for
/// [`entity!`]: `RETURNING` where the backend has it.
#[doc(hidden)]
#[macro_export]
macro_rules! __larder_insert_arm {
    (Mysql, $c:ident, $table:expr, $new:expr) => {{
        use ::diesel::prelude::*;
        // Whether this entity's inserts name the id column (see `mysql_insert`).
        static NAMES_ID: ::std::sync::OnceLock<bool> = ::std::sync::OnceLock::new();
        let insert = ::diesel::insert_into($table).values($new);
        let pk = $crate::__private::column_name(&::diesel::Table::primary_key(&$table));
        let set = $crate::__private::mysql_explicit_id(&insert, pk, &NAMES_ID)?;
        $crate::KeepPrepared::new(insert).execute($c)?;
        match set {
            Some(id) => $table.find(id).get_result($c),
            // The id the insert generated, read in the same statement as its row.
            None => $table
                .find(::diesel::dsl::sql::<::diesel::sql_types::BigInt>(
                    $crate::__private::MYSQL_LAST_INSERT_ID,
                ))
                .get_result($c),
        }
    }};
    ($other:ident, $c:ident, $table:expr, $new:expr) => {{
        use ::diesel::prelude::*;
        use ::diesel::query_builder::AsQuery;
        $crate::KeepPrepared::new(::diesel::insert_into($table).values($new).as_query())
            .get_results($c)
            .map($crate::__private::returned_row)?
            .ok_or(::diesel::result::Error::NotFound)
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __larder_insert_returning {
    ($conn:expr, $table:expr, $new:expr ; $($variant:ident)*) => {
        match $conn {
            $( $crate::Connection::$variant(c) => $crate::__larder_insert_arm!($variant, c, $table, $new), )*
        }
    };
}

/// One backend's update of row `$id` for [`entity!`], returning the stored row
/// (`None` when no row matched): `RETURNING` where the backend has it.
#[doc(hidden)]
#[macro_export]
macro_rules! __larder_update_arm {
    (Mysql, $c:ident, $table:expr, $id:expr, $changes:expr) => {{
        use ::diesel::prelude::*;
        // No `?`: an empty changeset's error is the caller's to recognize.
        match $crate::KeepPrepared::new(::diesel::update($table.find($id)).set($changes))
            .execute($c)
        {
            Ok(0) => Ok(None),
            Ok(_) => $table.find($id).get_result($c).optional(),
            Err(err) => Err(err),
        }
    }};
    ($other:ident, $c:ident, $table:expr, $id:expr, $changes:expr) => {{
        use ::diesel::prelude::*;
        use ::diesel::query_builder::AsQuery;
        $crate::KeepPrepared::new(::diesel::update($table.find($id)).set($changes).as_query())
            .get_results($c)
            .map($crate::__private::returned_row)
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __larder_update_returning {
    ($conn:expr, $table:expr, $id:expr, $changes:expr ; $($variant:ident)*) => {
        match $conn {
            $( $crate::Connection::$variant(c) => $crate::__larder_update_arm!($variant, c, $table, $id, $changes), )*
        }
    };
}

/// The SQL name of diesel table `T`, which the capture triggers report its
/// changes under: `#[sql_name = "tag_rows"] tags (id) { … }` is `tag_rows`,
/// not `tags`. Used by [`entity!`](crate::entity) for [`Entity::TABLE`];
/// public only for the macro's expansion. A table in a schema has no
/// [`SqlName`]: refused at compile time.
#[doc(hidden)]
pub const fn table_name<T>() -> &'static str
where
    T: StaticQueryFragment,
    T::Component: SqlName<T>,
{
    <T::Component as SqlName<T>>::NAME
}

/// The name diesel's `table!` gave a table's SQL, for a table of the
/// connection's schema.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "larder cannot cache this table: its `table!` declares it in a schema",
    label = "declared in a schema",
    note = "larder's capture triggers watch a table of the connection's schema: declare the \
            table without its schema, and choose the schema when connecting \
            (PostgreSQL's search_path, MySQL's database)"
)]
pub trait SqlName<T> {
    /// The table's SQL name.
    const NAME: &'static str;
}

impl<T> SqlName<T> for Identifier<'static>
where
    T: StaticQueryFragment<Component = Identifier<'static>>,
{
    const NAME: &'static str = T::STATIC_COMPONENT.0;
}

/// Implemented by a column for itself alone: a table's primary key is
/// `KeyedById<Id>` when it is the column `Id`.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "larder cannot cache this table: its primary key is not its `id` column alone",
    label = "the `table!`'s primary key",
    note = "larder loads a row by the `table!`'s primary key and names it by `id` in its \
            capture triggers and identity map: declare the table as `name (id) {{ ... }}`"
)]
pub trait KeyedById<Id> {}

impl<Id> KeyedById<Id> for Id {}

/// Compiles only for a table `T` whose primary key is the column `Id`. Used
/// by [`entity!`](crate::entity); public only for the macro's expansion.
#[doc(hidden)]
pub const fn keyed_by_id<T: diesel::Table, Id>()
where
    T::PrimaryKey: KeyedById<Id>,
{
}

/// Whether a column's SQL name is `id`, which every SQL larder writes
/// (capture triggers, key reads) names a row by. Used by
/// [`entity!`](crate::entity) to refuse at compile time a `table!` whose `id`
/// has another SQL name; public only for the macro's expansion.
#[doc(hidden)]
pub const fn is_named_id(name: &str) -> bool {
    let name = name.as_bytes();
    name.len() == 2 && name[0] == b'i' && name[1] == b'd'
}

/// Whether `name` is a plain SQL name (ASCII letters, digits and `_`, not
/// starting with a digit), as the capture triggers report a table: what
/// [`entity!`](crate::entity) requires of a `deleted_with` table, at compile
/// time; public only for the macro's expansion.
#[doc(hidden)]
pub const fn is_plain_name(name: &str) -> bool {
    let name = name.as_bytes();
    if name.is_empty() || name[0].is_ascii_digit() {
        return false;
    }
    let mut i = 0;
    while i < name.len() {
        if !(name[i].is_ascii_alphanumeric() || name[i] == b'_') {
            return false;
        }
        i += 1;
    }
    true
}

/// The row a write's `RETURNING` gave, if any, from all its rows. Such a
/// statement is read to its end (`get_results`, not `get_result`): SQLite
/// runs its WAL checkpoint only from a write stepped to completion, and one
/// reset after its first row commits without it, so the WAL of a store whose
/// writes were all of that kind grew without bound (see tests/sqlite_wal.rs).
/// Used by [`entity!`](crate::entity); public only for the macro's expansion.
#[doc(hidden)]
pub fn returned_row<T>(rows: Vec<T>) -> Option<T> {
    rows.into_iter().next()
}

/// Whether `err` is diesel's refusal to run an update with nothing to set.
/// Used by [`entity!`](crate::entity); public only for the macro's expansion.
#[doc(hidden)]
pub fn is_empty_changeset(err: &diesel::result::Error) -> bool {
    matches!(err, diesel::result::Error::QueryBuilderError(inner) if inner.is::<diesel::result::EmptyChangeset>())
}

/// The SQL name of a column (a table's primary key, for the MySQL insert's
/// read-back). Used by [`entity!`](crate::entity); public only for the
/// macro's expansion.
#[doc(hidden)]
pub fn column_name<C: diesel::Column>(_column: &C) -> &'static str {
    C::NAME
}
