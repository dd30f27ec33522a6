//! Forward compatibility: a relay built from the old schema (v1) passes a new peer's (v2)
//! fields through unchanged.

mod support;

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use svrkit_runtime::codec::{Message, WireType};
use svrkit_tests::svrkit::test::evolution_v1 as v1;
use svrkit_tests::svrkit::test::evolution_v2 as v2;

fn profile_v2() -> impl Strategy<Value = v2::Profile> {
    (
        (
            any::<u64>(),
            support::string(),
            0..4i32,
            vec(support::string(), 0..3),
        ),
        (any::<i32>(), support::f64_(), support::f32_()),
        (
            support::string(),
            any::<u32>(),
            vec(any::<u64>(), 0..4),
            btree_map(support::string(), support::string(), 0..3),
        ),
    )
        .prop_map(|(a, b, c)| v2::Profile {
            uin: a.0,
            name: a.1,
            kind: v2::Kind(a.2),
            tags: a.3,
            level: b.0,
            score: b.1,
            ratio: b.2,
            avatar: v2::Avatar {
                url: c.0,
                size: c.1,
                ..Default::default()
            },
            friends: c.2,
            attrs: c.3,
            ..Default::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// New fields have ids above the old ones (the usual way a schema grows), so the old
    /// schema's re-encoding is byte for byte the original.
    #[test]
    fn old_schema_relays_new_fields_byte_for_byte(new in profile_v2()) {
        let wire = new.encode_to_vec();
        let relayed = v1::Profile::decode(&wire).unwrap();
        prop_assert_eq!(relayed.uin, new.uin);
        prop_assert_eq!(&relayed.name, &new.name);
        prop_assert_eq!(relayed.kind.0, new.kind.0, "unknown enum values keep their number");
        prop_assert_eq!(relayed.encoded_len(), wire.len());
        let again = relayed.encode_to_vec();
        prop_assert_eq!(&again, &wire);
        prop_assert_eq!(v2::Profile::decode(&again).unwrap(), new);
    }

    /// Old messages read by the new schema get defaults for the new fields.
    #[test]
    fn new_schema_reads_old_messages(uin: u64, name in support::string()) {
        let old = v1::Profile { uin, name: name.clone(), kind: v1::Kind::TEXT, ..Default::default() };
        let new = v2::Profile::decode(&old.encode_to_vec()).unwrap();
        prop_assert_eq!(new.uin, uin);
        prop_assert_eq!(new.name, name);
        prop_assert_eq!(new.kind, v2::Kind::TEXT);
        prop_assert_eq!(new.level, 0);
        prop_assert!(new.unknown_fields.is_empty());
    }
}

#[test]
fn unknown_fields_are_listed_in_arrival_order() {
    let new = v2::Profile {
        uin: 1,
        level: -2,
        score: 0.5,
        ratio: 0.25,
        avatar: v2::Avatar {
            url: "a".into(),
            ..Default::default()
        },
        attrs: BTreeMap::from([("k".into(), "v".into())]),
        ..Default::default()
    };
    let old = v1::Profile::decode(&new.encode_to_vec()).unwrap();
    let seen: Vec<(u32, WireType)> = old
        .unknown_fields
        .iter()
        .map(|f| (f.id, f.wire_type))
        .collect();
    assert_eq!(
        seen,
        [
            (5, WireType::Varint),
            (6, WireType::SixtyFourBit),
            (7, WireType::ThirtyTwoBit),
            (8, WireType::LengthDelimited),
            (10, WireType::LengthDelimited),
        ]
    );
    assert_eq!(
        old.unknown_fields.iter().next().unwrap().value,
        [0x03],
        "zigzag(-2)"
    );
    assert!(format!("{old:?}").contains("unknown_fields"));
}

/// A field whose type a newer schema changed (here `name`, a string in v1, arrives as a
/// varint) is kept as an unknown field, as protobuf C++ keeps it: the message still decodes,
/// the field reads as its default, and a relay passes the value on.
#[test]
fn a_field_whose_type_changed_is_kept_as_unknown_and_relayed() {
    let wire = [0x08, 0x07, 0x10, 0x01];
    let old = v1::Profile::decode(&wire).unwrap();
    assert_eq!(old.uin, 7);
    assert_eq!(old.name, "");
    let kept: Vec<_> = old
        .unknown_fields
        .iter()
        .map(|f| (f.id, f.wire_type, f.value.to_vec()))
        .collect();
    assert_eq!(kept, [(2, WireType::Varint, vec![0x01])]);
    assert_eq!(old.encode_to_vec(), wire);
}

/// Groups (wire types 3 and 4) from a peer whose schema still uses them are kept whole,
/// nested groups included, under an unknown id or a known one.
#[test]
fn groups_are_kept_whole_and_relayed() {
    let wire = [
        0x08, 0x07, // uin = 7
        0xa3, 0x01, // field 20, start group
        0x08, 0x01, //   field 1 = 1
        0x13, 0x1a, 0x01, b'x', 0x14, // field 2 group holding a string
        0xa4, 0x01, // field 20, end group
        0x13, 0x14, // field 2 (`name` in v1) as an empty group
    ];
    let old = v1::Profile::decode(&wire).unwrap();
    assert_eq!(old.uin, 7);
    let kept: Vec<_> = old
        .unknown_fields
        .iter()
        .map(|f| (f.id, f.wire_type, f.value.len()))
        .collect();
    assert_eq!(
        kept,
        [(20, WireType::StartGroup, 9), (2, WireType::StartGroup, 1)]
    );
    assert_eq!(old.encode_to_vec(), wire);
}

/// A map entry whose value has another wire type than the map's (a peer that changed the
/// value type) must not be read as the default value over a real entry.
#[test]
fn a_map_entry_of_another_type_does_not_overwrite_a_real_one() {
    let mut wire = v2::Profile {
        attrs: BTreeMap::from([("k".into(), "v".into())]),
        ..Default::default()
    }
    .encode_to_vec();
    // Field 10 (`attrs`): an entry with key "k" and its value (field 2) as a varint.
    let foreign = [0x52, 0x05, 0x0a, 0x01, b'k', 0x10, 0x05];
    wire.extend_from_slice(&foreign);
    let new = v2::Profile::decode(&wire).unwrap();
    assert_eq!(new.attrs.get("k").map(|v| v.as_str()), Some("v"));
    assert_eq!(new.unknown_fields.as_bytes(), foreign);
    assert_eq!(new.encode_to_vec(), wire);
}

/// A raw field for the relay property: any wire type, groups nesting others.
#[derive(Debug, Clone)]
enum Raw {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Delimited(Vec<u8>),
    Group(Vec<(u32, Raw)>),
}

impl Raw {
    fn wire_type(&self) -> u32 {
        match self {
            Raw::Varint(_) => 0,
            Raw::Fixed64(_) => 1,
            Raw::Delimited(_) => 2,
            Raw::Group(_) => 3,
            Raw::Fixed32(_) => 5,
        }
    }

    fn encode(&self, id: u32, buf: &mut Vec<u8>) {
        put_varint(buf, u64::from(id << 3 | self.wire_type()));
        match self {
            Raw::Varint(v) => put_varint(buf, *v),
            Raw::Fixed64(v) => buf.extend_from_slice(&v.to_le_bytes()),
            Raw::Fixed32(v) => buf.extend_from_slice(&v.to_le_bytes()),
            Raw::Delimited(b) => {
                put_varint(buf, b.len() as u64);
                buf.extend_from_slice(b);
            }
            Raw::Group(fields) => {
                for (inner, raw) in fields {
                    raw.encode(*inner, buf);
                }
                put_varint(buf, u64::from(id << 3 | 4));
            }
        }
    }
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn raw() -> impl Strategy<Value = Raw> {
    let leaf = prop_oneof![
        any::<u64>().prop_map(Raw::Varint),
        any::<u64>().prop_map(Raw::Fixed64),
        any::<u32>().prop_map(Raw::Fixed32),
        vec(any::<u8>(), 0..8).prop_map(Raw::Delimited),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        vec((1..40u32, inner), 0..4).prop_map(Raw::Group)
    })
}

/// Whether v1's `Profile` reads field `id` with wire type `wt` itself.
fn v1_reads(id: u32, wt: u32) -> bool {
    matches!((id, wt), (1, 0) | (2, 2) | (3, 0) | (4, 2))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever protobuf C++ would keep as unknown, undeclared ids, declared ones of another
    /// wire type, groups, passes through a relay built from the old schema byte for byte.
    #[test]
    fn unknown_fields_of_any_wire_type_survive_a_relay(
        uin: u64,
        name in support::string(),
        tags in vec(support::string(), 0..3),
        extra in vec((1..40u32, raw()), 0..6)
            .prop_filter("fields v1 reads itself", |fields| {
                fields.iter().all(|(id, raw)| !v1_reads(*id, raw.wire_type()))
            }),
    ) {
        let known = v1::Profile { uin, name, tags, ..Default::default() };
        let mut wire = known.encode_to_vec();
        for (id, raw) in &extra {
            raw.encode(*id, &mut wire);
        }
        let relayed = v1::Profile::decode(&wire).unwrap();
        prop_assert_eq!(relayed.uin, known.uin);
        prop_assert_eq!(&relayed.name, &known.name);
        prop_assert_eq!(&relayed.tags, &known.tags);
        prop_assert_eq!(relayed.unknown_fields.iter().count(), extra.len());
        prop_assert_eq!(relayed.encoded_len(), wire.len());
        prop_assert_eq!(relayed.encode_to_vec(), wire);
    }
}
