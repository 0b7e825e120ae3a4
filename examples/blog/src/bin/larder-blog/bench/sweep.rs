//! `larder-blog bench --sweep`: the benchmark's workload over a range of cache
//! capacities and key skews, drawn as hit ratio and throughput against
//! capacity for larder, the static bound and cache-off, so that an operator
//! can see how big a cache their key popularity needs.
//!
//! The static bound is the best any cache of that capacity can do on this
//! workload: keep exactly the most popular keys. A read of a cached key then
//! misses only when the key's previous operation was an update (which
//! invalidated it), so its hit ratio is the read ratio times the probability
//! mass of the top `capacity` keys. Its throughput is modelled from larder's
//! measured run: nearly all of an operation's cost is the database round trip,
//! so throughput scales with the inverse of the fraction of operations that
//! reach the database.

use std::fs::File;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use plotters::prelude::*;

use super::{fill, parse_skew, Budget, Memory, Seeded, Skew, Workload};
use crate::scratch::ScratchFile;

/// Seconds each point of a sweep runs when --duration is not given.
const POINT_SECONDS: f64 = 2.0;

/// Options of `larder-blog bench --sweep` (flattened into `bench`'s).
#[derive(clap::Args, Debug)]
pub(crate) struct Sweep {
    /// Run the workload once per capacity and skew below and draw hit ratio
    /// and throughput against capacity (larder, static bound, cache-off) to
    /// --plot.
    #[arg(long, conflicts_with = "capacity")]
    pub(crate) sweep: bool,
    /// The sweep's cache capacities, in percent of --rows.
    #[arg(long, value_delimiter = ',', default_value = "1,2,5,10,20,50",
          value_parser = parse_percent, requires = "sweep")]
    capacities: Vec<f64>,
    /// The sweep's key skews: Zipf exponents, or `uniform`.
    #[arg(long, value_delimiter = ',', default_value = "0.8,0.99,1.2",
          value_parser = parse_skew, requires = "sweep")]
    skews: Vec<Skew>,
    /// Where the sweep's picture is written (SVG).
    #[arg(long, default_value = "bench-sweep.svg", requires = "sweep")]
    plot: PathBuf,
}

fn parse_percent(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(p) if p.is_finite() && p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err("expected a percentage of the rows, greater than 0 and at most 100".into()),
    }
}

/// One measured capacity at one skew.
struct Point {
    skew: Skew,
    percent: f64,
    capacity: usize,
    hit_ratio: f64,
    ops_per_s: f64,
    bound_hit_ratio: f64,
    bound_ops_per_s: f64,
}

/// Cache-off throughput at one skew (it does not depend on the capacity).
struct CacheOff {
    skew: Skew,
    ops_per_s: f64,
}

pub(crate) fn run(url: Option<&str>, args: &super::Args) -> Result<(), Box<dyn std::error::Error>> {
    let sweep = &args.sweep;
    // Fail on an unwritable picture path now, not after minutes of measuring.
    File::create(&sweep.plot).map_err(|e| format!("cannot write {}: {e}", sweep.plot.display()))?;
    let (url, scratch) = ScratchFile::url_or_new(url, "sweep");
    let rows = usize::try_from(args.rows).unwrap_or(usize::MAX);
    let threads = args.threads as usize;
    let pool_size = args.threads.max(8);
    let budget = match args.ops {
        Some(ops) => Budget::Ops(ops),
        None => Budget::For(Duration::from_secs_f64(
            args.duration.unwrap_or(POINT_SECONDS),
        )),
    };
    let warmup = match budget {
        Budget::Ops(ops) => Budget::Ops((ops / 10).max(threads as u64)),
        Budget::For(d) => Budget::For((d / 10).min(Duration::from_secs(1))),
    };

    let uncached = larder_blog::builder(&url)
        .cache_capacity(0)
        .pool_size(pool_size)
        .coherence(false)
        .build()?;
    for version in larder_blog::migrate(&uncached)? {
        eprintln!("applied migration {version}");
    }
    let mut seeded = Seeded::new(&uncached, scratch.is_none());
    seeded.insert(rows)?;
    let mut keys = seeded.ids.clone();
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    keys.shuffle(&mut rand::rngs::SmallRng::seed_from_u64(0x5eed));

    let bar = progress((sweep.skews.len() * (sweep.capacities.len() + 1)) as u64);
    let mut points = Vec::new();
    let mut offs = Vec::new();
    for (s, &skew) in sweep.skews.iter().enumerate() {
        let workload = Workload {
            keys: &keys,
            skew,
            read_ratio: args.read_ratio,
            threads,
        };
        let seed = 100 * s as u64;
        bar.set_message(format!("{skew}, cache off"));
        workload.run(&uncached, warmup, seed)?;
        let off = workload.run(&uncached, budget, seed + 1)?;
        offs.push(CacheOff {
            skew,
            ops_per_s: off.ops_per_s(),
        });
        bar.inc(1);
        for &percent in &sweep.capacities {
            bar.set_message(format!("{skew}, capacity {percent}%"));
            let capacity = ((rows as f64 * percent / 100.0).round() as usize).max(1);
            let store = larder_blog::builder(&url)
                .cache_capacity(capacity)
                .pool_size(pool_size)
                .coherence(!args.no_coherence)
                .build()?;
            fill(
                &store,
                &keys[..capacity.min(keys.len())],
                &mut Memory::default(),
            )?;
            workload.run(&store, warmup, seed + 2)?;
            let outcome = workload.run(&store, budget, seed + 3)?;
            drop(store);
            let bound_hit_ratio = args.read_ratio * top_mass(skew, rows, capacity);
            let point = Point {
                skew,
                percent,
                capacity,
                hit_ratio: outcome.hit_ratio(),
                ops_per_s: outcome.ops_per_s(),
                bound_hit_ratio,
                bound_ops_per_s: outcome.ops_per_s()
                    * database_share(args.read_ratio, outcome.hit_ratio())
                    / database_share(args.read_ratio, bound_hit_ratio),
            };
            if !args.json {
                bar.suspend(|| print_point(&point, off.ops_per_s()));
            }
            points.push(point);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let removed = seeded.remove()?;

    draw(&sweep.plot, args, &points, &offs)?;
    if args.json {
        println!("{}", json(args, &points, &offs));
    } else {
        if removed > 0 {
            println!("removed the {removed} users the sweep created");
        }
        println!("wrote {}", sweep.plot.display());
    }
    Ok(())
}

/// The share of operations that reach the database: every update, and the
/// reads that miss.
fn database_share(read_ratio: f64, hit_ratio: f64) -> f64 {
    (1.0 - read_ratio * hit_ratio).max(f64::MIN_POSITIVE)
}

/// The probability that a key drawn from `skew` over `rows` keys is one of the
/// `capacity` most popular.
fn top_mass(skew: Skew, rows: usize, capacity: usize) -> f64 {
    let capacity = capacity.min(rows);
    match skew {
        Skew::Uniform => capacity as f64 / rows.max(1) as f64,
        Skew::Zipf(s) => {
            let weight = |rank: usize| (rank as f64).powf(-s);
            let top: f64 = (1..=capacity).map(weight).sum();
            let all: f64 = top + (capacity + 1..=rows).map(weight).sum::<f64>();
            top / all
        }
    }
}

fn progress(points: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(points), ProgressDrawTarget::hidden());
    if let Ok(style) =
        ProgressStyle::with_template("sweep {bar:30} {pos}/{len} points, eta {eta}: {msg}")
    {
        bar.set_style(style);
    }
    if std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
    }
    bar
}

fn print_point(p: &Point, off_ops_per_s: f64) {
    println!(
        "{:<11} capacity {:>5}% ({:>7} entries): hit {:>5.1}% (bound {:>5.1}%), \
         {:>9.0} ops/s (bound {:>9.0}, cache-off {:>8.0}, {:.1}x)",
        p.skew.to_string(),
        p.percent,
        p.capacity,
        p.hit_ratio * 100.0,
        p.bound_hit_ratio * 100.0,
        p.ops_per_s,
        p.bound_ops_per_s,
        off_ops_per_s,
        p.ops_per_s / off_ops_per_s.max(f64::MIN_POSITIVE)
    );
}

fn json(args: &super::Args, points: &[Point], offs: &[CacheOff]) -> serde_json::Value {
    let points: Vec<_> = points
        .iter()
        .map(|p| {
            serde_json::json!({
                "skew": p.skew.to_string(),
                "capacity_percent": p.percent,
                "capacity": p.capacity,
                "hit_ratio": p.hit_ratio,
                "ops_per_s": p.ops_per_s,
                "bound_hit_ratio": p.bound_hit_ratio,
                "bound_ops_per_s": p.bound_ops_per_s,
            })
        })
        .collect();
    let offs: Vec<_> = offs
        .iter()
        .map(|o| serde_json::json!({ "skew": o.skew.to_string(), "ops_per_s": o.ops_per_s }))
        .collect();
    serde_json::json!({
        "rows": args.rows,
        "threads": args.threads,
        "read_ratio": args.read_ratio,
        "plot": args.sweep.plot.display().to_string(),
        "points": points,
        "cache_off": offs,
    })
}

/// Two panels side by side: hit ratio, and throughput, against capacity (log
/// scale), one colour per skew; larder solid, the static bound dashed,
/// cache-off dotted.
fn draw(
    path: &Path,
    args: &super::Args,
    points: &[Point],
    offs: &[CacheOff],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1280, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!(
            "larder bench --sweep: {} rows, {:.0}% reads, {} threads",
            args.rows,
            args.read_ratio * 100.0,
            args.threads
        ),
        ("sans-serif", 22),
    )?;
    let (left, right) = root.split_horizontally(640);
    let percents = || points.iter().map(|p| p.percent);
    let low = percents().fold(f64::INFINITY, f64::min) * 0.9;
    let high = percents().fold(0.0, f64::max).max(low * 2.0) * 1.1;
    let ticks: Vec<f64> = percents().collect();
    let skews: Vec<Skew> = offs.iter().map(|o| o.skew).collect();
    let series = |skew: Skew| points.iter().filter(move |p| p.skew == skew);

    let mut hits = ChartBuilder::on(&left)
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(
            (low..high).log_scale().with_key_points(ticks.clone()),
            0.0..1.0,
        )?;
    hits.configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&|v| format!("{v}%"))
        .x_desc("cache capacity, % of rows (log scale)")
        .y_desc("hit ratio")
        .draw()?;
    for (i, &skew) in skews.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        hits.draw_series(LineSeries::new(
            series(skew).map(|p| (p.percent, p.hit_ratio)),
            color.stroke_width(2),
        ))?
        .label(format!("larder, {skew}"))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        hits.draw_series(
            series(skew).map(|p| Circle::new((p.percent, p.hit_ratio), 3, color.filled())),
        )?;
        hits.draw_series(DashedLineSeries::new(
            series(skew).map(|p| (p.percent, p.bound_hit_ratio)),
            6,
            4,
            color.into(),
        ))?
        .label(format!("static bound, {skew}"))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
    }
    hits.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    let top = points
        .iter()
        .map(|p| p.ops_per_s.max(p.bound_ops_per_s))
        .chain(offs.iter().map(|o| o.ops_per_s))
        .fold(1.0, f64::max)
        * 1.1;
    let mut speed = ChartBuilder::on(&right)
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((low..high).log_scale().with_key_points(ticks), 0.0..top)?;
    speed
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&|v| format!("{v}%"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_desc("cache capacity, % of rows (log scale)")
        .y_desc("operations per second")
        .draw()?;
    for (i, off) in offs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        speed.draw_series(LineSeries::new(
            series(off.skew).map(|p| (p.percent, p.ops_per_s)),
            color.stroke_width(2),
        ))?;
        speed.draw_series(
            series(off.skew).map(|p| Circle::new((p.percent, p.ops_per_s), 3, color.filled())),
        )?;
        speed.draw_series(DashedLineSeries::new(
            series(off.skew).map(|p| (p.percent, p.bound_ops_per_s)),
            6,
            4,
            color.into(),
        ))?;
        speed
            .draw_series(DashedLineSeries::new(
                [(low, off.ops_per_s), (high, off.ops_per_s)],
                2,
                4,
                color.into(),
            ))?
            .label(format!("cache off, {}", off.skew))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
    }
    speed
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_static_bound_is_the_top_keys_share() {
        assert!((top_mass(Skew::Uniform, 1000, 100) - 0.1).abs() < 1e-12);
        assert!((top_mass(Skew::Zipf(0.99), 1000, 1000) - 1.0).abs() < 1e-12);
        // Zipf 1 over 3 keys: weights 1, 1/2, 1/3.
        let two_of_three = 1.5 / (1.0 + 0.5 + 1.0 / 3.0);
        assert!((top_mass(Skew::Zipf(1.0), 3, 2) - two_of_three).abs() < 1e-12);
    }

    #[test]
    fn the_issue_s_oracle_is_reproduced() {
        // The issue's simulation: Zipf 0.99 over 100,000 keys, the 10,000 most
        // popular cached: 0.800, and 0.760 with 5% updates.
        let mass = top_mass(Skew::Zipf(0.99), 100_000, 10_000);
        assert!((mass - 0.80).abs() < 0.01, "{mass}");
        assert!((0.95 * mass - 0.76).abs() < 0.01);
    }
}
