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

#[test]
fn a_changed_field_type_is_an_error_not_a_silent_loss() {
    // Field 2 (`name`, a string in v1) arrives as a varint.
    let err = v1::Profile::decode(&[0x10, 0x01]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to decode: test.evolution_v1.Profile.name: wire type 0 does not match the field's declared type"
    );
}
