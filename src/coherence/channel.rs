//! The PostgreSQL listener's connection: a rust-postgres client that waits on
//! its socket for notifications, or, for a URL that client cannot honour, a
//! diesel connection whose notifications are read every tick.
//!
//! Once listening, the channel proves it hears other sessions: it sends a
//! probe notification through a session of the store's own URL and waits for
//! it. A transaction-mode pooler (PgBouncer's `pool_mode = transaction`)
//! fails this: it lends the listening session out between statements and
//! drops the notifications that reach it meanwhile ("got packet 'A' from
//! server when not linked"), while a `SELECT 1` heartbeat still succeeds, so
//! without the probe such a watcher would hear nothing and never say so. A
//! session URL that reaches another database fails it too.
//!
//! rust-postgres refuses libpq parameters it does not know (`sslrootcert`,
//! `keepalives_count`, `sslmode=verify-full`…) and, in this build, speaks no
//! TLS: rather than drop an operator's setting or encrypt less than the
//! pool's libpq does, such a URL gets the polled diesel connection.

#![cfg(feature = "postgres")]

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use diesel::{PgConnection, RunQueryDsl};
use pg_listener::fallible_iterator::FallibleIterator;

use super::{session, Context};
use crate::backend::{Connection, Manager};
use crate::dialect::postgres::PRIMARY_POSITION;
use crate::dialect::{self, CHANGES};
use crate::error::{Error, Result};
use crate::replica::{parse_lsn, Lsn};
use crate::url::{Backend, DatabaseUrl};

/// How long a new listener waits for its probe: far longer than a
/// notification takes to arrive from a reachable server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Starts a probe's payload. A capture trigger's payload starts with a
/// table name, a plain identifier, so no change is mistaken for a probe.
const PROBE_PREFIX: &str = "! probe ";

pub(super) struct Channel {
    conn: Conn,
    /// With replicas: notifications received but not applied yet, waiting
    /// for a position read of the primary (see [`settle_held`](Channel::settle_held)).
    held: Vec<String>,
}

enum Conn {
    /// Waits on its socket: a notification is applied the moment it arrives.
    Blocking(pg_listener::Client),
    /// Reads the notifications that already arrived, each tick.
    Polled(PgConnection),
}

impl Channel {
    /// Connects and listens, on a blocking client when the URL allows one,
    /// and proves it hears what is notified through the store's URL.
    pub(super) fn open(ctx: &Context) -> Result<Channel> {
        let conn = match blocking_config(&ctx.url) {
            Ok(config) => open_blocking(ctx, &config).map(Conn::Blocking)?,
            Err(why) => {
                note_polling(&why);
                open_polled(ctx).map(Conn::Polled)?
            }
        };
        let mut channel = Channel {
            conn,
            held: Vec::new(),
        };
        channel.hear_probe(ctx)?;
        Ok(channel)
    }

    /// Sends a probe through a session of the store's URL and waits for it,
    /// taking (applying or holding) every change that arrives meanwhile.
    fn hear_probe(&mut self, ctx: &Context) -> Result<()> {
        let probe = probe_payload();
        send_probe(ctx, &probe)?;
        let deadline = Instant::now() + PROBE_TIMEOUT;
        loop {
            let batch = self.next_batch(ctx, deadline)?;
            let heard = batch.contains(&probe);
            self.take(ctx, batch)?;
            if heard {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(probe_not_heard(ctx));
            }
        }
    }

    /// What arrived by `deadline`: a blocking client waits for the first
    /// notification; a polled connection asks the server once, a moment apart.
    fn next_batch(&mut self, ctx: &Context, deadline: Instant) -> Result<Vec<String>> {
        match &mut self.conn {
            Conn::Blocking(client) => {
                let left = deadline.saturating_duration_since(Instant::now());
                let next = client.notifications().timeout_iter(left).next();
                match next.map_err(|e| lost(ctx, &e))? {
                    Some(notification) => {
                        let mut batch = vec![notification.payload().to_owned()];
                        batch.extend(arrived(client, ctx)?);
                        Ok(batch)
                    }
                    None if client.is_closed() => Err(closed(ctx)),
                    None => Ok(Vec::new()),
                }
            }
            Conn::Polled(conn) => {
                std::thread::sleep(Duration::from_millis(5));
                diesel::sql_query("SELECT 1")
                    .execute(conn)
                    .map_err(diesel_lost)?;
                polled_arrived(conn)
            }
        }
    }

    /// Whether [`wait`](Channel::wait) sleeps until something arrives.
    pub(super) fn blocks(&self) -> bool {
        matches!(self.conn, Conn::Blocking(_))
    }

    /// Applies notifications as they arrive until `until`; a polled channel
    /// applies those that arrived already and returns. With replicas it
    /// holds them back instead and returns at once: a position read of the
    /// primary must precede their invalidations, and it is a network round
    /// trip, which belongs in a check the guard watches, not in this wait.
    pub(super) fn wait(&mut self, ctx: &Context, until: Instant) -> Result<()> {
        let holding = ctx.registry.requirement().enabled();
        let client = match &mut self.conn {
            Conn::Blocking(client) => client,
            Conn::Polled(conn) => {
                let arrived = polled_arrived(conn)?;
                return self.take(ctx, arrived);
            }
        };
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || (holding && !self.held.is_empty()) {
                return Ok(());
            }
            let next = client.notifications().timeout_iter(left).next();
            match next.map_err(|e| lost(ctx, &e))? {
                Some(notification) => {
                    let mut batch = vec![notification.payload().to_owned()];
                    batch.extend(arrived(client, ctx)?);
                    if holding {
                        self.held.extend(batch);
                    } else {
                        batch.iter().for_each(|payload| apply(ctx, payload));
                    }
                }
                // The iterator ends quietly when the server closed the connection.
                None if client.is_closed() => return Err(closed(ctx)),
                None => return Ok(()),
            }
        }
    }

    /// Applies `batch` at once, or with replicas holds it back.
    fn take(&mut self, ctx: &Context, batch: Vec<String>) -> Result<()> {
        if ctx.registry.requirement().enabled() {
            self.held.extend(batch);
        } else {
            batch.iter().for_each(|payload| apply(ctx, payload));
        }
        Ok(())
    }

    /// With replicas, applies the held notifications: first raises the
    /// required position to the primary's WAL position read now (their
    /// changes had committed before they were sent), then invalidates, so
    /// that a load starting after an invalidation finds the requirement
    /// raised (see `replica`). Those that arrive with the position's answer
    /// may have committed after it was read: they stay held for the next
    /// check. One round trip per call, so a stream of changes cannot keep a
    /// check running.
    pub(super) fn settle_held(&mut self, ctx: &Context) -> Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let requirement = ctx.registry.requirement();
        let ticket = requirement.ticket();
        let (lsn, next) = self.position(ctx)?;
        requirement.raise(lsn, ticket);
        let batch = std::mem::replace(&mut self.held, next);
        batch.iter().for_each(|payload| apply(ctx, payload));
        Ok(())
    }

    /// Whether notifications wait for [`settle_held`](Channel::settle_held).
    pub(super) fn holds(&self) -> bool {
        !self.held.is_empty()
    }

    /// The primary's WAL position, and the notifications that came with it.
    fn position(&mut self, ctx: &Context) -> Result<(Lsn, Vec<String>)> {
        match &mut self.conn {
            Conn::Blocking(client) => blocking_position(client, ctx),
            Conn::Polled(conn) => polled_position(conn),
        }
    }

    /// A `SELECT 1`, then every notification that arrived before its answer:
    /// all that was committed before it was sent. With replicas the query
    /// reads the primary's WAL position instead, which repairs an unknown
    /// requirement (after a flush) without raising a known one; what arrived
    /// is held for the next check.
    pub(super) fn heartbeat(&mut self, ctx: &Context) -> Result<()> {
        let requirement = ctx.registry.requirement();
        if requirement.enabled() {
            let ticket = requirement.ticket();
            let (lsn, arrived) = self.position(ctx)?;
            requirement.repair(lsn, ticket);
            self.held.extend(arrived);
            return Ok(());
        }
        let arrived = match &mut self.conn {
            Conn::Blocking(client) => {
                client.simple_query("SELECT 1").map_err(|e| lost(ctx, &e))?;
                arrived(client, ctx)?
            }
            Conn::Polled(conn) => {
                diesel::sql_query("SELECT 1")
                    .execute(conn)
                    .map_err(diesel_lost)?;
                polled_arrived(conn)?
            }
        };
        arrived.iter().for_each(|payload| apply(ctx, payload));
        Ok(())
    }
}

/// rust-postgres's settings for `url`, with the watcher's timeouts; `Err`
/// says why the URL needs the polled connection (free of any password).
fn blocking_config(url: &DatabaseUrl) -> std::result::Result<pg_listener::Config, String> {
    // rust-postgres reads this one in seconds, libpq in milliseconds.
    if url.target().contains("tcp_user_timeout") {
        return Err(
            "tcp_user_timeout means milliseconds to libpq, seconds to rust-postgres".into(),
        );
    }
    // libpq's parameters, by rust-postgres's names and units.
    let params: Vec<(&str, String)> = dialect::of(Backend::Postgres)
        .watcher_url_params()
        .iter()
        .map(|&(key, value)| match key {
            "keepalives_count" => ("keepalives_retries", value.to_owned()),
            "tcp_user_timeout" => {
                let ms: u64 = value.parse().unwrap_or(0);
                (key, ms.div_ceil(1000).to_string())
            }
            _ => (key, value.to_owned()),
        })
        .collect();
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let target = crate::url::with_params(url.target(), &params);
    let config: pg_listener::Config = target
        .parse()
        .map_err(|e: pg_listener::Error| url.scrub(&e.to_string()))?;
    if cfg!(feature = "postgres-tls")
        && config.get_ssl_mode() != pg_listener::config::SslMode::Disable
    {
        return Err("the pool's libpq may use TLS, and the waiting client has none".into());
    }
    Ok(config)
}

fn open_blocking(ctx: &Context, config: &pg_listener::Config) -> Result<pg_listener::Client> {
    let mut client = config
        .connect(pg_listener::NoTls)
        .map_err(|e| ctx.url.connection_error(&e.to_string()))?;
    let limits = session::statement_limits(Backend::Postgres);
    if !limits
        .iter()
        .any(|limit| client.batch_execute(limit).is_ok())
    {
        tracing::debug!("no statement time limit for the listener");
    }
    client
        .batch_execute(&dialect::postgres::listen())
        .map_err(|e| lost(ctx, &e))?;
    Ok(client)
}

#[allow(irrefutable_let_patterns)] // in a build with PostgreSQL alone
fn open_polled(ctx: &Context) -> Result<PgConnection> {
    let Connection::Postgres(mut conn) = ctx.connect()? else {
        return Err(Error::InvalidConfig {
            reason: "the listener needs a PostgreSQL connection".into(),
        });
    };
    diesel::connection::SimpleConnection::batch_execute(&mut conn, &dialect::postgres::listen())
        .map_err(diesel_lost)?;
    Ok(conn)
}

/// Says once per process why the listener polls.
fn note_polling(why: &str) {
    static NOTED: Once = Once::new();
    NOTED.call_once(|| {
        tracing::info!(
            reason = why,
            "coherence: the PostgreSQL listener reads notifications every tick instead of \
             waiting for them"
        );
    });
}

fn lost(ctx: &Context, err: &pg_listener::Error) -> Error {
    ctx.url
        .connection_error(&format!("the listener's connection failed: {err}"))
}

fn closed(ctx: &Context) -> Error {
    ctx.url
        .connection_error("the server closed the listener's connection")
}

fn diesel_lost(err: diesel::result::Error) -> Error {
    Error::from_diesel(err, Some(CHANGES), None)
}

fn polled_arrived(conn: &mut PgConnection) -> Result<Vec<String>> {
    conn.notifications_iter()
        .map(|notification| notification.map(|n| n.payload).map_err(diesel_lost))
        .collect()
}

/// The notifications that already arrived on a blocking client.
fn arrived(client: &mut pg_listener::Client, ctx: &Context) -> Result<Vec<String>> {
    let mut notifications = client.notifications();
    let mut arrived = notifications.iter();
    let mut batch = Vec::new();
    while let Some(notification) = arrived.next().map_err(|e| lost(ctx, &e))? {
        batch.push(notification.payload().to_owned());
    }
    Ok(batch)
}

/// The primary's WAL position, and the notifications that came with it.
fn blocking_position(
    client: &mut pg_listener::Client,
    ctx: &Context,
) -> Result<(Lsn, Vec<String>)> {
    let messages = client
        .simple_query(PRIMARY_POSITION)
        .map_err(|e| lost(ctx, &e))?;
    let lsn = messages
        .iter()
        .find_map(|message| match message {
            pg_listener::SimpleQueryMessage::Row(row) => row.get(0).and_then(parse_lsn),
            _ => None,
        })
        .ok_or_else(|| {
            ctx.url
                .connection_error("the primary reported no WAL position")
        })?;
    Ok((lsn, arrived(client, ctx)?))
}

fn polled_position(conn: &mut PgConnection) -> Result<(Lsn, Vec<String>)> {
    let lsn = crate::replica::primary_position_pg(conn).map_err(diesel_lost)?;
    Ok((lsn, polled_arrived(conn)?))
}

/// A probe payload no other listener's probe shares: this process's random
/// hash seed (different on every host) and a counter.
fn probe_payload() -> String {
    static SENT: AtomicU64 = AtomicU64::new(0);
    let mut seed = std::collections::hash_map::RandomState::new().build_hasher();
    seed.write_u32(std::process::id());
    let seed = seed.finish();
    let count = SENT.fetch_add(1, Ordering::Relaxed);
    format!("{PROBE_PREFIX}{seed:016x} {count}")
}

/// Notifies `probe` through a connection of the store's own URL, opened
/// for it and closed after.
#[allow(irrefutable_let_patterns)] // in a build with PostgreSQL alone
fn send_probe(ctx: &Context, probe: &str) -> Result<()> {
    let url = &ctx.store_url;
    // With the watcher's connect, keepalive and statement timeouts: a probe
    // must not hang the watcher on a server that stopped answering.
    let manager = Manager::new(session::watcher_url(url)?, ctx.timing.trust);
    let mut conn = manager.open().map_err(|e| url.connection_error(&e.0))?;
    session::prepare(&mut conn).map_err(|e| url.connection_error(&e.to_string()))?;
    let Connection::Postgres(mut conn) = conn else {
        return Err(Error::InvalidConfig {
            reason: "the listener's probe needs a PostgreSQL connection".into(),
        });
    };
    let sql = format!("SELECT pg_notify('{CHANGES}', '{probe}')");
    diesel::sql_query(sql)
        .execute(&mut conn)
        .map_err(|e| Error::from_diesel(e, Some(CHANGES), None))?;
    Ok(())
}

fn probe_not_heard(ctx: &Context) -> Error {
    let reason = if ctx.url.target() == ctx.store_url.target() {
        "coherence: the PostgreSQL watcher did not hear a notification sent from another \
         session of its URL: the URL goes through a transaction-mode pooler (PgBouncer's \
         pool_mode = transaction), which lends the watcher's session out between statements \
         and drops the changes that reach it meanwhile. Set StoreBuilder::session_url to a \
         URL of the same database that reaches the server directly or through a \
         session-mode pool"
    } else {
        "coherence: the PostgreSQL watcher, connected by session_url, did not hear a \
         notification sent through the store's URL: session_url must reach the same \
         database, directly or through a session-mode pool"
    };
    Error::InvalidConfig {
        reason: format!("{reason} (waited {PROBE_TIMEOUT:?})"),
    }
}

fn apply(ctx: &Context, payload: &str) {
    // Every listener hears every store's probes; they change nothing.
    if payload.starts_with(PROBE_PREFIX) {
        return;
    }
    if let Some((table, op, id, key_values)) = parse(payload) {
        return ctx.apply(table, id, op, key_values);
    }
    // A payload that names a table but no row may stand for any row of it.
    match payload.split(' ').next().filter(|table| !table.is_empty()) {
        Some(table) => {
            tracing::warn!(payload, "malformed change notification: its table emptied");
            ctx.apply(table, 0, "T", None);
        }
        None => tracing::warn!(payload, "change notification without a table ignored"),
    }
}

/// `"table op id"`, as the capture trigger writes it, followed by
/// `" key_values"` when it captures key columns. The key values are the rest
/// of the payload, spaces and all: a key column holding text with a space in
/// it must not cost the row its invalidation (the values that do not parse
/// retire every list of the table instead, as on the change-log path).
fn parse(payload: &str) -> Option<(&str, &str, i64, Option<&str>)> {
    let mut parts = payload.splitn(4, ' ');
    let table = parts.next()?;
    let op = parts.next()?;
    let id = parts.next()?.parse().ok()?;
    Some((table, op, id, parts.next()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_or_are_refused() {
        assert_eq!(parse("users U 42"), Some(("users", "U", 42, None)));
        assert_eq!(parse("users T 0"), Some(("users", "T", 0, None)));
        assert_eq!(
            parse("comments U 5 post_id=1,post_id=2"),
            Some(("comments", "U", 5, Some("post_id=1,post_id=2")))
        );
        assert_eq!(
            parse("tickets U 7 status=in review"),
            Some(("tickets", "U", 7, Some("status=in review"))),
            "a key value with a space still names the row"
        );
        for bad in [
            "",
            "users",
            "users U",
            "users U x",
            "users U 99999999999999999999",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    fn config_of(url: &str) -> std::result::Result<pg_listener::Config, String> {
        blocking_config(&DatabaseUrl::parse(url).unwrap())
    }

    #[test]
    fn a_plain_url_waits_with_the_watchers_timeouts() {
        let config = config_of("postgres://app:s3cret@db:5433/blog?application_name=x")
            .unwrap_or_else(|why| panic!("{why}"));
        assert_eq!(config.get_dbname(), Some("blog"));
        assert_eq!(config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(config.get_keepalives_retries(), Some(2));
        assert_eq!(
            config.get_tcp_user_timeout(),
            Some(&std::time::Duration::from_secs(5))
        );
        // The operator's choice wins.
        let config = config_of("postgres://db/blog?connect_timeout=30").unwrap();
        assert_eq!(
            config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(30))
        );
    }

    #[test]
    fn a_url_rust_postgres_cannot_honour_polls_and_the_reason_keeps_no_secret() {
        for url in [
            "postgres://app:s3cret@db/blog?sslrootcert=/etc/ca.pem",
            "postgres://app:s3cret@db/blog?keepalives_count=3",
            "postgres://app:s3cret@db/blog?sslmode=verify-full",
            "postgres://app:s3cret@db/blog?tcp_user_timeout=5000",
        ] {
            let why = config_of(url).expect_err(url);
            assert!(!why.contains("s3cret"), "{why}");
        }
    }
}
