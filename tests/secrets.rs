//! No part of a password given in a database URL, in its user info or in any
//! secret-bearing query parameter, however often given, shows in an error, in
//! `Debug` or in `Display`, against the real servers: drivers echo the parts
//! of a URL they cannot use (libpq ends the user info at the first `@` or `/`
//! and reports what follows as a host, a port or a database).

mod common;

use std::time::Duration;

use common::targets;
use larder::{Backend, Store};
use larder_blog::prelude::*;

/// Long and distinctive: any 4 of its characters in a row found in printed
/// text came from it.
const SECRET: &str = "Zq9SECRETx";

/// User-info passwords holding, unencoded, the characters that end a URL part;
/// most are placed so that libpq echoes a piece of at least 4 characters (as a
/// port, a host or a query key).
const USER_INFO_PASSWORDS: &[&str] = &[
    "Zq9SE/CRETx",
    "Zq9SECRETx/",
    "/Zq9SECRETx",
    "Zq9SE@CRETx",
    "Zq9SE?CRETx",
    "Zq9SE#CRETx",
    "Zq9SE:CRETx",
    "Zq9SE,CRETx/x",
    "Zq9SE%2FCRETx",
    "Zq9/SE@CRETx?#:",
];

/// Query strings with the secret in a secret-bearing parameter (`{S}`).
const QUERIES: &[&str] = &[
    "password=x&password={S}",
    "sslpassword={S}&password=y",
    "password={S}&password=y",
    "password=x&PASSWORD={S}",
    "pass%77ord={S}",
    // libpq echoes a badly percent-encoded value as written.
    "password=%zz{S}",
    "sslpassword=%zz{S}",
    // A second `?` hides no parameter.
    "sslmode=disable?password={S}",
];

/// Every piece of `secret` at least 4 characters long.
fn fragments(secret: &str) -> Vec<&str> {
    let ends: Vec<usize> = secret
        .char_indices()
        .map(|(i, _)| i)
        .chain([secret.len()])
        .collect();
    let mut out = Vec::new();
    for (n, &start) in ends.iter().enumerate() {
        for &end in ends.iter().skip(n + 4) {
            out.push(&secret[start..end]);
        }
    }
    out
}

/// `url` with `password` in its user info (the test URLs name a user).
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a server URL");
    let (user, host) = rest.split_once('@').expect("the test URL names a user");
    format!("{scheme}://{user}:{password}@{host}")
}

/// Everything larder prints about `url`: the builder's `Debug`, then the
/// store's URL (`Display`, `Debug`, `redacted()`) or the error, and the
/// errors of a single connection and of the maintenance-database path.
fn everything_shown(url: &str) -> String {
    let builder = Store::builder(url)
        .pool_size(1)
        .coherence(false)
        .connection_timeout(Duration::from_secs(2));
    let mut shown = format!("{builder:?}\n");
    match builder.build() {
        Ok(store) => {
            let url = store.url();
            shown += &format!("{url} {url:?} {} {store:?}\n", url.redacted());
        }
        Err(err) => shown += &with_sources(&err),
    }
    if let Err(err) = larder::Connection::establish(url) {
        shown += &format!("{err} {err:?}\n");
    }
    if let Err(err) = larder::database_exists(url) {
        shown += &with_sources(&err);
    }
    shown
}

/// `err` and every error in its `source()` chain, in `Display` and `Debug`.
fn with_sources(err: &larder::Error) -> String {
    let mut shown = format!("{err} {err:?}\n");
    let mut source = std::error::Error::source(err);
    while let Some(err) = source {
        shown += &format!("{err} {err:?}\n");
        source = err.source();
    }
    shown
}

/// What of `secret` (as written, and percent-decoded as drivers report it)
/// shows for `url`, if anything does.
fn leak(url: &str, secret: &str) -> Option<String> {
    let shown = everything_shown(url);
    let decoded = secret.replace("%2F", "/");
    fragments(secret)
        .into_iter()
        .chain(fragments(&decoded))
        .find(|fragment| shown.contains(fragment))
        .map(|fragment| format!("{fragment:?} of the password in {url} shows in:\n{shown}"))
}

/// Fails with every leak found, not only the first.
fn assert_no_leaks(leaks: Vec<String>) {
    assert!(
        leaks.is_empty(),
        "{} leaks:\n\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}

/// The URL of a database each backend can open: the server's maintenance
/// database, or a SQLite file in `dir`.
fn base_url(admin_url: Option<&str>, dir: &std::path::Path) -> String {
    match admin_url {
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}", dir.join("secrets.db").display()),
    }
}

#[test]
fn no_fragment_of_a_user_info_password_shows() {
    let mut leaks = Vec::new();
    for target in targets() {
        let Some(admin) = target.admin_url() else {
            continue; // a SQLite URL has no user info
        };
        for password in USER_INFO_PASSWORDS {
            let url = with_password(admin, password);
            leaks.extend(leak(&url, password));
            let url = format!("{url}?password=x&password={SECRET}");
            leaks.extend(leak(&url, password));
            leaks.extend(leak(&url, SECRET));
        }
    }
    assert_no_leaks(leaks);
}

#[test]
fn no_fragment_of_a_secret_parameter_shows_however_often_given() {
    let dir = tempfile::tempdir().unwrap();
    let mut leaks = Vec::new();
    for target in targets() {
        let base = base_url(target.admin_url(), dir.path());
        for query in QUERIES {
            let url = format!("{base}?{}", query.replace("{S}", SECRET));
            leaks.extend(leak(&url, SECRET));
        }
    }
    assert_no_leaks(leaks);
}

/// A store opened with a password (the test server trusts the user and never
/// asks for it) whose database then vanishes: the checkout error names the
/// driver's reason, and neither it nor any error in its `source()` chain shows
/// the password.
#[test]
fn a_checkout_error_and_its_sources_show_no_password() {
    for target in targets() {
        if target.backend != Backend::Postgres {
            continue; // a server whose database can vanish under the pool
        }
        let db = target.fresh();
        let url = with_password(&db.url(), SECRET);
        let store = Store::builder(&url)
            .pool_size(1)
            .coherence(false)
            .connection_timeout(Duration::from_millis(500))
            .build()
            .expect("the test server trusts its user");
        let name = db.url().rsplit('/').next().unwrap().to_owned();
        let mut admin = larder::Connection::establish(target.admin_url().unwrap()).unwrap();
        diesel::connection::SimpleConnection::batch_execute(
            &mut admin,
            &format!("DROP DATABASE {name} WITH (FORCE)"),
        )
        .unwrap();
        let err = store.users().get(1).unwrap_err();
        assert!(
            matches!(err, larder::Error::PoolTimeout { cause: Some(_), .. }),
            "{err:?}"
        );
        let shown = with_sources(&err);
        assert!(
            std::error::Error::source(&err).is_some(),
            "no source: {shown}"
        );
        let leaked = fragments(SECRET)
            .into_iter()
            .find(|fragment| shown.contains(fragment));
        assert!(
            leaked.is_none(),
            "{leaked:?} of the password shows in:\n{shown}"
        );
    }
}

/// A piece of a password too short to remove from a message safely (here
/// "pa", which libpq reports as the port) withholds the driver's message.
#[test]
fn a_short_password_piece_withholds_the_driver_message() {
    for target in targets() {
        if target.backend != Backend::Postgres {
            continue;
        }
        let admin = target.admin_url().expect("a server URL");
        let url = with_password(admin, "pa/ss");
        let shown = everything_shown(&url);
        assert!(!shown.contains("\"pa\""), "{shown}");
        assert!(!shown.contains("\"ss"), "{shown}");
    }
}

/// A libpq keyword/value connection string (what many PostgreSQL users keep
/// in `DATABASE_URL`) is refused with a typed error that shows no password,
/// and creates nothing: it used to be taken for a SQLite file name, password
/// and all, printed in clear and created in the working directory.
#[test]
fn a_libpq_keyword_value_string_is_refused_without_its_password() {
    for conninfo in [
        format!("host=db.example.org user=app password={SECRET} dbname=blog"),
        format!("dbname=blog password='{SECRET} x' host=db"),
        format!("sqlite:host=db password={SECRET}"),
    ] {
        let err = larder::DatabaseUrl::parse(&conninfo).expect_err(&conninfo);
        assert!(matches!(err, larder::Error::InvalidUrl { .. }), "{err:?}");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(&SECRET[2..6]), "{shown}");
        assert!(
            shown.contains("postgres://"),
            "says what to write instead: {shown}"
        );
        let opened = Store::builder(&conninfo)
            .build()
            .map(drop)
            .expect_err(&conninfo);
        assert!(!format!("{opened} {opened:?}").contains(&SECRET[2..6]));
        let file = conninfo.trim_start_matches("sqlite:");
        assert!(!std::path::Path::new(file).exists(), "created {file:?}");
    }
}
