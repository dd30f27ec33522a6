//! `svrkit new`: a complete service crate from an IDL (or a small example one), that serves
//! as soon as it is built.
//!
//! The crate: `Cargo.toml`, `build.rs` (the build API), `idl/<file>.xml`, `svrkit.toml`,
//! `src/main.rs` (config, server, dashboard), `src/lib.rs` (the generated modules and
//! `server()`), `src/handlers.rs` (one method per IDL method, answering UNIMPLEMENTED) and
//! `tests/call.rs` (a call over TCP).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use askama::Template;
use svrkit_codegen::ir::{Schema, StructId};
use svrkit_codegen::{Builder, rust_ident};

use crate::Failure;

#[derive(Template)]
#[template(path = "new/Cargo.toml.txt")]
struct CargoToml<'a> {
    crate_name: &'a str,
    runtime_dep: String,
    codegen_dep: String,
}

#[derive(Template)]
#[template(path = "new/build.rs.txt")]
struct BuildRs<'a> {
    idl_path: &'a str,
    include_dirs: &'a [String],
}

#[derive(Template)]
#[template(path = "new/svrkit.toml.txt")]
struct SvrkitToml<'a> {
    crate_name: &'a str,
    port: u16,
    admin_port: u16,
}

#[derive(Template)]
#[template(path = "new/main.rs.txt")]
struct MainRs<'a> {
    crate_name: &'a str,
    crate_ident: &'a str,
    services_list: String,
}

#[derive(Template)]
#[template(path = "new/lib.rs.txt")]
struct LibRs<'a> {
    crate_name: &'a str,
    idl_path: &'a str,
    modules: String,
    services: &'a [ServiceView],
}

#[derive(Template)]
#[template(path = "new/handlers.rs.txt")]
struct HandlersRs<'a> {
    services: &'a [ServiceView],
    has_methods: bool,
}

#[derive(Template)]
#[template(path = "new/test.rs.txt")]
struct TestRs<'a> {
    crate_ident: &'a str,
    test: Option<&'a TestView>,
}

#[derive(Template)]
#[template(path = "new/example.xml.txt")]
struct ExampleXml<'a> {
    crate_name: &'a str,
    package: &'a str,
    service_id: u16,
}

struct ServiceView {
    full_name: String,
    doc: Vec<String>,
    trait_path: String,
    server_path: String,
    handler: String,
    methods: Vec<MethodView>,
}

struct MethodView {
    name: String,
    full_name: String,
    fn_name: String,
    doc: String,
    request: String,
    response: String,
}

struct TestView {
    name: String,
    /// The method's function name, as a Rust identifier (`r#type`).
    fn_name: String,
    /// The same, usable inside another identifier (`type`).
    test_name: String,
    client_path: String,
    oneway: bool,
}

/// What `svrkit new` was asked for.
pub(crate) struct Options {
    pub(crate) dir: PathBuf,
    pub(crate) idl: Option<PathBuf>,
    /// The include directories the IDL was compiled with (`-I`).
    pub(crate) includes: Vec<PathBuf>,
    pub(crate) svrkit_path: Option<PathBuf>,
    pub(crate) port: u16,
}

pub(crate) fn run(options: &Options, builder: &Builder) -> Result<ExitCode, Failure> {
    let dir = &options.dir;
    let fail = |m: String| Failure::Message(m);
    if dir.exists()
        && std::fs::read_dir(dir)
            .map_err(|e| fail(format!("{}: {e}", dir.display())))?
            .next()
            .is_some()
    {
        return Err(fail(format!(
            "{} exists and is not empty: svrkit new makes a new crate",
            dir.display()
        )));
    }
    let base = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| fail(format!("{}: not a directory name", dir.display())))?;
    let crate_name = crate_name(base).map_err(fail)?;
    let crate_ident = crate_name.replace('-', "_");

    // The IDL: the given one (with the files it includes), checked before anything is
    // written, or the example.
    let (idl_name, compiled, idl) = match &options.idl {
        Some(path) => {
            let compiled = builder.check(&[path])?;
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("service.xml")
                .to_owned();
            let files = idl_files(path, &options.includes, compiled.files_read())?;
            (name, compiled, files)
        }
        None => {
            let example = ExampleXml {
                crate_name: &crate_name,
                package: &crate_ident,
                service_id: 7700,
            };
            let name = format!("{crate_ident}.xml");
            let text = render(&example)?;
            // Checked from a scratch copy, so that an error names a file that exists.
            let scratch = std::env::temp_dir().join(format!("svrkit-new-{}", std::process::id()));
            std::fs::create_dir_all(&scratch).map_err(|e| fail(format!("{e}")))?;
            let file = scratch.join(&name);
            std::fs::write(&file, &text).map_err(|e| fail(format!("{e}")))?;
            let checked = builder.check(&[&file]);
            let _ = std::fs::remove_dir_all(&scratch);
            let files = IdlFiles {
                root: format!("idl/{name}"),
                include_dirs: vec!["idl".to_owned()],
                files: vec![(PathBuf::from(format!("idl/{name}")), text)],
            };
            (name, checked?, files)
        }
    };
    if idl_name.contains(['"', '\\']) {
        return Err(fail(format!(
            "`{idl_name}`: rename the IDL file without quotes or backslashes"
        )));
    }
    let schema = compiled.schema();
    if schema.services.is_empty() {
        return Err(fail(format!("{idl_name} declares no service to serve")));
    }
    if schema
        .packages
        .iter()
        .any(|p| p.segments().next() == Some("handlers"))
    {
        return Err(fail(
            "a package named `handlers.*` would clash with the crate's `handlers` module".into(),
        ));
    }
    let admin_port = options
        .port
        .checked_add(1)
        .filter(|_| options.port != 0)
        .ok_or_else(|| {
            fail(format!(
                "--port {}: the dashboard takes the next port, so use 1 to 65534",
                options.port
            ))
        })?;

    let (runtime_dep, codegen_dep, source, lock) =
        dependencies(options.svrkit_path.as_deref(), dir)?;
    let services = services(schema);
    // The test calls a method with a response if there is one, else a oneway one.
    let mut methods = schema
        .services
        .iter()
        .flat_map(|s| s.methods.iter().map(move |m| (s, m)));
    let test = methods
        .clone()
        .find(|(_, m)| m.response.is_some())
        .or_else(|| methods.next())
        .map(|(s, m)| TestView {
            name: format!("{}.{}", s.full_name, m.name),
            fn_name: rust_ident(&m.fn_name),
            test_name: m.fn_name.clone(),
            client_path: format!(
                "{crate_ident}::{}",
                type_path(&s.full_name, &format!("{}Client", s.name))
            ),
            oneway: m.response.is_none(),
        });
    let idl_path = idl.root.clone();
    let files: Vec<(PathBuf, String)> = vec![
        (
            "Cargo.toml".into(),
            render(&CargoToml {
                crate_name: &crate_name,
                runtime_dep,
                codegen_dep,
            })?,
        ),
        (
            "build.rs".into(),
            render(&BuildRs {
                idl_path: &idl_path,
                include_dirs: &idl.include_dirs,
            })?,
        ),
        (
            "svrkit.toml".into(),
            render(&SvrkitToml {
                crate_name: &crate_name,
                port: options.port,
                admin_port,
            })?,
        ),
        (
            "src/main.rs".into(),
            render(&MainRs {
                crate_name: &crate_name,
                crate_ident: &crate_ident,
                services_list: schema
                    .services
                    .iter()
                    .map(|s| format!("`{}`", s.full_name))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?,
        ),
        (
            "src/lib.rs".into(),
            render(&LibRs {
                crate_name: &crate_name,
                idl_path: &idl_path,
                modules: modules(schema),
                services: &services,
            })?,
        ),
        (
            "src/handlers.rs".into(),
            render(&HandlersRs {
                services: &services,
                has_methods: services.iter().any(|s| !s.methods.is_empty()),
            })?,
        ),
        (
            "tests/call.rs".into(),
            render(&TestRs {
                crate_ident: &crate_ident,
                test: test.as_ref(),
            })?,
        ),
        (".gitignore".into(), "/target\n".into()),
    ];
    // With a checkout, start from its lock file: the same versions it is tested with, and
    // the crates already downloaded (cargo drops the entries the new crate does not use).
    let idl_files = idl.files.into_iter();
    let files = files
        .into_iter()
        .chain(idl_files)
        .chain(lock.map(|l| ("Cargo.lock".into(), l)));
    for (path, mut content) in files {
        if !content.ends_with('\n') {
            content.push('\n');
        }
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| fail(format!("{}: {e}", parent.display())))?;
        }
        std::fs::write(&path, content).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    }
    // Long type paths and names make lines rustfmt would break; leave the crate as `cargo fmt`
    // would, so that the author's first format is not a diff (best effort: rustfmt may be
    // missing).
    let _ = std::process::Command::new("rustfmt")
        .args(["--edition", "2024"])
        .args([
            "src/main.rs",
            "src/lib.rs",
            "src/handlers.rs",
            "tests/call.rs",
            "build.rs",
        ])
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status();
    note!(
        "created {} ({}, svrkit from {source})\n\n  cd {}\n  cargo run        # serves on 127.0.0.1:{}, dashboard on :{}\n  svrkit call 127.0.0.1:{} {} --idl {idl_path} --json '{{}}'\n\nthen fill in src/handlers.rs",
        dir.display(),
        schema
            .services
            .iter()
            .map(|s| s.full_name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        dir.display(),
        options.port,
        admin_port,
        options.port,
        test.as_ref()
            .map_or_else(|| "<no method yet>".to_owned(), |t| t.name.clone()),
    );
    Ok(ExitCode::SUCCESS)
}

fn render(t: &impl Template) -> Result<String, Failure> {
    t.render()
        .map_err(|e| Failure::Message(format!("template: {e}")))
}

/// A crate name from a directory name: `my_service` and `my-service` are taken as they are;
/// Rust keywords and the names of crates the new one uses or that Rust provides are not.
fn crate_name(base: &str) -> Result<String, String> {
    let ok = base.starts_with(|c: char| c.is_ascii_alphabetic())
        && base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(format!(
            "`{base}` cannot name a crate: use letters, digits, - and _, starting with a letter"
        ));
    }
    let name = base.to_ascii_lowercase();
    let ident = name.replace('-', "_");
    const TAKEN: &[&str] = &[
        "std",
        "core",
        "alloc",
        "proc_macro",
        "test",
        "tokio",
        "svrkit_runtime",
        "svrkit_codegen",
        "svrkit_macros",
    ];
    if rust_ident(&ident) != ident || TAKEN.contains(&ident.as_str()) {
        return Err(format!(
            "`{base}` cannot name the crate: it is a Rust keyword or a crate it depends on"
        ));
    }
    Ok(name)
}

/// The IDL files of the new crate, under its `idl/`.
struct IdlFiles {
    /// The root file, as build.rs names it (`idl/test/all_types.xml`).
    root: String,
    /// The include directories build.rs passes, mapped into `idl/`.
    include_dirs: Vec<String>,
    /// Each file's path in the crate, and its text.
    files: Vec<(PathBuf, String)>,
}

/// Copies every file the IDL read into `idl/`, keeping their layout below the deepest
/// directory holding all of them and the include directories, so that relative includes
/// (`../im/common.xml`) and include directories resolve in the crate as they did here.
fn idl_files(root: &Path, includes: &[PathBuf], read: &[PathBuf]) -> Result<IdlFiles, Failure> {
    let canonical = |p: &Path| {
        let p = if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        };
        p.canonicalize()
            .map_err(|e| Failure::Message(format!("{}: {e}", p.display())))
    };
    let files: Vec<PathBuf> = read
        .iter()
        .map(|f| canonical(f))
        .collect::<Result<_, _>>()?;
    let dirs: Vec<PathBuf> = includes
        .iter()
        .map(|d| canonical(d))
        .collect::<Result<_, _>>()?;
    let mut base = canonical(root.parent().unwrap_or(Path::new(".")))?;
    while !files.iter().all(|f| f.starts_with(&base)) || !dirs.iter().all(|d| d.starts_with(&base))
    {
        if !base.pop() {
            break;
        }
    }
    let in_crate = |p: &Path| {
        let rel = p.strip_prefix(&base).unwrap_or(p);
        Path::new("idl").join(rel)
    };
    let text = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| Failure::Message(format!("{}: {e}", p.display())))
    };
    let slash = |p: PathBuf| {
        let s = p.to_string_lossy().replace('\\', "/");
        s.trim_end_matches('/').to_owned()
    };
    Ok(IdlFiles {
        root: slash(in_crate(&canonical(root)?)),
        include_dirs: dirs.iter().map(|d| slash(in_crate(d))).collect(),
        files: files
            .iter()
            .map(|f| Ok((in_crate(f), text(f)?)))
            .collect::<Result<_, Failure>>()?,
    })
}

/// `svrkit-runtime` and `svrkit-codegen` as dependencies: path dependencies on a checkout
/// (`--svrkit-path`, else the checkout this binary was built from, if it is still there),
/// else the published versions.
fn dependencies(
    explicit: Option<&Path>,
    dir: &Path,
) -> Result<(String, String, String, Option<String>), Failure> {
    let checkout = match explicit {
        Some(path) => {
            if !is_checkout(path) {
                return Err(Failure::Message(format!(
                    "{} is not a svrkit checkout (no svrkit-runtime/ and svrkit-codegen/ in it)",
                    path.display()
                )));
            }
            Some(path.to_owned())
        }
        None => {
            let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let around = std::env::current_dir()
                .ok()
                .into_iter()
                .chain(dir.canonicalize().ok())
                .flat_map(|d| d.ancestors().map(Path::to_path_buf).collect::<Vec<_>>())
                .find(|d| is_checkout(d));
            around.or_else(|| is_checkout(&built_from).then_some(built_from))
        }
    };
    Ok(match checkout {
        Some(path) => {
            let path = path
                .canonicalize()
                .map_err(|e| Failure::Message(format!("{}: {e}", path.display())))?;
            let runtime = toml_string(&path.join("svrkit-runtime").display().to_string());
            let codegen = toml_string(&path.join("svrkit-codegen").display().to_string());
            (
                format!("{{ path = {runtime} }}"),
                format!("{{ path = {codegen} }}"),
                format!("the checkout at {}", path.display()),
                std::fs::read_to_string(path.join("Cargo.lock")).ok(),
            )
        }
        None => {
            let version = env!("CARGO_PKG_VERSION");
            note!(
                "warning: no svrkit checkout found; the crate depends on svrkit {version} from \
                 crates.io (give --svrkit-path DIR if the crates are not published)"
            );
            (
                format!("\"{version}\""),
                format!("\"{version}\""),
                format!("crates.io, version {version}"),
                None,
            )
        }
    })
}

fn is_checkout(dir: &Path) -> bool {
    dir.join("svrkit-runtime/Cargo.toml").is_file()
        && dir.join("svrkit-codegen/Cargo.toml").is_file()
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `pub mod a { pub mod b { include_idl!("a.b"); } }` for every package, as one tree.
fn modules(schema: &Schema) -> String {
    #[derive(Default)]
    struct Node {
        package: Option<String>,
        children: BTreeMap<String, Node>,
    }
    let mut root = Node::default();
    for p in &schema.packages {
        let mut node = &mut root;
        for seg in p.segments() {
            node = node.children.entry(seg.to_owned()).or_default();
        }
        node.package = Some(p.name.clone());
    }
    fn write(node: &Node, indent: usize, out: &mut String) {
        let pad = "    ".repeat(indent);
        if let Some(p) = &node.package {
            out.push_str(&format!("{pad}svrkit_runtime::include_idl!(\"{p}\");\n"));
        }
        for (name, child) in &node.children {
            let doc = child.package.as_deref().map_or_else(String::new, |p| {
                format!("{pad}/// `{p}`, generated by build.rs.\n")
            });
            out.push_str(&format!(
                "{doc}{pad}#[allow(missing_docs)]\n{pad}pub mod {} {{\n",
                rust_ident(name)
            ));
            write(child, indent + 1, out);
            out.push_str(&format!("{pad}}}\n"));
        }
    }
    let mut out = String::new();
    write(&root, 0, &mut out);
    out.trim_end().to_owned()
}

/// `im.msg.MsgSvr` -> `im::msg::MsgSvr`, each segment as Rust spells it.
fn module_path(full_name: &str) -> String {
    full_name
        .split('.')
        .map(rust_ident)
        .collect::<Vec<_>>()
        .join("::")
}

/// The path of an item `name` (spelled as given) in the package of `full_name`: for the
/// client and server, which append to the service's name as written (`SelfServer`).
fn type_path(full_name: &str, name: &str) -> String {
    match full_name.rsplit_once('.') {
        Some((package, _)) => format!("{}::{name}", module_path(package)),
        None => name.to_owned(),
    }
}

fn services(schema: &Schema) -> Vec<ServiceView> {
    let struct_path =
        |id: StructId| format!("crate::{}", module_path(&schema.struct_(id).full_name));
    schema
        .services
        .iter()
        .map(|s| ServiceView {
            full_name: s.full_name.clone(),
            doc: s
                .doc
                .iter()
                .flat_map(|d| d.lines().map(str::trim).filter(|l| !l.is_empty()))
                .map(str::to_owned)
                .collect(),
            trait_path: format!("crate::{}", module_path(&s.full_name)),
            server_path: format!(
                "crate::{}",
                type_path(&s.full_name, &format!("{}Server", s.name))
            ),
            handler: format!("{}Handler", s.name),
            methods: s
                .methods
                .iter()
                .map(|m| MethodView {
                    name: m.name.clone(),
                    full_name: format!("{}.{}", s.full_name, m.name),
                    fn_name: rust_ident(&m.fn_name),
                    doc: m
                        .doc
                        .as_deref()
                        .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
                        .unwrap_or_default(),
                    request: struct_path(m.request),
                    response: m.response.map_or_else(|| "()".to_owned(), struct_path),
                })
                .collect(),
        })
        .collect()
}
