//! The blog's query methods as a library user calls them, with inputs at
//! their limits: on every backend.

#[path = "../../../tests/common/mod.rs"]
mod common;

use common::each_backend;
use larder_blog::prelude::*;

/// A front page of many posts counts their comments in one call: more ids
/// than one statement may bind (SQLite 32,766, the servers 65,535) must be
/// counted, as `get_many` takes them, not fail with a database error.
#[test]
fn counts_of_posts_takes_more_ids_than_one_statement_binds() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = common::user(&db.store, "ann");
        let post = common::post(&db.store, &ann, "counted");
        for body in ["one", "two"] {
            common::comment(&db.store, &post, &ann, body);
        }
        let mut ids: Vec<i64> = (1..=70_000).map(|n| post.id + n).collect();
        ids.push(post.id);
        let counts = db
            .store
            .comments()
            .counts_of_posts(&ids)
            .unwrap_or_else(|e| panic!("on {:?}: {e}", target.backend));
        assert_eq!(counts.len(), ids.len());
        assert_eq!(counts[&post.id], 2);
        assert_eq!(counts[&(post.id + 1)], 0);
        // And again, from the cache or not, the same.
        assert_eq!(db.store.comments().counts_of_posts(&ids).unwrap(), counts);
    });
}
