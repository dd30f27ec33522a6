//! JSON to bytes, field by field as the generated `encode_raw` writes them.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};
use svrkit_runtime::codec::wire::{self, WireType};
use svrkit_runtime::codec::{MAX_DEPTH, kind::put_len_prefixed};

use super::JsonError;
use super::path::Path;
use super::value::{Leaf, MapKey};
use svrkit_codegen::ir::{Field, FieldType, Schema, StructId, ValueType};
use svrkit_codegen::json_name;

pub(super) struct Encoder<'s> {
    pub(super) schema: &'s Schema,
}

impl Encoder<'_> {
    /// Writes the fields of struct `id` given as the JSON object `j`.
    pub(super) fn struct_(
        &self,
        id: StructId,
        j: &Json,
        path: &mut Path,
        buf: &mut Vec<u8>,
    ) -> Result<(), JsonError> {
        let s = self.schema.struct_(id);
        let Json::Object(obj) = j else {
            return Err(path.error(format!(
                "expected an object for {}, found `{j}`",
                s.full_name
            )));
        };
        if path.depth() > MAX_DEPTH as usize {
            return Err(path.error(format!("structs nest more than {MAX_DEPTH} deep")));
        }
        let values = self.fields_of(id, obj, path)?;
        // The IR keeps fields in id order, the order the generated code writes them in.
        for (f, v) in s.fields.iter().zip(values) {
            let Some(v) = v else { continue };
            path.push_field(&f.name);
            self.field(f, v, path, buf)?;
            path.pop();
        }
        Ok(())
    }

    /// The object's value for each field of the struct (by IDL name or its lowerCamelCase
    /// JSON name; `null` is absent), after checking that it names no other field.
    fn fields_of<'j>(
        &self,
        id: StructId,
        obj: &'j Map<String, Json>,
        path: &Path,
    ) -> Result<Vec<Option<&'j Json>>, JsonError> {
        let s = self.schema.struct_(id);
        let mut values = vec![None; s.fields.len()];
        for (name, v) in obj {
            let Some(i) = s
                .fields
                .iter()
                .position(|f| f.name == *name || json_name(&f.name) == *name)
            else {
                let names = s.fields.iter().map(|f| f.name.as_str());
                return Err(path.error(unknown_field(name, &s.full_name, names)));
            };
            if values[i].is_some() {
                return Err(path.error(format!(
                    "field `{}` is given twice (as `{}` and `{name}`)",
                    s.fields[i].name,
                    json_name(&s.fields[i].name)
                )));
            }
            if !v.is_null() {
                values[i] = Some(v);
            }
        }
        Ok(values)
    }

    fn field(
        &self,
        f: &Field,
        j: &Json,
        path: &mut Path,
        buf: &mut Vec<u8>,
    ) -> Result<(), JsonError> {
        match f.ty {
            // A singular struct that encodes to nothing is left out, as `encode_message` does.
            FieldType::Singular(ValueType::Struct(id)) => {
                self.nested(f.id, id, j, Empty::LeftOut, path, buf)
            }
            FieldType::Optional(ValueType::Struct(id)) => {
                self.nested(f.id, id, j, Empty::Written, path, buf)
            }
            FieldType::Singular(ty) => {
                let leaf = self.leaf(ty);
                let v = leaf.read_json(j).map_err(|e| path.error(e))?;
                let at_default = match &f.default {
                    Some(d) if !d.is_zero() => v == leaf.default_value(d),
                    _ => leaf.is_zero(&v),
                };
                if !at_default {
                    wire::put_varint(buf, key(f.id, leaf.wire_type()));
                    leaf.encode(&v, buf);
                }
                Ok(())
            }
            FieldType::Optional(ty) => {
                let leaf = self.leaf(ty);
                let v = leaf.read_json(j).map_err(|e| path.error(e))?;
                wire::put_varint(buf, key(f.id, leaf.wire_type()));
                leaf.encode(&v, buf);
                Ok(())
            }
            FieldType::Repeated(ty) => self.list(f, ty, j, path, buf),
            FieldType::Map(k, v) => self.map(f, Leaf::Scalar(k), v, j, path, buf),
        }
    }

    fn list(
        &self,
        f: &Field,
        ty: ValueType,
        j: &Json,
        path: &mut Path,
        buf: &mut Vec<u8>,
    ) -> Result<(), JsonError> {
        let Json::Array(items) = j else {
            return Err(path.error(format!("expected an array, found `{j}`")));
        };
        if items.is_empty() {
            return Ok(());
        }
        match Leaf::of(self.schema, ty) {
            // Numbers, bools and enums are packed into one field.
            Some(leaf) if leaf.is_packable() => {
                let mut values = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    path.push_index(i);
                    values.push(leaf.read_json(item).map_err(|e| path.error(e))?);
                    path.pop();
                }
                wire::put_varint(buf, key(f.id, WireType::LengthDelimited));
                put_len_prefixed(buf, |buf| {
                    for v in &values {
                        leaf.encode(v, buf);
                    }
                });
            }
            Some(leaf) => {
                for (i, item) in items.iter().enumerate() {
                    path.push_index(i);
                    let v = leaf.read_json(item).map_err(|e| path.error(e))?;
                    path.pop();
                    wire::put_varint(buf, key(f.id, leaf.wire_type()));
                    leaf.encode(&v, buf);
                }
            }
            None => {
                let ValueType::Struct(id) = ty else {
                    unreachable!()
                };
                for (i, item) in items.iter().enumerate() {
                    path.push_index(i);
                    self.nested(f.id, id, item, Empty::Written, path, buf)?;
                    path.pop();
                }
            }
        }
        Ok(())
    }

    fn map(
        &self,
        f: &Field,
        key_leaf: Leaf<'_>,
        value_ty: ValueType,
        j: &Json,
        path: &mut Path,
        buf: &mut Vec<u8>,
    ) -> Result<(), JsonError> {
        let Json::Object(obj) = j else {
            return Err(path.error(format!("expected an object, found `{j}`")));
        };
        // In key order, as a `BTreeMap` writes them.
        let mut entries = BTreeMap::new();
        for (k, v) in obj {
            path.push_key(k);
            let key_val = key_leaf.read_json_key(k).map_err(|e| path.error(e))?;
            path.pop();
            entries.insert(MapKey::of(&key_val), (key_val, k, v));
        }
        for (key_val, k, v) in entries.into_values() {
            path.push_key(k);
            wire::put_varint(buf, key(f.id, WireType::LengthDelimited));
            let mut result = Ok(());
            put_len_prefixed(buf, |buf| {
                if !key_leaf.is_zero(&key_val) {
                    wire::put_varint(buf, key(1, key_leaf.wire_type()));
                    key_leaf.encode(&key_val, buf);
                }
                result = self.map_value(value_ty, v, path, buf);
            });
            result?;
            path.pop();
        }
        Ok(())
    }

    /// Field 2 of a map entry, left out at its default.
    fn map_value(
        &self,
        ty: ValueType,
        j: &Json,
        path: &mut Path,
        buf: &mut Vec<u8>,
    ) -> Result<(), JsonError> {
        if j.is_null() {
            return Ok(());
        }
        match Leaf::of(self.schema, ty) {
            Some(leaf) => {
                let v = leaf.read_json(j).map_err(|e| path.error(e))?;
                if !leaf.is_zero(&v) {
                    wire::put_varint(buf, key(2, leaf.wire_type()));
                    leaf.encode(&v, buf);
                }
                Ok(())
            }
            None => {
                let ValueType::Struct(id) = ty else {
                    unreachable!()
                };
                self.nested(2, id, j, Empty::LeftOut, path, buf)
            }
        }
    }

    /// A struct as field `field_id`: length-prefixed, and left out when it encodes to
    /// nothing if `empty` says so.
    fn nested(
        &self,
        field_id: u32,
        id: StructId,
        j: &Json,
        empty: Empty,
        path: &mut Path,
        buf: &mut Vec<u8>,
    ) -> Result<(), JsonError> {
        let start = buf.len();
        wire::put_varint(buf, key(field_id, WireType::LengthDelimited));
        let mut result = Ok(());
        let len = put_len_prefixed(buf, |buf| result = self.struct_(id, j, path, buf));
        if len == 0 && empty == Empty::LeftOut {
            buf.truncate(start);
        }
        result
    }

    fn leaf(&self, ty: ValueType) -> Leaf<'_> {
        Leaf::of(self.schema, ty).expect("struct fields are handled before leaves")
    }
}

/// Whether a struct that encodes to nothing is written (optional fields, list elements) or
/// left out (singular fields, map values), as the generated code does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Empty {
    Written,
    LeftOut,
}

fn key(field_id: u32, wt: WireType) -> u64 {
    u64::from(wire::key(field_id, wt))
}

fn unknown_field<'a>(
    name: &str,
    struct_name: &str,
    names: impl Iterator<Item = &'a str>,
) -> String {
    let names: Vec<&str> = names.collect();
    let close = names
        .iter()
        .filter(|n| strsim::jaro_winkler(n, name) > 0.8)
        .max_by(|a, b| strsim::jaro_winkler(a, name).total_cmp(&strsim::jaro_winkler(b, name)));
    match close {
        Some(n) => format!("unknown field `{name}` in {struct_name}; did you mean `{n}`?"),
        None if names.is_empty() => format!("unknown field `{name}`: {struct_name} has no fields"),
        None => format!(
            "unknown field `{name}` in {struct_name} (its fields: {})",
            names.join(", ")
        ),
    }
}
