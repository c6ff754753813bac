//! The library's layers point one way: CLI → client → API → daemon → kernel, with the
//! shared types (`protocol`, `policy`, `config`) below them (docs/architecture.md). A
//! grep over the `crate::` paths of `src/` (use trees flattened) checks the rules below
//! and that no two top-level modules import each other, directly or through others.
//! The binary (`src/main.rs`, `src/cli/`) reaches the library as `leash::...` and is
//! the top layer, so it is not checked.
//!
//! Also: no file of the repository names a document that is not in it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

/// (module, what it must not import): a path prefix below `crate::`.
const RULES: &[(&str, &[&str])] = &[
    ("kernel", &["daemon", "api", "client", "policy", "config"]),
    ("policy", &["daemon", "api", "kernel", "client"]),
    (
        "protocol",
        &["daemon", "api", "kernel", "client", "policy", "config"],
    ),
    ("api", &["kernel"]),
    // The daemon is handed its API server (`crate::run`); it never calls up.
    ("daemon", &["api", "client"]),
    ("config", &["kernel", "daemon", "api"]),
    ("metrics", &["daemon"]),
    (
        "dns",
        &["daemon", "api", "client", "kernel", "policy", "config"],
    ),
    ("client", &["daemon", "kernel", "api::server"]),
    (
        "http",
        &["daemon", "api", "client", "kernel", "policy", "config"],
    ),
    (
        "audit_chain",
        &["daemon", "api", "client", "kernel", "policy", "config"],
    ),
];

/// One `crate::` path named by a file of the library.
struct Import {
    /// The top-level module of the file (`kernel` for `src/kernel/maps/sys.rs`).
    from: String,
    /// Where, as `src/...:LINE`.
    at: String,
    /// The path's segments after `crate::`, root re-exports replaced by their module.
    path: Vec<String>,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The line without its `//` comment (doc comments included).
fn code(line: &str) -> &str {
    line.find("//").map_or(line, |i| &line[..i])
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Splits `s` at the commas outside braces.
fn top_level_items(s: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0_i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&s[start..]);
    items
}

/// Flattens a use tree (`a::{b::C, d}`) into its paths, each under `prefix`.
fn flatten(tree: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if tree.is_empty() {
        return;
    }
    if let Some(inner) = tree.strip_prefix('{') {
        let inner = inner.strip_suffix('}').unwrap_or(inner);
        for item in top_level_items(inner) {
            flatten(item, prefix, out);
        }
        return;
    }
    if let Some((head, rest)) = tree.split_once("::") {
        let mut next = prefix.to_vec();
        next.push(head.trim().to_owned());
        flatten(rest, &next, out);
    } else {
        let name = tree.split_whitespace().next().unwrap_or_default();
        let mut path = prefix.to_vec();
        if name != "self" && name != "*" {
            path.push(name.to_owned());
        }
        out.push(path);
    }
}

/// The `crate::` paths outside use statements on one line (`$crate::` and
/// `pub(in crate::...)` are not imports).
fn inline_paths(line: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for (i, _) in line.match_indices("crate::") {
        let before = line[..i].chars().next_back();
        if before.is_some_and(|c| is_ident(c) || c == '$') || line[..i].ends_with("in ") {
            continue;
        }
        let rest = &line[i + "crate::".len()..];
        let end = rest
            .find(|c: char| !is_ident(c) && c != ':')
            .unwrap_or(rest.len());
        let path: Vec<String> = rest[..end]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if !path.is_empty() {
            found.push(path);
        }
    }
    found
}

/// The top-level modules and, for the root's re-exports (`pub use kernel::...::Backend`),
/// the module each name comes from.
fn top_level() -> (BTreeSet<String>, BTreeMap<String, String>) {
    let lib = fs::read_to_string(src().join("lib.rs")).expect("read src/lib.rs");
    let (mut modules, mut reexports) = (BTreeSet::new(), BTreeMap::new());
    for line in lib.lines().map(code) {
        let line = line.trim();
        if let Some(name) = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("mod "))
            .or_else(|| line.strip_prefix("pub(crate) mod "))
        {
            modules.insert(name.trim_end_matches(';').trim().to_owned());
        } else if let Some(tree) = line.strip_prefix("pub use ") {
            let mut paths = Vec::new();
            flatten(tree.trim_end_matches(';'), &[], &mut paths);
            for path in paths {
                if let (Some(first), Some(last)) = (path.first(), path.last()) {
                    reexports.insert(last.clone(), first.clone());
                }
            }
        }
    }
    (modules, reexports)
}

/// Every `crate::` path each library file names, by file and line.
fn imports() -> Vec<Import> {
    let root = src();
    let (modules, reexports) = top_level();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut found = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&root).expect("under src");
        let first = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default();
        let from = first.trim_end_matches(".rs").to_owned();
        // The crate roots, and the binary (its `crate::` is the binary crate).
        if !modules.contains(&from) {
            continue;
        }
        let text = fs::read_to_string(&file).expect("read a source file");
        let lines: Vec<&str> = text.lines().map(code).collect();
        let mut n = 0;
        while n < lines.len() {
            let at = format!("src/{}:{}", rel.display(), n + 1);
            let trimmed = lines[n].trim_start();
            let after_vis = trimmed
                .strip_prefix("pub ")
                .or_else(|| {
                    trimmed
                        .strip_prefix("pub(")
                        .and_then(|r| r.split_once(") ").map(|(_, r)| r))
                })
                .unwrap_or(trimmed);
            let mut paths = Vec::new();
            if let Some(tree) = after_vis.strip_prefix("use crate::") {
                // The statement, up to its `;`, may span lines.
                let mut stmt = tree.to_owned();
                while !stmt.contains(';') && n + 1 < lines.len() {
                    n += 1;
                    stmt.push_str(lines[n]);
                }
                let stmt = stmt.split(';').next().unwrap_or_default();
                flatten(stmt, &[], &mut paths);
            } else {
                paths = inline_paths(lines[n]);
            }
            for mut path in paths {
                if let Some(module) = path.first().and_then(|p| reexports.get(p)) {
                    path.insert(0, module.clone());
                }
                if path.first().is_some_and(|p| modules.contains(p)) {
                    found.push(Import {
                        from: from.clone(),
                        at: at.clone(),
                        path,
                    });
                }
            }
            n += 1;
        }
    }
    found
}

fn starts_with(path: &[String], prefix: &str) -> bool {
    let prefix: Vec<&str> = prefix.split("::").collect();
    path.len() >= prefix.len() && path.iter().zip(&prefix).all(|(a, b)| a == b)
}

fn rule_violations(imports: &[Import]) -> Vec<String> {
    let mut found = Vec::new();
    for import in imports {
        for (module, forbidden) in RULES {
            if import.from != *module {
                continue;
            }
            for target in *forbidden {
                if starts_with(&import.path, target) {
                    found.push(format!(
                        "{}: `crate::{}`: {module} must not import {target}",
                        import.at,
                        import.path.join("::")
                    ));
                }
            }
        }
    }
    found
}

/// Every edge between two top-level modules that lie on a cycle, with where it is made.
fn cycle_violations(imports: &[Import]) -> Vec<String> {
    let mut edges: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for import in imports {
        let to = import.path[0].as_str();
        if to != import.from {
            edges
                .entry((import.from.as_str(), to))
                .or_insert(&import.at);
        }
    }
    let reaches = |from: &str, to: &str| {
        let (mut seen, mut stack) = (BTreeSet::new(), vec![from]);
        while let Some(m) = stack.pop() {
            if m == to {
                return true;
            }
            if seen.insert(m) {
                stack.extend(edges.keys().filter(|(a, _)| *a == m).map(|(_, b)| *b));
            }
        }
        false
    };
    edges
        .iter()
        .filter(|((from, to), _)| reaches(to, from))
        .map(|((from, to), at)| {
            format!("{at}: {from} imports {to}, and {to} imports {from} (directly or through others): a cycle")
        })
        .collect()
}

#[test]
fn layers_point_one_way_and_modules_form_no_cycle() {
    let imports = imports();
    assert!(
        imports.len() > 20,
        "found only {} crate:: paths under {}: is the grep broken?",
        imports.len(),
        src().display()
    );
    let mut violations = rule_violations(&imports);
    violations.extend(cycle_violations(&imports));
    let mut report = String::new();
    for v in &violations {
        let _ = writeln!(report, "{v}");
    }
    assert!(
        violations.is_empty(),
        "{} layer violations (rules in agent-userspace/tests/layers.rs, docs/architecture.md):\n{report}",
        violations.len()
    );
}

#[test]
fn the_grep_sees_use_trees_and_inline_paths() {
    let mut paths = Vec::new();
    flatten(
        "{api::{peer::Peer, server as s}, daemon::{self, registry::*}, protocol}",
        &[],
        &mut paths,
    );
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        joined,
        [
            "api::peer::Peer",
            "api::server",
            "daemon",
            "daemon::registry",
            "protocol"
        ]
    );
    let inline = inline_paths("x: crate::kernel::maps::Maps, $crate::y, pub(in crate::daemon) z");
    assert_eq!(inline, [vec!["kernel", "maps", "Maps"]]);
}

/// Directories that hold no file of the repository (build output, tool state).
const NOT_THE_REPOSITORY: &[&str] = &[
    "target",
    ".git",
    "node_modules",
    ".venv",
    "__pycache__",
    ".pytest_cache",
];

fn repository_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if NOT_THE_REPOSITORY.iter().any(|n| name == *n) {
            continue;
        }
        if path.is_dir() && !path.is_symlink() {
            repository_files(&path, out);
        } else if path.is_file() {
            out.push(path);
        }
    }
}

/// What names a document outside the repository: documents that only ever existed
/// elsewhere, and absolute paths of home and work directories. (Spelled in pieces so
/// that this file does not name them.)
fn outside_references() -> Vec<String> {
    vec![
        ["design", ".md"].concat(),
        ["platform", "-notes"].concat(),
        ["shared", "/docs"].concat(),
        ["/", "work/"].concat(),
        ["/", "home/"].concat(),
        ["/", "Users/"].concat(),
    ]
}

#[test]
fn no_file_names_a_document_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let mut files = Vec::new();
    repository_files(root, &mut files);
    assert!(files.len() > 50, "found only {} files", files.len());
    let needles = outside_references();
    let mut found = Vec::new();
    for file in files {
        // Binary files (images, the compiled eBPF object) name nothing.
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let rel = file.strip_prefix(root).unwrap_or(&file);
        for (n, line) in text.lines().enumerate() {
            for needle in &needles {
                if line.contains(needle.as_str()) {
                    found.push(format!("{}:{}: names {needle:?}", rel.display(), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "files name documents outside the repository (make them self-contained, or link a \
         file of the repository):\n{}",
        found.join("\n")
    );
}
