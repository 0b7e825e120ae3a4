//! A lock's name: checked once, hashed once to the key every process agrees
//! on, and shown safely in errors and logs.

use std::fmt;

use crate::error::{Error, Result};

/// Longest accepted name, in bytes. Nothing in the mechanisms needs a limit
/// (they all work on the hash), but a lock name is a short label; a longer
/// one is almost surely data passed by mistake.
pub(crate) const MAX_NAME_BYTES: usize = 1024;

/// How many characters of a name errors and logs show.
const SHOWN_CHARS: usize = 64;

/// A validated lock name and its 64-bit key.
#[derive(Clone)]
pub(crate) struct LockName {
    text: String,
    key: i64,
}

impl LockName {
    /// Checks `name`: not empty, at most [`MAX_NAME_BYTES`]. Any character is
    /// accepted, NUL and quotes included: no mechanism puts the name in SQL
    /// text or a file path.
    pub(crate) fn new(name: &str) -> Result<LockName> {
        let invalid = |reason: String| Error::InvalidLockName {
            name: shown(name),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("the name is empty".into()));
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(invalid(format!(
                "the name is {} bytes long; at most {MAX_NAME_BYTES} are allowed",
                name.len()
            )));
        }
        Ok(LockName {
            text: name.to_owned(),
            key: key_of(name),
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// The name's 64-bit key (see [`key_of`]).
    pub(crate) fn key(&self) -> i64 {
        self.key
    }

    /// The name as errors and logs show it.
    pub(crate) fn shown(&self) -> String {
        shown(&self.text)
    }
}

impl fmt::Debug for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

/// The key of a lock name: FNV-1a (64-bit, offset basis
/// `0xcbf29ce484222325`, prime `0x100000001b3`) over its UTF-8 bytes, as an
/// `i64` of the same bits. Fixed forever: every process and every version of
/// larder must compute the same key for a name. Two names with one key only
/// wait for each other; mutual exclusion never breaks.
pub(crate) fn key_of(name: &str) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = name.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    });
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// `name` quoted, control characters and quotes escaped, cut after
/// [`SHOWN_CHARS`] characters with its length in bytes: safe to print
/// whatever a caller passed.
pub(crate) fn shown(name: &str) -> String {
    let chars = name.chars().count();
    if chars <= SHOWN_CHARS {
        return format!("{name:?}");
    }
    let head: String = name.chars().take(SHOWN_CHARS).collect();
    format!("{head:?}… ({} bytes)", name.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_fnv1a_and_never_changes() {
        // Published FNV-1a test vectors: other languages compute the same keys.
        assert_eq!(key_of("a") as u64, 0xaf63_dc4c_8601_ec8c);
        assert_eq!(key_of("foobar") as u64, 0x8594_4171_f739_67e8);
        assert_ne!(key_of("front-page"), key_of("digest"));
    }

    #[test]
    fn hostile_names_are_shown_escaped_and_cut() {
        assert_eq!(shown("a\0b\"c\n"), r#""a\0b\"c\n""#);
        let long = "x".repeat(1 << 20);
        let text = shown(&long);
        assert!(text.len() < 100, "{text}");
        assert!(text.ends_with("(1048576 bytes)"), "{text}");
        assert_eq!(shown("\u{202e}é"), "\"\\u{202e}é\"");
    }

    #[test]
    fn empty_and_oversized_names_are_refused() {
        for bad in [String::new(), "y".repeat(MAX_NAME_BYTES + 1)] {
            let err = LockName::new(&bad).unwrap_err();
            assert!(matches!(err, Error::InvalidLockName { .. }), "{err:?}");
        }
        assert!(LockName::new(&"y".repeat(MAX_NAME_BYTES)).is_ok());
        assert!(LockName::new("nul\0 'quote\" ; --").is_ok());
    }
}
