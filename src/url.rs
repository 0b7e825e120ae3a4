//! Parsing a database URL into a backend and a connection target, and keeping
//! its passwords out of everything that is printed: the user-info password and
//! every secret-bearing query parameter, in the URL as shown and in whatever
//! part of them a driver echoes in its messages.

use std::fmt;
use std::ops::Range;
use std::path::Path;

pub use crate::dialect::Backend;
use crate::error::{Error, Result};

/// A parsed database URL.
///
/// `Debug` and `Display` show the URL with its passwords (the user-info one and
/// the value of every secret-bearing query parameter such as `password` or
/// `sslpassword`) replaced by `***`.
///
/// ```
/// let url = larder::DatabaseUrl::parse("sqlite://blog.db").unwrap();
/// assert_eq!(url.backend(), larder::Backend::Sqlite);
/// assert_eq!(url.target(), "blog.db");
/// ```
#[derive(Clone)]
pub struct DatabaseUrl {
    backend: Backend,
    target: String,
    redacted: String,
    /// What a driver may print of the URL's secrets, longest first (see
    /// [`secrets_of`]); never shown.
    secrets: Vec<String>,
}

impl DatabaseUrl {
    /// Parses `url`, checking what can be checked without connecting.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] for an empty URL, an unknown scheme, a backend this
    /// build does not include, an in-memory SQLite database (each pooled connection
    /// would see its own empty database) or a SQLite file whose directory does not exist.
    pub fn parse(url: &str) -> Result<DatabaseUrl> {
        let redacted = redact_url(url);
        let secrets = secrets_of(url);
        let invalid = |reason: String| Error::InvalidUrl {
            url: redacted.clone(),
            reason: scrub(&reason, &secrets, REASON_WITHHELD),
        };
        let url = url.trim();
        if url.is_empty() {
            return Err(invalid("the URL is empty".into()));
        }
        // `sqlite:file:…` and `file:…` are SQLite URI filenames, which may
        // hold `//` themselves (`file:///srv/app.db`): not a scheme's.
        let uri = url.strip_prefix("sqlite:").unwrap_or(url);
        let (backend, target) = match url.split_once("://") {
            _ if uri.starts_with("file:") => (Backend::Sqlite, uri),
            Some(("sqlite", path)) => (Backend::Sqlite, path),
            Some(("postgres" | "postgresql", _)) => (Backend::Postgres, url),
            Some(("mysql", _)) => (Backend::Mysql, url),
            Some((scheme, _)) => {
                return Err(invalid(format!(
                    "unknown scheme {scheme:?}: use sqlite://, postgres:// or mysql://"
                )))
            }
            None => {
                let path = url.strip_prefix("sqlite:").unwrap_or(url);
                if is_conninfo(path) {
                    return Err(invalid(
                        "this is a libpq key=value connection string, not a URL: write it as \
                         postgres://user:password@host:port/dbname"
                            .into(),
                    ));
                }
                (Backend::Sqlite, path)
            }
        };
        if !backend.is_built() {
            return Err(invalid(format!(
                "the {0} backend is not built into this larder: enable its cargo feature `{0}`",
                backend.name()
            )));
        }
        if backend == Backend::Sqlite {
            check_sqlite_path(target, secrets.is_empty()).map_err(invalid)?;
        } else if target
            .split_once("://")
            .is_some_and(|(_, rest)| rest.is_empty())
        {
            return Err(invalid("the URL names no server".into()));
        }
        Ok(DatabaseUrl {
            backend,
            target: target.to_owned(),
            redacted,
            secrets,
        })
    }

    /// The backend the URL selects.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// What the driver connects to: for SQLite the file path, for a server the
    /// URL itself. It holds the password: never print it.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The URL with its passwords replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// A connection failure, with this URL's passwords removed from the message.
    pub(crate) fn connection_error(&self, message: &str) -> Error {
        Error::Connection {
            url: self.redacted.clone(),
            message: self.scrub(message),
        }
    }

    /// Removes every part of this URL's passwords from a driver message before
    /// it is shown, or withholds the message when a part too short to remove
    /// safely appears in it.
    pub(crate) fn scrub(&self, message: &str) -> String {
        scrub(message, &self.secrets, DRIVER_WITHHELD)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseUrl")
            .field("backend", &self.backend)
            .field("url", &self.redacted)
            .finish()
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// `echo_path` is false when the URL holds a password: a path derived from such
/// a URL is not repeated in the error, since any part of it may be the secret.
fn check_sqlite_path(path: &str, echo_path: bool) -> std::result::Result<(), String> {
    if path.is_empty() {
        return Err("the SQLite file path is empty".into());
    }
    if path.contains('\0') {
        return Err("the SQLite file path contains a NUL byte".into());
    }
    // A URI filename's path decides too: `file::memory:` is in memory, and
    // an empty one (`file:`) a private temporary database per connection.
    let file = sqlite_file_path(path);
    if file.is_empty() {
        return Err(
            "the SQLite URI filename names no file (SQLite would open a temporary \
                    database of each connection's own)"
                .into(),
        );
    }
    if !path.starts_with("file:") && path.contains('?') {
        return Err(
            "a plain SQLite path takes no ?parameters (SQLite would make them part of the \
             file's name): give them to a URI filename, sqlite:file:blog.db?mode=ro"
                .into(),
        );
    }
    if file.ends_with('/') || Path::new(file).is_dir() {
        return Err("the SQLite path names a directory, not a database file".into());
    }
    if path == ":memory:" || file == ":memory:" || path.contains("mode=memory") {
        return Err(
            "in-memory SQLite is not supported: every pooled connection would open its own \
             empty database; use a file (a temporary one for tests)"
                .into(),
        );
    }
    let dir = match Path::new(file).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => return Ok(()),
    };
    if dir.is_dir() {
        Ok(())
    } else if echo_path {
        Err(format!("directory {} does not exist", dir.display()))
    } else {
        Err("the SQLite file's directory does not exist".into())
    }
}

/// The file a SQLite target names: the target itself, or for a URI filename
/// (`file:app.db`, `file:///srv/app.db?mode=rwc`) its path, without the
/// query and fragment and an empty or `localhost` authority. Percent-escapes
/// in a URI's path are left as written.
pub(crate) fn sqlite_file_path(target: &str) -> &str {
    let Some(uri) = target.strip_prefix("file:") else {
        return target;
    };
    let path = uri.split(['?', '#']).next().unwrap_or_default();
    path.strip_prefix("//localhost")
        .or_else(|| path.strip_prefix("//"))
        .unwrap_or(path)
}

/// What replaces a secret in a URL or a message.
const REDACTED: &str = "***";

/// Replaces a driver message that holds a piece of a password too short to
/// remove from it safely (see [`MIN_SCRUBBED_CHARS`]).
const DRIVER_WITHHELD: &str =
    "the driver's message was withheld because it may contain part of the password";

/// As [`DRIVER_WITHHELD`], for the reason a URL was rejected.
const REASON_WITHHELD: &str = "the reason was withheld because it may contain part of the password";

/// A query parameter whose key, percent-decoded and in any case, contains one
/// of these holds a secret:
///
/// - `pass`: libpq's `password` and `sslpassword` (the key of an encrypted
///   client certificate), and the `pass` and `passwd` other clients' URLs use;
/// - `secret`: libpq's `oauth_client_secret`, the third option libpq itself
///   marks as hidden;
/// - `pwd`: ODBC-style `PWD`;
/// - `token`: access tokens that proxies in front of a database take in the URL.
///
/// diesel's MySQL URL reads only `unix_socket`, `ssl_ca`, `ssl_cert`, `ssl_key`
/// and `ssl_mode` from the query (paths and a mode: its password comes from the
/// user info alone) and SQLite reads none, so no other name is needed. Parts
/// rather than exact names can only hide more than needed (libpq's `passfile`,
/// a path), never less; libpq itself matches keys exactly and in lower case,
/// but a near miss is still a secret the user meant to give.
const SECRET_KEY_PARTS: &[&str] = &["pass", "pwd", "secret", "token"];

/// Where a driver may cut a URL into the parts it reports on their own:
/// libpq ends the user info at the first `@` or `/`, so the rest of a password
/// holding one becomes a host (a list split at `,`, IPv6 in `[…]`), a port
/// (after `:`), a database (after `/`) or query parameters (after `?`, split
/// at `&` and `=`), and its decoder stops at a space; the `url` crate behind
/// diesel's MySQL URL also ends the authority at `?` and `#`.
const PIECE_DELIMITERS: &[char] = &['/', '@', ':', '?', '#', '&', '=', ',', '[', ']', ' '];

/// Shortest secret, in characters, removed from a message by replacement.
/// A shorter piece (a password such as `pa/ss` has two) would turn every `pa`
/// of a message into `***`, mangling it; where one appears the whole message
/// is withheld instead, since it may be the driver's echo of the piece.
const MIN_SCRUBBED_CHARS: usize = 3;

/// `message` with every long enough secret replaced by `***` (longest first,
/// so a whole password goes before its pieces), or `withheld` when a secret
/// too short to replace still appears in it. Secrets never leak; at worst a
/// message loses its detail.
fn scrub(message: &str, secrets: &[String], withheld: &str) -> String {
    let (long, short): (Vec<&String>, Vec<&String>) = secrets
        .iter()
        .partition(|secret| secret.chars().count() >= MIN_SCRUBBED_CHARS);
    let mut out = message.to_owned();
    for secret in long {
        out = replace_ignoring_ascii_case(&out, secret);
    }
    let lower = out.to_ascii_lowercase();
    if short
        .iter()
        .any(|secret| lower.contains(&secret.to_ascii_lowercase()))
    {
        return withheld.to_owned();
    }
    out
}

/// `haystack` with every occurrence of `needle` in any ASCII case replaced by
/// `***`: a driver may fold the case of what it echoes (host names). ASCII case
/// folding keeps byte offsets, so matches found in the folded text are cut
/// from the original at the same, valid, boundaries.
fn replace_ignoring_ascii_case(haystack: &str, needle: &str) -> String {
    if needle.is_empty() {
        return haystack.to_owned();
    }
    let folded = haystack.to_ascii_lowercase();
    let needle_folded = needle.to_ascii_lowercase();
    let mut out = String::with_capacity(haystack.len());
    let mut shown_to = 0;
    while let Some(found) = folded
        .get(shown_to..)
        .and_then(|rest| rest.find(&needle_folded))
    {
        let start = shown_to + found;
        out.push_str(haystack.get(shown_to..start).unwrap_or_default());
        out.push_str(REDACTED);
        shown_to = start + needle.len();
    }
    out.push_str(haystack.get(shown_to..).unwrap_or_default());
    out
}

/// Everything a driver may print of `url`'s secrets, longest first: each secret
/// as written and percent-decoded (drivers report decoded values), and each
/// piece of them between [`PIECE_DELIMITERS`], as written and decoded.
fn secrets_of(url: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    for range in secret_ranges(url) {
        let raw = url.get(range).unwrap_or_default();
        let decoded = percent_decode(raw);
        for piece in raw.split(PIECE_DELIMITERS) {
            secrets.push(piece.to_owned());
            secrets.push(percent_decode(piece));
        }
        secrets.extend(decoded.split(PIECE_DELIMITERS).map(str::to_owned));
        secrets.push(raw.to_owned());
        secrets.push(decoded);
    }
    secrets.retain(|secret| !secret.is_empty());
    secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    secrets.dedup();
    secrets
}

/// The byte ranges of `url` that hold secrets, possibly overlapping: the
/// user-info password and the value of every secret-bearing query parameter.
fn secret_ranges(url: &str) -> Vec<Range<usize>> {
    password_range(url)
        .into_iter()
        .chain(secret_param_ranges(url))
        .chain(conninfo_secret_ranges(url))
        .filter(|range| !range.is_empty())
        .collect()
}

/// libpq's keywords that open a key=value connection string as users write
/// them; a file name starting so is taken for one (and refused).
const CONNINFO_KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "service",
    "sslmode",
    "connect_timeout",
    "application_name",
    "options",
];

/// Whether `text` (given with no `scheme://`) is a libpq keyword/value
/// connection string such as `host=db user=app password=…`.
fn is_conninfo(text: &str) -> bool {
    text.split_whitespace().next().is_some_and(|first| {
        first
            .split_once('=')
            .is_some_and(|(key, _)| CONNINFO_KEYWORDS.contains(&key))
    })
}

/// In a keyword/value connection string, the value of every keyword that
/// names a secret: to the next whitespace, or for a quoted value to its
/// closing quote (to the end if there is none, which can only over-redact).
fn conninfo_secret_ranges(text: &str) -> Vec<Range<usize>> {
    if text.contains("://") {
        return Vec::new();
    }
    let mut ranges = Vec::new();
    let mut rest = 0;
    while let Some(eq) = text.get(rest..).and_then(|tail| tail.find('=')) {
        let eq = rest + eq;
        let key_start = text[..eq]
            .rfind(char::is_whitespace)
            .map_or(0, |space| space + 1);
        let value_start = eq + 1;
        let tail = text.get(value_start..).unwrap_or_default();
        let value_len = match tail.strip_prefix('\'') {
            Some(quoted) => quoted.find('\'').map_or(tail.len(), |end| end + 2),
            None => tail.find(char::is_whitespace).unwrap_or(tail.len()),
        };
        if is_secret_key(text.get(key_start..eq).unwrap_or_default()) {
            ranges.push(value_start..value_start + value_len);
        }
        rest = value_start + value_len;
    }
    ranges
}

/// The user-info password, if the URL has one. Users paste passwords without
/// percent-encoding them, so a password may hold `/`, `?`, `#` or `@`: the
/// user-info is taken to run up to the *last* `@`, which can only over-redact.
fn password_range(url: &str) -> Option<Range<usize>> {
    let rest_start = url.find("://")? + "://".len();
    let rest = url.get(rest_start..)?;
    let at = rest.rfind('@')?;
    let colon = rest.get(..at)?.find(':')?;
    Some(rest_start + colon + 1..rest_start + at)
}

/// The value of every query parameter whose key names a secret, every time it
/// is given. A key may start after any `?` or `&` (so a second `?` hides none)
/// and runs to `=`; its value runs to the next `&` or the end, since libpq
/// keeps `#`, `?` and spaces in a value and ending it earlier would show the
/// rest of the password.
fn secret_param_ranges(url: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    url.match_indices(['?', '&']).filter_map(move |(at, _)| {
        let key_start = at + 1;
        let tail = url.get(key_start..)?;
        let key_end = tail.find(['=', '&'])?;
        let key = tail.get(..key_end)?;
        if !tail.get(key_end..)?.starts_with('=') || !is_secret_key(key) {
            return None;
        }
        let value_start = key_start + key_end + 1;
        let value_end = url
            .get(value_start..)?
            .find('&')
            .map_or(url.len(), |len| value_start + len);
        Some(value_start..value_end)
    })
}

/// Whether a query key, as written, names a secret (see [`SECRET_KEY_PARTS`]).
/// libpq percent-decodes keys, so `pass%77ord` is a password too.
fn is_secret_key(key: &str) -> bool {
    let key = percent_decode(key).to_lowercase();
    SECRET_KEY_PARTS.iter().any(|part| key.contains(part))
}

/// `text` with each `%` and two hex digits replaced by the byte they encode, as
/// libpq and the `url` crate decode; a `%` not followed by two hex digits stays.
/// Bytes that do not form UTF-8 become U+FFFD, as drivers' messages show them.
pub(crate) fn percent_decode(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        let encoded = match (byte, tail) {
            (b'%', [hi, lo, ..]) => hex_value(*hi).zip(hex_value(*lo)),
            _ => None,
        };
        match encoded {
            Some((hi, lo)) => {
                out.push((hi << 4) | lo);
                rest = tail.get(2..).unwrap_or_default();
            }
            None => {
                out.push(byte);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

/// Replaces the user-info password and the value of every secret-bearing
/// query parameter with `***`. Never panics: every cut is at an ASCII
/// delimiter.
pub(crate) fn redact_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut shown_to = 0;
    for range in merged(secret_ranges(url)) {
        out.push_str(url.get(shown_to..range.start).unwrap_or_default());
        out.push_str(REDACTED);
        shown_to = range.end;
    }
    out.push_str(url.get(shown_to..).unwrap_or_default());
    out
}

/// `ranges` in order, overlapping or touching ones joined, so each secret
/// stretch of a URL becomes one `***`.
fn merged(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.sort_by_key(|range| range.start);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match out.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => out.push(range),
        }
    }
    out
}

/// `url` with each of `params` appended to its query string, except those it
/// already sets (the operator's choice wins).
pub(crate) fn with_params(url: &str, params: &[(&str, &str)]) -> String {
    // A password may hold `#` (libpq keeps it): look for the fragment and the
    // query string only past the user info.
    let host = host_start(url);
    let (base, fragment) = match url[host..].find('#') {
        Some(at) => (&url[..host + at], Some(&url[host + at + 1..])),
        None => (url, None),
    };
    let query = base[host..].split_once('?').map_or("", |(_, q)| q);
    let present: Vec<&str> = query
        .split('&')
        .map(|pair| pair.split_once('=').map_or(pair, |(k, _)| k))
        .collect();
    let mut out = base.to_owned();
    for (key, value) in params.iter().filter(|(k, _)| !present.contains(k)) {
        let separator = match out[host..].find('?') {
            None => "?",
            Some(_) if out.ends_with(['?', '&']) => "",
            Some(_) => "&",
        };
        out.push_str(&format!("{separator}{key}={value}"));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Where `url`'s host starts: past its user info, which runs to the last `@`
/// before the query string (taken to start at the first `?` after the first
/// `@`), so that a password's `#` or `@` is not taken for a URL delimiter.
fn host_start(url: &str) -> usize {
    let Some(rest_start) = url.find("://").map(|at| at + "://".len()) else {
        return 0;
    };
    let rest = &url[rest_start..];
    let Some(first_at) = rest.find('@') else {
        return rest_start;
    };
    let query = rest[first_at..]
        .find('?')
        .map_or(rest.len(), |q| first_at + q);
    rest[..query]
        .rfind('@')
        .map_or(rest_start, |at| rest_start + at + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_path_and_prefixed_forms_are_sqlite() {
        for (url, target) in [
            ("blog.db", "blog.db"),
            ("sqlite://blog.db", "blog.db"),
            ("sqlite:blog.db", "blog.db"),
            ("sqlite:///tmp/blog.db", "/tmp/blog.db"),
        ] {
            let parsed = DatabaseUrl::parse(url).unwrap();
            assert_eq!(parsed.backend(), Backend::Sqlite);
            assert_eq!(parsed.target(), target, "{url}");
        }
    }

    #[test]
    fn unknown_scheme_is_invalid() {
        let err = DatabaseUrl::parse("ftp://host/db").unwrap_err();
        assert!(err.to_string().contains("unknown scheme"), "{err}");
    }

    #[test]
    fn missing_directory_is_invalid() {
        let err = DatabaseUrl::parse("sqlite:///no/such/dir/blog.db").unwrap_err();
        assert!(err.to_string().contains("/no/such/dir"), "{err}");
    }

    /// SQLite opens whatever a plain path names: `sqlite://?mode=ro` made a
    /// file called `?mode=ro` (query parameters belong to URI filenames),
    /// and a path naming a directory a file beside it. Each is refused.
    #[test]
    fn a_plain_sqlite_path_with_parameters_or_naming_a_directory_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().display().to_string();
        for url in [
            "sqlite://?mode=ro".to_owned(),
            "sqlite://blog.db?mode=ro".to_owned(),
            format!("sqlite://{existing}/"),
            format!("sqlite://{existing}"),
            format!("sqlite://{existing}/sub/"),
        ] {
            let err = DatabaseUrl::parse(&url).expect_err(&url);
            assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err}");
        }
        // A URI filename takes its parameters.
        let uri = format!("sqlite:file:{existing}/blog.db?mode=rwc");
        DatabaseUrl::parse(&uri).expect("a URI filename with a query");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/blog"),
            "postgres://app:***@db:5432/blog"
        );
        assert_eq!(
            redact_url("postgres://db/blog?user=app&password=s3cret&x=1"),
            "postgres://db/blog?user=app&password=***&x=1"
        );
        assert_eq!(
            redact_url("mysql://p@ss:w@rd@host/db"),
            "mysql://p@ss:***@host/db"
        );
        for url in [
            "postgres://app:s3cret@db/blog",
            "mysql://app:s3cret@db/blog",
        ] {
            let shown = match DatabaseUrl::parse(url) {
                Ok(url) => format!("{url} {url:?}"),
                Err(err) => format!("{err} {err:?}"),
            };
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }

    /// A secret long and distinctive enough that any 4 of its characters
    /// found in printed text can only have come from it.
    const SECRET: &str = "Zq9SECRETx";

    /// Every piece of `secret` at least 4 characters long: a driver may echo
    /// any part of a password, so no part of it may show.
    fn fragments(secret: &str) -> Vec<&str> {
        let bounds: Vec<usize> = secret
            .char_indices()
            .map(|(i, _)| i)
            .chain([secret.len()])
            .collect();
        let mut out = Vec::new();
        for (n, &start) in bounds.iter().enumerate() {
            for &end in bounds.iter().skip(n + 4) {
                out.push(&secret[start..end]);
            }
        }
        out
    }

    /// The first fragment of `secret` that `shown` contains.
    fn leaked<'a>(shown: &str, secret: &'a str) -> Option<&'a str> {
        fragments(secret).into_iter().find(|f| shown.contains(f))
    }

    /// Everything printed for `url`: its redaction, and the parsed URL's
    /// `Display`, `Debug` and `redacted()` or the error's `Display` and `Debug`.
    fn everything_shown(url: &str) -> String {
        let parsed = match DatabaseUrl::parse(url) {
            Ok(parsed) => format!("{parsed} {parsed:?} {}", parsed.redacted()),
            Err(err) => format!("{err} {err:?}"),
        };
        format!("{} {parsed}", redact_url(url))
    }

    #[test]
    fn every_secret_parameter_is_redacted_at_every_occurrence() {
        for query in [
            "sslpassword=K&password={S}",
            "password=a&password={S}",
            "password={S}&password=a",
            "password=a&sslpassword=b&password={S}&x=1",
            "sslpassword={S}",
            "oauth_client_secret={S}",
            "PASSWORD={S}",
            "Password={S}",
            "pAsSwOrD={S}",
            "SslPassword={S}",
            "pass%77ord={S}",
            "%70assword={S}",
            "pass={S}",
            "passwd={S}",
            "pwd={S}",
            "PWD={S}",
            // libpq skips spaces before a key.
            " password={S}",
            // A value ends at `&` or at the end; libpq keeps a `#` or a space in it.
            "password={S}&sslmode=disable",
            "password={S}#frag",
            "password=ab#{S}",
            "password=ab {S}",
            "password=ab%26{S}",
            // A second `?` does not hide a parameter.
            "sslmode=disable?password={S}",
        ] {
            let query = query.replace("{S}", SECRET);
            for base in [
                "postgres://db/blog",
                "postgresql://app@db:5432/blog",
                "mysql://root@db/blog",
                "sqlite:///tmp/blog.db",
                "sqlite:blog.db",
            ] {
                let url = format!("{base}?{query}");
                let shown = everything_shown(&url);
                assert_eq!(leaked(&shown, SECRET), None, "{url} shows {shown}");
            }
        }
        assert_eq!(
            redact_url("postgres://db/blog?sslpassword=K&password=s3cret&x=1"),
            "postgres://db/blog?sslpassword=***&password=***&x=1"
        );
        assert_eq!(
            redact_url("postgres://db/blog?password=a&PASSWORD=s3cret"),
            "postgres://db/blog?password=***&PASSWORD=***"
        );
    }

    #[test]
    fn every_fragment_of_a_password_is_scrubbed_from_driver_messages() {
        if !Backend::Postgres.is_built() {
            return;
        }
        for (url, message) in [
            // libpq ends the user info at the first `/`: "Zq9SE" becomes the port.
            (
                "postgres://postgres:Zq9SE/CRETx@127.0.0.1:5432/postgres",
                "invalid integer value \"Zq9SE\" for connection option \"port\"",
            ),
            // ...or at the first `@`: the rest of the password becomes the host.
            (
                "postgres://u:Zq9SE@CRETx@db/blog",
                "could not translate host name \"CRETx@db\" to address",
            ),
            // ...and a `,` separates hosts.
            (
                "postgres://u:Zq9SE,CRETx/d@db/blog",
                "could not translate host name \"CRETx\" to address",
            ),
            // Drivers report percent-decoded values.
            (
                "postgres://u:Zq9SE%2FCRETx@db/blog",
                "no password Zq9SE/CRETx",
            ),
            (
                "postgres://db/blog?password=Zq9S%45CRETx",
                "no password Zq9SECRETx",
            ),
            // libpq echoes a badly encoded value as written.
            (
                "postgres://db/blog?password=%zzZq9SECRETx",
                "invalid percent-encoded token: \"%zzZq9SECRETx\"",
            ),
            (
                "postgres://db/blog?sslpassword=K&password=Zq9SECRETx",
                "invalid URI \"postgres://db/blog?sslpassword=K&password=Zq9SECRETx\"",
            ),
            (
                "postgres://db/blog?password=a&password=Zq9SECRETx",
                "bad value Zq9SECRETx",
            ),
            (
                "postgres://db/blog?sslmode=disable?password=Zq9SECRETx",
                "invalid sslmode value: \"disable?password=Zq9SECRETx\"",
            ),
            (
                "postgres://u:pw@db/blog?Password=Zq9SECRETx",
                "bad value zq9secretx",
            ),
        ] {
            let parsed = DatabaseUrl::parse(url).unwrap();
            let scrubbed = parsed.scrub(message);
            let secret_chars: String = SECRET.to_lowercase();
            assert_eq!(leaked(&scrubbed, SECRET), None, "{url}: {scrubbed}");
            assert_eq!(
                leaked(&scrubbed.to_lowercase(), &secret_chars),
                None,
                "{url}: {scrubbed}"
            );
            assert_eq!(leaked(&scrubbed, "Zq9SE/CRETx"), None, "{url}: {scrubbed}");
            assert!(!scrubbed.contains("CRETx"), "{url}: {scrubbed}");
        }
    }

    #[test]
    fn a_password_piece_too_short_to_scrub_withholds_the_message() {
        if !Backend::Postgres.is_built() {
            return;
        }
        let url = DatabaseUrl::parse("postgres://postgres:pa/ss@127.0.0.1:5432/postgres").unwrap();
        let scrubbed = url.scrub("invalid integer value \"pa\" for connection option \"port\"");
        assert!(!scrubbed.contains("\"pa\""), "{scrubbed}");
        assert_eq!(url.scrub("Connection refused"), "Connection refused");
    }

    /// Characters of generated secrets: URL delimiters and capitals found in
    /// no key name, no other part of the generated URLs and none of larder's
    /// own texts, so 4 of them in a row in printed text came from a secret.
    const SECRET_RE: &str = "[BFGJMQVXYZ]{4,6}([@:/?#%,][BFGJMQVXYZ]{0,6}){0,3}";

    /// A secret-bearing key as a user may write it: any case, any character
    /// percent-encoded (libpq decodes keys).
    fn secret_key() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::strategy::Strategy;
        const NAMES: &[&str] = &[
            "password",
            "sslpassword",
            "oauth_client_secret",
            "pass",
            "passwd",
            "pwd",
        ];
        (
            proptest::sample::select(NAMES),
            proptest::collection::vec(0u8..6, 20),
        )
            .prop_map(|(name, styles)| {
                name.chars()
                    .zip(styles)
                    .map(|(c, style)| match style {
                        0 => format!("%{:02X}", c as u32),
                        1 | 2 => c.to_ascii_uppercase().to_string(),
                        _ => c.to_string(),
                    })
                    .collect()
            })
    }

    /// A query parameter, and its value when that is a secret.
    fn param() -> impl proptest::strategy::Strategy<Value = (String, Option<String>)> {
        use proptest::strategy::Strategy;
        proptest::prop_oneof![
            (secret_key(), SECRET_RE).prop_map(|(k, v)| (format!("{k}={v}"), Some(v))),
            "(sslmode|user|host|application_name|ssl_mode|dbname)=[a-z0-9]{0,8}"
                .prop_map(|p| (p, None)),
        ]
    }

    /// `s` percent-decoded as the drivers do (written apart from the code
    /// under test, so a mistake in one does not hide in the other).
    fn decode(s: &str) -> String {
        let mut out = Vec::new();
        let mut rest = s.as_bytes();
        while let Some((&b, tail)) = rest.split_first() {
            let hex = tail
                .get(..2)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .filter(|_| b == b'%' && tail[..2].iter().all(u8::is_ascii_hexdigit));
            match hex {
                Some(byte) => {
                    out.push(byte);
                    rest = &tail[2..];
                }
                None => {
                    out.push(b);
                    rest = tail;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// What a driver might echo of `url`: the whole URL, and every piece of it
    /// between delimiters, as written and percent-decoded.
    fn driver_echo(url: &str) -> String {
        let mut echo = url.to_owned();
        for piece in url.split(['/', '@', ':', '?', '#', '&', '=', ',', ' ']) {
            echo.push_str(&format!(" \"{piece}\" \"{}\"", decode(piece)));
        }
        echo
    }

    proptest::proptest! {
        /// Any string: parsing returns a value or a typed error, never panics,
        /// and no 4 characters in a row of a password given in the URL (in the
        /// user info or in any secret-bearing query parameter, as often as
        /// given) show in what is printed or in a driver message after scrubbing.
        #[test]
        fn parsing_never_panics_or_leaks_a_password(
            scheme in "(sqlite|postgres|postgresql|mysql|ftp|[a-z]{1,8})",
            user in "[a-z]{0,6}",
            password in proptest::option::of(SECRET_RE),
            rest in "\\PC{0,24}",
            separator in "(\\?|&|/db\\?)",
            params in proptest::collection::vec(param(), 0..5),
        ) {
            let auth = match &password {
                Some(password) => format!("{user}:{password}@"),
                None if user.is_empty() => String::new(),
                None => format!("{user}@"),
            };
            let query: Vec<&str> = params.iter().map(|(p, _)| p.as_str()).collect();
            let url = format!("{scheme}://{auth}{rest}{separator}{}", query.join("&"));
            let secrets: Vec<String> = password
                .iter()
                .chain(params.iter().filter_map(|(_, v)| v.as_ref()))
                .flat_map(|s| [s.clone(), decode(s)])
                .collect();
            let shown = everything_shown(&url);
            let scrubbed = DatabaseUrl::parse(&url)
                .map(|parsed| parsed.scrub(&driver_echo(&url)))
                .unwrap_or_default();
            for secret in &secrets {
                proptest::prop_assert_eq!(leaked(&shown, secret), None, "{} in {}", secret, shown);
                proptest::prop_assert_eq!(
                    leaked(&scrubbed, secret), None, "{} in {}", secret, scrubbed
                );
            }
        }

        #[test]
        fn arbitrary_input_never_panics(url in "\\PC{0,64}") {
            let _ = DatabaseUrl::parse(&url);
            let _ = redact_url(&url);
        }
    }

    #[test]
    fn scrub_removes_password_from_messages() {
        let url = DatabaseUrl {
            backend: Backend::Sqlite,
            target: String::new(),
            redacted: String::new(),
            secrets: secrets_of("postgres://app:hunter2@db/blog"),
        };
        assert_eq!(url.scrub("auth hunter2 failed"), "auth *** failed");
    }
}
