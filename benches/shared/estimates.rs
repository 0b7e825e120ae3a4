//! Reading this run's medians back from criterion's estimate files, so each
//! bench can print its ratios (shared by benches/cache.rs and benches/miss.rs).

use std::path::PathBuf;
use std::time::SystemTime;

/// Where criterion writes its estimates, found the way criterion finds it
/// (without its `cargo metadata` fallback: the package's own `target`).
pub(crate) fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")))
        .join("criterion")
}

/// The median time per operation, in nanoseconds, that this process measured
/// for `name` (`group/function[/parameter]`), or `None` when it was not
/// measured in this run (filtered out, `--test` mode, or an older file).
pub(crate) fn median_ns(name: &str, since: SystemTime) -> Option<f64> {
    let path = criterion_home()
        .join(name)
        .join("new")
        .join("estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}
