//! The map stays true as the code moves: every file or folder `ARCHITECTURE.md` names exists,
//! the runtime's modules import each other without cycles (between top-level modules, and
//! between the files of one module), and each imports only modules its table lists above it,
//! so the layers it describes hold.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the runtime is in the workspace")
        .to_owned()
}

/// The `code` spans of a Markdown text.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn files_named(dir: &Path, name: &str, found: &mut bool) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_named(&path, name, found);
        } else if path.file_name().is_some_and(|n| n == name) {
            *found = true;
        }
    }
}

#[test]
fn every_path_the_map_names_exists() {
    let root = root();
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut checked = 0;
    for span in code_spans(&map) {
        let looks_like_a_path = span.ends_with(".rs") || span.ends_with('/');
        if !looks_like_a_path || span.contains(['<', ' ', '*']) {
            continue;
        }
        checked += 1;
        if span.contains('/') {
            assert!(
                root.join(span).exists(),
                "ARCHITECTURE.md names `{span}`, which does not exist"
            );
        } else {
            let mut found = false;
            files_named(&root.join("runtime/src"), span, &mut found);
            files_named(&root.join("macros"), span, &mut found);
            assert!(found, "ARCHITECTURE.md names `{span}`, which no module is");
        }
    }
    assert!(
        checked > 40,
        "only {checked} paths found: is the map still there?"
    );
}

/// A module of the runtime (`["store", "postgres"]` for `store/postgres/mod.rs`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|last| last == "mod" || last == "lib")
    {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module paths a file's code refers to (`crate::a::b`, `super::b`, and each path of a
/// grouped import such as `use crate::{a::b, c::{d, e}};`), comments left out.
fn references(code: &str, module: &[String], is_mod_file: bool) -> BTreeSet<Vec<String>> {
    // Lines joined again once their comments are gone: a grouped import may span several.
    let code = code
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    for (prefix, base) in [
        ("crate::", Vec::new()),
        ("super::", {
            // `super` of `a/b.rs` is `a`; of `a/b/mod.rs` also `a`.
            let mut parent = module.to_vec();
            parent.pop();
            let _ = is_mod_file;
            parent
        }),
    ] {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            for path in use_tree(rest) {
                if !path.is_empty() {
                    let mut full = base.clone();
                    full.extend(path.into_iter().take(2));
                    found.insert(full);
                }
            }
        }
    }
    found
}

/// The module paths at the start of `text`: a path (`a::b::Item`) or a use tree
/// (`{a::{b, self}, c}`), each as its lowercase segments (a type or an item ends it; `self` is
/// the path before it).
fn use_tree(text: &str) -> Vec<Vec<String>> {
    let text = text.trim_start();
    if let Some(group) = text.strip_prefix('{') {
        let (mut items, mut depth, mut from) = (Vec::new(), 0, 0);
        for (at, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    items.push(&group[from..at]);
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&group[from..at]);
                    from = at + 1;
                }
                _ => {}
            }
        }
        return items.into_iter().flat_map(use_tree).collect();
    }
    let segment: String = text
        .chars()
        .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
        .collect();
    if segment.is_empty() || segment == "self" {
        return vec![Vec::new()];
    }
    let tails = match text[segment.len()..].strip_prefix("::") {
        Some(rest) => use_tree(rest),
        None => vec![Vec::new()],
    };
    tails
        .into_iter()
        .map(|tail| {
            let mut path = vec![segment.clone()];
            path.extend(tail);
            path
        })
        .collect()
}

/// Strongly connected components of more than one node.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on_stack: BTreeSet<String>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit(state: &mut State<'_>, node: &str) {
        state.index.insert(node.to_owned(), state.next);
        state.low.insert(node.to_owned(), state.next);
        state.next += 1;
        state.stack.push(node.to_owned());
        state.on_stack.insert(node.to_owned());
        let targets: Vec<String> = state
            .edges
            .get(node)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        for target in targets {
            if !state.index.contains_key(&target) {
                visit(state, &target);
                let low = state.low[&target].min(state.low[node]);
                state.low.insert(node.to_owned(), low);
            } else if state.on_stack.contains(&target) {
                let low = state.index[&target].min(state.low[node]);
                state.low.insert(node.to_owned(), low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(top) = state.stack.pop() {
                state.on_stack.remove(&top);
                let done = top == node;
                component.push(top);
                if done {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    let nodes: Vec<String> = edges.keys().cloned().collect();
    for node in nodes {
        if !state.index.contains_key(&node) {
            visit(&mut state, &node);
        }
    }
    state.found
}

/// Which runtime modules import which: between top-level modules (`store` → `position`), and
/// between the files of one module (`projection/batch` → `projection/runner`).
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("runtime/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let Some(top) = module.first() else {
            continue; // lib.rs: the root declares everything
        };
        if top == "bin" || top == "__private" {
            continue;
        }
        let code = std::fs::read_to_string(file).unwrap();
        let is_mod_file = file.ends_with("mod.rs");
        for reference in references(&code, &module, is_mod_file) {
            let Some(target) = reference.first() else {
                continue;
            };
            if target != top {
                edges.entry(top.clone()).or_default().insert(target.clone());
                continue;
            }
            // Between the files of one module (`projection/batch` → `projection/runner`).
            if let (Some(own), Some(other)) = (module.get(1), reference.get(1))
                && own != other
                && (src.join(target).join(format!("{other}.rs")).exists()
                    || src.join(target).join(other).is_dir())
            {
                edges
                    .entry(format!("{top}/{own}"))
                    .or_default()
                    .insert(format!("{target}/{other}"));
            }
        }
    }
    assert!(edges.len() > 10, "the module graph was not read: {edges:?}");
    edges
}

#[test]
fn the_runtime_modules_have_no_cycles() {
    let cycles = cycles(&module_graph());
    assert!(
        cycles.is_empty(),
        "modules import each other in a cycle (move the shared items to a lower module): {cycles:?}"
    );
}

/// The map's table of the runtime's modules is bottom to top, "lower modules never import
/// higher ones": each imports only modules of its own row or of the rows above.
#[test]
fn the_map_lists_the_runtime_modules_bottom_to_top() {
    let map = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let section = map
        .split("\n## The runtime")
        .nth(1)
        .and_then(|rest| rest.split("\n#").next())
        .expect("ARCHITECTURE.md has a section on the runtime");
    let mut row_of = BTreeMap::new();
    let rows = section.lines().filter(|l| l.starts_with("| `runtime/src/"));
    for (row, line) in rows.enumerate() {
        let first_cell = line.split('|').nth(1).unwrap_or_default();
        for span in code_spans(first_cell) {
            if let Some(path) = span.strip_prefix("runtime/src/") {
                let module = path.split('/').next().unwrap_or_default();
                row_of.insert(module.trim_end_matches(".rs").to_owned(), row);
            }
        }
    }
    assert!(
        row_of.len() > 15,
        "only {} modules found in the table: {row_of:?}",
        row_of.len()
    );
    let mut upward = Vec::new();
    for (from, targets) in &module_graph() {
        let Some(&row) = row_of.get(from) else {
            continue;
        };
        for target in targets {
            if row_of.get(target).is_some_and(|&above| above > row) {
                upward.push(format!("`{from}` imports `{target}`"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "ARCHITECTURE.md lists these runtime modules below what they import (reorder the table, or move the import's items down): {upward:?}"
    );
}

#[test]
fn grouped_imports_are_read() {
    let module = ["store".to_owned(), "postgres".to_owned()];
    let code = "use crate::{error::Error, position::{self, FeedPosition}};\n\
                use super::{\n    backend::{columns, to_i64},\n    Limits, // a comment\n    sql,\n};\n\
                let x = crate::failure::classify(e);";
    let expected: BTreeSet<Vec<String>> = [
        &["error"][..],
        &["failure", "classify"],
        &["position"],
        // `super` of `store/postgres/mod.rs` is `store`; `Limits` names no module.
        &["store", "backend", "columns"],
        &["store", "backend", "to_i64"],
        &["store", "sql"],
    ]
    .iter()
    .map(|path| path.iter().map(|part| (*part).to_owned()).collect())
    .collect();
    assert_eq!(references(code, &module, true), expected);
}
