//! Parsing a database URL into a backend and a connection target, and keeping
//! its password out of everything that is printed.

use std::fmt;
use std::path::Path;

use crate::error::{Error, Result};

/// The database engine a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// An embedded SQLite file: `sqlite://path`, `sqlite:path` or a bare path.
    Sqlite,
    /// A PostgreSQL server: `postgres://…` or `postgresql://…` (cargo feature `postgres`).
    Postgres,
    /// A MySQL or MariaDB server: `mysql://…` (cargo feature `mysql`).
    Mysql,
}

impl Backend {
    /// The backend's short name, as used for its migrations folder.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
        }
    }

    /// Whether this build of larder includes the backend.
    pub fn is_built(self) -> bool {
        match self {
            Backend::Sqlite => true,
            Backend::Postgres => cfg!(feature = "postgres"),
            Backend::Mysql => cfg!(feature = "mysql"),
        }
    }
}

/// A parsed database URL.
///
/// `Debug` and `Display` show the URL with its password replaced by `***`.
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
    password: Option<String>,
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
        let password = password_of(url);
        let invalid = |reason: String| Error::InvalidUrl {
            url: redacted.clone(),
            reason: scrub(&reason, password.as_deref()),
        };
        let url = url.trim();
        if url.is_empty() {
            return Err(invalid("the URL is empty".into()));
        }
        let (backend, target) = match url.split_once("://") {
            Some(("sqlite", path)) => (Backend::Sqlite, path),
            Some(("postgres" | "postgresql", _)) => (Backend::Postgres, url),
            Some(("mysql", _)) => (Backend::Mysql, url),
            Some((scheme, _)) => {
                return Err(invalid(format!(
                    "unknown scheme {scheme:?}: use sqlite://, postgres:// or mysql://"
                )))
            }
            None => (Backend::Sqlite, url.strip_prefix("sqlite:").unwrap_or(url)),
        };
        if !backend.is_built() {
            return Err(invalid(format!(
                "the {0} backend is not built into this larder: enable its cargo feature `{0}`",
                backend.name()
            )));
        }
        if backend == Backend::Sqlite {
            check_sqlite_path(target, password.is_none()).map_err(invalid)?;
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
            password,
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

    /// The URL with its password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// A connection failure, with this URL's password removed from the message.
    pub(crate) fn connection_error(&self, message: &str) -> Error {
        Error::Connection {
            url: self.redacted.clone(),
            message: self.scrub(message),
        }
    }

    /// Removes this URL's password from a driver message before it is shown.
    pub(crate) fn scrub(&self, message: &str) -> String {
        scrub(message, self.password.as_deref())
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

fn scrub(message: &str, password: Option<&str>) -> String {
    match password {
        Some(password) if !password.is_empty() => message.replace(password, "***"),
        _ => message.to_owned(),
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
    if path == ":memory:" || path.contains("mode=memory") {
        return Err(
            "in-memory SQLite is not supported: every pooled connection would open its own \
             empty database; use a file (a temporary one for tests)"
                .into(),
        );
    }
    let dir = match Path::new(path).parent() {
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

/// The user-info password, if the URL has one. Users paste passwords without
/// percent-encoding them, so a password may hold `/`, `?`, `#` or `@`: the
/// user-info is taken to run up to the *last* `@`, which can only over-redact.
fn password_of(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let (userinfo, _) = rest.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    Some(password.to_owned())
}

/// Replaces the password in `scheme://user:password@host…` and in a
/// `password=` query parameter with `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let mut out = match (url.split_once("://"), password_of(url)) {
        (Some((scheme, rest)), Some(_)) => {
            let (userinfo, host_and_tail) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host_and_tail}")
        }
        _ => url.to_owned(),
    };
    if let Some(start) = out.find("password=") {
        let value_start = start + "password=".len();
        let value_end = out[value_start..]
            .find(['&', ' ', '#'])
            .map_or(out.len(), |i| value_start + i);
        out.replace_range(value_start..value_end, "***");
    }
    out
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

    proptest::proptest! {
        /// Any string: parsing returns a value or a typed error, never panics,
        /// and a password given in the URL never shows in what is printed.
        #[test]
        fn parsing_never_panics_or_leaks_a_password(
            scheme in "(sqlite|postgres|postgresql|mysql|ftp|[a-z]{1,8})",
            user in "[a-z]{0,6}",
            password in "pw[A-Za-z0-9@:/?#%]{4,12}",
            rest in "\\PC{0,24}",
        ) {
            let url = format!("{scheme}://{user}:{password}@{rest}");
            let shown = match DatabaseUrl::parse(&url) {
                Ok(parsed) => format!("{parsed} {parsed:?} {}", parsed.redacted()),
                Err(err) => format!("{err} {err:?}"),
            };
            proptest::prop_assert!(!shown.contains(&password), "{} leaked in {}", password, shown);
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
            password: Some("hunter2".into()),
        };
        assert_eq!(url.scrub("auth hunter2 failed"), "auth *** failed");
    }
}
