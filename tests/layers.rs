//! The library's modules depend on each other one way, as the crate docs'
//! layer diagram draws them: the cache knows no database and no other
//! module, each backend's SQL (`dialect`) knows nothing else, the
//! invalidation bus (`registry`) knows only the cache (and the leaves
//! `read`, `keys` and `requirement` it speaks in), coherence
//! feeds the bus without knowing the store, and no module imports one that
//! imports it back. Read from the source, so a new `use` that breaks the
//! layering fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules it names with `crate::`, test
/// code (from `#[cfg(test)]` on) left out.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap();
            let module = first.as_os_str().to_str().unwrap().trim_end_matches(".rs");
            if module == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let named = graph.entry(module.to_owned()).or_default();
            for piece in code.split("crate::").skip(1) {
                let name: String = piece
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name != module {
                    named.insert(name);
                }
            }
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for named in graph.values_mut() {
        named.retain(|name| modules.contains(name));
    }
    graph
}

fn reaches(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_owned()];
    while let Some(module) = todo.pop() {
        for next in &graph[&module] {
            if next == to {
                return true;
            }
            if seen.insert(next.clone()) {
                todo.push(next.clone());
            }
        }
    }
    false
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = imports();
    let cycles: Vec<_> = graph
        .iter()
        .flat_map(|(module, named)| named.iter().map(move |n| (module, n)))
        .filter(|(module, named)| reaches(&graph, named, module))
        .collect();
    assert!(cycles.is_empty(), "import cycles through: {cycles:?}");
}

#[test]
fn the_cache_and_the_bus_sit_below_everything_else() {
    let graph = imports();
    let allowed = |module: &str, may: &[&str]| {
        let extra: Vec<_> = graph[module]
            .iter()
            .filter(|n| !may.contains(&n.as_str()))
            .collect();
        assert!(extra.is_empty(), "{module} imports {extra:?}");
    };
    allowed("cache", &["sync"]);
    allowed("dialect", &[]);
    // What a list read and the key values a change touched: leaves the bus
    // speaks in, knowing nothing else.
    allowed("read", &[]);
    allowed("keys", &[]);
    // The replicas' required position, which the bus raises and forgets
    // around invalidations: a leaf too.
    allowed("requirement", &[]);
    allowed(
        "registry",
        &["cache", "sync", "read", "keys", "requirement"],
    );
    for upper in ["store", "repo", "tx", "builder"] {
        assert!(
            !reaches(&graph, "coherence", upper),
            "coherence reaches {upper}"
        );
    }
}
