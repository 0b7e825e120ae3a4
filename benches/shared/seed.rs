//! The users the benches read: a store over `url` (coherence off, room to
//! cache them all), migrated, with `count` users seeded in one transaction,
//! and their ids in one shuffled order; and an endless walk over those ids.

use larder::Store;
use larder_blog::prelude::*;
use larder_blog::NewUser;
use rand::seq::SliceRandom;
use rand::SeedableRng;

#[allow(clippy::expect_used)]
pub(crate) fn users(url: &str, count: usize, shuffle_seed: u64) -> (Store, Vec<i64>) {
    let store = larder_blog::builder(url)
        .cache_capacity(2 * count)
        .coherence(false)
        .build()
        .expect("open store");
    larder_blog::migrate(&store).expect("migrate");
    let mut ids = store
        .transaction(|tx| {
            (0..count)
                .map(|n| {
                    let new = NewUser {
                        name: format!("user {n}"),
                        email: format!("user{n}@bench.larder"),
                    };
                    Ok(tx.users().create(new)?.id)
                })
                .collect::<larder::Result<Vec<i64>>>()
        })
        .expect("seed users");
    ids.shuffle(&mut rand::rngs::StdRng::seed_from_u64(shuffle_seed));
    (store, ids)
}

/// Walks `ids` from the start, wrapping around.
pub(crate) fn keys(ids: &[i64]) -> impl FnMut() -> i64 + '_ {
    let mut next = 0;
    move || {
        next = (next + 1) % ids.len();
        ids[next]
    }
}
