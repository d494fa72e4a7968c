//! The map stays true as the code moves: every file or folder `ARCHITECTURE.md` names exists,
//! and the runtime's modules import each other without cycles (between top-level modules, and
//! between the files of one module), so the layers it describes hold.

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

/// The module paths a file's code refers to (`crate::a::b`, `super::b`), comments left out.
fn references(code: &str, module: &[String], is_mod_file: bool) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or_default();
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
            let mut rest = line;
            while let Some(at) = rest.find(prefix) {
                let before = rest[..at].chars().last();
                rest = &rest[at + prefix.len()..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let path: Vec<String> = rest
                    .split("::")
                    .map(|part| {
                        part.chars()
                            .take_while(|c| {
                                c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit()
                            })
                            .collect::<String>()
                    })
                    .take_while(|part| !part.is_empty())
                    .take(2)
                    .collect();
                if !path.is_empty() {
                    let mut full = base.clone();
                    full.extend(path);
                    found.insert(full);
                }
            }
        }
    }
    found
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

#[test]
fn the_runtime_modules_have_no_cycles() {
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
    let cycles = cycles(&edges);
    assert!(
        cycles.is_empty(),
        "modules import each other in a cycle (move the shared items to a lower module): {cycles:?}"
    );
}
