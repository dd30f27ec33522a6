//! A [`Channel`] as a [`tower_service::Service`], so that tower's middleware (concurrency
//! and rate limits, timeouts, load shedding, buffers, and the many layers written for it)
//! composes with svrkit channels.
//!
//! The request is a [`TowerCall`]: the method's descriptor (generated clients have it as
//! `XxxClient::DESCRIPTOR.methods[i]`), the request message and its [`CallOptions`]. The
//! response is the decoded response message; errors are [`Status`]es. A call through tower
//! is the channel's own call: the same deadlines, retries, policies, metrics and trace.
//! [`Encoded`](crate::codec::Encoded) as both message types passes bytes through, for
//! proxies.

use std::marker::PhantomData;
use std::task::{Context, Poll};

use super::{CallOptions, Channel};
use crate::codec::Message;
use crate::service::{BoxFuture, MethodDescriptor};
use crate::status::Status;

/// One call of `method`, as a tower request whose response is a `Resp`.
pub struct TowerCall<Req, Resp> {
    /// The method called.
    pub method: &'static MethodDescriptor,
    /// Its request.
    pub message: Req,
    /// Timeout, user key, dye, weak (as for [`Channel::call`]).
    pub options: CallOptions,
    response: PhantomData<fn() -> Resp>,
}

impl<Req, Resp> TowerCall<Req, Resp> {
    /// A call of `method` with `message` and the default options.
    pub fn new(method: &'static MethodDescriptor, message: Req) -> TowerCall<Req, Resp> {
        TowerCall {
            method,
            message,
            options: CallOptions::default(),
            response: PhantomData,
        }
    }

    /// The same call with `options`.
    pub fn with_options(mut self, options: CallOptions) -> TowerCall<Req, Resp> {
        self.options = options;
        self
    }
}

impl<Req, Resp> tower_service::Service<TowerCall<Req, Resp>> for Channel
where
    Req: Message + Send + Sync + 'static,
    Resp: Message + Send + 'static,
{
    type Response = Resp;
    type Error = Status;
    type Future = BoxFuture<Result<Resp, Status>>;

    /// Always ready: a channel holds no queue of its own (each connection bounds what it
    /// has in flight, and the policies refuse what should not be sent).
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: TowerCall<Req, Resp>) -> Self::Future {
        let channel = self.clone();
        Box::pin(async move {
            if call.method.oneway {
                // A oneway method has no response: what an empty one decodes to.
                channel
                    .call_oneway(call.method, &call.message, &call.options)
                    .await?;
                return Ok(Resp::default());
            }
            channel
                .call(call.method, &call.message, &call.options)
                .await
        })
    }
}
