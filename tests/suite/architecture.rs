//! The shape of the code, checked: no import circle between the modules of a
//! crate, imports that point down the engine's floors (ground modules, kernels,
//! layers, model), other crates reaching the kernels only through entry
//! points, no source file over 700 lines and no function over 100 lines
//! outside the SIMD body files; each check with a fixture proving it can fail.
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

/// The files of `files` over `max` lines, as "path (N lines)".
fn long_files(files: &[PathBuf], max: usize) -> Vec<String> {
    files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > max).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect()
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
    assert!(files.len() > 60, "only {} files found", files.len());
    let long = long_files(&files, MAX_LINES);
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:?}");
}

#[test]
fn the_file_length_check_can_fail() {
    let dir = std::env::temp_dir().join(format!("convnet-file-length-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (fits, too_long) = (dir.join("fits.rs"), dir.join("too_long.rs"));
    std::fs::write(&fits, "// a line\n".repeat(MAX_LINES)).unwrap();
    std::fs::write(&too_long, "// a line\n".repeat(MAX_LINES + 1)).unwrap();
    let long = long_files(&[fits, too_long], MAX_LINES);
    assert_eq!(long.len(), 1, "{long:?}");
    assert!(long[0].contains("too_long.rs (701 lines)"), "{long:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A rule on the direction of imports inside one crate: no module under
/// `from` names a module under any of `to`.
struct Direction {
    from: &'static [&'static str],
    to: &'static [&'static [&'static str]],
    why: &'static str,
}

/// The floors of `convnet-tensor`: ground modules import nothing of the
/// crate; kernels never reach up to layers or the model; layers never reach
/// the model.
const TENSOR_DIRECTIONS: &[Direction] = &[
    Direction { from: &["element"], to: &[&[]], why: "a ground module imports nothing of the crate" },
    Direction { from: &["geometry"], to: &[&[]], why: "a ground module imports nothing of the crate" },
    Direction { from: &["error"], to: &[&[]], why: "a ground module imports nothing of the crate" },
    Direction { from: &["rng"], to: &[&[]], why: "a ground module imports nothing of the crate" },
    Direction { from: &["kernels"], to: &[&["layers"], &["model"]], why: "kernels never import layers or the model" },
    Direction { from: &["layers"], to: &[&["model"]], why: "layers never import the model" },
];

/// Every edge of `graph` that breaks one of `rules`, as "from -> to: why".
fn direction_violations(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>, rules: &[Direction]) -> Vec<String> {
    let under = |module: &[String], prefix: &[&str]| {
        module.len() >= prefix.len() && module.iter().zip(prefix).all(|(m, p)| m == p)
    };
    let mut violations = Vec::new();
    for (from, targets) in graph {
        for rule in rules.iter().filter(|rule| under(from, rule.from)) {
            for to in targets {
                // an empty prefix (`&[]`) stands for "any module of the crate"
                if rule.to.iter().any(|prefix| under(to, prefix)) && !under(to, rule.from) {
                    violations.push(format!("{} -> {}: {}", from.join("::"), display(to), rule.why));
                }
            }
        }
    }
    violations
}

fn display(module: &[String]) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

#[test]
fn imports_point_down_the_floors_of_the_engine() {
    let graph = import_graph(&workspace().join("crates/tensor/src"));
    let violations = direction_violations(&graph, TENSOR_DIRECTIONS);
    assert!(violations.is_empty(), "imports against the floors: {violations:#?}");
    for rule in TENSOR_DIRECTIONS {
        assert!(graph.keys().any(|m| m.first().map(String::as_str) == rule.from.first().copied()), "{}", rule.from[0]);
    }
}

#[test]
fn the_direction_check_can_fail() {
    let dir = std::env::temp_dir().join(format!("convnet-direction-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("kernels")).unwrap();
    std::fs::create_dir_all(src.join("layers")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod element;\npub mod kernels;\npub mod layers;\npub mod model;\n")
        .unwrap();
    std::fs::write(src.join("element.rs"), "pub trait Element {}\n").unwrap();
    std::fs::write(src.join("kernels/mod.rs"), "pub mod gemm;\n").unwrap();
    std::fs::write(src.join("kernels/gemm.rs"), "use crate::element::Element;\n").unwrap();
    std::fs::write(src.join("layers/mod.rs"), "use crate::kernels::gemm;\n").unwrap();
    std::fs::write(src.join("model.rs"), "use crate::layers;\n").unwrap();
    assert_eq!(direction_violations(&import_graph(&src), TENSOR_DIRECTIONS), Vec::<String>::new());
    // each rule, broken once
    for (file, text, expected) in [
        ("element.rs", "use crate::kernels::gemm;\n", "element -> kernels::gemm"),
        ("kernels/gemm.rs", "use crate::layers;\n", "kernels::gemm -> layers"),
        ("kernels/gemm.rs", "fn f() { crate::model::run(); }\n", "kernels::gemm -> model"),
        ("layers/mod.rs", "use crate::model;\n", "layers -> model"),
    ] {
        let before = std::fs::read_to_string(src.join(file)).unwrap();
        std::fs::write(src.join(file), format!("{before}{text}")).unwrap();
        let violations = direction_violations(&import_graph(&src), TENSOR_DIRECTIONS);
        assert!(violations.iter().any(|v| v.starts_with(expected)), "{expected} not caught: {violations:?}");
        std::fs::write(src.join(file), before).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The paths into `convnet_tensor::kernels` that other crates' sources name
/// (tests and benchmarks may reach further): the kernels are reached through
/// the layers, the model and [`convnet::tensor::gradient_tree`].
const KERNEL_ENTRY_POINTS: &[&str] = &[];

/// Every `convnet_tensor::kernels::...` (or `convnet::tensor::kernels::...`)
/// path named in `text` that is not an entry point.
fn kernel_paths_outside_entry_points(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (code, _) in code_lines(text) {
        // `tensor::kernels::` also matches `convnet_tensor::kernels::`
        for anchor in ["tensor::kernels::"] {
            let mut rest = code.as_str();
            while let Some(at) = rest.find(anchor) {
                let tail: String = rest[at + anchor.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let path = format!("kernels::{tail}");
                if !KERNEL_ENTRY_POINTS.iter().any(|entry| path.starts_with(entry)) {
                    found.push(path);
                }
                rest = &rest[at + anchor.len()..];
            }
        }
    }
    found
}

#[test]
fn other_crates_reach_the_kernels_only_through_entry_points() {
    let mut files = Vec::new();
    for src in crate_sources().into_iter().filter(|s| !s.ends_with("crates/tensor/src")) {
        rust_files(&src, &mut files);
    }
    assert!(files.len() > 30, "only {} files", files.len());
    let mut found = Vec::new();
    for file in &files {
        for path in kernel_paths_outside_entry_points(&std::fs::read_to_string(file).unwrap()) {
            found.push(format!("{}: {path}", file.display()));
        }
    }
    assert!(found.is_empty(), "kernels named outside their entry points: {found:#?}");
    // and the check can fail
    let hit = kernel_paths_outside_entry_points("let l = convnet_tensor::kernels::reduce::reduce_tree(x);\n");
    assert_eq!(hit, ["kernels::reduce::reduce_tree"]);
    assert!(kernel_paths_outside_entry_points("// convnet_tensor::kernels::reduce in a comment\n").is_empty());
}

const MAX_FUNCTION_LINES: usize = 100;

/// Files of hand-written SIMD bodies (raw pointers and intrinsics, unrolled on
/// purpose): the one place the function-length rule does not apply.
fn is_simd_body_file(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    name.starts_with("x86_") || (name == "x86.rs")
}

/// Each function of `text` longer than `max` lines, as (name, lines): from
/// the line naming `fn` to its closing brace.
fn long_functions(text: &str, max: usize) -> Vec<(String, usize)> {
    let lines = code_lines(text);
    let mut long = Vec::new();
    for (start, (code, _)) in lines.iter().enumerate() {
        let Some(at) = code.find("fn ").filter(|&at| at == 0 || !code.as_bytes()[at - 1].is_ascii_alphanumeric())
        else {
            continue;
        };
        let name: String = code[at + 3..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if name.is_empty() {
            continue;
        }
        let (mut depth, mut opened) = (0i64, false);
        for (end, (code, _)) in lines.iter().enumerate().skip(start) {
            let text = if end == start { &code[at..] } else { code.as_str() };
            if !opened && text.contains(';') && !text.contains('{') {
                break; // a declaration without a body
            }
            for c in text.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if opened && depth <= 0 {
                if end - start + 1 > max {
                    long.push((name.clone(), end - start + 1));
                }
                break;
            }
        }
    }
    long
}

#[test]
fn no_function_is_over_100_lines_outside_the_simd_bodies() {
    let mut files = Vec::new();
    for src in crate_sources() {
        rust_files(&src, &mut files);
    }
    rust_files(&workspace().join("examples"), &mut files);
    let (mut scanned, mut long) = (0, Vec::new());
    for file in files.iter().filter(|f| !is_simd_body_file(f)) {
        scanned += 1;
        for (name, lines) in long_functions(&std::fs::read_to_string(file).unwrap(), MAX_FUNCTION_LINES) {
            long.push(format!("{}: fn {name} ({lines} lines)", file.display()));
        }
    }
    assert!(scanned > 60, "only {scanned} files scanned");
    assert!(long.is_empty(), "functions over {MAX_FUNCTION_LINES} lines: {long:#?}");
}

#[test]
fn the_function_length_check_can_fail() {
    let body: String = (0..99).map(|i| format!("    let x{i} = {i};\n")).collect();
    let exactly_100 = format!("fn fits() {{\n{}}}\n", &body[..body.len() - "    let x98 = 98;\n".len()]);
    assert_eq!(long_functions(&exactly_100, 100), Vec::<(String, usize)>::new());
    let too_long = format!("pub(crate) fn too_long<T: Copy>(t: T) -> T {{\n{body}    t\n}}\nfn short() {{}}\n");
    assert_eq!(long_functions(&too_long, 100), [("too_long".to_string(), 102)]);
    // braces in strings and comments do not count; a trait method without a body is no function
    let tricky = format!("trait A {{ fn declared(&self); }}\nfn s() {{ let b = \"{{\"; // {{\n{body}}}\n");
    assert_eq!(long_functions(&tricky, 100), [("s".to_string(), 101)]);
    assert!(is_simd_body_file(Path::new("src/kernels/x86_gemm_nt.rs")));
    assert!(is_simd_body_file(Path::new("src/kernels/winograd/x86.rs")));
    assert!(!is_simd_body_file(Path::new("src/kernels/conv_tiled.rs")));
}
