//! The demo workload: what a blog does to its store, with the cache's
//! statistics at the end.

use crate::scratch::ScratchFile;
use larder::Store;
use larder_blog::prelude::*;
use larder_blog::{NewComment, NewPost, NewUser, PostChanges, UserChanges};

/// Options of `larder demo`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Users to create (each writes two posts with three comments each).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    users: u32,
    /// Times each post is read after writing.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    reads: u32,
}

pub(crate) fn run(url: Option<&str>, args: &Args) -> larder::Result<()> {
    // Named, not `_`: the guard must live until the demo is done.
    let (url, _scratch) = ScratchFile::url_or_new(url, "demo");
    let store = larder_blog::builder(&url).cache_capacity(10_000).build()?;
    println!("database: {}", store.url());
    for version in larder_blog::migrate(&store)? {
        println!("applied migration {version}");
    }
    let post_ids = write_blog(&store, args.users)?;
    read_blog(&store, &post_ids, args.reads)?;
    edit_and_prune(&store, &post_ids)?;
    println!("\n{}", store.stats());
    Ok(())
}

/// Users, each with two posts and three comments per post, in one transaction per user.
fn write_blog(store: &Store, users: u32) -> larder::Result<Vec<i64>> {
    let run = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let mut post_ids = Vec::new();
    for n in 0..users {
        let ids = store.transaction(|tx| {
            let user = tx.users().create(NewUser {
                name: format!("user {n}"),
                email: format!("user{n}.{run}@example.org"),
            })?;
            let mut ids = Vec::new();
            for p in 0..2 {
                let post = tx.posts().create(NewPost {
                    author_id: user.id,
                    title: format!("Post {p} by user {n}"),
                    body: "Threading and locks, explained.".into(),
                })?;
                for c in 0..3 {
                    tx.comments().create(NewComment {
                        post_id: post.id,
                        author_id: user.id,
                        body: format!("comment {c}"),
                    })?;
                }
                ids.push(post.id);
            }
            Ok::<_, larder::Error>(ids)
        })?;
        post_ids.extend(ids);
    }
    println!(
        "wrote {users} users, {} posts, {} comments",
        post_ids.len(),
        post_ids.len() * 3
    );
    Ok(post_ids)
}

fn read_blog(store: &Store, post_ids: &[i64], reads: u32) -> larder::Result<()> {
    for _ in 0..reads {
        for &id in post_ids {
            if let Some(post) = store.posts().get(id)? {
                store.users().get(post.author_id)?;
            }
        }
    }
    let comments: usize = post_ids
        .iter()
        .map(|&id| store.comments().of_post(id).map(|c| c.len()))
        .sum::<larder::Result<usize>>()?;
    println!("read every post and its author {reads} times, listed {comments} comments");
    Ok(())
}

/// Publishes every post (versioned), renames a user and deletes another, whose
/// posts and comments go with it by cascade.
fn edit_and_prune(store: &Store, post_ids: &[i64]) -> larder::Result<()> {
    for &id in post_ids {
        if let Some(post) = store.posts().get(id)? {
            let changes = PostChanges {
                published: Some(true),
                ..PostChanges::default()
            };
            store.posts().update_versioned(id, post.version, changes)?;
        }
    }
    let first = store.posts().get(post_ids[0])?;
    if let Some(post) = first {
        let changes = UserChanges {
            name: Some("renamed".into()),
            ..UserChanges::default()
        };
        store.users().update(post.author_id, changes)?;
        store.users().delete(post.author_id)?;
        let gone = store.posts().get(post.id)?.is_none();
        println!(
            "published {} posts; deleted user {} (cascade removed post {}: {gone})",
            post_ids.len(),
            post.author_id,
            post.id
        );
    }
    Ok(())
}
