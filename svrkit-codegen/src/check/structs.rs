//! Struct bodies: field ids, names, types, labels and defaults.

use std::collections::HashMap;

use super::{Checker, names, values};
use crate::ast;
use crate::error;
use crate::ident;
use crate::ir::{
    DefaultValue, Field, FieldType, PackageId, Reserved, Scalar, Struct, StructId, ValueType,
};

/// Field ids protobuf keeps for its own implementation; svrkit keeps them too so that its
/// `.proto` exports stay valid.
const IMPLEMENTATION_RESERVED: (i64, i64) = (19_000, 19_999);
const MAX_FIELD_ID: i64 = (1 << 29) - 1;

/// The IR entry for a struct, before its fields are checked.
pub(super) fn declare(package: PackageId, full_name: String, s: &ast::Struct) -> Struct {
    Struct {
        package,
        name: s.name.value.clone(),
        full_name,
        doc: values::doc(&s.doc),
        fields: Vec::new(),
        reserved: Reserved::default(),
        span: s.span,
    }
}

impl Checker<'_> {
    pub(super) fn struct_body(&mut self, file: &ast::File, s: &ast::Struct, id: StructId) {
        let reserved = values::reserved(&s.reserved, MAX_FIELD_ID, self.diags);
        let mut by_id: HashMap<i64, &ast::Text> = HashMap::new();
        let mut by_name: HashMap<&str, &ast::Text> = HashMap::new();
        let mut by_json: HashMap<String, &ast::Text> = HashMap::new();
        let mut out = Vec::new();
        for f in &s.fields {
            let name_ok = names::check_field_name(&f.name, self.diags);
            if let Some(first) = by_name.insert(&f.name.value, &f.name) {
                self.diags
                    .push(error::duplicate_name(&f.name, "field", first.span));
            } else if reserved.has_name(&f.name.value) {
                self.diags.push(error::name_reserved(&f.name));
            } else if let Some(first) = by_json.insert(
                // protoc compares JSON names ignoring case (proto3 makes a clash an error).
                ident::json_name(&f.name.value).to_ascii_lowercase(),
                &f.name,
            ) {
                self.diags.push(error::wire_name_collision(
                    &f.name,
                    &ident::json_name(&f.name.value),
                    &first.value,
                    first.span,
                ));
            }
            let field_id = self.field_id(f, &reserved, &mut by_id);
            let ty = self.field_type(file, f);
            let default = ty.and_then(|ty| self.default_value(f, ty));
            if let (true, Some(field_id), Some(ty)) = (name_ok, field_id, ty) {
                out.push(Field {
                    id: field_id,
                    name: f.name.value.clone(),
                    doc: values::doc(&f.doc),
                    ty,
                    default: default.flatten(),
                    boxed: false,
                    span: f.span,
                });
            }
        }
        // Id order is protobuf's canonical order: encoding in it makes svrkit's bytes equal to
        // any conforming encoder's.
        out.sort_by_key(|f| f.id);
        let ir = &mut self.schema.structs[id.0];
        ir.fields = out;
        ir.reserved = reserved;
    }

    fn field_id<'f>(
        &mut self,
        f: &'f ast::Field,
        reserved: &Reserved,
        seen: &mut HashMap<i64, &'f ast::Text>,
    ) -> Option<u32> {
        let id = values::integer(&f.id, "field id", 1, MAX_FIELD_ID, self.diags)?;
        if (IMPLEMENTATION_RESERVED.0..=IMPLEMENTATION_RESERVED.1).contains(&id) {
            self.diags.push(error::id_in_implementation_range(&f.id));
            return None;
        }
        if let Some(first) = seen.insert(id, &f.id) {
            self.diags
                .push(error::duplicate_id(&f.id, "field id", first.span));
            return None;
        }
        if reserved.has_id(id) {
            self.diags.push(error::id_reserved(&f.id));
            return None;
        }
        Some(id as u32)
    }

    fn field_type(&mut self, file: &ast::File, f: &ast::Field) -> Option<FieldType> {
        if f.ty.value == "map" {
            if let Some(label) = &f.label {
                self.diags.push(error::label_on_map(label));
            }
            let (Some(key), Some(value)) = (&f.key, &f.value) else {
                self.diags.push(error::map_needs_key_value(f));
                return None;
            };
            let key_ty = self.resolve(file.id, key);
            let key_ty = match key_ty {
                Some(ValueType::Scalar(s)) if s.is_map_key() => Some(s),
                Some(_) => {
                    self.diags.push(error::bad_map_key(key));
                    None
                }
                None => None,
            };
            if value.value == "map" {
                self.diags.push(error::map_of_map(value));
                return None;
            }
            let value_ty = self.resolve(file.id, value)?;
            return Some(FieldType::Map(key_ty?, value_ty));
        }
        for attr in [&f.key, &f.value].into_iter().flatten() {
            self.diags.push(error::key_value_without_map(attr));
        }
        let ty = self.resolve(file.id, &f.ty)?;
        match f.label.as_ref().map(|l| l.value.as_str()) {
            None => Some(FieldType::Singular(ty)),
            Some("optional") => Some(FieldType::Optional(ty)),
            Some("repeated") => Some(FieldType::Repeated(ty)),
            Some(_) => {
                let label = f.label.as_ref()?;
                self.diags.push(error::invalid_choice(
                    label,
                    "label",
                    &["optional", "repeated"],
                ));
                None
            }
        }
    }

    /// `Some(None)`: no default; `None`: an error was reported.
    fn default_value(&mut self, f: &ast::Field, ty: FieldType) -> Option<Option<DefaultValue>> {
        let Some(text) = &f.default else {
            return Some(None);
        };
        let FieldType::Singular(value_ty) = ty else {
            self.diags.push(error::default_not_allowed(
                text,
                "only singular fields (no label, not a map) have defaults",
            ));
            return None;
        };
        let raw = text.value.as_str();
        let parsed = match value_ty {
            ValueType::Struct(_) => {
                self.diags.push(error::default_not_allowed(
                    text,
                    "a struct's default is its fields' defaults",
                ));
                return None;
            }
            ValueType::Enum(e) => {
                let en = self.schema.enum_(e);
                match en.values.iter().find(|v| v.name == raw) {
                    Some(v) => Some(DefaultValue::Enum {
                        name: v.name.clone(),
                        number: v.number,
                    }),
                    None => {
                        let names: Vec<String> = en.values.iter().map(|v| v.name.clone()).collect();
                        self.diags
                            .push(error::bad_enum_default(text, &en.full_name, &names));
                        return None;
                    }
                }
            }
            ValueType::Scalar(s) => scalar_default(s, raw),
        };
        match parsed {
            Some(v) => Some(Some(v)),
            None => {
                let ValueType::Scalar(s) = value_ty else {
                    return None;
                };
                self.diags.push(error::bad_default(text, s.name()));
                None
            }
        }
    }
}

fn scalar_default(s: Scalar, raw: &str) -> Option<DefaultValue> {
    fn int<T: std::str::FromStr + Into<i64>>(raw: &str) -> Option<DefaultValue> {
        raw.parse::<T>().ok().map(|v| DefaultValue::Int(v.into()))
    }
    fn uint<T: std::str::FromStr + Into<u64>>(raw: &str) -> Option<DefaultValue> {
        raw.parse::<T>().ok().map(|v| DefaultValue::Uint(v.into()))
    }
    match s {
        Scalar::Bool => match raw {
            "true" => Some(DefaultValue::Bool(true)),
            "false" => Some(DefaultValue::Bool(false)),
            _ => None,
        },
        Scalar::Int32 | Scalar::Sint32 | Scalar::Sfixed32 => int::<i32>(raw),
        Scalar::Int64 | Scalar::Sint64 | Scalar::Sfixed64 => int::<i64>(raw),
        Scalar::Uint32 | Scalar::Fixed32 => uint::<u32>(raw),
        Scalar::Uint64 | Scalar::Fixed64 => uint::<u64>(raw),
        // Finite only: a NaN default would make "at its default" never true.
        Scalar::Float => raw
            .parse::<f32>()
            .ok()
            .filter(|v| v.is_finite())
            .map(|v| DefaultValue::Float(f64::from(v))),
        Scalar::Double => raw
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(DefaultValue::Float),
        Scalar::String => Some(DefaultValue::String(raw.to_owned())),
        Scalar::Bytes => Some(DefaultValue::Bytes(raw.as_bytes().to_vec())),
    }
}
