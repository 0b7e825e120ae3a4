//! Creating and dropping the database a URL names: a SQLite file, or a
//! database on a PostgreSQL or MySQL server (through the server's maintenance
//! database).

use std::path::PathBuf;

use diesel::connection::SimpleConnection;

use crate::backend::Connection;
use crate::dialect;
use crate::error::{Error, Result};
use crate::url::{Backend, DatabaseUrl};

/// Whether the database `url` names exists.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let url = format!("sqlite://{}", dir.path().join("new.db").display());
/// assert!(!larder::database_exists(&url)?);
/// assert!(larder::create_database(&url)?);
/// assert!(larder::database_exists(&url)?);
/// assert!(larder::drop_database(&url)?);
/// # Ok::<(), larder::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::InvalidUrl`], or [`Error::Connection`] when the server cannot be reached.
pub fn database_exists(url: &str) -> Result<bool> {
    let url = DatabaseUrl::parse(url)?;
    match url.backend() {
        Backend::Sqlite => Ok(sqlite_file(&url).is_file()),
        _ => server_exists(&url),
    }
}

/// Creates the database `url` names; returns false when it already existed.
///
/// # Errors
///
/// [`Error::InvalidUrl`] (also for a database name other than letters, digits,
/// `_`, `-` and `$`), [`Error::Connection`], or [`Error::Database`] when the
/// server refuses.
pub fn create_database(url: &str) -> Result<bool> {
    let parsed = DatabaseUrl::parse(url)?;
    if database_exists(url)? {
        return Ok(false);
    }
    match parsed.backend() {
        Backend::Sqlite => drop(Connection::establish(url)?),
        _ => admin_execute(
            &parsed,
            &format!("CREATE DATABASE {}", quoted_name(&parsed)?),
        )?,
    }
    Ok(true)
}

/// Drops the database `url` names (for SQLite, the file, its `-wal` and
/// `-shm` files and the `.locks` directory of its named locks); returns false
/// when there was none.
///
/// # Errors
///
/// As [`create_database`]; also when the database is in use and the server
/// refuses to drop it (on MySQL, [`Error::Busy`] when another session's open
/// transaction still holds one of its tables after 5 s).
pub fn drop_database(url: &str) -> Result<bool> {
    let parsed = DatabaseUrl::parse(url)?;
    if !database_exists(url)? {
        return Ok(false);
    }
    match parsed.backend() {
        Backend::Sqlite => remove_sqlite_files(&parsed)?,
        Backend::Mysql => admin_execute(
            &parsed,
            &format!(
                "SET SESSION lock_wait_timeout = {IN_USE_WAIT_SECS}; DROP DATABASE {}",
                quoted_name(&parsed)?
            ),
        )?,
        _ => admin_execute(&parsed, &format!("DROP DATABASE {}", quoted_name(&parsed)?))?,
    }
    Ok(true)
}

/// How long a MySQL `DROP DATABASE` waits for the metadata locks of other
/// sessions' open transactions before it fails with [`Error::Busy`], as
/// PostgreSQL waits 5 s for other sessions to leave before it refuses. MySQL
/// takes every table's lock before it drops any, so nothing is dropped then;
/// without a limit it waited `lock_wait_timeout` (a day on MariaDB, a year on
/// MySQL), every new query on those tables queued behind it.
const IN_USE_WAIT_SECS: u32 = 5;

fn sqlite_file(url: &DatabaseUrl) -> PathBuf {
    PathBuf::from(crate::url::sqlite_file_path(url.target()))
}

fn remove_sqlite_files(url: &DatabaseUrl) -> Result<()> {
    // Named after the file as SQLite resolves it (see `lock::flock`): found
    // while the file is still there to resolve.
    let locks = std::fs::canonicalize(sqlite_file(url)).map(|file| {
        let mut dir = file.into_os_string();
        dir.push(".locks");
        PathBuf::from(dir)
    });
    for suffix in ["", "-wal", "-shm"] {
        let mut path = sqlite_file(url).into_os_string();
        path.push(suffix);
        match std::fs::remove_file(&path) {
            Err(e) if suffix.is_empty() || e.kind() != std::io::ErrorKind::NotFound => {
                return Err(url.connection_error(&format!("cannot remove the database file: {e}")));
            }
            _ => {}
        }
    }
    // The named locks' files: empty, but one per lock name ever taken.
    if let Ok(locks) = locks {
        match std::fs::remove_dir_all(&locks) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(url.connection_error(&format!("cannot remove the lock files: {e}")));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The URL's database name, checked to be a plain identifier.
fn database_name(url: &DatabaseUrl) -> Result<String> {
    let (_, _, _, path) = server_url_parts(url.target());
    let name = path.split(['?', '#']).next().unwrap_or("");
    if url.backend() == Backend::Postgres && names_dbname(path) {
        return Err(Error::InvalidUrl {
            url: url.redacted().to_owned(),
            reason: "a dbname parameter names the database libpq connects to, which may not be \
                     the URL's path: name the database in the path only"
                .into(),
        });
    }
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-$".contains(c));
    if plain {
        Ok(name.to_owned())
    } else {
        Err(Error::InvalidUrl {
            url: url.redacted().to_owned(),
            reason: "the URL must name a database made of letters, digits, '_', '-' or '$'".into(),
        })
    }
}

/// A server URL's scheme, user info, host and what follows the host's `/`
/// (the database name, then the query). The host ends at the first `/`, as
/// libpq and MySQL's URL parser end it, and the user info at the last `@`
/// before that, so that a query value holding `@` and `/`
/// (`application_name=deploy@web/blue`) is never read as the host and the
/// database name: the name is the one the driver connects to.
fn server_url_parts(target: &str) -> (&str, &str, &str, &str) {
    let (scheme, rest) = target.split_once("://").unwrap_or(("", target));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, host) = authority.rsplit_once('@').unwrap_or(("", authority));
    (scheme, userinfo, host, path)
}

/// Whether the query after a URL's path sets `dbname` (libpq decodes keys),
/// which libpq reads after the path: the database it connects to.
fn names_dbname(path: &str) -> bool {
    let query = path.split_once('?').map_or("", |(_, query)| query);
    query.split('&').any(|pair| {
        let key = pair.split_once('=').map_or(pair, |(key, _)| key);
        crate::url::percent_decode(key) == "dbname"
    })
}

fn quoted_name(url: &DatabaseUrl) -> Result<String> {
    let name = database_name(url)?;
    Ok(dialect::of(url.backend()).quote(&name))
}

/// The same server with its maintenance database: `postgres` on PostgreSQL,
/// none on MySQL.
fn admin_url(url: &DatabaseUrl) -> Result<String> {
    let name = database_name(url)?;
    let (scheme, userinfo, host, path) = server_url_parts(url.target());
    let query = path.strip_prefix(name.as_str()).unwrap_or("");
    let admin_db = dialect::of(url.backend()).admin_database();
    let at = if userinfo.is_empty() {
        String::new()
    } else {
        format!("{userinfo}@")
    };
    Ok(format!("{scheme}://{at}{host}/{admin_db}{query}"))
}

fn admin_execute(url: &DatabaseUrl, sql: &str) -> Result<()> {
    let mut admin = Connection::establish(&admin_url(url)?).map_err(|e| rescrub(url, e))?;
    admin
        .batch_execute(sql)
        .map_err(|e| Error::from_diesel(e, None, None))
        .map_err(|e| rescrub(url, e))
}

fn server_exists(url: &DatabaseUrl) -> Result<bool> {
    use diesel::sql_types::Text;
    use diesel::RunQueryDsl;
    let name = database_name(url)?;
    let mut admin = Connection::establish(&admin_url(url)?).map_err(|e| rescrub(url, e))?;
    let sql = dialect::of(url.backend()).database_named();
    let query = diesel::dsl::sql::<Text>(sql).bind::<Text, _>(&name);
    let found: Vec<String> = crate::with_connection!(&mut admin, |c| query.load(c))
        .map_err(|e| rescrub(url, Error::from_diesel(e, None, None)))?;
    Ok(!found.is_empty())
}

/// Errors from the maintenance connection name its URL; show the user's URL,
/// redacted, instead.
fn rescrub(url: &DatabaseUrl, err: Error) -> Error {
    match err {
        Error::Connection { message, .. } => url.connection_error(&message),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_url_swaps_the_database_name() {
        if !Backend::Postgres.is_built() {
            return;
        }
        let url = DatabaseUrl::parse("postgres://app:pw@db:5432/blog?sslmode=disable").unwrap();
        assert_eq!(
            admin_url(&url).unwrap(),
            "postgres://app:pw@db:5432/postgres?sslmode=disable"
        );
        assert_eq!(database_name(&url).unwrap(), "blog");
        // A query value's `@` and `/` belong to the query, not to the host.
        let url =
            DatabaseUrl::parse("postgres://app:p#w@db/blog?application_name=a@b/other").unwrap();
        assert_eq!(database_name(&url).unwrap(), "blog");
        assert_eq!(
            admin_url(&url).unwrap(),
            "postgres://app:p#w@db/postgres?application_name=a@b/other"
        );
        let bad = DatabaseUrl::parse("postgres://db/bl;og").unwrap();
        assert!(matches!(database_name(&bad), Err(Error::InvalidUrl { .. })));
    }

    /// SQLite's URI filenames name the file after `file:` (an empty or
    /// `localhost` authority allowed), with the query and fragment left out:
    /// creating, finding and dropping such a database works on that file.
    #[test]
    fn a_sqlite_uri_filename_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub").join("app.db");
        std::fs::create_dir(file.parent().unwrap()).unwrap();
        for url in [
            format!("sqlite:file:{}", file.display()),
            format!("sqlite:file://{}?mode=rwc", file.display()),
            format!("file://localhost{}?cache=private#x", file.display()),
        ] {
            assert!(!database_exists(&url).unwrap(), "{url}");
            assert!(create_database(&url).unwrap(), "{url}");
            assert!(file.is_file(), "{url} created {}", file.display());
            assert!(database_exists(&url).unwrap(), "{url}");
            assert!(drop_database(&url).unwrap(), "{url}");
            assert!(!file.exists(), "{url}");
        }
    }
}
