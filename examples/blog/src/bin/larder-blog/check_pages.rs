//! `larder-blog check-pages`: every post page a server serves shows exactly
//! the comments the database holds. Run after writes stopped and the
//! server's `max_staleness` passed; any difference is a stale page.

use std::collections::HashMap;
use std::time::Duration;

use diesel::prelude::*;
use larder_blog::schema::{comments, posts};

use crate::http;
use crate::serve::comment_ids;

/// Options of `larder-blog check-pages`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The server to check, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    server: String,
    /// Wait this long (ms) before reading: let the server's staleness bound
    /// pass. At most an hour (the servers' bound is at most a minute).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    after_ms: u64,
}

/// Compares every post's page with SQL; an error when any page differs or fails.
pub(crate) fn run(url: &str, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    std::thread::sleep(Duration::from_millis(args.after_ms));
    crate::existing_database(url, "check-pages")?;
    let mut conn = larder::Connection::establish(url)?;
    let posts: Vec<i64> = larder::with_connection!(&mut conn, |c| posts::table
        .select(posts::id)
        .order(posts::id)
        .load(c))?;
    let rows: Vec<(i64, i64)> = larder::with_connection!(&mut conn, |c| comments::table
        .select((comments::post_id, comments::id))
        .load(c))?;
    let mut expected: HashMap<i64, Vec<i64>> = HashMap::new();
    for (post, comment) in rows {
        expected.entry(post).or_default().push(comment);
    }
    let agent = http::agent(Duration::from_secs(30));
    let server = args.server.trim_end_matches('/');
    let (mut stale, mut failed) = (0_usize, 0_usize);
    for &post in &posts {
        let (status, body) = http::get(&agent, &format!("{server}/posts/{post}"))?;
        if status != 200 {
            failed += 1;
            eprintln!("post {post}: status {status}");
            continue;
        }
        let mut shown = comment_ids(&body);
        shown.sort_unstable();
        let mut want = expected.remove(&post).unwrap_or_default();
        want.sort_unstable();
        if shown != want {
            stale += 1;
            if stale <= 5 {
                eprintln!("post {post}: page shows {shown:?}, database holds {want:?}");
            }
        }
    }
    println!(
        "checked {} post pages: {stale} stale, {failed} failed",
        posts.len()
    );
    if stale + failed > 0 {
        return Err(format!("{stale} stale and {failed} failed post pages").into());
    }
    Ok(())
}
