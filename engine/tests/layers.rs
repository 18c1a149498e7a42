//! The engine's modules depend one way. Each top-level module of `engine/src` belongs to a
//! layer and may use only modules of the layers below its own: `config` builds each
//! component's settings and hands them down, the service never reaches up to the HTTP layer
//! or the runner, and the store uses nothing of the engine (and is alone in speaking SQL).
//! This test reads the sources and names every path that points up or sideways.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may use the modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    // Of the engine, these use nothing.
    &[
        "store",
        "json",
        "schedule",
        "telemetry",
        "backends",
        "egress",
    ],
    &["crypto", "auth", "monitor", "metrics"],
    &["service"],
    &["runner"],
    &["api"],
    // Above every component: builds their settings from flags, variables and the file.
    &["config"],
    &["startup"],
    &["cli"],
];

/// The crate's root files, which declare the modules and use none.
const ROOTS: &[&str] = &["lib.rs", "main.rs"];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules a source file names through the crate's root: `crate::x`,
/// `crate::{x, y::z}`, and `super::x` where `super` (repeated `depth` times) is the root.
fn names_used(text: &str, depth: usize) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut prefixes = vec!["crate::".to_string()];
    if depth > 0 {
        prefixes.push("super::".repeat(depth));
    }
    for prefix in &prefixes {
        for (at, _) in text.match_indices(prefix.as_str()) {
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == ':')
            {
                continue;
            }
            let rest = &text[at + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let mut level = 0;
                let mut item_start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => level += 1,
                        '}' if level == 0 => break,
                        '}' => level -= 1,
                        ',' if level == 0 => {
                            item_start = true;
                            continue;
                        }
                        c if c.is_whitespace() => continue,
                        _ => {}
                    }
                    if item_start && level == 0 {
                        let name = ident(&group[i..]);
                        if !name.is_empty() && name != "self" {
                            used.insert(name.to_string());
                        }
                        item_start = false;
                    }
                }
            } else {
                let name = ident(rest);
                if !name.is_empty() {
                    used.insert(name.to_string());
                }
            }
        }
    }
    used
}

/// The top-level module a file belongs to, and how many `super::` reach the root from it.
fn module_of(src: &Path, file: &Path) -> (String, usize) {
    let rel = file.strip_prefix(src).unwrap();
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let top = parts[0].trim_end_matches(".rs").to_string();
    let depth = if parts.last().is_some_and(|p| p == "mod.rs") {
        parts.len() - 1
    } else {
        parts.len()
    };
    (top, depth)
}

/// Which top-level modules each top-level module uses, with the files that use them.
fn dependencies(src: &Path) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut deps: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap().display().to_string();
        if ROOTS.contains(&rel.as_str()) {
            continue;
        }
        let (module, depth) = module_of(src, &file);
        let text = std::fs::read_to_string(&file).unwrap();
        let entry = deps.entry(module.clone()).or_default();
        for used in names_used(&text, depth) {
            if used != module {
                entry.entry(used).or_default().insert(rel.clone());
            }
        }
    }
    deps
}

#[test]
fn modules_use_only_the_layers_below_their_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let deps = dependencies(&src);
    let mut wrong = Vec::new();
    for (module, uses) in &deps {
        println!(
            "{module} -> {}",
            uses.keys().cloned().collect::<Vec<_>>().join(" ")
        );
        let Some(mine) = layer_of(module) else {
            wrong.push(format!(
                "module `{module}` is in no layer: add it to LAYERS"
            ));
            continue;
        };
        for (used, files) in uses {
            let files = files.iter().cloned().collect::<Vec<_>>().join(", ");
            match layer_of(used) {
                Some(theirs) if theirs < mine => {}
                Some(_) => wrong.push(format!(
                    "`{module}` uses `{used}`, which is not below it ({files})"
                )),
                None => wrong.push(format!(
                    "`{module}` uses `crate::{used}`, which is in no layer ({files})"
                )),
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}\n", wrong.join("\n"));
}

/// SQL and the database driver stay in `store`: its functions are the only way to the
/// database (a unit test elsewhere may still build a store error by hand).
#[test]
fn only_the_store_speaks_sql() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let (module, _) = module_of(&src, &file);
        if module == "store" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (n, line) in code.lines().enumerate() {
            if line.contains("sqlx::") || line.trim_start().starts_with("use sqlx") {
                let rel = file.strip_prefix(&src).unwrap().display();
                wrong.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}\n", wrong.join("\n"));
}

#[test]
fn the_reader_finds_every_form_of_path() {
    let text = "use crate::store::{self, Store};\nuse crate::{config, api::AppState};\n\
                let x = crate::runner::Runner::new(); use super::telemetry; $crate::not";
    let used: Vec<String> = names_used(text, 1).into_iter().collect();
    assert_eq!(used, ["api", "config", "runner", "store", "telemetry"]);
    assert!(names_used("use super::sibling;", 2).is_empty());
    assert_eq!(
        names_used("use super::super::api;", 2)
            .into_iter()
            .collect::<Vec<_>>(),
        ["api"]
    );
}
