//! Exports a schema as `.proto` files (proto3) that describe the same bytes.
//!
//! The mapping keeps the wire identical; where the two languages differ it chooses what keeps
//! a protobuf peer correct, and says so in a comment in the output:
//! - enum values are prefixed with the enum's name (`MSG_TYPE_TEXT`), because protobuf scopes
//!   enum values to the package, not the enum; prost strips the prefix again;
//! - proto3 enums must start with a zero value: one is added (`MSG_TYPE_UNSPECIFIED = 0`)
//!   when the IDL names none;
//! - a field with a non-zero `default` becomes `optional`: svrkit leaves the default off the
//!   wire, so a protobuf reader must be able to tell "absent" (which means the default) from 0;
//! - oneway methods return `google.protobuf.Empty`.

use askama::Template;

use crate::GeneratedFile;
use crate::ident;
use crate::ir::{FieldType, PackageId, Reserved, Retry, Schema, ValueType};

#[derive(Template)]
#[template(path = "proto.txt")]
struct ProtoFile {
    sources: String,
    package: String,
    doc: Vec<String>,
    imports: Vec<String>,
    enums: Vec<ProtoEnum>,
    messages: Vec<ProtoMessage>,
    services: Vec<ProtoService>,
}

pub(crate) struct ProtoEnum {
    name: String,
    doc: Vec<String>,
    pub(crate) values: Vec<ProtoValue>,
    reserved_ids: String,
    reserved_names: String,
}

pub(crate) struct ProtoValue {
    pub(crate) name: String,
    pub(crate) number: i32,
    doc: Vec<String>,
    note: String,
}

struct ProtoMessage {
    name: String,
    doc: Vec<String>,
    fields: Vec<ProtoField>,
    reserved_ids: String,
    reserved_names: String,
}

struct ProtoField {
    decl: String,
    doc: Vec<String>,
    note: String,
}

struct ProtoService {
    name: String,
    id: u16,
    doc: Vec<String>,
    methods: Vec<ProtoMethod>,
}

struct ProtoMethod {
    name: String,
    request: String,
    response: String,
    doc: Vec<String>,
    note: String,
}

/// The name of the `.proto` file for a package.
pub fn file_name(package: &str) -> String {
    format!("{package}.proto")
}

/// The proto name of an enum value: the value prefixed with the enum's `SCREAMING_SNAKE`
/// name and `_` (`MsgType.TEXT` -> `MSG_TYPE_TEXT`), unless it already starts with them
/// (`Mode.MODE_OFF` stays `MODE_OFF`). Protobuf peers, the text format and the JSON mapping
/// (`svrkit call`) all spell values this way.
pub fn enum_value_name(enum_name: &str, value: &str) -> String {
    let prefix = ident::screaming(enum_name);
    match value.strip_prefix(prefix.as_str()) {
        Some(rest) if rest.len() > 1 && rest.starts_with('_') => value.to_owned(),
        _ => format!("{prefix}_{value}"),
    }
}

/// What protoc compares to tell two values of one enum apart (proto3 makes a clash an
/// error): the value's proto name without the enum's name in front (matched ignoring case
/// and underscores), in PascalCase. `X_UNSPECIFIED` and `X_UNSPECIFIED_` in enum `X` are
/// both `Unspecified`; `V1` and `V_1` are both `V1`.
pub(crate) fn protoc_enum_value_key(enum_name: &str, proto_value: &str) -> String {
    let prefix: Vec<char> = enum_name
        .chars()
        .filter(|&c| c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let chars: Vec<char> = proto_value.chars().collect();
    let (mut i, mut j) = (0, 0);
    let mut stripped = true;
    while i < chars.len() && j < prefix.len() {
        if chars[i] != '_' {
            if chars[i].to_ascii_lowercase() != prefix[j] {
                stripped = false;
                break;
            }
            j += 1;
        }
        i += 1;
    }
    if j < prefix.len() {
        stripped = false;
    }
    while stripped && i < chars.len() && chars[i] == '_' {
        i += 1;
    }
    let rest = if stripped && i < chars.len() {
        &chars[i..]
    } else {
        &chars[..]
    };
    let mut key = String::with_capacity(rest.len());
    let mut upper = true;
    for &c in rest {
        if c == '_' {
            upper = true;
        } else {
            key.push(if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            });
            upper = false;
        }
    }
    key
}

/// Renders one `.proto` file per package.
pub fn render(schema: &Schema) -> Vec<GeneratedFile> {
    (0..schema.packages.len())
        .map(|i| {
            let package = schema.package(PackageId(i));
            let file = build(schema, PackageId(i));
            // Rendering only fails if a template expression fails, and ours cannot.
            let content = file.render().unwrap_or_default();
            GeneratedFile {
                package: package.name.clone(),
                name: file_name(&package.name),
                content: content + "\n",
            }
        })
        .collect()
}

fn lines(doc: &Option<String>) -> Vec<String> {
    doc.as_deref()
        .map(|d| d.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn reserved_ids(r: &Reserved) -> String {
    r.ids
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo} to {hi}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The files package `id`'s `.proto` imports, in the order it lists them.
pub(crate) fn imports(schema: &Schema, id: PackageId) -> Vec<String> {
    build(schema, id).imports
}

fn build(schema: &Schema, id: PackageId) -> ProtoFile {
    let package = schema.package(id);
    let mut imports = Vec::new();
    let mut enums = Vec::new();
    let mut messages = Vec::new();
    let mut services = Vec::new();
    let import_of =
        |other: PackageId| (other != id).then(|| file_name(&schema.package(other).name));
    let add_import = |imports: &mut Vec<String>, name: Option<String>| {
        if let Some(name) = name.filter(|n| !imports.contains(n)) {
            imports.push(name);
        }
    };
    for item in &package.items {
        match *item {
            crate::ir::Item::Enum(e) => enums.push(proto_enum(schema, e)),
            crate::ir::Item::Struct(s) => {
                let s = schema.struct_(s);
                for f in &s.fields {
                    match f.ty.value() {
                        ValueType::Enum(e) => {
                            add_import(&mut imports, import_of(schema.enum_(e).package))
                        }
                        ValueType::Struct(t) => {
                            add_import(&mut imports, import_of(schema.struct_(t).package))
                        }
                        ValueType::Scalar(_) => {}
                    }
                }
                messages.push(ProtoMessage {
                    name: s.name.clone(),
                    doc: lines(&s.doc),
                    fields: s.fields.iter().map(|f| proto_field(schema, f)).collect(),
                    reserved_ids: reserved_ids(&s.reserved),
                    reserved_names: quoted_names(&s.reserved.names),
                });
            }
            crate::ir::Item::Service(index) => {
                let s = &schema.services[index];
                let mut methods = Vec::new();
                for m in &s.methods {
                    add_import(&mut imports, import_of(schema.struct_(m.request).package));
                    let response = match m.response {
                        Some(r) => {
                            add_import(&mut imports, import_of(schema.struct_(r).package));
                            format!(".{}", schema.struct_(r).full_name)
                        }
                        None => {
                            add_import(
                                &mut imports,
                                Some("google/protobuf/empty.proto".to_owned()),
                            );
                            ".google.protobuf.Empty".to_owned()
                        }
                    };
                    let retry = match m.retry {
                        Retry::None => "none".to_owned(),
                        Retry::Idempotent { max_attempts } => {
                            format!("idempotent, max_attempts {max_attempts}")
                        }
                    };
                    let oneway = if m.response.is_none() { ", oneway" } else { "" };
                    methods.push(ProtoMethod {
                        name: m.name.clone(),
                        request: format!(".{}", schema.struct_(m.request).full_name),
                        response,
                        doc: lines(&m.doc),
                        note: format!(
                            "svrkit method id {}, timeout {} ms, retry {retry}, priority {}{oneway}",
                            m.id,
                            m.timeout_ms,
                            m.priority.name()
                        ),
                    });
                }
                services.push(ProtoService {
                    name: s.name.clone(),
                    id: s.id,
                    doc: lines(&s.doc),
                    methods,
                });
            }
        }
    }
    ProtoFile {
        sources: package.files.join(", "),
        package: package.name.clone(),
        doc: Vec::new(),
        imports,
        enums,
        messages,
        services,
    }
}

fn quoted_names(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An enum as exported: its values' proto names, the zero value first (added if the IDL has
/// none).
pub(crate) fn proto_enum(schema: &Schema, id: crate::ir::EnumId) -> ProtoEnum {
    let e = schema.enum_(id);
    let mut values: Vec<ProtoValue> = e
        .values
        .iter()
        .map(|v| ProtoValue {
            name: enum_value_name(&e.name, &v.name),
            number: v.number,
            doc: lines(&v.doc),
            note: String::new(),
        })
        .collect();
    if let Some(zero) = values.iter().position(|v| v.number == 0) {
        // proto3 requires the zero value first.
        let v = values.remove(zero);
        values.insert(0, v);
    } else {
        // A name protoc tells apart from every value's (appending `_` would not do: it
        // ignores underscores).
        let taken: Vec<String> = values
            .iter()
            .map(|v| protoc_enum_value_key(&e.name, &v.name))
            .collect();
        let name = ["UNSPECIFIED", "UNSET", "ZERO"]
            .into_iter()
            .map(str::to_owned)
            .chain((0..).map(|n| format!("UNSPECIFIED{n}")))
            .map(|value| enum_value_name(&e.name, &value))
            .find(|name| !taken.contains(&protoc_enum_value_key(&e.name, name)))
            .expect("an endless list of names has a free one");
        values.insert(
            0,
            ProtoValue {
                name,
                number: 0,
                doc: Vec::new(),
                note: "added for proto3, which needs a zero value; not in the svrkit IDL"
                    .to_owned(),
            },
        );
    }
    ProtoEnum {
        name: e.name.clone(),
        doc: lines(&e.doc),
        values,
        reserved_ids: reserved_ids(&e.reserved),
        reserved_names: quoted_names(
            &e.reserved
                .names
                .iter()
                .map(|n| enum_value_name(&e.name, n))
                .collect::<Vec<_>>(),
        ),
    }
}

fn type_ref(schema: &Schema, ty: ValueType) -> String {
    match ty {
        ValueType::Scalar(s) => s.name().to_owned(),
        _ => format!(".{}", schema.type_name(ty)),
    }
}

fn proto_field(schema: &Schema, f: &crate::ir::Field) -> ProtoField {
    let mut note = String::new();
    let decl = match f.ty {
        FieldType::Singular(ty) => match &f.default {
            Some(d) if !d.is_zero() => {
                note = format!(
                    "svrkit default: {}; absent means the default",
                    describe_default(d)
                );
                format!("optional {} {} = {}", type_ref(schema, ty), f.name, f.id)
            }
            _ => format!("{} {} = {}", type_ref(schema, ty), f.name, f.id),
        },
        FieldType::Optional(ty) => {
            format!("optional {} {} = {}", type_ref(schema, ty), f.name, f.id)
        }
        FieldType::Repeated(ty) => {
            format!("repeated {} {} = {}", type_ref(schema, ty), f.name, f.id)
        }
        FieldType::Map(k, v) => format!(
            "map<{}, {}> {} = {}",
            k.name(),
            type_ref(schema, v),
            f.name,
            f.id
        ),
    };
    ProtoField {
        decl,
        doc: lines(&f.doc),
        note,
    }
}

fn describe_default(d: &crate::ir::DefaultValue) -> String {
    use crate::ir::DefaultValue::*;
    match d {
        Bool(b) => b.to_string(),
        Int(i) => i.to_string(),
        Uint(u) => u.to_string(),
        Float(f) => f.to_string(),
        String(s) => format!("{s:?}"),
        Bytes(b) => format!("{:?}", std::string::String::from_utf8_lossy(b)),
        Enum { name, .. } => name.clone(),
    }
}
