//! Rust paths and types for IR types, relative to the package being generated.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use crate::ident;
use crate::ir::{DefaultValue, FieldType, PackageId, Scalar, Schema, ValueType};

/// The path to a named type from code in package `from`: bare in the same package, else up
/// to the common ancestor with `super::` and down again.
pub(super) fn named(schema: &Schema, from: PackageId, to: PackageId, name: &str) -> TokenStream {
    let name = ident::ident(name);
    if from == to {
        return quote!(#name);
    }
    let from: Vec<&str> = schema.package(from).segments().collect();
    let to: Vec<&str> = schema.package(to).segments().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let ups = (common..from.len()).map(|_| quote!(super));
    let downs = to[common..].iter().map(|s| ident::ident(s));
    quote!(#(#ups ::)* #(#downs ::)* #name)
}

/// The Rust type of one value.
pub(super) fn value_type(schema: &Schema, from: PackageId, ty: ValueType) -> TokenStream {
    match ty {
        ValueType::Scalar(s) => scalar_type(s),
        ValueType::Enum(e) => {
            let e = schema.enum_(e);
            named(schema, from, e.package, &e.name)
        }
        ValueType::Struct(s) => {
            let s = schema.struct_(s);
            named(schema, from, s.package, &s.name)
        }
    }
}

fn scalar_type(s: Scalar) -> TokenStream {
    match s {
        Scalar::Bool => quote!(bool),
        Scalar::Int32 | Scalar::Sint32 | Scalar::Sfixed32 => quote!(i32),
        Scalar::Int64 | Scalar::Sint64 | Scalar::Sfixed64 => quote!(i64),
        Scalar::Uint32 | Scalar::Fixed32 => quote!(u32),
        Scalar::Uint64 | Scalar::Fixed64 => quote!(u64),
        Scalar::Float => quote!(f32),
        Scalar::Double => quote!(f64),
        Scalar::String => quote!(::svrkit_runtime::codec::generated::FastStr),
        Scalar::Bytes => quote!(::svrkit_runtime::codec::generated::Bytes),
    }
}

/// The Rust type of a field.
pub(super) fn field_type(
    schema: &Schema,
    from: PackageId,
    ty: FieldType,
    boxed: bool,
) -> TokenStream {
    match ty {
        FieldType::Singular(v) => value_type(schema, from, v),
        FieldType::Optional(v) => {
            let inner = value_type(schema, from, v);
            if boxed {
                quote!(::core::option::Option<::std::boxed::Box<#inner>>)
            } else {
                quote!(::core::option::Option<#inner>)
            }
        }
        FieldType::Repeated(v) => {
            let inner = value_type(schema, from, v);
            quote!(::std::vec::Vec<#inner>)
        }
        FieldType::Map(k, v) => {
            let k = scalar_type(k);
            let v = value_type(schema, from, v);
            quote!(::svrkit_runtime::codec::generated::BTreeMap<#k, #v>)
        }
    }
}

/// The runtime's `kind` marker for a value type.
pub(super) fn kind(schema: &Schema, from: PackageId, ty: ValueType) -> TokenStream {
    // Generated methods start with `use ::svrkit_runtime::codec::generated::{field, kind};`.
    let k = quote!(kind);
    match ty {
        ValueType::Scalar(s) => {
            let name = match s {
                Scalar::Bool => quote!(Bool),
                Scalar::Int32 => quote!(Int32),
                Scalar::Int64 => quote!(Int64),
                Scalar::Uint32 => quote!(Uint32),
                Scalar::Uint64 => quote!(Uint64),
                Scalar::Sint32 => quote!(Sint32),
                Scalar::Sint64 => quote!(Sint64),
                Scalar::Fixed32 => quote!(Fixed32),
                Scalar::Fixed64 => quote!(Fixed64),
                Scalar::Sfixed32 => quote!(Sfixed32),
                Scalar::Sfixed64 => quote!(Sfixed64),
                Scalar::Float => quote!(Float),
                Scalar::Double => quote!(Double),
                Scalar::String => quote!(String),
                Scalar::Bytes => quote!(Bytes),
            };
            quote!(#k::#name)
        }
        ValueType::Enum(_) => {
            let path = value_type(schema, from, ty);
            quote!(#k::Enum<#path>)
        }
        ValueType::Struct(_) => {
            let path = value_type(schema, from, ty);
            quote!(#k::Message<#path>)
        }
    }
}

/// A default as a Rust expression of the field's type.
pub(super) fn default_expr(
    schema: &Schema,
    from: PackageId,
    ty: ValueType,
    value: &DefaultValue,
) -> TokenStream {
    match (value, ty) {
        (DefaultValue::String(s), _) => {
            quote!(::svrkit_runtime::codec::generated::FastStr::from_static_str(#s))
        }
        (DefaultValue::Bytes(b), _) => {
            let lit = Literal::byte_string(b);
            quote!(::svrkit_runtime::codec::generated::Bytes::from_static(#lit))
        }
        _ => default_literal(schema, from, ty, value),
    }
}

/// A default as something a field can be compared with (`!=`).
pub(super) fn default_literal(
    schema: &Schema,
    from: PackageId,
    ty: ValueType,
    value: &DefaultValue,
) -> TokenStream {
    match (value, ty) {
        (DefaultValue::Bool(b), _) => quote!(#b),
        (
            DefaultValue::Int(i),
            ValueType::Scalar(Scalar::Int64 | Scalar::Sint64 | Scalar::Sfixed64),
        ) => {
            let lit = Literal::i64_suffixed(*i);
            quote!(#lit)
        }
        (DefaultValue::Int(i), _) => {
            let lit = Literal::i32_suffixed(*i as i32);
            quote!(#lit)
        }
        (DefaultValue::Uint(u), ValueType::Scalar(Scalar::Uint64 | Scalar::Fixed64)) => {
            let lit = Literal::u64_suffixed(*u);
            quote!(#lit)
        }
        (DefaultValue::Uint(u), _) => {
            let lit = Literal::u32_suffixed(*u as u32);
            quote!(#lit)
        }
        (DefaultValue::Float(f), ValueType::Scalar(Scalar::Float)) => {
            let lit = Literal::f32_suffixed(*f as f32);
            quote!(#lit)
        }
        (DefaultValue::Float(f), _) => {
            let lit = Literal::f64_suffixed(*f);
            quote!(#lit)
        }
        (DefaultValue::String(s), _) => quote!(#s),
        (DefaultValue::Bytes(b), _) => {
            let lit = Literal::byte_string(b);
            quote!(#lit[..])
        }
        (DefaultValue::Enum { name, .. }, _) => {
            let path = value_type(schema, from, ty);
            let value = ident::ident(name);
            quote!(#path::#value)
        }
    }
}
