//! Field-level helpers that generated `encode_raw`, `encoded_len` and `merge_field` call.
//!
//! Each takes the field's key (or key length) as a constant and the field's [`Kind`], so the
//! generated code per field is one call and the work is here, written once.

use std::collections::BTreeMap;

use super::decoder::Decoder;
use super::error::DecodeError;
use super::kind::{self, Kind, put_len_prefixed};
use super::message::Message;
use super::wire::{self, WireType};

type Result<T> = std::result::Result<T, DecodeError>;

/// Reads a singular field's value: replaces a scalar, merges into a struct.
#[inline]
pub fn merge<K: Kind>(value: &mut K::Value, d: &mut Decoder<'_>) -> Result<()> {
    K::merge(value, d)
}

/// Whether a singular field is at its type's default and so is left off the wire.
#[inline]
pub fn is_default<K: Kind>(value: &K::Value) -> bool {
    K::is_default(value)
}

/// Writes a singular field unless it is at its type's default.
#[inline]
pub fn encode_singular<K: Kind>(key: u32, value: &K::Value, buf: &mut Vec<u8>) {
    K::encode_singular(key, value, buf);
}

/// Bytes a singular field takes (nothing at its type's default).
#[inline]
pub fn encoded_len_singular<K: Kind>(key_len: usize, value: &K::Value) -> usize {
    K::encoded_len_singular(key_len, value)
}

/// Writes one field: key, then value.
#[inline]
pub fn encode<K: Kind>(key: u32, value: &K::Value, buf: &mut Vec<u8>) {
    wire::put_varint(buf, u64::from(key));
    K::encode(value, buf);
}

/// Bytes one field takes, given its key's length.
#[inline]
pub fn encoded_len<K: Kind>(key_len: usize, value: &K::Value) -> usize {
    key_len + K::encoded_len(value)
}

/// Writes a singular struct field unless the struct encodes to nothing (its default).
#[inline]
pub fn encode_message<M: Message>(key: u32, value: &M, buf: &mut Vec<u8>) {
    let start = buf.len();
    wire::put_varint(buf, u64::from(key));
    if put_len_prefixed(buf, |buf| value.encode_raw(buf)) == 0 {
        buf.truncate(start);
    }
}

/// Bytes a singular struct field takes (nothing when the struct is at its default).
#[inline]
pub fn encoded_len_message<M: Message>(key_len: usize, value: &M) -> usize {
    match value.encoded_len() {
        0 => 0,
        len => key_len + wire::varint_len(len as u64) + len,
    }
}

/// Writes each element of a list as its own field (strings, bytes, structs).
#[inline]
pub fn encode_repeated<K: Kind>(key: u32, values: &[K::Value], buf: &mut Vec<u8>) {
    for value in values {
        encode::<K>(key, value, buf);
    }
}

/// Writes a list of structs, each as its own length-delimited field.
///
/// Each element's length prefix is reserved at the width the previous one needed, so a list
/// of similar-sized structs is written without moving any payload.
#[inline]
pub fn encode_repeated_messages<M: Message>(key: u32, values: &[M], buf: &mut Vec<u8>) {
    let mut width = 1;
    for value in values {
        wire::put_varint(buf, u64::from(key));
        let len = kind::put_len_prefixed_reserving(buf, width, |buf| value.encode_raw(buf));
        width = wire::varint_len(len as u64);
    }
}

/// Bytes a list of unpacked elements takes.
#[inline]
pub fn encoded_len_repeated<K: Kind>(key_len: usize, values: &[K::Value]) -> usize {
    key_len * values.len() + values.iter().map(K::encoded_len).sum::<usize>()
}

/// Payload bytes of a packed list.
#[inline]
fn packed_payload_len<K: Kind>(values: &[K::Value]) -> usize {
    match K::FIXED_WIDTH {
        Some(width) => width * values.len(),
        None => values.iter().map(K::encoded_len).sum(),
    }
}

/// Writes a list of numbers, bools or enums as one packed field (nothing when empty).
#[inline]
pub fn encode_packed<K: Kind>(key: u32, values: &[K::Value], buf: &mut Vec<u8>) {
    if values.is_empty() {
        return;
    }
    wire::put_varint(buf, u64::from(key));
    wire::put_varint(buf, packed_payload_len::<K>(values) as u64);
    for value in values {
        K::encode(value, buf);
    }
}

/// Bytes a packed list takes.
#[inline]
pub fn encoded_len_packed<K: Kind>(key_len: usize, values: &[K::Value]) -> usize {
    if values.is_empty() {
        return 0;
    }
    let len = packed_payload_len::<K>(values);
    key_len + wire::varint_len(len as u64) + len
}

/// Reads a packed list and appends its elements.
#[inline]
pub fn merge_packed<K: Kind>(values: &mut Vec<K::Value>, d: &mut Decoder<'_>) -> Result<()> {
    let mut packed = d.packed()?;
    if let Some(width) = K::FIXED_WIDTH {
        if packed.remaining() % width != 0 {
            return Err(kind::invalid_packed_length());
        }
        // Exact, and bounded by the input already checked.
        values.reserve(packed.remaining() / width);
    }
    let capacity = values.capacity();
    let result = (|| {
        while !packed.is_empty() {
            values.push(K::decode(&mut packed)?);
        }
        Ok(())
    })();
    d.note_heap((values.capacity() - capacity) * std::mem::size_of::<K::Value>());
    result
}

/// Reads one element of a list and appends it.
#[inline]
pub fn merge_repeated<K: Kind>(values: &mut Vec<K::Value>, d: &mut Decoder<'_>) -> Result<()>
where
    K::Value: Default,
{
    d.charge(std::mem::size_of::<K::Value>())?;
    // Decode into the slot it will occupy, so the value is not moved again after decoding.
    let capacity = values.capacity();
    values.push(K::Value::default());
    if values.capacity() != capacity {
        d.note_heap((values.capacity() - capacity) * std::mem::size_of::<K::Value>());
    }
    let last = values.len() - 1;
    let result = K::merge(&mut values[last], d);
    if result.is_err() {
        values.pop();
    }
    result
}

/// Reads a value into an optional field, merging into a struct that is already there.
#[inline]
pub fn merge_optional<K: Kind>(value: &mut Option<K::Value>, d: &mut Decoder<'_>) -> Result<()>
where
    K::Value: Default,
{
    K::merge(value.get_or_insert_with(Default::default), d)
}

/// Reads a struct into an optional boxed field (boxed because the struct contains itself).
#[inline]
pub fn merge_optional_boxed<M: Message>(
    value: &mut Option<Box<M>>,
    d: &mut Decoder<'_>,
) -> Result<()> {
    kind::Message::<M>::merge(value.get_or_insert_with(Default::default), d)
}

const MAP_KEY: u32 = wire::key(1, WireType::Varint) & !7;
const MAP_VALUE: u32 = wire::key(2, WireType::Varint) & !7;

/// Writes a map as one entry field per pair, in key order, each entry a nested message whose
/// field 1 is the key and field 2 the value (each left out at its default, as protobuf does).
#[inline]
pub fn encode_map<K: Kind, V: Kind>(
    key: u32,
    map: &BTreeMap<K::Value, V::Value>,
    buf: &mut Vec<u8>,
) {
    for (k, v) in map {
        wire::put_varint(buf, u64::from(key));
        put_len_prefixed(buf, |buf| {
            if !K::is_default(k) {
                encode::<K>(MAP_KEY | K::WIRE_TYPE as u32, k, buf);
            }
            if !V::is_default(v) {
                encode::<V>(MAP_VALUE | V::WIRE_TYPE as u32, v, buf);
            }
        });
    }
}

/// Bytes a map takes.
#[inline]
pub fn encoded_len_map<K: Kind, V: Kind>(
    key_len: usize,
    map: &BTreeMap<K::Value, V::Value>,
) -> usize {
    map.iter()
        .map(|(k, v)| {
            let mut entry = 0;
            if !K::is_default(k) {
                entry += 1 + K::encoded_len(k);
            }
            if !V::is_default(v) {
                entry += 1 + V::encoded_len(v);
            }
            key_len + wire::varint_len(entry as u64) + entry
        })
        .sum()
}

/// Reads one map entry (the field `key` introduced) and inserts it, replacing an earlier
/// value for the same key.
///
/// An entry whose key or value has a wire type that does not fit the map's types (a peer
/// whose schema changed them) is kept whole in `unknown` instead, so that a relay passes it
/// on: reading it as the default key or value would overwrite a real entry with data that
/// was never sent.
pub fn merge_map_entry<K: Kind, V: Kind>(
    key: u32,
    map: &mut BTreeMap<K::Value, V::Value>,
    d: &mut Decoder<'_>,
    unknown: &mut super::UnknownFields,
) -> Result<()>
where
    K::Value: Default + Ord,
    V::Value: Default,
{
    d.charge(std::mem::size_of::<(K::Value, V::Value)>())?;
    d.note_heap(2 * std::mem::size_of::<(K::Value, V::Value)>());
    let mark = d.mark();
    // An entry is a nested message, so it counts against the depth limit like one.
    let entry = d.nested(|entry| {
        let mut k = K::Value::default();
        let mut v = V::Value::default();
        while !entry.is_empty() {
            let field_key = entry.read_key()?;
            if field_key == MAP_KEY | K::WIRE_TYPE as u32 {
                K::merge(&mut k, entry)?;
            } else if field_key == MAP_VALUE | V::WIRE_TYPE as u32 {
                V::merge(&mut v, entry)?;
            } else if field_key & !7 == MAP_KEY || field_key & !7 == MAP_VALUE {
                return Ok(None);
            } else {
                // Other entry fields have nowhere to live; protobuf drops them too.
                entry.skip_value(field_key)?;
            }
        }
        Ok(Some((k, v)))
    })?;
    match entry {
        Some((k, v)) => {
            map.insert(k, v);
        }
        None => unknown.push(key, d.read_since(mark)),
    }
    Ok(())
}

/// Handles a key that matched no declared field, keeping it in `unknown`: a field the schema
/// does not declare, or a declared one whose wire type does not fit (a peer whose schema
/// changed its type), as protobuf C++ does. Either way a relay passes it on unchanged.
#[inline]
pub fn merge_unknown<M: Message>(
    key: u32,
    d: &mut Decoder<'_>,
    unknown: &mut super::UnknownFields,
) -> Result<()> {
    d.skip_unknown(key, unknown)
}
