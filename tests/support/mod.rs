//! Shared proptest strategies for the fixture types in `idl/test/all_types.xml`.
#![allow(dead_code)]

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use svrkit_runtime::FastStr;
use svrkit_tests::svrkit::im::common::UserRef;
use svrkit_tests::svrkit::test::all_types::{
    AllTypes, Color, Defaults, Empty, Keywords, Maps, Mode, Optionals, Repeateds, Scalars, Tree,
};

/// Short strings (stored inline by `FastStr`) and long ones (shared with the input).
pub fn string() -> impl Strategy<Value = FastStr> {
    prop_oneof![
        3 => vec(any::<char>(), 0..6).prop_map(String::from_iter),
        1 => vec(any::<char>(), 20..40).prop_map(String::from_iter),
    ]
    .prop_map(FastStr::from)
}

pub fn bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

/// Any float but NaN (which is not equal to itself).
pub fn f32_() -> impl Strategy<Value = f32> {
    use proptest::num::f32::*;
    NORMAL | SUBNORMAL | ZERO | INFINITE | POSITIVE | NEGATIVE
}

pub fn f64_() -> impl Strategy<Value = f64> {
    use proptest::num::f64::*;
    NORMAL | SUBNORMAL | ZERO | INFINITE | POSITIVE | NEGATIVE
}

/// Mostly named values, sometimes numbers the schema does not name.
pub fn color() -> impl Strategy<Value = Color> {
    prop_oneof![3 => (-1..3i32).prop_map(Color), 1 => any::<i32>().prop_map(Color)]
}

pub fn user() -> impl Strategy<Value = UserRef> {
    (any::<u64>(), string()).prop_map(|(uin, nickname)| UserRef {
        uin,
        nickname,
        ..Default::default()
    })
}

pub fn scalars() -> impl Strategy<Value = Scalars> {
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
        (string(), bytes(), color(), user(), any::<u32>()),
    )
        .prop_map(|(a, b, c)| Scalars {
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
            ..Default::default()
        })
}

pub fn optionals() -> impl Strategy<Value = Optionals> {
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
            of(color()),
            of(scalars()),
        ),
    )
        .prop_map(|(a, b, c)| Optionals {
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
            ..Default::default()
        })
}

pub fn list<T: std::fmt::Debug>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Vec<T>> {
    vec(s, 0..5)
}

pub fn repeateds() -> impl Strategy<Value = Repeateds> {
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
            list(color()),
            list(user()),
        ),
    )
        .prop_map(|(a, b, c)| Repeateds {
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
            ..Default::default()
        })
}

pub fn map<K: Ord + std::fmt::Debug, V: std::fmt::Debug>(
    k: impl Strategy<Value = K>,
    v: impl Strategy<Value = V>,
) -> impl Strategy<Value = BTreeMap<K, V>> {
    btree_map(k, v, 0..4)
}

pub fn maps() -> impl Strategy<Value = Maps> {
    (
        (
            map(any::<i32>(), string()),
            map(any::<i64>(), bytes()),
            map(any::<u32>(), f64_()),
            map(any::<u64>(), color()),
        ),
        (
            map(any::<i32>(), any::<i64>()),
            map(any::<i64>(), user()),
            map(any::<u32>(), f32_()),
            map(any::<u64>(), any::<bool>()),
        ),
        (
            map(any::<i32>(), any::<u64>()),
            map(any::<i64>(), any::<u32>()),
            map(any::<bool>(), any::<i64>()),
            map(string(), scalars()),
        ),
    )
        .prop_map(|(a, b, c)| Maps {
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
            ..Default::default()
        })
}

/// Either the field's declared default (which is left off the wire) or any value.
fn or_default<T: Clone + std::fmt::Debug + 'static>(
    default: T,
    any: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![Just(default), any].boxed()
}

pub fn defaults() -> impl Strategy<Value = Defaults> {
    let d = Defaults::default();
    (
        (
            or_default(d.d_bool, any::<bool>()),
            or_default(d.d_int32, any::<i32>()),
            or_default(d.d_int64, any::<i64>()),
            or_default(d.d_uint32, any::<u32>()),
            or_default(d.d_uint64, any::<u64>()),
            or_default(d.d_sint32, any::<i32>()),
        ),
        (
            or_default(d.d_sint64, any::<i64>()),
            or_default(d.d_fixed32, any::<u32>()),
            or_default(d.d_fixed64, any::<u64>()),
            or_default(d.d_sfixed32, any::<i32>()),
            or_default(d.d_sfixed64, any::<i64>()),
            or_default(d.d_float, f32_()),
        ),
        (
            or_default(d.d_double, f64_()),
            or_default(d.d_string.clone(), string()),
            or_default(d.d_bytes.clone(), bytes()),
            or_default(d.d_color, color()),
            or_default(d.d_zero, any::<i32>()),
        ),
    )
        .prop_map(|(a, b, c)| Defaults {
            d_bool: a.0,
            d_int32: a.1,
            d_int64: a.2,
            d_uint32: a.3,
            d_uint64: a.4,
            d_sint32: a.5,
            d_sint64: b.0,
            d_fixed32: b.1,
            d_fixed64: b.2,
            d_sfixed32: b.3,
            d_sfixed64: b.4,
            d_float: b.5,
            d_double: c.0,
            d_string: c.1,
            d_bytes: c.2,
            d_color: c.3,
            d_zero: c.4,
            ..Default::default()
        })
}

pub fn tree() -> impl Strategy<Value = Tree> {
    let leaf = any::<i32>().prop_map(|value| Tree {
        value,
        ..Default::default()
    });
    leaf.prop_recursive(4, 24, 3, |inner| {
        (
            any::<i32>(),
            proptest::option::of(inner.clone()),
            proptest::option::of(inner.clone()),
            vec(inner.clone(), 0..3),
            btree_map(string(), inner, 0..2),
        )
            .prop_map(|(value, left, right, children, forest)| Tree {
                value,
                left: left.map(Box::new),
                right: right.map(Box::new),
                children,
                forest,
                ..Default::default()
            })
    })
}

pub fn keywords() -> impl Strategy<Value = Keywords> {
    (
        (string(), any::<i32>(), any::<bool>(), list(color())),
        (any::<u32>(), string(), 0..4i32),
    )
        .prop_map(
            |((r#type, r#match, r#async, r#fn), (self_, super_, crate_))| Keywords {
                r#type,
                r#match,
                r#async,
                r#fn,
                self_,
                super_,
                crate_: Mode(crate_),
                ..Default::default()
            },
        )
}

pub fn all_types() -> impl Strategy<Value = AllTypes> {
    (
        scalars(),
        optionals(),
        repeateds(),
        maps(),
        defaults(),
        proptest::option::of(tree()),
        keywords(),
        any::<bool>(),
    )
        .prop_map(
            |(scalars, optionals, repeateds, maps, defaults, tree, keywords, empty)| AllTypes {
                scalars,
                optionals,
                repeateds,
                maps,
                defaults,
                tree,
                keywords,
                empty: empty.then(Empty::default),
                ..Default::default()
            },
        )
}
