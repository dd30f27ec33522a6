//! The traits generated types implement.

use bytes::Bytes;

use super::decoder::Decoder;
use super::error::DecodeError;
use super::wire;

/// Room to leave after a message's exact length in a buffer sized for it.
///
/// The encoder copies short strings and long varints in fixed-size chunks and cuts back
/// (faster than a copy of a length known only at run time), and reserves a nested message's
/// length prefix before it knows the length: each can reach a few bytes past the end for a
/// moment. It does so only where the buffer has the room; this much spare lets it do so up to
/// the last field, and never makes the buffer grow (a reallocation and copy of everything).
/// 32 rather than the 16 the copies need: with 8 or 16 bytes of room, `encode_to_vec` of the
/// codec bench's 199-byte request measured 15-20% slower than with none or 32, in repeated
/// side-by-side runs, for a reason not found (both sizes are in the allocator's thread cache).
pub const ENCODE_ROOM: usize = 32;

/// A struct generated from an IDL `<struct>`: it knows how to encode and decode itself.
///
/// Generated code implements the four required items; everything else is provided. Encoding
/// is deterministic: fields go out in id order, maps in key order, unknown fields last, and a
/// singular field at its default is left out, so equal values give equal bytes.
pub trait Message: Default + Sized {
    /// The struct's full IDL name (`im.message.Message`), used in decode errors.
    const NAME: &'static str;

    /// Appends the encoded fields to `buf` (no length prefix).
    fn encode_raw(&self, buf: &mut Vec<u8>);

    /// The number of bytes [`encode_raw`](Message::encode_raw) writes.
    fn encoded_len(&self) -> usize;

    /// Reads the value that follows `key` into the field it belongs to, or keeps it as an
    /// unknown field.
    ///
    /// # Errors
    /// When the value is malformed or a known field arrives with the wrong wire type.
    fn merge_field(&mut self, key: u32, d: &mut Decoder<'_>) -> Result<(), DecodeError>;

    /// The IDL name of the field with this id, if the struct declares one.
    fn field_name(id: u32) -> Option<&'static str>;

    /// Reads fields until the decoder is empty, merging them into `self`.
    ///
    /// # Errors
    /// When the input is malformed; the error names the struct and field.
    #[inline]
    fn merge(&mut self, d: &mut Decoder<'_>) -> Result<(), DecodeError> {
        while !d.is_empty() {
            let key = d.read_key().map_err(|e| e.push(Self::NAME, "<key>"))?;
            if let Err(e) = self.merge_field(key, d) {
                let field = Self::field_name(wire::key_field_id(key)).unwrap_or("<unknown field>");
                return Err(e.push(Self::NAME, field));
            }
        }
        Ok(())
    }

    /// Appends the encoded message to `buf`.
    #[inline]
    fn encode(&self, buf: &mut Vec<u8>) {
        self.encode_raw(buf);
    }

    /// Encodes into a new vector, sized by [`encoded_len`](Message::encoded_len) plus
    /// [`ENCODE_ROOM`] bytes, so that it never grows.
    fn encode_to_vec(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.encoded_len() + ENCODE_ROOM);
        self.encode_raw(&mut buf);
        buf
    }

    /// Encodes into new shared bytes.
    fn encode_to_bytes(&self) -> Bytes {
        Bytes::from(self.encode_to_vec())
    }

    /// Decodes a message from a slice; `bytes` fields are copied out of it.
    ///
    /// # Errors
    /// When the input is malformed; the error names the struct and field.
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut value = Self::default();
        value.merge(&mut Decoder::new(buf))?;
        Ok(value)
    }

    /// Decodes a message from shared bytes; `bytes` fields point into `buf` without copying.
    ///
    /// # Errors
    /// When the input is malformed; the error names the struct and field.
    fn decode_bytes(buf: &Bytes) -> Result<Self, DecodeError> {
        let mut value = Self::default();
        value.merge(&mut Decoder::from_bytes(buf))?;
        Ok(value)
    }
}

/// An enum generated from an IDL `<enum>`: an open set of `i32` values, some of them named.
///
/// Open means a number the schema does not name is still a value: it decodes, compares and
/// encodes back unchanged, so a newer peer's new enum values survive an older relay.
pub trait Enumeration: Copy + Default + Eq {
    /// The value for this number (named or not).
    fn from_i32(value: i32) -> Self;
    /// The number of this value.
    fn to_i32(self) -> i32;
    /// The IDL name of this value, if the schema names it.
    fn name(self) -> Option<&'static str>;
}
