//! [`Read`]: what a cached query read, which decides which writes retire it.

/// What a cached list or value read, for [`Repo::cached_query`](crate::Repo::cached_query)
/// and [`Repo::cached_value`](crate::Repo::cached_value): a whole table, or
/// only the rows of a table whose key column equals one value.
///
/// The table is named as its entity's [`Entity::TABLE`](crate::Entity::TABLE)
/// is: by its SQL name, `#[sql_name]`'s for a table that has one (write
/// `Task::TABLE` rather than the `table!` module's name). A name no entity of
/// the store maps is never invalidated, so a result reading it is not cached.
///
/// - [`Read::table`] (or the bare table name, `&["comments"]`): any committed
///   change to the table retires the result.
/// - [`Read::eq`]: the query's rows all satisfy `column = value` and it reads
///   no other row of the table, as `comments.of_post(7)` reads only
///   `comments WHERE post_id = 7`. Only a change to a row whose `column` was
///   or becomes `value` retires it, so a comment on post 8 leaves post 7's
///   list cached. The column must be one of the entity's
///   [`Entity::KEY_COLUMNS`](crate::Entity::KEY_COLUMNS) (an integer, a
///   foreign key as a rule); on any other column it acts as [`Read::table`].
///   Changes whose key values larder cannot know (a truncate, a cascade, a
///   change heard from a trigger that does not capture the column) retire
///   every `Read::eq` list of the table.
///
/// ```
/// use larder::Read;
///
/// let all = Read::table("comments");
/// assert_eq!(Read::from("comments"), all);
/// let of_post = Read::eq("comments", "post_id", 7);
/// assert_eq!(of_post.table_name(), "comments");
/// assert_eq!(of_post.filter(), Some(("post_id", 7)));
/// assert_eq!(all.filter(), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Read {
    table: &'static str,
    filter: Option<(&'static str, i64)>,
}

impl Read {
    /// Every row of `table`: any change to it retires the result.
    ///
    /// ```
    /// assert_eq!(larder::Read::table("posts").table_name(), "posts");
    /// ```
    pub const fn table(table: &'static str) -> Read {
        Read {
            table,
            filter: None,
        }
    }

    /// Only the rows of `table` whose `column` equals `value`: a change
    /// retires the result only if the changed row's `column` was or becomes
    /// `value` (see [`Read`]). A list is cached for its `value` too: under
    /// a key that forgets to name it, another value's list is never served.
    ///
    /// ```
    /// let read = larder::Read::eq("posts", "author_id", 3);
    /// assert_eq!(read.filter(), Some(("author_id", 3)));
    /// ```
    pub const fn eq(table: &'static str, column: &'static str, value: i64) -> Read {
        Read {
            table,
            filter: Some((column, value)),
        }
    }

    /// The table read.
    ///
    /// ```
    /// assert_eq!(larder::Read::eq("posts", "author_id", 3).table_name(), "posts");
    /// ```
    pub const fn table_name(&self) -> &'static str {
        self.table
    }

    /// The `(column, value)` the read rows all have, `None` for a whole table.
    ///
    /// ```
    /// assert_eq!(larder::Read::table("posts").filter(), None);
    /// ```
    pub const fn filter(&self) -> Option<(&'static str, i64)> {
        self.filter
    }
}

impl From<&'static str> for Read {
    /// A bare table name reads the whole table, so `&["comments"]` keeps
    /// working where reads are taken.
    fn from(table: &'static str) -> Read {
        Read::table(table)
    }
}
