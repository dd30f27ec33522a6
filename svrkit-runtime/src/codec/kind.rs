//! One marker type per IDL type, saying how its values are written and read.
//!
//! Generated code names the kind of each field (`kind::Sint64`, `kind::Message<Quote>`) and
//! the generic helpers in [`field`](super::field) do the rest; monomorphisation turns each call
//! into straight-line code for that type.

use std::marker::PhantomData;

use super::decoder::Decoder;
use super::error::{DecodeError, DecodeErrorKind};
use super::message::{Enumeration, Message as MessageTrait};
use super::wire::{self, WireType};

type Result<T> = std::result::Result<T, DecodeError>;

/// How the values of one IDL type are laid out after a field key.
pub trait Kind {
    /// The Rust type of a value.
    type Value;
    /// The wire type of a single value.
    const WIRE_TYPE: WireType;
    /// Whether a list of these may be packed into one length-delimited field.
    const PACKABLE: bool;
    /// The width of each value if fixed (lets packed decoding reserve exactly).
    const FIXED_WIDTH: Option<usize> = None;

    /// Appends the value (with its length prefix for length-delimited types).
    fn encode(value: &Self::Value, buf: &mut Vec<u8>);
    /// Bytes that [`encode`](Kind::encode) writes.
    fn encoded_len(value: &Self::Value) -> usize;
    /// Reads one value.
    fn decode(d: &mut Decoder<'_>) -> Result<Self::Value>;
    /// Reads one value into `value`: replaces scalars, merges structs (protobuf semantics).
    #[inline]
    fn merge(value: &mut Self::Value, d: &mut Decoder<'_>) -> Result<()> {
        *value = Self::decode(d)?;
        Ok(())
    }
    /// Whether the value is this type's default, which singular fields and map entries omit.
    fn is_default(value: &Self::Value) -> bool;

    /// Writes a singular field, key then value, unless the value is the default.
    ///
    /// Strings and bytes override it to look at the value once: a `FastStr`'s length is a
    /// match on its representation, and asking for it three times (empty? length? bytes?)
    /// showed in profiles.
    #[inline]
    fn encode_singular(key: u32, value: &Self::Value, buf: &mut Vec<u8>) {
        if !Self::is_default(value) {
            wire::put_varint(buf, u64::from(key));
            Self::encode(value, buf);
        }
    }

    /// Bytes [`encode_singular`](Kind::encode_singular) writes.
    #[inline]
    fn encoded_len_singular(key_len: usize, value: &Self::Value) -> usize {
        if Self::is_default(value) {
            0
        } else {
            key_len + Self::encoded_len(value)
        }
    }
}

macro_rules! varint_kind {
    ($(#[$doc:meta])* $name:ident, $ty:ty, |$v:ident| $to_wire:expr, |$w:ident| $from_wire:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub enum $name {}

        impl Kind for $name {
            type Value = $ty;
            const WIRE_TYPE: WireType = WireType::Varint;
            const PACKABLE: bool = true;

            #[inline]
            fn encode(value: &$ty, buf: &mut Vec<u8>) {
                let $v = *value;
                wire::put_varint(buf, $to_wire);
            }
            #[inline]
            fn encoded_len(value: &$ty) -> usize {
                let $v = *value;
                wire::varint_len($to_wire)
            }
            #[inline]
            fn decode(d: &mut Decoder<'_>) -> Result<$ty> {
                let $w = d.read_varint()?;
                Ok($from_wire)
            }
            #[inline]
            fn is_default(value: &$ty) -> bool {
                *value == <$ty>::default()
            }
        }
    };
}

// Negative int32 values are sign-extended to ten bytes, as protobuf does, so that int32 and
// int64 stay wire compatible; decoding truncates as protobuf does.
varint_kind!(
    /// `int32`: a varint, negative values sign-extended to 64 bits.
    Int32, i32, |v| v as i64 as u64, |w| w as i32
);
varint_kind!(
    /// `int64`: a varint.
    Int64, i64, |v| v as u64, |w| w as i64
);
varint_kind!(
    /// `uint32`: a varint.
    Uint32, u32, |v| u64::from(v), |w| w as u32
);
varint_kind!(
    /// `uint64`: a varint.
    Uint64, u64, |v| v, |w| w
);
varint_kind!(
    /// `sint32`: a zigzag varint.
    Sint32, i32, |v| u64::from(wire::zigzag32(v)), |w| wire::unzigzag32(w as u32)
);
varint_kind!(
    /// `sint64`: a zigzag varint.
    Sint64, i64, |v| wire::zigzag64(v), |w| wire::unzigzag64(w)
);
varint_kind!(
    /// `bool`: a varint 0 or 1; any non-zero value reads as true.
    Bool, bool, |v| u64::from(v), |w| w != 0
);

macro_rules! fixed_kind {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $wt:ident, $width:literal, $read:ident,
     |$v:ident| $to_bits:expr, |$w:ident| $from_bits:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub enum $name {}

        impl Kind for $name {
            type Value = $ty;
            const WIRE_TYPE: WireType = WireType::$wt;
            const PACKABLE: bool = true;
            const FIXED_WIDTH: Option<usize> = Some($width);

            #[inline]
            fn encode(value: &$ty, buf: &mut Vec<u8>) {
                let $v = *value;
                buf.extend_from_slice(&$to_bits.to_le_bytes());
            }
            #[inline]
            fn encoded_len(_: &$ty) -> usize {
                $width
            }
            #[inline]
            fn decode(d: &mut Decoder<'_>) -> Result<$ty> {
                let $w = d.$read()?;
                Ok($from_bits)
            }
            #[inline]
            fn is_default(value: &$ty) -> bool {
                // The bits, not `==`: -0.0 equals 0.0 but is not the default, and Google's
                // protobuf writes it (so it survives a round trip); NaN is written too.
                let $v = *value;
                $to_bits == 0
            }
        }
    };
}

fixed_kind!(
    /// `fixed32`: four little-endian bytes.
    Fixed32, u32, ThirtyTwoBit, 4, read_fixed32, |v| v, |w| w
);
fixed_kind!(
    /// `fixed64`: eight little-endian bytes.
    Fixed64, u64, SixtyFourBit, 8, read_fixed64, |v| v, |w| w
);
fixed_kind!(
    /// `sfixed32`: four little-endian bytes, two's complement.
    Sfixed32, i32, ThirtyTwoBit, 4, read_fixed32, |v| v as u32, |w| w as i32
);
fixed_kind!(
    /// `sfixed64`: eight little-endian bytes, two's complement.
    Sfixed64, i64, SixtyFourBit, 8, read_fixed64, |v| v as u64, |w| w as i64
);
fixed_kind!(
    /// `float`: IEEE 754 single precision, little-endian.
    Float, f32, ThirtyTwoBit, 4, read_fixed32, |v| v.to_bits(), |w| f32::from_bits(w)
);
fixed_kind!(
    /// `double`: IEEE 754 double precision, little-endian.
    Double, f64, SixtyFourBit, 8, read_fixed64, |v| v.to_bits(), |w| f64::from_bits(w)
);

/// Length prefix plus payload.
#[inline]
fn len_delimited_len(len: usize) -> usize {
    wire::varint_len(len as u64) + len
}

/// Appends `bytes` with its length prefix.
///
/// Up to 16 bytes (user names, ids, short keys: most strings in a schema) are copied as two
/// overlapping fixed-size chunks the compiler turns into a few moves; a copy of a length known
/// only at run time would be a call to `memcpy`, which profiles showed for every string. Only
/// where the buffer has 16 bytes to spare: an exactly sized one must not grow for it.
#[inline(always)]
fn put_delimited(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len();
    wire::put_varint(buf, len as u64);
    if (4..=16).contains(&len) && buf.capacity() - buf.len() >= 16 {
        let at = buf.len();
        buf.extend_from_slice(&[0u8; 16]);
        let (head, tail) = if len >= 8 { (8, 8) } else { (4, 4) };
        let dst = &mut buf[at..at + 16];
        dst[..head].copy_from_slice(&bytes[..head]);
        dst[len - tail..len].copy_from_slice(&bytes[len - tail..]);
        buf.truncate(at + len);
    } else {
        buf.extend_from_slice(bytes);
    }
}

/// `string`: length-prefixed UTF-8, checked on decode, held as a [`FastStr`](faststr::FastStr).
#[derive(Debug)]
pub enum String {}

impl Kind for String {
    type Value = faststr::FastStr;
    const WIRE_TYPE: WireType = WireType::LengthDelimited;
    const PACKABLE: bool = false;

    #[inline(always)]
    fn encode(value: &faststr::FastStr, buf: &mut Vec<u8>) {
        put_delimited(buf, value.as_bytes());
    }
    #[inline]
    fn encoded_len(value: &faststr::FastStr) -> usize {
        len_delimited_len(value.len())
    }
    #[inline(always)]
    fn encode_singular(key: u32, value: &faststr::FastStr, buf: &mut Vec<u8>) {
        let bytes = value.as_bytes();
        if !bytes.is_empty() {
            wire::put_varint(buf, u64::from(key));
            put_delimited(buf, bytes);
        }
    }
    #[inline]
    fn encoded_len_singular(key_len: usize, value: &faststr::FastStr) -> usize {
        match value.len() {
            0 => 0,
            len => key_len + len_delimited_len(len),
        }
    }
    #[inline(always)]
    fn decode(d: &mut Decoder<'_>) -> Result<faststr::FastStr> {
        d.read_string()
    }
    #[inline(always)]
    fn merge(value: &mut faststr::FastStr, d: &mut Decoder<'_>) -> Result<()> {
        d.read_string_into(value)
    }
    #[inline]
    fn is_default(value: &faststr::FastStr) -> bool {
        value.is_empty()
    }
}

/// `bytes`: length-prefixed raw bytes, shared with the input buffer when it is a `Bytes`.
#[derive(Debug)]
pub enum Bytes {}

impl Kind for Bytes {
    type Value = bytes::Bytes;
    const WIRE_TYPE: WireType = WireType::LengthDelimited;
    const PACKABLE: bool = false;

    #[inline]
    fn encode(value: &bytes::Bytes, buf: &mut Vec<u8>) {
        put_delimited(buf, value);
    }
    #[inline]
    fn encoded_len(value: &bytes::Bytes) -> usize {
        len_delimited_len(value.len())
    }
    #[inline]
    fn decode(d: &mut Decoder<'_>) -> Result<bytes::Bytes> {
        d.read_bytes()
    }
    #[inline]
    fn is_default(value: &bytes::Bytes) -> bool {
        value.is_empty()
    }
}

/// An IDL enum: an `int32` varint; numbers the schema does not name are kept as they are.
#[derive(Debug)]
pub struct Enum<E>(PhantomData<E>);

impl<E: Enumeration> Kind for Enum<E> {
    type Value = E;
    const WIRE_TYPE: WireType = WireType::Varint;
    const PACKABLE: bool = true;

    #[inline]
    fn encode(value: &E, buf: &mut Vec<u8>) {
        Int32::encode(&value.to_i32(), buf);
    }
    #[inline]
    fn encoded_len(value: &E) -> usize {
        Int32::encoded_len(&value.to_i32())
    }
    #[inline]
    fn decode(d: &mut Decoder<'_>) -> Result<E> {
        Ok(E::from_i32(Int32::decode(d)?))
    }
    #[inline]
    fn is_default(value: &E) -> bool {
        value.to_i32() == 0
    }
}

/// An IDL struct: a length-prefixed nested message.
#[derive(Debug)]
pub struct Message<M>(PhantomData<M>);

impl<M: MessageTrait> Kind for Message<M> {
    type Value = M;
    const WIRE_TYPE: WireType = WireType::LengthDelimited;
    const PACKABLE: bool = false;

    #[inline]
    fn encode(value: &M, buf: &mut Vec<u8>) {
        put_len_prefixed(buf, |buf| value.encode_raw(buf));
    }
    #[inline]
    fn encoded_len(value: &M) -> usize {
        len_delimited_len(value.encoded_len())
    }
    #[inline]
    fn decode(d: &mut Decoder<'_>) -> Result<M> {
        let mut value = M::default();
        Self::merge(&mut value, d)?;
        Ok(value)
    }
    #[inline]
    fn merge(value: &mut M, d: &mut Decoder<'_>) -> Result<()> {
        d.nested(|inner| value.merge(inner))
    }
    #[inline]
    fn is_default(value: &M) -> bool {
        value.encoded_len() == 0
    }
}

/// Runs `write`, then puts the varint length of what it wrote in front of it.
///
/// Writing first and patching the length afterwards means a nested struct is walked once, not
/// once to size it and again to write it (which, nested `n` deep, would cost `n + 1` walks).
/// One byte is reserved up front; longer lengths shift the payload right, a `memmove` that is
/// cheap next to a second walk. Returns the payload length.
#[inline]
pub fn put_len_prefixed(buf: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) -> usize {
    let at = buf.len();
    buf.push(0);
    write(buf);
    let len = buf.len() - at - 1;
    if len < 0x80 {
        buf[at] = len as u8;
    } else {
        patch_len(buf, at, 1, len);
    }
    len
}

/// Like [`put_len_prefixed`], reserving `width` bytes for the length: lists of structs pass
/// the width their previous element needed, so similar-sized elements need no shifting.
#[inline]
pub fn put_len_prefixed_reserving(
    buf: &mut Vec<u8>,
    width: usize,
    write: impl FnOnce(&mut Vec<u8>),
) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&[0u8; 10][..width]);
    write(buf);
    let len = buf.len() - at - width;
    match width {
        // The guess was right: fill the reserved bytes in place.
        1 if len < 0x80 => buf[at] = len as u8,
        2 if (0x80..0x4000).contains(&len) => {
            buf[at] = len as u8 | 0x80;
            buf[at + 1] = (len >> 7) as u8;
        }
        _ => patch_len(buf, at, width, len),
    }
    len
}

/// Writes the varint `len` at `at`, where `reserved` bytes were left before a payload of
/// `len` bytes, moving the payload if the varint needs a different width.
#[inline(never)]
fn patch_len(buf: &mut Vec<u8>, at: usize, reserved: usize, len: usize) {
    let width = wire::varint_len(len as u64);
    let payload = at + reserved..at + reserved + len;
    if width > reserved {
        buf.extend_from_slice(&[0u8; 10][..width - reserved]);
        buf.copy_within(payload, at + width);
    } else if width < reserved {
        buf.copy_within(payload, at + width);
        buf.truncate(at + width + len);
    }
    let mut rest = len as u64;
    for byte in &mut buf[at..at + width] {
        *byte = (rest as u8) | 0x80;
        rest >>= 7;
    }
    buf[at + width - 1] &= 0x7f;
}

/// The error for a packed list whose byte length is not a whole number of fixed-width values.
#[cold]
pub(crate) fn invalid_packed_length() -> DecodeError {
    DecodeError::new(DecodeErrorKind::InvalidPackedLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_of_every_short_length_are_written_whole_after_their_length() {
        for len in 0..=40usize {
            let bytes: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37) | 1).collect();
            let mut buf = vec![0xee; 3];
            put_delimited(&mut buf, &bytes);
            let mut expected = vec![0xee, 0xee, 0xee, len as u8];
            expected.extend_from_slice(&bytes);
            assert_eq!(buf, expected, "length {len}");
        }
    }

    fn expected(len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        wire::put_varint(&mut out, len as u64);
        out.extend(std::iter::repeat_n(7u8, len));
        out
    }

    #[test]
    fn length_prefixes_are_minimal_whatever_was_reserved() {
        for reserved in 1..=3 {
            for len in [0, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
                let mut buf = vec![0xaa];
                let got = put_len_prefixed_reserving(&mut buf, reserved, |b| {
                    b.extend(std::iter::repeat_n(7u8, len))
                });
                assert_eq!(got, len);
                assert_eq!(buf[0], 0xaa);
                assert_eq!(&buf[1..], expected(len), "reserved {reserved}, len {len}");
            }
        }
        for len in [0, 127, 128, 20_000] {
            let mut buf = Vec::new();
            put_len_prefixed(&mut buf, |b| b.extend(std::iter::repeat_n(7u8, len)));
            assert_eq!(buf, expected(len));
        }
    }
}
