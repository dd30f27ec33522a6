//! One scalar or enum value: read from JSON, written to and read from the wire through the
//! runtime's own `Kind`s (so the bytes are the generated code's), and shown as JSON.

use base64::Engine;
use serde_json::{Number, Value as Json};
use svrkit_runtime::codec::kind::{self, Kind};
use svrkit_runtime::codec::{DecodeError, Decoder, WireType};
use svrkit_runtime::{Bytes, FastStr};

use svrkit_codegen::ir::{DefaultValue, Enum, Scalar, Schema, ValueType};
use svrkit_codegen::proto::enum_value_name;

/// A value of a scalar or enum field (enums are their `int32` number).
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Val {
    Bool(bool),
    I32(i32),
    I64(i64),
    U32(u32),
    U64(u64),
    F32(f32),
    F64(f64),
    Str(String),
    Bytes(Vec<u8>),
}

/// A leaf type: a scalar, or an enum (whose wire form is `int32`).
#[derive(Clone, Copy)]
pub(super) enum Leaf<'s> {
    Scalar(Scalar),
    Enum(&'s Enum),
}

impl<'s> Leaf<'s> {
    /// The leaf of a value type; `None` for structs.
    pub(super) fn of(schema: &'s Schema, ty: ValueType) -> Option<Leaf<'s>> {
        match ty {
            ValueType::Scalar(s) => Some(Leaf::Scalar(s)),
            ValueType::Enum(e) => Some(Leaf::Enum(schema.enum_(e))),
            ValueType::Struct(_) => None,
        }
    }

    /// The scalar that carries it on the wire.
    fn scalar(self) -> Scalar {
        match self {
            Leaf::Scalar(s) => s,
            Leaf::Enum(_) => Scalar::Int32,
        }
    }

    pub(super) fn wire_type(self) -> WireType {
        match self.scalar() {
            Scalar::Fixed64 | Scalar::Sfixed64 | Scalar::Double => WireType::SixtyFourBit,
            Scalar::Fixed32 | Scalar::Sfixed32 | Scalar::Float => WireType::ThirtyTwoBit,
            Scalar::String | Scalar::Bytes => WireType::LengthDelimited,
            _ => WireType::Varint,
        }
    }

    pub(super) fn is_packable(self) -> bool {
        self.scalar().is_packable()
    }

    /// The type's zero value: what an absent map key or value reads as.
    pub(super) fn zero(self) -> Val {
        match self.scalar() {
            Scalar::Bool => Val::Bool(false),
            Scalar::Int32 | Scalar::Sint32 | Scalar::Sfixed32 => Val::I32(0),
            Scalar::Int64 | Scalar::Sint64 | Scalar::Sfixed64 => Val::I64(0),
            Scalar::Uint32 | Scalar::Fixed32 => Val::U32(0),
            Scalar::Uint64 | Scalar::Fixed64 => Val::U64(0),
            Scalar::Float => Val::F32(0.0),
            Scalar::Double => Val::F64(0.0),
            Scalar::String => Val::Str(String::new()),
            Scalar::Bytes => Val::Bytes(Vec::new()),
        }
    }

    /// The value of an IDL `default="..."`.
    pub(super) fn default_value(self, d: &DefaultValue) -> Val {
        // The checker only accepts defaults that fit the type, so the casts are exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        match (self.scalar(), d) {
            (_, DefaultValue::Bool(b)) => Val::Bool(*b),
            (_, DefaultValue::Enum { number, .. }) => Val::I32(*number),
            (Scalar::Int32 | Scalar::Sint32 | Scalar::Sfixed32, DefaultValue::Int(i)) => {
                Val::I32(*i as i32)
            }
            (Scalar::Uint32 | Scalar::Fixed32, DefaultValue::Uint(u)) => Val::U32(*u as u32),
            (Scalar::Uint32 | Scalar::Fixed32, DefaultValue::Int(i)) => Val::U32(*i as u32),
            (Scalar::Uint64 | Scalar::Fixed64, DefaultValue::Uint(u)) => Val::U64(*u),
            (Scalar::Uint64 | Scalar::Fixed64, DefaultValue::Int(i)) => Val::U64(*i as u64),
            (_, DefaultValue::Int(i)) => Val::I64(*i),
            (_, DefaultValue::Uint(u)) => Val::I64(*u as i64),
            (Scalar::Float, DefaultValue::Float(f)) => Val::F32(*f as f32),
            (_, DefaultValue::Float(f)) => Val::F64(*f),
            (_, DefaultValue::String(s)) => Val::Str(s.clone()),
            (_, DefaultValue::Bytes(b)) => Val::Bytes(b.clone()),
        }
    }

    /// Whether `v` is the type's zero, which singular fields and map entries leave out
    /// (floats by their bits, so -0.0 is written).
    pub(super) fn is_zero(self, v: &Val) -> bool {
        match v {
            Val::Bool(b) => kind::Bool::is_default(b),
            Val::I32(n) => kind::Int32::is_default(n),
            Val::I64(n) => kind::Int64::is_default(n),
            Val::U32(n) => kind::Uint32::is_default(n),
            Val::U64(n) => kind::Uint64::is_default(n),
            Val::F32(f) => kind::Float::is_default(f),
            Val::F64(f) => kind::Double::is_default(f),
            Val::Str(s) => s.is_empty(),
            Val::Bytes(b) => b.is_empty(),
        }
    }

    /// Appends the value (no key), exactly as the generated code does.
    pub(super) fn encode(self, v: &Val, buf: &mut Vec<u8>) {
        match (self.scalar(), v) {
            (Scalar::Bool, Val::Bool(b)) => kind::Bool::encode(b, buf),
            (Scalar::Int32, Val::I32(n)) => kind::Int32::encode(n, buf),
            (Scalar::Sint32, Val::I32(n)) => kind::Sint32::encode(n, buf),
            (Scalar::Sfixed32, Val::I32(n)) => kind::Sfixed32::encode(n, buf),
            (Scalar::Int64, Val::I64(n)) => kind::Int64::encode(n, buf),
            (Scalar::Sint64, Val::I64(n)) => kind::Sint64::encode(n, buf),
            (Scalar::Sfixed64, Val::I64(n)) => kind::Sfixed64::encode(n, buf),
            (Scalar::Uint32, Val::U32(n)) => kind::Uint32::encode(n, buf),
            (Scalar::Fixed32, Val::U32(n)) => kind::Fixed32::encode(n, buf),
            (Scalar::Uint64, Val::U64(n)) => kind::Uint64::encode(n, buf),
            (Scalar::Fixed64, Val::U64(n)) => kind::Fixed64::encode(n, buf),
            (Scalar::Float, Val::F32(f)) => kind::Float::encode(f, buf),
            (Scalar::Double, Val::F64(f)) => kind::Double::encode(f, buf),
            (Scalar::String, Val::Str(s)) => kind::String::encode(&FastStr::new(s), buf),
            (Scalar::Bytes, Val::Bytes(b)) => {
                kind::Bytes::encode(&Bytes::copy_from_slice(b), buf);
            }
            (s, v) => unreachable!("a {v:?} made for {}", s.name()),
        }
    }

    /// Reads one value.
    pub(super) fn decode(self, d: &mut Decoder<'_>) -> Result<Val, DecodeError> {
        Ok(match self.scalar() {
            Scalar::Bool => Val::Bool(kind::Bool::decode(d)?),
            Scalar::Int32 => Val::I32(kind::Int32::decode(d)?),
            Scalar::Sint32 => Val::I32(kind::Sint32::decode(d)?),
            Scalar::Sfixed32 => Val::I32(kind::Sfixed32::decode(d)?),
            Scalar::Int64 => Val::I64(kind::Int64::decode(d)?),
            Scalar::Sint64 => Val::I64(kind::Sint64::decode(d)?),
            Scalar::Sfixed64 => Val::I64(kind::Sfixed64::decode(d)?),
            Scalar::Uint32 => Val::U32(kind::Uint32::decode(d)?),
            Scalar::Fixed32 => Val::U32(kind::Fixed32::decode(d)?),
            Scalar::Uint64 => Val::U64(kind::Uint64::decode(d)?),
            Scalar::Fixed64 => Val::U64(kind::Fixed64::decode(d)?),
            Scalar::Float => Val::F32(kind::Float::decode(d)?),
            Scalar::Double => Val::F64(kind::Double::decode(d)?),
            Scalar::String => Val::Str(kind::String::decode(d)?.to_string()),
            Scalar::Bytes => Val::Bytes(kind::Bytes::decode(d)?.to_vec()),
        })
    }

    /// Reads a value from JSON (the protobuf JSON mapping: 64-bit integers may be strings,
    /// bytes are base64, enums are names or numbers, floats may be `"NaN"`/`"Infinity"`).
    pub(super) fn read_json(self, j: &Json) -> Result<Val, String> {
        let scalar = self.scalar();
        let name = self.type_name();
        match (self, scalar) {
            (Leaf::Enum(e), _) => enum_from_json(e, j),
            (_, Scalar::Bool) => j
                .as_bool()
                .map(Val::Bool)
                .ok_or_else(|| expected("true or false", j)),
            (_, Scalar::String) => j
                .as_str()
                .map(|s| Val::Str(s.to_owned()))
                .ok_or_else(|| expected("a string", j)),
            (_, Scalar::Bytes) => {
                let s = j.as_str().ok_or_else(|| expected("a base64 string", j))?;
                decode_base64(s).map(Val::Bytes)
            }
            (_, Scalar::Float) => {
                let f = float_from_json(j)?;
                // Out of range is an error rather than a silent infinity.
                #[allow(clippy::cast_possible_truncation)]
                let narrow = f as f32;
                if f.is_finite() && narrow.is_infinite() {
                    return Err(format!("{f} is out of range for float"));
                }
                Ok(Val::F32(narrow))
            }
            (_, Scalar::Double) => float_from_json(j).map(Val::F64),
            (_, _) => {
                let n = int_from_json(j)?;
                let out_of_range = || format!("{n} is out of range for {name}");
                Ok(match scalar {
                    Scalar::Int32 | Scalar::Sint32 | Scalar::Sfixed32 => {
                        Val::I32(i32::try_from(n).map_err(|_| out_of_range())?)
                    }
                    Scalar::Int64 | Scalar::Sint64 | Scalar::Sfixed64 => {
                        Val::I64(i64::try_from(n).map_err(|_| out_of_range())?)
                    }
                    Scalar::Uint32 | Scalar::Fixed32 => {
                        Val::U32(u32::try_from(n).map_err(|_| out_of_range())?)
                    }
                    _ => Val::U64(u64::try_from(n).map_err(|_| out_of_range())?),
                })
            }
        }
    }

    /// Shows a value as JSON: 64-bit integers as strings, bytes as base64, enums by name
    /// (as the `.proto` export spells it; a number the IDL does not name stays a number).
    pub(super) fn to_json(self, v: &Val) -> Json {
        match v {
            Val::Bool(b) => Json::Bool(*b),
            Val::I32(n) => match self {
                Leaf::Enum(e) => e
                    .values
                    .iter()
                    .find(|x| x.number == *n)
                    .map_or(Json::from(*n), |x| {
                        Json::String(enum_value_name(&e.name, &x.name))
                    }),
                Leaf::Scalar(_) => Json::from(*n),
            },
            Val::U32(n) => Json::from(*n),
            Val::I64(n) => Json::String(n.to_string()),
            Val::U64(n) => Json::String(n.to_string()),
            // Through the shortest decimal that reads back as the same f32 (`0.1`, not
            // `0.10000000149011612`).
            Val::F32(f) => float_to_json(f64::from(*f), || f.to_string()),
            Val::F64(f) => float_to_json(*f, || f.to_string()),
            Val::Str(s) => Json::String(s.clone()),
            Val::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        }
    }

    /// Reads a map key, which JSON always writes as a string.
    pub(super) fn read_json_key(self, key: &str) -> Result<Val, String> {
        match self.scalar() {
            Scalar::String => Ok(Val::Str(key.to_owned())),
            Scalar::Bool => match key {
                "true" => Ok(Val::Bool(true)),
                "false" => Ok(Val::Bool(false)),
                _ => Err(format!("map key `{key}` is not true or false")),
            },
            _ => self.read_json(&Json::String(key.to_owned())),
        }
    }

    /// A map key as JSON writes it.
    pub(super) fn key_to_json(self, v: &Val) -> String {
        match self.to_json(v) {
            Json::String(s) => s,
            other => other.to_string(),
        }
    }

    fn type_name(self) -> &'static str {
        self.scalar().name()
    }
}

/// Map keys in the order the generated `BTreeMap` keeps them (and so writes them).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum MapKey {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Str(String),
}

impl MapKey {
    pub(super) fn of(v: &Val) -> MapKey {
        match v {
            Val::Bool(b) => MapKey::Bool(*b),
            Val::I32(n) => MapKey::Int(i64::from(*n)),
            Val::I64(n) => MapKey::Int(*n),
            Val::U32(n) => MapKey::Uint(u64::from(*n)),
            Val::U64(n) => MapKey::Uint(*n),
            Val::Str(s) => MapKey::Str(s.clone()),
            // Not map key types: the checker rejects them.
            Val::F32(_) | Val::F64(_) | Val::Bytes(_) => unreachable!("a map keyed by {v:?}"),
        }
    }
}

fn expected(what: &str, found: &Json) -> String {
    if found.is_null() {
        return format!("expected {what}, found null");
    }
    let kind = match found {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    };
    format!("expected {what}, found {kind} `{found}`")
}

fn int_from_json(j: &Json) -> Result<i128, String> {
    match j {
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                Ok(i128::from(u))
            } else {
                // `1e3` is an integer too; `1.5` is not, nor is anything past 2^53, where a
                // double no longer holds every integer (`-9223372036854775809` would read as
                // -2^63): those must be written as strings.
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                    #[allow(clippy::cast_possible_truncation)]
                    Ok(f as i128)
                } else {
                    Err(format!(
                        "{n} is not an integer that a JSON number holds exactly (give it as a string)"
                    ))
                }
            }
        }
        // Decimal digits, or a number in exponent form that is still an exact integer
        // (`"1e2"`, as protobuf's JSON parsers read it).
        Json::String(s) => s
            .parse::<i128>()
            .ok()
            .or_else(|| exact_integer(s))
            .ok_or_else(|| format!("`{s}` is not an integer")),
        other => Err(expected("an integer", other)),
    }
}

/// A decimal in exponent form that is an integer, exactly (`"1e18"`, `"12.5e1"`), without
/// going through a double (which holds integers exactly only up to 2^53).
fn exact_integer(s: &str) -> Option<i128> {
    let (mantissa, exponent) = s.split_once(['e', 'E']).unwrap_or((s, "0"));
    let exponent: i32 = exponent.parse().ok()?;
    let (negative, digits) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa.strip_prefix('+').unwrap_or(mantissa)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    // The digits as one integer, and where the decimal point sits after the exponent.
    let all = format!("{whole}{fraction}");
    let shift = exponent - i32::try_from(fraction.len()).ok()?;
    let trimmed = all.trim_start_matches('0');
    let mut value: i128 = if trimmed.is_empty() {
        0
    } else {
        trimmed.parse().ok()?
    };
    if shift >= 0 {
        for _ in 0..shift.min(40) {
            value = value.checked_mul(10)?;
        }
        if shift > 40 && value != 0 {
            return None;
        }
    } else {
        for _ in 0..(-shift).min(40) {
            if value % 10 != 0 {
                return None;
            }
            value /= 10;
        }
    }
    Some(if negative { -value } else { value })
}

fn float_from_json(j: &Json) -> Result<f64, String> {
    match j {
        Json::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a number")),
        Json::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => s
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| format!("`{s}` is not a number")),
        },
        other => Err(expected("a number", other)),
    }
}

fn float_to_json(f: f64, shortest: impl FnOnce() -> String) -> Json {
    if f.is_nan() {
        Json::String("NaN".into())
    } else if f.is_infinite() {
        Json::String(if f > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        let f = shortest().parse::<f64>().unwrap_or(f);
        Number::from_f64(f).map_or(Json::Null, Json::Number)
    }
}

fn enum_from_json(e: &Enum, j: &Json) -> Result<Val, String> {
    match j {
        Json::String(s) => e
            .values
            .iter()
            .find(|v| enum_value_name(&e.name, &v.name) == *s || v.name == *s)
            .map(|v| Val::I32(v.number))
            .ok_or_else(|| {
                let names: Vec<String> = e
                    .values
                    .iter()
                    .map(|v| enum_value_name(&e.name, &v.name))
                    .collect();
                format!(
                    "`{s}` is not a value of enum {} (it has {})",
                    e.full_name,
                    names.join(", ")
                )
            }),
        Json::Number(_) => {
            let n = int_from_json(j)?;
            i32::try_from(n)
                .map(Val::I32)
                .map_err(|_| format!("{n} is out of range for enum {}", e.full_name))
        }
        other => Err(expected("an enum value name or number", other)),
    }
}

fn decode_base64(s: &str) -> Result<Vec<u8>, String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    // The JSON mapping writes standard base64 with padding and reads either alphabet, padded
    // or not.
    let url = s.contains(['-', '_']);
    let padded = s.ends_with('=');
    let engine = match (url, padded) {
        (false, true) => STANDARD,
        (false, false) => STANDARD_NO_PAD,
        (true, true) => URL_SAFE,
        (true, false) => URL_SAFE_NO_PAD,
    };
    engine
        .decode(s)
        .map_err(|e| format!("`{s}` is not base64: {e}"))
}
