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
mod connection;
mod endpoint;
mod policy;
pub(crate) mod pool;
mod retry;
mod ring;
mod route;

pub use balance::{Balancer, BalancerKind, PowerOfTwo, RoundRobin};
pub use endpoint::{DEFAULT_WEIGHT, Endpoint, EndpointSet};
pub use policy::{CallInfo, CallPolicy, Interceptor, NoPolicy, Outcome};
pub use retry::RetryConfig;
pub use ring::Ring;
pub use route::{Route, RouteError};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use faststr::FastStr;

use crate::codec::Message;
use crate::context::Context;
use crate::frame::{self, Frame, FrameKind, Header};
use crate::monitor::{self, MethodMetrics};
use crate::service::MethodDescriptor;
use crate::status::{Code, Status};

/// Per-call settings that override the IDL's.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// Deadline for this call instead of the method's `timeout_ms`.
    pub timeout: Option<Duration>,
    /// The end user the call is for, for overload control and key-based balancing.
    pub user_key: Option<u64>,
    /// Call as a weak dependency with this timeout: a failure, a refusal or no answer in
    /// time gives a *skipped* result instead of an error (see [`Channel::call`]).
    pub weak: Option<Duration>,
    /// Dye tag for gray release (see [`Route`]), instead of the one inherited from the
    /// request being served.
    pub dye: Option<FastStr>,
}

impl CallOptions {
    /// Options with a timeout.
    pub fn timeout(timeout: Duration) -> CallOptions {
        CallOptions {
            timeout: Some(timeout),
            ..CallOptions::default()
        }
    }

    /// Options for a weak call that gives up after `timeout`.
    pub fn weak(timeout: Duration) -> CallOptions {
        CallOptions {
            weak: Some(timeout),
            ..CallOptions::default()
        }
    }
}

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
    fn hedge(&self) -> Call {
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

/// How a channel connects.
#[derive(Clone, Debug)]
pub struct ChannelOptions {
    /// Connections kept per endpoint (each multiplexes many calls).
    pub connections_per_endpoint: usize,
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// First wait after a failed connect (or a dead connection); doubles up to
    /// `max_backoff`.
    pub min_backoff: Duration,
    /// Longest wait between connect attempts to a failing endpoint.
    pub max_backoff: Duration,
    /// Largest frame sent or accepted. A larger request fails with `TOO_LARGE` before it is
    /// sent; a larger response fails its call only.
    pub max_frame: usize,
    /// While calls wait on a connection that has been silent this long, it is pinged; if it
    /// stays silent as long again it is closed, its calls fail `UNAVAILABLE` and its
    /// endpoint is taken out of rotation.
    pub keepalive_interval: Duration,
    /// Time allowed to write a batch of requests: a peer that stops reading for this long
    /// has its connection closed, so that requests (oneway ones above all, which nobody
    /// waits on) do not queue behind it, and new calls go to a fresh connection.
    pub write_timeout: Duration,
    /// This service's name, sent as the caller.
    pub caller: FastStr,
    /// Whether calls are counted in the process's client metrics (default: yes).
    pub monitoring: bool,
    /// How failed attempts of idempotent methods are retried.
    pub retry: RetryConfig,
    /// Adaptive throttling: while the backend refuses, send about this many times the
    /// requests it accepts and drop the rest here (the SRE book's `K`; default 2). `None`
    /// turns it off.
    pub throttle: Option<f64>,
    /// Failures in a row (`UNAVAILABLE`: unreachable, broken connections, or said by the
    /// server) that eject an endpoint for a backoff period.
    pub eject_after: u32,
    /// Every call of the channel is weak, with this timeout (see [`CallOptions::weak`]).
    pub weak: Option<Duration>,
    /// The balancer of [`Channel::lazy`].
    pub balancer: BalancerKind,
    /// Speak TLS to every endpoint (see [`crate::tls`]); plain TCP when `None`.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::ClientTls>,
}

impl Default for ChannelOptions {
    fn default() -> ChannelOptions {
        ChannelOptions {
            connections_per_endpoint: 2,
            connect_timeout: Duration::from_secs(1),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            max_frame: frame::DEFAULT_MAX_FRAME,
            keepalive_interval: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            caller: FastStr::empty(),
            monitoring: true,
            retry: RetryConfig::default(),
            throttle: Some(2.0),
            eject_after: 5,
            weak: None,
            balancer: BalancerKind::default(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// A handle for calling a service: cheap to clone, safe to share between tasks.
#[derive(Clone)]
pub struct Channel {
    stack: Arc<dyn Transport>,
    pool: Option<Arc<pool::Pool>>,
    max_frame: usize,
    caller: FastStr,
    monitored: bool,
    weak: Option<Duration>,
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
        self.pool
            .as_ref()
            .ok_or_else(|| RouteError("an in-process channel has no endpoint groups".into()))
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
        self.layer(policy::PolicyLayer(Arc::new(policy)))
    }

    /// This channel with `interceptor` seeing (and able to change or refuse) every call.
    pub fn with_interceptor(self, interceptor: impl Interceptor) -> Channel {
        self.layer(policy::InterceptorLayer(Arc::new(interceptor)))
    }

    /// Calls `method` with `request`: the path every generated client method takes.
    ///
    /// The deadline is the per-call timeout, else the method's `timeout_ms`, and never later
    /// than what is left of the deadline of the request this task is serving, so budgets
    /// shrink hop by hop; that request's priority and user key are inherited too. Dropping
    /// the returned future cancels the call (the server is told, and the handler's context
    /// sees it), and so does the cancellation of the request this task is serving.
    ///
    /// A **weak** call ([`CallOptions::weak`], or a channel made [`weak`](Channel::weak))
    /// never fails: when it fails, is refused or has no answer within its own timeout it is
    /// *skipped*, counted as such, and gives the response with every field at its default
    /// (what an empty response decodes to). Use [`call_weak`](Channel::call_weak) to tell a
    /// skip from an answer.
    ///
    /// # Errors
    /// The server's status, or `DEADLINE_EXCEEDED`, `CANCELLED`, `UNAVAILABLE` (no endpoint
    /// reachable), `TOO_LARGE`, `INTERNAL` (a response that does not decode).
    pub async fn call<Req: Message, Resp: Message>(
        &self,
        method: &'static MethodDescriptor,
        request: &Req,
        options: &CallOptions,
    ) -> Result<Resp, Status> {
        let metrics = self.metrics_of(method);
        let response = self
            .call_raw(method, metrics, request, options, decode_response::<Resp>)
            .await?;
        Ok(response.unwrap_or_default())
    }

    /// Calls `method` as a weak dependency with `timeout`: its response, or `None` when the
    /// call was skipped (it failed, was refused, or had no answer in time). Skips are counted
    /// in the method's client metrics. Generated clients call this from their `xxx_weak`
    /// methods, with their counters.
    pub async fn call_weak<Req: Message, Resp: Message>(
        &self,
        method: &'static MethodMetrics,
        request: &Req,
        timeout: Duration,
    ) -> Option<Resp> {
        let metrics = self.monitored.then_some(method);
        let options = CallOptions::weak(timeout);
        self.call_raw(
            method.descriptor,
            metrics,
            request,
            &options,
            decode_response::<Resp>,
        )
        .await
        .ok()?
    }

    /// Calls a oneway `method`: returns once the request is queued on a connection (or, in
    /// process, handed to the service).
    ///
    /// # Errors
    /// `DEADLINE_EXCEEDED` or `UNAVAILABLE` when the request could not be sent.
    pub async fn call_oneway<Req: Message>(
        &self,
        method: &'static MethodDescriptor,
        request: &Req,
        options: &CallOptions,
    ) -> Result<(), Status> {
        let metrics = self.metrics_of(method);
        self.call_raw(method, metrics, request, options, ignore_body)
            .await
            .map(drop)
    }

    /// Like [`call`](Channel::call), counting the call on `method`'s counters: the path of
    /// generated clients, which resolve their methods' counters once, when they are made.
    ///
    /// # Errors
    /// As [`call`](Channel::call).
    pub async fn call_counted<Req: Message, Resp: Message>(
        &self,
        method: &'static MethodMetrics,
        request: &Req,
        options: &CallOptions,
    ) -> Result<Resp, Status> {
        let metrics = self.monitored.then_some(method);
        let response = self
            .call_raw(
                method.descriptor,
                metrics,
                request,
                options,
                decode_response::<Resp>,
            )
            .await?;
        Ok(response.unwrap_or_default())
    }

    /// Like [`call_oneway`](Channel::call_oneway), counting the call on `method`'s counters.
    ///
    /// # Errors
    /// As [`call_oneway`](Channel::call_oneway).
    pub async fn call_oneway_counted<Req: Message>(
        &self,
        method: &'static MethodMetrics,
        request: &Req,
        options: &CallOptions,
    ) -> Result<(), Status> {
        let metrics = self.monitored.then_some(method);
        self.call_raw(method.descriptor, metrics, request, options, ignore_body)
            .await
            .map(drop)
    }

    /// The counters of a method called without a generated client: found by name, if a
    /// generated client or server of its service was made in this process.
    fn metrics_of(&self, method: &'static MethodDescriptor) -> Option<&'static MethodMetrics> {
        if self.monitored {
            monitor::find_method(method)
        } else {
            None
        }
    }

    /// The response, as `decode` reads it from the body, or `None` for a skipped weak call.
    /// Decoding happens before the call is counted, so that a response the caller cannot
    /// read counts as the error it is, not as a success.
    async fn call_raw<Req: Message, T>(
        &self,
        method: &'static MethodDescriptor,
        metrics: Option<&'static MethodMetrics>,
        request: &Req,
        options: &CallOptions,
        decode: fn(&MethodDescriptor, Bytes) -> Result<T, Status>,
    ) -> Result<Option<T>, Status> {
        let now = Instant::now();
        // Counted from here: every return below, and the caller dropping the call, ends it.
        let mut counted = Counted {
            metrics,
            started: now,
            code: Code::CANCELLED,
        };
        if let Some(m) = metrics {
            m.client_request();
        }
        let weak = options.weak.or(self.weak);
        let result = self
            .call_inner(method, metrics, request, options, now, weak)
            .await
            .and_then(|body| decode(method, body));
        counted.code = match &result {
            Ok(_) => Code::OK,
            Err(status) => status.code(),
        };
        match result {
            Ok(response) => Ok(Some(response)),
            Err(status) if weak.is_some() => {
                if let Some(m) = metrics {
                    m.client_weak_skip();
                }
                tracing::debug!(
                    method = method.full_name,
                    status = ?status.code(),
                    "weak call skipped: {}",
                    status.message()
                );
                Ok(None)
            }
            Err(status) => Err(status),
        }
    }

    async fn call_inner<Req: Message>(
        &self,
        method: &'static MethodDescriptor,
        metrics: Option<&'static MethodMetrics>,
        request: &Req,
        options: &CallOptions,
        now: Instant,
        weak: Option<Duration>,
    ) -> Result<Bytes, Status> {
        let parent = Context::current();
        let mut timeout = options
            .timeout
            .unwrap_or(Duration::from_millis(u64::from(method.timeout_ms)));
        if let Some(weak) = weak {
            timeout = timeout.min(weak);
        }
        if let Some(left) = parent.as_ref().and_then(Context::remaining) {
            timeout = timeout.min(left);
        }
        if timeout.is_zero() {
            return Err(Status::deadline_exceeded(format!(
                "no time left to call {}",
                method.full_name
            )));
        }
        let len = request.encoded_len();
        frame::check_len(len, self.max_frame, "request")?;
        let mut body = Vec::with_capacity(len + crate::codec::ENCODE_ROOM);
        request.encode_raw(&mut body);
        let mut header = Header {
            kind: if method.oneway {
                FrameKind::ONEWAY
            } else {
                FrameKind::REQUEST
            },
            service_id: u32::from(method.service_id),
            method_id: u32::from(method.id),
            priority: method.priority.to_wire(),
            user_key: options.user_key.unwrap_or(0),
            caller: self.caller.clone(),
            ..Header::default()
        };
        if let Some(parent) = &parent {
            // A downstream call is part of the request being served: it is as important,
            // for the same user, and in the same trace.
            header.priority = parent.priority.to_wire();
            if options.user_key.is_none() {
                header.user_key = parent.user_key;
            }
            header.trace_id = parent.trace_id.clone();
            header.dye = parent.dye.clone();
            // A retry's calls are not retried: only the level above a failure retries.
            header.no_retry = parent.attempt > 0 || parent.no_retry;
        } else {
            // The start of a trace.
            header.trace_id = monitor::trace::new_id();
        }
        if let Some(dye) = &options.dye {
            header.dye = dye.clone();
        }
        let mut call = Call {
            method,
            metrics,
            last_endpoint: 0,
            hedge: false,
            key: header.user_key,
            header,
            body: Bytes::from(body),
            // A timeout too large for the clock means no practical deadline.
            deadline: now
                .checked_add(timeout)
                .unwrap_or(now + Duration::from_secs(1 << 30)),
        };
        let deadline = call.deadline;
        let stack = self.stack.call(&mut call);
        let run = tokio::time::timeout_at(deadline.into(), stack);
        let result = match &parent {
            // The parent's cancel (its caller gave up, or its deadline passed) reaches this
            // call at once, and dropping it tells its server.
            Some(parent) => tokio::select! {
                biased;
                result = run => result,
                _ = parent.cancelled() => {
                    return Err(Status::cancelled(format!(
                        "the request that made this call to {} was cancelled",
                        method.full_name
                    )));
                }
            },
            None => run.await,
        };
        let frame = result.map_err(|_| {
            Status::deadline_exceeded(format!("{} did not answer in time", method.full_name))
        })?;
        let refused = match &frame {
            Ok(frame) => Code(frame.header.status_code).is_refusal(),
            Err(status) => status.code().is_refusal(),
        };
        if refused && let Some(parent) = &parent {
            // The request being served fails because of this one (most likely): its caller
            // is told not to retry it, since this channel retried already.
            parent.cancel_token().note_downstream_refused();
        }
        let frame = frame?;
        if frame.header.status_code != 0 {
            return Err(Status::new(
                Code(frame.header.status_code),
                frame.header.status_message.to_string(),
            ));
        }
        Ok(frame.body)
    }
}

/// A response body as `Resp`, or the `INTERNAL` a caller gets for one that does not decode:
/// the fault is the server's (or the schemas'), not the caller's.
fn decode_response<Resp: Message>(method: &MethodDescriptor, body: Bytes) -> Result<Resp, Status> {
    Resp::decode_bytes(&body)
        .map_err(|e| Status::internal(format!("bad response from {}: {e}", method.full_name)))
}

/// A oneway call's "response": nothing to read.
fn ignore_body(_: &MethodDescriptor, _: Bytes) -> Result<(), Status> {
    Ok(())
}

/// Counts a client call's end when dropped: with the code set on the way out, or as
/// `CANCELLED` when the caller dropped the call first.
struct Counted {
    metrics: Option<&'static MethodMetrics>,
    started: Instant,
    code: Code,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(m) = self.metrics {
            m.client_finished(self.code, self.started.elapsed());
        }
    }
}

/// What is left of `deadline`, as a header's `deadline_ms` (at least 1: 0 would mean "none").
pub fn remaining_ms(deadline: Instant) -> u32 {
    let left = deadline.saturating_duration_since(Instant::now());
    u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1)
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Channel>();
};

/// A call of a made-up idempotent method, for the balancers' and routes' tests.
#[cfg(test)]
pub(crate) fn test_call(user_key: u64) -> Call {
    use crate::service::{Priority, Retry};
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
