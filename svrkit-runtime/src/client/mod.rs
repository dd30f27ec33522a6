//! The client: channels to services, built as a stack of layers over a transport.
//!
//! ```text
//! generated client ── Channel::call ── layer ── layer ── ... ── transport
//!                     (deadline,        (interceptors, policies,   (Pool: balancer over a
//!                      encode, cancel)   retry; metrics later)      changeable EndpointSet,
//!                                                                   or the server's router)
//! ```
//!
//! Every generated client method goes through [`Channel::call`], which settles the deadline,
//! fills the request header (priority and user key inherited from the request being served),
//! encodes the request and passes a [`Call`] down the stack. Each [`Layer`] wraps the one
//! below it and sees the call, with its method's descriptor, on the way down and the response
//! header (status, admission level) on the way up; layers compose, none replaces another.
//! The bottom [`Transport`] is either a pool of endpoints picked by a [`Balancer`], or the
//! server's router in the same process (`Server::local_channel`, which the server module
//! builds with [`Channel::from_transport`]: the client does not depend on the server), so the
//! two paths share everything above it.
//! `docs/runtime.md` describes the layering.

mod balance;
mod call;
mod connection;
mod endpoint;
#[cfg(feature = "grpc")]
mod grpc;
mod intercept;
mod options;
pub(crate) mod pool;
mod retry;
mod ring;
mod route;
mod tower;
mod transport;

pub use balance::{Balancer, BalancerKind, PowerOfTwo, RoundRobin};
pub use endpoint::{DEFAULT_WEIGHT, Endpoint, EndpointSet};
pub use intercept::{CallInfo, CallPolicy, Interceptor, NoPolicy, Outcome};
pub use options::{CallOptions, ChannelOptions, Protocol};
pub use retry::RetryConfig;
pub use ring::Ring;
pub use route::{Route, RouteError};
pub use tower::TowerCall;
pub use transport::{Call, CallFuture, Layer, Transport};

use std::sync::Arc;
use std::time::Duration;

use faststr::FastStr;

/// A handle for calling a service: cheap to clone, safe to share between tasks.
#[derive(Clone)]
pub struct Channel {
    stack: Arc<dyn Transport>,
    pool: Option<Arc<pool::Pool>>,
    max_frame: usize,
    caller: FastStr,
    monitored: bool,
    weak: Option<Duration>,
    /// What its calls' client spans name their system: `svrkit`, or `grpc` for a channel
    /// that speaks gRPC.
    system: &'static str,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.pool {
            Some(pool) => f
                .debug_struct("Channel")
                .field("endpoints", &pool.endpoints)
                .finish(),
            None => f.write_str("Channel(in-process)"),
        }
    }
}

impl Channel {
    /// A channel to the given replicas (`"host:port"`), connecting when first used, with
    /// the balancer `options.balancer` names (power of two choices by default), retries,
    /// adaptive throttling, collaborative rejection and ejection of failing replicas.
    pub fn lazy(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        options: ChannelOptions,
    ) -> Channel {
        let balancer = options.balancer.build();
        Channel::balanced(endpoints, options, balancer)
    }

    /// Like [`lazy`](Channel::lazy), choosing endpoints with `balancer`.
    pub fn with_balancer(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        options: ChannelOptions,
        balancer: impl Balancer,
    ) -> Channel {
        Channel::balanced(endpoints, options, Arc::new(balancer))
    }

    /// A channel whose endpoints are not known yet: a discovery source gives them through
    /// [`endpoints`](Channel::endpoints) (`EndpointSet::update`), and calls made before that
    /// wait for it within their deadlines. Balanced as `options.balancer` names.
    pub fn unresolved(options: ChannelOptions) -> Channel {
        let set = EndpointSet::unresolved(options.clone());
        let balancer = options.balancer.build();
        Channel::over(set, options, balancer)
    }

    fn balanced(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        options: ChannelOptions,
        balancer: Arc<dyn Balancer>,
    ) -> Channel {
        let addrs = endpoints.into_iter().map(Into::into).collect();
        Channel::over(EndpointSet::new(addrs, options.clone()), options, balancer)
    }

    fn over(set: EndpointSet, options: ChannelOptions, balancer: Arc<dyn Balancer>) -> Channel {
        let set = Arc::new(set);
        let pool = Arc::new(pool::Pool::new(set, balancer, options.clone()));
        let stack: Arc<dyn Transport> = if options.retry.enabled {
            Arc::new(retry::Retrying::new(pool.clone(), options.retry.clone()))
        } else {
            pool.clone()
        };
        Channel {
            max_frame: options.max_frame,
            caller: options.caller.clone(),
            monitored: options.monitoring,
            weak: options.weak,
            system: match options.protocol {
                Protocol::Svrkit => "svrkit",
                Protocol::Grpc => "grpc",
            },
            stack,
            pool: Some(pool),
        }
    }

    /// A channel whose bottom is `transport` (the server's router for an in-process
    /// channel, or a transport of your own), sending frames of at most `max_frame` bytes.
    pub fn from_transport(transport: Arc<dyn Transport>, max_frame: usize) -> Channel {
        Channel {
            max_frame,
            caller: FastStr::empty(),
            monitored: true,
            weak: None,
            system: "svrkit",
            stack: transport,
            pool: None,
        }
    }

    /// The pool of a remote channel.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn pool(&self) -> Option<&Arc<pool::Pool>> {
        self.pool.as_ref()
    }

    /// The endpoints of a remote channel, which can be changed while it is in use.
    pub fn endpoints(&self) -> Option<&Arc<EndpointSet>> {
        self.pool.as_ref().map(|p| &p.endpoints)
    }

    /// Sets the endpoints of the gray-release group `name` (made if new; an empty list
    /// removes it), while the channel is in use. Calls reach a group only through the
    /// rules set with [`set_routes`](Channel::set_routes).
    ///
    /// # Errors
    /// On an in-process channel, which has no endpoints.
    pub fn set_group(
        &self,
        name: &str,
        endpoints: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<(), RouteError> {
        let pool = self.remote()?;
        pool.routing
            .set_group(name, endpoints.into_iter().map(Into::into).collect());
        Ok(())
    }

    /// The endpoints of group `name`, if it has any.
    pub fn group(&self, name: &str) -> Option<Arc<EndpointSet>> {
        self.pool.as_ref()?.routing.group(name)
    }

    /// Replaces the gray-release rules, while the channel is in use: the first rule a call
    /// matches sends it to its group, and calls no rule matches go to the main endpoints.
    ///
    /// # Errors
    /// When a rule names a group with no endpoints or a fraction outside 0 to 1, or on an
    /// in-process channel; the rules in force stay.
    pub fn set_routes(&self, routes: Vec<Route>) -> Result<(), RouteError> {
        self.remote()?.routing.set_routes(routes)
    }

    fn remote(&self) -> Result<&Arc<pool::Pool>, RouteError> {
        self.pool.as_ref().ok_or(RouteError::InProcess)
    }

    /// This channel with every call weak, giving up after `timeout` (see
    /// [`CallOptions::weak`]).
    pub fn weak(mut self, timeout: Duration) -> Channel {
        self.weak = Some(timeout);
        self
    }

    /// This channel without client metrics (for measuring what they cost).
    pub fn unmonitored(mut self) -> Channel {
        self.monitored = false;
        self
    }

    /// This channel with `layer` wrapped around its stack (outermost: it sees calls first).
    pub fn layer<L: Layer>(mut self, layer: L) -> Channel {
        self.stack = Arc::new(layer.layer(self.stack));
        self
    }

    /// This channel with `policy` deciding about and learning from every attempt, in
    /// addition to the policies it already has.
    pub fn with_policy(self, policy: impl CallPolicy) -> Channel {
        self.layer(intercept::PolicyLayer(Arc::new(policy)))
    }

    /// This channel with `interceptor` seeing (and able to change or refuse) every call.
    pub fn with_interceptor(self, interceptor: impl Interceptor) -> Channel {
        self.layer(intercept::InterceptorLayer(Arc::new(interceptor)))
    }
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Channel>();
};

/// A call of a made-up idempotent method, for the balancers' and routes' tests.
#[cfg(test)]
pub(crate) fn test_call(user_key: u64) -> Call {
    use crate::frame::Header;
    use crate::service::MethodDescriptor;
    use crate::service::{Priority, Retry};
    use bytes::Bytes;
    use std::time::Instant;
    static METHOD: MethodDescriptor = MethodDescriptor {
        name: "Get",
        full_name: "test.Svc.Get",
        id: 1,
        service_id: 1,
        timeout_ms: 1000,
        retry: Retry::Idempotent { max_attempts: 3 },
        priority: Priority::Normal,
        oneway: false,
        long_poll: false,
        classes: crate::status::Classes::DEFAULT,
    };
    Call {
        method: &METHOD,
        header: Header {
            user_key,
            ..Header::default()
        },
        body: Bytes::new(),
        deadline: Instant::now() + Duration::from_secs(1),
        key: user_key,
        metrics: None,
        last_endpoint: 0,
        hedge: false,
    }
}

/// Endpoints at made-up addresses, for the balancers' tests.
#[cfg(test)]
pub(crate) fn test_endpoints(n: usize) -> Vec<Arc<Endpoint>> {
    (0..n)
        .map(|i| {
            Arc::new(Endpoint::new(
                format!("10.0.0.{i}:7000"),
                &ChannelOptions {
                    min_backoff: Duration::from_secs(60),
                    ..ChannelOptions::default()
                },
            ))
        })
        .collect()
}
