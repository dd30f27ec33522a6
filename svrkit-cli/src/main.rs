//! `svrkit`: the IDL compiler on the command line, and the tools built on it (calling and
//! load-testing a service from its IDL).
//!
//! Exit codes: 0 success; 1 errors in the IDL, wire-breaking changes nobody acknowledged (`compat`), or a call that
//! failed (bad JSON, unknown method, an error status, an unreachable server); 2 usage or
//! I/O errors.

/// Writes a line to standard error, ignoring failure: there is nowhere left to report it.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod bench;
mod call;
mod compat;
mod new;
mod target;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use svrkit_codegen::{Builder, Error, write_if_changed};

/// Compile svrkit XML IDL files, and call and load-test the services they declare.
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

/// What `call` and `bench` call, and with what.
#[derive(clap::Args)]
struct CallArgs {
    /// The server's `host:port`.
    #[arg(value_parser = host_port)]
    addr: String,
    /// `Service.Method` (or `package.Service.Method`).
    method: String,
    /// The IDL file declaring the service.
    #[arg(long)]
    idl: PathBuf,
    /// The request as JSON (field names as in the IDL); read from standard input if left
    /// out.
    #[arg(long)]
    json: Option<String>,
    /// Deadline of each call (default: the method's `timeout_ms`), like `2s` or `500ms`.
    #[arg(long, value_parser = target::parse_duration)]
    timeout: Option<Duration>,
    #[command(flatten)]
    includes: Includes,
}

/// A run length above zero.
fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = target::parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("`{s}`: the run must last longer than zero"));
    }
    Ok(d)
}

/// Calls per second: a finite number above zero.
fn positive_rate(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r > 0.0)
        .ok_or_else(|| format!("`{s}` is not a rate: give a number of calls per second above 0"))
}

/// `host:port`, checked before anything connects.
fn host_port(s: &str) -> Result<String, String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(s.to_owned())
        }
        _ => Err(format!("`{s}` is not host:port (like 127.0.0.1:7700)")),
    }
}

impl CallArgs {
    fn target(&self) -> Result<target::Target, Failure> {
        target::Target::load(
            &builder(&self.includes),
            std::slice::from_ref(&self.idl),
            &self.method,
        )
    }
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
    /// Make a new service crate that serves at once: Cargo.toml, build.rs, the IDL,
    /// svrkit.toml, src/main.rs, one handler per IDL method (UNIMPLEMENTED until written) and
    /// a test that calls the service.
    New {
        /// Directory of the new crate (its name is the crate's name).
        dir: PathBuf,
        /// The IDL to serve (default: a small example IDL).
        #[arg(long)]
        idl: Option<PathBuf>,
        /// Use the svrkit crates of this checkout as path dependencies (default: the checkout
        /// around the new directory or the one this binary was built from, else crates.io).
        #[arg(long)]
        svrkit_path: Option<PathBuf>,
        /// Port the new service listens on (the dashboard takes the next one).
        #[arg(long, default_value_t = 7700)]
        port: u16,
        #[command(flatten)]
        includes: Includes,
    },
    /// Write an HTML reference (and the same in Markdown) of the packages, services, methods,
    /// structs and enums the IDL files declare.
    Doc {
        /// IDL files to document.
        #[arg(required = true)]
        idl: Vec<PathBuf>,
        /// Directory to write `index.html`, `<package>.html` and their `.md` twins to.
        #[arg(long, short)]
        out: PathBuf,
        #[command(flatten)]
        includes: Includes,
    },
    /// Call a method of a running service: the request from JSON (`--json` or standard
    /// input), the response printed as JSON. The IDL is all it needs.
    Call {
        #[command(flatten)]
        call: CallArgs,
    },
    /// Load-test a method with one request: live progress, then QPS, status counts and
    /// latency percentiles.
    Bench {
        #[command(flatten)]
        call: CallArgs,
        /// Concurrent callers (with `--rate`: calls in flight at most).
        #[arg(short = 'c', long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        concurrency: u32,
        /// How long to run, like `10s`.
        #[arg(short = 'd', long, default_value = "10s", value_parser = positive_duration)]
        duration: Duration,
        /// Open loop: start this many calls per second on a fixed schedule, timing each
        /// from its intended start.
        #[arg(long, value_parser = positive_rate)]
        rate: Option<f64>,
        /// TCP connections to the server (calls are multiplexed over them).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
        connections: u32,
    },
    /// List the changes from an old to a new version of an IDL, each as wire-breaking,
    /// source-breaking, policy or compatible; exit 1 on a wire-breaking change that is not
    /// acknowledged.
    Compat {
        /// The old version and the new one; with `--against`, the IDL files to compare with
        /// their versions at that revision.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Compare the files with their versions at this git revision (`HEAD~1`, a tag).
        #[arg(long, value_name = "GIT-REF")]
        against: Option<String>,
        /// Match the old version's package OLD as NEW, across a package rename (repeatable).
        #[arg(long = "as-package", value_name = "OLD=NEW", value_parser = package_pair)]
        as_package: Vec<(String, String)>,
        /// A file of acknowledged changes, one `<kind> <subject>` per line as printed under
        /// each wire-breaking change: they are reported but do not fail.
        #[arg(long, value_name = "FILE")]
        acknowledged: Option<PathBuf>,
        /// Fail on source-breaking changes too.
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        includes: Includes,
    },
}

fn package_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((old, new)) if !old.is_empty() && !new.is_empty() => {
            Ok((old.to_owned(), new.to_owned()))
        }
        _ => Err("expected OLD=NEW, like `im.v1=im`".to_owned()),
    }
}

fn builder(includes: &Includes) -> Builder {
    let mut b = Builder::new();
    b.emit_rerun_if_changed(false);
    for dir in &includes.dirs {
        b.include_dir(dir);
    }
    b
}

/// Writes to standard output; a closed pipe or a full disk is a one-line error, not a panic.
pub(crate) fn print(text: &str) -> Result<(), Failure> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Message(format!("cannot write the output: {e}")))
}

/// Why a command failed.
pub(crate) enum Failure {
    /// From the compiler: IDL errors (exit 1) or I/O (exit 2).
    Codegen(Error),
    /// A one-line message; exit 1.
    Message(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Codegen(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(Failure::Codegen(e)) => report(&e),
        Err(Failure::Message(m)) => {
            note!("error: {m}");
            ExitCode::from(1)
        }
    }
}

fn run(command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Generate { idl, out, includes } => {
            let compiled = builder(&includes).check(&idl)?;
            write_all(&out, compiled.rust_files())?;
        }
        Command::Check { idl, includes } => {
            let compiled = builder(&includes).check(&idl)?;
            let s = compiled.schema();
            note!(
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
        Command::New {
            dir,
            idl,
            svrkit_path,
            port,
            includes,
        } => {
            let options = new::Options {
                dir,
                idl,
                includes: includes.dirs.clone(),
                svrkit_path,
                port,
            };
            return new::run(&options, &builder(&includes));
        }
        Command::Doc { idl, out, includes } => {
            let compiled = builder(&includes).check(&idl)?;
            write_all(&out, svrkit_cli::doc::render(compiled.schema()))?;
        }
        Command::Call { call: c } => {
            let target = c.target()?;
            return call::run(&target, &c.addr, c.json.as_deref(), c.timeout);
        }
        Command::Bench {
            call: c,
            concurrency,
            duration,
            rate,
            connections,
        } => {
            let target = c.target()?;
            let load = bench::Load {
                concurrency: concurrency as usize,
                duration,
                rate,
                connections: connections as usize,
                timeout: c.timeout,
            };
            return bench::run(&target, &c.addr, c.json.as_deref(), &load);
        }
        Command::Compat {
            files,
            against,
            as_package,
            acknowledged,
            strict,
            includes,
        } => {
            let args = compat::Args {
                files,
                against,
                packages: as_package,
                acknowledged,
                strict,
            };
            return compat::run(&mut builder(&includes), &includes.dirs, args);
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
        note!("wrote {}", path.display());
    }
    Ok(())
}

fn report(e: &Error) -> ExitCode {
    match e {
        Error::Idl(report) => {
            let rendered = report.render(std::io::stderr().is_terminal());
            note!("{}", rendered.trim_end());
            let n = report.diagnostics().len();
            note!("error: {n} error(s) in the IDL; nothing was generated");
            ExitCode::from(1)
        }
        other => {
            note!("error: {other}");
            ExitCode::from(2)
        }
    }
}
