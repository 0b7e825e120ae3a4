//! Key columns ([`Entity::KEY_COLUMNS`](crate::Entity::KEY_COLUMNS)): the
//! generations that let a write retire only the [`Read::eq`](crate::Read::eq)
//! lists of the key values it touched, and the text form in which the capture
//! triggers and larder's own pre-write read report those values.
//!
//! The text form is `column=value` pairs joined by commas, as
//! `post_id=7,post_id=8` for a comment moved from post 7 to post 8; an empty
//! value is SQL NULL (the row is in no list of that column). A key column a
//! change does not name is unknown, and retires every list of the table.

use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets per key column: 8 KiB of counters each. Values that share a
/// bucket retire each other's lists, never keep one alive.
const BUCKETS: usize = 1024;

/// The key values a change touched: `(column, value)` for each value a row
/// had before or has after it (`None`: NULL, nothing to retire). A key column
/// that appears in no pair is unknown.
pub(crate) type Touched<'a> = [(&'a str, Option<i64>)];

/// Which bucket `value` counts in: a fixed multiplicative hash, so that
/// consecutive ids (the usual foreign keys) spread over every bucket.
fn bucket(value: i64) -> usize {
    let mixed = (value as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> (64 - BUCKETS.trailing_zeros())) as usize
}

/// The generations of one table's key columns.
pub(crate) struct KeyGenerations {
    /// Moved by every change whose key values are unknown.
    fallback: AtomicU64,
    columns: Vec<(&'static str, Box<[AtomicU64]>)>,
}

impl KeyGenerations {
    pub(crate) fn new(columns: &[&'static str]) -> KeyGenerations {
        KeyGenerations {
            fallback: AtomicU64::new(0),
            columns: columns
                .iter()
                .map(|column| (*column, (0..BUCKETS).map(|_| AtomicU64::new(0)).collect()))
                .collect(),
        }
    }

    /// What a `column = value` list compares to stay valid: the fallback and
    /// the value's bucket, `None` when `column` is not a key column.
    pub(crate) fn read(&self, column: &str, value: i64) -> Option<[u64; 2]> {
        let (_, buckets) = self.columns.iter().find(|(c, _)| *c == column)?;
        Some([
            self.fallback.load(Ordering::SeqCst),
            buckets[bucket(value)].load(Ordering::SeqCst),
        ])
    }

    /// Retires the lists of every value in `touched`, and every list of a
    /// column `touched` does not name.
    pub(crate) fn bump(&self, touched: &Touched<'_>) {
        for (column, buckets) in &self.columns {
            let mut known = false;
            for (_, value) in touched.iter().filter(|(c, _)| c == column) {
                known = true;
                if let Some(value) = value {
                    buckets[bucket(*value)].fetch_add(1, Ordering::SeqCst);
                }
            }
            if !known {
                self.fallback.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }

    /// Retires every list of the table.
    pub(crate) fn bump_all(&self) {
        self.fallback.fetch_add(1, Ordering::SeqCst);
    }
}

/// Reads the text form; `None` when it is malformed (then nothing is known).
pub(crate) fn parse(text: &str) -> Option<Vec<(&str, Option<i64>)>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(',')
        .map(|pair| {
            let (column, value) = pair.split_once('=')?;
            let value = match value {
                "" => None,
                value => Some(value.parse().ok()?),
            };
            (!column.is_empty()).then_some((column, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_parses_or_is_refused() {
        assert_eq!(parse(""), Some(vec![]));
        assert_eq!(
            parse("post_id=7,post_id=8"),
            Some(vec![("post_id", Some(7)), ("post_id", Some(8))])
        );
        assert_eq!(
            parse("post_id=,author_id=-3"),
            Some(vec![("post_id", None), ("author_id", Some(-3))])
        );
        for bad in ["post_id", "post_id=x", "=7", "post_id=7,", "post_id=1.5"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_change_retires_its_values_and_an_unknown_one_everything() {
        let keys = KeyGenerations::new(&["post_id"]);
        let (seven, eight) = (keys.read("post_id", 7), keys.read("post_id", 8));
        assert_ne!(bucket(7), bucket(8));
        keys.bump(&[("post_id", Some(7))]);
        assert_ne!(keys.read("post_id", 7), seven, "its own value retired");
        assert_eq!(keys.read("post_id", 8), eight, "another value kept");
        keys.bump(&[("post_id", None)]);
        assert_eq!(keys.read("post_id", 8), eight, "NULL retires nothing");
        keys.bump(&[("author_id", Some(8))]);
        assert_ne!(
            keys.read("post_id", 8),
            eight,
            "post_id unknown: all retired"
        );
        assert_eq!(keys.read("author_id", 8), None, "not a key column");
    }

    #[test]
    fn consecutive_values_spread_over_the_buckets() {
        let used: std::collections::HashSet<usize> = (0..1024).map(bucket).collect();
        assert!(used.len() > 600, "{} buckets used", used.len());
    }
}
