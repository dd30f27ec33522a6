//! Structs and their `Message` implementations.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::{doc_attrs, paths};
use crate::ident;
use crate::ir::{Field, FieldType, Schema, StructId, ValueType};

/// A wire type, as the constant generated code names it (the runtime's
/// `codec::generated::{VARINT, I64, LEN, I32}`, protobuf's names).
#[derive(Clone, Copy)]
enum Wire {
    Varint,
    I64,
    Len,
    I32,
}

impl quote::ToTokens for Wire {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        tokens.extend(match self {
            Wire::Varint => quote!(VARINT),
            Wire::I64 => quote!(I64),
            Wire::Len => quote!(LEN),
            Wire::I32 => quote!(I32),
        });
    }
}

fn wire_type(ty: ValueType) -> Wire {
    use crate::ir::Scalar::*;
    match ty {
        ValueType::Scalar(Fixed64 | Sfixed64 | Double) => Wire::I64,
        ValueType::Scalar(Fixed32 | Sfixed32 | Float) => Wire::I32,
        ValueType::Scalar(String | Bytes) | ValueType::Struct(_) => Wire::Len,
        ValueType::Scalar(_) | ValueType::Enum(_) => Wire::Varint,
    }
}

fn is_packable(ty: ValueType) -> bool {
    match ty {
        ValueType::Scalar(s) => s.is_packable(),
        ValueType::Enum(_) => true,
        ValueType::Struct(_) => false,
    }
}

/// A field's key, `key(3, LEN)`: a constant expression the compiler folds, so the runtime
/// never computes it.
fn key(id: u32, wire: Wire) -> TokenStream {
    let id = Literal::u32_unsuffixed(id);
    quote!(key(#id, #wire))
}

/// How many bytes a field's key takes, `key_len(3)` (folded the same way).
fn key_len(id: u32) -> TokenStream {
    let id = Literal::u32_unsuffixed(id);
    quote!(key_len(#id))
}

/// The names of the key constants `merge_field` declares and matches on: each field's name
/// in `SCREAMING_SNAKE` (`SENDER_UIN`), and `<NAME>_UNPACKED` for the second encoding of a
/// packable list. A field whose names another field's would share, or that are the wire
/// type constants in scope, is named `FIELD_<id>` instead, with underscores added until
/// no other name is the same.
fn key_names(fields: &[Field]) -> Vec<(String, String)> {
    let names = |base: &str| (base.to_owned(), format!("{base}_UNPACKED"));
    let preferred: Vec<(String, String)> = fields
        .iter()
        .map(|f| names(&ident::screaming(&f.name)))
        .collect();
    let mut count = std::collections::HashMap::new();
    for (a, b) in &preferred {
        *count.entry(a.clone()).or_insert(0) += 1;
        *count.entry(b.clone()).or_insert(0) += 1;
    }
    const IN_SCOPE: [&str; 4] = ["VARINT", "I64", "LEN", "I32"];
    let clash = |n: &String| count[n] > 1 || IN_SCOPE.contains(&n.as_str());
    // Every name in use: the preferred names (a clashing field's too, so that no fallback
    // takes one of them), then each fallback as it is chosen.
    let mut taken: std::collections::HashSet<String> = preferred
        .iter()
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();
    fields
        .iter()
        .zip(&preferred)
        .map(|(f, (a, b))| {
            if !clash(a) && !clash(b) {
                return (a.clone(), b.clone());
            }
            let mut base = format!("FIELD_{}", f.id);
            while taken.contains(&base) || taken.contains(&format!("{base}_UNPACKED")) {
                base.push('_');
            }
            let chosen = names(&base);
            taken.insert(chosen.0.clone());
            taken.insert(chosen.1.clone());
            chosen
        })
        .collect()
}

pub(super) fn generate(schema: &Schema, id: StructId) -> TokenStream {
    let s = schema.struct_(id);
    let name = ident::ident(&s.name);
    let full_name = &s.full_name;
    let doc = doc_attrs(&s.doc);
    let rt = quote!(::svrkit_runtime::codec::generated);

    let fields = s.fields.iter().map(|f| {
        let doc = doc_attrs(&f.doc);
        let name = ident::ident(&f.name);
        let ty = paths::field_type(schema, s.package, f.ty, f.boxed);
        quote! { #doc pub #name: #ty, }
    });

    let custom_default = s
        .fields
        .iter()
        .any(|f| f.default.as_ref().is_some_and(|d| !d.is_zero()));
    let default_derive = if custom_default {
        quote!()
    } else {
        quote!(Default,)
    };
    let default_impl = if custom_default {
        let inits = s.fields.iter().map(|f| {
            let name = ident::ident(&f.name);
            match (&f.default, f.ty) {
                (Some(d), FieldType::Singular(ty)) => {
                    let value = paths::default_expr(schema, s.package, ty, d);
                    quote!(#name: #value,)
                }
                _ => quote!(#name: ::core::default::Default::default(),),
            }
        });
        quote! {
            #[automatically_derived]
            impl ::core::default::Default for #name {
                fn default() -> Self {
                    Self { #(#inits)* unknown_fields: ::core::default::Default::default() }
                }
            }
        }
    } else {
        quote!()
    };

    let short_name = &s.name;
    let debug_names = s.fields.iter().map(|f| f.name.as_str());
    let debug_idents = s.fields.iter().map(|f| ident::ident(&f.name));

    let fields_gen = FieldGen {
        schema,
        package: s.package,
    };
    let encodes = s.fields.iter().map(|f| fields_gen.encode(f));
    let lens = s.fields.iter().map(|f| fields_gen.encoded_len(f));
    let key_names = key_names(&s.fields);
    let (consts, arms): (Vec<TokenStream>, Vec<TokenStream>) = s
        .fields
        .iter()
        .zip(&key_names)
        .map(|(f, names)| fields_gen.merge_arms(f, names))
        .unzip();
    let unknown = quote!(field::merge_unknown::<Self>(
        wire_key,
        d,
        &mut self.unknown_fields
    ));
    let merge_body = if arms.is_empty() {
        unknown
    } else {
        quote! { #(#consts)* match wire_key { #(#arms)* _ => #unknown, } }
    };
    let names = s.fields.iter().map(|f| {
        let id = Literal::u32_unsuffixed(f.id);
        let name = &f.name;
        quote!(#id => ::core::option::Option::Some(#name),)
    });
    let field_name_body = if s.fields.is_empty() {
        quote! { let _ = id; ::core::option::Option::None }
    } else {
        quote! { match id { #(#names)* _ => ::core::option::Option::None } }
    };

    quote! {
        #doc
        #[derive(Clone, PartialEq, #default_derive)]
        #[allow(missing_docs)]
        pub struct #name {
            #(#fields)*
            /// Fields this schema does not know, kept so that they are written back unchanged.
            pub unknown_fields: #rt::UnknownFields,
        }

        #default_impl

        #[automatically_derived]
        impl ::core::fmt::Debug for #name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                let mut s = f.debug_struct(#short_name);
                #(s.field(#debug_names, &self.#debug_idents);)*
                if !self.unknown_fields.is_empty() {
                    s.field("unknown_fields", &self.unknown_fields);
                }
                s.finish()
            }
        }

        #[automatically_derived]
        impl #rt::Message for #name {
            const NAME: &'static str = #full_name;

            #[inline]
            fn encode_raw(&self, buf: &mut ::std::vec::Vec<u8>) {
                #[allow(unused_imports)]
                use #rt::{I32, I64, LEN, VARINT, field, key, kind};
                #(#encodes)*
                self.unknown_fields.encode(buf);
            }

            #[inline]
            fn encoded_len(&self) -> usize {
                #[allow(unused_imports)]
                use #rt::{field, key_len, kind};
                #(#lens +)* self.unknown_fields.encoded_len()
            }

            #[inline]
            fn merge_field(
                &mut self,
                wire_key: u32,
                d: &mut #rt::Decoder<'_>,
            ) -> ::core::result::Result<(), #rt::DecodeError> {
                #[allow(unused_imports)]
                use #rt::{I32, I64, LEN, VARINT, field, key, kind};
                #merge_body
            }

            fn field_name(id: u32) -> ::core::option::Option<&'static str> {
                #field_name_body
            }
        }
    }
}

struct FieldGen<'a> {
    schema: &'a Schema,
    package: crate::ir::PackageId,
}

impl FieldGen<'_> {
    fn kind(&self, ty: ValueType) -> TokenStream {
        paths::kind(self.schema, self.package, ty)
    }

    /// The condition under which a singular field is written.
    fn differs_from_default(&self, f: &Field, ty: ValueType) -> TokenStream {
        let name = ident::ident(&f.name);
        match &f.default {
            // `!= true` would read oddly (and clippy says so).
            Some(crate::ir::DefaultValue::Bool(true)) => quote!(!self.#name),
            Some(d) if !d.is_zero() => {
                let lit = paths::default_literal(self.schema, self.package, ty, d);
                quote!(self.#name != #lit)
            }
            _ => {
                let kind = self.kind(ty);
                quote!(!field::is_default::<#kind>(&self.#name))
            }
        }
    }

    fn has_custom_default(f: &Field) -> bool {
        f.default.as_ref().is_some_and(|d| !d.is_zero())
    }

    fn encode(&self, f: &Field) -> TokenStream {
        let rt = quote!(field);
        let name = ident::ident(&f.name);
        let value = f.ty.value();
        let kind = self.kind(value);
        match f.ty {
            FieldType::Singular(ValueType::Struct(_)) => {
                let key = key(f.id, Wire::Len);
                quote! { #rt::encode_message(#key, &self.#name, buf); }
            }
            FieldType::Singular(ty) if Self::has_custom_default(f) => {
                let key = key(f.id, wire_type(ty));
                let cond = self.differs_from_default(f, ty);
                quote! { if #cond { #rt::encode::<#kind>(#key, &self.#name, buf); } }
            }
            FieldType::Singular(ty) => {
                let key = key(f.id, wire_type(ty));
                quote! { #rt::encode_singular::<#kind>(#key, &self.#name, buf); }
            }
            FieldType::Optional(ty) => {
                let key = key(f.id, wire_type(ty));
                quote! {
                    if let ::core::option::Option::Some(value) = &self.#name {
                        #rt::encode::<#kind>(#key, value, buf);
                    }
                }
            }
            FieldType::Repeated(ty) if is_packable(ty) => {
                let key = key(f.id, Wire::Len);
                quote! { #rt::encode_packed::<#kind>(#key, &self.#name, buf); }
            }
            FieldType::Repeated(ValueType::Struct(_)) => {
                let key = key(f.id, Wire::Len);
                quote! { #rt::encode_repeated_messages(#key, &self.#name, buf); }
            }
            FieldType::Repeated(ty) => {
                let key = key(f.id, wire_type(ty));
                quote! { #rt::encode_repeated::<#kind>(#key, &self.#name, buf); }
            }
            FieldType::Map(k, _) => {
                let key = key(f.id, Wire::Len);
                let key_kind = self.kind(ValueType::Scalar(k));
                quote! { #rt::encode_map::<#key_kind, #kind>(#key, &self.#name, buf); }
            }
        }
    }

    fn encoded_len(&self, f: &Field) -> TokenStream {
        let rt = quote!(field);
        let name = ident::ident(&f.name);
        let value = f.ty.value();
        let kind = self.kind(value);
        let key_len = key_len(f.id);
        match f.ty {
            FieldType::Singular(ValueType::Struct(_)) => {
                quote! { #rt::encoded_len_message(#key_len, &self.#name) }
            }
            FieldType::Singular(ty) if Self::has_custom_default(f) => {
                let cond = self.differs_from_default(f, ty);
                quote! { (if #cond { #rt::encoded_len::<#kind>(#key_len, &self.#name) } else { 0 }) }
            }
            FieldType::Singular(_) => {
                quote! { #rt::encoded_len_singular::<#kind>(#key_len, &self.#name) }
            }
            FieldType::Optional(_) => {
                quote! { self.#name.as_ref().map_or(0, |value| #rt::encoded_len::<#kind>(#key_len, value)) }
            }
            FieldType::Repeated(ty) if is_packable(ty) => {
                quote! { #rt::encoded_len_packed::<#kind>(#key_len, &self.#name) }
            }
            FieldType::Repeated(_) => {
                quote! { #rt::encoded_len_repeated::<#kind>(#key_len, &self.#name) }
            }
            FieldType::Map(k, _) => {
                let key_kind = self.kind(ValueType::Scalar(k));
                quote! { #rt::encoded_len_map::<#key_kind, #kind>(#key_len, &self.#name) }
            }
        }
    }

    /// The key constants a field's `merge_field` arms match on, and the arms.
    fn merge_arms(
        &self,
        f: &Field,
        (name, unpacked): &(String, String),
    ) -> (TokenStream, TokenStream) {
        let rt = quote!(field);
        let field_name = ident::ident(&f.name);
        let value = f.ty.value();
        let kind = self.kind(value);
        let wt = wire_type(value);
        let konst = |name: &str, wire: Wire| {
            let name = proc_macro2::Ident::new(name, proc_macro2::Span::call_site());
            let key = key(f.id, wire);
            (quote! { const #name: u32 = #key; }, name)
        };
        match f.ty {
            FieldType::Singular(_) => {
                let (c, k) = konst(name, wt);
                (
                    c,
                    quote! { #k => #rt::merge::<#kind>(&mut self.#field_name, d), },
                )
            }
            FieldType::Optional(ValueType::Struct(s)) if f.boxed => {
                let (c, k) = konst(name, wt);
                let ty = paths::value_type(self.schema, self.package, ValueType::Struct(s));
                (
                    c,
                    quote! { #k => #rt::merge_optional_boxed::<#ty>(&mut self.#field_name, d), },
                )
            }
            FieldType::Optional(_) => {
                let (c, k) = konst(name, wt);
                (
                    c,
                    quote! { #k => #rt::merge_optional::<#kind>(&mut self.#field_name, d), },
                )
            }
            FieldType::Repeated(ty) if is_packable(ty) => {
                // Both encodings are accepted: packed from svrkit and proto3 peers, one field
                // per element from proto2-style peers.
                let (c1, packed) = konst(name, Wire::Len);
                let (c2, single) = konst(unpacked, wt);
                (
                    quote! { #c1 #c2 },
                    quote! {
                        #packed => #rt::merge_packed::<#kind>(&mut self.#field_name, d),
                        #single => #rt::merge_repeated::<#kind>(&mut self.#field_name, d),
                    },
                )
            }
            FieldType::Repeated(_) => {
                let (c, k) = konst(name, wt);
                (
                    c,
                    quote! { #k => #rt::merge_repeated::<#kind>(&mut self.#field_name, d), },
                )
            }
            FieldType::Map(k, _) => {
                let (c, key_const) = konst(name, Wire::Len);
                let key_kind = self.kind(ValueType::Scalar(k));
                (
                    c,
                    quote! {
                        #key_const => #rt::merge_map_entry::<#key_kind, #kind>(
                            wire_key,
                            &mut self.#field_name,
                            d,
                            &mut self.unknown_fields,
                        ),
                    },
                )
            }
        }
    }
}
