//! Enum bodies: value names and numbers.

use std::collections::HashMap;

use super::{Checker, names, values};
use crate::ast;
use crate::error;
use crate::ir::{Enum, EnumId, EnumValue, PackageId, Reserved};

/// The IR entry for an enum, before its values are checked.
pub(super) fn declare(package: PackageId, full_name: String, e: &ast::Enum) -> Enum {
    Enum {
        package,
        name: e.name.value.clone(),
        full_name,
        doc: values::doc(&e.doc),
        values: Vec::new(),
        reserved: Reserved::default(),
        span: e.span,
    }
}

impl Checker<'_> {
    pub(super) fn enum_body(&mut self, e: &ast::Enum, id: EnumId) {
        let reserved = values::reserved(&e.reserved, i64::from(i32::MAX), self.diags);
        let mut by_number: HashMap<i32, &ast::Text> = HashMap::new();
        let mut by_name: HashMap<&str, &ast::Text> = HashMap::new();
        let mut by_wire: HashMap<String, &ast::Text> = HashMap::new();
        let mut by_protoc: HashMap<String, &ast::Text> = HashMap::new();
        let mut out = Vec::new();
        for v in &e.values {
            let name_ok = names::check_enum_value_name(&v.name, self.diags);
            let number = values::integer(
                &v.id,
                "enum value",
                i64::from(i32::MIN),
                i64::from(i32::MAX),
                self.diags,
            )
            .map(|n| n as i32);
            if let Some(first) = by_name.insert(&v.name.value, &v.name) {
                self.diags
                    .push(error::duplicate_name(&v.name, "enum value", first.span));
            } else if reserved.has_name(&v.name.value) {
                self.diags.push(error::name_reserved(&v.name));
            } else {
                // `OFF` would be `MODE_OFF` beside a `MODE_OFF`: one name for two numbers.
                let wire = crate::proto::enum_value_name(&e.name.value, &v.name.value);
                let key = crate::proto::protoc_enum_value_key(&e.name.value, &wire);
                if let Some(first) = by_wire.insert(wire.clone(), &v.name) {
                    self.diags.push(error::wire_name_collision(
                        &v.name,
                        &wire,
                        &first.value,
                        first.span,
                    ));
                } else if let Some(first) = by_protoc.insert(key.clone(), &v.name) {
                    self.diags
                        .push(error::protoc_enum_value_clash(&v.name, &key, first));
                }
            }
            let Some(number) = number else { continue };
            if let Some(first) = by_number.insert(number, &v.id) {
                self.diags
                    .push(error::duplicate_id(&v.id, "enum value number", first.span));
                continue;
            }
            if reserved.has_id(i64::from(number)) {
                self.diags.push(error::id_reserved(&v.id));
                continue;
            }
            if name_ok {
                out.push(EnumValue {
                    name: v.name.value.clone(),
                    number,
                    doc: values::doc(&v.doc),
                    span: v.span,
                });
            }
        }
        let ir = &mut self.schema.enums[id.0];
        ir.values = out;
        ir.reserved = reserved;
    }

    /// Enum values as protobuf scopes them: siblings of their enum in the package (C++'s
    /// rules), so two enums of a package must not give two values one proto name.
    pub(super) fn enum_value_scopes(&mut self, files: &[ast::File]) {
        let mut seen: HashMap<(crate::ir::PackageId, String), (&ast::Text, &str)> = HashMap::new();
        for file in files {
            let Some(&package) = self.file_package.get(&file.id) else {
                continue;
            };
            for item in &file.items {
                let ast::Item::Enum(e) = item else { continue };
                // Each value once (a name repeated in one enum is reported above).
                let mut own = std::collections::HashSet::new();
                for v in &e.values {
                    let wire = crate::proto::enum_value_name(&e.name.value, &v.name.value);
                    if !own.insert(wire.clone()) {
                        continue;
                    }
                    match seen.entry((package, wire.clone())) {
                        std::collections::hash_map::Entry::Vacant(slot) => {
                            slot.insert((&v.name, &e.name.value));
                        }
                        std::collections::hash_map::Entry::Occupied(first) => {
                            let (first, first_enum) = *first.get();
                            if first_enum != e.name.value {
                                self.diags.push(error::enum_value_scope_clash(
                                    &v.name, &wire, first, first_enum,
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
}
