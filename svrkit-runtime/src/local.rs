//! In-process calls: a client transport straight into a server's router, so that services
//! hosted in one process call each other through the same client layers (retries, balancing,
//! policies, metrics) and the same router (hooks, limits, deadlines, admission) as remote
//! calls, without the network.
//!
//! It sits above both the server and the client, which know nothing of each other: the
//! server hands out its router, the client takes any [`Transport`].

use std::sync::{Arc, OnceLock};

use crate::client::{Call, CallFuture, Channel, Transport};
use crate::server::router::Router;
use crate::server::{Server, ServerBuilder};
use crate::status::{Code, Status};

impl Server {
    /// A channel to this server's services that does not go through the network: calls take
    /// the same client layers and the same router (hooks, limits, deadlines) as remote ones.
    pub fn local_channel(&self) -> Channel {
        let router = self.router().clone();
        let max_frame = router.limits.max_frame;
        Channel::from_transport(Arc::new(Local(router)), max_frame)
    }
}

impl ServerBuilder {
    /// A channel to the services of the server being built, in process (as
    /// [`Server::local_channel`]): for co-hosted services that call each other, whose clients
    /// exist before the server does. Calls made before [`build`](ServerBuilder::build) fail
    /// `UNAVAILABLE`; a service not added by then answers `UNIMPLEMENTED`.
    pub fn local_channel(&self) -> Channel {
        let (router, max_frame) = self.router_to_be();
        Channel::from_transport(Arc::new(Later(router)), max_frame)
    }
}

/// The bottom of an in-process channel: calls go straight to the router.
struct Local(Arc<Router>);

impl Transport for Local {
    fn call<'a>(&'a self, call: &'a mut Call) -> CallFuture<'a> {
        call_in_process(&self.0, call)
    }
}

fn call_in_process<'a>(router: &'a Arc<Router>, call: &Call) -> CallFuture<'a> {
    let mut header = call.header.clone();
    header.deadline_ms = crate::frame::remaining_ms(call.deadline);
    let body = call.body.clone();
    Box::pin(async move { Ok(router.call_local(header, body).await) })
}

/// The in-process transport of a server still being built: [`Local`] once it is.
struct Later(Arc<OnceLock<Arc<Router>>>);

impl Transport for Later {
    fn call<'a>(&'a self, call: &'a mut Call) -> CallFuture<'a> {
        match self.0.get() {
            Some(router) => call_in_process(router, call),
            None => Box::pin(std::future::ready(Err(Status::new(
                Code::UNAVAILABLE,
                "the server of this local channel is not built yet",
            )))),
        }
    }
}
