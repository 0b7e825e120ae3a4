//! The admission policy's hit ratio on seeded traces, against bounds computed
//! on the same trace in the same run: plain LRU (what the policy must beat),
//! and the static oracle that keeps exactly the most popular keys (what it
//! must come close to). The traces are generated from a fixed seed and the
//! map is driven from one thread, so every run sees the same numbers: these
//! are correctness tests of the policy, not timings.
//!
//! The workload is the default: Zipf 0.99 over 100,000 keys, capacity
//! 10,000, 95% reads and 5% updates, an update invalidating its key.

use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;

use super::IdentityMap;

const KEYS: usize = 100_000;
const CAPACITY: usize = 10_000;
const SKEW: f64 = 0.99;
const READ_RATIO: f64 = 0.95;
const WARM_UP: usize = 500_000;
const MEASURED: usize = 1_000_000;

/// SplitMix64: a small seeded generator whose sequence no dependency update can change.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Keys by Zipf rank: key `r` (1-based) is the r-th most popular.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(keys: usize, skew: f64) -> Zipf {
        let mut total = 0.0;
        let mut cdf: Vec<f64> = (1..=keys)
            .map(|rank| {
                total += (rank as f64).powf(-skew);
                total
            })
            .collect();
        for p in &mut cdf {
            *p /= total;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut Rng) -> i64 {
        let u = rng.unit();
        let index = self.cdf.partition_point(|&p| p < u).min(self.cdf.len() - 1);
        index as i64 + 1
    }
}

#[derive(Clone, Copy)]
enum Op {
    Read(i64),
    Update(i64),
}

fn trace(ops: usize, seed: u64) -> Vec<Op> {
    let zipf = Zipf::new(KEYS, SKEW);
    let mut rng = Rng(seed);
    (0..ops)
        .map(|_| {
            let key = zipf.sample(&mut rng);
            if rng.unit() < READ_RATIO {
                Op::Read(key)
            } else {
                Op::Update(key)
            }
        })
        .collect()
}

/// A cache under test: reads count hits, updates invalidate.
trait Policy {
    /// True on a hit; a miss loads and offers the key to the cache.
    fn read(&mut self, key: i64) -> bool;
    fn update(&mut self, key: i64);
}

impl Policy for IdentityMap<i64> {
    fn read(&mut self, key: i64) -> bool {
        let mut missed = false;
        let _ = self.get_or_load(key, || {
            missed = true;
            Ok::<_, ()>(Some(key))
        });
        !missed
    }

    fn update(&mut self, key: i64) {
        self.invalidate(key);
    }
}

/// Plain LRU of the same capacity, in one piece (no shards).
struct Lru(LruCache<i64, Arc<i64>>);

impl Policy for Lru {
    fn read(&mut self, key: i64) -> bool {
        if self.0.get(&key).is_some() {
            return true;
        }
        self.0.push(key, Arc::new(key));
        false
    }

    fn update(&mut self, key: i64) {
        self.0.pop(&key);
    }
}

/// moka's own policy (W-TinyLFU, one cache, no shards) at the same capacity:
/// the crate an application would otherwise put in front of its database.
struct Moka(moka::sync::Cache<i64, Arc<i64>>);

impl Policy for Moka {
    fn read(&mut self, key: i64) -> bool {
        if self.0.get(&key).is_some() {
            return true;
        }
        self.0.insert(key, Arc::new(key));
        false
    }

    fn update(&mut self, key: i64) {
        self.0.invalidate(&key);
    }
}

/// The static bound: exactly the `CAPACITY` most popular keys are cached,
/// each update leaving its key uncached until its next read.
struct Oracle {
    invalidated: Vec<bool>,
}

impl Policy for Oracle {
    fn read(&mut self, key: i64) -> bool {
        let Some(invalidated) = self.invalidated.get_mut(key as usize - 1) else {
            return false;
        };
        !std::mem::replace(invalidated, false)
    }

    fn update(&mut self, key: i64) {
        if let Some(invalidated) = self.invalidated.get_mut(key as usize - 1) {
            *invalidated = true;
        }
    }
}

fn oracle() -> Oracle {
    Oracle {
        invalidated: vec![false; CAPACITY],
    }
}

fn lru() -> Lru {
    Lru(LruCache::new(NonZeroUsize::new(CAPACITY).unwrap()))
}

/// Hit ratio of the reads of `ops`, for keys `hot` selects.
fn run(policy: &mut impl Policy, ops: &[Op], hot: impl Fn(i64) -> bool) -> f64 {
    let (mut reads, mut hits) = (0u64, 0u64);
    for op in ops {
        match *op {
            Op::Read(key) => {
                let hit = policy.read(key);
                if hot(key) {
                    reads += 1;
                    hits += u64::from(hit);
                }
            }
            Op::Update(key) => policy.update(key),
        }
    }
    hits as f64 / reads.max(1) as f64
}

fn steady_state(policy: &mut impl Policy, ops: &[Op]) -> f64 {
    let (warm_up, measured) = ops.split_at(WARM_UP);
    run(policy, warm_up, |_| true);
    run(policy, measured, |_| true)
}

#[test]
fn admission_comes_within_3_percent_of_the_oracle_and_beats_lru() {
    let ops = trace(WARM_UP + MEASURED, 13);
    let larder = steady_state(&mut IdentityMap::<i64>::new("test", CAPACITY), &ops);
    let lru = steady_state(&mut lru(), &ops);
    let oracle = steady_state(&mut oracle(), &ops);
    eprintln!("hit ratio: larder {larder:.4}, plain LRU {lru:.4}, oracle {oracle:.4}");
    assert!(
        larder >= 0.97 * oracle,
        "larder {larder:.4} < 97% of the oracle's {oracle:.4}"
    );
    assert!(larder >= 0.74, "larder {larder:.4} < 0.74");
    assert!(
        larder >= lru + 0.03,
        "larder {larder:.4} is no better than plain LRU's {lru:.4}"
    );
}

#[test]
fn admission_matches_moka_on_the_same_trace() {
    let ops = trace(WARM_UP + MEASURED, 13);
    let larder = steady_state(&mut IdentityMap::<i64>::new("test", CAPACITY), &ops);
    let moka = steady_state(&mut Moka(moka::sync::Cache::new(CAPACITY as u64)), &ops);
    eprintln!("hit ratio on one trace: larder {larder:.4}, moka {moka:.4}");
    assert!(larder >= moka, "larder {larder:.4} < moka's {moka:.4}");
}

#[test]
fn a_scan_of_every_key_leaves_the_hot_set_cached() {
    let ops = trace(WARM_UP + 2 * MEASURED / 4, 21);
    let (warm_up, rest) = ops.split_at(WARM_UP);
    let (before, after) = rest.split_at(MEASURED / 4);
    let hot = |key: i64| key as usize <= CAPACITY;
    let scan: Vec<Op> = (1..=KEYS as i64).map(Op::Read).collect();

    let mut map = IdentityMap::<i64>::new("test", CAPACITY);
    run(&mut map, warm_up, hot);
    let larder_before = run(&mut map, before, hot);
    run(&mut map, &scan, hot);
    let larder_after = run(&mut map, after, hot);

    let mut lru = lru();
    run(&mut lru, warm_up, hot);
    let lru_before = run(&mut lru, before, hot);
    run(&mut lru, &scan, hot);
    let lru_after = run(&mut lru, after, hot);
    eprintln!(
        "hot-set hit ratio before / after a scan: larder {larder_before:.4} / {larder_after:.4}, \
         plain LRU {lru_before:.4} / {lru_after:.4}"
    );
    assert!(
        larder_after >= 0.95 * larder_before,
        "after a scan the hot set hits {larder_after:.4}, before it {larder_before:.4}"
    );
}

#[test]
fn the_shards_together_fill_to_the_capacity_and_never_past_it() {
    let mut map = IdentityMap::<i64>::new("test", CAPACITY);
    // Hot keys that all fall into two of the sixteen shards: an even split of
    // the capacity would hold only an eighth of them.
    let lopsided: Vec<i64> = (1..)
        .filter(|&key| map.shard_index(key) < 2)
        .take(2 * CAPACITY)
        .collect();
    for round in 0..3 {
        for &key in &lopsided {
            map.read(key);
            let used = map.budget.used();
            assert!(used <= CAPACITY, "{used} entries in round {round}");
        }
    }
    assert_eq!(map.stats().entries as usize, CAPACITY);
    assert_eq!(map.budget.used(), CAPACITY, "the budget counts every entry");
    // Invalidated keys' units stay with their shards, for their next fill.
    for &key in &lopsided {
        map.update(key);
    }
    assert_eq!(map.stats().entries, 0);
    assert_eq!((map.budget.used(), map.units()), (CAPACITY, CAPACITY));
    map.clear();
    assert_eq!((map.budget.used(), map.units()), (0, 0));
}
