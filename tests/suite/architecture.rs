//! The shape of the code, checked: no import circle between the modules of a
//! crate, and no source file over 700 lines.
//!
//! A module is a file (`lib.rs` is the crate root, `a/mod.rs` and `a.rs` are
//! `a`). Module A imports B when A's code (comments and doc comments excluded)
//! names a path `crate::B::...`, `super::...` (outside a test module), or
//! `use`s a child module by its relative name (`pub use child::X` in a parent).
//! A path is resolved to the longest module prefix it names, so
//! `crate::Element` (a re-export at the root) is an import of the root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 700;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` -> `["a", "b"]`; `src/a/mod.rs` -> `["a"]`; `src/lib.rs` -> `[]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// The code of a file without comments (line comments, doc comments and
/// `/* */` blocks), with string literals emptied; and per line whether it is
/// inside a `mod tests` block.
fn code_lines(text: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let (mut in_block_comment, mut in_tests, mut depth_at_tests, mut depth) = (false, false, 0i32, 0i32);
    for line in text.lines() {
        let mut code = String::new();
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        let mut in_string = false;
        while i < chars.len() {
            let (c, next) = (chars[i], chars.get(i + 1).copied());
            if in_block_comment {
                if c == '*' && next == Some('/') {
                    in_block_comment = false;
                    i += 1;
                }
            } else if in_string {
                if c == '\\' {
                    i += 1;
                } else if c == '"' {
                    in_string = false;
                    code.push('"');
                }
            } else if c == '/' && next == Some('/') {
                break;
            } else if c == '/' && next == Some('*') {
                in_block_comment = true;
                i += 1;
            } else if c == '"' {
                in_string = true;
                code.push('"');
            } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
                // a char literal like '{'
                i += 2;
            } else {
                code.push(c);
            }
            i += 1;
        }
        if code.trim_start().starts_with("mod tests") {
            in_tests = true;
            depth_at_tests = depth;
        }
        for c in code.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
        }
        out.push((code.clone(), in_tests));
        if in_tests && depth <= depth_at_tests && code.contains('}') {
            in_tests = false;
        }
    }
    out
}

/// Every path the code names that starts with `crate::` or `super::`, and the
/// relative paths of `use` items; grouped imports (`crate::{a::b, c}`) are
/// expanded.
fn named_paths(code: &str) -> Vec<(String, Vec<String>)> {
    let mut paths = Vec::new();
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != ':';
        let rest: String = bytes[i..].iter().collect();
        let anchor = ["crate::", "super::"].into_iter().find(|a| rest.starts_with(a));
        if let (true, Some(anchor)) = (starts_word, anchor) {
            let (segments, consumed) = parse_path(&rest[anchor.len()..]);
            for segments in segments {
                paths.push((anchor.trim_end_matches("::").to_string(), segments));
            }
            i += anchor.len() + consumed;
            continue;
        }
        i += 1;
    }
    // `use name::...` with a relative first segment
    let trimmed = code.trim_start();
    let after_use = trimmed.strip_prefix("pub use ").or_else(|| trimmed.strip_prefix("use "));
    if let Some(rest) = after_use {
        if !rest.starts_with("crate::") && !rest.starts_with("super::") && !rest.starts_with("self::") {
            let (segments, _) = parse_path(rest);
            for segments in segments {
                paths.push(("relative".into(), segments));
            }
        }
    }
    paths
}

/// Parses `a::b::{c, d::e}` into `[[a, b, c], [a, b, d, e]]` (lowercase module
/// segments and the first item name), returning how many chars it read.
fn parse_path(text: &str) -> (Vec<Vec<String>>, usize) {
    let chars: Vec<char> = text.chars().collect();
    let mut prefix = Vec::new();
    let mut i = 0;
    loop {
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        if i > start {
            prefix.push(chars[start..i].iter().collect::<String>());
        }
        if i + 1 < chars.len() && chars[i] == ':' && chars[i + 1] == ':' {
            i += 2;
            if i < chars.len() && chars[i] == '{' {
                // a group: split at top-level commas
                let mut depth = 0;
                let mut item = String::new();
                let mut all = Vec::new();
                i += 1;
                while i < chars.len() {
                    let c = chars[i];
                    if c == '{' {
                        depth += 1;
                    } else if c == '}' {
                        if depth == 0 {
                            break;
                        }
                        depth -= 1;
                    }
                    if c == ',' && depth == 0 {
                        all.push(std::mem::take(&mut item));
                    } else {
                        item.push(c);
                    }
                    i += 1;
                }
                all.push(item);
                let mut out = Vec::new();
                for item in all {
                    let item = item.trim();
                    if item.is_empty() || item == "self" {
                        out.push(prefix.clone());
                        continue;
                    }
                    let (inner, _) = parse_path(item);
                    for inner in inner {
                        out.push(prefix.iter().cloned().chain(inner).collect());
                    }
                }
                return (out, i + 1);
            }
            continue;
        }
        return (vec![prefix], i);
    }
}

/// The module a path names: its longest prefix that is a module.
fn resolve(modules: &BTreeSet<Vec<String>>, base: &[String], segments: &[String]) -> Option<Vec<String>> {
    (0..=segments.len())
        .rev()
        .map(|n| base.iter().cloned().chain(segments[..n].iter().cloned()).collect::<Vec<_>>())
        .find(|candidate| modules.contains(candidate))
}

fn find_cycle(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<Vec<String>>> {
    fn visit(
        node: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next) {
                Some(1) => {
                    let start = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, state, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node) {
            if let Some(cycle) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

/// The import graph of the crate whose sources are in `src`.
fn import_graph(src: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    // the binary's main.rs is its own crate root; leave it out of the library's graph
    files.retain(|f| !(f.file_name().unwrap() == "main.rs" && src.join("lib.rs").exists()));
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_path(src, f)).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_path(src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let mut edges = BTreeSet::new();
        for (code, in_tests) in code_lines(&text) {
            for (anchor, segments) in named_paths(&code) {
                let target = match anchor.as_str() {
                    "crate" => resolve(&modules, &[], &segments),
                    // `super` inside an inline test module is the file's own module
                    "super" if in_tests => None,
                    "super" => resolve(&modules, &module[..module.len().saturating_sub(1)], &segments),
                    _ => {
                        // a relative `use` of a child module
                        let child: Vec<String> = module.iter().cloned().chain(segments.first().cloned()).collect();
                        modules.contains(&child).then(|| resolve(&modules, &module, &segments)).flatten()
                    }
                };
                if let Some(target) = target.filter(|t| *t != module) {
                    edges.insert(target);
                }
            }
        }
        graph.insert(module, edges);
    }
    graph
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn crate_sources() -> Vec<PathBuf> {
    let mut sources = vec![workspace().join("src")];
    let mut crates: Vec<PathBuf> =
        std::fs::read_dir(workspace().join("crates")).unwrap().map(|e| e.unwrap().path().join("src")).collect();
    crates.sort();
    sources.extend(crates);
    sources
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let mut checked = 0;
    for src in crate_sources() {
        let graph = import_graph(&src);
        checked += graph.len();
        if let Some(cycle) = find_cycle(&graph) {
            let names: Vec<String> =
                cycle.iter().map(|m| if m.is_empty() { "crate".into() } else { m.join("::") }).collect();
            panic!("import circle in {}: {}", src.display(), names.join(" -> "));
        }
    }
    assert!(checked > 40, "only {checked} modules found: is the scan broken?");
}

#[test]
fn the_circle_check_can_fail() {
    // the check must see a circle when there is one: a module that names its
    // parent's re-export, and the parent that re-exports it
    let dir = std::env::temp_dir().join(format!("convnet-architecture-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("layers")).unwrap();
    std::fs::write(
        src.join("lib.rs"),
        "pub mod layers;\npub mod element;\npub use element::Element;\npub use layers::Conv;\n",
    )
    .unwrap();
    std::fs::write(src.join("element.rs"), "/// uses crate::layers in a comment only\npub trait Element {}\n").unwrap();
    std::fs::write(src.join("layers/mod.rs"), "pub mod conv;\npub use conv::Conv;\n").unwrap();
    std::fs::write(src.join("layers/conv.rs"), "use crate::element::Element;\npub struct Conv;\n").unwrap();
    assert_eq!(find_cycle(&import_graph(&src)), None, "defining paths and comments make no circle");
    std::fs::write(src.join("layers/conv.rs"), "use crate::{Element, geometry};\npub struct Conv;\n").unwrap();
    let cycle = find_cycle(&import_graph(&src)).expect("conv -> crate -> layers -> conv");
    assert!(cycle.len() >= 3, "{cycle:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_source_file_is_over_700_lines() {
    let mut files = Vec::new();
    for src in crate_sources() {
        rust_files(&src, &mut files);
        rust_files(&src.with_file_name("tests"), &mut files);
        rust_files(&src.with_file_name("benches"), &mut files);
    }
    for dir in ["examples", "fuzz/fuzz_targets"] {
        rust_files(&workspace().join(dir), &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(files.len() > 60, "only {} files found", files.len());
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:?}");
}
