//! PostgreSQL: the capture triggers `pg_notify` each committed change; the
//! listener receives the notifications on its own connection.
//!
//! The listener's connection is a rust-postgres client, which can wait on
//! its socket for a notification with a timeout: the watcher sleeps until a
//! change arrives and applies it at once, with no polling. (diesel can only
//! read notifications that already arrived, so a URL that rust-postgres
//! cannot honour, see [`channel`], falls back to reading them every tick on
//! a diesel connection.) A `SELECT 1` at a quarter of the staleness bound
//! proves the connection alive and confirms that everything committed before
//! it was delivered (PostgreSQL sends pending notifications before it
//! answers); the watcher asks for one at once when its view has grown old
//! without a failure (the process was held up), rather than flush. A lost
//! connection may have lost notifications: the caches are flushed, and
//! flushed again once the listener is back. The connection carries
//! keepalive, connect and statement timeouts (see `session`), so a dead
//! server is noticed in seconds.

#![cfg(feature = "postgres")]

use std::time::{Duration, Instant};

use super::{channel::Channel, Context, FlushReason, Reconnect, Source};
use crate::error::{Error, Result};

/// The longest one wait for a notification lasts: how soon the watcher
/// notices it is told to stop.
const MAX_WAIT: Duration = Duration::from_millis(100);

pub(super) struct Listener {
    channel: Option<Channel>,
    /// What the last wait between checks met, for the next check to report.
    failed: Option<Error>,
    reconnect: Reconnect,
    last_heartbeat: Instant,
}

impl Listener {
    /// Connects and starts listening.
    pub(super) fn open(ctx: &Context) -> Result<Listener> {
        Ok(Listener {
            channel: Some(Channel::open(ctx)?),
            failed: None,
            reconnect: Reconnect::new(),
            last_heartbeat: Instant::now(),
        })
    }

    fn read(&mut self, ctx: &Context, confirm: bool) -> Result<Option<Instant>> {
        if let Some(err) = self.failed.take() {
            return Err(err);
        }
        let Some(channel) = self.channel.as_mut() else {
            return self.reopen(ctx);
        };
        if !channel.blocks() {
            channel.wait(ctx, Instant::now())?;
        }
        channel.settle_held(ctx)?;
        if !confirm && self.last_heartbeat.elapsed() < ctx.timing.heartbeat {
            return Ok(None);
        }
        let started = Instant::now();
        channel.heartbeat(ctx)?;
        self.last_heartbeat = started;
        // What arrived with the heartbeat waits for a position read, which
        // this check still owes before it can confirm everything before it.
        channel.settle_held(ctx)?;
        Ok(Some(started))
    }

    /// Listens again after a loss. Notifications sent before `LISTEN` took
    /// effect are gone, so whatever was cached meanwhile is flushed.
    fn reopen(&mut self, ctx: &Context) -> Result<Option<Instant>> {
        if !self.reconnect.due() {
            return Ok(None);
        }
        let started = Instant::now();
        self.channel = Some(Channel::open(ctx)?);
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
            self.channel = None;
            self.reconnect.failed(ctx, err);
        }
        result
    }

    /// Waits on a blocking channel until the next heartbeat is due (at most
    /// [`MAX_WAIT`]); a polled channel, or none, does not wait.
    fn wait(&mut self, ctx: &Context) -> bool {
        let Some(channel) = self.channel.as_mut().filter(|c| c.blocks()) else {
            return false;
        };
        if self.failed.is_some() {
            return false;
        }
        if channel.holds() {
            // Checked at once: held changes wait for the check's position read.
            return true;
        }
        let until = (self.last_heartbeat + ctx.timing.heartbeat).min(Instant::now() + MAX_WAIT);
        if let Err(err) = channel.wait(ctx, until) {
            self.failed = Some(err);
        }
        true
    }
}
