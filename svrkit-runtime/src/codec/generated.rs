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

/// Wire types as the plain numbers generated code passes to [`key`]: `key(3, LEN)` is field
/// 3, length-delimited.
#[doc(hidden)]
pub const VARINT: u32 = 0;
#[doc(hidden)]
pub const I64: u32 = 1;
#[doc(hidden)]
pub const LEN: u32 = 2;
#[doc(hidden)]
pub const I32: u32 = 5;

/// A field's key, `(id << 3) | wire_type`. Generated code calls it with constants, which the
/// compiler folds.
#[doc(hidden)]
#[inline(always)]
pub const fn key(id: u32, wire_type: u32) -> u32 {
    (id << 3) | wire_type
}

/// How many bytes a field's key takes as a varint.
#[doc(hidden)]
#[inline(always)]
pub const fn key_len(id: u32) -> usize {
    let bits = 64 - ((id as u64) << 3 | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}
