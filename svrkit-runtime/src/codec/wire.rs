//! Wire-level primitives: wire types, keys, varints and zigzag.
//!
//! The layout is protobuf's, byte for byte, so that any protobuf implementation can read what
//! svrkit writes: a field is `key = varint(field_id << 3 | wire_type)` followed by its value.

/// How a field's value is laid out after its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum WireType {
    /// A base-128 varint (integers, bools, enums).
    Varint = 0,
    /// Eight little-endian bytes (fixed64, sfixed64, double).
    SixtyFourBit = 1,
    /// A varint length followed by that many bytes (strings, bytes, structs, packed lists, maps).
    LengthDelimited = 2,
    /// The start of a group: protobuf's deprecated nesting, fields up to an [`EndGroup`]
    /// with the same field id. No svrkit schema writes groups, but a peer's schema may: they
    /// are read as unknown fields and kept whole, as protobuf C++ keeps them.
    ///
    /// [`EndGroup`]: WireType::EndGroup
    StartGroup = 3,
    /// The end of the group that the [`StartGroup`](WireType::StartGroup) with the same
    /// field id opened.
    EndGroup = 4,
    /// Four little-endian bytes (fixed32, sfixed32, float).
    ThirtyTwoBit = 5,
}

impl WireType {
    /// The wire type with this number; `None` for 6 and 7, which protobuf never defined.
    #[inline]
    pub const fn from_u32(value: u32) -> Option<WireType> {
        match value {
            0 => Some(WireType::Varint),
            1 => Some(WireType::SixtyFourBit),
            2 => Some(WireType::LengthDelimited),
            3 => Some(WireType::StartGroup),
            4 => Some(WireType::EndGroup),
            5 => Some(WireType::ThirtyTwoBit),
            _ => None,
        }
    }

    /// A short lowercase name for error messages.
    pub const fn name(self) -> &'static str {
        match self {
            WireType::Varint => "varint",
            WireType::SixtyFourBit => "64-bit",
            WireType::LengthDelimited => "length-delimited",
            WireType::StartGroup => "start-group",
            WireType::EndGroup => "end-group",
            WireType::ThirtyTwoBit => "32-bit",
        }
    }
}

/// The smallest field id a schema may use.
pub const MIN_FIELD_ID: u32 = 1;
/// The largest field id a schema may use (2^29 - 1, the largest that fits a 32-bit key).
pub const MAX_FIELD_ID: u32 = (1 << 29) - 1;

/// Builds a key from a field id and a wire type.
#[inline]
pub const fn key(field_id: u32, wire_type: WireType) -> u32 {
    (field_id << 3) | wire_type as u32
}

/// The field id of a key.
#[inline]
pub const fn key_field_id(key: u32) -> u32 {
    key >> 3
}

/// Appends `value` as a varint.
#[inline(always)]
pub fn put_varint(buf: &mut Vec<u8>, value: u64) {
    // One and two bytes cover keys, lengths up to 16 KiB and small numbers: keep those
    // inline at every call site, the rest out of line.
    if value < 0x80 {
        buf.push(value as u8);
    } else if value < 0x4000 {
        buf.extend_from_slice(&[value as u8 | 0x80, (value >> 7) as u8]);
    } else {
        put_varint_long(buf, value);
    }
}

#[inline(never)]
fn put_varint_long(buf: &mut Vec<u8>, mut value: u64) {
    if value < 1 << 56 && buf.capacity() - buf.len() >= 8 {
        // Up to eight bytes, without a branch per byte: each 7-bit group moves to its own
        // byte of a u64, every byte but the last gets its continuation bit, and eight bytes
        // are appended and cut back (timestamps and ids are 5-8 byte varints). Only where
        // the buffer has room for all eight: an exactly sized one must not grow for it.
        let n = varint_len(value);
        let mut spread = 0u64;
        let mut group = 0;
        while group < 8 {
            spread |= (value & (0x7f << (7 * group))) << group;
            group += 1;
        }
        let continuation = 0x8080_8080_8080_8080u64 & ((1u64 << (8 * (n - 1))) - 1);
        let len = buf.len();
        buf.extend_from_slice(&(spread | continuation).to_le_bytes());
        buf.truncate(len + n);
        return;
    }
    let mut tmp = [0u8; 10];
    let mut n = 0;
    while value >= 0x80 {
        tmp[n] = (value as u8) | 0x80;
        value >>= 7;
        n += 1;
    }
    tmp[n] = value as u8;
    if buf.capacity() - buf.len() >= tmp.len() {
        // Copying all ten bytes and cutting back is a fixed-size copy the compiler inlines;
        // a copy of `n + 1` bytes would be a call to memcpy, which profiles showed.
        let len = buf.len();
        buf.extend_from_slice(&tmp);
        buf.truncate(len + n + 1);
    } else {
        buf.extend_from_slice(&tmp[..=n]);
    }
}

/// How many bytes `value` takes as a varint (1..=10).
#[inline]
pub const fn varint_len(value: u64) -> usize {
    // Each byte carries seven bits; `| 1` makes zero take one byte. For 1..=64 significant
    // bits, (bits * 9 + 64) / 64 equals bits.div_ceil(7): a multiply by 9 and a shift,
    // instead of a multiply-high to divide by seven.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    (bits * 9 + 64) >> 6
}

/// How many bytes a key takes.
#[inline]
pub const fn key_len(field_id: u32) -> usize {
    varint_len((field_id as u64) << 3)
}

/// Zigzag-encodes a signed 32-bit integer (small magnitudes become small varints).
#[inline]
pub const fn zigzag32(value: i32) -> u32 {
    ((value << 1) ^ (value >> 31)) as u32
}

/// Reverses [`zigzag32`].
#[inline]
pub const fn unzigzag32(value: u32) -> i32 {
    ((value >> 1) as i32) ^ -((value & 1) as i32)
}

/// Zigzag-encodes a signed 64-bit integer.
#[inline]
pub const fn zigzag64(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Reverses [`zigzag64`].
#[inline]
pub const fn unzigzag64(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varint_lengths_at_boundaries() {
        for (value, len) in [
            (0u64, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u32::MAX as u64, 5),
            (u64::MAX, 10),
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            assert_eq!(buf.len(), len, "{value}");
            assert_eq!(varint_len(value), len, "{value}");
        }
    }

    #[test]
    fn known_encodings() {
        let mut buf = Vec::new();
        put_varint(&mut buf, 300);
        assert_eq!(buf, [0xac, 0x02]);
        assert_eq!(zigzag32(-1), 1);
        assert_eq!(zigzag32(1), 2);
        assert_eq!(zigzag64(i64::MIN), u64::MAX);
        assert_eq!(key(1, WireType::LengthDelimited), 0x0a);
    }

    proptest! {
        #[test]
        fn zigzag_round_trips(a: i32, b: i64) {
            prop_assert_eq!(unzigzag32(zigzag32(a)), a);
            prop_assert_eq!(unzigzag64(zigzag64(b)), b);
        }

        #[test]
        fn varint_len_matches_encoding(v: u64) {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            prop_assert_eq!(buf.len(), varint_len(v));
        }

        // Every width, not mostly ten-byte values: the shift spreads them over 1..=64 bits.
        #[test]
        fn varints_of_every_width_are_written_as_the_byte_loop_writes_them(
            v in any::<u64>().prop_map(|v| v >> (v % 64)),
            before in 0usize..3,
        ) {
            let mut expected = vec![0xee; before];
            let mut rest = v;
            while rest >= 0x80 {
                expected.push(rest as u8 | 0x80);
                rest >>= 7;
            }
            expected.push(rest as u8);
            let mut buf = vec![0xee; before];
            put_varint(&mut buf, v);
            prop_assert_eq!(buf, expected);
        }
    }
}
