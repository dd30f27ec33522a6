//! Fields a schema does not declare, kept so that they survive a decode/encode round trip.

use std::fmt;

use super::decoder::Decoder;
use super::wire::{self, WireType};

/// The fields of a message that its schema does not know, in the order they arrived.
///
/// This is what makes svrkit forward compatible: a service built from an older IDL decodes a
/// newer peer's message, keeps the new fields here as raw key/value bytes, and writes them back
/// after its own fields when it encodes the message again. Fields added with ids above the
/// old schema's (the usual way a schema grows) therefore pass through byte for byte.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct UnknownFields {
    /// Concatenated raw fields: each a key varint followed by its value as it was read.
    raw: Vec<u8>,
}

/// One unknown field, borrowed from [`UnknownFields`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownField<'a> {
    /// The field id.
    pub id: u32,
    /// How the value is laid out.
    pub wire_type: WireType,
    /// The value's bytes as they were on the wire (with the length prefix for
    /// length-delimited values).
    pub value: &'a [u8],
}

impl UnknownFields {
    /// Whether no unknown field was kept.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Forgets every unknown field.
    pub fn clear(&mut self) {
        self.raw.clear();
    }

    /// The raw bytes of all unknown fields, keys included, in arrival order.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// Iterates over the unknown fields in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = UnknownField<'_>> + '_ {
        let mut decoder = Decoder::new(&self.raw);
        std::iter::from_fn(move || {
            if decoder.is_empty() {
                return None;
            }
            // `raw` only ever holds fields that were read successfully, so these cannot fail;
            // stopping quietly keeps this total anyway.
            let key = decoder.read_key().ok()?;
            let before = decoder.remaining();
            let rest = self.raw.len() - before;
            decoder.skip_value(key).ok()?;
            let value = &self.raw[rest..rest + before - decoder.remaining()];
            Some(UnknownField {
                id: wire::key_field_id(key),
                wire_type: WireType::from_u32(key & 7)?,
                value,
            })
        })
    }

    /// Appends a field from its key and raw value bytes.
    pub(crate) fn push(&mut self, key: u32, value: &[u8]) {
        wire::put_varint(&mut self.raw, u64::from(key));
        self.raw.extend_from_slice(value);
    }

    /// Bytes these fields take when encoded.
    #[inline]
    pub fn encoded_len(&self) -> usize {
        self.raw.len()
    }

    /// Writes the fields back exactly as they were read.
    #[inline]
    pub fn encode(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.raw);
    }
}

impl fmt::Debug for UnknownFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|field| (field.id, field.value)))
            .finish()
    }
}
