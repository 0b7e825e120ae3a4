//! SQLite and MySQL: the capture triggers append each change to the
//! `larder_changes` table in the writing transaction; the poller reads the rows
//! past the highest id it has seen, and the ids it skipped ([`cursor`]).
//!
//! On SQLite one writer commits at a time, so ids appear in order, and an id
//! missing below one that was read never appears; `PRAGMA data_version` tells
//! without a query whether any other connection committed at all. On MySQL
//! concurrent transactions take ids first and commit in any order: a skipped
//! id is read again until it appears, or until the transactions that were
//! open when it was skipped have all ended (InnoDB's transaction list; read
//! more often than every 100 ms by anyone, it is served from a stale cache,
//! so a snapshot counts only if it lists the poller's own transaction).
//! Without the privilege to read that list, a skipped id is given up after
//! [`GAP_TIMEOUT`](super::cursor::GAP_TIMEOUT), with a flush.
//!
//! Each poller also prunes rows older than [`RETENTION`], never past what it
//! has not read itself. Another poller may prune past a reader that fell
//! behind: such a reader flushes.
//!
//! [`cursor`]: super::cursor

use std::time::{Duration, Instant};

use diesel::prelude::*;

use super::cursor::{Cursor, Transactions, MAX_GAPS};
use super::{Context, FlushReason, Reconnect, Source};
use crate::backend::Connection;
use crate::dialect;
use crate::error::{Error, Result};

/// How long change-log rows are kept for slow readers.
const RETENTION: Duration = Duration::from_secs(300);
/// How often each poller prunes the log, checks it was not recreated, and
/// checks it was not pruned past its mark.
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// Most rows read per query; a poll reads on until it gets fewer.
const BATCH: i64 = 5_000;
/// How often a MySQL poller with skipped ids reads the open transactions.
/// More than InnoDB's 100 ms cache lifetime, so its own reads never keep
/// that cache from being refreshed.
const PROBE_EVERY: Duration = Duration::from_millis(200);

diesel::table! {
    larder_changes (id) {
        id -> BigInt,
        table_name -> Text,
        row_id -> BigInt,
        op -> Text,
        key_values -> Nullable<Text>,
    }
}

#[derive(QueryableByName)]
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
struct DataVersion {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    data_version: i64,
}

/// Where the poller stands in the change log.
enum Position {
    /// The log does not exist (migrations not run): nothing can be trusted.
    Missing,
    At(Cursor),
}

/// How the poller learns that the transaction holding a skipped id ended.
enum Proof {
    /// SQLite: commits are serialized, a skipped id is final at once.
    Serial,
    /// MySQL: snapshots of the open transactions, at most every [`PROBE_EVERY`].
    Snapshots { next: Instant },
    /// No way to know: skipped ids are given up after a timeout, with a flush.
    Timeout,
}

pub(super) struct LogPoller {
    conn: Option<Connection>,
    reconnect: Reconnect,
    position: Position,
    proof: Proof,
    data_version: Option<i64>,
    /// The change of highest id read (or found at the log's end): still
    /// there, unchanged, unless the log was pruned past it or recreated.
    mark: Option<Change>,
    last_prune: Instant,
    warned_missing: bool,
}

impl LogPoller {
    /// Connects and reads where the log ends now: nothing is cached yet, so
    /// older changes do not matter, except those of transactions still open.
    pub(super) fn open(ctx: &Context) -> Result<LogPoller> {
        let mut conn = ctx.connect()?;
        // The version first: a commit between the two reads is then read again.
        let data_version = data_version(&mut conn)?;
        let position = end(&mut conn)?;
        let mark = mark_at(&mut conn, &position)?;
        let proof = match conn.backend() {
            crate::Backend::Sqlite => Proof::Serial,
            _ => Proof::Snapshots {
                next: Instant::now(),
            },
        };
        Ok(LogPoller {
            conn: Some(conn),
            reconnect: Reconnect::new(),
            position,
            proof,
            data_version,
            mark,
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
            reconcile(&mut conn, ctx, &mut self.position, &mut self.mark)?;
            self.conn = Some(conn);
            self.data_version = None;
            self.reconnect.recovered(ctx);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        notice_new_log(conn, &mut self.position)?;
        if matches!(self.position, Position::At(_)) && self.last_prune.elapsed() >= PRUNE_EVERY {
            self.last_prune = Instant::now();
            maintain(conn, ctx, &mut self.position, &mut self.mark)?;
        }
        if let Position::At(cursor) = &mut self.position {
            let provable = matches!(self.proof, Proof::Snapshots { .. });
            if let Some(reason) = cursor.expire(Instant::now(), provable) {
                ctx.flush(reason);
            }
            self.proof.probe(conn, ctx, cursor)?;
        }
        // Confirms from here: what maintenance took is not the read's age.
        let started = Instant::now();
        let version = data_version(conn)?;
        if version.is_some() && version == self.data_version {
            return Ok(Some(started));
        }
        let Position::At(cursor) = &mut self.position else {
            return self.without_log(ctx, version, started);
        };
        if read_changes(conn, ctx, cursor, &mut self.mark)? == Read::Replaced {
            start_over(conn, ctx, &mut self.position, &mut self.mark)?;
            // The new end was read after this version: the next poll reads
            // whatever committed since.
            self.data_version = version;
            return Ok(Some(started));
        }
        let Position::At(cursor) = &mut self.position else {
            unreachable!("read_changes leaves the position as it was");
        };
        self.proof.settle(conn, ctx, cursor)?;
        // Remembered only now: a poll that failed must run again in full.
        self.data_version = version;
        Ok(Some(started))
    }

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
            ctx.flush(FlushReason::NoChangeLog);
            self.data_version = version;
            return Ok(Some(started));
        }
        Err(Error::Migration {
            message: "the change log larder_changes does not exist".into(),
        })
    }
}

impl Source for LogPoller {
    /// Every poll confirms, so `confirm` changes nothing.
    fn check(&mut self, ctx: &Context, _confirm: bool) -> Result<Option<Instant>> {
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

impl Proof {
    /// Before a read: learns which transactions that may hold skipped ids
    /// have ended, so the read that follows settles them.
    fn probe(&mut self, conn: &mut Connection, ctx: &Context, cursor: &mut Cursor) -> Result<()> {
        let Proof::Snapshots { next } = self else {
            return Ok(());
        };
        if !cursor.watching() || Instant::now() < *next {
            return Ok(());
        }
        *next = Instant::now() + PROBE_EVERY;
        match open_transactions(conn) {
            Ok(Some(open)) => {
                if let Some(reason) = cursor.open_transactions(&open, Instant::now()) {
                    ctx.flush(reason);
                }
            }
            Ok(None) => tracing::trace!("stale list of open transactions; read again later"),
            Err(err) if is_access_denied(&err) => {
                tracing::warn!(
                    error = %err,
                    "coherence: cannot read information_schema.innodb_trx (PROCESS privilege): \
                     change-log ids skipped by rolled-back transactions are given up after \
                     5 minutes, each time with a flush of the caches"
                );
                *self = Proof::Timeout;
            }
            Err(err) => return Err(lost(err)),
        }
        Ok(())
    }

    /// After a read: drops the skipped ids proven final that it did not find,
    /// and flushes if one of them may have been pruned unread.
    fn settle(&self, conn: &mut Connection, ctx: &Context, cursor: &mut Cursor) -> Result<()> {
        if matches!(self, Proof::Serial) {
            cursor.all_ended();
        }
        if cursor.has_ended() {
            if let Some(reason) = cursor.settle(oldest(conn)?) {
                ctx.flush(reason);
            }
        }
        Ok(())
    }
}

fn lost(err: diesel::result::Error) -> Error {
    Error::from_diesel(err, Some("larder_changes"), None)
}

/// A log that did not exist when this poller last looked: every row in it is
/// news, so reading starts at the beginning.
fn notice_new_log(conn: &mut Connection, position: &mut Position) -> Result<()> {
    if let Position::Missing = position {
        if bounds(conn)?.is_some() {
            *position = Position::At(Cursor::new(0));
        }
    }
    Ok(())
}

/// The log's lowest and highest ids (`None` when it is empty), or `None`
/// when there is no log.
#[allow(clippy::type_complexity)]
fn bounds(conn: &mut Connection) -> Result<Option<(Option<i64>, Option<i64>)>> {
    let oldest = match crate::with_connection!(conn, |c| lowest().get_result::<Option<i64>>(c)) {
        Ok(oldest) => oldest,
        Err(err) if is_missing_table(&err) => return Ok(None),
        Err(err) => return Err(lost(err)),
    };
    let newest = crate::with_connection!(conn, |c| highest().get_result(c)).map_err(lost)?;
    Ok(Some((oldest, newest)))
}

/// The log's lowest id, `None` when it is empty.
fn oldest(conn: &mut Connection) -> Result<Option<i64>> {
    crate::with_connection!(conn, |c| lowest().get_result(c)).map_err(lost)
}

/// `min(id)` in a query of its own: SQLite answers a lone `min` or `max` of
/// the rowid from the b-tree's edge, but scans the whole log for
/// `SELECT min(id), max(id)` (39 ms at 300,000 rows, in the watcher's loop).
fn lowest(
) -> diesel::dsl::Select<larder_changes::table, diesel::helper_types::min<larder_changes::id>> {
    larder_changes::table.select(diesel::dsl::min(larder_changes::id))
}

/// `max(id)`, alone for the same reason as [`lowest`].
fn highest(
) -> diesel::dsl::Select<larder_changes::table, diesel::helper_types::max<larder_changes::id>> {
    larder_changes::table.select(diesel::dsl::max(larder_changes::id))
}

/// A position at the log's end. On MySQL the ids missing among the last
/// [`MAX_GAPS`] may belong to transactions still open, so they are read when
/// they commit. One below them, or below the oldest row (held by a
/// transaction that took it while the log was empty), is not watched: a
/// known limitation (`docs/deployment.md`), since flushing once the
/// transactions open at the start have ended would flush nearly every
/// start for nothing. On SQLite nothing below the end can still commit.
fn end(conn: &mut Connection) -> Result<Position> {
    let Some((oldest, newest)) = bounds(conn)? else {
        return Ok(Position::Missing);
    };
    let (Some(oldest), Some(newest)) = (oldest, newest) else {
        return Ok(Position::At(Cursor::new(0)));
    };
    if conn.backend() == crate::Backend::Sqlite {
        return Ok(Position::At(Cursor::new(newest)));
    }
    let low = (oldest - 1).max(newest - MAX_GAPS as i64);
    let query = larder_changes::table
        .filter(larder_changes::id.gt(low))
        .select(larder_changes::id);
    let present: Vec<i64> = crate::with_connection!(conn, |c| query.load(c)).map_err(lost)?;
    Ok(Position::At(Cursor::at_end(
        newest,
        low,
        &present,
        Instant::now(),
    )))
}

fn is_missing_table(err: &diesel::result::Error) -> bool {
    dialect::any(|d, m| d.is_missing_table(m), &err.to_string())
}

fn is_access_denied(err: &diesel::result::Error) -> bool {
    dialect::mysql::is_access_denied(&err.to_string())
}

/// SQLite only: a number that changes whenever another connection commits.
fn data_version(conn: &mut Connection) -> Result<Option<i64>> {
    #[cfg(feature = "sqlite")]
    #[allow(irrefutable_let_patterns)] // in a build with SQLite alone
    if let Connection::Sqlite(c) = conn {
        let version = diesel::sql_query(dialect::sqlite::DATA_VERSION)
            .get_result::<DataVersion>(c)
            .map_err(lost)?;
        return Ok(Some(version.data_version));
    }
    let _ = conn;
    Ok(None)
}

/// What [`read_changes`] found.
#[derive(Debug, PartialEq, Eq)]
enum Read {
    /// Every change past the mark was applied.
    Applied,
    /// The log no longer holds the mark's change under its id (emptied,
    /// recreated): nothing was applied, the position must start over.
    Replaced,
}

/// Applies every change past the cursor's mark and any skipped id that has
/// appeared since; `mark` becomes the last of them.
///
/// The first read starts at the mark's own id, and goes on only if the log
/// still holds the mark's change there: a log emptied (`DELETE`, MySQL's
/// `TRUNCATE`) or recreated starts its ids over. Holding nothing from the
/// mark on, it is noticed at once, not at the next look of [`reconcile`],
/// 30 s on; once other processes have written it past the position, its
/// rows there are new changes and those below the position would never be
/// read (that look would then find the new mark in place). No extra round
/// trip: the same seek returns one row more.
fn read_changes(
    conn: &mut Connection,
    ctx: &Context,
    cursor: &mut Cursor,
    mark: &mut Option<Change>,
) -> Result<Read> {
    let now = Instant::now();
    // Skipped ids first: they all lie below the mark, so the changes are
    // still applied in id order.
    let gaps = cursor.gaps();
    let filled = if gaps.is_empty() {
        Vec::new()
    } else {
        crate::with_connection!(conn, |c| skipped(&gaps).load(c)).map_err(lost)?
    };
    let checked = mark
        .as_ref()
        .filter(|mark| mark.0 == cursor.last())
        .cloned();
    let from = match &checked {
        Some(mark) => mark.0 - 1,
        None => cursor.last(),
    };
    let mut rows: Vec<Change> =
        crate::with_connection!(conn, |c| after(from).load(c)).map_err(lost)?;
    let mut full = rows.len() as i64 == BATCH;
    if let Some(checked) = checked {
        match rows.first() {
            Some(first) if first.0 == checked.0 => {
                if *first != checked {
                    return Ok(Read::Replaced);
                }
                rows.remove(0);
            }
            // Nothing from the mark on: pruning always keeps the newest
            // row, so the log was emptied or recreated.
            None => return Ok(Read::Replaced),
            // The mark's row is gone: pruned by a poller further on (then
            // below the oldest row), or the log was emptied.
            Some(_) if replaced(conn, mark)? => return Ok(Read::Replaced),
            Some(_) => {}
        }
    }
    apply(ctx, cursor, filled, now);
    loop {
        if let Some(last) = rows.last() {
            *mark = Some(last.clone());
        }
        apply(ctx, cursor, rows, now);
        if !full {
            return Ok(Read::Applied);
        }
        rows = crate::with_connection!(conn, |c| after(cursor.last()).load(c)).map_err(lost)?;
        full = rows.len() as i64 == BATCH;
    }
}

/// A change as the poller reads it: id, table, row id, operation, key values.
type Change = (i64, String, i64, String, Option<String>);

fn apply(ctx: &Context, cursor: &mut Cursor, rows: Vec<Change>, now: Instant) {
    for (id, table, row_id, op, key_values) in rows {
        ctx.apply(&table, row_id, &op, key_values.as_deref());
        if let Some(reason) = cursor.read(id, now) {
            ctx.flush(reason);
        }
    }
}

/// What the poller reads of a change, in [`Change`]'s order.
type ChangeColumns = (
    larder_changes::id,
    larder_changes::table_name,
    larder_changes::row_id,
    larder_changes::op,
    larder_changes::key_values,
);

const CHANGE_COLUMNS: ChangeColumns = (
    larder_changes::id,
    larder_changes::table_name,
    larder_changes::row_id,
    larder_changes::op,
    larder_changes::key_values,
);

type After = diesel::dsl::Select<
    diesel::dsl::Limit<
        diesel::dsl::Order<
            diesel::dsl::Filter<larder_changes::table, diesel::dsl::Gt<larder_changes::id, i64>>,
            larder_changes::id,
        >,
    >,
    ChangeColumns,
>;

type Skipped<'a> = diesel::dsl::Select<
    diesel::dsl::Order<
        diesel::dsl::Filter<
            larder_changes::table,
            diesel::dsl::EqAny<larder_changes::id, &'a [i64]>,
        >,
        larder_changes::id,
    >,
    ChangeColumns,
>;

/// The first [`BATCH`] changes past `last`, in id order. Never joined to
/// [`skipped`] by an `OR`: SQLite seeks its rowid for `id > ?` alone, but for
/// `id > ? OR id IN (…)` it scans the log from its oldest row, which made
/// every poll read minutes of changes again.
fn after(last: i64) -> After {
    larder_changes::table
        .filter(larder_changes::id.gt(last))
        .order(larder_changes::id)
        .limit(BATCH)
        .select(CHANGE_COLUMNS)
}

/// The changes of the skipped ids `gaps` (a few, at most [`MAX_GAPS`]) that
/// have appeared, in id order.
fn skipped(gaps: &[i64]) -> Skipped<'_> {
    larder_changes::table
        .filter(larder_changes::id.eq_any(gaps))
        .order(larder_changes::id)
        .select(CHANGE_COLUMNS)
}

/// Every [`PRUNE_EVERY`]: notices a log that was recreated or pruned past
/// this poller's mark (either flushes), then prunes.
///
/// Why here and not on every poll: pruning removes only rows older than
/// [`RETENTION`] and always keeps the newest row. An unread row pruned
/// while a newer one stays becomes a skipped id when the newer one is read,
/// and a skipped id is checked against the oldest row when it is settled.
/// What remains is a mark the whole log was pruned past, which takes
/// minutes without a poll: the first poll after such a pause is due for
/// maintenance, and maintenance looks before it reads.
fn maintain(
    conn: &mut Connection,
    ctx: &Context,
    position: &mut Position,
    mark: &mut Option<Change>,
) -> Result<()> {
    reconcile(conn, ctx, position, mark)?;
    let Position::At(cursor) = position else {
        return Ok(());
    };
    if let Some(reason) = cursor.behind(oldest(conn)?) {
        ctx.flush(reason);
    }
    // Pruning can wait: a busy writer must not stall the watcher or cost it
    // its connection.
    if let Err(err) = prune(conn, cursor.first_unread()) {
        tracing::debug!(error = %err, "change log not pruned this time");
    }
    Ok(())
}

/// Checks the log still ends at or after the position and still holds the
/// `mark` read from it; when it was dropped or recreated, starts over at its
/// new end and flushes the caches.
fn reconcile(
    conn: &mut Connection,
    ctx: &Context,
    position: &mut Position,
    mark: &mut Option<Change>,
) -> Result<()> {
    let Position::At(cursor) = &*position else {
        return Ok(());
    };
    let recreated = match bounds(conn)? {
        None => true,
        // Others may have written the new log past the position already.
        Some((_, newest)) => newest.unwrap_or(0) < cursor.last() || replaced(conn, mark)?,
    };
    if recreated {
        start_over(conn, ctx, position, mark)?;
    }
    Ok(())
}

/// The log was dropped, recreated or emptied: starts over at its new end and
/// flushes the caches.
fn start_over(
    conn: &mut Connection,
    ctx: &Context,
    position: &mut Position,
    mark: &mut Option<Change>,
) -> Result<()> {
    // The end first: a change committed after the flush lies past it and
    // is read, as at start-up (`LogPoller::open`).
    *position = end(conn)?;
    *mark = None;
    ctx.flush(FlushReason::LogRecreated);
    *mark = mark_at(conn, position)?;
    Ok(())
}

/// Whether the row of `mark`'s id is no longer the change read there. Gone,
/// it was pruned if it now lies below the log's oldest row (pruning removes
/// the oldest ids only); else the log was recreated. (A recreated log whose
/// row of that id names the very same change is not told apart.)
fn replaced(conn: &mut Connection, mark: &Option<Change>) -> Result<bool> {
    let Some(mark) = mark else {
        return Ok(false);
    };
    match change(conn, mark.0)? {
        Some(row) => Ok(row != *mark),
        None => Ok(oldest(conn)?.is_none_or(|oldest| oldest <= mark.0)),
    }
}

/// The change at a position's last id, its mark (`None` for a log that is
/// missing, or has no row there).
fn mark_at(conn: &mut Connection, position: &Position) -> Result<Option<Change>> {
    match position {
        Position::At(cursor) if cursor.last() > 0 => change(conn, cursor.last()),
        _ => Ok(None),
    }
}

/// The change of id `id`, if the log holds it.
fn change(conn: &mut Connection, id: i64) -> Result<Option<Change>> {
    let query = larder_changes::table
        .filter(larder_changes::id.eq(id))
        .select(CHANGE_COLUMNS);
    crate::with_connection!(conn, |c| query.first(c).optional()).map_err(lost)
}

/// Deletes rows older than [`RETENTION`], oldest ids first, never from
/// `first_unread` on (what this poller has not read yet), and always keeping
/// the newest row: SQLite gives a new row the highest id plus one, so the
/// newest row must stay for ids to keep growing.
pub(super) fn prune(conn: &mut Connection, first_unread: i64) -> QueryResult<()> {
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
        None => match crate::with_connection!(conn, |c| highest().get_result::<Option<i64>>(c))? {
            Some(id) => id,
            None => return Ok(()),
        },
    }
    .min(first_unread);
    let oldest: Option<i64> = crate::with_connection!(conn, |c| lowest().get_result(c))?;
    if oldest.is_some_and(|oldest| oldest < keep_from) {
        let doomed = larder_changes::table.filter(larder_changes::id.lt(keep_from));
        crate::with_connection!(conn, |c| diesel::delete(doomed).execute(c))?;
    }
    Ok(())
}

/// The moment before which rows are pruned, as SQL of the database's clock.
fn cutoff_sql(conn: &Connection) -> String {
    dialect::of(conn.backend()).ago(RETENTION)
}

/// The transactions open now that have written something, or `None` when
/// InnoDB answered from a cache older than this call. Only MySQL has them.
#[allow(irrefutable_let_patterns)] // in a build without MySQL
fn open_transactions(conn: &mut Connection) -> QueryResult<Option<Transactions>> {
    #[cfg(feature = "mysql")]
    if let Connection::Mysql(c) = conn {
        return mysql::open_transactions(c);
    }
    let _ = conn;
    Ok(None)
}

#[cfg(feature = "mysql")]
mod mysql {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    use diesel::{MysqlConnection, QueryResult, QueryableByName, RunQueryDsl};

    use super::Transactions;
    use crate::dialect::mysql::{OPEN_TRANSACTIONS, SNAPSHOT};

    #[derive(QueryableByName)]
    struct Open {
        #[diesel(sql_type = diesel::sql_types::Text)]
        trx: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        mine: i64,
    }

    /// Reads InnoDB's transaction list inside a transaction of this session:
    /// the list is served from a cache refreshed only after 100 ms without
    /// readers, and it is recent enough only if it shows this transaction.
    pub(super) fn open_transactions(c: &mut MysqlConnection) -> QueryResult<Option<Transactions>> {
        AnsiTransactionManager::begin_transaction_sql(c, SNAPSHOT)?;
        let rows = diesel::sql_query(OPEN_TRANSACTIONS).load::<Open>(c);
        match rows {
            Ok(rows) => {
                AnsiTransactionManager::commit_transaction(c)?;
                Ok(fresh(rows))
            }
            Err(err) => {
                AnsiTransactionManager::rollback_transaction(c)?;
                Err(err)
            }
        }
    }

    fn fresh(rows: Vec<Open>) -> Option<Transactions> {
        if !rows.iter().any(|row| row.mine == 1) {
            return None;
        }
        // An id that does not parse could be the one that matters: no proof.
        rows.into_iter()
            .filter(|row| row.mine == 0)
            .map(|row| row.trx.parse().ok())
            .collect()
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use diesel::connection::{InstrumentationEvent, SimpleConnection};
    use diesel::{Connection as _, SqliteConnection};
    use std::sync::{Arc, Mutex};

    #[derive(QueryableByName)]
    struct PlanStep {
        #[diesel(sql_type = diesel::sql_types::Text)]
        detail: String,
    }

    /// A SQLite connection holding the change log as the migrations make it.
    fn log() -> SqliteConnection {
        let mut c = SqliteConnection::establish(":memory:").unwrap();
        c.batch_execute(include_str!(
            "../../migrations/sqlite/2026-11-25-000001_change_log/up.sql"
        ))
        .unwrap();
        c.batch_execute(include_str!(
            "../../migrations/sqlite/2026-11-25-000003_change_keys/up.sql"
        ))
        .unwrap();
        c
    }

    /// SQLite's plan for every statement `run` sends.
    fn plans(run: impl FnOnce(&mut Connection)) -> Vec<Vec<String>> {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let mut c = log();
        let record = Arc::clone(&sent);
        c.set_instrumentation(move |event: InstrumentationEvent<'_>| {
            if let InstrumentationEvent::StartQuery { query, .. } = event {
                record.lock().unwrap().push(query.to_string());
            }
        });
        let mut conn = Connection::Sqlite(c);
        run(&mut conn);
        let Connection::Sqlite(mut c) = conn else {
            unreachable!()
        };
        c.set_instrumentation(|_: InstrumentationEvent<'_>| {});
        let sent = sent.lock().unwrap().clone();
        sent.iter()
            .map(|sql| {
                let sql = sql.split(" -- binds").next().unwrap();
                // Unbound parameters are NULL; the plan does not depend on them.
                diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
                    .load::<PlanStep>(&mut c)
                    .unwrap()
                    .into_iter()
                    .map(|step| step.detail)
                    .collect()
            })
            .collect()
    }

    fn assert_seek(plans: &[Vec<String>]) {
        assert!(!plans.is_empty());
        for plan in plans {
            assert!(
                plan.iter().all(|step| !step.starts_with("SCAN")),
                "the watcher must seek the log's rowid, not scan the log: {plan:?}"
            );
        }
    }

    #[test]
    fn a_poll_seeks_past_its_mark_instead_of_scanning_the_log() {
        assert_seek(&plans(|conn| {
            crate::with_connection!(conn, |c| after(41).load::<Change>(c)).unwrap();
        }));
    }

    #[test]
    fn skipped_ids_are_looked_up_by_rowid() {
        assert_seek(&plans(|conn| {
            crate::with_connection!(conn, |c| skipped(&[3, 5, 8]).load::<Change>(c)).unwrap();
        }));
    }

    #[test]
    fn the_logs_bounds_are_read_from_its_edges() {
        let found = std::cell::Cell::new(None);
        let plans = plans(|conn| found.set(bounds(conn).unwrap()));
        assert_eq!(found.get(), Some((None, None)), "an empty log");
        assert_seek(&plans);
    }
}
