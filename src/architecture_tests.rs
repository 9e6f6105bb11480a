//! The code's shape, checked from its sources: no import cycles between modules, no source
//! file over 800 lines and a `//!` line at the top of every module saying what it owns (in
//! the library, the load generator and the integration tests), and the structural invariants
//! of ARCHITECTURE.md that a reading of the code can decide.
//!
//! How cycles are found: every `crate::`, `super::` and `self::` path in a module's code (its
//! `use` trees expanded, re-exports followed to the module that defines the name) is an edge
//! from that module to the module it names. An edge between a module and one of its own
//! ancestors or descendants is how Rust nests modules and is not counted; any other edge is
//! lifted to the two siblings under their closest common ancestor (`store::writer::queue` →
//! `store::leases` is the edge `writer` → `leases` inside `store`). Among siblings, the
//! graph must have no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest source file allowed (a module's unit tests may sit in a file beside it).
const MAX_LINES: usize = 800;

type ModPath = Vec<String>;

struct Source {
    path: ModPath,
    file: PathBuf,
    text: String,
}

/// The product crate's library sources (its `main.rs` is a crate of its own).
fn sources() -> Vec<Source> {
    sources_under("src")
}

/// Every tree of Rust modules in the repository that its shape rules apply to: the library,
/// the load generator (`bench/`, a crate rooted at its `main.rs`) and the integration tests.
const TREES: &[&str] = &["src", "bench/src", "tests/it"];

/// The sources of the module tree under `dir` (relative to the repository root). A `main.rs`
/// is the crate root there, except in `src/`, where the library is.
fn sources_under(tree: &str) -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(tree);
    let mut out = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let file = entry.unwrap().path();
            let relative = file.strip_prefix(&root).unwrap().to_path_buf();
            if file.is_dir() {
                dirs.push(file);
                continue;
            }
            if file.extension().is_none_or(|e| e != "rs")
                || (tree == "src" && relative == Path::new("main.rs"))
            {
                continue;
            }
            let mut path: ModPath = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                path.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                path.pop();
            }
            let text = std::fs::read_to_string(&file).unwrap();
            out.push(Source { path, file, text });
        }
    }
    out
}

/// One piece of code: the module it is in (an inline `mod x { … }` makes its own) and its
/// text without comments.
struct Code {
    module: ModPath,
    line: usize,
    text: String,
}

/// The file's lines, each with the module it belongs to; comments are dropped.
fn code_of(source: &Source) -> Vec<Code> {
    let mut out = Vec::new();
    // Inline modules open at a depth of braces; they close when the depth falls back.
    let mut inline: Vec<(String, i64)> = Vec::new();
    let mut depth: i64 = 0;
    for (i, raw) in source.text.lines().enumerate() {
        let line = match raw.find("//") {
            Some(at) if !raw[..at].contains('"') => &raw[..at],
            _ => raw,
        };
        let trimmed = line.trim();
        let mut module = source.path.clone();
        module.extend(inline.iter().map(|(m, _)| m.clone()));
        out.push(Code {
            module,
            line: i + 1,
            text: trimmed.to_owned(),
        });
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        let opens_module = words.iter().position(|w| *w == "mod").and_then(|at| {
            let name = words.get(at + 1)?;
            (words.get(at + 2) == Some(&"{")).then(|| name.to_string())
        });
        let opened = line.matches('{').count() as i64;
        let closed = line.matches('}').count() as i64;
        if let Some(name) = opens_module {
            inline.push((name, depth));
        }
        depth += opened - closed;
        while inline.last().is_some_and(|(_, at)| depth <= *at) {
            inline.pop();
        }
    }
    out
}

/// Expands a `use` tree (`a::{b, c::{d, e as f}}`) into its paths.
fn expand(tree: &str) -> Vec<Vec<String>> {
    let segments = |path: &str| -> Vec<String> {
        path.split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let Some(open) = tree.find('{') else {
        // `path as name`: the path is what is imported.
        return vec![segments(tree.split_whitespace().next().unwrap_or(""))];
    };
    let prefix = segments(&tree[..open]);
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut level, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => level += 1,
            '}' => level -= 1,
            ',' if level == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(expand)
        .map(|tail| {
            let mut path = prefix.clone();
            path.extend(tail.into_iter().filter(|s| s != "self"));
            path
        })
        .collect()
}

/// A path as written in `module`, made absolute. One that starts with neither `crate`,
/// `self` nor `super` is taken as relative to `module` (a child module, in a `use`); the
/// caller drops it when no such module exists (it names another crate).
fn absolute(module: &ModPath, path: &[String]) -> Option<ModPath> {
    let (mut out, rest) = match path.first()?.as_str() {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (module.clone(), &path[1..]),
        "super" => {
            let mut parent = module.clone();
            parent.pop()?;
            (parent, &path[1..])
        }
        _ => (module.clone(), path),
    };
    let mut rest = rest;
    while rest.first().is_some_and(|s| s == "super") {
        out.pop()?;
        rest = &rest[1..];
    }
    out.extend(rest.iter().filter(|s| *s != "*").cloned());
    Some(out)
}

/// Whether `before` (what precedes `use ` on a line) makes it a `use` statement.
fn starts_a_use(before: &str) -> bool {
    let before = before.trim();
    before.is_empty()
        || before == "pub"
        || (before.starts_with("pub(") && before.ends_with(')') && !before.contains(' '))
}

/// A reference from one module: where, what it names (absolute), whether it was written as
/// a path relative to the module, and whether it re-exports the name.
struct Reference {
    from: ModPath,
    line: usize,
    to: ModPath,
    relative: bool,
    public: bool,
}

/// The `use` statements (whole, across lines) and the other `crate::`, `super::` and
/// `self::` paths of the code.
fn references(code: &[Code]) -> Vec<Reference> {
    let mut out = Vec::new();
    let mut statement: Option<(ModPath, usize, String, bool)> = None;
    for c in code {
        if let Some((_, _, text, _)) = statement.as_mut() {
            text.push(' ');
            text.push_str(&c.text);
        } else if let Some(at) = c
            .text
            .match_indices("use ")
            .map(|(at, _)| at)
            .find(|at| starts_a_use(&c.text[..*at]))
        {
            let public = c.text.starts_with("pub");
            statement = Some((
                c.module.clone(),
                c.line,
                c.text[at + 4..].to_owned(),
                public,
            ));
        } else {
            let tokens = c
                .text
                .split(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == ':'));
            for token in tokens {
                let path: Vec<String> = token.split("::").map(str::to_owned).collect();
                let prefixed = matches!(path[0].as_str(), "crate" | "self" | "super");
                if path.len() < 2 || !prefixed || path.iter().any(String::is_empty) {
                    continue;
                }
                if let Some(to) = absolute(&c.module, &path) {
                    out.push(Reference {
                        from: c.module.clone(),
                        line: c.line,
                        to,
                        relative: false,
                        public: false,
                    });
                }
            }
        }
        if let Some((module, line, text, public)) = statement.take() {
            match text.find(';') {
                Some(end) => {
                    for path in expand(&text[..end]) {
                        let relative = !matches!(
                            path.first().map(String::as_str),
                            Some("crate" | "self" | "super")
                        );
                        if let Some(to) = absolute(&module, &path) {
                            out.push(Reference {
                                from: module.clone(),
                                line,
                                to,
                                relative,
                                public,
                            });
                        }
                    }
                }
                None => statement = Some((module, line, text, public)),
            }
        }
    }
    out
}

struct Crate {
    modules: BTreeSet<ModPath>,
    /// Per module, the names it re-exports and where each comes from.
    reexports: BTreeMap<ModPath, BTreeMap<String, ModPath>>,
}

impl Crate {
    /// The module that defines what `path` names.
    fn resolve(&self, path: &ModPath, hops: usize) -> ModPath {
        let known = (0..=path.len())
            .rev()
            .find(|&n| self.modules.contains(&path[..n]))
            .unwrap_or(0);
        let module = path[..known].to_vec();
        let Some(name) = path.get(known) else {
            return module;
        };
        match self.reexports.get(&module).and_then(|r| r.get(name)) {
            Some(source) if hops < 8 => {
                let mut next = source.clone();
                next.extend(path[known + 1..].iter().cloned());
                self.resolve(&next, hops + 1)
            }
            _ => module,
        }
    }
}

/// Sibling-level edges `(a, b)` under a common parent, each with where it was seen, in the
/// module tree under `dir`.
fn sibling_edges(dir: &str) -> BTreeMap<(ModPath, ModPath), String> {
    let sources = sources_under(dir);
    let mut modules: BTreeSet<ModPath> = sources.iter().map(|s| s.path.clone()).collect();
    let mut all = Vec::new();
    for source in &sources {
        let code = code_of(source);
        modules.extend(code.iter().map(|c| c.module.clone()));
        all.extend(
            references(&code)
                .into_iter()
                .map(|r| (source.file.clone(), r)),
        );
    }
    // A relative `use` names a child module, or else another crate.
    all.retain(|(_, r)| !r.relative || modules.contains(&r.to[..r.from.len() + 1]));
    let mut reexports: BTreeMap<ModPath, BTreeMap<String, ModPath>> = BTreeMap::new();
    for (_, r) in all.iter().filter(|(_, r)| r.public) {
        if let Some(name) = r.to.last() {
            reexports
                .entry(r.from.clone())
                .or_default()
                .insert(name.clone(), r.to.clone());
        }
    }
    let krate = Crate { modules, reexports };
    let mut edges = BTreeMap::new();
    for (file, r) in all {
        let to = krate.resolve(&r.to, 0);
        let from = r.from;
        let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
        if common == from.len() || common == to.len() {
            continue;
        }
        let a = from[..=common].to_vec();
        let b = to[..=common].to_vec();
        edges
            .entry((a, b))
            .or_insert_with(|| format!("{}:{}", file.display(), r.line));
    }
    edges
}

/// The cycles among siblings, each as its modules.
fn cycles(edges: &BTreeMap<(ModPath, ModPath), String>) -> Vec<Vec<ModPath>> {
    let nodes: BTreeSet<&ModPath> = edges.keys().flat_map(|(a, b)| [a, b]).collect();
    let reaches = |from: &ModPath, to: &ModPath| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for ((a, b), _) in edges.range((n.clone(), Vec::new())..) {
                if *a != n {
                    break;
                }
                if b == to {
                    return true;
                }
                if seen.insert(b.clone()) {
                    stack.push(b.clone());
                }
            }
        }
        false
    };
    let mut found: Vec<Vec<ModPath>> = Vec::new();
    for n in nodes {
        if found.iter().any(|c| c.contains(n)) || !reaches(n, n) {
            continue;
        }
        let members = edges
            .keys()
            .flat_map(|(a, b)| [a, b])
            .filter(|m| reaches(n, m) && reaches(m, n))
            .cloned()
            .collect::<BTreeSet<_>>();
        found.push(members.into_iter().collect());
    }
    found
}

#[test]
fn no_two_modules_import_each_other_directly_or_round_about() {
    let mut shown = Vec::new();
    for dir in TREES {
        shown.extend(cycles_shown(dir));
    }
    assert!(shown.is_empty(), "import cycles:\n  {}", shown.join("\n  "));
}

/// The cycles among the modules under `dir`, each with the edges that make it.
fn cycles_shown(dir: &str) -> Vec<String> {
    let edges = sibling_edges(dir);
    cycles(&edges)
        .iter()
        .map(|members| {
            let names: Vec<String> = members.iter().map(|m| m.join("::")).collect();
            let seen: Vec<String> = edges
                .iter()
                .filter(|((a, b), _)| members.contains(a) && members.contains(b))
                .map(|((a, b), at)| format!("{} -> {} ({at})", a.join("::"), b.join("::")))
                .collect();
            format!("{dir}: {}:\n    {}", names.join(", "), seen.join("\n    "))
        })
        .collect()
}

#[test]
fn the_checker_sees_edges_through_use_trees_paths_and_reexports() {
    let edges = sibling_edges("src");
    let has = |a: &str, b: &str| {
        let split = |s: &str| s.split("::").map(str::to_owned).collect::<ModPath>();
        edges.contains_key(&(split(a), split(b)))
    };
    // A `use` tree across lines; a path in code; a name re-exported by a parent module.
    assert!(has("store::writer", "store::admin"));
    assert!(has("delivery", "endpoint"));
    assert!(has("domain::machine", "domain::notification"));
    assert!(has("store", "endpoint"), "through crate::endpoint::{{…}}");
    assert!(!has("store", "store::writer"), "a parent and its child");
    // The other trees are read from their own crate roots.
    let bench = sibling_edges("bench/src");
    assert!(bench.contains_key(&(vec!["run".to_owned()], vec!["context".to_owned()])));
    let tests = sibling_edges("tests/it");
    let harness = |m: &str| vec!["harness".to_owned(), m.to_owned()];
    assert!(tests.contains_key(&(harness("receiver"), harness("deliverers"))));
}

#[test]
fn no_source_file_is_longer_than_800_lines() {
    let long: Vec<String> = TREES
        .iter()
        .flat_map(|dir| sources_under(dir))
        .filter(|s| s.text.lines().count() > MAX_LINES)
        .map(|s| format!("{} ({} lines)", s.file.display(), s.text.lines().count()))
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}

#[test]
fn every_module_says_what_it_owns_in_its_first_line() {
    let silent: Vec<String> = TREES
        .iter()
        .flat_map(|dir| sources_under(dir))
        .filter(|s| !s.text.starts_with("//! "))
        .map(|s| s.file.display().to_string())
        .collect();
    assert!(silent.is_empty(), "no `//!` first line: {silent:?}");
}

/// The code lines (comments dropped) of the sources under `module`, outside test modules.
fn product_code(module: &[&str]) -> Vec<(PathBuf, Code)> {
    let tests = ["tests", "architecture_tests"];
    sources()
        .iter()
        .filter(|s| {
            s.path
                .starts_with(&module.iter().map(|m| m.to_string()).collect::<Vec<_>>())
        })
        .flat_map(|s| {
            code_of(s)
                .into_iter()
                .map(|c| (s.file.clone(), c))
                .collect::<Vec<_>>()
        })
        .filter(|(_, c)| !c.module.iter().any(|m| tests.contains(&m.as_str())))
        .collect()
}

/// Fails on the first of `words` in the product code of `module`, naming where.
fn assert_no_word_in(module: &[&str], words: &[&str]) {
    let code = product_code(module);
    assert!(!code.is_empty(), "no code under {module:?}");
    for (file, c) in &code {
        for word in words {
            assert!(
                !c.text.contains(word),
                "{}:{} uses {word}: {}",
                file.display(),
                c.line,
                c.text
            );
        }
    }
}

#[test]
fn domain_does_no_io_reads_no_clock_and_reaches_nothing_outside_itself() {
    let forbidden = [
        "tokio",
        "rusqlite",
        "axum",
        "reqwest",
        "hyper",
        "std::time",
        "std::fs",
        "std::net",
        "SystemTime",
        "Instant",
        "fastrand",
    ];
    assert_no_word_in(&["domain"], &forbidden);
    let outside: Vec<String> = sources()
        .iter()
        .filter(|s| s.path.first().is_some_and(|m| m == "domain"))
        .flat_map(|s| references(&code_of(s)))
        .filter(|r| !r.relative && r.to.first().is_none_or(|m| m != "domain"))
        .map(|r| format!("{} -> {}", r.from.join("::"), r.to.join("::")))
        .collect();
    assert!(outside.is_empty(), "domain reaches out: {outside:?}");
}

#[test]
fn step_has_no_wildcard_arm() {
    let machine = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domain/machine.rs"),
    )
    .unwrap();
    let start = machine.find("pub fn step(").expect("step is in machine.rs");
    let body = &machine[start..];
    let body = &body[..body.find("\n}\n").expect("step ends")];
    for line in body.lines() {
        let arm = line.trim();
        assert!(
            !(arm.starts_with("_ ")
                || arm.contains("| _")
                || arm.contains("(_,")
                || arm.contains(", _)")),
            "a wildcard arm in step: {arm}"
        );
    }
    assert!(body.contains("State::Processing => match input {"));
}

#[test]
fn the_writer_never_awaits_and_does_no_network_io() {
    assert_no_word_in(
        &["store", "writer"],
        &[".await", "async ", "reqwest", "hyper", "lapin"],
    );
}

#[test]
fn only_the_store_opens_a_connection_that_can_write() {
    let opens: Vec<String> = product_code(&[])
        .iter()
        .filter(|(_, c)| c.text.contains("Connection::open"))
        .map(|(file, c)| format!("{}: {}", file.display(), c.text))
        .collect();
    let writable: Vec<&String> = opens
        .iter()
        .filter(|o| !o.contains("open_with_flags("))
        .collect();
    assert_eq!(writable.len(), 1, "{opens:#?}");
    assert!(writable[0].contains("src/store/mod.rs"), "{writable:?}");
    let reader =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/reader.rs"))
            .unwrap();
    assert!(reader.contains("OpenFlags::SQLITE_OPEN_READ_ONLY"));
    assert!(!reader.contains("SQLITE_OPEN_READ_WRITE"));
}

#[test]
fn every_api_route_is_registered_with_its_documentation() {
    // `utoipa_axum::routes!` adds a handler to the router and its `#[utoipa::path]` to the
    // document in one call; a route added any other way would be served and not documented.
    // (`tests/it/openapi.rs` checks the methods of every documented path against the router.)
    for module in [&["api"][..], &["console"][..]] {
        assert_no_word_in(
            module,
            &[".route(", ".route_service(", ".nest(", ".nest_service("],
        );
    }
}

#[test]
fn wire_shapes_derive_serde_only_where_the_wire_is() {
    // The API's route files, the configuration file's shapes (and the secrets it holds), the
    // CloudEvents envelope, and the notification body inside the domain.
    let wire = |path: &ModPath| {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        matches!(
            path.as_slice(),
            ["api", ..]
                | ["config", "raw"]
                | ["secret"]
                | ["delivery", "cloudevents"]
                | ["domain", "notification"]
        )
    };
    let derives_serde =
        |t: &str| t.contains("derive(") && (t.contains("Serialize") || t.contains("Deserialize"));
    let tests = ["tests", "architecture_tests"];
    let mut misplaced = Vec::new();
    let mut in_domain = Vec::new();
    for source in sources() {
        let code = code_of(&source);
        for (i, c) in code.iter().enumerate() {
            if c.module.iter().any(|m| tests.contains(&m.as_str())) || !derives_serde(&c.text) {
                continue;
            }
            if !wire(&source.path) {
                misplaced.push(format!("{}:{}", source.file.display(), c.line));
            }
            if source.path.first().is_some_and(|m| m == "domain") {
                let item = code[i + 1..]
                    .iter()
                    .find(|c| !c.text.trim().starts_with("#["));
                in_domain.push(item.map(|c| c.text.trim().to_owned()).unwrap_or_default());
            }
        }
    }
    assert!(
        misplaced.is_empty(),
        "serde derived outside a wire shape's module: {misplaced:?}"
    );
    // The domain's enums know their wire names by hand; its one serde struct is private.
    assert_eq!(in_domain, ["struct Body<'a> {"], "serde items in domain");
}
