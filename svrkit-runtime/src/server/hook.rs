//! Hooks around every request the router handles: where authentication, admission control
//! (DAGOR, in the policy layer) and server metrics plug in without touching generated code.

use std::time::Instant;

use crate::context::Context;
use crate::frame::Header;
use crate::service::MethodDescriptor;
use crate::status::Status;

/// Sees every request of a known method, network and in-process alike.
///
/// Hooks run in the order they were added. For each request:
/// 0. [`authenticate`](Hook::authenticate), before overload control, with the context
///    mutable: who the request is for.
/// 1. [`on_request`](Hook::on_request) before the body is decoded, with the request's arrival
///    time, deadline, priority, user key, peer address and metadata in the context. An error
///    answers the request with that status (`UNAUTHENTICATED`, `PERMISSION_DENIED`,
///    `OVERLOADED`, ...) without running it, and later hooks' `on_request` is not called.
/// 2. [`on_start`](Hook::on_start) when the handler is first polled (queue wait is
///    `started - ctx.arrived`).
/// 3. [`on_response`](Hook::on_response), exactly once for every hook, whether the request
///    ran, was refused by a hook or a limit, expired in the queue, was cancelled, or is
///    oneway (nothing is sent then). It may set fields of the response header, such as the
///    admission level.
///
/// Hooks are called on the connection's reader for requests answered inline: keep them to a
/// few atomic operations.
pub trait Hook: Send + Sync + 'static {
    /// First of all, before overload control ranks the request: the place to check
    /// credentials (in `ctx.metadata`) and say who the request is for by setting
    /// `ctx.user_key`. From a peer the server does not trust, the header's user key was
    /// dropped (`server/trust.rs`), and a request without one ranks last among its priority
    /// when the server sheds load; a key set here ranks it as that user. An error refuses
    /// the request before it counts toward overload.
    ///
    /// # Errors
    /// The status the caller gets instead of a response (`UNAUTHENTICATED`, say).
    fn authenticate(
        &self,
        _method: &'static MethodDescriptor,
        _ctx: &mut Context,
    ) -> Result<(), Status> {
        Ok(())
    }

    /// Before the body is decoded; an error refuses the request.
    ///
    /// # Errors
    /// The status the caller gets instead of a response.
    fn on_request(&self, _method: &'static MethodDescriptor, _ctx: &Context) -> Result<(), Status> {
        Ok(())
    }

    /// When the handler starts.
    fn on_start(&self, _method: &'static MethodDescriptor, _ctx: &Context, _started: Instant) {}

    /// When the outcome is known; `response.status_code` is 0 for success.
    fn on_response(
        &self,
        _method: &'static MethodDescriptor,
        _ctx: &Context,
        _response: &mut Header,
    ) {
    }
}

/// A shared hook, so the caller can keep a handle to it (to read what it saw).
impl<H: Hook + ?Sized> Hook for std::sync::Arc<H> {
    fn authenticate(
        &self,
        method: &'static MethodDescriptor,
        ctx: &mut Context,
    ) -> Result<(), Status> {
        (**self).authenticate(method, ctx)
    }
    fn on_request(&self, method: &'static MethodDescriptor, ctx: &Context) -> Result<(), Status> {
        (**self).on_request(method, ctx)
    }
    fn on_start(&self, method: &'static MethodDescriptor, ctx: &Context, started: Instant) {
        (**self).on_start(method, ctx, started);
    }
    fn on_response(&self, method: &'static MethodDescriptor, ctx: &Context, response: &mut Header) {
        (**self).on_response(method, ctx, response);
    }
}
