//! The runtime's modules form layers, and no module uses one above its own layer or beside it
//! (`docs/runtime.md`, "Layers"): so the codec, the frames and the counters can be read,
//! tested and reused without the server or the client, and the server and the client never
//! know about each other.
//!
//! The test reads every source file of `src/` with `syn`, resolves every path that names the
//! crate (`crate::`, `super::`, `svrkit_runtime::`, in code and in macro input, tests left
//! out) to the top-level module it reaches, and checks the edge against [`LAYERS`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// The top-level modules, bottom layer first. A module may use the modules of the layers
/// below its own, never one of its own layer or above.
const LAYERS: &[&[&str]] = &[
    // Leaves: the codec and what everything shares (randomness, the clock base, memory
    // budgets and cancellation, socket options).
    &["codec", "random", "clock", "sync", "socket"],
    &["status"],
    // How a call travels (the frame header), what it carries (the context, its trace id).
    // What gRPC says beside the message (the server and the client speak it).
    &["frame", "context", "trace", "grpc_wire"],
    // What generated code tells the runtime about a service.
    &["service"],
    // The counters every side keeps, and the overload and retry policies both sides apply.
    &["metrics", "policy"],
    &["tls"],
    // The server and the client: neither knows the other.
    &["server", "client"],
    // In-process calls (a client transport into a server's router), and the facade
    // generated service stubs are written against.
    &["local", "codegen"],
    // Monitoring built on the counters (rollups, alarms, pages, reports to the ossagent,
    // whose stubs are generated), and discovery feeding clients.
    &["monitor", "discovery"],
    // One file configures it all.
    &["config"],
];

/// What a glob import of the crate root (`use crate::*`) is recorded as using.
const ROOT: &str = "the crate root (a glob)";

fn layer_of(module: &str) -> usize {
    if module == ROOT {
        return usize::MAX;
    }
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("src/{module}: a top-level module in no layer of LAYERS"))
}

/// Every crate path used by a file, as segments after the crate root.
struct Uses {
    /// The module path of where the visitor is (`["server", "router"]`, and inline modules
    /// within the file as it enters them).
    module: Vec<String>,
    found: Vec<Vec<String>>,
}

impl Uses {
    /// Resolves a path that starts at `crate`, `super` or `svrkit_runtime` to segments
    /// from the crate root; `None` for any other path.
    fn resolve(&self, segments: &[String]) -> Option<Vec<String>> {
        let first = segments.first()?;
        match first.as_str() {
            "crate" | "svrkit_runtime" => Some(segments[1..].to_vec()),
            "super" => {
                let ups = segments.iter().take_while(|s| *s == "super").count();
                let base = self.module.len().checked_sub(ups)?;
                let mut path = self.module[..base].to_vec();
                path.extend_from_slice(&segments[ups..]);
                Some(path)
            }
            _ => None,
        }
    }

    fn note(&mut self, segments: Vec<String>) {
        if let Some(path) = self.resolve(&segments) {
            self.found.push(path);
        }
    }

    /// Paths inside macro input (`thread_local!`, `quote!`...), which `syn` does not parse:
    /// any `crate :: a :: b` run of tokens.
    fn scan_tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(g) => self.scan_tokens(g.stream()),
                TokenTree::Ident(id)
                    if matches!(
                        id.to_string().as_str(),
                        "crate" | "super" | "svrkit_runtime"
                    ) =>
                {
                    let mut segments = vec![id.to_string()];
                    let mut j = i + 1;
                    while let (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) =
                        (tokens.get(j), tokens.get(j + 1))
                    {
                        if a.as_char() != ':' || b.as_char() != ':' {
                            break;
                        }
                        match tokens.get(j + 2) {
                            Some(TokenTree::Ident(next)) => segments.push(next.to_string()),
                            _ => break,
                        }
                        j += 3;
                    }
                    self.note(segments);
                    i = j;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

/// Whether attributes hold `#[cfg(test)]`.
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

impl<'ast> Visit<'ast> for Uses {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if is_test(&m.attrs) {
            return;
        }
        // An inline module: `super::` inside it starts from it.
        self.module.push(m.ident.to_string());
        syn::visit::visit_item_mod(self, m);
        self.module.pop();
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if !is_test(&f.attrs) {
            syn::visit::visit_item_fn(self, f);
        }
    }

    // `pub(crate)`, `pub(super)`: who may see an item, not a use of anything.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if is_test(&u.attrs) {
            return;
        }
        fn walk(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            match tree {
                syn::UseTree::Path(p) => {
                    prefix.push(p.ident.to_string());
                    walk(&p.tree, prefix, out);
                    prefix.pop();
                }
                syn::UseTree::Name(n) => {
                    let mut path = prefix.clone();
                    if n.ident != "self" {
                        path.push(n.ident.to_string());
                    }
                    out.push(path);
                }
                syn::UseTree::Rename(r) => {
                    let mut path = prefix.clone();
                    path.push(r.ident.to_string());
                    out.push(path);
                }
                syn::UseTree::Glob(_) => out.push(prefix.clone()),
                syn::UseTree::Group(g) => {
                    for t in &g.items {
                        walk(t, prefix, out);
                    }
                }
            }
        }
        let mut paths = Vec::new();
        walk(&u.tree, &mut Vec::new(), &mut paths);
        for p in paths {
            self.note(p);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        self.note(p.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.scan_tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }
}

/// `src/a/b.rs` -> `["a", "b"]`; `src/a/mod.rs` -> `["a"]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
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

/// Names the crate root re-exports (`pub use status::{Code, Status}`), by the module they
/// come from: `crate::Status` is a use of `status`.
fn root_exports(lib: &syn::File) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for item in &lib.items {
        let syn::Item::Use(u) = item else { continue };
        let syn::UseTree::Path(p) = &u.tree else {
            continue;
        };
        let module = p.ident.to_string();
        let mut names = Vec::new();
        match &*p.tree {
            syn::UseTree::Name(n) => names.push(n.ident.to_string()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    if let syn::UseTree::Name(n) = t {
                        names.push(n.ident.to_string());
                    }
                }
            }
            _ => {}
        }
        for n in names {
            map.insert(n, module.clone());
        }
    }
    map
}

/// Every use of one top-level module by another: (user, used) -> the files.
fn edges() -> BTreeMap<(String, String), BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = syn::parse_file(&std::fs::read_to_string(src.join("lib.rs")).unwrap()).unwrap();
    let exports = root_exports(&lib);
    let modules: BTreeSet<String> = lib
        .items
        .iter()
        .filter_map(|i| match i {
            syn::Item::Mod(m) => Some(m.ident.to_string()),
            _ => None,
        })
        .collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let module = module_path(&src, &file);
        let Some(top) = module.first() else {
            continue; // lib.rs: the crate's front, which may re-export anything
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let parsed = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut uses = Uses {
            module: module.clone(),
            found: Vec::new(),
        };
        uses.visit_file(&parsed);
        for path in uses.found {
            let rel = || file.strip_prefix(&src).unwrap().display().to_string();
            let Some(first) = path.first() else {
                // `use crate::*`: every module at once, beside and above included.
                edges
                    .entry((top.clone(), ROOT.to_owned()))
                    .or_default()
                    .insert(rel());
                continue;
            };
            let used = if modules.contains(first) {
                first.clone()
            } else if let Some(m) = exports.get(first).filter(|m| modules.contains(*m)) {
                m.clone()
            } else {
                continue; // a root re-export of another crate (`crate::Bytes`), or a macro
            };
            if &used != top {
                edges.entry((top.clone(), used)).or_default().insert(rel());
            }
        }
    }
    edges
}

#[test]
fn no_module_uses_one_above_or_beside_its_layer() {
    let mut wrong = Vec::new();
    for ((user, used), files) in edges() {
        if layer_of(&used) >= layer_of(&user) {
            let files: Vec<_> = files.into_iter().collect();
            wrong.push(format!("{user} uses {used} (in {})", files.join(", ")));
        }
    }
    assert!(
        wrong.is_empty(),
        "uses against the layers of LAYERS (a glob import of the crate root uses them all):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_uses_in_every_form() {
    // `use` trees, paths in code, `super::` and macro input all resolve; tests do not count.
    let mut uses = Uses {
        module: vec!["server".to_owned(), "router".to_owned()],
        found: Vec::new(),
    };
    let file: syn::File = syn::parse_quote! {
        use crate::client::{Channel, self};
        use super::super::monitor::board;
        fn f() {
            let _ = svrkit_runtime::discovery::Watch::new();
            thread_local! { static X: u64 = crate::config::load(); }
        }
        mod inline {
            // From server::router::inline: two levels up is `server`.
            fn g() -> super::super::super::tls::Acceptor { todo!() }
        }
        pub(crate) fn h() {}
        #[cfg(test)]
        mod tests { use crate::local::Local; }
    };
    uses.visit_file(&file);
    let tops: BTreeSet<&str> = uses
        .found
        .iter()
        .filter_map(|p| p.first().map(String::as_str))
        .collect();
    assert_eq!(
        tops,
        BTreeSet::from(["client", "monitor", "discovery", "config", "tls"])
    );
}
