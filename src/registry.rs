//! The entity registry and invalidation bus: finds an entity's identity map by
//! its slot for repositories, and by table name for invalidations, which
//! arrive as `(table, id)` from commits in this process and, through the
//! watcher, from other processes.
//!
//! An entity is registered at build ([`StoreBuilder::entity`](crate::StoreBuilder::entity))
//! or on its first use. Its map then sits in a slot that is never emptied, so
//! repositories find it with two atomic loads and no lock; the table-name
//! indexes are copied on write and read through a snapshot, so no registry
//! lock is held while a cache lock is taken.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};

use crate::cache::{AnyValue, CacheControl, CacheStats, Generations, QueryCache};
use crate::keys::{KeyGenerations, Touched};
use crate::read::Read;
use crate::requirement::Requirement;

/// Hashes a `TypeId` by its own bits: they are already a hash, and the default
/// SipHash of them was most of the cost of a cache hit.
#[derive(Default)]
struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type ByType<V> = HashMap<TypeId, V, BuildHasherDefault<TypeIdHasher>>;

/// FNV-1a: table names are a few bytes, and looking one up (every
/// invalidation, every query-cache hit) should not cost a SipHash.
struct TableHasher(u64);

impl Default for TableHasher {
    fn default() -> TableHasher {
        TableHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for TableHasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type ByTable<V> = HashMap<&'static str, V, BuildHasherDefault<TableHasher>>;

/// A row of a table, named for an invalidation: what a write changed,
/// including rows changed as a side effect, such as a post removed by
/// `ON DELETE CASCADE` when its author is deleted.
///
/// ```
/// let key = larder::Key::new("posts", 42);
/// assert_eq!((key.table, key.id), ("posts", 42));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// The table name, as in [`Entity::TABLE`](crate::Entity::TABLE).
    pub table: &'static str,
    /// The row's primary key.
    pub id: i64,
}

impl Key {
    /// The key of row `id` of `table`.
    pub fn new(table: &'static str, id: i64) -> Key {
        Key { table, id }
    }
}

/// What a change read from the database did to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Insert,
    Update,
    Delete,
    /// `TRUNCATE`: every row of the table.
    Truncate,
}

impl Op {
    /// The code the capture triggers write: `I`, `U`, `D` or `T`.
    pub(crate) fn parse(code: &str) -> Option<Op> {
        match code {
            "I" => Some(Op::Insert),
            "U" => Some(Op::Update),
            "D" => Some(Op::Delete),
            "T" => Some(Op::Truncate),
            _ => None,
        }
    }
}

/// An entity's cache as the bus knows it: by table, with no type.
pub(crate) struct Registration {
    pub(crate) entity: TypeId,
    pub(crate) table: &'static str,
    /// The tables whose deletes empty this cache ([`Entity::DELETED_WITH`](crate::Entity::DELETED_WITH)).
    pub(crate) deleted_with: &'static [&'static str],
    /// The columns its `Read::eq` lists may filter on ([`Entity::KEY_COLUMNS`](crate::Entity::KEY_COLUMNS)).
    pub(crate) key_columns: &'static [&'static str],
    pub(crate) control: Arc<dyn CacheControl>,
}

/// One of the entities cached from a table.
#[derive(Clone)]
struct TableMember {
    entity: TypeId,
    control: Arc<dyn CacheControl>,
}

/// An entity emptied when a row of a table it is [`Entity::DELETED_WITH`](crate::Entity::DELETED_WITH) is deleted.
#[derive(Clone)]
struct Dependent {
    table: &'static str,
    control: Arc<dyn CacheControl>,
}

/// Slots per chunk, and chunks: room for this many entity types per process.
const CHUNK: usize = 64;
const CHUNKS: usize = 64;

type Chunk = Box<[OnceLock<AnyValue>]>;

/// The registered entities by table: replaced whole (copy on write) when an
/// entity registers, read through a snapshot.
#[derive(Clone, Default)]
struct Tables {
    by_type: ByType<Arc<dyn CacheControl>>,
    by_table: ByTable<Vec<TableMember>>,
    /// For a table, the entities emptied when one of its rows is deleted
    /// ([`Entity::DELETED_WITH`](crate::Entity::DELETED_WITH)), with their own table names.
    deleted_with: ByTable<Vec<Dependent>>,
    /// Per table, moved by every invalidation of the table; the query cache
    /// compares it with the generation a list was read at.
    generations: ByTable<Arc<AtomicU64>>,
    /// Per table with key columns (those of the first entity registered for
    /// it that declares any; never replaced, so no bump can land on a copy
    /// readers no longer see), what `Read::eq` lists compare.
    keys: ByTable<Arc<KeyGenerations>>,
}

pub(crate) struct Registry {
    /// Entity maps by slot index (see `EntitySlot`),
    /// in chunks allocated on first use; a slot, once set, is never changed.
    slots: Box<[OnceLock<Chunk>]>,
    tables: RwLock<Arc<Tables>>,
    /// Serializes registrations, so two entities registering at once do not
    /// each copy the tables and lose the other's addition.
    registering: Mutex<()>,
    default_capacity: usize,
    queries: QueryCache,
    /// The WAL position replicas must have replayed to serve a load.
    requirement: Requirement,
}

/// A write recorded by a transaction, applied to the caches once it commits.
pub(crate) enum PendingWrite {
    /// A row written by its own entity, which knows the outcome.
    Written { key: Key, written: Written },
    /// A row whose statement ran but whose outcome is unknown (its returned
    /// row could not be decoded): invalidated, never filled. Recorded before
    /// the statement runs, so that no error path can skip it.
    Unsettled(Key),
    /// A row removed as a side effect (a cascade): invalidated, and what is
    /// [`Entity::DELETED_WITH`](crate::Entity::DELETED_WITH) its table emptied.
    Removed(Key),
    /// An insert into `table` whose new id is unknown: no cache can hold the
    /// row yet, but the table's cached lists must go.
    UnknownInsert(&'static str),
}

/// Writes whose statements ran, or may have, that the caches have not been
/// told of yet. They are applied one at a time; dropped before the last one
/// is (a panic between a statement or its commit and the caches: application
/// code after an autocommitted statement, a tracing subscriber, a cached
/// value's destructor), it applies the rest as uncertain, the one that was
/// being applied included, since the database may hold any of them.
#[must_use = "dropped unapplied, the writes are applied as uncertain"]
pub(crate) struct Unapplied<'r> {
    registry: &'r Registry,
    writes: Vec<PendingWrite>,
    /// How many of `writes`, from the first, the caches know of.
    applied: usize,
}

impl<'r> Unapplied<'r> {
    pub(crate) fn new(registry: &'r Registry, writes: Vec<PendingWrite>) -> Unapplied<'r> {
        Unapplied {
            registry,
            writes,
            applied: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.writes.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Their transaction committed: see [`Registry::apply_committed`].
    pub(crate) fn committed(mut self) {
        while let Some(write) = self.writes.get(self.applied) {
            self.registry.apply_committed(write);
            self.applied += 1;
        }
    }

    /// They committed, but statements of the application's own ran after
    /// them and may have written their rows again: see
    /// [`Registry::apply_rewritten`].
    pub(crate) fn rewritten(mut self) {
        while let Some(write) = self.writes.get(self.applied) {
            self.registry.apply_rewritten(write);
            self.applied += 1;
        }
    }

    /// Whether they committed is unknown: see [`Registry::apply_uncertain`].
    pub(crate) fn uncertain(mut self) {
        self.apply_rest_uncertain();
    }

    fn apply_rest_uncertain(&mut self) {
        if self.applied == self.writes.len() {
            return;
        }
        // Where the commit landed in the WAL is unknown too: no replica may
        // serve a load until the next commit's position is known.
        self.registry.requirement().forget();
        while let Some(write) = self.writes.get(self.applied) {
            self.registry.apply_uncertain(write);
            self.applied += 1;
        }
    }
}

impl Drop for Unapplied<'_> {
    fn drop(&mut self) {
        self.apply_rest_uncertain();
    }
}

/// What the writing entity knows about its own write.
pub(crate) struct Written {
    pub(crate) entity: TypeId,
    /// The row as stored, or `None` for a delete.
    pub(crate) value: Option<AnyValue>,
    /// Whether the commit may cache `value`: not when the transaction may
    /// have read it through a snapshot older than `epoch` (a write that
    /// changed nothing returns the row as its snapshot has it).
    pub(crate) cacheable: bool,
    /// The key's shard epoch read before the write.
    pub(crate) epoch: u64,
    /// The key values the row had before the write and has after it; a key
    /// column of the table named by none of them is unknown.
    pub(crate) touched: Vec<(&'static str, Option<i64>)>,
}

impl Registry {
    /// An empty registry: entities get `default_capacity` entries unless
    /// registered with their own; the query cache holds `query_capacity` lists.
    pub(crate) fn new(default_capacity: usize, query_capacity: usize) -> Registry {
        Registry {
            slots: (0..CHUNKS).map(|_| OnceLock::new()).collect(),
            tables: RwLock::new(Arc::default()),
            registering: Mutex::new(()),
            default_capacity,
            queries: QueryCache::new(query_capacity),
            requirement: Requirement::default(),
        }
    }

    /// The capacity of an entity registered without one of its own.
    pub(crate) fn default_capacity(&self) -> usize {
        self.default_capacity
    }

    /// The map in slot `index`, made and registered by `make` if the slot is
    /// empty (each slot is set once: concurrent callers get the same map).
    pub(crate) fn slot_or_register(
        &self,
        index: usize,
        make: impl FnOnce() -> (AnyValue, Registration),
    ) -> &AnyValue {
        self.slot(index).get_or_init(|| {
            let (typed, registration) = make();
            self.register(registration);
            typed
        })
    }

    fn slot(&self, index: usize) -> &OnceLock<AnyValue> {
        assert!(
            index < CHUNK * CHUNKS,
            "more than {} entity types in one process",
            CHUNK * CHUNKS
        );
        let chunk =
            self.slots[index / CHUNK].get_or_init(|| (0..CHUNK).map(|_| OnceLock::new()).collect());
        &chunk[index % CHUNK]
    }

    /// Adds an entity's cache to the table indexes.
    fn register(&self, entity: Registration) {
        let _registering = self.registering.lock();
        let mut tables = Tables::clone(&self.tables.read());
        tables.generations.entry(entity.table).or_default();
        if !entity.key_columns.is_empty() {
            tables
                .keys
                .entry(entity.table)
                .or_insert_with(|| Arc::new(KeyGenerations::new(entity.key_columns)));
        }
        for parent in entity.deleted_with {
            tables
                .deleted_with
                .entry(parent)
                .or_default()
                .push(Dependent {
                    table: entity.table,
                    control: Arc::clone(&entity.control),
                });
        }
        tables
            .by_table
            .entry(entity.table)
            .or_default()
            .push(TableMember {
                entity: entity.entity,
                control: Arc::clone(&entity.control),
            });
        tables.by_type.insert(entity.entity, entity.control);
        *self.tables.write() = Arc::new(tables);
        tracing::debug!(table = entity.table, "entity registered");
    }

    /// A snapshot of the table indexes, so no registry lock is held while the
    /// caller takes cache locks.
    fn tables(&self) -> Arc<Tables> {
        Arc::clone(&self.tables.read())
    }

    /// Applies a write after its transaction committed: the writing entity's
    /// map may keep the new value, every other map of the same table drops the key.
    fn apply_committed(&self, write: &PendingWrite) {
        match write {
            PendingWrite::Written { key, written } => {
                let deleted = written.value.is_none();
                if let Some(control) = self.tables().by_type.get(&written.entity) {
                    let value = written.value.clone().filter(|_| written.cacheable);
                    control.apply_write_any(key.id, value, written.epoch);
                }
                self.invalidate_except(*key, Some(written.entity), &written.touched);
                if deleted {
                    self.empty_dependents(key.table);
                }
            }
            PendingWrite::Unsettled(key) => self.invalidate(*key),
            PendingWrite::Removed(key) => self.invalidate_removed(*key),
            PendingWrite::UnknownInsert(table) => self.retire_lists(table),
        }
    }

    /// Applies a write whose commit failed. A commit that failed may still have
    /// committed (the connection was lost while COMMIT was in flight), so every
    /// key is invalidated and every delete empties its dependents, as if it
    /// had committed, without caching any new value. The key values before
    /// and after are the only ones the row can have either way, so retiring
    /// both covers both outcomes.
    fn apply_uncertain(&self, write: &PendingWrite) {
        match write {
            PendingWrite::Written { key, written } => {
                self.invalidate_except(*key, None, &written.touched);
                if written.value.is_none() {
                    self.empty_dependents(key.table);
                }
            }
            PendingWrite::Unsettled(key) => self.invalidate(*key),
            PendingWrite::Removed(key) => self.invalidate_removed(*key),
            PendingWrite::UnknownInsert(table) => self.retire_lists(table),
        }
    }

    /// Applies a write that committed with statements of the application's
    /// own after it (`TxRepo::run`), which may have written its row again:
    /// as uncertain, and with its key values unknown, since such a
    /// statement may have moved the row to a value the write never saw.
    /// Retiring only the values before and after the write left the lists
    /// of the row's new value cached without it.
    fn apply_rewritten(&self, write: &PendingWrite) {
        match write {
            PendingWrite::Written { key, written } => {
                self.invalidate(*key);
                if written.value.is_none() {
                    self.empty_dependents(key.table);
                }
            }
            other => self.apply_uncertain(other),
        }
    }

    /// A row that is gone: its key, and every entity [`Entity::DELETED_WITH`](crate::Entity::DELETED_WITH) its table.
    fn invalidate_removed(&self, key: Key) {
        let mut steps = EveryStep::default();
        steps.run(|| self.invalidate(key));
        steps.run(|| self.empty_dependents(key.table));
        steps.finish();
    }

    /// Empties every entity declared [`Entity::DELETED_WITH`](crate::Entity::DELETED_WITH) `table`, and
    /// theirs in turn.
    fn empty_dependents(&self, table: &'static str) {
        let mut steps = EveryStep::default();
        self.empty_dependents_of(table, &mut Vec::new(), &mut steps);
        steps.finish();
    }

    fn empty_dependents_of(
        &self,
        table: &'static str,
        visited: &mut Vec<&'static str>,
        steps: &mut EveryStep,
    ) {
        if visited.contains(&table) {
            return;
        }
        visited.push(table);
        let tables = self.tables();
        for dependent in tables.deleted_with.get(table).into_iter().flatten() {
            // Emptied before its lists are retired (see `invalidate_except`).
            steps.run(|| dependent.control.clear());
            self.bump(dependent.table, &[]);
            self.empty_dependents_of(dependent.table, visited, steps);
        }
    }

    /// Retires the lists that read `table` whole, and its `Read::eq` lists
    /// of the key values in `touched` (all of them, for a key column
    /// `touched` does not name).
    fn bump(&self, table: &str, touched: &Touched<'_>) {
        let tables = self.tables();
        if let Some(generation) = tables.generations.get(table) {
            generation.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(keys) = tables.keys.get(table) {
            keys.bump(touched);
        }
    }

    /// Retires every cached list that read `table`.
    pub(crate) fn retire_lists(&self, table: &str) {
        self.bump(table, &[]);
    }

    /// What a result of `reads` compares to stay valid, read now: a whole
    /// table's generation, or for a `Read::eq` on a key column its table's
    /// fallback and its value's bucket, each with the value read (so that
    /// a key reused for another value is another list). `None` when a table has no entity
    /// (its changes are not tracked), or when `reads` names nothing: a
    /// result no write could retire would be served forever.
    pub(crate) fn generations(&self, reads: &[Read]) -> Option<Generations> {
        if reads.is_empty() {
            return None;
        }
        let indexes = self.tables.read();
        let mut out = Vec::with_capacity(reads.len() * 2);
        // A value read per key (a page's counts) names one table many times
        // over: it is looked up once per run of reads of the same table.
        let mut last: Option<(&str, &AtomicU64, Option<&KeyGenerations>)> = None;
        for read in reads {
            let table = read.table_name();
            let (generation, keys) = match last {
                Some((name, generation, keys)) if name == table => (generation, keys),
                _ => {
                    let generation: &AtomicU64 = indexes.generations.get(table)?;
                    let keys = indexes.keys.get(table).map(|keys| &**keys);
                    last = Some((table, generation, keys));
                    (generation, keys)
                }
            };
            let keyed = read
                .filter()
                .and_then(|(column, value)| Some((column, value, keys?.read(column, value)?)));
            match keyed {
                Some((column, value, [fallback, bucket])) => {
                    out.push((table, 0, fallback));
                    out.push((column, value, bucket));
                }
                // A filter on another column reads as the whole table, but
                // its value still tells one list from another.
                None => {
                    let value = read.filter().map_or(0, |(_, value)| value);
                    out.push((table, value, generation.load(Ordering::SeqCst)));
                }
            }
        }
        Some(out)
    }

    pub(crate) fn queries(&self) -> &QueryCache {
        &self.queries
    }

    /// What a replica must have replayed (see `replica`): raised before
    /// invalidations of known position, forgotten before the others.
    pub(crate) fn requirement(&self) -> &Requirement {
        &self.requirement
    }

    /// Drops every cached copy of `key`, in every entity mapped to its table.
    /// Its key values are unknown: every `Read::eq` list of the table goes.
    pub(crate) fn invalidate(&self, key: Key) {
        self.invalidate_except(key, None, &[]);
    }

    /// The row leaves every map first, and only then are the lists retired:
    /// a list queried between the two would read the retiring generations,
    /// take the old row still cached in a map for its result (a list's rows
    /// are the maps' `Arc`s), and be cached as current with it.
    fn invalidate_except(&self, key: Key, skip: Option<TypeId>, touched: &Touched<'_>) {
        let mut steps = EveryStep::default();
        let tables = self.tables();
        for member in tables.by_table.get(key.table).into_iter().flatten() {
            if Some(member.entity) != skip {
                steps.run(|| member.control.invalidate(key.id));
            }
        }
        self.bump(key.table, touched);
        steps.finish();
    }

    /// Applies a change another process (or this one) committed, as read from
    /// the database, with the key values its trigger reported (`&[]` from a
    /// trigger that reports none); returns whether `table` is cached here at all.
    pub(crate) fn apply_remote(&self, table: &str, id: i64, op: Op, touched: &Touched<'_>) -> bool {
        let tables = self.tables();
        let Some((&table, _)) = tables.generations.get_key_value(table) else {
            // Not cached here, but its deletes may cascade into a table that is.
            if let (Op::Delete | Op::Truncate, Some((&parent, _))) =
                (op, tables.deleted_with.get_key_value(table))
            {
                self.empty_dependents(parent);
                return true;
            }
            return false;
        };
        match op {
            Op::Insert | Op::Update => self.invalidate_except(Key { table, id }, None, touched),
            Op::Delete => {
                let mut steps = EveryStep::default();
                steps.run(|| self.invalidate_except(Key { table, id }, None, touched));
                steps.run(|| self.empty_dependents(table));
                steps.finish();
            }
            Op::Truncate => {
                let mut steps = EveryStep::default();
                // Emptied before its lists are retired (see `invalidate_except`).
                for member in tables.by_table.get(table).into_iter().flatten() {
                    steps.run(|| member.control.clear());
                }
                self.bump(table, &[]);
                steps.run(|| self.empty_dependents(table));
                steps.finish();
            }
        }
        true
    }

    /// Empties every cache, for when invalidations may have been missed.
    pub(crate) fn clear_all(&self) {
        let tables = self.tables();
        let mut steps = EveryStep::default();
        // The maps first, then the lists (see `invalidate_except`).
        for control in tables.by_type.values() {
            steps.run(|| control.clear());
        }
        for generation in tables.generations.values() {
            generation.fetch_add(1, Ordering::SeqCst);
        }
        for keys in tables.keys.values() {
            keys.bump_all();
        }
        self.queries.clear();
        steps.finish();
    }

    /// The tables of every registered entity, sorted.
    pub(crate) fn table_names(&self) -> Vec<&'static str> {
        let mut tables: Vec<_> = self.tables().by_table.keys().copied().collect();
        tables.sort_unstable();
        tables
    }

    /// The tables registered entities are [`Entity::DELETED_WITH`](crate::Entity::DELETED_WITH), sorted.
    pub(crate) fn deleted_with_parents(&self) -> Vec<&'static str> {
        let mut tables: Vec<_> = self.tables().deleted_with.keys().copied().collect();
        tables.sort_unstable();
        tables
    }

    /// Statistics per table (entities sharing a table are added up).
    pub(crate) fn stats(&self) -> BTreeMap<&'static str, CacheStats> {
        let mut out = BTreeMap::new();
        for (table, maps) in &self.tables().by_table {
            let total: &mut CacheStats = out.entry(*table).or_default();
            for member in maps {
                *total += member.control.stats();
            }
        }
        out
    }
}

/// Runs the steps of one invalidation each to its end when one panics (a
/// row's destructor, run as a map lets the row go, is application code):
/// stopped at the panic, the maps and lists the later steps retire would
/// serve the old row until the table next changed. The first panic goes on
/// once every step has run.
#[derive(Default)]
struct EveryStep {
    panic: Option<Box<dyn Any + Send>>,
}

impl EveryStep {
    fn run(&mut self, step: impl FnOnce()) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(step)) {
            self.panic.get_or_insert(panic);
        }
    }

    fn finish(self) {
        if let Some(panic) = self.panic {
            resume_unwind(panic);
        }
    }
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::{identity_map, Entity};
    use crate::pool::Connection;

    /// A test entity of `$table`: only its table's metadata matters here, so
    /// its database functions find, insert, update and delete nothing.
    macro_rules! inert_entity {
        ($(#[$doc:meta])* $name:ident, $table:literal $(, $item:item)*) => {
            $(#[$doc])*
            struct $name {
                id: i64,
            }

            impl Entity for $name {
                const TABLE: &'static str = $table;
                $($item)*
                type New = ();
                type Changes = ();

                fn id(&self) -> i64 {
                    self.id
                }

                fn find(_: &mut Connection, _: i64) -> diesel::QueryResult<Option<$name>> {
                    Ok(None)
                }

                fn insert(_: &mut Connection, _: &()) -> diesel::QueryResult<$name> {
                    Err(diesel::result::Error::NotFound)
                }

                fn update(_: &mut Connection, _: i64, _: &()) -> diesel::QueryResult<Option<$name>> {
                    Ok(None)
                }

                fn delete(_: &mut Connection, _: i64) -> diesel::QueryResult<bool> {
                    Ok(false)
                }
            }
        };
    }

    inert_entity!(
        /// A row of `children`, whose rows go when a `parents` row is deleted.
        Child,
        "children",
        const DELETED_WITH: &'static [&'static str] = &["parents"];,
        const KEY_COLUMNS: &'static [&'static str] = &["parent_id"];
    );

    inert_entity!(
        /// A row of `parents`, cached beside `children` for reads of two tables.
        Parent,
        "parents"
    );

    /// `generations` looks a table up once per run of reads of it: each
    /// table's reads must still compare that table's generations.
    #[test]
    fn reads_of_two_tables_in_turn_each_follow_their_own_table() {
        let registry = Registry::new(8, 8);
        identity_map::<Child>(&registry, None);
        identity_map::<Parent>(&registry, None);
        let reads = [
            Read::eq("children", "parent_id", 7),
            Read::eq("children", "parent_id", 8),
            Read::table("parents"),
            Read::eq("children", "parent_id", 9),
        ];
        let before = registry.generations(&reads).unwrap();
        assert_eq!(before.len(), 7, "{before:?}");
        registry.retire_lists("parents");
        let after_parents = registry.generations(&reads).unwrap();
        assert_ne!(after_parents, before, "a change to parents was missed");
        assert_eq!(after_parents[4], ("parents", 0, before[4].2 + 1));
        let moved = Written {
            entity: TypeId::of::<Child>(),
            value: Some(Arc::new(Child { id: 1 })),
            cacheable: true,
            epoch: 0,
            touched: vec![("parent_id", Some(9))],
        };
        Unapplied::new(
            &registry,
            vec![PendingWrite::Written {
                key: Key::new("children", 1),
                written: moved,
            }],
        )
        .committed();
        let after_child = registry.generations(&reads).unwrap();
        assert_ne!(after_child[6], after_parents[6], "parent 9's list stayed");
        assert_eq!(after_child[4], after_parents[4], "parents did not change");
    }

    #[test]
    fn an_uncertain_commit_retires_the_lists_of_the_old_and_new_key_values() {
        let registry = Registry::new(8, 8);
        identity_map::<Child>(&registry, None);
        let read = |value| {
            registry
                .generations(&[Read::eq("children", "parent_id", value)])
                .unwrap()
        };
        let (seven, eight, nine) = (read(7), read(8), read(9));
        let moved = Written {
            entity: TypeId::of::<Child>(),
            value: Some(Arc::new(Child { id: 1 })),
            cacheable: true,
            epoch: 0,
            touched: vec![("parent_id", Some(7)), ("parent_id", Some(8))],
        };
        Unapplied::new(
            &registry,
            vec![PendingWrite::Written {
                key: Key::new("children", 1),
                written: moved,
            }],
        )
        .uncertain();
        assert_ne!(read(7), seven, "the old value's lists stayed");
        assert_ne!(read(8), eight, "the new value's lists stayed");
        assert_eq!(read(9), nine, "another value's lists went");
        Unapplied::new(
            &registry,
            vec![PendingWrite::Unsettled(Key::new("children", 1))],
        )
        .uncertain();
        assert_ne!(read(9), nine, "an unsettled write must retire every list");
    }

    #[test]
    fn a_remote_delete_of_an_uncached_parent_empties_its_dependents() {
        let registry = Registry::new(8, 0);
        let children = identity_map::<Child>(&registry, None);
        children
            .get_or_load(1, || Ok::<_, ()>(Some(Child { id: 1 })))
            .unwrap();
        assert!(children.peek(1).is_some());
        // `parents` is not cached here; MySQL logs no row for what its delete cascades to.
        registry.apply_remote("parents", 7, Op::Delete, &[]);
        assert!(
            children.peek(1).is_none(),
            "a cascade from an uncached table left its children cached"
        );
    }
}
