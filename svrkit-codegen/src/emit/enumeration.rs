//! Open enums: a newtype over `i32` with a constant per named value.
//!
//! A Rust `enum` would have to turn numbers it does not know into an error or a catch-all
//! variant; a newtype keeps every number as itself, so a value added by a newer peer passes
//! through an older one unchanged, and there is exactly one representation of each number.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::doc_attrs;
use crate::ident;
use crate::ir::{EnumId, Schema};

pub(super) fn generate(schema: &Schema, id: EnumId) -> TokenStream {
    let e = schema.enum_(id);
    let name = ident::ident(&e.name);
    let doc = doc_attrs(&e.doc);
    let unknown_format = format!("{}({{}})", e.name);
    let consts = e.values.iter().map(|v| {
        let doc = doc_attrs(&v.doc);
        let value = ident::ident(&v.name);
        let number = Literal::i32_unsuffixed(v.number);
        quote! { #doc pub const #value: Self = Self(#number); }
    });
    let all = e.values.iter().map(|v| ident::ident(&v.name));
    let name_arms = e.values.iter().map(|v| {
        let number = Literal::i32_unsuffixed(v.number);
        let text = &v.name;
        quote!(#number => ::core::option::Option::Some(#text),)
    });
    let from_name_arms = e.values.iter().map(|v| {
        let value = ident::ident(&v.name);
        let text = &v.name;
        quote!(#text => ::core::option::Option::Some(Self::#value),)
    });
    let rt = quote!(::svrkit_runtime::codec::generated);
    quote! {
        #doc
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        #[repr(transparent)]
        #[allow(missing_docs)]
        pub struct #name(pub i32);

        #[allow(missing_docs)]
        impl #name {
            #(#consts)*

            /// Every named value, in declaration order.
            pub const VALUES: &'static [Self] = &[#(Self::#all),*];

            /// The IDL name of this value, if the schema names it.
            pub const fn name(self) -> ::core::option::Option<&'static str> {
                match self.0 {
                    #(#name_arms)*
                    _ => ::core::option::Option::None,
                }
            }

            /// The value with this IDL name.
            pub fn from_name(name: &str) -> ::core::option::Option<Self> {
                match name {
                    #(#from_name_arms)*
                    _ => ::core::option::Option::None,
                }
            }

            /// Whether the schema names this value.
            pub const fn is_known(self) -> bool {
                self.name().is_some()
            }
        }

        #[automatically_derived]
        impl ::core::fmt::Debug for #name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                match self.name() {
                    ::core::option::Option::Some(name) => f.write_str(name),
                    ::core::option::Option::None => write!(f, #unknown_format, self.0),
                }
            }
        }

        #[automatically_derived]
        impl ::core::convert::From<i32> for #name {
            fn from(value: i32) -> Self {
                Self(value)
            }
        }

        #[automatically_derived]
        impl ::core::convert::From<#name> for i32 {
            fn from(value: #name) -> i32 {
                value.0
            }
        }

        #[automatically_derived]
        impl #rt::Enumeration for #name {
            #[inline]
            fn from_i32(value: i32) -> Self {
                Self(value)
            }
            #[inline]
            fn to_i32(self) -> i32 {
                self.0
            }
            fn name(self) -> ::core::option::Option<&'static str> {
                Self::name(self)
            }
        }
    }
}
