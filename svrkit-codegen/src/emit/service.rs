//! Service stubs: the server trait authors implement, the adapter the runtime dispatches
//! through, and the typed client with the service's static descriptor.

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use super::{doc_attrs, paths};
use crate::ident;
use crate::ir::{Priority, Retry, Schema};

pub(super) fn generate(schema: &Schema, index: usize) -> TokenStream {
    let s = &schema.services[index];
    let rt = quote!(::svrkit_runtime::codegen);
    let trait_name = ident::ident(&s.name);
    let server = format_ident!("{}Server", s.name);
    let client = format_ident!("{}Client", s.name);
    let doc = doc_attrs(&s.doc);
    let full_name = &s.full_name;
    let service_id = Literal::u16_unsuffixed(s.id);
    // What the server says of itself to gRPC reflection: the package's `.proto` as
    // descriptors, with everything it imports.
    let proto = Literal::byte_string(&crate::descriptor::set_for(schema, s.package));
    let ty = |id| paths::value_type(schema, s.package, crate::ir::ValueType::Struct(id));

    let descriptors = s.methods.iter().map(|m| {
        let name = &m.name;
        let method_full_name = format!("{}.{}", s.full_name, m.name);
        let id = Literal::u16_unsuffixed(m.id);
        let timeout = Literal::u32_unsuffixed(m.timeout_ms);
        let retry = match m.retry {
            Retry::None => quote!(#rt::Retry::None),
            Retry::Idempotent { max_attempts } => {
                let n = Literal::u8_unsuffixed(max_attempts);
                quote!(#rt::Retry::Idempotent { max_attempts: #n })
            }
        };
        let priority = match m.priority {
            Priority::Critical => quote!(Critical),
            Priority::High => quote!(High),
            Priority::Normal => quote!(Normal),
            Priority::Low => quote!(Low),
        };
        let oneway = m.response.is_none();
        let long_poll = m.long_poll;
        // Codes the IDL moves, applied over the runtime's defaults in a constant.
        let moves = m.classes.iter().map(|(name, class)| {
            let code = crate::ir::STATUS_NAMES
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, c)| *c);
            let code = Literal::u32_unsuffixed(code);
            let class = match class {
                crate::ir::ErrorClass::Fault => quote!(Fault),
                crate::ir::ErrorClass::Caller => quote!(Caller),
            };
            quote!(.with(#rt::Code(#code), #rt::Class::#class))
        });
        quote! {
            #rt::MethodDescriptor {
                name: #name,
                full_name: #method_full_name,
                id: #id,
                service_id: #service_id,
                timeout_ms: #timeout,
                retry: #retry,
                priority: #rt::Priority::#priority,
                oneway: #oneway,
                long_poll: #long_poll,
                classes: #rt::Classes::DEFAULT #(#moves)*,
            }
        }
    });

    // What the IDL says about a method, for its docs (and a doc for every method, so crates
    // that deny `missing_docs` accept generated code).
    let method_doc = |m: &crate::ir::Method| {
        let retry = match m.retry {
            Retry::None => "not retried".to_owned(),
            Retry::Idempotent { max_attempts } => {
                format!("idempotent, up to {max_attempts} attempts")
            }
        };
        let summary = format!(
            " `{}` (method {}): deadline {} ms, {retry}, priority {}{}.",
            m.name,
            m.id,
            m.timeout_ms,
            m.priority.name(),
            if m.response.is_none() {
                ", oneway"
            } else if m.long_poll {
                ", long poll"
            } else {
                ""
            }
        );
        let doc = doc_attrs(&m.doc);
        if m.doc.is_some() {
            quote! { #doc #[doc = ""] #[doc = #summary] }
        } else {
            quote! { #[doc = #summary] }
        }
    };

    let trait_methods = s.methods.iter().map(|m| {
        let doc = method_doc(m);
        let f = ident::ident(&m.fn_name);
        let req = ty(m.request);
        let resp = m.response.map_or(quote!(()), ty);
        quote! {
            #doc
            fn #f(&self, ctx: #rt::Context, request: #req)
                -> impl ::core::future::Future<Output = ::core::result::Result<#resp, #rt::Status>> + ::core::marker::Send;
        }
    });

    let dispatch = s.methods.iter().map(|m| {
        let f = ident::ident(&m.fn_name);
        let id = Literal::u16_unsuffixed(m.id);
        let req = ty(m.request);
        let run = if m.response.is_some() {
            quote! {
                let response = inner.#f(ctx, request).await?;
                ::core::result::Result::Ok(#rt::encode_response(&response))
            }
        } else {
            quote! {
                inner.#f(ctx, request).await?;
                ::core::result::Result::Ok(#rt::Bytes::new())
            }
        };
        quote! {
            #id => ::std::boxed::Box::pin(async move {
                let request = #rt::decode_request::<#req>(&request)?;
                #run
            }),
        }
    });

    let client_methods = s.methods.iter().enumerate().map(|(i, m)| {
        let doc = method_doc(m);
        let f = ident::ident(&m.fn_name);
        let f_with = format_ident!("{}_with", m.fn_name);
        let f_weak = format_ident!("{}_weak", m.fn_name);
        let req = ty(m.request);
        let i = Literal::usize_unsuffixed(i);
        let timeout_doc = format!(" Deadline {} ms unless `options` say otherwise.", m.timeout_ms);
        match m.response {
            Some(resp) => {
                let resp = ty(resp);
                quote! {
                    #doc
                    pub async fn #f(&self, request: &#req) -> ::core::result::Result<#resp, #rt::Status> {
                        self.#f_with(request, &#rt::CallOptions::default()).await
                    }
                    #[doc = #timeout_doc]
                    pub async fn #f_with(&self, request: &#req, options: &#rt::CallOptions)
                        -> ::core::result::Result<#resp, #rt::Status>
                    {
                        self.channel.call_counted(self.metrics.methods[#i], request, options).await
                    }
                    #[doc = " As a weak dependency: the response, or `None` when the call failed, was"]
                    #[doc = " refused or had no answer within `timeout` (counted as a skip)."]
                    pub async fn #f_weak(&self, request: &#req, timeout: ::core::time::Duration)
                        -> ::core::option::Option<#resp>
                    {
                        self.channel.call_weak(self.metrics.methods[#i], request, timeout).await
                    }
                }
            }
            None => quote! {
                #doc
                #[doc = ""]
                #[doc = " Oneway: returns once the request is on its way."]
                pub async fn #f(&self, request: &#req) -> ::core::result::Result<(), #rt::Status> {
                    self.#f_with(request, &#rt::CallOptions::default()).await
                }
                #[doc = #timeout_doc]
                pub async fn #f_with(&self, request: &#req, options: &#rt::CallOptions)
                    -> ::core::result::Result<(), #rt::Status>
                {
                    self.channel.call_oneway_counted(self.metrics.methods[#i], request, options).await
                }
            },
        }
    });

    let trait_doc =
        format!(" The server side of `{full_name}`: implement it, then host it with [`{server}`].");
    let server_doc = format!(" Hosts a [`{trait_name}`] implementation on an svrkit server.");
    // A service without methods has a client that never reads its fields.
    let unused_fields = if s.methods.is_empty() {
        quote!(#[allow(dead_code)])
    } else {
        quote!()
    };
    let client_doc =
        format!(" Calls `{full_name}` through a channel (remote replicas or in process).");
    // A blank line between the IDL's doc and the trait's own, and none above it when the IDL
    // has no doc.
    let trait_doc = if s.doc.is_some() {
        quote! { #doc #[doc = ""] #[doc = #trait_doc] }
    } else {
        quote! { #[doc = #trait_doc] }
    };
    quote! {
        #trait_doc
        pub trait #trait_name: ::core::marker::Send + ::core::marker::Sync + 'static {
            #(#trait_methods)*
        }

        #[doc = #server_doc]
        #[derive(Debug)]
        pub struct #server<T> {
            inner: ::std::sync::Arc<T>,
        }

        impl<T: #trait_name> #server<T> {
            /// Wraps a service implementation.
            pub fn new(service: T) -> Self {
                Self { inner: ::std::sync::Arc::new(service) }
            }

            /// Wraps a shared service implementation.
            pub fn from_arc(service: ::std::sync::Arc<T>) -> Self {
                Self { inner: service }
            }
        }

        #[automatically_derived]
        impl<T: #trait_name> #rt::Service for #server<T> {
            fn descriptor(&self) -> &'static #rt::ServiceDescriptor {
                &#client::DESCRIPTOR
            }

            fn proto(&self) -> &'static [u8] {
                #proto
            }

            fn call(&self, method_id: u16, ctx: #rt::Context, request: #rt::Bytes)
                -> #rt::BoxFuture<::core::result::Result<#rt::Bytes, #rt::Status>>
            {
                let inner = ::std::sync::Arc::clone(&self.inner);
                match method_id {
                    #(#dispatch)*
                    other => ::std::boxed::Box::pin(async move {
                        ::core::result::Result::Err(#rt::Status::unimplemented(
                            ::std::format!("{} has no method with id {}", #full_name, other),
                        ))
                    }),
                }
            }
        }

        #[doc = #client_doc]
        #[derive(Clone, Debug)]
        #unused_fields
        pub struct #client {
            channel: #rt::Channel,
            metrics: &'static #rt::ServiceMetrics,
        }

        impl #client {
            /// What the IDL says about the service: ids, deadlines, retry rules, priorities.
            pub const DESCRIPTOR: #rt::ServiceDescriptor = #rt::ServiceDescriptor {
                name: #full_name,
                id: #service_id,
                methods: &[#(#descriptors),*],
            };

            /// A client calling through `channel`. Registers the service's client metrics, so
            /// every method's series exist from now on.
            pub fn new(channel: #rt::Channel) -> Self {
                Self { channel, metrics: #rt::register_client(&Self::DESCRIPTOR) }
            }

            #(#client_methods)*
        }
    }
}
