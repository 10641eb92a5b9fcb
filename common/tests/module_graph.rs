//! The promise that `common` has no import cycle: the graph of `crate::` references between its
//! modules (outside their `#[cfg(test)]` parts; `crate::Error`, `crate::Result` and
//! `crate::Config` count as `error` and `config`) is acyclic, so each module can be read knowing
//! only the ones below it.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name → the modules it refers to.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("read common/src") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if path.extension().is_some_and(|e| e == "rs") && name != "lib" {
            let text = std::fs::read_to_string(&path).expect("read a module");
            let product = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
            sources.insert(name.to_string(), product);
        }
    }
    let alias = |word: &str| match word {
        "Error" | "Result" => "error".to_string(),
        "Config" => "config".to_string(),
        other => other.to_string(),
    };
    let mut graph = BTreeMap::new();
    for (module, text) in &sources {
        let mut refs = BTreeSet::new();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(|n| n.trim().split("::").next().unwrap_or(""))
                    .collect(),
                None => vec![rest
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("")],
            };
            for name in names {
                let name = alias(name);
                if &name != module && sources.contains_key(&name) {
                    refs.insert(name);
                }
            }
        }
        graph.insert(module.clone(), refs);
    }
    graph
}

/// A cycle through `from`, if there is one, as the list of modules on it.
fn cycle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    let here = path.last().cloned()?;
    for next in &graph[&here] {
        if let Some(start) = path.iter().position(|m| m == next) {
            let mut found = path[start..].to_vec();
            found.push(next.clone());
            return Some(found);
        }
        if done.contains(next) {
            continue;
        }
        path.push(next.clone());
        if let Some(found) = cycle(graph, path, done) {
            return Some(found);
        }
        path.pop();
    }
    done.insert(here);
    None
}

#[test]
fn common_has_no_import_cycle() {
    let graph = graph();
    assert!(graph.len() > 20, "too few modules read: {:?}", graph.keys());
    assert!(
        graph["coordinates"].contains("replication") && graph["lock"].contains("server"),
        "the reader misses edges: {graph:?}"
    );
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        let mut path = vec![module.clone()];
        if let Some(found) = cycle(&graph, &mut path, &mut done) {
            panic!("import cycle in common: {}", found.join(" → "));
        }
    }
}
