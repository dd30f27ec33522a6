//! Tests that need a program from outside the Rust toolchain (etcd, PostgreSQL, Chromium,
//! protoc) skip without it, saying so on one line, so that `cargo test --workspace` passes on
//! a machine with only Rust. With `SVRKIT_REQUIRE_EXTERNAL=1` (`.ci/run` sets it) a missing
//! program fails the test instead, so that CI cannot pass by skipping.
//!
//! The line goes to the process's standard error directly: the test harness captures what
//! `eprintln!` prints in a passing test, and a skip that nobody sees is a silent pass.
//!
//! Self-contained (std only), so that the test crates that do not depend on `svrkit-tests`
//! (the compiler's, the examples') include this file by path.

use std::io::Write;
use std::path::PathBuf;

/// The environment variable that turns a skip into a failure.
pub const REQUIRE: &str = "SVRKIT_REQUIRE_EXTERNAL";

/// Something a test needs that `cargo` does not build.
#[derive(Debug, Clone, Copy)]
pub struct Need {
    /// What it is, as the skip line names it.
    pub what: &'static str,
    /// How to get it on Debian (the package `.ci/run` installs), or how to build with it.
    pub install: &'static str,
}

/// An etcd server, for discovery.
pub const ETCD: Need = Need {
    what: "etcd",
    install: "apt-get install etcd-server",
};

/// The etcd client, compiled in only with the `etcd` feature (its build runs protoc).
pub const ETCD_FEATURE: Need = Need {
    what: "the `etcd` feature",
    install: "install protobuf-compiler and etcd-server, then `cargo test --workspace --all-features`",
};

/// A PostgreSQL server, for the messaging backend's second store.
pub const POSTGRES: Need = Need {
    what: "PostgreSQL",
    install: "apt-get install postgresql",
};

/// Patroni, the PostgreSQL high-availability engine on etcd, for the replicated store.
pub const PATRONI: Need = Need {
    what: "Patroni",
    install: "apt-get install patroni",
};

/// A headless browser, for the tests that look at pages as a person would.
pub const CHROMIUM: Need = Need {
    what: "Chromium",
    install: "apt-get install chromium",
};

/// Google's protobuf compiler, the independent implementation the codec is checked against.
pub const PROTOC: Need = Need {
    what: "protoc",
    install: "apt-get install protobuf-compiler, or set PROTOC",
};

/// Python's gRPC library and protoc's Python plugin, for the client of a language svrkit does
/// not generate.
pub const PYTHON_GRPC: Need = Need {
    what: "Python with grpcio and grpcio-reflection, and protoc's Python gRPC plugin",
    install: "apt-get install python3-grpcio python3-protobuf python3-pip protobuf-compiler-grpc; \
              python3 -m pip install --break-system-packages --no-deps grpcio-reflection==1.51.1",
};

/// `grpcurl`, the command-line gRPC client people point at a server first.
pub const GRPCURL: Need = Need {
    what: "grpcurl",
    install: "cargo install --locked grpcurl-rs (its Rust port; Debian does not package grpcurl)",
};

/// Whether a missing program fails the test ([`REQUIRE`] is set to anything but `0`).
pub fn required() -> bool {
    std::env::var_os(REQUIRE).is_some_and(|v| !v.is_empty() && v != "0")
}

impl Need {
    /// Says, on one line that `cargo test` shows, that the running test skipped for want of
    /// this and how to get it; the caller then returns. Under [`REQUIRE`] it panics instead.
    ///
    /// # Panics
    /// When [`REQUIRE`] is set.
    pub fn skip(&self) {
        let test = std::thread::current()
            .name()
            .filter(|name| *name != "main")
            .unwrap_or("a test")
            .to_owned();
        let need = format!("needs {} ({})", self.what, self.install);
        assert!(
            !required(),
            "{test} {need}, and {REQUIRE} is set: it may not skip"
        );
        let _ = writeln!(std::io::stderr(), "skipped {test}: {need}");
    }

    /// `found`, after saying that the test skipped (see [`skip`](Need::skip)) when it is
    /// `None`.
    ///
    /// # Panics
    /// When `found` is `None` and [`REQUIRE`] is set.
    pub fn or_skip<T>(&self, found: Option<T>) -> Option<T> {
        if found.is_none() {
            self.skip();
        }
        found
    }
}

/// The program `name` on the `PATH`, or in `/usr/bin` (where Debian's packages put theirs), or
/// in cargo's `bin` (where `cargo install` puts its own).
pub fn program(name: &str) -> Option<PathBuf> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|home| home.join("bin"));
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .chain(cargo_bin)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// The first of `names` that runs (`--version` succeeds): for programs installed under
/// several names, such as Chromium.
pub fn runnable(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find(|name| {
            std::process::Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|name| (*name).to_owned())
}
