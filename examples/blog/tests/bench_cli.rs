//! `larder bench` on a database the caller owns: it reports both runs as JSON
//! and leaves none of the users it created behind.

#[path = "../../../tests/common/mod.rs"]
mod common;

use larder_blog::prelude::*;
use std::process::Command;

use diesel::prelude::*;
use larder_blog::schema::users;

#[test]
fn bench_reports_json_and_removes_its_users() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let output = Command::new(env!("CARGO_BIN_EXE_larder-blog"))
        .args([
            "bench",
            "--rows",
            "2000",
            "--ops",
            "4000",
            "--threads",
            "2",
            "--json",
            "--database-url",
            &url,
        ])
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .expect("run larder bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );

    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {stdout}"));
    for run in ["larder", "cache_off"] {
        let ops_per_s = report[run]["ops_per_s"].as_f64().unwrap();
        assert!(ops_per_s > 0.0, "{run} ops/s = {ops_per_s}");
        assert_eq!(report[run]["ops"].as_u64(), Some(4000), "{run}");
        let hit_ratio = report[run]["hit_ratio"].as_f64().unwrap();
        assert!(
            (0.0..=1.0).contains(&hit_ratio),
            "{run} hit ratio {hit_ratio}"
        );
    }
    assert_eq!(report["cache_off"]["hit_ratio"].as_f64(), Some(0.0));
    assert_eq!(report["rows"].as_u64(), Some(2000));
    assert_eq!(report["capacity"].as_u64(), Some(200), "10% of the rows");
    assert_eq!(report["removed_rows"].as_u64(), Some(2000));
    assert!(report["throughput_ratio"].as_f64().unwrap() > 0.0);

    let store = larder_blog::open(&url).unwrap();
    let left = store
        .users()
        .query(|conn| {
            let bench_users = users::table.filter(users::email.like("%@bench.larder"));
            larder::with_connection!(conn, |c| bench_users.load(c))
        })
        .unwrap();
    assert!(left.is_empty(), "{} bench users left behind", left.len());
}

/// Without `--database-url` the bench runs on a scratch SQLite file, and
/// leaves nothing of it in the temporary directory: not the file, its WAL,
/// nor the `.locks` directory its migration lock made beside it.
#[test]
fn bench_on_its_own_scratch_file_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_larder-blog"))
        .args(["bench", "--rows", "200", "--ops", "400", "--json"])
        .current_dir(tmp.path())
        .env("TMPDIR", tmp.path())
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .expect("run larder bench");
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bench_coherence_reports_delays_and_puts_the_triggers_back() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let output = Command::new(env!("CARGO_BIN_EXE_larder-blog"))
        .args([
            "bench-coherence",
            "--changes",
            "10",
            "--writes",
            "50",
            "--json",
        ])
        .args(["--database-url", &url])
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .expect("run larder bench-coherence");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(report["backend"], "sqlite");
    assert_eq!(report["changes"], 10);
    let delay = &report["delay_ms"];
    let (p50, p99) = (
        delay["p50"].as_f64().unwrap(),
        delay["p99"].as_f64().unwrap(),
    );
    assert!(0.0 <= p50 && p50 <= p99, "{delay}");
    let cost = &report["write_cost"];
    assert!(
        cost["updates_per_s_with_capture"].as_f64().unwrap() > 0.0,
        "{cost}"
    );
    assert!(
        cost["updates_per_s_without_capture"].as_f64().unwrap() > 0.0,
        "{cost}"
    );

    // The benchmark's users are gone, and a change still reaches the change log.
    let store = larder_blog::builder(&url).coherence(false).build().unwrap();
    let mut conn = larder::Connection::establish(&url).unwrap();
    let left: i64 =
        larder::with_connection!(&mut conn, |c| users::table.count().get_result(c)).unwrap();
    assert_eq!(left, 0);
    let ann = common::user(&store, "ann");
    let logged: Vec<i64> = common::change_log(&url)
        .into_iter()
        .map(|(_, id, _)| id)
        .filter(|id| *id == ann.id)
        .collect();
    assert_eq!(logged, [ann.id], "the capture triggers were re-created");
}

fn sweep(dir: &std::path::Path, url: &str, plot: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_larder-blog"))
        .args(["bench", "--sweep", "--rows", "2000", "--ops", "2000"])
        .args(["--capacities", "5,50", "--skews", "0.99,uniform"])
        .args(["--plot", plot, "--json", "--database-url", url])
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .expect("run larder bench --sweep")
}

#[test]
fn a_sweep_measures_every_point_and_draws_them() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let plot = dir.path().join("sweep.svg");
    let output = sweep(dir.path(), &url, plot.to_str().unwrap());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    let points = report["points"].as_array().unwrap();
    assert_eq!(points.len(), 4, "two capacities at two skews: {report}");
    for point in points {
        let hit = point["hit_ratio"].as_f64().unwrap();
        let bound = point["bound_hit_ratio"].as_f64().unwrap();
        assert!(
            (0.0..=1.0).contains(&hit) && (0.0..=0.95).contains(&bound),
            "{point}"
        );
        assert!(point["ops_per_s"].as_f64().unwrap() > 0.0, "{point}");
    }
    // More room never lowers the bound, and Zipf's bound is above uniform's.
    let bound = |skew: &str, percent: f64| {
        points
            .iter()
            .find(|p| p["skew"] == skew && p["capacity_percent"] == percent)
            .and_then(|p| p["bound_hit_ratio"].as_f64())
            .unwrap()
    };
    assert!(bound("zipf 0.99", 50.0) > bound("zipf 0.99", 5.0));
    assert!(bound("zipf 0.99", 5.0) > bound("uniform", 5.0));
    assert!((bound("uniform", 50.0) - 0.95 * 0.5).abs() < 1e-9);
    assert_eq!(report["cache_off"].as_array().unwrap().len(), 2);

    let svg = std::fs::read_to_string(&plot).expect("the picture was written");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    for label in [
        "larder, zipf 0.99",
        "static bound, uniform",
        "cache off, zipf 0.99",
    ] {
        assert!(svg.contains(label), "the picture has no {label:?} line");
    }
}

#[test]
fn a_sweep_to_an_unwritable_picture_fails_before_measuring() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("u.db").display());
    let output = sweep(dir.path(), &url, "/nonexistent-dir/sweep.svg");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot write /nonexistent-dir/sweep.svg"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("u.db").exists(),
        "it opened the database before checking the picture's path"
    );
}

#[test]
fn bench_lists_reports_both_modes_and_no_stale_page() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("l.db").display());
    let output = Command::new(env!("CARGO_BIN_EXE_larder-blog"))
        .args([
            "bench-lists",
            "--posts",
            "40",
            "--writes-per-s",
            "20",
            "--duration",
            "1",
            "--json",
            "--database-url",
            &url,
        ])
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .expect("run larder-blog bench-lists");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let modes = report["modes"].as_array().unwrap();
    let mode = |name: &str| modes.iter().find(|m| m["mode"] == name).unwrap().clone();
    let (table, keyed) = (mode("table"), mode("keyed"));
    for m in [&table, &keyed] {
        assert_eq!(m["stale_pages"].as_u64(), Some(0), "{m}");
        assert!(m["pages"].as_u64().unwrap() > 0, "{m}");
        assert!(m["writes"].as_u64().unwrap() > 0, "{m}");
    }
    assert!(
        keyed["list_hit_ratio"].as_f64() > table["list_hit_ratio"].as_f64(),
        "keyed lists should outlive table-wide ones: {report}"
    );
    // The bench's author, posts and comments are gone again.
    let store = larder_blog::open(&url).unwrap();
    assert!(store.posts().recent(1).unwrap().is_empty());
}
