//! Bad input gets a clear error, never a panic, and never an allocation the input does not
//! justify. Mirrors the fuzz target in `fuzz/` so CI exercises it too.

mod support;

use proptest::prelude::*;
use svrkit_runtime::codec::{DecodeErrorKind, MAX_DEPTH, Message};
use svrkit_tests::svrkit::test::all_types::{AllTypes, Maps, Scalars, Tree};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..256)) {
        // Results are irrelevant; returning at all is the property.
        let _ = AllTypes::decode(&input);
        let _ = Tree::decode(&input);
        let _ = Maps::decode(&bytes::Bytes::from(input.clone()));
    }

    /// Corrupting one byte of a valid message never panics either (reaches deeper code than
    /// random bytes do).
    #[test]
    fn corrupted_messages_never_panic(v in support::all_types(), at: prop::sample::Index, byte: u8) {
        let mut input = v.encode_to_vec();
        if !input.is_empty() {
            let i = at.index(input.len());
            input[i] = byte;
        }
        let _ = AllTypes::decode(&input);
    }

    /// Every strict prefix of a valid message is rejected or decodes to something else; none
    /// panics.
    #[test]
    fn truncated_messages_are_errors(v in support::scalars()) {
        let input = v.encode_to_vec();
        for cut in 0..input.len() {
            if let Ok(decoded) = Scalars::decode(&input[..cut]) {
                // A cut at a field boundary is a valid shorter message.
                prop_assert_ne!(decoded, v.clone());
            }
        }
    }
}

#[test]
fn a_length_beyond_the_input_is_rejected_before_allocating() {
    // Field 14 (string) announcing 4 GiB with three bytes behind it.
    let input = [0x72, 0x80, 0x80, 0x80, 0x80, 0x10, b'a', b'b', b'c'];
    let err = Scalars::decode(&input).unwrap_err();
    assert_eq!(
        err.kind(),
        &DecodeErrorKind::LengthOutOfBounds {
            len: 1 << 32,
            remaining: 3
        }
    );
    assert_eq!(
        err.to_string(),
        "failed to decode: test.all_types.Scalars.f_string: length 4294967296 exceeds the 3 bytes left"
    );
}

#[test]
fn invalid_utf8_names_the_field() {
    let input = [0x72, 0x02, 0xc3, 0x28];
    let err = Scalars::decode(&input).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::InvalidUtf8);
    assert_eq!(err.path(), [("test.all_types.Scalars", "f_string")]);
}

#[test]
fn nested_errors_name_the_whole_path() {
    // AllTypes.scalars (1) -> Scalars.f_user (17) -> UserRef.nickname (2) with bad UTF-8.
    let user = [0x12, 0x01, 0xff];
    let scalars = [[0x8a, 0x01, user.len() as u8].as_slice(), &user].concat();
    let input = [[0x0a, scalars.len() as u8].as_slice(), &scalars].concat();
    let err = AllTypes::decode(&input).unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to decode: test.all_types.AllTypes.scalars: test.all_types.Scalars.f_user: im.common.UserRef.nickname: string is not valid UTF-8"
    );
}

fn nested_trees(depth: usize) -> Vec<u8> {
    // Tree.left (field 2) nested `depth` times around an empty tree.
    let mut inner: Vec<u8> = Vec::new();
    for _ in 0..depth {
        let mut outer = vec![0x12];
        svrkit_runtime::codec::wire::put_varint(&mut outer, inner.len() as u64);
        outer.extend_from_slice(&inner);
        inner = outer;
    }
    inner
}

#[test]
fn nesting_is_limited() {
    assert!(Tree::decode(&nested_trees(MAX_DEPTH as usize)).is_ok());
    let err = Tree::decode(&nested_trees(MAX_DEPTH as usize + 1)).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::RecursionLimit);
    // Far deeper input fails the same way instead of overflowing the stack.
    let err = Tree::decode(&nested_trees(20_000)).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::RecursionLimit);
}

#[test]
fn bad_keys_and_wire_types() {
    assert_eq!(
        Scalars::decode(&[0x00]).unwrap_err().kind(),
        &DecodeErrorKind::InvalidFieldId
    );
    assert_eq!(
        Scalars::decode(&[0x0e]).unwrap_err().kind(),
        &DecodeErrorKind::InvalidWireType(6)
    );
    // A group that never ends, and an end marker with no group open.
    assert_eq!(
        Scalars::decode(&[0x0b]).unwrap_err().kind(),
        &DecodeErrorKind::Truncated
    );
    assert_eq!(
        Scalars::decode(&[0x0c]).unwrap_err().kind(),
        &DecodeErrorKind::UnmatchedEndGroup
    );
    // Packed fixed32 list with a length that is not a multiple of four.
    use svrkit_tests::svrkit::test::all_types::Repeateds;
    assert_eq!(
        Repeateds::decode(&[0x42, 0x03, 1, 2, 3])
            .unwrap_err()
            .kind(),
        &DecodeErrorKind::InvalidPackedLength
    );
}

/// Empty structs are 2 bytes on the wire and far more in memory: a body made of them stops
/// decoding once its elements would take more than `DECODE_FACTOR` times its size.
#[test]
fn a_list_of_empty_structs_cannot_blow_up_in_memory() {
    use svrkit_runtime::codec::{DECODE_SLACK, DecodeErrorKind};
    use svrkit_tests::svrkit::test::all_types::Repeateds;
    // Field 17 (`r_user`, a struct), length 0, over and over: 1 MiB of input.
    let body: Vec<u8> = [0x8a, 0x01, 0x00].repeat((1 << 20) / 3);
    let err = Repeateds::decode(&body).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::AllocationLimit, "{err}");
    assert!(err.to_string().contains("Repeateds.r_user"), "{err}");
    // Within the bound (here: the slack alone) it decodes.
    let element = std::mem::size_of::<svrkit_tests::svrkit::im::common::UserRef>();
    let fits = (DECODE_SLACK / element).min(1000);
    let small: Vec<u8> = [0x8a, 0x01, 0x00].repeat(fits);
    assert_eq!(Repeateds::decode(&small).unwrap().r_user.len(), fits);
}
