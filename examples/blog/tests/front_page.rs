//! The front page rebuilt under the named lock "front-page", its write
//! guarded by the lock's fencing token, on every backend.

#[path = "../../../tests/common/mod.rs"]
mod common;

use larder_blog::{front_page, rebuild_front_page, write_front_page, FRONT_PAGE_LOCK};

#[test]
fn concurrent_rebuilds_run_one_at_a_time_and_the_newest_token_wins() {
    common::each_backend(|target| {
        let db = target.fresh();
        let ann = common::user(&db.store, "ann");
        common::post(&db.store, &ann, "Threading & <Locks>");
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let store = db.store.clone();
                std::thread::spawn(move || {
                    (0..3)
                        .map(|_| rebuild_front_page(&store).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut rebuilds: Vec<_> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        rebuilds.sort_by_key(|r| r.token);
        let tokens: Vec<u64> = rebuilds.iter().map(|r| r.token).collect();
        assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
        // Each rebuild held the lock while it wrote, so none was stale.
        assert!(rebuilds.iter().all(|r| r.written), "{rebuilds:?}");
        let (html, token) = front_page(&db.store).unwrap();
        assert_eq!(token, *tokens.last().unwrap());
        assert_eq!(html, "<ul><li>Threading &amp; &lt;Locks&gt;</li></ul>");
    });
}

#[test]
fn a_holder_that_lost_its_lock_cannot_overwrite_a_newer_page() {
    common::each_backend(|target| {
        let db = target.fresh();
        // A rebuild takes the lock, then pauses (a GC, a stopped VM) …
        let paused = db.store.lock(FRONT_PAGE_LOCK).unwrap();
        let stale_token = paused.fencing_token();
        drop(paused); // … long enough to lose it,
        let newer = rebuild_front_page(&db.store).unwrap(); // and another rebuild runs.
        assert!(newer.written && newer.token > stale_token);

        // The paused one wakes up and writes: the database refuses it.
        assert!(!write_front_page(&db.store, "<p>stale</p>", stale_token).unwrap());
        let (html, token) = front_page(&db.store).unwrap();
        assert_eq!(token, newer.token);
        assert_ne!(html, "<p>stale</p>");
    });
}
