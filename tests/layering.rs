//! The layering rules of docs/ARCHITECTURE.md, held by reading `src/`: each top-level module
//! imports only the modules its rule allows, the top-level modules form no circle, the files inside
//! a module import each other in no circle, only `src/device/` opens a device, and the library
//! never imports the command line. A broken rule is reported with the file and the import; the
//! checker itself is tested on planted violations.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What each top-level module may import (docs/ARCHITECTURE.md, "The layers").
const RULES: &[(&str, &[&str])] = &[
    ("rng", &[]),
    ("tensor", &[]),
    ("files", &[]),
    ("batch", &[]),
    ("sample", &["rng"]),
    ("assets", &["files"]),
    ("model", &["assets", "files", "rng", "tensor"]),
    ("tasks", &["rng"]),
    (
        "reward",
        &[
            "assets", "batch", "files", "model", "rng", "sample", "tasks", "tensor",
        ],
    ),
    (
        "ppo",
        &[
            "batch", "model", "reward", "rng", "sample", "tasks", "tensor",
        ],
    ),
    ("throughput", &["model", "rng", "sample"]),
    (
        "cpu",
        &["batch", "model", "ppo", "reward", "rng", "sample", "tensor"],
    ),
    (
        "cuda",
        &[
            "assets",
            "batch",
            "files",
            "model",
            "ppo",
            "reward",
            "rng",
            "sample",
            "tensor",
            "throughput",
        ],
    ),
    (
        "check",
        &[
            "batch", "cpu", "cuda", "model", "ppo", "reward", "rng", "sample", "tasks", "tensor",
        ],
    ),
    (
        "device",
        &[
            "batch", "cpu", "cuda", "model", "ppo", "reward", "rng", "sample", "tensor",
        ],
    ),
    (
        "run",
        &[
            "assets", "batch", "device", "files", "model", "ppo", "reward", "rng", "sample",
            "tasks", "tensor",
        ],
    ),
];

/// The only places that may open a device: where the device is chosen, and where `Gpu` lives.
const OPENS_DEVICES: &[&str] = &["src/device/", "src/cuda/device/"];

/// A source file: its path (`src/...`) and text.
struct Source {
    path: String,
    text: String,
}

fn read_src(root: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut stack = vec![root.join("src")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(Source {
                    path: p.strip_prefix(root).unwrap().display().to_string(),
                    text: std::fs::read_to_string(&p).unwrap(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The text with `//` comments blanked out (strings are left alone: a `//` in a string is rare
/// in this code and only hides the rest of its line).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module path of a file: `src/cuda/ops/mod.rs` is `cuda::ops`, `src/files.rs` is `files`;
/// `None` for the crate roots and the binary's files.
fn module_of(path: &str) -> Option<Vec<String>> {
    let rel = path.strip_prefix("src/")?.strip_suffix(".rs")?;
    let mut segs: Vec<String> = rel.split('/').map(str::to_string).collect();
    if segs.last().is_some_and(|s| s == "mod") {
        segs.pop();
    }
    match segs.first().map(String::as_str) {
        None | Some("lib") | Some("main") | Some("cli") => None,
        _ => Some(segs),
    }
}

/// Every module path a file's code (`code`) names: `crate::a::b::...`, and `super::...` resolved
/// against the file's own module (outside its test module, where `super` is the file itself).
fn imports(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let path_at = |s: &str| -> Vec<String> {
        s.split("::")
            .take_while(|seg| {
                !seg.is_empty()
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
            .map(str::to_string)
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let before = code[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let p = path_at(&code[i + "crate::".len()..]);
        if !p.is_empty() {
            out.push(p);
        }
    }
    // `super` of `a::b` (a file `a/b.rs` or a folder `a/b/mod.rs`) is `a`.
    let parent: Vec<String> = module[..module.len() - 1].to_vec();
    let outside_tests = code.split("#[cfg(test)]").next().unwrap_or("");
    for (i, _) in outside_tests.match_indices("super::") {
        let before = outside_tests[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let p = path_at(&outside_tests[i + "super::".len()..]);
        let mut full = parent.clone();
        full.extend(p);
        if !full.is_empty() {
            out.push(full);
        }
    }
    out
}

/// Everything wrong with `sources`, one line each, naming the file.
fn violations(sources: &[Source]) -> Vec<String> {
    let rules: BTreeMap<&str, BTreeSet<&str>> = RULES
        .iter()
        .map(|(m, allowed)| (*m, allowed.iter().copied().collect()))
        .collect();
    let modules: BTreeSet<Vec<String>> =
        sources.iter().filter_map(|s| module_of(&s.path)).collect();
    // The longest module that is a prefix of `p`: what an import names.
    let resolve = |p: &[String]| -> Option<Vec<String>> {
        (1..=p.len())
            .rev()
            .map(|n| p[..n].to_vec())
            .find(|m| modules.contains(m))
    };
    let mut out = Vec::new();
    let mut top_edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut file_edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for s in sources {
        let is_lib = !s.path.starts_with("src/cli/") && s.path != "src/main.rs";
        let code = code(&s.text);
        if is_lib && code.contains("crate::cli") {
            out.push(format!(
                "{}: the library imports the command line (crate::cli)",
                s.path
            ));
        }
        if is_lib
            && !OPENS_DEVICES.iter().any(|p| s.path.starts_with(p))
            && ["Gpu::new(", "Gpu::emulated("]
                .iter()
                .any(|o| code.contains(o))
        {
            out.push(format!(
                "{}: opens a device; only src/device/ opens one, once per command",
                s.path
            ));
        }
        let Some(module) = module_of(&s.path) else {
            continue;
        };
        let top = module[0].clone();
        let Some(allowed) = rules.get(top.as_str()) else {
            out.push(format!(
                "{}: top-level module `{top}` has no layering rule (add it to docs/ARCHITECTURE.md and this test)",
                s.path
            ));
            continue;
        };
        for imp in imports(&module, &code) {
            let to = &imp[0];
            if *to != top && modules.iter().any(|m| m[0] == *to) {
                if !allowed.contains(to.as_str()) {
                    out.push(format!(
                        "{}: imports crate::{} but `{top}` may import only {:?}",
                        s.path,
                        imp.join("::"),
                        allowed
                    ));
                }
                top_edges
                    .entry(top.clone())
                    .or_default()
                    .entry(to.clone())
                    .or_insert_with(|| s.path.clone());
            }
            if let Some(target) = resolve(&imp)
                && target != module
            {
                file_edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    // Circles among the top-level modules, each reported once with a file on each edge.
    for (from, tos) in &top_edges {
        for (to, file) in tos {
            if let Some(back) = path_between(&top_edges, to, from) {
                let mut circle = vec![from.clone()];
                circle.extend(back);
                out.push(format!(
                    "{file}: `{from}` imports `{to}`, and the top-level modules form a circle: {}",
                    circle.join(" -> ")
                ));
            }
        }
    }
    // Circles among the files (modules) inside the tree.
    let nodes: Vec<&Vec<String>> = file_edges.keys().collect();
    for a in nodes {
        for b in &file_edges[a] {
            if a < b && reaches(&file_edges, b, a) {
                out.push(format!(
                    "{} and {} import each other (through a circle of modules)",
                    a.join("::"),
                    b.join("::")
                ));
            }
        }
    }
    out
}

/// The modules from `from` to `to` along imports (both ends included), if `to` can be reached.
fn path_between(
    edges: &BTreeMap<String, BTreeMap<String, String>>,
    from: &str,
    to: &str,
) -> Option<Vec<String>> {
    let mut prev: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([from.to_string()]);
    let mut seen = BTreeSet::from([from.to_string()]);
    while let Some(n) = queue.pop_front() {
        if n == to {
            let mut path = vec![n.clone()];
            let mut at = n;
            while let Some(p) = prev.get(&at) {
                path.push(p.clone());
                at = p.clone();
            }
            path.reverse();
            return Some(path);
        }
        for next in edges.get(&n).into_iter().flat_map(|m| m.keys()) {
            if seen.insert(next.clone()) {
                prev.insert(next.clone(), n.clone());
                queue.push_back(next.clone());
            }
        }
    }
    None
}

fn reaches(
    edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
    from: &[String],
    to: &[String],
) -> bool {
    let mut stack = vec![from.to_vec()];
    let mut seen = BTreeSet::new();
    while let Some(n) = stack.pop() {
        if n == to {
            return true;
        }
        if seen.insert(n.clone()) {
            stack.extend(edges.get(&n).into_iter().flatten().cloned());
        }
    }
    false
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn src_keeps_every_layering_rule() {
    let found = violations(&read_src(repo()));
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn every_top_level_module_has_a_rule() {
    let tops: BTreeSet<String> = read_src(repo())
        .iter()
        .filter_map(|s| module_of(&s.path).map(|m| m[0].clone()))
        .collect();
    let ruled: BTreeSet<String> = RULES.iter().map(|(m, _)| m.to_string()).collect();
    assert_eq!(tops, ruled);
}

/// The real tree plus one planted file.
fn with(path: &str, text: &str) -> Vec<String> {
    let mut src = read_src(repo());
    src.push(Source {
        path: path.into(),
        text: text.into(),
    });
    violations(&src)
}

#[test]
fn a_planted_import_against_the_rules_is_named_with_its_file() {
    let found = with(
        "src/model/planted.rs",
        "use crate::cpu::gemm::sgemm;\nfn f() {}\n",
    );
    assert!(
        found
            .iter()
            .any(|v| v.starts_with("src/model/planted.rs: imports crate::cpu::gemm")),
        "{found:?}"
    );
    // The backends never import each other.
    let found = with(
        "src/cuda/planted.rs",
        "fn f() { crate::cpu::model::logits(); }\n",
    );
    assert!(
        found
            .iter()
            .any(|v| v.starts_with("src/cuda/planted.rs: imports crate::cpu")),
        "{found:?}"
    );
}

#[test]
fn a_planted_circle_is_found() {
    // tasks -> reward, while reward imports tasks: a circle, and against tasks' rule too.
    let found = with("src/tasks/planted.rs", "use crate::reward::Parent;\n");
    assert!(
        found
            .iter()
            .any(|v| v.contains("src/tasks/planted.rs") && v.contains("form a circle")),
        "{found:?}"
    );
    // Two files of one module that import each other.
    let mut src = read_src(repo());
    for (path, other) in [
        ("src/run/planted_a.rs", "planted_b"),
        ("src/run/planted_b.rs", "planted_a"),
    ] {
        src.push(Source {
            path: path.into(),
            text: format!("use crate::run::{other}::X;\n"),
        });
    }
    let found = violations(&src);
    assert!(
        found
            .iter()
            .any(|v| v.contains("run::planted_a and run::planted_b import each other")),
        "{found:?}"
    );
}

#[test]
fn a_planted_device_opening_is_named() {
    let found = with(
        "src/reward/planted.rs",
        "fn f() { let g = crate::cuda::device::Gpu::new(0); }\n",
    );
    assert!(
        found
            .iter()
            .any(|v| v.starts_with("src/reward/planted.rs: opens a device")),
        "{found:?}"
    );
}
