//! Which type changes keep values intact on the wire.
//!
//! The question asked of every change: does each value the *old* version can hold reach
//! the new version unchanged, and come back unchanged? That is what a rolling upgrade
//! needs, since every stored record and every old peer speaks the old version. A change that
//! fails it is wire-breaking. A change that passes it but changes the generated Rust (a
//! wider integer, `string` to `bytes`, a field becoming `optional`) is source-breaking only.
//!
//! The answers follow from `docs/wire-format.md`: integers of the varint family are written
//! as 64-bit two's complement, so one reads another's value unchanged exactly when the
//! value is in its range; zigzag and fixed-width integers only among themselves; a field
//! read with a wire type that does not fit it is kept as unknown, so its value is lost.

use crate::ir::{FieldType, Scalar, ValueType};

/// How a change affects values and code, worst last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing changes.
    Same,
    /// Values cross unchanged; the generated Rust changes. Says what.
    Source(String),
    /// Some value of the old version is lost or misread. Says which.
    Wire(String),
}

impl Verdict {
    fn rank(&self) -> u8 {
        match self {
            Verdict::Same => 0,
            Verdict::Source(_) => 1,
            Verdict::Wire(_) => 2,
        }
    }

    /// The worse of two verdicts; of two equally bad ones, both reasons.
    pub(crate) fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Wire(a), Verdict::Wire(b)) => Verdict::Wire(format!("{a}; {b}")),
            (Verdict::Source(a), Verdict::Source(b)) => Verdict::Source(format!("{a}; {b}")),
            (a, b) if a.rank() >= b.rank() => a,
            (_, b) => b,
        }
    }
}

/// How a scalar is written: two integers read each other's values only within one class,
/// and then exactly the values in both ranges.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Varint,
    Zigzag,
    Fixed32,
    Fixed64,
    Float,
    Double,
    Text,
    Bytes,
}

fn class(s: Scalar) -> (Class, i128, i128) {
    const I32: (i128, i128) = (i32::MIN as i128, i32::MAX as i128);
    const I64: (i128, i128) = (i64::MIN as i128, i64::MAX as i128);
    const U32: (i128, i128) = (0, u32::MAX as i128);
    const U64: (i128, i128) = (0, u64::MAX as i128);
    let (c, (lo, hi)) = match s {
        Scalar::Bool => (Class::Varint, (0, 1)),
        Scalar::Int32 => (Class::Varint, I32),
        Scalar::Int64 => (Class::Varint, I64),
        Scalar::Uint32 => (Class::Varint, U32),
        Scalar::Uint64 => (Class::Varint, U64),
        Scalar::Sint32 => (Class::Zigzag, I32),
        Scalar::Sint64 => (Class::Zigzag, I64),
        Scalar::Fixed32 => (Class::Fixed32, U32),
        Scalar::Sfixed32 => (Class::Fixed32, I32),
        Scalar::Fixed64 => (Class::Fixed64, U64),
        Scalar::Sfixed64 => (Class::Fixed64, I64),
        Scalar::Float => (Class::Float, (0, 0)),
        Scalar::Double => (Class::Double, (0, 0)),
        Scalar::String => (Class::Text, (0, 0)),
        Scalar::Bytes => (Class::Bytes, (0, 0)),
    };
    (c, lo, hi)
}

/// An enum is an open `int32` on the wire.
const ENUM: (Class, i128, i128) = (Class::Varint, i32::MIN as i128, i32::MAX as i128);

/// One side of a value type, as far as the rules need it.
#[derive(Clone, Copy)]
pub(crate) enum Shape<'a> {
    Scalar(Scalar),
    /// An enum, by name.
    Enum(&'a str),
    /// A struct, by name.
    Struct(&'a str),
}

impl Shape<'_> {
    fn numeric(self) -> Option<(Class, i128, i128)> {
        match self {
            Shape::Scalar(s) => Some(class(s)).filter(|(c, ..)| {
                !matches!(c, Class::Float | Class::Double | Class::Text | Class::Bytes)
            }),
            Shape::Enum(_) => Some(ENUM),
            Shape::Struct(_) => None,
        }
    }

    fn name(self) -> String {
        match self {
            Shape::Scalar(s) => s.name().to_owned(),
            Shape::Enum(n) => format!("enum `{n}`"),
            Shape::Struct(n) => format!("struct `{n}`"),
        }
    }
}

/// Whether values of `old` cross as `new` for two different types (the caller handles two
/// enums or two structs, whose contents decide).
pub(crate) fn values(old: Shape<'_>, new: Shape<'_>) -> Verdict {
    let became = || format!("{} became {}", old.name(), new.name());
    if let (Some((oc, olo, ohi)), Some((nc, nlo, nhi))) = (old.numeric(), new.numeric()) {
        if oc != nc {
            return Verdict::Wire(format!(
                "{}: written differently, so each side reads the other's value as unknown or as another number",
                became()
            ));
        }
        return if nlo <= olo && ohi <= nhi {
            Verdict::Source(became())
        } else {
            Verdict::Wire(format!(
                "{}: values from {olo} to {ohi} do not all fit in {nlo} to {nhi}, and the rest are misread",
                became()
            ))
        };
    }
    match (old, new) {
        (Shape::Scalar(Scalar::String), Shape::Scalar(Scalar::Bytes)) => Verdict::Source(became()),
        (Shape::Scalar(Scalar::Bytes), Shape::Scalar(Scalar::String)) => Verdict::Wire(format!(
            "{}: bytes that are not UTF-8 are rejected",
            became()
        )),
        (Shape::Struct(_), Shape::Scalar(Scalar::Bytes)) => {
            Verdict::Source(format!("{}: the bytes are the struct's encoding", became()))
        }
        _ => Verdict::Wire(format!(
            "{}: the values cannot be read as each other",
            became()
        )),
    }
}

/// Whether `old` values survive a change of label (`optional`, `repeated`, map), given the
/// verdict on the element types. `old_default_set` says whether the old field has a
/// non-zero default.
pub(crate) fn labels(
    old: FieldType,
    new: FieldType,
    element: Verdict,
    old_default_set: bool,
) -> Verdict {
    use FieldType::{Map, Optional, Repeated, Singular};
    let packable = |v: ValueType| {
        matches!(v, ValueType::Scalar(s) if s.is_packable()) || matches!(v, ValueType::Enum(_))
    };
    match (old, new) {
        (Singular(_), Singular(_)) | (Optional(_), Optional(_)) | (Repeated(_), Repeated(_)) => {
            element
        }
        (Map(_, _), Map(_, _)) => element,
        (Singular(_), Optional(_)) if old_default_set => element.and(Verdict::Wire(
            "became optional: an absent value read the declared default and now reads as unset"
                .to_owned(),
        )),
        (Singular(_), Optional(_)) => element.and(Verdict::Source("became optional".to_owned())),
        (Optional(_), Singular(_)) => element.and(Verdict::Wire(
            "no longer optional: a value set to zero now reads as unset".to_owned(),
        )),
        (Singular(v) | Optional(v), Repeated(_)) if packable(v) => element.and(Verdict::Wire(
            "became repeated: lists of numbers are packed, which a reader of one value keeps as unknown"
                .to_owned(),
        )),
        (Singular(_) | Optional(_), Repeated(_)) => element.and(Verdict::Source(
            "became repeated (a reader of the old version keeps only the last element of a longer list)"
                .to_owned(),
        )),
        (Repeated(_), Singular(_) | Optional(_)) => element.and(Verdict::Wire(
            "no longer repeated: a reader keeps only the last element".to_owned(),
        )),
        (Map(_, _), _) | (_, Map(_, _)) => element.and(Verdict::Wire(
            "changed to or from a map: entries and values are written differently".to_owned(),
        )),
    }
}
