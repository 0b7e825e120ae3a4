//! The entity registry and invalidation bus: finds an entity's identity map by
//! type for repositories, and by table name for invalidations, which arrive as
//! `(table, id)` from commits in this process (and, later, from other processes).

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::cache::{CacheControl, CacheStats, IdentityMap};
use crate::entity::{Entity, Key};

/// A cached value of any entity type.
pub(crate) type AnyValue = Arc<dyn Any + Send + Sync>;

struct Registered {
    typed: AnyValue,
    control: Arc<dyn CacheControl>,
}

/// One of the entities cached from a table.
struct TableMember {
    entity: TypeId,
    control: Arc<dyn CacheControl>,
}

/// Built once by the store builder, read-only afterwards, so looking an entity
/// up takes no lock.
#[derive(Default)]
pub(crate) struct Registry {
    by_type: HashMap<TypeId, Registered>,
    by_table: HashMap<&'static str, Vec<TableMember>>,
}

/// A committed write waiting to be applied to the caches: the entity's own
/// new value (or `None` for a delete) and the epoch read before the write.
pub(crate) struct PendingWrite {
    pub(crate) key: Key,
    /// `None` for rows changed as a side effect (cascades): invalidated only.
    pub(crate) written: Option<Written>,
}

/// What the writing entity knows about its own write.
pub(crate) struct Written {
    pub(crate) entity: TypeId,
    /// The row as stored, or `None` for a delete.
    pub(crate) value: Option<AnyValue>,
    /// The key's shard epoch read before the write.
    pub(crate) epoch: u64,
}

impl Registry {
    pub(crate) fn register<E: Entity>(&mut self, capacity: usize) {
        let map = Arc::new(IdentityMap::<E>::new(capacity));
        let control: Arc<dyn CacheControl> = map.clone();
        self.by_table
            .entry(E::TABLE)
            .or_default()
            .push(TableMember {
                entity: TypeId::of::<E>(),
                control: Arc::clone(&control),
            });
        self.by_type.insert(
            TypeId::of::<E>(),
            Registered {
                typed: map,
                control,
            },
        );
    }

    pub(crate) fn contains<E: Entity>(&self) -> bool {
        self.by_type.contains_key(&TypeId::of::<E>())
    }

    pub(crate) fn map<E: Entity>(&self) -> Option<&IdentityMap<E>> {
        self.by_type
            .get(&TypeId::of::<E>())
            .and_then(|r| r.typed.downcast_ref::<IdentityMap<E>>())
    }

    /// Applies writes after their transaction committed: the writing entity's map
    /// may keep the new value, every other map of the same table drops the key.
    pub(crate) fn apply_committed(&self, writes: Vec<PendingWrite>) {
        for write in writes {
            let writer = write.written.as_ref().map(|w| w.entity);
            if let Some(written) = write.written {
                if let Some(r) = self.by_type.get(&written.entity) {
                    r.control
                        .apply_write_any(write.key.id, written.value, written.epoch);
                }
            }
            self.invalidate_except(write.key, writer);
        }
    }

    /// Drops every cached copy of `key`, in every entity mapped to its table.
    pub(crate) fn invalidate(&self, key: Key) {
        self.invalidate_except(key, None);
    }

    fn invalidate_except(&self, key: Key, skip: Option<TypeId>) {
        for member in self.by_table.get(key.table).into_iter().flatten() {
            if Some(member.entity) != skip {
                member.control.invalidate(key.id);
            }
        }
    }

    /// Empties every cache, for when invalidations may have been missed.
    pub(crate) fn clear_all(&self) {
        for registered in self.by_type.values() {
            registered.control.clear();
        }
    }

    /// Statistics per table (entities sharing a table are added up).
    pub(crate) fn stats(&self) -> BTreeMap<&'static str, CacheStats> {
        let mut out = BTreeMap::new();
        for (table, maps) in &self.by_table {
            let total: &mut CacheStats = out.entry(*table).or_default();
            for member in maps {
                *total += member.control.stats();
            }
        }
        out
    }
}
