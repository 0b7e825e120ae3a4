//! MySQL has no `INSERT … RETURNING`: `entity!`'s `create` reads its row
//! back by the id. `LAST_INSERT_ID()` gives the id the insert generated,
//! but an insert that sets the id itself generates none and leaves
//! `LAST_INSERT_ID()` at the connection's previous generated id: reading
//! that back returned another row as the new one. So the id an insert sets
//! is read from the statement itself, and `LAST_INSERT_ID()` used only when
//! the database generated the id.

use std::sync::OnceLock;

use diesel::mysql::Mysql;
use diesel::query_builder::QueryFragment;
use diesel::result::Error as DieselError;

/// The id `insert` sets in its primary-key column `pk`: `None` when the
/// database generates it (the column is not among the statement's, is
/// `DEFAULT`, NULL or 0, which MySQL replaces with a generated id).
/// `names_pk` remembers, per entity, whether its inserts name the column
/// at all: when they do not, nothing is formatted again.
///
/// # Errors
///
/// A query-builder error when the statement sets the column but its value
/// cannot be read as an integer id: the insert is then not run.
pub fn explicit_id<Q: QueryFragment<Mysql>>(
    insert: &Q,
    pk: &str,
    names_pk: &OnceLock<bool>,
) -> diesel::QueryResult<Option<i64>> {
    if names_pk.get() == Some(&false) {
        return Ok(None);
    }
    let text = diesel::debug_query::<Mysql, _>(insert).to_string();
    let parsed = parse(&text, pk);
    let _ = names_pk.set(!matches!(parsed, Ok(Slot::Absent)));
    match parsed {
        Ok(Slot::Absent | Slot::Default) => Ok(None),
        Ok(Slot::Bound(value)) => read_id(&value).map(|id| (id != 0).then_some(id)),
        Err(reason) => Err(unreadable(pk, reason)),
    }
}

/// What an insert puts in one column.
#[derive(Debug, PartialEq)]
enum Slot {
    /// The statement does not name the column.
    Absent,
    /// `DEFAULT`.
    Default,
    /// A bound value, as `debug_query` shows it.
    Bound(String),
}

/// Reads the column `pk`'s slot from `debug_query`'s text: ``INSERT INTO
/// `t` (`a`, `b`) VALUES (?, DEFAULT) -- binds: [1]``.
fn parse(text: &str, pk: &str) -> Result<Slot, &'static str> {
    let (sql, binds) = text
        .split_once(" -- binds: ")
        .ok_or("no bind list in the statement")?;
    let (head, tail) = sql
        .split_once(") VALUES (")
        .ok_or("not a single-row INSERT … VALUES")?;
    let columns = head.split_once("` (`").ok_or("no column list")?.1;
    let columns: Vec<&str> = columns.trim_end_matches('`').split("`, `").collect();
    let Some(at) = columns.iter().position(|c| *c == pk) else {
        return Ok(Slot::Absent);
    };
    let values: Vec<&str> = tail
        .strip_suffix(')')
        .ok_or("no end to the VALUES list")?
        .split(", ")
        .collect();
    if values.len() != columns.len() {
        return Err("columns and values do not pair up");
    }
    match values[at] {
        "DEFAULT" => Ok(Slot::Default),
        "?" => {
            let index = values[..at].iter().filter(|v| **v == "?").count();
            let binds = debug_list(binds).ok_or("an unreadable bind list")?;
            binds
                .get(index)
                .map(|b| Slot::Bound((*b).to_owned()))
                .ok_or("fewer binds than placeholders")
        }
        _ => Err("the id is an expression"),
    }
}

/// The items of a `Debug`-formatted list, `[1, "a, b", [2, 3]]`: split at
/// the commas outside strings and nested brackets.
fn debug_list(list: &str) -> Option<Vec<&str>> {
    let inner = list.trim().strip_prefix('[')?.strip_suffix(']')?;
    let mut items = Vec::new();
    let (mut depth, mut in_string, mut escaped, mut start) = (0usize, false, false, 0);
    for (at, ch) in inner.char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '[' | '(' | '{' if !in_string => depth += 1,
            ']' | ')' | '}' if !in_string => depth = depth.checked_sub(1)?,
            ',' if !in_string && depth == 0 => {
                items.push(inner[start..at].trim());
                start = at + 1;
            }
            _ => {}
        }
    }
    if !inner.trim().is_empty() {
        items.push(inner[start..].trim());
    }
    Some(items)
}

/// A bound id as `Debug` shows it: an integer, `Some(…)` around one, or
/// `None` (generated).
fn read_id(value: &str) -> diesel::QueryResult<i64> {
    let value = value
        .strip_prefix("Some(")
        .and_then(|v| v.strip_suffix(')'))
        .unwrap_or(value);
    if value == "None" {
        return Ok(0);
    }
    value
        .parse()
        .map_err(|_| unreadable("id", "the id is not an integer"))
}

fn unreadable(pk: &str, reason: &str) -> DieselError {
    DieselError::QueryBuilderError(
        format!(
            "cannot tell which row this insert creates ({reason}): MySQL reports only \
             generated ids, so an entity whose insert sets `{pk}` must bind it as an integer"
        )
        .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_an_insert_sets_is_read_from_its_statement() {
        let text = "INSERT INTO `labels` (`id`, `name`) VALUES (?, ?) -- binds: [4242, \"a, [b\"]";
        assert_eq!(parse(text, "id"), Ok(Slot::Bound("4242".into())));
        let text = "INSERT INTO `labels` (`name`, `id`) VALUES (?, DEFAULT) -- binds: [\"x\"]";
        assert_eq!(parse(text, "id"), Ok(Slot::Default));
        let text = "INSERT INTO `labels` (`tags`, `note`, `id`) VALUES (?, DEFAULT, ?) -- binds: [[1, 2], -7]";
        assert_eq!(parse(text, "id"), Ok(Slot::Bound("-7".into())));
        let text =
            "INSERT INTO `labels` (`note`, `id`) VALUES (?, ?) -- binds: [\"q\\\"), {\", -7]";
        assert_eq!(parse(text, "id"), Ok(Slot::Bound("-7".into())));
        let text = "INSERT INTO `labels` (`name`) VALUES (?) -- binds: [\"x\"]";
        assert_eq!(parse(text, "id"), Ok(Slot::Absent));
    }

    #[test]
    fn an_id_that_cannot_be_read_is_an_error() {
        assert!(read_id("\"text\"").is_err());
        assert_eq!(read_id("Some(5)").unwrap(), 5);
        assert_eq!(read_id("None").unwrap(), 0);
        assert!(parse("SELECT 1", "id").is_err());
    }
}
