//! `svrkit`: the IDL compiler on the command line.
//!
//! Exit codes: 0 success, 1 errors in the IDL (or breaking changes, for `compat`), 2 usage or
//! I/O errors.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use svrkit_codegen::{Builder, Compiled, Error, compat, write_if_changed};

/// Compile svrkit XML IDL files.
#[derive(Parser)]
#[command(name = "svrkit", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where `<include file=".."/>` looks after the including file's directory.
#[derive(clap::Args)]
struct Includes {
    /// Extra directory to search for included files (repeatable).
    #[arg(long = "include", short = 'I')]
    dirs: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Generate Rust code, one `<package>.rs` per package.
    Generate {
        /// IDL files to compile (their includes are found automatically).
        #[arg(required = true)]
        idl: Vec<PathBuf>,
        /// Directory to write the generated files to.
        #[arg(long, short)]
        out: PathBuf,
        #[command(flatten)]
        includes: Includes,
    },
    /// Check IDL files and report every error, without generating anything.
    Check {
        /// IDL files to check.
        #[arg(required = true)]
        idl: Vec<PathBuf>,
        #[command(flatten)]
        includes: Includes,
    },
    /// Export an equivalent `.proto` file per package.
    Proto {
        /// IDL files to export.
        #[arg(required = true)]
        idl: Vec<PathBuf>,
        /// Directory to write the `.proto` files to.
        #[arg(long, short)]
        out: PathBuf,
        #[command(flatten)]
        includes: Includes,
    },
    /// List the changes from an old to a new version of an IDL; exit 1 if any is breaking.
    Compat {
        /// The old version.
        old: PathBuf,
        /// The new version.
        new: PathBuf,
        #[command(flatten)]
        includes: Includes,
    },
}

fn builder(includes: &Includes) -> Builder {
    let mut b = Builder::new();
    b.emit_rerun_if_changed(false);
    for dir in &includes.dirs {
        b.include_dir(dir);
    }
    b
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

fn run(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Generate { idl, out, includes } => {
            let compiled = builder(&includes).check(&idl)?;
            write_all(&out, compiled.rust_files())?;
        }
        Command::Check { idl, includes } => {
            let compiled = builder(&includes).check(&idl)?;
            let s = compiled.schema();
            eprintln!(
                "ok: {} package(s), {} struct(s), {} enum(s), {} service(s)",
                s.packages.len(),
                s.structs.len(),
                s.enums.len(),
                s.services.len()
            );
        }
        Command::Proto { idl, out, includes } => {
            let compiled = builder(&includes).check(&idl)?;
            write_all(&out, compiled.proto_files())?;
        }
        Command::Compat { old, new, includes } => {
            let b = builder(&includes);
            let (old, new): (Compiled, Compiled) = (b.check(&[old])?, b.check(&[new])?);
            let changes = compat::compare(&old, &new);
            print!("{}", compat::render(&changes));
            if changes.iter().any(|c| c.breaking) {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_all(
    out: &std::path::Path,
    files: Vec<svrkit_codegen::GeneratedFile>,
) -> Result<(), Error> {
    for file in files {
        let path = out.join(&file.name);
        write_if_changed(&path, &file.content)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn report(e: &Error) -> ExitCode {
    match e {
        Error::Idl(report) => {
            eprint!("{}", report.render(std::io::stderr().is_terminal()));
            let n = report.diagnostics().len();
            eprintln!("error: {n} error(s) in the IDL; nothing was generated");
            ExitCode::from(1)
        }
        other => {
            eprintln!("error: {other}");
            ExitCode::from(2)
        }
    }
}
