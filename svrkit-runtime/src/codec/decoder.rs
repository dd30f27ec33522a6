//! A bounds-checked cursor over the bytes being decoded.

use bytes::Bytes;
use faststr::FastStr;

use super::error::{DecodeError, DecodeErrorKind};
use super::unknown::UnknownFields;
use super::wire::WireType;

/// How deeply structs may nest inside one another before decoding stops.
///
/// Without a limit, a few kilobytes of nested length prefixes would recurse deep enough to
/// overflow the stack.
pub const MAX_DEPTH: u32 = 100;

/// The elements of lists and maps a decoder creates may take at most this many times the
/// input's length in memory (plus [`DECODE_SLACK`]), counted as `size_of` of each element.
///
/// Protobuf lets a 2-byte element (an empty struct) stand for a struct of hundreds of bytes;
/// without a bound, a 4 MiB request of empty elements would decode into gigabytes. Sixteen
/// leaves room for sparse real-world structs (a `UserRef { uin: 7 }` is 4 bytes on the wire
/// and 72 in memory) while keeping a decode within a constant factor of what was received.
/// Scalars in packed lists are not counted: they expand at most 8 times by nature.
pub const DECODE_FACTOR: usize = 16;
/// Memory every decode may use for elements regardless of its input's size.
pub const DECODE_SLACK: usize = 64 << 10;

/// Strings up to this length are copied into `FastStr`'s inline buffer (30 bytes); longer
/// ones are shared with the input.
const SHARE_STRINGS_ABOVE: usize = 30;

/// A cursor over encoded bytes.
///
/// Every read checks the remaining input first, so a length prefix can never make the decoder
/// allocate or slice beyond what the input holds. When the input is a [`Bytes`], `bytes` fields
/// are returned as slices of it instead of copies.
#[derive(Debug)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    source: Option<&'a Bytes>,
    /// Nesting levels still allowed below this one.
    depth: u32,
    /// Bytes of list and map elements still allowed (see [`DECODE_FACTOR`]).
    budget: usize,
    /// Bytes the lists and maps decoded so far allocated (see [`heap`](Decoder::heap)).
    heap: usize,
}

type Result<T> = std::result::Result<T, DecodeError>;

fn budget_for(input: usize) -> usize {
    input
        .saturating_mul(DECODE_FACTOR)
        .saturating_add(DECODE_SLACK)
}

#[cold]
fn err<T>(kind: DecodeErrorKind) -> Result<T> {
    Err(DecodeError::new(kind))
}

impl<'a> Decoder<'a> {
    /// A decoder over a plain slice; `bytes` fields are copied out of it.
    pub fn new(buf: &'a [u8]) -> Decoder<'a> {
        Decoder {
            buf,
            source: None,
            depth: MAX_DEPTH,
            budget: budget_for(buf.len()),
            heap: 0,
        }
    }

    /// A decoder over shared bytes; `bytes` fields borrow from `source` without copying.
    pub fn from_bytes(source: &'a Bytes) -> Decoder<'a> {
        Decoder {
            buf: source,
            source: Some(source),
            depth: MAX_DEPTH,
            budget: budget_for(source.len()),
            heap: 0,
        }
    }

    /// Whether all input has been consumed.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes left to read.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Reads a varint of up to ten bytes.
    #[inline]
    pub fn read_varint(&mut self) -> Result<u64> {
        match self.buf.first() {
            Some(&b) if b < 0x80 => {
                self.buf = &self.buf[1..];
                Ok(u64::from(b))
            }
            Some(_) => self.read_varint_slow(),
            None => err(DecodeErrorKind::Truncated),
        }
    }

    fn read_varint_slow(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for (i, &byte) in self.buf.iter().take(10).enumerate() {
            // The tenth byte may only carry the single bit left of a u64.
            if i == 9 && byte > 1 {
                return err(DecodeErrorKind::InvalidVarint);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        if self.buf.len() < 10 {
            err(DecodeErrorKind::Truncated)
        } else {
            err(DecodeErrorKind::InvalidVarint)
        }
    }

    /// Reads a field key and checks its field id and wire type.
    #[inline]
    pub fn read_key(&mut self) -> Result<u32> {
        let key = self.read_varint()?;
        if key > u64::from(u32::MAX) {
            return err(DecodeErrorKind::InvalidVarint);
        }
        let key = key as u32;
        if key < 8 {
            return err(DecodeErrorKind::InvalidFieldId);
        }
        if WireType::from_u32(key & 7).is_none() {
            return err(DecodeErrorKind::InvalidWireType(key & 7));
        }
        Ok(key)
    }

    /// Reads four little-endian bytes.
    #[inline]
    pub fn read_fixed32(&mut self) -> Result<u32> {
        match self.buf.split_first_chunk::<4>() {
            Some((head, rest)) => {
                self.buf = rest;
                Ok(u32::from_le_bytes(*head))
            }
            None => err(DecodeErrorKind::Truncated),
        }
    }

    /// Reads eight little-endian bytes.
    #[inline]
    pub fn read_fixed64(&mut self) -> Result<u64> {
        match self.buf.split_first_chunk::<8>() {
            Some((head, rest)) => {
                self.buf = rest;
                Ok(u64::from_le_bytes(*head))
            }
            None => err(DecodeErrorKind::Truncated),
        }
    }

    /// Reads a length prefix and checks it against the input left.
    #[inline]
    pub fn read_len(&mut self) -> Result<usize> {
        let len = self.read_varint()?;
        if len > self.buf.len() as u64 {
            return err(DecodeErrorKind::LengthOutOfBounds {
                len,
                remaining: self.buf.len(),
            });
        }
        Ok(len as usize)
    }

    /// Reads a length-delimited value as a borrowed slice.
    #[inline]
    pub fn read_slice(&mut self) -> Result<&'a [u8]> {
        let len = self.read_len()?;
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head)
    }

    /// Reads a length-delimited value as [`Bytes`], without copying when the input is `Bytes`.
    #[inline]
    pub fn read_bytes(&mut self) -> Result<Bytes> {
        let slice = self.read_slice()?;
        Ok(match self.source {
            Some(source) => source.slice_ref(slice),
            None => Bytes::copy_from_slice(slice),
        })
    }

    /// Reads a length-delimited UTF-8 string: short strings are stored inline, longer ones
    /// share the input when it is a `Bytes`, so decoding a string never allocates then.
    #[inline]
    pub fn read_string(&mut self) -> Result<FastStr> {
        let mut out = FastStr::empty();
        self.read_string_into(&mut out)?;
        Ok(out)
    }

    /// Reads a length-delimited UTF-8 string into `out`.
    ///
    /// Writing in place rather than returning the 32-byte `FastStr` inside a `Result` keeps
    /// the value from being copied through memory again, which profiling showed to stall on
    /// store forwarding in tight decode loops.
    #[inline(always)]
    pub fn read_string_into(&mut self, out: &mut FastStr) -> Result<()> {
        let slice = self.read_slice()?;
        match self.source {
            // Past the inline size, sharing beats copying; below it, `FastStr` would copy into
            // its inline buffer anyway and the reference count would be wasted work.
            Some(source) if slice.len() > SHARE_STRINGS_ABOVE => {
                match FastStr::from_bytes(source.slice_ref(slice)) {
                    Ok(s) => *out = s,
                    Err(_) => return err(DecodeErrorKind::InvalidUtf8),
                }
            }
            _ => match std::str::from_utf8(slice) {
                Ok(s) => *out = FastStr::new(s),
                Err(_) => return err(DecodeErrorKind::InvalidUtf8),
            },
        }
        Ok(())
    }

    /// Reads a length-delimited region and runs `f` on a decoder limited to it, one nesting
    /// level deeper. The region must be consumed whole.
    #[inline]
    pub fn nested<R>(&mut self, f: impl FnOnce(&mut Decoder<'a>) -> Result<R>) -> Result<R> {
        if self.depth == 0 {
            return err(DecodeErrorKind::RecursionLimit);
        }
        let slice = self.read_slice()?;
        let mut inner = Decoder {
            buf: slice,
            source: self.source,
            depth: self.depth - 1,
            budget: self.budget,
            heap: self.heap,
        };
        let result = f(&mut inner);
        self.budget = inner.budget;
        self.heap = inner.heap;
        result
    }

    /// Counts `bytes` of memory for a decoded element against this decode's budget.
    ///
    /// # Errors
    /// [`DecodeErrorKind::AllocationLimit`] once the elements would exceed it.
    #[inline]
    pub fn charge(&mut self, bytes: usize) -> Result<()> {
        match self.budget.checked_sub(bytes) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => err(DecodeErrorKind::AllocationLimit),
        }
    }

    /// Splits off a length-delimited region as its own decoder at the same depth (for packed
    /// lists, which hold scalars, not structs).
    #[inline]
    pub fn packed(&mut self) -> Result<Decoder<'a>> {
        let slice = self.read_slice()?;
        Ok(Decoder {
            buf: slice,
            source: self.source,
            depth: self.depth,
            // Packed lists hold scalars, which are not charged.
            budget: 0,
            heap: 0,
        })
    }

    /// Counts `bytes` that a list or map allocated, for [`heap`](Decoder::heap). (The budget
    /// is [`charge`](Decoder::charge)d per element; this is what the memory came to.)
    #[inline]
    pub fn note_heap(&mut self, bytes: usize) {
        self.heap += bytes;
    }

    /// Bytes of memory the lists and maps decoded so far allocated (their capacity, and two
    /// entries' worth per map entry for the map's nodes): what a decode holds beyond the
    /// message struct itself and the input it shares. A server charges it to its memory
    /// budget.
    pub fn heap(&self) -> usize {
        self.heap
    }

    /// Reads the value of a field nobody declared, keeping its key and value bytes in
    /// `unknown` so that encoding writes them back unchanged.
    pub fn skip_unknown(&mut self, key: u32, unknown: &mut UnknownFields) -> Result<()> {
        let mark = self.mark();
        self.skip_value(key)?;
        unknown.push(key, self.read_since(mark));
        Ok(())
    }

    /// Skips the value that follows `key`: for a start-group key, the group's fields and its
    /// end marker.
    pub fn skip_value(&mut self, key: u32) -> Result<()> {
        match WireType::from_u32(key & 7) {
            Some(WireType::Varint) => self.read_varint().map(drop),
            Some(WireType::SixtyFourBit) => self.read_fixed64().map(drop),
            Some(WireType::ThirtyTwoBit) => self.read_fixed32().map(drop),
            Some(WireType::LengthDelimited) => self.read_slice().map(drop),
            Some(WireType::StartGroup) => self.skip_group(key >> 3),
            // Only `skip_group` reads the marker that closes its own group.
            Some(WireType::EndGroup) => err(DecodeErrorKind::UnmatchedEndGroup),
            None => err(DecodeErrorKind::InvalidWireType(key & 7)),
        }
    }

    /// Skips a group's fields up to the end marker of field `id`. A group nests like a struct,
    /// so it counts against the same depth limit.
    fn skip_group(&mut self, id: u32) -> Result<()> {
        if self.depth == 0 {
            return err(DecodeErrorKind::RecursionLimit);
        }
        self.depth -= 1;
        let result = loop {
            let key = match self.read_key() {
                Ok(key) => key,
                Err(e) => break Err(e),
            };
            if key & 7 == WireType::EndGroup as u32 {
                break if key >> 3 == id {
                    Ok(())
                } else {
                    err(DecodeErrorKind::UnmatchedEndGroup)
                };
            }
            if let Err(e) = self.skip_value(key) {
                break Err(e);
            }
        };
        self.depth += 1;
        result
    }

    /// The input not read yet, to hand to [`read_since`](Decoder::read_since) later.
    #[inline]
    pub(crate) fn mark(&self) -> &'a [u8] {
        self.buf
    }

    /// The bytes read since `mark` was taken.
    #[inline]
    pub(crate) fn read_since(&self, mark: &'a [u8]) -> &'a [u8] {
        &mark[..mark.len() - self.buf.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_and_overlong_varints_are_errors() {
        assert_eq!(
            Decoder::new(&[0x80]).read_varint().unwrap_err().kind(),
            &DecodeErrorKind::Truncated
        );
        let overlong = [0xff; 11];
        assert_eq!(
            Decoder::new(&overlong).read_varint().unwrap_err().kind(),
            &DecodeErrorKind::InvalidVarint
        );
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(Decoder::new(&max).read_varint().unwrap(), u64::MAX);
    }

    #[test]
    fn length_is_checked_before_slicing() {
        // Announces 2^32 bytes with four bytes of input left.
        let input = [0x80, 0x80, 0x80, 0x80, 0x10, 1, 2, 3, 4];
        let e = Decoder::new(&input).read_slice().unwrap_err();
        assert_eq!(
            e.kind(),
            &DecodeErrorKind::LengthOutOfBounds {
                len: 1 << 32,
                remaining: 4
            }
        );
    }

    #[test]
    fn bytes_input_is_not_copied() {
        let source = Bytes::from_static(b"\x03abc");
        let got = Decoder::from_bytes(&source).read_bytes().unwrap();
        assert_eq!(got, "abc");
        assert_eq!(got.as_ptr(), source[1..].as_ptr());
    }

    #[test]
    fn keys_with_bad_ids_or_wire_types_are_rejected() {
        assert_eq!(
            Decoder::new(&[0x02]).read_key().unwrap_err().kind(),
            &DecodeErrorKind::InvalidFieldId
        );
        assert_eq!(
            Decoder::new(&[0x0e]).read_key().unwrap_err().kind(),
            &DecodeErrorKind::InvalidWireType(6)
        );
        assert_eq!(
            Decoder::new(&[0x0f]).read_key().unwrap_err().kind(),
            &DecodeErrorKind::InvalidWireType(7)
        );
    }

    /// Skips what follows `key` in `input` (after the key itself) and says how many bytes
    /// were left.
    fn skip(input: &[u8]) -> Result<usize> {
        let mut d = Decoder::new(input);
        let key = d.read_key()?;
        d.skip_value(key)?;
        Ok(d.remaining())
    }

    #[test]
    fn a_group_is_skipped_whole_with_the_groups_inside_it() {
        // Field 1 as a group holding field 2 (varint 5) and field 3 as a group holding a
        // string; then one byte that is not part of it.
        let group = [0x0b, 0x10, 0x05, 0x1b, 0x0a, 0x01, b'x', 0x1c, 0x0c, 0xff];
        assert_eq!(skip(&group).unwrap(), 1);
    }

    #[test]
    fn a_group_closed_by_another_field_or_never_closed_is_an_error() {
        // Start field 1, end field 2.
        assert_eq!(
            skip(&[0x0b, 0x14]).unwrap_err().kind(),
            &DecodeErrorKind::UnmatchedEndGroup
        );
        // An end marker with nothing open.
        assert_eq!(
            skip(&[0x0c]).unwrap_err().kind(),
            &DecodeErrorKind::UnmatchedEndGroup
        );
        assert_eq!(
            skip(&[0x0b, 0x10, 0x05]).unwrap_err().kind(),
            &DecodeErrorKind::Truncated
        );
    }

    #[test]
    fn groups_nest_no_deeper_than_structs() {
        let deep = |n: usize| {
            let mut input = vec![0x0b; n];
            input.extend(std::iter::repeat_n(0x0c, n));
            input
        };
        // The outermost group's start is the key `skip` reads; its content nests n - 1 more.
        assert_eq!(skip(&deep(MAX_DEPTH as usize)).unwrap(), 0);
        assert_eq!(
            skip(&deep(MAX_DEPTH as usize + 1)).unwrap_err().kind(),
            &DecodeErrorKind::RecursionLimit
        );
    }
}
