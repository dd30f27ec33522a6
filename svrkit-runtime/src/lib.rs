//! The svrkit runtime: what code generated from an svrkit XML IDL runs on.
//!
//! - [`codec`]: the forward-compatible TLV encoding of generated structs and enums;
//! - [`frame`]: how requests and responses travel over a connection (`docs/protocol.md`);
//! - [`server`]: hosts any number of generated services on one listener;
//! - [`client`]: channels to replicated services, and the per-call path that monitoring and
//!   overload policies hook into;
//! - [`context`]: deadline, trace and cancellation, passed along a call chain.
//!
//! Generated code is brought into a crate with [`include_idl!`] (after a build script ran
//! `svrkit_codegen::compile`) or expanded in place by `svrkit_macros::idl!`. Either way it talks
//! to the runtime only through its facades: structs and enums through `codec::generated`,
//! service stubs through [`codegen`].
//!
//! The modules form layers, each using only those below it (`docs/runtime.md`, "Modules in
//! layers"; checked by `tests/layers.rs`): the codec and frames at the bottom, then the
//! context, the counters and the policies, then the server and the client (which never use
//! each other), then monitoring, discovery and configuration on top.
//!
//! ```
//! use svrkit_runtime::codec::{Decoder, wire};
//!
//! // Field 1 as a varint holding 300: the key byte, then 300 in base-128.
//! let mut buf = Vec::new();
//! wire::put_varint(&mut buf, u64::from(wire::key(1, wire::WireType::Varint)));
//! wire::put_varint(&mut buf, 300);
//! assert_eq!(buf, [0x08, 0xac, 0x02]);
//!
//! let mut d = Decoder::new(&buf);
//! assert_eq!(d.read_key()?, 0x08);
//! assert_eq!(d.read_varint()?, 300);
//! assert!(d.is_empty());
//! # Ok::<(), svrkit_runtime::codec::DecodeError>(())
//! ```

// Generated code names `::svrkit_runtime`; this lets the runtime use its own generated code
// (the frame header).
extern crate self as svrkit_runtime;

pub mod client;
mod clock;
pub mod codec;
pub mod codegen;
pub mod config;
pub mod context;
pub mod discovery;
pub mod frame;
#[cfg(feature = "grpc")]
mod grpc_wire;
mod local;
pub mod metrics;
pub mod monitor;
pub mod policy;
mod random;
pub mod server;
pub mod service;
mod socket;
pub mod status;
pub mod sync;
#[cfg(feature = "tls")]
pub mod tls;
pub mod trace;

pub use client::{CallOptions, Channel, ChannelOptions};
pub use config::{Config, ConfigError, ConfigErrorKind};
pub use context::Context;
pub use server::{Limits, Server, Trust};
pub use status::{Code, Status};

/// The type of `bytes` fields.
pub use bytes::Bytes;
/// The type of `string` fields: an immutable UTF-8 string that is cheap to clone, stored
/// inline up to 30 bytes and otherwise shared with the buffer it was decoded from.
///
/// Build one with `"literal".into()`, `String::into()` or `FastStr::new(&str)`; read it as a
/// `&str` through `Deref` or [`FastStr::as_str`].
pub use faststr::FastStr;

/// Includes the code a build script generated for one IDL package.
///
/// `include_idl!("im.message")` expands to
/// `include!(concat!(env!("OUT_DIR"), "/svrkit/im.message.rs"))` (the build API writes to
/// its own subdirectory, so prost-build or tonic-build output of the same package name can
/// sit beside it). Mount each package at the module
/// path its name spells (`im::message`), because generated code reaches types of other
/// packages through relative `super::` paths, as prost does.
///
/// ```ignore
/// pub mod im {
///     pub mod common { svrkit_runtime::include_idl!("im.common"); }
///     pub mod message { svrkit_runtime::include_idl!("im.message"); }
/// }
/// ```
#[macro_export]
macro_rules! include_idl {
    ($package:literal) => {
        include!(concat!(
            env!("OUT_DIR"),
            concat!("/svrkit/", $package, ".rs")
        ));
    };
}
