//! `larder stats`: the cache statistics of a read-only page-render workload on
//! an existing database. Caches live inside each application process, so this
//! is how an operator sees, before deploying, what a given cache capacity
//! yields on the real data: hit ratio per entity, evictions, list-query hits.

use larder_blog::prelude::*;

/// Options of `larder stats`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Front pages to render: each lists the most recent posts, then loads
    /// every listed post's author and comments.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pages: u32,
    /// Posts on a front page.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    per_page: u32,
    /// Entries each entity's cache may hold.
    #[arg(long, default_value_t = 10_000)]
    capacity: usize,
}

/// Renders `pages` front pages (reading only) and prints the store's statistics.
pub(crate) fn run(url: &str, args: &Args) -> larder::Result<()> {
    crate::existing_database(url, "stats")?;
    let store = larder_blog::builder(url)
        .cache_capacity(args.capacity)
        .build()?;
    for page in 0..args.pages {
        // Every tenth page asks for a longer list, as a "more" link would.
        let limit = i64::from(args.per_page) * if page % 10 == 9 { 2 } else { 1 };
        for post in store.posts().recent(limit)? {
            store.users().get(post.author_id)?;
            for comment in store.comments().of_post(post.id)? {
                store.users().get(comment.author_id)?;
            }
        }
    }
    println!("database: {}", store.url());
    println!(
        "rendered {} front pages of {} posts (read only)\n",
        args.pages, args.per_page
    );
    println!("{}", store.stats());
    Ok(())
}
