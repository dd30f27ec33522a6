//! The stable facade that generated service stubs are written against.
//!
//! Code produced by `svrkit-codegen` names only items under `::svrkit_runtime::codegen` (service
//! stubs) and `::svrkit_runtime::codec::generated` (structs and enums), never the runtime's
//! internals, so the runtime can change its insides without breaking code that was generated
//! earlier. This facade re-exports the codec's too, so code generated before the split still
//! builds. Nothing here is meant to be called by hand.

#[doc(hidden)]
pub use crate::codec::generated::*;
#[doc(hidden)]
pub use crate::{
    client::{CallOptions, Channel},
    context::Context,
    metrics::{ServiceMetrics, register_client},
    service::{BoxFuture, MethodDescriptor, Priority, Retry, Service, ServiceDescriptor},
    status::{Class, Classes, Code, Status},
};

/// Decodes a request for a generated server stub.
#[doc(hidden)]
pub fn decode_request<M: Message>(body: &Bytes) -> Result<M, Status> {
    let mut request = M::default();
    let mut decoder = Decoder::from_bytes(body);
    request
        .merge(&mut decoder)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    // What the request's lists and maps took is charged to the server's memory budget
    // before the handler runs: a request it cannot take is refused.
    crate::server::note_decoded(decoder.heap())?;
    Ok(request)
}

/// Encodes a response for a generated server stub.
#[doc(hidden)]
pub fn encode_response<M: Message>(response: &M) -> Bytes {
    response.encode_to_bytes()
}
