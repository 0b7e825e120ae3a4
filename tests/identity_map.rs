//! The identity map: one `Arc` per cached row, bounded by LRU capacity.

mod common;

use larder_blog::prelude::*;
use std::sync::Arc;

use common::{each_backend, post, user};
use larder::Entity;
use larder_blog::User;

#[test]
fn a_cached_key_returns_the_same_arc() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let first = db.store.users().get(ann.id).unwrap().unwrap();
        let second = db.store.users().get(ann.id).unwrap().unwrap();
        assert!(Arc::ptr_eq(&ann, &first), "create caches the stored row");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(db.store.stats().entity("users").hits, 2);
    });
}

#[test]
fn a_key_loaded_from_the_database_is_cached_once() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        db.store.clear_cache();
        let loaded = db.store.users().get(ann.id).unwrap().unwrap();
        let again = db.store.users().get(ann.id).unwrap().unwrap();
        assert!(Arc::ptr_eq(&loaded, &again));
        assert_eq!(*loaded, *ann);
        let stats = db.store.stats().entity("users");
        assert_eq!((stats.misses, stats.loads, stats.hits), (1, 1, 1));
    });
}

#[test]
fn capacity_is_bounded_by_lru() {
    each_backend(|target| {
        let db = target.fresh_with(|b| b.cache_capacity(4));
        let ids: Vec<i64> = (0..20)
            .map(|n| user(&db.store, &format!("u{n}")).id)
            .collect();
        for &id in &ids {
            db.store.users().get(id).unwrap().unwrap();
        }
        let stats = db.store.stats().entity("users");
        assert!(stats.entries <= 4, "{stats:?}");
        assert!(stats.evictions >= 16, "{stats:?}");
        // An evicted row is loaded again, correctly.
        let first = db.store.users().get(ids[0]).unwrap().unwrap();
        assert_eq!(first.name, "u0");
    });
}

#[test]
fn list_queries_return_the_identity_maps_arcs() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let p1 = post(&db.store, &ann, "one");
        let p2 = post(&db.store, &ann, "two");
        let listed = db.store.posts().by_author(ann.id).unwrap();
        assert_eq!(listed.len(), 2);
        assert!(Arc::ptr_eq(&listed[0], &p1) && Arc::ptr_eq(&listed[1], &p2));
        let recent = db.store.posts().recent(1).unwrap();
        assert!(Arc::ptr_eq(&recent[0], &p2));
    });
}

#[test]
fn capacity_zero_turns_caching_off() {
    each_backend(|target| {
        let db = target.fresh_with(|b| b.cache_capacity(0));
        let ann = user(&db.store, "ann");
        let a = db.store.users().get(ann.id).unwrap().unwrap();
        let b = db.store.users().get(ann.id).unwrap().unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(db.store.stats().entity("users").entries, 0);
    });
}

/// A list query that ran while another key of its rows' shard was
/// invalidated cannot cache what it read, but a row that is cached and
/// unchanged must still come back as the cached `Arc`.
#[test]
fn a_list_query_hands_out_the_cached_arc_even_when_it_cannot_fill() {
    each_backend(|target| {
        // One entry of capacity: one shard, so any invalidation lands on the row's.
        let db = target.fresh_with(|b| b.entity_with_capacity::<User>(1));
        let ann = user(&db.store, "ann");
        let cached = db.store.users().get(ann.id).unwrap().unwrap();
        let store = db.store.clone();
        let listed = db
            .store
            .users()
            .query(|conn| {
                // Another request invalidates an unrelated row meanwhile.
                store.users().invalidate(ann.id + 1_000);
                Ok(User::find(conn, ann.id)?.into_iter().collect())
            })
            .unwrap();
        let again = db.store.users().get(ann.id).unwrap().unwrap();
        assert!(Arc::ptr_eq(&cached, &again), "the premise: still cached");
        assert!(
            Arc::ptr_eq(&listed[0], &again),
            "a list query returned a second object for a cached row"
        );
    });
}

#[test]
fn the_last_capacity_given_for_an_entity_is_the_one_it_gets() {
    // `larder_blog::builder` registers `User` with the store's capacity first.
    let db = common::fresh_with(|b| b.entity_with_capacity::<User>(3));
    assert_eq!(db.store.stats().entity("users").capacity, 3);
}

/// A page of ids larger than a statement may bind (SQLite takes 32,766
/// parameters, PostgreSQL and MySQL 65,535) is still one `get_many`: the
/// caller gets the rows that exist, not a database error.
#[test]
fn get_many_takes_more_ids_than_one_statement_binds() {
    each_backend(|target| {
        let db = target.fresh();
        let ann = user(&db.store, "ann");
        let bob = user(&db.store, "bob");
        let mut ids: Vec<i64> = (1_000_000..1_070_000).collect();
        ids.push(bob.id);
        ids.insert(0, ann.id);
        let got = db.store.users().get_many(&ids).unwrap();
        let names: Vec<&str> = got.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            names,
            ["ann", "bob"],
            "in the order asked, missing ids skipped"
        );
        let in_tx = db
            .store
            .transaction(|tx| tx.users().get_many(&ids))
            .unwrap();
        assert_eq!(in_tx.len(), 2, "a transaction's get_many too");
    });
}
