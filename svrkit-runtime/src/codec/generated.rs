//! The stable facade that generated structs and enums are written against.
//!
//! Message and enum code produced by `svrkit-codegen` names only items under
//! `::svrkit_runtime::codec::generated`, so it depends on the codec alone: the runtime's own
//! generated files (the frame header) sit below everything else, and the codec's insides can
//! change without breaking code generated earlier. Service stubs use the wider
//! [`crate::codegen`] facade. Nothing here is meant to be called by hand.

#[doc(hidden)]
pub use bytes::Bytes;
#[doc(hidden)]
pub use faststr::FastStr;
#[doc(hidden)]
pub use std::collections::BTreeMap;

#[doc(hidden)]
pub use super::{DecodeError, Decoder, Enumeration, Message, UnknownFields, field, kind};
