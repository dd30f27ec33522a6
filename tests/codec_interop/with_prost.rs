//! The cases of `codec_interop`, compiled when build.rs found protoc.

use super::support::{self, list, map};
use bytes::Bytes;
use proptest::prelude::*;
use svrkit_runtime::codec::Message;
use svrkit_tests::prost::im::common as pc;
use svrkit_tests::prost::test::all_types as p;
use svrkit_tests::svrkit::test::all_types as s;

/// svrkit encodes, prost decodes and re-encodes: the bytes must be identical, and svrkit must
/// read prost's bytes back to the original value.
fn svrkit_to_prost<S, P>(value: &S) -> Result<P, TestCaseError>
where
    S: Message + PartialEq + std::fmt::Debug,
    P: prost::Message + Default,
{
    let ours = value.encode_to_vec();
    let theirs =
        P::decode(ours.as_slice()).map_err(|e| TestCaseError::fail(format!("prost: {e}")))?;
    let back = theirs.encode_to_vec();
    if format!("{value:?}").contains("-0.0") {
        // svrkit writes a singular -0.0 as Google's protobuf does (see
        // `negative_zero_and_prefixed_enum_values_match_google_protobuf`); prost compares
        // with `!= 0.0` and drops it, so only the values can agree (`==` equates the zeros).
        prop_assert_eq!(&S::decode(&back).unwrap(), value);
        prop_assert_eq!(&S::decode(&back).unwrap().encode_to_vec(), &back);
        return Ok(theirs);
    }
    prop_assert_eq!(&back, &ours, "prost re-encodes svrkit's bytes identically");
    prop_assert_eq!(&S::decode(&back).unwrap(), value);
    Ok(theirs)
}

/// prost encodes, svrkit decodes and re-encodes: identical bytes, and prost reads svrkit's
/// bytes back to the original value.
fn prost_to_svrkit<P, S>(value: &P) -> Result<S, TestCaseError>
where
    P: prost::Message + Default + PartialEq + std::fmt::Debug,
    S: Message + std::fmt::Debug,
{
    let theirs = value.encode_to_vec();
    let ours = S::decode(&theirs).map_err(|e| TestCaseError::fail(format!("svrkit: {e}")))?;
    let back = ours.encode_to_vec();
    prop_assert_eq!(
        &back,
        &theirs,
        "svrkit re-encodes prost's bytes identically"
    );
    prop_assert_eq!(&P::decode(back.as_slice()).unwrap(), value);
    Ok(ours)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn scalars_to_prost(v in support::scalars()) {
        let theirs: p::Scalars = svrkit_to_prost(&v)?;
        // Field by field, not only byte equality.
        prop_assert_eq!(theirs.f_int32, v.f_int32);
        prop_assert_eq!(theirs.f_sint64, v.f_sint64);
        prop_assert_eq!(theirs.f_sfixed32, v.f_sfixed32);
        prop_assert_eq!(theirs.f_double, v.f_double);
        prop_assert_eq!(&theirs.f_string, &v.f_string);
        prop_assert_eq!(&theirs.f_bytes, &v.f_bytes);
        prop_assert_eq!(theirs.f_color, v.f_color.0);
        prop_assert_eq!(theirs.f_max_id, v.f_max_id);
        prop_assert_eq!(theirs.f_user.map(|u| u.uin).unwrap_or(0), v.f_user.uin);
    }

    #[test]
    fn optionals_to_prost(v in support::optionals()) { let _: p::Optionals = svrkit_to_prost(&v)?; }

    #[test]
    fn repeateds_to_prost(v in support::repeateds()) { let _: p::Repeateds = svrkit_to_prost(&v)?; }

    #[test]
    fn maps_to_prost(v in support::maps()) { let _: p::Maps = svrkit_to_prost(&v)?; }

    #[test]
    fn defaults_to_prost(v in support::defaults()) {
        let theirs: p::Defaults = svrkit_to_prost(&v)?;
        // A value equal to svrkit's default is absent, which the .proto comment says means the
        // default.
        prop_assert_eq!(theirs.d_int32.unwrap_or(-7), v.d_int32);
        prop_assert_eq!(theirs.d_color.unwrap_or(2), v.d_color.0);
    }

    #[test]
    fn trees_to_prost(v in support::tree()) { let _: p::Tree = svrkit_to_prost(&v)?; }

    #[test]
    fn all_types_to_prost(v in support::all_types()) { let _: p::AllTypes = svrkit_to_prost(&v)?; }

    #[test]
    fn scalars_from_prost(v in prost_scalars()) {
        let ours: s::Scalars = prost_to_svrkit(&v)?;
        prop_assert_eq!(ours.f_uint64, v.f_uint64);
        prop_assert_eq!(&ours.f_string, &v.f_string);
        prop_assert_eq!(ours.f_color.0, v.f_color);
    }

    #[test]
    fn optionals_from_prost(v in prost_optionals()) { let _: s::Optionals = prost_to_svrkit(&v)?; }

    #[test]
    fn repeateds_from_prost(v in prost_repeateds()) { let _: s::Repeateds = prost_to_svrkit(&v)?; }

    #[test]
    fn maps_from_prost(v in prost_maps()) { let _: s::Maps = prost_to_svrkit(&v)?; }
}

/// Runs protoc, Google's protobuf, on the exported `.proto` of `test.all_types`.
fn protoc(mode: &str, message: &str, input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let protoc = std::env::var_os("PROTOC").unwrap_or_else(|| "protoc".into());
    let mut child = std::process::Command::new(protoc)
        .arg(format!("--{mode}=test.all_types.{message}"))
        .args(["-I", svrkit_tests::PROTO_DIR, "test.all_types.proto"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("protoc runs (build.rs needed it too)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "protoc --{mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Against protoc's C++ runtime rather than prost, which differs from Google's protobuf in
/// both: Google writes a float or double equal to -0.0 (it compares the bits with zero), in
/// singular, optional, repeated fields and map values alike, and its text format names enum
/// values as svrkit's `.proto` export spells them (`MODE_ON` stays `MODE_ON`; a value
/// without the prefix gets it: `STANDBY` is `MODE_STANDBY`).
#[test]
fn negative_zero_and_prefixed_enum_values_match_google_protobuf() {
    let text = "scalars { f_float: -0.0 f_double: -0.0 }
        optionals { o_float: -0.0 o_double: -0.0 }
        repeateds { r_float: [-0.0, 0.0] r_double: [-0.0] }
        maps { m_uint32_double { key: 1 value: -0.0 } m_fixed32_float { key: 2 value: -0.0 } }
        keywords { self: 7 super: \"s\" crate: MODE_ON fn: [COLOR_RED] }";
    let google = protoc("encode", "AllTypes", text.as_bytes());

    let ours = s::AllTypes {
        scalars: s::Scalars {
            f_float: -0.0,
            f_double: -0.0,
            ..Default::default()
        },
        optionals: s::Optionals {
            o_float: Some(-0.0),
            o_double: Some(-0.0),
            ..Default::default()
        },
        repeateds: s::Repeateds {
            r_float: vec![-0.0, 0.0],
            r_double: vec![-0.0],
            ..Default::default()
        },
        maps: s::Maps {
            m_uint32_double: [(1, -0.0)].into(),
            m_fixed32_float: [(2, -0.0)].into(),
            ..Default::default()
        },
        keywords: s::Keywords {
            self_: 7,
            super_: "s".into(),
            crate_: s::Mode::MODE_ON,
            r#fn: vec![s::Color::RED],
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(
        ours.encode_to_vec(),
        google,
        "svrkit writes what Google writes"
    );

    let back = s::AllTypes::decode(&google).unwrap();
    let negative = |bits: bool| assert!(bits, "a -0.0 came back as +0.0");
    negative(back.scalars.f_float.is_sign_negative());
    negative(back.scalars.f_double.is_sign_negative());
    negative(back.optionals.o_float.unwrap().is_sign_negative());
    negative(back.optionals.o_double.unwrap().is_sign_negative());
    negative(back.repeateds.r_float[0].is_sign_negative());
    negative(back.repeateds.r_double[0].is_sign_negative());
    negative(back.maps.m_uint32_double[&1].is_sign_negative());
    negative(back.maps.m_fixed32_float[&2].is_sign_negative());
    assert_eq!(back.encode_to_vec(), google);

    let keywords = s::Keywords {
        crate_: s::Mode::STANDBY,
        ..Default::default()
    };
    let text = protoc("decode", "Keywords", &keywords.encode_to_vec());
    assert_eq!(
        String::from_utf8(text).unwrap().trim(),
        "crate: MODE_STANDBY"
    );
}

fn f32_() -> impl Strategy<Value = f32> {
    support::f32_()
}
fn f64_() -> impl Strategy<Value = f64> {
    support::f64_()
}
fn string() -> impl Strategy<Value = String> {
    support::string().prop_map(String::from)
}
fn bytes() -> impl Strategy<Value = Bytes> {
    support::bytes()
}

/// A prost `UserRef` that is not empty: svrkit leaves an empty singular struct off the wire,
/// while prost writes `Some(empty)`, so the two are equal in meaning but not in bytes.
fn prost_user() -> impl Strategy<Value = pc::UserRef> {
    (1..u64::MAX, string()).prop_map(|(uin, nickname)| pc::UserRef { uin, nickname })
}

fn prost_scalars() -> impl Strategy<Value = p::Scalars> {
    (
        (
            any::<bool>(),
            any::<i32>(),
            any::<i64>(),
            any::<u32>(),
            any::<u64>(),
            any::<i32>(),
            any::<i64>(),
        ),
        (
            any::<u32>(),
            any::<u64>(),
            any::<i32>(),
            any::<i64>(),
            f32_(),
            f64_(),
        ),
        (
            string(),
            bytes(),
            any::<i32>(),
            proptest::option::of(prost_user()),
            any::<u32>(),
        ),
    )
        .prop_map(|(a, b, c)| p::Scalars {
            f_bool: a.0,
            f_int32: a.1,
            f_int64: a.2,
            f_uint32: a.3,
            f_uint64: a.4,
            f_sint32: a.5,
            f_sint64: a.6,
            f_fixed32: b.0,
            f_fixed64: b.1,
            f_sfixed32: b.2,
            f_sfixed64: b.3,
            f_float: b.4,
            f_double: b.5,
            f_string: c.0,
            f_bytes: c.1,
            f_color: c.2,
            f_user: c.3,
            f_max_id: c.4,
        })
}

fn prost_optionals() -> impl Strategy<Value = p::Optionals> {
    use proptest::option::of;
    (
        (
            of(any::<bool>()),
            of(any::<i32>()),
            of(any::<i64>()),
            of(any::<u32>()),
            of(any::<u64>()),
            of(any::<i32>()),
        ),
        (
            of(any::<i64>()),
            of(any::<u32>()),
            of(any::<u64>()),
            of(any::<i32>()),
            of(any::<i64>()),
            of(f32_()),
        ),
        (
            of(f64_()),
            of(string()),
            of(bytes()),
            of(any::<i32>()),
            of(prost_scalars()),
        ),
    )
        .prop_map(|(a, b, c)| p::Optionals {
            o_bool: a.0,
            o_int32: a.1,
            o_int64: a.2,
            o_uint32: a.3,
            o_uint64: a.4,
            o_sint32: a.5,
            o_sint64: b.0,
            o_fixed32: b.1,
            o_fixed64: b.2,
            o_sfixed32: b.3,
            o_sfixed64: b.4,
            o_float: b.5,
            o_double: c.0,
            o_string: c.1,
            o_bytes: c.2,
            o_color: c.3,
            o_scalars: c.4,
        })
}

fn prost_repeateds() -> impl Strategy<Value = p::Repeateds> {
    (
        (
            list(any::<bool>()),
            list(any::<i32>()),
            list(any::<i64>()),
            list(any::<u32>()),
            list(any::<u64>()),
            list(any::<i32>()),
        ),
        (
            list(any::<i64>()),
            list(any::<u32>()),
            list(any::<u64>()),
            list(any::<i32>()),
            list(any::<i64>()),
            list(f32_()),
        ),
        (
            list(f64_()),
            list(string()),
            list(bytes()),
            list(any::<i32>()),
            list(prost_user()),
        ),
    )
        .prop_map(|(a, b, c)| p::Repeateds {
            r_bool: a.0,
            r_int32: a.1,
            r_int64: a.2,
            r_uint32: a.3,
            r_uint64: a.4,
            r_sint32: a.5,
            r_sint64: b.0,
            r_fixed32: b.1,
            r_fixed64: b.2,
            r_sfixed32: b.3,
            r_sfixed64: b.4,
            r_float: b.5,
            r_double: c.0,
            r_string: c.1,
            r_bytes: c.2,
            r_color: c.3,
            r_user: c.4,
        })
}

fn prost_maps() -> impl Strategy<Value = p::Maps> {
    (
        (
            map(any::<i32>(), string()),
            map(any::<i64>(), bytes()),
            map(any::<u32>(), f64_()),
            map(any::<u64>(), any::<i32>()),
        ),
        (
            map(any::<i32>(), any::<i64>()),
            map(any::<i64>(), prost_user()),
            map(any::<u32>(), f32_()),
            map(any::<u64>(), any::<bool>()),
        ),
        (
            map(any::<i32>(), any::<u64>()),
            map(any::<i64>(), any::<u32>()),
            map(any::<bool>(), any::<i64>()),
            map(string(), prost_scalars()),
        ),
    )
        .prop_map(|(a, b, c)| p::Maps {
            m_int32_string: a.0,
            m_int64_bytes: a.1,
            m_uint32_double: a.2,
            m_uint64_color: a.3,
            m_sint32_sint64: b.0,
            m_sint64_user: b.1,
            m_fixed32_float: b.2,
            m_fixed64_bool: b.3,
            m_sfixed32_fixed64: c.0,
            m_sfixed64_uint32: c.1,
            m_bool_int64: c.2,
            m_string_scalars: c.3,
        })
}

#[test]
fn lists_of_structs_of_changing_sizes_match_prost() {
    use svrkit_tests::prost::bench::chat as pb;
    use svrkit_tests::svrkit::bench::chat as sk;
    // Sizes cross the one-, two- and three-byte length boundaries in both directions.
    let sizes = [10, 300, 5, 20_000, 0, 127, 128, 16_400, 1];
    let list = sk::MsgList {
        msgs: sizes
            .iter()
            .map(|&n| sk::SendMsgReq {
                content: Bytes::from(vec![1u8; n]),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let ours = list.encode_to_vec();
    assert_eq!(ours.len(), list.encoded_len());
    let theirs = <pb::MsgList as prost::Message>::decode(ours.as_slice()).unwrap();
    assert_eq!(prost::Message::encode_to_vec(&theirs), ours);
    assert_eq!(sk::MsgList::decode(&ours).unwrap(), list);
}

/// A crate that runs both prost-build and svrkit's build API for one package name: each
/// writes its own `bench.chat.rs` (prost to `OUT_DIR`, svrkit to `OUT_DIR/svrkit`), both
/// compile into the crate, and they agree on the bytes.
#[test]
fn prost_build_output_of_the_same_package_sits_beside_svrkits() {
    use svrkit_tests::prost_beside as pb;
    use svrkit_tests::svrkit::bench::chat as sk;
    let ours = sk::SendMsgReq {
        from_user: "alice".into(),
        client_msg_id: 9,
        ..Default::default()
    };
    let theirs = pb::SendMsgReq {
        from_user: "alice".into(),
        client_msg_id: 9,
        ..Default::default()
    };
    assert_eq!(ours.encode_to_vec(), prost::Message::encode_to_vec(&theirs));
}
