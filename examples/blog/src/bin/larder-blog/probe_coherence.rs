//! `larder-blog probe-coherence`: how soon a comment posted through one
//! server process shows on another's page (two processes, one database):
//! the distribution over many trials, against the staleness bound.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use larder_blog::schema::posts;

use crate::http;
use crate::serve::comment_ids;

/// Options of `larder-blog probe-coherence`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The server that takes the comment, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    writer: String,
    /// The server whose page must show it.
    #[arg(long)]
    reader: String,
    /// Comments to post, one at a time.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    trials: u32,
    /// The bound the report counts against (the servers' max_staleness), in ms.
    #[arg(long, default_value_t = 100)]
    bound_ms: u64,
}

/// Never seen within this long: a stale page, not a slow one.
const GIVE_UP: Duration = Duration::from_secs(5);

/// Posts the comments and reports the latency distribution; an error when
/// a comment never showed.
pub(crate) fn run(url: &str, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    crate::existing_database(url, "probe-coherence")?;
    let mut conn = larder::Connection::establish(url)?;
    let newest: (i64, i64) = larder::with_connection!(&mut conn, |c| posts::table
        .order(posts::id.desc())
        .select((posts::id, posts::author_id))
        .first(c))?;
    drop(conn);
    let (post, author) = newest;
    let agent = http::agent(Duration::from_secs(30));
    let writer = args.writer.trim_end_matches('/');
    let page = format!("{}/posts/{post}", args.reader.trim_end_matches('/'));
    // The reader's page cached first, so the probe measures invalidation.
    http::get(&agent, &page)?;
    let mut seen = Vec::new();
    let mut missing = 0;
    for trial in 0..args.trials {
        let id = post_comment(&agent, writer, post, author, trial)?;
        let posted = Instant::now();
        loop {
            let (status, body) = http::get(&agent, &page)?;
            if status == 200 && comment_ids(&body).contains(&id) {
                seen.push(posted.elapsed());
                break;
            }
            if posted.elapsed() > GIVE_UP {
                missing += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    seen.sort_unstable();
    let at = |q: f64| {
        seen.get(((seen.len() as f64 - 1.0) * q).round() as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    let bound = Duration::from_millis(args.bound_ms);
    let within = seen.iter().filter(|d| **d <= bound).count();
    println!(
        "coherence over {} trials: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {within} within {} ms; {missing} never seen",
        args.trials,
        at(0.5),
        at(0.99),
        at(1.0),
        args.bound_ms
    );
    if missing > 0 {
        return Err(format!("{missing} comments never showed on the other server's page").into());
    }
    Ok(())
}

/// Posts one comment; its id, from the redirect's `#c<id>`.
fn post_comment(
    agent: &ureq::Agent,
    writer: &str,
    post: i64,
    author: i64,
    trial: u32,
) -> Result<i64, Box<dyn std::error::Error>> {
    let body = format!("probe {trial}");
    let response = agent
        .post(&format!("{writer}/posts/{post}/comments"))
        .send_form([("author_id", author.to_string().as_str()), ("body", &body)])?;
    let location = response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default();
    location
        .rsplit_once("#c")
        .and_then(|(_, id)| id.parse().ok())
        .ok_or_else(|| format!("comment not created: status {}", response.status()).into())
}
