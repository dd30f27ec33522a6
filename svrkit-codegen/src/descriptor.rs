//! Protobuf descriptors of the `.proto` export: the `FileDescriptorProto` that protoc would
//! make of each file `proto.rs` writes, so that a server can describe its own services
//! (gRPC server reflection) with no `.proto` file at hand.
//!
//! The descriptors follow the export's choices (enum value prefixes, the added zero values,
//! `optional` for fields with a default, `google.protobuf.Empty` for oneway methods) by
//! taking the names, imports and enum values from `proto.rs` itself. What protoc adds on its
//! own is added here the same way: `json_name` on every field, a synthetic oneof for each
//! proto3 `optional` field, and a nested `...Entry` message for each map. A test in
//! `tests/` compares the result with protoc's `--descriptor_set_out` for every fixture.

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
    FileDescriptorProto, FileDescriptorSet, MessageOptions, MethodDescriptorProto,
    OneofDescriptorProto, ServiceDescriptorProto, descriptor_proto, enum_descriptor_proto,
};

use crate::ident::json_name;
use crate::ir::{FieldType, Item, PackageId, Scalar, Schema, ValueType};
use crate::proto;

/// The name of the file that defines `google.protobuf.Empty`.
const EMPTY_PROTO: &str = "google/protobuf/empty.proto";

/// The descriptor of package `id`'s `.proto` file.
pub fn file(schema: &Schema, id: PackageId) -> FileDescriptorProto {
    let package = schema.package(id);
    let mut file = FileDescriptorProto {
        name: Some(proto::file_name(&package.name)),
        package: Some(package.name.clone()),
        dependency: proto::imports(schema, id),
        syntax: Some("proto3".to_owned()),
        ..FileDescriptorProto::default()
    };
    for item in &package.items {
        match *item {
            Item::Enum(e) => file.enum_type.push(enumeration(schema, e)),
            Item::Struct(s) => file.message_type.push(message(schema, s)),
            Item::Service(index) => {
                let s = &schema.services[index];
                file.service.push(ServiceDescriptorProto {
                    name: Some(s.name.clone()),
                    method: s
                        .methods
                        .iter()
                        .map(|m| MethodDescriptorProto {
                            name: Some(m.name.clone()),
                            input_type: Some(format!(".{}", schema.struct_(m.request).full_name)),
                            output_type: Some(match m.response {
                                Some(r) => format!(".{}", schema.struct_(r).full_name),
                                None => ".google.protobuf.Empty".to_owned(),
                            }),
                            ..MethodDescriptorProto::default()
                        })
                        .collect(),
                    ..ServiceDescriptorProto::default()
                });
            }
        }
    }
    file
}

/// Package `id`'s file with every file it imports, directly or not, dependencies first, as
/// an encoded `FileDescriptorSet`: what a server hosting the package's services needs to
/// describe them.
pub fn set_for(schema: &Schema, id: PackageId) -> Vec<u8> {
    let mut order = Vec::new();
    visit(
        schema,
        &proto::file_name(&schema.package(id).name),
        &mut order,
    );
    let file = order
        .into_iter()
        .map(|name| {
            if name == EMPTY_PROTO {
                return empty();
            }
            let package = (0..schema.packages.len())
                .map(PackageId)
                .find(|&p| proto::file_name(&schema.package(p).name) == name)
                .expect("every import is a package of the schema or empty.proto");
            self::file(schema, package)
        })
        .collect();
    FileDescriptorSet { file }.encode_to_vec()
}

/// Adds `name`'s imports, then `name`, to `order` (each file once).
fn visit(schema: &Schema, name: &str, order: &mut Vec<String>) {
    if order.iter().any(|n| n == name) {
        return;
    }
    if name != EMPTY_PROTO {
        let package = (0..schema.packages.len())
            .map(PackageId)
            .find(|&p| proto::file_name(&schema.package(p).name) == name);
        if let Some(package) = package {
            for import in proto::imports(schema, package) {
                visit(schema, &import, order);
            }
        }
    }
    order.push(name.to_owned());
}

/// `google/protobuf/empty.proto`, as far as a reader of the set needs it.
fn empty() -> FileDescriptorProto {
    FileDescriptorProto {
        name: Some(EMPTY_PROTO.to_owned()),
        package: Some("google.protobuf".to_owned()),
        message_type: vec![DescriptorProto {
            name: Some("Empty".to_owned()),
            ..DescriptorProto::default()
        }],
        syntax: Some("proto3".to_owned()),
        ..FileDescriptorProto::default()
    }
}

fn enumeration(schema: &Schema, id: crate::ir::EnumId) -> EnumDescriptorProto {
    let e = schema.enum_(id);
    let exported = proto::proto_enum(schema, id);
    EnumDescriptorProto {
        name: Some(e.name.clone()),
        value: exported
            .values
            .iter()
            .map(|v| EnumValueDescriptorProto {
                name: Some(v.name.clone()),
                number: Some(v.number),
                ..EnumValueDescriptorProto::default()
            })
            .collect(),
        // Enum ranges are inclusive, as in the IDL.
        reserved_range: e
            .reserved
            .ids
            .iter()
            .map(|&(lo, hi)| enum_descriptor_proto::EnumReservedRange {
                start: i32::try_from(lo).ok(),
                end: i32::try_from(hi).ok(),
            })
            .collect(),
        reserved_name: e
            .reserved
            .names
            .iter()
            .map(|n| proto::enum_value_name(&e.name, n))
            .collect(),
        ..EnumDescriptorProto::default()
    }
}

fn message(schema: &Schema, id: crate::ir::StructId) -> DescriptorProto {
    let s = schema.struct_(id);
    let mut message = DescriptorProto {
        name: Some(s.name.clone()),
        // Message ranges end one past the last id.
        reserved_range: s
            .reserved
            .ids
            .iter()
            .map(|&(lo, hi)| descriptor_proto::ReservedRange {
                start: i32::try_from(lo).ok(),
                end: i32::try_from(hi + 1).ok(),
            })
            .collect(),
        reserved_name: s.reserved.names.clone(),
        ..DescriptorProto::default()
    };
    let mut synthetic = Vec::new();
    for f in &s.fields {
        let mut field = FieldDescriptorProto {
            name: Some(f.name.clone()),
            number: i32::try_from(f.id).ok(),
            label: Some(Label::Optional as i32),
            json_name: Some(json_name(&f.name)),
            ..FieldDescriptorProto::default()
        };
        let optional = match &f.ty {
            FieldType::Singular(ty) => {
                set_type(schema, &mut field, *ty);
                f.default.as_ref().is_some_and(|d| !d.is_zero())
            }
            FieldType::Optional(ty) => {
                set_type(schema, &mut field, *ty);
                true
            }
            FieldType::Repeated(ty) => {
                set_type(schema, &mut field, *ty);
                field.label = Some(Label::Repeated as i32);
                false
            }
            FieldType::Map(key, value) => {
                let entry = map_entry_name(&f.name);
                field.label = Some(Label::Repeated as i32);
                field.r#type = Some(Type::Message as i32);
                field.type_name = Some(format!(".{}.{entry}", s.full_name));
                message
                    .nested_type
                    .push(map_entry(schema, entry, *key, *value));
                false
            }
        };
        if optional {
            // protoc gives each proto3 `optional` field a oneof of its own, after the real
            // ones (svrkit has none).
            field.proto3_optional = Some(true);
            synthetic.push(format!("_{}", f.name));
            field.oneof_index = i32::try_from(synthetic.len() - 1).ok();
        }
        message.field.push(field);
    }
    message.oneof_decl = synthetic
        .into_iter()
        .map(|name| OneofDescriptorProto {
            name: Some(name),
            ..OneofDescriptorProto::default()
        })
        .collect();
    message
}

/// The message protoc makes for a map field: `key = 1`, `value = 2`, marked `map_entry`.
fn map_entry(schema: &Schema, name: String, key: Scalar, value: ValueType) -> DescriptorProto {
    let mut key_field = FieldDescriptorProto {
        name: Some("key".to_owned()),
        number: Some(1),
        label: Some(Label::Optional as i32),
        json_name: Some("key".to_owned()),
        ..FieldDescriptorProto::default()
    };
    set_type(schema, &mut key_field, ValueType::Scalar(key));
    let mut value_field = FieldDescriptorProto {
        name: Some("value".to_owned()),
        number: Some(2),
        label: Some(Label::Optional as i32),
        json_name: Some("value".to_owned()),
        ..FieldDescriptorProto::default()
    };
    set_type(schema, &mut value_field, value);
    DescriptorProto {
        name: Some(name),
        field: vec![key_field, value_field],
        options: Some(MessageOptions {
            map_entry: Some(true),
            ..MessageOptions::default()
        }),
        ..DescriptorProto::default()
    }
}

fn set_type(schema: &Schema, field: &mut FieldDescriptorProto, ty: ValueType) {
    let (ty, name) = match ty {
        ValueType::Scalar(s) => (scalar(s), None),
        ValueType::Enum(_) => (Type::Enum, Some(format!(".{}", schema.type_name(ty)))),
        ValueType::Struct(_) => (Type::Message, Some(format!(".{}", schema.type_name(ty)))),
    };
    field.r#type = Some(ty as i32);
    field.type_name = name;
}

fn scalar(s: Scalar) -> Type {
    match s {
        Scalar::Bool => Type::Bool,
        Scalar::Int32 => Type::Int32,
        Scalar::Int64 => Type::Int64,
        Scalar::Uint32 => Type::Uint32,
        Scalar::Uint64 => Type::Uint64,
        Scalar::Sint32 => Type::Sint32,
        Scalar::Sint64 => Type::Sint64,
        Scalar::Fixed32 => Type::Fixed32,
        Scalar::Fixed64 => Type::Fixed64,
        Scalar::Sfixed32 => Type::Sfixed32,
        Scalar::Sfixed64 => Type::Sfixed64,
        Scalar::Float => Type::Float,
        Scalar::Double => Type::Double,
        Scalar::String => Type::String,
        Scalar::Bytes => Type::Bytes,
    }
}

/// protoc's name for a map field's entry message: the field's JSON name (`by_user_id` ->
/// `byUserId`) with its first letter upper-cased, then `Entry`.
fn map_entry_name(field: &str) -> String {
    let json = json_name(field);
    let mut chars = json.chars();
    let first = chars.next().map(|c| c.to_ascii_uppercase());
    first
        .into_iter()
        .chain(chars)
        .chain("Entry".chars())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_protocs() {
        assert_eq!(super::json_name("client_msg_id"), "clientMsgId");
        assert_eq!(super::json_name("a__b_"), "aB");
        assert_eq!(super::map_entry_name("by_user_id"), "ByUserIdEntry");
        assert_eq!(super::map_entry_name("labels"), "LabelsEntry");
    }
}
