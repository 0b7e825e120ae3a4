//! SQLite and MySQL: the capture triggers append each change to the
//! `larder_changes` table in the writing transaction; the poller reads the rows
//! past the highest id it has seen.
//!
//! On SQLite one writer commits at a time, so ids appear in order and a
//! high-water mark is exact; `PRAGMA data_version` tells without a query
//! whether any other connection committed at all. On MySQL concurrent
//! transactions take ids first and commit in any order, so an id skipped over
//! is remembered as a gap and read again until it appears or is older than
//! [`GAP_TIMEOUT`] (a rolled-back transaction leaves its id unused forever).
//! Each poller also prunes rows older than [`RETENTION`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use diesel::prelude::*;

use super::{Context, Reconnect, Source};
use crate::backend::Connection;
use crate::error::{Error, Result};

/// How long change-log rows are kept for slow readers.
const RETENTION: Duration = Duration::from_secs(300);
/// How long a MySQL poller waits for a skipped id to commit.
const GAP_TIMEOUT: Duration = RETENTION;
/// How often each poller prunes the log and checks it was not recreated.
const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// Most rows read per query; a poll reads on until it gets fewer.
const BATCH: i64 = 5_000;
/// Most gaps remembered; beyond it the oldest are given up.
const MAX_GAPS: usize = 10_000;

diesel::table! {
    larder_changes (id) {
        id -> BigInt,
        table_name -> Text,
        row_id -> BigInt,
        op -> Text,
    }
}

#[derive(QueryableByName)]
struct DataVersion {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    data_version: i64,
}

/// Where the poller stands in the change log.
enum Position {
    /// The log does not exist (migrations not run): nothing can be trusted.
    Missing,
    /// Every row up to `last` has been applied, except the `gaps`.
    At {
        last: i64,
        gaps: BTreeMap<i64, Instant>,
    },
}

pub(super) struct LogPoller {
    conn: Option<Connection>,
    reconnect: Reconnect,
    position: Position,
    data_version: Option<i64>,
    last_prune: Instant,
    warned_missing: bool,
}

impl LogPoller {
    /// Connects and reads where the log ends now: nothing is cached yet, so
    /// older changes do not matter.
    pub(super) fn open(ctx: &Context) -> Result<LogPoller> {
        let mut conn = ctx.connect()?;
        // The version first: a commit between the two reads is then read again.
        let data_version = data_version(&mut conn)?;
        let position = head(&mut conn)?;
        Ok(LogPoller {
            conn: Some(conn),
            reconnect: Reconnect::new(),
            position,
            data_version,
            // Prune on the first poll: a log nobody read for a while may be long.
            last_prune: Instant::now()
                .checked_sub(PRUNE_EVERY)
                .unwrap_or_else(Instant::now),
            warned_missing: false,
        })
    }

    fn read(&mut self, ctx: &Context) -> Result<Option<Instant>> {
        if self.conn.is_none() {
            if !self.reconnect.due() {
                return Ok(None);
            }
            let mut conn = ctx.connect()?;
            reconcile(&mut conn, ctx, &mut self.position)?;
            self.conn = Some(conn);
            self.data_version = None;
            self.reconnect.recovered(ctx);
        }
        let started = Instant::now();
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        notice_new_log(conn, &mut self.position)?;
        if matches!(self.position, Position::At { .. }) && self.last_prune.elapsed() >= PRUNE_EVERY
        {
            self.last_prune = Instant::now();
            maintain(conn, ctx, &mut self.position)?;
        }
        let version = data_version(conn)?;
        if version.is_some() && version == self.data_version {
            return Ok(Some(started));
        }
        let Position::At { last, gaps } = &mut self.position else {
            return self.without_log(ctx, version, started);
        };
        read_changes(conn, ctx, last, gaps)?;
        // Remembered only now: a poll that failed must run again in full.
        self.data_version = version;
        Ok(Some(started))
    }
}

impl LogPoller {
    /// There is no change log. On SQLite a changed data version says someone
    /// committed, and no log says what: forgetting everything now leaves
    /// nothing older than that commit. Elsewhere nothing can be confirmed.
    fn without_log(
        &mut self,
        ctx: &Context,
        version: Option<i64>,
        started: Instant,
    ) -> Result<Option<Instant>> {
        if !std::mem::replace(&mut self.warned_missing, true) {
            tracing::warn!(
                "the change log table larder_changes is missing: run larder's migrations, \
                 or turn coherence off; until then every commit flushes the caches"
            );
        }
        if version.is_some() {
            ctx.flush("a commit without a change log");
            self.data_version = version;
            return Ok(Some(started));
        }
        Err(Error::Migration {
            message: "the change log larder_changes does not exist".into(),
        })
    }
}

impl Source for LogPoller {
    fn check(&mut self, ctx: &Context) -> Result<Option<Instant>> {
        let result = self.read(ctx);
        match &result {
            Err(Error::Migration { .. }) => {}
            Err(err) => {
                self.conn = None;
                self.reconnect.failed(ctx, err);
            }
            Ok(_) => {}
        }
        result
    }
}

fn lost(err: diesel::result::Error) -> Error {
    Error::from_diesel(err, Some("larder_changes"), None)
}

/// A log that did not exist when this poller last looked: every row in it is
/// news, so reading starts at the beginning.
fn notice_new_log(conn: &mut Connection, position: &mut Position) -> Result<()> {
    if let Position::Missing = position {
        if let Position::At { .. } = head(conn)? {
            *position = Position::At {
                last: 0,
                gaps: BTreeMap::new(),
            };
        }
    }
    Ok(())
}

/// Where the log ends, or [`Position::Missing`] when there is no log.
fn head(conn: &mut Connection) -> Result<Position> {
    let query = larder_changes::table.select(diesel::dsl::max(larder_changes::id));
    match crate::with_connection!(conn, |c| query.first::<Option<i64>>(c)) {
        Ok(last) => Ok(Position::At {
            last: last.unwrap_or(0),
            gaps: BTreeMap::new(),
        }),
        Err(err) if is_missing_table(&err) => Ok(Position::Missing),
        Err(err) => Err(lost(err)),
    }
}

fn is_missing_table(err: &diesel::result::Error) -> bool {
    let message = err.to_string();
    message.contains("no such table") || message.contains("doesn't exist")
}

/// SQLite only: a number that changes whenever another connection commits.
#[allow(irrefutable_let_patterns)] // in a build with SQLite alone
fn data_version(conn: &mut Connection) -> Result<Option<i64>> {
    let Connection::Sqlite(c) = conn else {
        return Ok(None);
    };
    let version = diesel::sql_query("PRAGMA data_version")
        .get_result::<DataVersion>(c)
        .map_err(lost)?;
    Ok(Some(version.data_version))
}

/// Applies every change past `last` (and any gap that has appeared since).
fn read_changes(
    conn: &mut Connection,
    ctx: &Context,
    last: &mut i64,
    gaps: &mut BTreeMap<i64, Instant>,
) -> Result<()> {
    let now = Instant::now();
    expire(gaps, now);
    loop {
        let waiting: Vec<i64> = gaps.keys().copied().collect();
        let query = larder_changes::table
            .filter(
                larder_changes::id
                    .gt(*last)
                    .or(larder_changes::id.eq_any(waiting)),
            )
            .order(larder_changes::id)
            .limit(BATCH)
            .select((
                larder_changes::id,
                larder_changes::table_name,
                larder_changes::row_id,
                larder_changes::op,
            ));
        let rows: Vec<(i64, String, i64, String)> =
            crate::with_connection!(conn, |c| query.load(c)).map_err(lost)?;
        let full = rows.len() as i64 == BATCH;
        for (id, table, row_id, op) in rows {
            ctx.apply(&table, row_id, &op);
            advance(last, gaps, id, now);
        }
        if !full {
            return Ok(());
        }
    }
}

/// Records that row `id` was read: a gap filled, or a new high-water mark
/// with the ids skipped on the way remembered as gaps (at most [`MAX_GAPS`],
/// the oldest given up first).
fn advance(last: &mut i64, gaps: &mut BTreeMap<i64, Instant>, id: i64, now: Instant) {
    if gaps.remove(&id).is_some() || id <= *last {
        return;
    }
    let skipped = (*last + 1).max(id.saturating_sub(MAX_GAPS as i64))..id;
    gaps.extend(skipped.map(|skipped| (skipped, now)));
    *last = id;
    while gaps.len() > MAX_GAPS {
        gaps.pop_first();
    }
}

/// Gives up gaps older than [`GAP_TIMEOUT`]: their transactions rolled back.
fn expire(gaps: &mut BTreeMap<i64, Instant>, now: Instant) {
    gaps.retain(|_, since| now.duration_since(*since) < GAP_TIMEOUT);
}

/// Prunes old rows, and notices a log that was dropped and created again
/// (its ids restart, so changes past `last` would be skipped): then every
/// cache is flushed and reading restarts at the new end.
fn maintain(conn: &mut Connection, ctx: &Context, position: &mut Position) -> Result<()> {
    reconcile(conn, ctx, position)?;
    // Pruning can wait: a busy writer must not stall the watcher or cost it
    // its connection.
    if let Err(err) = prune(conn) {
        tracing::debug!(error = %err, "change log not pruned this time");
    }
    Ok(())
}

/// Checks the log still ends at or after `position`; when it was dropped or
/// recreated, flushes the caches and starts over at its new end.
fn reconcile(conn: &mut Connection, ctx: &Context, position: &mut Position) -> Result<()> {
    let head = head(conn)?;
    let moved_back = match (&*position, &head) {
        (Position::At { last, .. }, Position::At { last: end, .. }) => end < last,
        (Position::At { .. }, Position::Missing) => true,
        (Position::Missing, _) => false,
    };
    if moved_back {
        ctx.flush("the change log was dropped or recreated");
        *position = head;
    }
    Ok(())
}

/// Deletes rows older than [`RETENTION`], oldest ids first, always keeping
/// the newest row: SQLite gives a new row the highest id plus one, so the
/// newest row must stay for ids to keep growing.
fn prune(conn: &mut Connection) -> QueryResult<()> {
    let cutoff = cutoff_sql(conn);
    let first_recent = larder_changes::table
        .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
            "changed_at >= {cutoff}"
        )))
        .order(larder_changes::id)
        .select(larder_changes::id);
    let first_recent: Option<i64> =
        crate::with_connection!(conn, |c| first_recent.first(c).optional())?;
    let keep_from = match first_recent {
        Some(id) => id,
        None => {
            let newest = larder_changes::table.select(diesel::dsl::max(larder_changes::id));
            match crate::with_connection!(conn, |c| newest.first::<Option<i64>>(c))? {
                Some(id) => id,
                None => return Ok(()),
            }
        }
    };
    let oldest = larder_changes::table.select(diesel::dsl::min(larder_changes::id));
    let oldest: Option<i64> = crate::with_connection!(conn, |c| oldest.first(c))?;
    if oldest.is_some_and(|oldest| oldest < keep_from) {
        let doomed = larder_changes::table.filter(larder_changes::id.lt(keep_from));
        crate::with_connection!(conn, |c| diesel::delete(doomed).execute(c))?;
    }
    Ok(())
}

/// The moment before which rows are pruned, as SQL of the database's clock.
#[allow(unreachable_patterns)] // in a build with SQLite alone
fn cutoff_sql(conn: &Connection) -> String {
    let secs = RETENTION.as_secs();
    match conn {
        Connection::Sqlite(_) => format!("datetime('now', '-{secs} seconds')"),
        _ => format!("NOW(6) - INTERVAL {secs} SECOND"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(ids: &[i64]) -> (i64, Vec<i64>) {
        let (mut last, mut gaps) = (0, BTreeMap::new());
        for &id in ids {
            advance(&mut last, &mut gaps, id, Instant::now());
        }
        (last, gaps.into_keys().collect())
    }

    #[test]
    fn ids_in_order_leave_no_gaps() {
        assert_eq!(read(&[1, 2, 3]), (3, vec![]));
    }

    #[test]
    fn skipped_ids_are_gaps_until_they_are_read() {
        assert_eq!(read(&[1, 4]), (4, vec![2, 3]));
        assert_eq!(read(&[1, 4, 3]), (4, vec![2]));
        assert_eq!(read(&[1, 4, 3, 2, 5]), (5, vec![]));
        assert_eq!(
            read(&[4, 4]),
            (4, vec![1, 2, 3]),
            "a row read twice changes nothing"
        );
    }

    #[test]
    fn gaps_are_bounded_and_the_newest_kept() {
        let (last, gaps) = read(&[1, 3 * MAX_GAPS as i64]);
        assert_eq!(last, 3 * MAX_GAPS as i64);
        assert_eq!(gaps.len(), MAX_GAPS);
        assert_eq!(gaps.last(), Some(&(last - 1)));
    }

    #[test]
    fn old_gaps_are_given_up() {
        let long_ago = Instant::now();
        let mut gaps = BTreeMap::from([(1, long_ago)]);
        expire(&mut gaps, long_ago + GAP_TIMEOUT);
        assert!(gaps.is_empty());
        let mut gaps = BTreeMap::from([(1, long_ago)]);
        expire(&mut gaps, long_ago + GAP_TIMEOUT / 2);
        assert_eq!(gaps.len(), 1);
    }
}
