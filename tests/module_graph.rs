//! The product crate's module graph is acyclic and layered.
//!
//! Read from the source, as the issue that set the rule measured it: every path a module names
//! (`crate::…`, `super::…`, `self::…`, a child module's name, a `use` of either, grouped imports
//! expanded), resolved to the module that defines the item — through `pub use` re-exports, so
//! `crate::providers::Usage` is an edge to `providers::usage` — and, like `cargo modules
//! dependencies --acyclic`, a module that re-exports or calls into a child depends on it. Test
//! code (`#[cfg(test)]` modules) is left out, as `cargo modules` leaves it out by default.
//!
//! Two checks: no circle anywhere (a circle names its modules and the lines that close it), and
//! the layer rules ARCHITECTURE.md states: `config` imports nothing of ours; the call record's
//! consumers (`budget`, `policy`, `session`, `task`, `telemetry`) never import `proxy` or `server`
//! (nor `approval`, which sits on `budget`'s webhook and never imports `policy`); the lower
//! floors (`sse`, `tokens`, `mcp`, `providers`, `record`, `body`) import no consumer (`mcp`
//! imports only `sse`); and outside
//! `providers/` no module names a provider format's variants (`Format::…`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use regex::Regex;

/// One module: its file and its code without comments and test modules.
struct Module {
    file: PathBuf,
    code: String,
}

/// Module path (`proxy::call`, `` for the crate root) → module.
fn modules(src: &Path) -> BTreeMap<String, Module> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "bin") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let mut parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            if parts == ["main"] {
                continue; // the binary, not the library
            }
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).expect("read module");
            out.insert(
                parts.join("::"),
                Module {
                    file: path.clone(),
                    code: without_visibility(&without_tests(&without_comments(&text))),
                },
            );
        }
    }
    out
}

/// `text` without `//` comments (doc comments included) and string literal contents, so paths
/// written in prose or strings do not count.
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                out.push('"');
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                out.push('"');
                i += 1;
            }
            // A char literal ('"' or '\\'), not a lifetime: skip it whole.
            b'\'' if b.get(i + 2) == Some(&b'\'') || (b.get(i + 1) == Some(&b'\\')) => {
                let end = text[i + 1..].find('\'').map_or(b.len(), |e| i + 1 + e + 1);
                let end = if b.get(i + 1) == Some(&b'\\') {
                    text[i + 3..].find('\'').map_or(b.len(), |e| i + 3 + e + 1)
                } else {
                    end
                };
                out.push_str("' '");
                i = end;
            }
            c => {
                let ch = text[i..].chars().next().unwrap_or(' ');
                out.push(ch);
                i += if c < 0x80 { 1 } else { ch.len_utf8() };
            }
        }
    }
    out
}

/// `code` with `pub(in path)` written `pub`: a visibility names a module without using it.
fn without_visibility(code: &str) -> String {
    Regex::new(r"pub\(in [^)]*\)")
        .expect("regex")
        .replace_all(code, "pub")
        .into_owned()
}

/// `code` without its `#[cfg(test)]` modules (brace-matched).
fn without_tests(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some(open) = after.find('{') else {
            return out;
        };
        let head = &after[..open];
        if !head.contains("mod ") {
            // A test-only item that is not a module: keep scanning after the attribute.
            out.push_str("#[cfg(test)]");
            rest = &after["#[cfg(test)]".len()..];
            continue;
        }
        let mut depth = 0usize;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Child module names declared in `code` (`mod x;`, `pub mod x;`, `pub(crate) mod x;`).
fn children(code: &str) -> Vec<String> {
    let re = Regex::new(r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;").expect("regex");
    re.captures_iter(code).map(|c| c[1].to_string()).collect()
}

/// The paths a module with child modules `kids` can name: from the crate, `super`, `self` or a
/// child.
fn path_regex(kids: &[String]) -> Regex {
    let mut roots = vec!["crate".to_string(), "super".to_string(), "self".to_string()];
    roots.extend(kids.iter().cloned());
    let alt = roots.join("|");
    Regex::new(&format!(
        r"(?:^|[^\w:])((?:{alt})(?:::(?:\w+|\*|\{{[^;]*?\}}))+)"
    ))
    .expect("path regex")
}

/// Every path `code` names (found with `re`, see [`path_regex`]), as segments relative to the
/// crate root.
fn paths(module: &str, code: &str, re: &Regex) -> Vec<Vec<String>> {
    let here: Vec<String> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").map(String::from).collect()
    };
    let mut out = Vec::new();
    for c in re.captures_iter(code) {
        for p in expand(&c[1]) {
            let segs: Vec<&str> = p.split("::").map(str::trim).collect();
            let mut abs = here.clone();
            let mut it = segs.iter().peekable();
            match it.peek().copied() {
                Some(&"crate") => {
                    abs.clear();
                    it.next();
                }
                Some(&"self") => {
                    it.next();
                }
                Some(&"super") => {
                    while it.peek() == Some(&&"super") {
                        abs.pop();
                        it.next();
                    }
                }
                _ => {} // a child module's name
            }
            abs.extend(it.map(|s| s.to_string()));
            out.push(abs);
        }
    }
    out
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(path: &str) -> Vec<String> {
    let Some(open) = path.find('{') else {
        return vec![path.to_string()];
    };
    let prefix = &path[..open];
    let inner = &path[open + 1..path.rfind('}').unwrap_or(path.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .flat_map(|p| {
            let p = p.split(" as ").next().unwrap_or(p).trim();
            if p == "self" {
                vec![prefix.trim_end_matches("::").to_string()]
            } else {
                expand(&format!("{prefix}{p}"))
            }
        })
        .collect()
}

/// The crate's module graph: module → (module it depends on → one line that says so).
struct Graph {
    edges: BTreeMap<String, BTreeMap<String, String>>,
}

fn graph(src: &Path) -> (BTreeMap<String, Module>, Graph) {
    let mods = modules(src);
    // `pub use` re-exports: (module, name) → the path it names.
    let reexport = Regex::new(r"pub(?:\([^)]*\))?\s+use\s+([^;]+);").expect("regex");
    let mut exports: HashMap<(String, String), Vec<String>> = HashMap::new();
    let mut kids: HashMap<String, Vec<String>> = HashMap::new();
    for (name, m) in &mods {
        let k = children(&m.code);
        for c in reexport.captures_iter(&m.code) {
            let text = c[1].split_whitespace().collect::<Vec<_>>().join(" ");
            let text = if text.starts_with("crate::")
                || text.starts_with("super::")
                || text.starts_with("self::")
                || k.iter().any(|kid| text.starts_with(&format!("{kid}::")))
            {
                text
            } else {
                continue; // an external crate's item
            };
            for p in paths(name, &text, &path_regex(&k)) {
                if let Some(last) = p.last() {
                    exports.insert((name.clone(), last.clone()), p);
                }
            }
        }
        kids.insert(name.clone(), k);
    }
    // `pub use x::*`: the module among the glob's targets that defines `name`.
    let glob_target = |m: &str, name: &str| -> Option<Vec<String>> {
        let star = exports.get(&(m.to_string(), "*".to_string()))?;
        let target = star[..star.len() - 1].join("::");
        let def = Regex::new(&format!(
            r"\b(?:struct|enum|type|fn|const|static|trait|mod)\s+{name}\b"
        ))
        .ok()?;
        let defined = mods.get(&target).is_some_and(|t| def.is_match(&t.code));
        defined.then(|| {
            let mut p = star[..star.len() - 1].to_vec();
            p.push(name.to_string());
            p
        })
    };
    // The module an absolute path's item lives in, following re-exports.
    let resolve = |path: &[String]| -> Option<String> {
        let mut path = path.to_vec();
        for _ in 0..8 {
            let mut m = String::new();
            let mut i = 0;
            while i < path.len() {
                let next = if m.is_empty() {
                    path[i].clone()
                } else {
                    format!("{m}::{}", path[i])
                };
                if !mods.contains_key(&next) {
                    break;
                }
                m = next;
                i += 1;
            }
            let named = path.get(i).and_then(|n| {
                exports
                    .get(&(m.clone(), n.clone()))
                    .cloned()
                    .or_else(|| glob_target(&m, n))
            });
            match named.as_ref() {
                Some(target) if target.as_slice() != path.as_slice() => {
                    let mut t = target.clone();
                    t.extend(path[i + 1..].iter().cloned());
                    path = t;
                }
                _ => return mods.contains_key(&m).then_some(m),
            }
        }
        None
    };
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (name, m) in &mods {
        let re = path_regex(&kids[name]);
        for line in m.code.lines() {
            for p in paths(name, line, &re) {
                let Some(to) = resolve(&p) else { continue };
                // A module's own items, and the crate root's `pub mod` list, are no dependency.
                if &to == name || to.is_empty() {
                    continue;
                }
                edges
                    .entry(name.clone())
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| line.trim().to_string());
            }
        }
    }
    (mods, Graph { edges })
}

/// Circles of the graph (strongly connected components of more than one module).
fn circles(g: &Graph) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a Graph,
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        if let Some(next) = t.g.edges.get(v) {
            for w in next.keys() {
                let w = w.as_str();
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let lw = t.low[w];
                    let lv = t.low[v];
                    t.low.insert(v, lv.min(lw));
                } else if t.on.contains(w) {
                    let iw = t.index[w];
                    let lv = t.low[v];
                    t.low.insert(v, lv.min(iw));
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut c = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                c.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                c.sort();
                t.out.push(c);
            }
        }
    }
    let mut t = T {
        g,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.edges.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn the_module_graph_has_no_circle() {
    let (_, g) = graph(&src());
    let found = circles(&g);
    let mut report = String::new();
    for c in &found {
        report.push_str(&format!("circle: {}\n", c.join(", ")));
        for a in c {
            for (b, line) in &g.edges[a] {
                if c.contains(b) {
                    report.push_str(&format!("    {a} -> {b}: {line}\n"));
                }
            }
        }
    }
    assert!(found.is_empty(), "import circles in src/:\n{report}");
}

#[test]
fn the_layers_point_one_way() {
    let (_, g) = graph(&src());
    let forbidden: &[(&str, &[&str])] = &[
        ("config", &["*"]),
        ("sse", &["*"]),
        ("tokens", &["*"]),
        ("http_client", &["*but config"]),
        (
            "mcp",
            &[
                "config",
                "tokens",
                "http_client",
                "providers",
                "record",
                "body",
                "session",
                "telemetry",
                "budget",
                "policy",
                "approval",
                "proxy",
                "server",
            ],
        ),
        (
            "providers",
            &[
                "record",
                "body",
                "session",
                "task",
                "telemetry",
                "budget",
                "policy",
                "approval",
                "proxy",
                "server",
            ],
        ),
        (
            "record",
            &[
                "body",
                "session",
                "task",
                "telemetry",
                "budget",
                "policy",
                "approval",
                "proxy",
                "server",
            ],
        ),
        (
            "body",
            &[
                "record",
                "session",
                "task",
                "telemetry",
                "budget",
                "policy",
                "approval",
                "proxy",
                "server",
            ],
        ),
        (
            "session",
            &["task", "budget", "policy", "approval", "proxy", "server"],
        ),
        ("task", &["budget", "policy", "approval", "proxy", "server"]),
        (
            "telemetry",
            &[
                "session", "task", "budget", "policy", "approval", "proxy", "server",
            ],
        ),
        ("budget", &["task", "policy", "approval", "proxy", "server"]),
        ("policy", &["task", "budget", "approval", "proxy", "server"]),
        ("approval", &["task", "policy", "proxy", "server"]),
        ("proxy", &["server"]),
    ];
    let mut broken = Vec::new();
    for (from, to) in &g.edges {
        for (target, line) in to {
            let (a, b) = (top(from), top(target));
            if a == b {
                continue;
            }
            for (layer, banned) in forbidden {
                if a != *layer {
                    continue;
                }
                let bad = banned.iter().any(|x| match *x {
                    "*" => true,
                    "*but config" => b != "config",
                    x => x == b,
                });
                if bad {
                    broken.push(format!("{from} -> {target}: {line}"));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layer rules broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn no_module_outside_providers_matches_on_a_format() {
    let (mods, _) = graph(&src());
    let variant = Regex::new(r"\bFormat::[A-Z]\w*").expect("regex");
    let mut found = Vec::new();
    for (name, m) in &mods {
        if top(name) == "providers" {
            continue;
        }
        for line in m.code.lines() {
            if variant.is_match(line) {
                found.push(format!("{}: {}", m.file.display(), line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "provider formats named outside providers/:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_reader_sees_what_it_should() {
    // The checker itself: a path through a re-export reaches the defining module, grouped
    // imports expand, test modules and comments are left out.
    assert_eq!(
        expand("crate::a::{b, c::{d, e as f}, self}"),
        [
            "crate::a::b",
            "crate::a::c::d",
            "crate::a::c::e",
            "crate::a"
        ]
    );
    let code = without_tests(&without_comments(
        "use crate::x::Y; // crate::z::W\nconst S: &str = \"crate::q::R\";\n#[cfg(test)]\nmod tests {\n    use crate::t::U;\n}\n",
    ));
    let found = paths("m", &code, &path_regex(&[]));
    assert_eq!(found, [vec!["x".to_string(), "Y".to_string()]]);
    let (_, g) = graph(&src());
    let record_to = g
        .edges
        .get("record")
        .map(|e| e.keys().cloned().collect::<Vec<_>>());
    assert!(
        record_to.is_some_and(|t| t.iter().any(|m| m.starts_with("providers::"))),
        "the call record re-exports provider types, resolved to their modules"
    );
}
