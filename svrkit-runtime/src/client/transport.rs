//! The stack a call goes down: a [`Call`] passed by `&mut` through [`Layer`]s to a
//! [`Transport`] at the bottom (a pool of endpoints, or a server's router in process).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::frame::{Frame, Header};
use crate::metrics::MethodMetrics;
use crate::service::MethodDescriptor;
use crate::status::Status;

/// One call on its way down a channel's layers.
#[derive(Debug)]
pub struct Call {
    /// What the IDL says about the method.
    pub method: &'static MethodDescriptor,
    /// The request header; the transport fills in the request id and the time left.
    pub header: Header,
    /// The encoded request.
    pub body: Bytes,
    /// When the call must be done by.
    pub deadline: Instant,
    /// What key-based balancers hash (the user key unless a layer sets another).
    pub key: u64,
    /// The method's counters, for layers that count (retries, local rejections); `None`
    /// when the channel is not monitored.
    pub metrics: Option<&'static MethodMetrics>,
    /// The endpoint the last attempt went to (its address in memory; 0: none yet), so that
    /// a retry goes elsewhere.
    pub(crate) last_endpoint: usize,
    /// A second attempt running beside the first (see the retry layer): it goes to the least
    /// loaded replica, which the first attempt's is not.
    pub(crate) hedge: bool,
}

impl Call {
    /// The next attempt of this call, to run beside it.
    pub(super) fn hedge(&self) -> Call {
        let mut header = self.header.clone();
        header.attempt += 1;
        Call {
            method: self.method,
            header,
            body: self.body.clone(),
            deadline: self.deadline,
            key: self.key,
            metrics: self.metrics,
            last_endpoint: self.last_endpoint,
            hedge: true,
        }
    }
}

/// The future a [`Transport`] returns: the response frame (whose header may carry an error
/// status from the server), or a status for a call that got no response.
pub type CallFuture<'a> = Pin<Box<dyn Future<Output = Result<Frame, Status>> + Send + 'a>>;

/// Carries a call: the bottom of a channel (a pool of endpoints, or the router in process)
/// and every layer above it.
pub trait Transport: Send + Sync + 'static {
    /// Runs `call`; may be called again with the same call (a retry).
    fn call<'a>(&'a self, call: &'a mut Call) -> CallFuture<'a>;
}

/// Wraps a transport in another, the way tower layers wrap services.
pub trait Layer {
    /// The wrapped transport.
    type Transport: Transport;
    /// Wraps `inner`.
    fn layer(self, inner: Arc<dyn Transport>) -> Self::Transport;
}
