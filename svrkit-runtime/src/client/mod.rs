//! The client: channels to services, and the per-call path every generated client method goes
//! through.
//!
//! A [`Channel`] holds a set of endpoints (replicas) and, per endpoint, a few multiplexed
//! connections, connected when first needed and reconnected with backoff after a failure.
//! Every call goes through [`Channel::call`], the one place where the deadline is settled,
//! an endpoint chosen ([`Balancer`]), the request sent and the response awaited; monitoring
//! and overload policies hook in there, so they apply to every call, in-process ones too.

mod connection;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use faststr::FastStr;

use crate::codec::Message;
use crate::context::Context;
use crate::frame::{self, FrameKind, Header};
use crate::server::Shared;
use crate::service::MethodDescriptor;
use crate::status::{Code, Status};
use connection::ClientConn;

/// Per-call settings that override the IDL's.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// Deadline for this call instead of the method's `timeout_ms`.
    pub timeout: Option<Duration>,
    /// The end user the call is for, for overload control.
    pub user_key: Option<u64>,
}

impl CallOptions {
    /// Options with a timeout.
    pub fn timeout(timeout: Duration) -> CallOptions {
        CallOptions {
            timeout: Some(timeout),
            ..CallOptions::default()
        }
    }
}

/// Chooses an endpoint for each call. The default is round robin; load-aware policies
/// implement this.
pub trait Balancer: Send + Sync + 'static {
    /// The index of the endpoint (of `n`) to use.
    fn pick(&self, n: usize) -> usize;
    /// Learns how a call to endpoint `index` went.
    fn record(&self, _index: usize, _latency: Duration, _result: Result<(), Code>) {}
}

/// Cycles through the endpoints.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn pick(&self, n: usize) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % n.max(1)
    }
}

/// What a [`CallPolicy`] knows about an attempt of a call.
#[derive(Clone, Copy, Debug)]
pub struct CallInfo {
    /// The method called.
    pub method: &'static MethodDescriptor,
    /// 0 for the first attempt.
    pub attempt: u32,
    /// When the call must be done by.
    pub deadline: Instant,
    /// The end user the call is for (0 if none).
    pub user_key: u64,
}

/// Decides about and learns from every call through a channel: the seam where overload
/// control, retry budgets and monitoring plug in, so that they apply to every generated
/// client method without the author doing anything.
pub trait CallPolicy: Send + Sync + 'static {
    /// Before each attempt; an error rejects the attempt without sending it (shedding load
    /// at the caller).
    fn admit(&self, _call: &CallInfo) -> Result<(), Status> {
        Ok(())
    }
    /// After each attempt, with how long it took and how it ended.
    fn record(&self, _call: &CallInfo, _latency: Duration, _result: Result<(), &Status>) {}
    /// Whether to try again after `status`. Asked only for methods the IDL marks idempotent,
    /// with attempts and time left.
    fn retry(&self, _call: &CallInfo, _status: &Status) -> bool {
        false
    }
}

/// A shared policy, so the caller can keep a handle to it (to read what it recorded).
impl<P: CallPolicy + ?Sized> CallPolicy for Arc<P> {
    fn admit(&self, call: &CallInfo) -> Result<(), Status> {
        (**self).admit(call)
    }
    fn record(&self, call: &CallInfo, latency: Duration, result: Result<(), &Status>) {
        (**self).record(call, latency, result);
    }
    fn retry(&self, call: &CallInfo, status: &Status) -> bool {
        (**self).retry(call, status)
    }
}

/// The default policy: admit everything, record nothing, never retry.
#[derive(Debug, Default)]
pub struct NoPolicy;

impl CallPolicy for NoPolicy {}

/// How a channel connects.
#[derive(Clone, Debug)]
pub struct ChannelOptions {
    /// Connections kept per endpoint (each multiplexes many calls).
    pub connections_per_endpoint: usize,
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// First wait after a failed connect; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest wait between connect attempts to a failing endpoint.
    pub max_backoff: Duration,
    /// Largest response frame accepted.
    pub max_frame: usize,
    /// This service's name, sent as the caller.
    pub caller: FastStr,
}

impl Default for ChannelOptions {
    fn default() -> ChannelOptions {
        ChannelOptions {
            connections_per_endpoint: 2,
            connect_timeout: Duration::from_secs(1),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            max_frame: frame::DEFAULT_MAX_FRAME,
            caller: FastStr::empty(),
        }
    }
}

enum SlotState {
    Empty,
    Ready(Arc<ClientConn>),
    Failed {
        retry_at: Instant,
        backoff: Duration,
    },
}

struct Endpoint {
    addr: String,
    slots: Vec<tokio::sync::Mutex<SlotState>>,
    next_slot: AtomicUsize,
}

enum Target {
    Remote {
        endpoints: Vec<Endpoint>,
        balancer: Box<dyn Balancer>,
        options: ChannelOptions,
    },
    Local(Arc<Shared>),
}

/// A handle for calling a service: cheap to clone, safe to share between tasks.
#[derive(Clone)]
pub struct Channel {
    target: Arc<Target>,
    policy: Arc<dyn CallPolicy>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.target {
            Target::Remote { endpoints, .. } => f
                .debug_struct("Channel")
                .field(
                    "endpoints",
                    &endpoints.iter().map(|e| &e.addr).collect::<Vec<_>>(),
                )
                .finish(),
            Target::Local(_) => f.write_str("Channel(in-process)"),
        }
    }
}

impl Channel {
    /// A channel to the given replicas (`"host:port"`), connecting when first used.
    pub fn lazy(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        options: ChannelOptions,
    ) -> Channel {
        Channel::with_balancer(endpoints, options, RoundRobin::default())
    }

    /// Like [`lazy`](Channel::lazy), choosing endpoints with `balancer`.
    pub fn with_balancer(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        options: ChannelOptions,
        balancer: impl Balancer,
    ) -> Channel {
        let per = options.connections_per_endpoint.max(1);
        let endpoints = endpoints
            .into_iter()
            .map(|addr| Endpoint {
                addr: addr.into(),
                slots: (0..per)
                    .map(|_| tokio::sync::Mutex::new(SlotState::Empty))
                    .collect(),
                next_slot: AtomicUsize::new(0),
            })
            .collect();
        Channel {
            target: Arc::new(Target::Remote {
                endpoints,
                balancer: Box::new(balancer),
                options,
            }),
            policy: Arc::new(NoPolicy),
        }
    }

    /// This channel, with `policy` deciding about and learning from every call.
    pub fn with_policy(mut self, policy: impl CallPolicy) -> Channel {
        self.policy = Arc::new(policy);
        self
    }

    pub(crate) fn local(server: Arc<Shared>) -> Channel {
        Channel {
            target: Arc::new(Target::Local(server)),
            policy: Arc::new(NoPolicy),
        }
    }

    /// Calls `method` with `request`: the path every generated client method takes.
    ///
    /// The deadline is the per-call timeout, else the method's `timeout_ms`, and never later
    /// than what is left of the deadline of the request this task is serving, so budgets
    /// shrink hop by hop. Dropping the returned future cancels the call: the server is told,
    /// and the handler's context sees it.
    ///
    /// # Errors
    /// The server's status, or `DEADLINE_EXCEEDED`, `UNAVAILABLE` (no endpoint reachable),
    /// `INVALID_ARGUMENT` (a response that does not decode).
    pub async fn call<Req: Message, Resp: Message>(
        &self,
        method: &'static MethodDescriptor,
        request: &Req,
        options: &CallOptions,
    ) -> Result<Resp, Status> {
        let body = self.call_raw(method, request, options).await?;
        Resp::decode_bytes(&body).map_err(|e| {
            Status::invalid_argument(format!("bad response from {}: {e}", method.full_name))
        })
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
        self.call_raw(method, request, options).await.map(drop)
    }

    async fn call_raw<Req: Message>(
        &self,
        method: &'static MethodDescriptor,
        request: &Req,
        options: &CallOptions,
    ) -> Result<Bytes, Status> {
        let parent = Context::current();
        let mut timeout = options
            .timeout
            .unwrap_or(Duration::from_millis(u64::from(method.timeout_ms)));
        if let Some(left) = parent.as_ref().and_then(Context::remaining) {
            timeout = timeout.min(left);
        }
        if timeout.is_zero() {
            return Err(Status::deadline_exceeded(format!(
                "no time left to call {}",
                method.full_name
            )));
        }
        let deadline = Instant::now() + timeout;
        let mut header = Header {
            kind: if method.oneway {
                FrameKind::ONEWAY
            } else {
                FrameKind::REQUEST
            },
            service_id: u32::from(method.service_id),
            method_id: u32::from(method.id),
            priority: method.priority as u32,
            user_key: options
                .user_key
                .or(parent.as_ref().map(|p| p.user_key))
                .unwrap_or(0),
            ..Default::default()
        };
        if let Some(parent) = &parent {
            header.trace_id = parent.trace_id.clone();
            header.dye = parent.dye.clone();
        }
        // Each attempt goes through the policy; idempotent methods may be tried again.
        let max_attempts = match method.retry {
            crate::service::Retry::Idempotent { max_attempts } => u32::from(max_attempts.max(1)),
            crate::service::Retry::None => 1,
        };
        let mut attempt = 0;
        loop {
            let info = CallInfo {
                method,
                attempt,
                deadline,
                user_key: header.user_key,
            };
            self.policy.admit(&info)?;
            header.attempt = attempt;
            let started = Instant::now();
            let result = self
                .attempt(method, header.clone(), request, deadline)
                .await;
            self.policy
                .record(&info, started.elapsed(), result.as_ref().map(drop));
            match result {
                Err(status)
                    if attempt + 1 < max_attempts
                        && Instant::now() < deadline
                        && self.policy.retry(&info, &status) =>
                {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// One attempt of a call: in process, or to the endpoint the balancer picks.
    async fn attempt<Req: Message>(
        &self,
        method: &'static MethodDescriptor,
        mut header: Header,
        request: &Req,
        deadline: Instant,
    ) -> Result<Bytes, Status> {
        match &*self.target {
            Target::Local(server) => call_local(server, method, header, request, deadline).await,
            Target::Remote {
                endpoints,
                balancer,
                options,
            } => {
                header.caller = options.caller.clone();
                let started = Instant::now();
                let index = balancer.pick(endpoints.len());
                let endpoint = endpoints
                    .get(index)
                    .ok_or_else(|| Status::unavailable("the channel has no endpoints"))?;
                let result =
                    call_remote(endpoint, options, header, request, deadline, method).await;
                balancer.record(
                    index,
                    started.elapsed(),
                    result.as_ref().map(drop).map_err(Status::code),
                );
                result
            }
        }
    }
}

async fn call_local<Req: Message>(
    server: &Arc<Shared>,
    method: &'static MethodDescriptor,
    header: Header,
    request: &Req,
    deadline: Instant,
) -> Result<Bytes, Status> {
    let service = server
        .services
        .get(&method.service_id)
        .ok_or_else(|| {
            Status::unimplemented(format!(
                "no service with id {} in this process",
                method.service_id
            ))
        })?
        .clone();
    let Ok(permit) = server.in_flight.clone().try_acquire_owned() else {
        return Err(Status::overloaded(
            "too many requests in flight on this server",
        ));
    };
    let mut ctx = Context::default();
    ctx.set_deadline(Some(deadline));
    ctx.trace_id = header.trace_id;
    ctx.dye = header.dye;
    ctx.user_key = header.user_key;
    ctx.priority = crate::service::Priority::from_u32(header.priority);
    // Encoding keeps in-process calls honest: the handler gets exactly what a remote one
    // would, and cannot share mutable state with the caller.
    let body = request.encode_to_bytes();
    // The handler runs in its own task, as it would on a remote server: if the caller drops
    // this future, the handler keeps running long enough to see the cancellation.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let guard = ctx.cancel_token().clone().drop_guard();
    tokio::spawn(async move {
        crate::server::run_call(&service, method.id, ctx, body, |result| {
            let _ = tx.send(result);
        })
        .await;
        drop(permit);
    });
    if method.oneway {
        guard.disarm();
        return Ok(Bytes::new());
    }
    let result = rx
        .await
        .unwrap_or_else(|_| Err(Status::internal("the call ended without a result")));
    guard.disarm();
    result
}

async fn connection(
    endpoint: &Endpoint,
    options: &ChannelOptions,
) -> Result<Arc<ClientConn>, Status> {
    let n = endpoint.slots.len();
    let first = endpoint.next_slot.fetch_add(1, Ordering::Relaxed);
    let mut last_error = None;
    for i in 0..n {
        let mut slot = endpoint.slots[(first + i) % n].lock().await;
        match &*slot {
            SlotState::Ready(conn) if conn.is_usable() => return Ok(conn.clone()),
            SlotState::Failed { retry_at, .. } if Instant::now() < *retry_at => {
                last_error = Some(Status::unavailable(format!(
                    "{} is unreachable; waiting before reconnecting",
                    endpoint.addr
                )));
                continue;
            }
            _ => {}
        }
        let previous_backoff = match &*slot {
            SlotState::Failed { backoff, .. } => Some(*backoff),
            _ => None,
        };
        match ClientConn::connect(&endpoint.addr, options.connect_timeout, options.max_frame).await
        {
            Ok(conn) => {
                let conn = Arc::new(conn);
                *slot = SlotState::Ready(conn.clone());
                return Ok(conn);
            }
            Err(e) => {
                let backoff = previous_backoff
                    .map_or(options.min_backoff, |b| (b * 2).min(options.max_backoff));
                *slot = SlotState::Failed {
                    retry_at: Instant::now() + backoff,
                    backoff,
                };
                last_error = Some(Status::unavailable(format!(
                    "cannot connect to {}: {e}",
                    endpoint.addr
                )));
            }
        }
    }
    Err(last_error.unwrap_or_else(|| Status::unavailable("no connection")))
}

/// Sends CANCEL for a call whose future was dropped before its response arrived.
struct CancelOnDrop<'a> {
    conn: &'a ClientConn,
    request_id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.conn.forget(self.request_id);
            let mut frame = Vec::new();
            let header = Header {
                kind: FrameKind::CANCEL,
                request_id: self.request_id,
                ..Default::default()
            };
            frame::encode(&header, &[], &mut frame);
            self.conn.try_send(frame);
        }
    }
}

async fn call_remote<Req: Message>(
    endpoint: &Endpoint,
    options: &ChannelOptions,
    mut header: Header,
    request: &Req,
    deadline: Instant,
    method: &'static MethodDescriptor,
) -> Result<Bytes, Status> {
    let work = async {
        let conn = connection(endpoint, options).await?;
        let request_id = conn.next_request_id();
        header.request_id = request_id;
        // What is left now, after connecting, is what the server gets.
        let left = deadline.saturating_duration_since(Instant::now());
        header.deadline_ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1);
        let mut buf = Vec::with_capacity(64 + request.encoded_len());
        frame::encode_message(&header, request, &mut buf);
        if method.oneway {
            conn.send(buf).await?;
            return Ok(Bytes::new());
        }
        let response = conn.expect(request_id);
        let mut guard = CancelOnDrop {
            conn: &conn,
            request_id,
            armed: true,
        };
        conn.send(buf).await?;
        let frame = response
            .await
            .unwrap_or_else(|_| Err(Status::unavailable("the connection closed")))?;
        guard.armed = false;
        if frame.header.status_code != 0 {
            return Err(Status::new(
                Code(frame.header.status_code),
                frame.header.status_message.to_string(),
            ));
        }
        Ok(frame.body)
    };
    match tokio::time::timeout_at(deadline.into(), work).await {
        Ok(result) => result,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "{} did not answer in time",
            method.full_name
        ))),
    }
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Channel>();
};
