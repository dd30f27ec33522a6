//! The svrkit wire codec: protobuf-compatible TLV with forward compatibility built in.
//!
//! A message is a sequence of fields, each `varint(field_id << 3 | wire_type)` followed by the
//! value ([`wire`]). Generated structs implement [`Message`] by calling the per-field helpers
//! in [`field`] with the [`kind`] of each field. Decoding goes through a [`Decoder`], a cursor
//! that checks every length against the input left before it slices or allocates, limits
//! nesting to [`MAX_DEPTH`], and can hand out `bytes` fields as zero-copy slices of a
//! [`bytes::Bytes`] input. Fields a schema does not declare land in [`UnknownFields`] and are
//! written back on encode.
//!
//! The byte layout is specified in `docs/wire-format.md` at the repository root.

mod decoder;
mod encoded;
mod error;
pub mod field;
#[doc(hidden)]
pub mod generated;
pub mod kind;
mod message;
mod unknown;
pub mod wire;

pub use decoder::{DECODE_FACTOR, DECODE_SLACK, Decoder, MAX_DEPTH};
pub use encoded::Encoded;
pub use error::{DecodeError, DecodeErrorKind};
pub use message::{ENCODE_ROOM, Enumeration, Message};
pub use unknown::{UnknownField, UnknownFields};
pub use wire::WireType;
