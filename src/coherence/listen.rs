//! PostgreSQL: the capture triggers `pg_notify` each committed change; the
//! listener reads the notifications on its own connection.
//!
//! Reading notifications that already arrived costs no round trip, so the
//! listener does it every tick. A `SELECT 1` at a quarter of the staleness
//! bound proves the connection alive and confirms that everything committed
//! before it was delivered (PostgreSQL sends pending notifications before it
//! answers); the watcher asks for one at once when its view has grown old
//! without a failure (the process was held up), rather than flush. A lost
//! connection may have lost notifications: the caches are flushed, and
//! flushed again once the listener is back. The connection carries
//! keepalive, connect and statement timeouts (see `session`), so a dead
//! server is noticed in seconds.

#![cfg(feature = "postgres")]

use std::time::Instant;

use diesel::{PgConnection, RunQueryDsl};

use super::{Context, FlushReason, Reconnect, Source};
use crate::backend::Connection;
use crate::dialect::{self, CHANGES};
use crate::error::{Error, Result};

pub(super) struct Listener {
    conn: Option<PgConnection>,
    reconnect: Reconnect,
    last_heartbeat: Instant,
}

impl Listener {
    /// Connects and starts listening.
    pub(super) fn open(ctx: &Context) -> Result<Listener> {
        Ok(Listener {
            conn: Some(listen(ctx)?),
            reconnect: Reconnect::new(),
            last_heartbeat: Instant::now(),
        })
    }

    fn read(&mut self, ctx: &Context, confirm: bool) -> Result<Option<Instant>> {
        let Some(conn) = self.conn.as_mut() else {
            return self.reopen(ctx);
        };
        drain(conn, ctx)?;
        if !confirm && self.last_heartbeat.elapsed() < ctx.timing.heartbeat {
            return Ok(None);
        }
        let started = Instant::now();
        diesel::sql_query("SELECT 1").execute(conn).map_err(lost)?;
        drain(conn, ctx)?;
        self.last_heartbeat = started;
        Ok(Some(started))
    }

    /// Listens again after a loss. Notifications sent before `LISTEN` took
    /// effect are gone, so whatever was cached meanwhile is flushed.
    fn reopen(&mut self, ctx: &Context) -> Result<Option<Instant>> {
        if !self.reconnect.due() {
            return Ok(None);
        }
        let started = Instant::now();
        self.conn = Some(listen(ctx)?);
        self.reconnect.recovered(ctx);
        ctx.flush(FlushReason::ListenerReconnected);
        self.last_heartbeat = started;
        Ok(Some(started))
    }
}

impl Source for Listener {
    fn check(&mut self, ctx: &Context, confirm: bool) -> Result<Option<Instant>> {
        let result = self.read(ctx, confirm);
        if let Err(err) = &result {
            self.conn = None;
            self.reconnect.failed(ctx, err);
        }
        result
    }
}

#[allow(irrefutable_let_patterns)] // in a build with PostgreSQL alone
fn listen(ctx: &Context) -> Result<PgConnection> {
    let Connection::Postgres(mut conn) = ctx.connect()? else {
        return Err(Error::InvalidConfig {
            reason: "the listener needs a PostgreSQL connection".into(),
        });
    };
    diesel::connection::SimpleConnection::batch_execute(&mut conn, &dialect::postgres::listen())
        .map_err(lost)?;
    Ok(conn)
}

fn lost(err: diesel::result::Error) -> Error {
    Error::from_diesel(err, Some(CHANGES), None)
}

/// Applies every notification that has arrived.
fn drain(conn: &mut PgConnection, ctx: &Context) -> Result<()> {
    for notification in conn.notifications_iter() {
        let notification = notification.map_err(lost)?;
        match parse(&notification.payload) {
            Some((table, op, id, key_values)) => ctx.apply(table, id, op, key_values),
            None => {
                tracing::warn!(payload = %notification.payload, "malformed change notification ignored")
            }
        }
    }
    Ok(())
}

/// `"table op id"`, as the capture trigger writes it, followed by
/// `" key_values"` when it captures key columns.
fn parse(payload: &str) -> Option<(&str, &str, i64, Option<&str>)> {
    let mut parts = payload.split(' ');
    let table = parts.next()?;
    let op = parts.next()?;
    let id = parts.next()?.parse().ok()?;
    let key_values = parts.next();
    parts
        .next()
        .is_none()
        .then_some((table, op, id, key_values))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn payloads_parse_or_are_refused() {
        assert_eq!(parse("users U 42"), Some(("users", "U", 42, None)));
        assert_eq!(parse("users T 0"), Some(("users", "T", 0, None)));
        assert_eq!(
            parse("comments U 5 post_id=1,post_id=2"),
            Some(("comments", "U", 5, Some("post_id=1,post_id=2")))
        );
        for bad in [
            "",
            "users",
            "users U",
            "users U x",
            "users U 1 2 3",
            "users U 99999999999999999999",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
