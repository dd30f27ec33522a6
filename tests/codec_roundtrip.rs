//! decode(encode(x)) == x and `encoded_len` is exact, for every IDL type in every shape.

mod support;

use bytes::Bytes;
use proptest::prelude::*;
use svrkit_runtime::codec::Message;
use svrkit_tests::svrkit::test::all_types::{Color, Defaults, KeyNames, Scalars};

/// The properties every generated message must have.
fn check<M: Message + PartialEq + std::fmt::Debug>(value: &M) -> Result<(), TestCaseError> {
    let encoded = value.encode_to_vec();
    prop_assert_eq!(encoded.len(), value.encoded_len(), "encoded_len is exact");
    // The buffer sized by encoded_len never had to grow (the encoder's fixed-size copies
    // must stay within the room left for them).
    prop_assert_eq!(
        encoded.capacity(),
        encoded.len() + svrkit_runtime::codec::ENCODE_ROOM,
        "encode_to_vec never grows"
    );
    prop_assert_eq!(&M::decode(&encoded).unwrap(), value, "decode from a slice");
    let shared = Bytes::from(encoded.clone());
    prop_assert_eq!(
        &M::decode_bytes(&shared).unwrap(),
        value,
        "decode from Bytes"
    );
    // Deterministic: equal values give equal bytes, also after a round trip.
    prop_assert_eq!(M::decode(&encoded).unwrap().encode_to_vec(), encoded);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn scalars(v in support::scalars()) { check(&v)?; }

    #[test]
    fn optionals(v in support::optionals()) { check(&v)?; }

    #[test]
    fn repeateds(v in support::repeateds()) { check(&v)?; }

    #[test]
    fn maps(v in support::maps()) { check(&v)?; }

    #[test]
    fn defaults(v in support::defaults()) { check(&v)?; }

    #[test]
    fn trees(v in support::tree()) { check(&v)?; }

    #[test]
    fn keywords(v in support::keywords()) { check(&v)?; }

    #[test]
    fn all_types(v in support::all_types()) { check(&v)?; }
}

#[test]
fn defaults_are_left_off_the_wire() {
    let d = Defaults::default();
    assert!(d.d_bool);
    assert_eq!(d.d_int32, -7);
    assert_eq!(d.d_string, "hello & welcome");
    assert_eq!(d.d_color, Color::GREEN);
    assert_eq!(d.encoded_len(), 0);
    assert!(d.encode_to_vec().is_empty());
    // A zero is not the default here, so it is written.
    let zeroed = Defaults {
        d_int32: 0,
        d_bool: false,
        ..Defaults::default()
    };
    assert_eq!(zeroed.encode_to_vec(), [0x08, 0x00, 0x10, 0x00]);
}

#[test]
fn known_bytes() {
    // Checked by hand against the protobuf encoding rules.
    let v = Scalars {
        f_int32: -1,
        f_sint32: -1,
        f_string: "hi".into(),
        f_color: Color::INFRARED,
        f_max_id: 1,
        ..Default::default()
    };
    let expected: &[u8] = &[
        0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0x01, // 2: int32 -1, ten bytes
        0x30, 0x01, // 6: sint32 -1, zigzag 1
        0x72, 0x02, b'h', b'i', // 14: "hi"
        0x80, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, // 16: enum -1
        0xf8, 0xff, 0xff, 0xff, 0x0f, 0x01, // 536870911: 1
    ];
    assert_eq!(v.encode_to_vec(), expected);
}

#[test]
fn unknown_enum_values_are_kept() {
    let v = Scalars {
        f_color: Color(77),
        ..Default::default()
    };
    let back = Scalars::decode(&v.encode_to_vec()).unwrap();
    assert_eq!(back.f_color, Color(77));
    assert!(!back.f_color.is_known());
    assert_eq!(format!("{:?}", back.f_color), "Color(77)");
    assert_eq!(format!("{:?}", Color::GREEN), "GREEN");
    assert_eq!(Color::from_name("RED"), Some(Color::RED));
}

#[test]
fn bytes_fields_share_the_input() {
    let v = Scalars {
        f_bytes: Bytes::from_static(b"payload"),
        ..Default::default()
    };
    let input = v.encode_to_bytes();
    let back = Scalars::decode_bytes(&input).unwrap();
    let range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
    assert!(
        range.contains(&(back.f_bytes.as_ptr() as usize)),
        "no copy was made"
    );
}

#[test]
fn repeated_scalars_accept_unpacked_input() {
    use svrkit_tests::svrkit::test::all_types::Repeateds;
    // Field 2 (int32) as three separate varint fields, as a proto2 writer would send it.
    let unpacked = [0x10, 0x01, 0x10, 0x02, 0x10, 0x03];
    let v = Repeateds::decode(&unpacked).unwrap();
    assert_eq!(v.r_int32, [1, 2, 3]);
    // And written back packed.
    assert_eq!(v.encode_to_vec(), [0x12, 0x03, 0x01, 0x02, 0x03]);
}

#[test]
fn the_example_in_the_wire_format_doc_is_what_we_encode() {
    use svrkit_tests::svrkit::im::{common, message};
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/wire-format.md"
    ))
    .unwrap();
    let block = doc
        .split("```hex\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("hex block");
    let documented: Vec<u8> = block
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect();
    let msg = message::Message {
        from_user: "alice".into(),
        seq: 300,
        msg_type: message::MsgType::IMAGE,
        content: Bytes::from_static(b"hi"),
        at_users: vec!["bob".into()],
        ext: [("k".into(), -1)].into(),
        sender: common::UserRef {
            uin: 7,
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(msg.encode_to_vec(), documented);
    assert_eq!(message::Message::decode(&documented).unwrap(), msg);
}

/// Fields named like the constants generated decoding declares (`LEN`; `ITEMS_UNPACKED` for
/// the second encoding of `items`), and like the names those fall back to (`FIELD_1`,
/// `FIELD_2_UNPACKED`), are decoded as themselves, in both encodings of the list.
#[test]
fn fields_named_like_key_constants_decode_as_themselves() {
    let value = KeyNames {
        len: 7,
        items: vec![1, 300],
        items_unpacked: "x".into(),
        plain: -2,
        field_1: "y".into(),
        field_2_unpacked: true,
        ..KeyNames::default()
    };
    check(&value).unwrap();
    // `items` one element per field (key 2 << 3 | varint), then `items_unpacked` (3, LEN),
    // `len`, `plain`, `field_1` and `field_2_unpacked`.
    let unpacked = [
        0x10, 0x01, 0x10, 0xac, 0x02, 0x1a, 0x01, b'x', 0x08, 0x07, 0x20, 0x03, 0x2a, 0x01, b'y',
        0x30, 0x01,
    ];
    assert_eq!(KeyNames::decode(&unpacked).unwrap(), value);
}
