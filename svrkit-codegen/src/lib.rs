//! The svrkit IDL compiler: XML service definitions in, Rust (and `.proto`) out.
//!
//! Use it from a build script, the way `prost-build` is used:
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     svrkit_codegen::Builder::new()
//!         .include_dir("idl")
//!         .compile(&["idl/im/message.xml"])?;
//!     Ok(())
//! }
//! ```
//!
//! and in the crate, mount each package at the module path its name spells:
//!
//! ```ignore
//! pub mod im {
//!     pub mod common { svrkit_runtime::include_idl!("im.common"); }
//!     pub mod message { svrkit_runtime::include_idl!("im.message"); }
//! }
//! ```
//!
//! The same library backs the `svrkit` command line tool (crate `svrkit-cli`) and the
//! `svrkit_macros::idl!` macro. It depends on no part of the runtime.
//! Inside, compilation is a pipeline with a gate after each stage: `load` reads and parses
//! the files and their includes into an AST with spans, `check` resolves and validates it into
//! the [`ir`], and only a clean IR reaches the generators (`emit`, [`proto`], [`compat`]).
//! Every stage reports all the errors it finds; see [`Report`].

mod ast;
mod check;
pub mod compat;
pub mod descriptor;
pub mod diag;
mod emit;
mod error;
mod ident;
pub mod ir;
mod load;
mod parse;
pub mod proto;
pub mod span;
mod xml;

use std::fmt;
use std::path::{Path, PathBuf};

pub use emit::PackageCode;

use diag::{Diagnostic, Diagnostics};
use ir::Schema;
use span::SourceMap;

/// The subdirectory of `OUT_DIR` the build API writes to: its own, so that generated
/// `<package>.rs` files sit beside prost-build's or tonic-build's of the same name.
pub const OUT_SUBDIR: &str = "svrkit";

/// How generated code spells an IDL name in Rust: `type` -> `r#type`, `self` -> `self_`,
/// anything else as it is (for tools that write code against generated code, like
/// `svrkit new`).
pub fn rust_ident(name: &str) -> String {
    ident::ident(name).to_string()
}

/// A field's JSON name, as protobuf's JSON mapping spells it (lowerCamelCase: `sender_uin`
/// -> `senderUin`), for tools that read and write JSON against a schema.
pub fn json_name(name: &str) -> String {
    ident::json_name(name)
}

/// Compiles IDL files into `OUT_DIR/svrkit` with default settings (includes resolve relative to
/// each including file only).
///
/// # Errors
/// See [`Builder::compile`].
pub fn compile(files: &[impl AsRef<Path>]) -> Result<(), Error> {
    Builder::new().compile(files)
}

/// Configures and runs the compiler.
#[derive(Clone, Debug)]
pub struct Builder {
    include_dirs: Vec<PathBuf>,
    out_dir: Option<PathBuf>,
    base_dir: Option<PathBuf>,
    emit_rerun_if_changed: bool,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder::new()
    }
}

impl Builder {
    /// A builder that writes to `OUT_DIR/svrkit/` (where `include_idl!` looks, and where
    /// prost-build, tonic-build or anything else writing `<package>.rs` to `OUT_DIR` cannot
    /// collide with it) and tells cargo about every file it reads.
    pub fn new() -> Builder {
        Builder {
            include_dirs: Vec::new(),
            out_dir: None,
            base_dir: None,
            emit_rerun_if_changed: true,
        }
    }

    /// Adds a directory to search for `<include file=".."/>` after the including file's own
    /// directory.
    pub fn include_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Builder {
        self.include_dirs.push(dir.into());
        self
    }

    /// Writes generated files here instead of `OUT_DIR/svrkit`.
    pub fn out_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Builder {
        self.out_dir = Some(dir.into());
        self
    }

    /// Resolves relative IDL paths against `dir` instead of the current directory, while
    /// diagnostics and headers still show them as given (the `idl!` macro uses this so that
    /// its messages do not contain absolute paths).
    pub fn base_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Builder {
        self.base_dir = Some(dir.into());
        self
    }

    /// Whether [`compile`](Builder::compile) prints `cargo:rerun-if-changed` lines (default
    /// true; turn off outside build scripts).
    pub fn emit_rerun_if_changed(&mut self, yes: bool) -> &mut Builder {
        self.emit_rerun_if_changed = yes;
        self
    }

    /// Parses and checks `files` and everything they include.
    ///
    /// # Errors
    /// [`Error::Idl`] with every problem found, or [`Error::Io`] if a file cannot be read.
    pub fn check(&self, files: &[impl AsRef<Path>]) -> Result<Compiled, Error> {
        let roots: Vec<PathBuf> = files.iter().map(|f| f.as_ref().to_path_buf()).collect();
        let mut sources = SourceMap::default();
        let mut diags = Diagnostics::default();
        let loaded = load::load(
            self.base_dir.as_deref(),
            &roots,
            &self.include_dirs,
            &mut sources,
            &mut diags,
        )
        .map_err(|(path, source)| Error::Io { path, source })?;
        let files_read = loaded.read.clone();
        // Gate: the checker runs after errors in the files it has (so that one run reports
        // them all), but not when a file or an include is missing, whose absence it would
        // only report again as unknown types.
        let parsed_cleanly = !diags.has_errors();
        let schema = if loaded.complete {
            check::check(&loaded.files, &sources, &mut diags).filter(|_| parsed_cleanly)
        } else {
            None
        };
        match schema {
            Some(schema) => Ok(Compiled {
                sources,
                schema,
                files_read,
            }),
            None => {
                let mut diagnostics = diags.into_vec();
                // Passes find errors in their own order; readers want them in file order.
                diagnostics.sort_by_key(|d| (d.primary.0.file, d.primary.0.start));
                Err(Error::Idl(Report {
                    sources,
                    diagnostics,
                    files_read,
                }))
            }
        }
    }

    /// Checks `files` and generates one formatted Rust file per package, in memory.
    ///
    /// # Errors
    /// As [`check`](Builder::check).
    pub fn generate(&self, files: &[impl AsRef<Path>]) -> Result<Vec<GeneratedFile>, Error> {
        Ok(self.check(files)?.rust_files())
    }

    /// Generates Rust for `files` and writes one `<package>.rs` per package to the output
    /// directory, rewriting a file only when its content changed.
    ///
    /// # Errors
    /// [`Error::Idl`] for IDL errors (its `Display` is the rendered report), [`Error::Io`] for
    /// unreadable or unwritable files, [`Error::NoOutDir`] outside a build script without
    /// [`out_dir`](Builder::out_dir).
    pub fn compile(&self, files: &[impl AsRef<Path>]) -> Result<(), Error> {
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("OUT_DIR")
                .map(|out| PathBuf::from(out).join(OUT_SUBDIR))
                .ok_or(Error::NoOutDir)?,
        };
        let result = self.check(files);
        if self.emit_rerun_if_changed {
            let read = match &result {
                Ok(compiled) => compiled.files_read(),
                Err(Error::Idl(report)) => &report.files_read,
                Err(_) => &[],
            };
            for path in files
                .iter()
                .map(|f| f.as_ref().to_path_buf())
                .chain(read.iter().cloned())
            {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
        for file in result?.rust_files() {
            write_if_changed(&out_dir.join(&file.name), &file.content)?;
        }
        Ok(())
    }
}

/// Writes `content` to `path` unless the file already holds exactly that, so that cargo and
/// editors do not see a change (and rebuild) when nothing changed.
///
/// # Errors
/// When the file cannot be written.
pub fn write_if_changed(path: &Path, content: &str) -> Result<(), Error> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == content) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, content).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A checked compilation: the schema and the sources it came from.
pub struct Compiled {
    sources: SourceMap,
    schema: Schema,
    files_read: Vec<PathBuf>,
}

/// One generated source file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedFile {
    /// The package (`im.message`).
    pub package: String,
    /// The file name (`im.message.rs`).
    pub name: String,
    /// The file's text.
    pub content: String,
}

impl Compiled {
    /// The checked schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The sources, for rendering diagnostics about this schema.
    pub fn sources(&self) -> &SourceMap {
        &self.sources
    }

    /// Every file read, includes too.
    pub fn files_read(&self) -> &[PathBuf] {
        &self.files_read
    }

    /// The generated Rust items of each package, unformatted.
    pub fn rust_packages(&self) -> Vec<PackageCode> {
        emit::packages(&self.schema)
    }

    /// All packages as nested `pub mod` items, as the `idl!` macro expands them.
    pub fn rust_modules(&self) -> proc_macro2::TokenStream {
        emit::nested_modules(&self.rust_packages())
    }

    /// One formatted Rust file per package.
    pub fn rust_files(&self) -> Vec<GeneratedFile> {
        (0..self.schema.packages.len())
            .map(|i| {
                let package = &self.schema.packages[i].name;
                GeneratedFile {
                    package: package.clone(),
                    name: format!("{package}.rs"),
                    content: emit::format_package(&self.schema, ir::PackageId(i)),
                }
            })
            .collect()
    }

    /// One `.proto` file per package, equivalent on the wire.
    pub fn proto_files(&self) -> Vec<GeneratedFile> {
        proto::render(&self.schema)
    }
}

/// IDL diagnostics with the sources they point into.
pub struct Report {
    sources: SourceMap,
    diagnostics: Vec<Diagnostic>,
    files_read: Vec<PathBuf>,
}

impl Report {
    /// A report of `diagnostics` over `sources`.
    pub fn new(sources: SourceMap, diagnostics: Vec<Diagnostic>) -> Report {
        Report {
            sources,
            diagnostics,
            files_read: Vec::new(),
        }
    }

    /// The diagnostics, in the order found.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// Renders every diagnostic with `file:line:col`, the source line and a caret.
    pub fn render(&self, color: bool) -> String {
        diag::render(&self.sources, &self.diagnostics, color)
    }

    /// Every file read before the errors stopped compilation.
    pub fn files_read(&self) -> &[PathBuf] {
        &self.files_read
    }
}

/// Why compilation failed.
#[derive(thiserror::Error)]
pub enum Error {
    /// The IDL has errors; `Display` renders them all.
    #[error("{}{} error(s) in the IDL", .0.render(false), .0.diagnostics.iter().filter(|d| d.severity == diag::Level::Error).count())]
    Idl(Report),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `compile` ran outside a build script and no output directory was set.
    #[error("OUT_DIR is not set: run from a build script or call Builder::out_dir")]
    NoOutDir,
}

// Build scripts return errors with `?` from `main`, which prints `Debug`; show the rendered
// report there too rather than a struct dump.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}
