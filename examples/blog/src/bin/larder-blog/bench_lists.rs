//! `larder-blog bench-lists`: the blog server's post pages (a post, its
//! comments, their count and authors) under a steady rate of new comments,
//! rendered twice in one run: with the comment lists read as the whole
//! `comments` table (`Read::table`, what every list did before key columns)
//! and as the post's own comments (`Read::eq`, what `of_post` does now).
//! Reports each mode's list hit ratio and page throughput, then checks every
//! post's cached list against the database (stale pages: 0 expected).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::scratch::ScratchFile;
use diesel::prelude::*;
use larder::{Read, Store};
use larder_blog::prelude::*;
use larder_blog::schema::comments;
use larder_blog::{Comment, NewComment, NewPost, NewUser};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Zipf};

/// Options of `larder-blog bench-lists`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Posts to seed: one page each.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    posts: u64,
    /// Comments seeded on each post.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=1_000))]
    comments: u32,
    /// New comments per second, written by one thread on posts chosen with the
    /// pages' skew (popular posts get more comments).
    #[arg(long, default_value_t = 50.0, value_parser = non_negative)]
    writes_per_s: f64,
    /// Threads rendering pages.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    threads: u32,
    /// Zipf exponent of the posts' popularity.
    #[arg(long, default_value_t = 0.99, value_parser = non_negative)]
    skew: f64,
    /// Lists the store's query cache holds (`StoreBuilder::query_cache_capacity`);
    /// larder's default (1,000) when not given.
    #[arg(long)]
    query_capacity: Option<usize>,
    /// Seconds each mode is measured (after a tenth as much warm-up).
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    duration: f64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

fn non_negative(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err("expected a number ≥ 0".into()),
    }
}

fn seconds(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(s),
        _ => Err("expected a number of seconds greater than 0".into()),
    }
}

/// How the page's comment lists say what they read.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// `Read::table("comments")`: any comment write retires every list.
    Table,
    /// `Read::eq("comments", "post_id", id)`: the blog's `of_post`.
    Keyed,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Table => "table",
            Mode::Keyed => "keyed",
        }
    }
}

/// One mode's measurements.
struct Outcome {
    mode: Mode,
    pages: u64,
    writes: u64,
    elapsed: Duration,
    list_hits: u64,
    list_misses: u64,
    stale_pages: usize,
}

impl Outcome {
    fn hit_ratio(&self) -> f64 {
        self.list_hits as f64 / (self.list_hits + self.list_misses).max(1) as f64
    }

    fn pages_per_s(&self) -> f64 {
        self.pages as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    fn writes_per_s(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

pub(crate) fn run(url: Option<&str>, args: &Args) -> larder::Result<()> {
    let (url, _scratch) = ScratchFile::url_or_new(url, "bench-lists");
    let seeder = larder_blog::builder(&url).coherence(false).build()?;
    larder_blog::migrate(&seeder)?;
    let seeded = Seeded::insert(&seeder, args)?;
    let result = measure_both(&url, args, &seeded.posts);
    let removed = seeded.remove(&seeder);
    let outcomes = result?;
    removed?;
    report(args, &outcomes);
    Ok(())
}

fn measure_both(url: &str, args: &Args, posts: &[i64]) -> larder::Result<Vec<Outcome>> {
    [Mode::Table, Mode::Keyed]
        .into_iter()
        .map(|mode| {
            // A fresh store per mode, as a server starts; coherence on, as on
            // a server with peers (it hears its own writes back, too).
            let mut builder = larder_blog::builder(url);
            if let Some(lists) = args.query_capacity {
                builder = builder.query_cache_capacity(lists);
            }
            measure(&builder.build()?, mode, args, posts)
        })
        .collect()
}

/// The bench's author and posts, removed again with the author (the delete
/// cascades to the posts and their comments).
struct Seeded {
    author: i64,
    posts: Vec<i64>,
}

impl Seeded {
    fn insert(store: &Store, args: &Args) -> larder::Result<Seeded> {
        let email = format!(
            "lists.{}.{}@bench.larder",
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        );
        let author = store
            .users()
            .create(NewUser {
                name: "bench-lists".into(),
                email,
            })?
            .id;
        let mut posts = Vec::new();
        for chunk in 0..args.posts.div_ceil(500) {
            let count = (args.posts - chunk * 500).min(500);
            posts.extend(store.transaction(|tx| {
                (0..count)
                    .map(|n| {
                        let post = tx.posts().create(NewPost {
                            author_id: author,
                            title: format!("post {n}"),
                            body: "…".into(),
                        })?;
                        for c in 0..args.comments {
                            tx.comments().create(NewComment {
                                post_id: post.id,
                                author_id: author,
                                body: format!("comment {c}"),
                            })?;
                        }
                        Ok(post.id)
                    })
                    .collect::<larder::Result<Vec<i64>>>()
            })?);
        }
        Ok(Seeded { author, posts })
    }

    fn remove(&self, store: &Store) -> larder::Result<()> {
        store.users().delete(self.author).map(drop)
    }
}

fn measure(store: &Store, mode: Mode, args: &Args, posts: &[i64]) -> larder::Result<Outcome> {
    let warmup = Duration::from_secs_f64(args.duration / 10.0);
    let run = Duration::from_secs_f64(args.duration);
    let stop = AtomicBool::new(false);
    let (pages, writes) = (AtomicU64::new(0), AtomicU64::new(0));
    let zipf =
        Zipf::new(posts.len() as f64, args.skew).map_err(|e| larder::Error::InvalidConfig {
            reason: format!("no Zipf distribution over the posts: {e}"),
        })?;
    let pick = |rng: &mut SmallRng| posts[(zipf.sample(rng) as usize).clamp(1, posts.len()) - 1];
    let (before, began) = std::thread::scope(|s| -> larder::Result<_> {
        let writer = s.spawn(|| write_comments(store, args.writes_per_s, &pick, &stop, &writes));
        let readers: Vec<_> = (0..args.threads)
            .map(|t| {
                let (pick, stop, pages) = (&pick, &stop, &pages);
                s.spawn(move || -> larder::Result<()> {
                    let mut rng = SmallRng::seed_from_u64(u64::from(t) + 1);
                    while !stop.load(Ordering::Relaxed) {
                        render(store, mode, pick(&mut rng))?;
                        pages.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        std::thread::sleep(warmup);
        let before = (
            store.stats().queries,
            pages.load(Ordering::Relaxed),
            writes.load(Ordering::Relaxed),
        );
        let began = Instant::now();
        std::thread::sleep(run);
        stop.store(true, Ordering::Relaxed);
        let mut result = writer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        for reader in readers {
            let done = reader
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            result = result.and(done);
        }
        result.map(|()| (before, began))
    })?;
    let elapsed = began.elapsed();
    let after = store.stats().queries;
    let (queries, pages_before, writes_before) = before;
    let outcome = Outcome {
        mode,
        pages: pages.load(Ordering::Relaxed) - pages_before,
        writes: writes.load(Ordering::Relaxed) - writes_before,
        elapsed,
        list_hits: after.hits - queries.hits,
        list_misses: after.misses - queries.misses,
        stale_pages: stale_pages(store, mode, posts)?,
    };
    Ok(outcome)
}

/// One post page: the post, its author, its comments, their count and authors.
fn render(store: &Store, mode: Mode, post: i64) -> larder::Result<()> {
    let Some(post) = store.posts().get(post)? else {
        return Err(larder::Error::NotFound {
            table: "posts",
            id: post,
        });
    };
    store.users().get(post.author_id)?;
    let (list, _count) = lists(store, mode, post.id)?;
    for comment in &list {
        store.users().get(comment.author_id)?;
    }
    Ok(())
}

/// The post's comments and their count, read as `mode` says.
fn lists(store: &Store, mode: Mode, post: i64) -> larder::Result<(Vec<Arc<Comment>>, i64)> {
    match mode {
        Mode::Keyed => Ok((
            store.comments().of_post(post)?,
            store.comments().count_of_post(post)?,
        )),
        Mode::Table => {
            let reads = [Read::table("comments")];
            let list = store.comments().cached_query(
                &format!("bench.of_post({post})"),
                &reads,
                |conn| {
                    let query = comments::table
                        .filter(comments::post_id.eq(post))
                        .order(comments::id);
                    larder::with_connection!(conn, |c| query.load(c))
                },
            )?;
            let count = store.comments().cached_value(
                &format!("bench.count_of_post({post})"),
                &reads,
                |conn| {
                    let query = comments::table.filter(comments::post_id.eq(post)).count();
                    larder::with_connection!(conn, |c| query.get_result(c))
                },
            )?;
            Ok((list, count))
        }
    }
}

/// New comments at `rate` per second until `stop`, on posts `pick` chooses.
fn write_comments(
    store: &Store,
    rate: f64,
    pick: &(impl Fn(&mut SmallRng) -> i64 + Sync),
    stop: &AtomicBool,
    writes: &AtomicU64,
) -> larder::Result<()> {
    if rate == 0.0 {
        return Ok(());
    }
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let every = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let post = pick(&mut rng);
        let author = store.posts().get(post)?.map_or(0, |p| p.author_id);
        store.comments().create(NewComment {
            post_id: post,
            author_id: author,
            body: format!("new comment {n}"),
        })?;
        writes.fetch_add(1, Ordering::Relaxed);
        n += 1;
        // Paced by the schedule, not by the write's own time.
        let due = started + every.mul_f64(n as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(())
}

/// Pages whose cached lists differ from the database, once the writer has
/// stopped and the watcher has heard everything.
fn stale_pages(store: &Store, mode: Mode, posts: &[i64]) -> larder::Result<usize> {
    std::thread::sleep(Duration::from_millis(300));
    let mut stale = 0;
    for &post in posts {
        let (list, count) = lists(store, mode, post)?;
        let fresh: Vec<i64> = store.transaction(|tx| {
            let rows = tx.comments().of_post(post)?;
            Ok::<_, larder::Error>(rows.iter().map(|c| c.id).collect())
        })?;
        let cached: Vec<i64> = list.iter().map(|c| c.id).collect();
        if cached != fresh || count as usize != fresh.len() {
            stale += 1;
        }
    }
    Ok(stale)
}

fn report(args: &Args, outcomes: &[Outcome]) {
    if args.json {
        let modes: Vec<_> = outcomes
            .iter()
            .map(|o| {
                serde_json::json!({
                    "mode": o.mode.name(),
                    "pages": o.pages,
                    "pages_per_s": o.pages_per_s(),
                    "writes": o.writes,
                    "writes_per_s": o.writes_per_s(),
                    "list_hits": o.list_hits,
                    "list_misses": o.list_misses,
                    "list_hit_ratio": o.hit_ratio(),
                    "stale_pages": o.stale_pages,
                })
            })
            .collect();
        let report = serde_json::json!({
            "posts": args.posts,
            "threads": args.threads,
            "skew": args.skew,
            "query_capacity": args.query_capacity,
            "duration_s": args.duration,
            "modes": modes,
        });
        println!("{report}");
        return;
    }
    println!(
        "{} posts, zipf {}, {} reader threads, {:.0} comment writes/s target, query cache {}",
        args.posts,
        args.skew,
        args.threads,
        args.writes_per_s,
        args.query_capacity
            .map_or_else(|| "default".to_owned(), |n| n.to_string())
    );
    println!(
        "\n{:<6} {:>9} {:>9} {:>9} {:>10} {:>11}",
        "lists", "pages", "pages/s", "writes/s", "list hit %", "stale pages"
    );
    for o in outcomes {
        println!(
            "{:<6} {:>9} {:>9.0} {:>9.1} {:>10.1} {:>11}",
            o.mode.name(),
            o.pages,
            o.pages_per_s(),
            o.writes_per_s(),
            o.hit_ratio() * 100.0,
            o.stale_pages
        );
    }
}
