//! The bottom of a remote channel: a balancer over a changeable set of endpoints, each with
//! a few multiplexed connections.

use std::sync::Arc;

use super::balance::{Balancer, EndpointSet};
use super::{Call, CallFuture, ChannelOptions, Transport, remaining_ms};
use crate::status::Status;

/// Sends each attempt to the endpoint the balancer picks.
pub(super) struct Pool {
    endpoints: Arc<EndpointSet>,
    balancer: Arc<dyn Balancer>,
    options: ChannelOptions,
}

impl Pool {
    pub(super) fn new(
        endpoints: Arc<EndpointSet>,
        balancer: Arc<dyn Balancer>,
        options: ChannelOptions,
    ) -> Pool {
        Pool {
            endpoints,
            balancer,
            options,
        }
    }
}

impl Transport for Pool {
    fn call<'a>(&'a self, call: &'a mut Call) -> CallFuture<'a> {
        Box::pin(async move {
            let endpoints = self.endpoints.snapshot();
            if endpoints.is_empty() {
                return Err(Status::unavailable("the channel has no endpoints"));
            }
            let endpoint = self
                .balancer
                .pick(call, &endpoints)
                .and_then(|i| endpoints.get(i))
                .ok_or_else(|| Status::unavailable("the balancer found no endpoint to call"))?
                .clone();
            let _load = endpoint.start();
            let conn = endpoint.connection(&self.options).await?;
            // What is left now, after connecting, is what the server gets.
            let mut header = call.header.clone();
            header.deadline_ms = remaining_ms(call.deadline);
            conn.call(header, call.body.clone()).await
        })
    }
}
