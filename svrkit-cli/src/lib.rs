//! The library half of the `svrkit` command: what its subcommands need beyond the compiler.
//!
//! - [`dynamic`]: the codec driven by a checked schema instead of generated code (JSON in,
//!   the generated code's bytes out, and back), which lets `svrkit call` and `svrkit bench`
//!   talk to any service with nothing but its IDL;
//! - [`doc`]: the HTML and Markdown reference pages of `svrkit doc`.
//!
//! The compiler itself is `svrkit_codegen`; this crate adds the runtime (for calls) and the
//! command line on top of it, so that build scripts and the `idl!` macro never compile either.

pub mod doc;
pub mod dynamic;
