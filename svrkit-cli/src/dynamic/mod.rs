//! The codec driven by the checked IR instead of generated code: JSON in, the bytes the
//! generated struct would write out; bytes in, JSON out.
//!
//! This is what lets `svrkit call` and `svrkit bench` talk to any svrkit service with nothing
//! but its IDL: no reflection endpoint on the server, no code generated for the tool. It
//! must agree with the generated codec byte for byte (`tests/json_mapping.rs` checks every
//! IDL type both ways), so it follows `docs/wire-format.md` field by field and writes and
//! reads every scalar through the runtime's own `Kind`s.
//!
//! # The JSON mapping
//!
//! protobuf's proto3 JSON mapping, with the IDL's names:
//!
//! | IDL | JSON |
//! |---|---|
//! | struct | object; keys are field names as in the IDL (the lowerCamelCase JSON name is read too) |
//! | `bool`, `string` | `true`/`false`, string |
//! | 32-bit integers | number (a decimal string is read too) |
//! | 64-bit integers | decimal string (a number is read too) |
//! | `float`, `double` | number, or `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | `bytes` | base64 (standard, padded; URL-safe and unpadded are read too) |
//! | enum | value name as the `.proto` export spells it (`MSG_TYPE_TEXT`; the IDL's `TEXT` is read too), or a number the IDL does not name |
//! | `repeated` | array |
//! | `map` | object; keys are strings (`"42"`, `"true"`) |
//!
//! Output leaves out what the wire leaves out: singular fields at their default, empty lists
//! and maps, unset `optional` fields. `null` reads as absent. A field the struct does not
//! declare, a value of the wrong type or out of its type's range is an error naming where
//! it is (`items[2].uin: 4294967296 is out of range for uint32`).

mod decode;
mod encode;
mod path;
mod value;

use std::fmt;

use serde_json::Value as Json;
use svrkit_runtime::codec::{DecodeError, Decoder};

use svrkit_codegen::ir::{Method, Schema, Service, StructId};

/// Encodes and decodes the structs of a schema from and to JSON.
#[derive(Clone, Copy)]
pub struct DynamicCodec<'s> {
    schema: &'s Schema,
}

impl<'s> DynamicCodec<'s> {
    /// A codec for the structs of `schema`.
    pub fn new(schema: &'s Schema) -> DynamicCodec<'s> {
        DynamicCodec { schema }
    }

    /// The struct with this full name (`im.message.Message`).
    pub fn struct_named(&self, full_name: &str) -> Option<StructId> {
        (0..self.schema.structs.len())
            .map(StructId)
            .find(|&id| self.schema.struct_(id).full_name == full_name)
    }

    /// The method named `Service.Method` or `package.Service.Method`.
    ///
    /// # Errors
    /// A one-line message naming the methods the schema has.
    pub fn method(&self, name: &str) -> Result<(&'s Service, &'s Method), String> {
        let found: Vec<(&Service, &Method)> = self
            .schema
            .services
            .iter()
            .flat_map(|s| s.methods.iter().map(move |m| (s, m)))
            .filter(|(s, m)| {
                name == format!("{}.{}", s.full_name, m.name)
                    || name == format!("{}.{}", s.name, m.name)
            })
            .collect();
        if let [_, _, ..] = found.as_slice() {
            let all: Vec<String> = found
                .iter()
                .map(|(s, m)| format!("{}.{}", s.full_name, m.name))
                .collect();
            return Err(format!(
                "`{name}` is ambiguous: say which, {}",
                all.join(" or ")
            ));
        }
        let found = found.first().copied();
        found.ok_or_else(|| {
            let all: Vec<String> = self
                .schema
                .services
                .iter()
                .flat_map(|s| {
                    s.methods
                        .iter()
                        .map(move |m| format!("{}.{}", s.name, m.name))
                })
                .collect();
            if all.is_empty() {
                format!("unknown method `{name}`: the IDL declares no service")
            } else {
                format!("unknown method `{name}` (the IDL has {})", all.join(", "))
            }
        })
    }

    /// The bytes the generated code of struct `id` writes for the value `json`.
    ///
    /// # Errors
    /// When `json` is not a value of the struct: an unknown field, a wrong type, a number out
    /// of range. The error says where.
    pub fn encode(&self, id: StructId, json: &Json) -> Result<Vec<u8>, JsonError> {
        let mut buf = Vec::new();
        encode::Encoder {
            schema: self.schema,
        }
        .struct_(id, json, &mut path::Path::default(), &mut buf)?;
        Ok(buf)
    }

    /// The JSON of the encoded struct `id` in `bytes`.
    ///
    /// # Errors
    /// When the bytes are malformed, as the generated decoder would say (with the same
    /// limits on nesting and memory).
    pub fn decode(&self, id: StructId, bytes: &[u8]) -> Result<Json, DynamicDecodeError> {
        let reader = decode::Reader {
            schema: self.schema,
        };
        let mut acc = reader.new_acc(id);
        reader
            .merge(&mut acc, &mut Decoder::new(bytes))
            .map_err(|e| DynamicDecodeError {
                path: e.path,
                error: e.error,
            })?;
        Ok(reader.to_json(&acc))
    }
}

/// A JSON value that does not fit the struct it is meant for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// Where, as `field.list[2].map["key"]` (empty: the top level).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for JsonError {}

/// Bytes that do not decode as the struct they are meant to be.
#[derive(Debug, Clone)]
pub struct DynamicDecodeError {
    path: Vec<String>,
    error: DecodeError,
}

impl fmt::Display for DynamicDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("failed to decode: ")?;
        for field in &self.path {
            write!(f, "{field}: ")?;
        }
        self.error.kind().fmt(f)
    }
}

impl std::error::Error for DynamicDecodeError {}
