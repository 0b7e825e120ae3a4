//! The public mechanism that makes a table a cached entity.

use diesel::QueryResult;

use crate::pool::Connection;

/// A row of another (or the same) table that a write changed as a side effect,
/// for example a post removed by `ON DELETE CASCADE` when its author is deleted.
///
/// ```
/// let key = larder::Key::new("posts", 42);
/// assert_eq!((key.table, key.id), ("posts", 42));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// The table name, as in [`Entity::TABLE`].
    pub table: &'static str,
    /// The row's primary key.
    pub id: i64,
}

impl Key {
    /// The key of row `id` of `table`.
    pub fn new(table: &'static str, id: i64) -> Key {
        Key { table, id }
    }
}

/// A table whose rows larder caches.
///
/// An implementation only writes queries: larder's [`Repo`](crate::Repo) and
/// [`TxRepo`](crate::TxRepo) add the identity map, single-flight loads,
/// transactions and commit-time invalidation around them. Register the type with
/// [`StoreBuilder::entity`](crate::StoreBuilder::entity); the blog's
/// [`User`](crate::User), [`Post`](crate::Post) and [`Comment`](crate::Comment)
/// are implemented exactly this way.
///
/// Every method runs inside a transaction larder opened, on the connection given.
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
///     const TABLE: &'static str = "tags";
///     type New = NewTag;
///     type Changes = TagChanges;
///     fn id(&self) -> i64 { self.id }
///     fn find(conn: &mut Connection, id: i64) -> QueryResult<Option<Tag>> {
///         tags::table.find(id).first(conn).optional()
///     }
///     fn insert(conn: &mut Connection, new: &NewTag) -> QueryResult<Tag> {
///         diesel::insert_into(tags::table).values(new).get_result(conn)
///     }
///     fn update(conn: &mut Connection, id: i64, changes: &TagChanges) -> QueryResult<Option<Tag>> {
///         diesel::update(tags::table.find(id)).set(changes).get_result(conn).optional()
///     }
///     fn delete(conn: &mut Connection, id: i64) -> QueryResult<bool> {
///         Ok(diesel::delete(tags::table.find(id)).execute(conn)? > 0)
///     }
/// }
/// ```
pub trait Entity: Sized + Send + Sync + 'static {
    /// The table's name; it names the entity in errors, statistics and invalidations.
    const TABLE: &'static str;
    /// What `create` takes.
    type New;
    /// What `update` takes.
    type Changes;

    /// The row's primary key.
    fn id(&self) -> i64;

    /// Loads row `id`, or `None` when there is none.
    fn find(conn: &mut Connection, id: i64) -> QueryResult<Option<Self>>;

    /// Inserts a row and returns it as stored.
    fn insert(conn: &mut Connection, new: &Self::New) -> QueryResult<Self>;

    /// Updates row `id` and returns it as stored, or `None` when there is no such row.
    fn update(conn: &mut Connection, id: i64, changes: &Self::Changes)
        -> QueryResult<Option<Self>>;

    /// Deletes row `id`; returns whether a row was removed.
    fn delete(conn: &mut Connection, id: i64) -> QueryResult<bool>;

    /// Rows of any table that deleting row `id` removes by cascade. Called just
    /// before the delete, in the same transaction; their cached copies are
    /// invalidated when it commits. Defaults to none.
    fn cascade(conn: &mut Connection, id: i64) -> QueryResult<Vec<Key>> {
        let _ = (conn, id);
        Ok(Vec::new())
    }
}
