//! What generated code tells the runtime about a service, and the type-erased interface the
//! server dispatches through.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use crate::context::Context;
pub use crate::context::Priority;
use crate::status::Status;

/// A boxed future, as type-erased service methods return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Whether a failed call may be tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Never: the call may have had effects.
    None,
    /// The call is idempotent; at most this many attempts in all.
    Idempotent {
        /// Attempts including the first.
        max_attempts: u8,
    },
}

/// One method of a service, as the IDL declares it.
#[derive(Debug)]
pub struct MethodDescriptor {
    /// The IDL name (`Send`).
    pub name: &'static str,
    /// The full name (`im.message.MessageSvr.Send`), for logs and metrics.
    pub full_name: &'static str,
    /// The method id.
    pub id: u16,
    /// The service id.
    pub service_id: u16,
    /// Default deadline of a call.
    pub timeout_ms: u32,
    /// Retry rule.
    pub retry: Retry,
    /// Business priority.
    pub priority: Priority,
    /// Whether the method has no response.
    pub oneway: bool,
    /// Whether a call may wait for an event up to its deadline (IDL `long_poll="true"`): its
    /// latency is the wait, not slowness, so it is not logged as a slow call and latency
    /// alarms do not judge it.
    pub long_poll: bool,
    /// Whose doing each status code is for this method's monitoring (the defaults of
    /// [`Code::class`](crate::status::Code::class), unless the IDL moves codes with
    /// `faults` or `caller_errors`).
    pub classes: crate::status::Classes,
}

impl MethodDescriptor {
    /// Its service's full name (`im.message.MessageSvr`): `full_name` without the method.
    pub fn service_name(&self) -> &'static str {
        let full = self.full_name;
        full.get(..full.len().saturating_sub(self.name.len() + 1))
            .unwrap_or(full)
    }
}

/// A service, as the IDL declares it.
#[derive(Debug)]
pub struct ServiceDescriptor {
    /// The full name (`im.message.MessageSvr`).
    pub name: &'static str,
    /// The service id, unique in a deployment.
    pub id: u16,
    /// Methods, in declaration order.
    pub methods: &'static [MethodDescriptor],
}

impl ServiceDescriptor {
    /// The method with this id.
    pub fn method(&self, id: u16) -> Option<&'static MethodDescriptor> {
        self.methods.iter().find(|m| m.id == id)
    }
}

/// A service the server can host: generated `XxxServer` types implement it by decoding the
/// request, calling the author's handler and encoding the response.
pub trait Service: Send + Sync + 'static {
    /// What the service is.
    fn descriptor(&self) -> &'static ServiceDescriptor;

    /// The service's `.proto` file and every file it imports, as an encoded protobuf
    /// `FileDescriptorSet` (dependencies first): what gRPC server reflection answers from.
    /// Generated servers return what `svrkit proto` exports; empty means nothing to say.
    fn proto(&self) -> &'static [u8] {
        &[]
    }

    /// Runs method `method_id` on an encoded request; returns the encoded response (empty for
    /// oneway methods).
    fn call(
        &self,
        method_id: u16,
        ctx: Context,
        request: Bytes,
    ) -> BoxFuture<Result<Bytes, Status>>;
}
