//! The stable facade that generated code is written against.
//!
//! Code produced by `svrkit-codegen` names only items under `::svrkit_runtime::codegen`, never
//! the runtime's internals, so the runtime can change its insides without breaking code that
//! was generated earlier. Nothing here is meant to be called by hand.

#[doc(hidden)]
pub use bytes::Bytes;
#[doc(hidden)]
pub use faststr::FastStr;
#[doc(hidden)]
pub use std::collections::BTreeMap;

#[doc(hidden)]
pub use crate::codec::{DecodeError, Decoder, Enumeration, Message, UnknownFields, field, kind};
