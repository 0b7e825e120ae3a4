//! How often each key was asked for, approximately: the frequency half of
//! TinyLFU (Einziger, Friedman and Manes), as Caffeine and moka keep it. A
//! count-min sketch of 4-bit counters, sixteen to a word, a key's four in one
//! cache line. Every `sample`
//! accesses all counters are halved, so that popularity ages: a key hot last
//! hour does not outrank one hot now.
//!
//! TinyLFU puts a doorkeeper bit set in front of the counters to absorb
//! one-time keys; on the workload this cache is measured on (Zipf 0.99, see
//! `hit_ratio.rs`) it cost 0.2 points of hit ratio, because the keys at the
//! edge of the hot set are seen only once or twice per sample and a
//! doorkeeper discards half of that signal. So there is none.
//!
//! The sketch is plain memory owned by one shard and touched under its lock:
//! no atomics, no lock of its own.
//!
//! A hit counts its access at once. Recording hits in a 16-key per-shard
//! buffer and counting them in batches (Caffeine's read buffer, drained before
//! any frequency is read, so admission decided exactly as before) measured
//! worse in the hit bench, a median 3.4× the bare-LRU floor against 2.0× in
//! the same rounds: counted inline, the counter line's load overlaps the LRU
//! node's cache miss; batched, the sixteen loads are paid apart. Dropping the
//! update from hits altogether would reach only about 1.8× (docs/benchmarks.md).

/// Each counter saturates here (4 bits).
const MAX_COUNT: u64 = 15;
/// Rows of the count-min sketch: each key has one counter per row.
const ROWS: usize = 4;
/// Counters in one word of the table.
const PER_WORD: u64 = 16;
/// Words in one block: a key's counters all lie in one block, row `r` in
/// word `2r` or `2r + 1`, so that counting an access touches one cache line
/// instead of four (on a random key stream a hit with the sketch cost
/// 1.31-1.41x a bare LRU hit, against 1.41-2.00x with four lines).
const BLOCK_WORDS: usize = 8;
/// Cached entries per word of counters: eight counters per entry (4 bytes)
/// estimated the measured workload's hot set as well as sixteen did
/// (0.7429 vs 0.7432), four did not (0.7408).
const ENTRIES_PER_WORD: usize = 2;
/// Accesses between two agings, per cached entry. TinyLFU's sample is 10;
/// 20 gives the keys at the edge of the hot set counts of 1 to 3 instead of
/// 0 to 1, which is what tells them from the cold keys (0.721 vs 0.717,
/// measured before shards kept their invalidated keys' units).
const SAMPLE_PER_ENTRY: u64 = 20;

/// One cache line of counters.
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct Block([u64; BLOCK_WORDS]);

pub(crate) struct Sketch {
    /// Sixteen 4-bit counters per word, eight words per block.
    table: Box<[Block]>,
    /// Accesses recorded since the last aging.
    additions: u64,
    /// Accesses between agings.
    sample: u64,
}

impl Sketch {
    /// A sketch sized for a cache of about `entries` entries: a word of
    /// sixteen counters per two entries, in whole blocks, rounded up to a
    /// power of two. (Not rounding saved 2.4 bytes per entry in the footprint
    /// test but cost 0.2 points of hit ratio, 0.7409 vs 0.7425: the rounding
    /// is what gave most shards more than eight counters per entry.)
    pub(crate) fn new(entries: usize) -> Sketch {
        let blocks = entries
            .div_ceil(ENTRIES_PER_WORD * BLOCK_WORDS)
            .max(1)
            .next_power_of_two();
        Sketch {
            table: vec![Block::default(); blocks].into_boxed_slice(),
            additions: 0,
            sample: entries.max(1) as u64 * SAMPLE_PER_ENTRY,
        }
    }

    /// Records one access of `key`.
    #[inline]
    pub(crate) fn increment(&mut self, key: i64) {
        let (block, counters) = self.locate(spread(key));
        let words = &mut self.table[block].0;
        // Conservative update: only the smallest counters move, so a key's
        // estimate is not inflated by the keys it shares its other counters with.
        let least = counters
            .iter()
            .map(|&(word, shift)| (words[word] >> shift) & MAX_COUNT)
            .min()
            .unwrap_or(0);
        if least < MAX_COUNT {
            for (word, shift) in counters {
                // Read again: two rows never share a word, but stay safe if they did.
                if (words[word] >> shift) & MAX_COUNT == least {
                    words[word] += 1 << shift;
                }
            }
        }
        self.additions += 1;
        if self.additions >= self.sample {
            self.age();
        }
    }

    /// The estimated number of accesses of `key` since the last aging (at most 15).
    pub(crate) fn frequency(&self, key: i64) -> u64 {
        let (block, counters) = self.locate(spread(key));
        let words = &self.table[block].0;
        counters
            .iter()
            .map(|&(word, shift)| (words[word] >> shift) & MAX_COUNT)
            .min()
            .unwrap_or(0)
    }

    /// The key's block and, in it, `(word, bit shift)` of its counter in each row.
    #[inline]
    fn locate(&self, hash: u64) -> (usize, [(usize, u32); ROWS]) {
        // The high half picks the block (multiply-shift, as cheap as a mask);
        // the low half, a byte per row, picks the row's word and counter.
        let block = ((hash >> 32) * self.table.len() as u64) >> 32;
        let counters = std::array::from_fn(|row| {
            let h = hash >> (8 * row);
            let word = 2 * row + (h & 1) as usize;
            let shift = (((h >> 1) % PER_WORD) * 4) as u32;
            (word, shift)
        });
        (block as usize, counters)
    }

    /// Halves every counter.
    fn age(&mut self) {
        for word in self.table.iter_mut().flat_map(|block| block.0.iter_mut()) {
            *word = (*word >> 1) & 0x7777_7777_7777_7777;
        }
        self.additions /= 2;
    }
}

/// A 64-bit mix of a key (the finalizer of SplitMix64): neighbouring ids land
/// on unrelated counters.
fn spread(key: i64) -> u64 {
    let mut z = (key as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_accesses() {
        let mut sketch = Sketch::new(64);
        assert_eq!(sketch.frequency(7), 0);
        sketch.increment(7);
        sketch.increment(7);
        assert_eq!(sketch.frequency(7), 2);
    }

    #[test]
    fn frequent_keys_outrank_rare_ones_and_counters_saturate() {
        let mut sketch = Sketch::new(1024);
        for _ in 0..40 {
            sketch.increment(1);
        }
        for key in 100..400 {
            sketch.increment(key);
        }
        assert_eq!(sketch.frequency(1), MAX_COUNT);
        let rare = (100..400).map(|k| sketch.frequency(k)).max().unwrap_or(0);
        assert!(rare <= 2, "a key seen once estimated at {rare}");
    }

    #[test]
    fn aging_halves_the_counts() {
        let mut sketch = Sketch::new(1);
        for _ in 0..9 {
            sketch.increment(3);
        }
        assert_eq!(sketch.frequency(3), 9);
        // The twentieth access reaches the sample (20 per entry) and ages.
        for _ in 9..20 {
            sketch.increment(3);
        }
        assert_eq!(sketch.frequency(3), 7, "15 (saturated), halved");
    }
}
