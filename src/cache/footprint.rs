//! What the cache costs in memory, counted by the allocator: the bytes an
//! entry takes beyond the entity itself (the `Arc`'s counts, the LRU node,
//! the hash slots and the admission policy's sketch, all shards' fixed parts
//! spread over the entries), and that the footprint stays flat over a long
//! run of fills, evictions and invalidations.
//!
//! The lib's test binary counts live heap bytes per thread (each test runs on
//! its own thread, so tests running in parallel do not disturb each other's
//! counts; what one test measures is allocated and freed on its own thread).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use super::IdentityMap;

thread_local! {
    /// Bytes this thread allocated and has not freed (negative when it
    /// freed what another thread allocated).
    static LIVE: Cell<isize> = const { Cell::new(0) };
    /// Allocations (and reallocations) this thread made.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count(bytes: isize) {
    // Ignored while the thread is being torn down: no test measures then.
    let _ = LIVE.try_with(|live| live.set(live.get() + bytes));
}

fn count_allocation() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn live() -> isize {
    LIVE.with(Cell::get)
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

struct Counting;

// Implementing an allocator is unsafe by definition; this one forwards every
// call to the system allocator unchanged and only counts sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
            count_allocation();
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on as is.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
            count_allocation();
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on as is.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc`, passed on as is.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(new_size as isize - layout.size() as isize);
            count_allocation();
        }
        new
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// An entity of the blog's `User` size with no heap of its own, so that
/// everything counted beyond `size_of` is the cache's.
struct Entity {
    _fields: [u64; 9],
}

const CAPACITY: usize = 10_000;

fn entity(id: i64) -> Option<Entity> {
    Some(Entity {
        _fields: [id as u64; 9],
    })
}

fn get(map: &IdentityMap<Entity>, id: i64) {
    let _ = map.get_or_load(id, || Ok::<_, ()>(entity(id)));
}

/// Bytes per entry beyond the entity, the map's fixed parts included: what
/// the operator adds to the entity's size to budget a cache's memory.
#[test]
fn an_entry_costs_at_most_88_bytes_beyond_its_entity() {
    // The first use of a tracing callsite registers it for good: do that first.
    get(&IdentityMap::new("test", 1), 0);
    let before = live();
    let map = IdentityMap::<Entity>::new("test", CAPACITY);
    for id in 0..CAPACITY as i64 {
        get(&map, id);
    }
    assert_eq!(map.stats().entries as usize, CAPACITY);
    let per_entry = (live() - before) as f64 / CAPACITY as f64;
    drop(map);
    // Read before printing: the test harness's output capture allocates.
    let left_behind = live() - before;
    let overhead = per_entry - std::mem::size_of::<Entity>() as f64;
    eprintln!(
        "{per_entry:.1} B per entry, {overhead:.1} B beyond the {} B entity",
        std::mem::size_of::<Entity>()
    );
    assert!(
        overhead <= 88.0,
        "{overhead:.1} B per entry beyond the entity"
    );
    assert_eq!(left_behind, 0, "dropping the map frees everything it held");
}

/// A million reads and invalidations of a skewed key mix over ten times the
/// capacity: the heap after the run is the heap half way through. The first
/// half fills the cache and lets the regions' tables settle (probation's is
/// fitted once the hot keys have moved on to protected, and each table grows
/// to where its churn leaves it); a leak would go on growing after that. The
/// 2% allowed is one late doubling of a shard's table (about 1% of this heap);
/// a leak of one byte per fifteen operations would be 3%.
#[test]
fn the_footprint_stays_flat_over_a_long_run() {
    let map = IdentityMap::<Entity>::new("test", CAPACITY);
    let mut next_key = skewed_keys(0x5eed);
    serve_mix(&map, &mut next_key, 500_000);
    let half_way = live();
    serve_mix(&map, &mut next_key, 500_000);
    let at_1m = live();
    eprintln!("live heap: {half_way} B after 500k operations, {at_1m} B after 1M");
    assert!(
        (at_1m - half_way).abs() as f64 <= 0.02 * half_way as f64,
        "the heap moved from {half_way} B to {at_1m} B"
    );
}

/// An invalidation (every write makes one, and so does every change another
/// process made) hands what it removed out of the shard lock without
/// allocating for it.
#[test]
fn an_invalidation_allocates_nothing() {
    let map = IdentityMap::<Entity>::new("test", 64);
    for id in 0..64 {
        get(&map, id);
    }
    let before = allocations();
    map.invalidate(1);
    map.apply_write(2, None, map.epoch_of(2));
    map.invalidate(10_000); // not cached
    let allocated = allocations() - before;
    assert_eq!(allocated, 0, "{allocated} allocations");
    assert_eq!(map.stats().entries, 62);
}

/// `ops` operations on `map` with keys from `next_key`: reads, and one
/// invalidation in twenty.
fn serve_mix(map: &IdentityMap<Entity>, next_key: &mut impl FnMut() -> i64, ops: usize) {
    for n in 1..=ops {
        let key = next_key();
        if n % 20 == 0 {
            map.invalidate(key);
        } else {
            get(map, key);
        }
    }
}

/// A skewed key mix: the square of a uniform draw favours small keys, over
/// ten times the capacity.
fn skewed_keys(seed: u64) -> impl FnMut() -> i64 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let u = (state >> 33) as f64 / (1u64 << 31) as f64;
        ((u * u) * (10 * CAPACITY) as f64) as i64
    }
}

/// Bytes per entry beyond the entity, once a full map has served a skewed
/// mix of reads and invalidations (hot keys promoted, the regions at their
/// working sizes), against a bare `LruCache` of the same capacity serving the
/// same keys in the same run: the admission policy's three regions and its
/// sketch cost no more than one plain LRU's table. Without fitting
/// probation's table (see `Entries::fit_probation`) this measured 112.1 B
/// against the bare cache's 103.7 B: a second table sized for the whole
/// share, left behind by the fill. (Both tables end up at about a third full:
/// hashbrown doubles a table whose deleted slots use up its room while it is
/// more than half full.)
#[test]
fn a_map_in_use_costs_no_more_than_a_bare_lru() {
    get(&IdentityMap::new("test", 1), 0);
    let before = live();
    let map = IdentityMap::<Entity>::new("test", CAPACITY);
    serve_mix(&map, &mut skewed_keys(0x5eed), 400_000);
    let entries = map.stats().entries as f64;
    let larder = (live() - before) as f64 / entries - std::mem::size_of::<Entity>() as f64;
    drop(map);

    let mut next_key = skewed_keys(0x5eed);
    let before = live();
    let mut bare = lru::LruCache::<i64, std::sync::Arc<Entity>>::new(
        std::num::NonZeroUsize::new(CAPACITY).unwrap(),
    );
    for n in 1..=400_000 {
        let key = next_key();
        if n % 20 == 0 {
            bare.pop(&key);
        } else if bare.get(&key).is_none() {
            bare.push(key, std::sync::Arc::new(entity(key).unwrap()));
        }
    }
    let bare_entries = bare.len() as f64;
    let floor = (live() - before) as f64 / bare_entries - std::mem::size_of::<Entity>() as f64;
    drop(bare);
    eprintln!(
        "in use: larder {larder:.1} B per entry beyond the entity ({entries} entries), \
         a bare LruCache {floor:.1} B ({bare_entries} entries)"
    );
    assert!(
        larder <= floor,
        "{larder:.1} B per entry in use, a bare LruCache {floor:.1} B"
    );
}
