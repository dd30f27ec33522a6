//! The router: the one dispatch path every request takes, from a network connection or from
//! an in-process channel.
//!
//! It finds the service and method, builds the handler's [`Context`] (deadline counted from
//! the request's arrival, priority, peer, metadata), runs the [`Hook`]s, applies the
//! server-wide limits, and hands back either an answer (the request was refused or expired)
//! or a [`Running`] call. A `Running` call holds its permits from before its first poll until
//! its handler stops, and drives the handler to its result, its deadline or its cancellation,
//! whichever comes first. Connections only move bytes; this module decides.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use faststr::FastStr;

use super::Limits;
use super::hook::Hook;
use super::trust::Trust;
use crate::context::Context;
use crate::frame::{self, FrameKind, Header};
use crate::metrics::{self, Rejection, ServiceMetrics, Untrusted};
use crate::policy::admission::{Admission, Verdict};
use crate::policy::priority;
use crate::policy::shares::Shares;
use crate::service::{MethodDescriptor, Priority, Service};
use crate::status::{Code, Status};
use crate::sync::{self, Slots};
use crate::trace;

mod running;

pub(crate) use running::{Answer, Running, note_decoded};
use running::{CatchUnwind, Permits, SpanStart};

/// Services, hooks and server-wide limits: what a request is dispatched through.
pub(crate) struct Router {
    /// Each service with its counters (`None` with monitoring off).
    services: HashMap<u16, (Arc<dyn Service>, Option<&'static ServiceMetrics>)>,
    hooks: Box<[Arc<dyn Hook>]>,
    pub(crate) limits: Limits,
    /// Server-wide calls in flight.
    in_flight: Arc<Slots>,
    /// The server's memory budget. Connections draw on it through their own shares; each
    /// in-process call through one of its own, as a connection with one call would.
    memory: Arc<sync::Budget>,
    /// Calls slower than this are logged at warn.
    slow_call: Duration,
    /// Overload control (DAGOR), unless turned off.
    pub(crate) admission: Option<Arc<Admission>>,
    /// Untrusted principals' shares of admitted work (with admission).
    shares: Option<Shares>,
    /// The frame each connection starts with: a PONG listing the methods hosted here, so
    /// that clients refuse oneway calls this server could not serve (`docs/protocol.md`).
    pub(crate) hello: Bytes,
    /// Whose header fields are taken at their word (`server/trust.rs`).
    pub(crate) trust: Trust,
}

/// The PONG a connection starts with: every hosted method as `service_id << 16 | method_id`,
/// in order, so that a client can look one up by binary search.
fn hello(services: &HashMap<u16, (Arc<dyn Service>, Option<&'static ServiceMetrics>)>) -> Bytes {
    let mut hosted: Vec<u32> = services
        .iter()
        .flat_map(|(&id, (service, _))| {
            service
                .descriptor()
                .methods
                .iter()
                .map(move |m| u32::from(id) << 16 | u32::from(m.id))
        })
        .collect();
    hosted.sort_unstable();
    let header = Header {
        kind: FrameKind::PONG,
        hosted,
        ..Header::default()
    };
    let mut out = Vec::new();
    frame::encode(&header, &[], &mut out);
    Bytes::from(out)
}

/// What a call holds besides its handler's future: its task, the `Running` around it, the
/// copies of its context and the connection's bookkeeping (measured: about 1 KiB).
const CALL_OVERHEAD: usize = 1024;

/// Heap a decoded header holds beyond its struct: its strings, and its metadata map's entries
/// (two for each, counting the map's nodes and their slack).
fn header_heap(header: &Header) -> usize {
    let strings = |s: &str| if s.len() > INLINE_STRING { s.len() } else { 0 };
    let entries = header.metadata.iter().fold(0, |sum, (k, v)| {
        sum + 2 * std::mem::size_of::<(FastStr, FastStr)>() + strings(k) + strings(v)
    });
    entries
        + strings(&header.caller)
        + strings(&header.dye)
        + strings(&header.status_message)
        + header.trace_id.len()
}

/// The principal a stranger's request is counted against when no hook named its user: its
/// address (an IPv6 peer's /64), kept apart from user keys.
fn principal_of(ip: std::net::IpAddr) -> u64 {
    let bits = match super::trust::peer_group(ip) {
        std::net::IpAddr::V4(v4) => u64::from(u32::from(v4)),
        std::net::IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64,
    };
    bits ^ 0xadd2_e550_0000_0000
}

/// Strings up to this length live inside a `FastStr`.
const INLINE_STRING: usize = 24;

/// The connection a request came on, for what is counted per connection.
pub(crate) struct Origin<'a> {
    /// Requests in flight on it.
    pub(crate) slots: &'a Arc<Slots>,
    /// Its share of the server's memory budget.
    pub(crate) memory: &'a Arc<sync::Share>,
}

/// A request as it reaches the router.
pub(crate) struct Incoming {
    pub(crate) header: Header,
    pub(crate) body: Bytes,
    /// When its frame was read (a gRPC call: its headers): the deadline, the latency and
    /// the span count from here.
    pub(crate) arrived: Instant,
    /// When it was whole and could be dispatched: its queue wait counts from here. A frame:
    /// the read that completed it, as `arrived`; a gRPC call: its body's end, so that the
    /// time a large body takes to come is not held against it as a wait in the queue.
    pub(crate) queued: Instant,
    pub(crate) peer: Option<SocketAddr>,
    /// Whether the peer is trusted (`trust.rs`): decided once per connection; in process,
    /// always.
    pub(crate) trusted: bool,
    /// Bytes of the connection's input budget the request holds until it ends.
    pub(crate) bytes: Option<sync::Charge>,
    /// Whether it came as a gRPC call rather than a svrkit frame (for the metrics' protocol
    /// label).
    pub(crate) grpc: bool,
}

/// What dispatching a request gave.
// An answer is framed at once where it is made; boxing it would cost an allocation per
// refused request for nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Dispatch {
    /// Answered without running: unknown method, refused, expired, over a limit.
    Answered(Answer),
    /// Admitted: poll it.
    Run(Running),
}

impl Router {
    pub(crate) fn new(
        services: HashMap<u16, Arc<dyn Service>>,
        hooks: Vec<Arc<dyn Hook>>,
        limits: Limits,
        memory: Arc<sync::Budget>,
        monitor: Option<Duration>,
        admission: Option<Arc<Admission>>,
        trust: Trust,
    ) -> Router {
        // Every method's series exist from here on, at zero.
        let services = services
            .into_iter()
            .map(|(id, service)| {
                let metrics = monitor.map(|_| metrics::register_server(service.descriptor()));
                (id, (service, metrics))
            })
            .collect();
        let hello = hello(&services);
        Router {
            hello,
            in_flight: Slots::new(limits.max_in_flight),
            memory,
            slow_call: monitor.unwrap_or(Duration::MAX),
            shares: admission.as_ref().map(|_| Shares::new(Instant::now())),
            admission,
            services,
            hooks: hooks.into_boxed_slice(),
            limits,
            trust,
        }
    }

    /// Every hosted service.
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))]
    pub(crate) fn hosted(&self) -> impl Iterator<Item = &Arc<dyn Service>> + '_ {
        self.services.values().map(|(service, _)| service)
    }

    /// Dispatches one request. `now` is the time of pickup; `connection` is the connection
    /// it came on, if any.
    pub(crate) fn dispatch(
        self: &Arc<Router>,
        mut request: Incoming,
        now: Instant,
        connection: Option<Origin<'_>>,
    ) -> Dispatch {
        let header = &request.header;
        // What the header's decoding allocated (metadata above all), before it moves into the
        // context.
        let header_heap = header_heap(header);
        let send = header.kind == FrameKind::REQUEST;
        let id = header.request_id;
        let answer = |status: Status| Dispatch::Answered(self.reply(id, send, Err(status)));
        let Some((service, metrics)) = u16::try_from(header.service_id)
            .ok()
            .and_then(|id| self.services.get(&id))
        else {
            let what = format!("no service with id {}", header.service_id);
            metrics::note_unknown(metrics::Unknown::Service, request.peer, &what);
            return answer(Status::unimplemented(what));
        };
        let methods = service.descriptor().methods;
        let Some(index) = u16::try_from(header.method_id)
            .ok()
            .and_then(|m| methods.iter().position(|d| d.id == m))
        else {
            let what = format!(
                "{} has no method with id {}",
                service.descriptor().name,
                header.method_id
            );
            metrics::note_unknown(metrics::Unknown::Method, request.peer, &what);
            return answer(Status::unimplemented(what));
        };
        let method = &methods[index];
        let metrics = metrics.map(|m| m.methods[index]);
        if let Some(m) = metrics {
            m.server_request(request.body.len());
            m.server_caller(&header.caller, request.trusted);
            if request.grpc {
                m.server_grpc_request();
            }
        }
        let mut ctx = self.context(&mut request, method);
        let exported = trace::exporting().then(|| {
            Box::new(SpanStart {
                trace_id: trace::id_bytes(&ctx.trace_id),
                span_id: ctx.span_id,
                parent_span_id: ctx.parent_span_id,
                start: std::time::SystemTime::now() - request.arrived.elapsed(),
                grpc: request.grpc,
                // A stranger's word for who it is goes nowhere.
                caller: if ctx.trusted {
                    ctx.caller.clone()
                } else {
                    FastStr::empty()
                },
            })
        });
        let mut level = 0;
        // Whether it runs on a free worker though its level is shed (not counted as one
        // of the level's starts).
        let mut spare = false;
        // Whether overload control (its level or its queue check) refused it, which the
        // answer says so that callers' throttles leave it to the level.
        let mut by_admission = false;
        let admitted = self
            .authenticate(method, &mut ctx)
            .and_then(|()| {
                self.shed(&ctx, now, request.queued)
                    .inspect_err(|_| by_admission = true)
            })
            .and_then(|(l, s)| {
                (level, spare) = (l, s);
                self.admit(method, &ctx, now, connection.as_ref().map(|c| c.slots))
            });
        let local;
        let memory = match &connection {
            Some(c) => c.memory,
            None => {
                local = self.memory.share();
                &local
            }
        };
        let (permits, started) = match admitted {
            Ok(admitted) => admitted,
            Err((status, rejection)) => {
                if let Some(m) = metrics {
                    m.server_refused(status.code(), rejection);
                }
                let mut reply = self.reply(id, send, Err(status));
                reply.header.admission_refused = by_admission;
                self.on_response(method, &ctx, &mut reply.header);
                if let Some(span) = &exported {
                    span.finish(method, reply.header.status_code);
                }
                return Dispatch::Answered(reply);
            }
        };
        let cancel = ctx.cancel_token().clone();
        let deadline = ctx.deadline();
        // Hooks see the context again at start and response; without hooks the call keeps
        // only its cancel signal and deadline, saving a copy of the context per request.
        let hooked = (!self.hooks.is_empty()).then(|| ctx.clone());
        // Kept for the slow-call and INTERNAL warnings, which only a monitored call logs.
        let trace_id = metrics.map_or_else(Bytes::new, |_| ctx.trace_id.clone());
        let mut call = service.call(method.id, ctx.clone(), request.body);
        // With a `tracing` layer exporting spans, the handler's own spans (the `rpc` span
        // below included) open under this request's server span: its OpenTelemetry context
        // is current while they are made and whenever the handler runs.
        #[cfg(feature = "otel")]
        let handler_cx = exported
            .as_ref()
            .and_then(|s| trace::handler_context(s.trace_id, s.span_id));
        #[cfg(feature = "otel")]
        let _in_request = handler_cx.clone().map(opentelemetry::Context::attach);
        // A span per call for whoever subscribes at debug level; nothing when nobody does.
        // Checked first: with tracing's `log` feature on (another crate in the build can turn
        // it on) and no subscriber at all, the macro alone builds the span's fields for the
        // `log` crate on every call, whether anything logs or not. The price: a service that
        // logs through `log` with no `tracing` subscriber gets no `rpc` span lines.
        if tracing::level_enabled!(tracing::Level::DEBUG) {
            let span = tracing::debug_span!(
                "rpc",
                service = service.descriptor().name,
                method = method.name,
                request_id = id,
                trace_id = %trace::Hex(&ctx.trace_id),
            );
            if !span.is_disabled() {
                call = Box::pin(tracing::Instrument::instrument(call, span));
            }
        }
        #[cfg(feature = "otel")]
        if let Some(cx) = handler_cx {
            call = Box::pin(opentelemetry::context::FutureExt::with_context(call, cx));
        }
        // The handler's state lives as long as the call: charged to the byte budget that
        // request bodies draw on, so that many small requests with large or long-lived
        // handlers are bounded by bytes as well as by the in-flight counts.
        let Some(memory) =
            memory.try_take(std::mem::size_of_val(&*call) + CALL_OVERHEAD + header_heap)
        else {
            let status = Status::overloaded("the server's memory budget for requests is spent");
            if let Some(m) = metrics {
                m.server_refused(status.code(), Some(Rejection::Overload));
            }
            let mut reply = self.reply(id, send, Err(status));
            self.on_response(method, &ctx, &mut reply.header);
            if let Some(span) = &exported {
                span.finish(method, reply.header.status_code);
            }
            return Dispatch::Answered(reply);
        };
        let mut held = memory;
        if let Some(body) = request.bytes {
            held.merge(body);
        }
        let waited = started.saturating_duration_since(request.queued);
        if let Some(m) = metrics {
            m.server_started(waited);
        }
        if let Some(a) = &self.admission {
            if spare {
                a.started_spare();
            } else {
                a.started(level, started, waited);
            }
        }
        Dispatch::Run(Running {
            metrics,
            arrived: request.arrived,
            trace_id,
            call: Box::pin(ctx.scoped(CatchUnwind(call))),
            hooked,
            cancel,
            deadline,
            method,
            router: self.clone(),
            request_id: id,
            send,
            started: false,
            span: exported,
            permits: (permits, Some(held)),
        })
    }

    /// Counts a request to `method` refused before it reached [`dispatch`](Router::dispatch)
    /// (a gRPC call whose body could not be read whole, was too large or was compressed),
    /// as the router counts its own refusals: a request, its caller, its status, and
    /// `rejection` when overload refused it.
    #[cfg(feature = "grpc")]
    pub(crate) fn count_refused(
        &self,
        method: &'static MethodDescriptor,
        header: &Header,
        trusted: bool,
        status: &Status,
        rejection: Option<Rejection>,
    ) {
        let Some(m) = self
            .services
            .get(&method.service_id)
            .and_then(|(service, metrics)| {
                let index = service
                    .descriptor()
                    .methods
                    .iter()
                    .position(|d| d.id == method.id)?;
                Some(metrics.as_ref()?.methods[index])
            })
        else {
            return;
        };
        m.server_request(0);
        m.server_caller(&header.caller, trusted);
        m.server_grpc_request();
        m.server_refused(status.code(), rejection);
    }

    /// The handler's context: the deadline is what the caller asked for (or the method's IDL
    /// timeout when it did not say), never more than the server's cap, counted from arrival.
    ///
    /// From a peer the server does not trust, the fields that steer it are the method's
    /// defaults instead, and what the peer set is counted (`server/trust.rs`).
    fn context(&self, request: &mut Incoming, method: &'static MethodDescriptor) -> Context {
        let trusted = request.trusted;
        let header = &request.header;
        let mut asked = match header.deadline_ms {
            0 => method.timeout_ms,
            ms => ms,
        };
        let mut ctx = Context::arrived_at(request.arrived);
        ctx.peer = request.peer;
        ctx.caller = header.caller.clone();
        ctx.trusted = trusted;
        if trusted {
            // A request that starts a trace gets an id here, so that its logs and the calls
            // it makes can be followed.
            ctx.trace_id = if header.trace_id.is_empty() {
                trace::new_id()
            } else {
                header.trace_id.clone()
            };
            ctx.parent_span_id = header.parent_span_id;
            ctx.dye = header.dye.clone();
            ctx.user_key = header.user_key;
            ctx.priority = Priority::from_wire(header.priority);
            ctx.no_retry = header.no_retry;
            ctx.attempt = header.attempt;
        } else {
            let ignored = [
                (
                    Untrusted::Priority,
                    header.priority != 0 && Priority::from_wire(header.priority) != method.priority,
                ),
                (Untrusted::UserKey, header.user_key != 0),
                (Untrusted::Dye, !header.dye.is_empty()),
                (Untrusted::NoRetry, header.no_retry),
                (
                    Untrusted::TraceId,
                    !header.trace_id.is_empty() || header.parent_span_id != 0,
                ),
                (Untrusted::Deadline, asked > method.timeout_ms),
                // A retry's calls do not retry (only the level above a failure does), so
                // a stranger's attempt number would be `no_retry` by another name.
                (Untrusted::Attempt, header.attempt > 0),
            ];
            for (field, set) in ignored {
                if set {
                    metrics::note_untrusted(field);
                }
            }
            asked = asked.min(method.timeout_ms);
            ctx.trace_id = trace::new_id();
            ctx.priority = method.priority;
        }
        ctx.span_id = trace::new_span_id();
        let budget = Duration::from_millis(u64::from(asked)).min(self.limits.max_deadline);
        // An arrival time near the end of `Instant`'s range cannot overflow into a panic.
        ctx.set_deadline(Some(
            request
                .arrived
                .checked_add(budget)
                .unwrap_or(request.arrived),
        ));
        if !request.header.metadata.is_empty() {
            ctx.metadata = Arc::new(std::mem::take(&mut request.header.metadata));
        }
        ctx
    }

    /// The hooks' chance to say who the request is for, before overload control ranks it.
    fn authenticate(
        &self,
        method: &'static MethodDescriptor,
        ctx: &mut Context,
    ) -> Result<(), (Status, Option<Rejection>)> {
        for hook in &self.hooks {
            hook.authenticate(method, ctx)
                .map_err(|status| (status, None))?;
        }
        Ok(())
    }

    /// A reply from this server: with its admission level, so that callers drop what it
    /// would shed.
    fn reply(&self, request_id: u64, send: bool, result: Result<Bytes, Status>) -> Answer {
        let mut reply = Answer::new(request_id, send, result);
        if let Some(a) = &self.admission {
            reply.header.admission_level = a.level();
        }
        reply
    }

    /// Overload control: refuses a request below the admission level (before its body is
    /// decoded), counting it in the window's histogram either way. The request's level, if
    /// admitted, and whether it runs only because it found a worker free.
    fn shed(
        &self,
        ctx: &Context,
        now: Instant,
        queued: Instant,
    ) -> Result<(u32, bool), (Status, Option<Rejection>)> {
        let Some(admission) = &self.admission else {
            return Ok((0, false));
        };
        // A stranger over its share, or one no hook vouched for, does not get a free worker
        // either (`Admission::spare`): it would take every one it found (it sends the most).
        let (user, share, may_spare) = match &self.shares {
            Some(shares) if !ctx.trusted => {
                // A stranger counts against the user a hook named, or else its address; one
                // over its share ranks last, one that no hook vouched for just above that,
                // so that a flood of either is shed before any user's (`policy/shares.rs`).
                let key = match (ctx.user_key, ctx.peer) {
                    (0, Some(peer)) => principal_of(peer.ip()),
                    (user, _) => user,
                };
                let (slot, over) = shares.check(key, now, admission.capacity());
                let vouched = ctx.user_key != 0;
                let user = if over {
                    priority::USER_LEVELS - 1
                } else if !vouched {
                    priority::USER_LEVELS - 2
                } else {
                    priority::user_level(ctx.user_key, &ctx.trace_id, now)
                        .min(priority::USER_LEVELS - 3)
                };
                (user, Some((shares, slot)), vouched && !over)
            }
            _ => (
                priority::user_level(ctx.user_key, &ctx.trace_id, now),
                None,
                true,
            ),
        };
        let level = priority::level(ctx.priority, user);
        let waited = now.saturating_duration_since(queued);
        let budget = ctx
            .deadline()
            .map_or(Duration::MAX, |d| d.saturating_duration_since(ctx.arrived));
        let spare = match admission.admit(level, now, waited, budget) {
            Verdict::Admit => false,
            Verdict::Shed if may_spare && admission.spare(now, waited, self.in_flight.used()) => {
                true
            }
            Verdict::Shed => {
                return Err((
                    Status::overloaded(
                        "the server is overloaded and sheds requests of this priority",
                    ),
                    Some(Rejection::Overload),
                ));
            }
            // A fixed message: under overload this is the common answer, and formatting
            // the wait into each would allocate per refusal.
            Verdict::Late => {
                return Err((
                    Status::overloaded(
                        "the server is overloaded: the request waited too long in its queue",
                    ),
                    Some(Rejection::Overload),
                ));
            }
        };
        if let Some((shares, slot)) = share {
            shares.admitted(slot);
        }
        Ok((level, spare))
    }

    /// Hooks, expiry and limits, in that order; the permits a call holds while it runs and
    /// when it was admitted. A refusal says why, for the rejection counters.
    fn admit(
        &self,
        method: &'static MethodDescriptor,
        ctx: &Context,
        now: Instant,
        connection: Option<&Arc<Slots>>,
    ) -> Result<(Permits, Instant), (Status, Option<Rejection>)> {
        let mut now = now;
        if !self.hooks.is_empty() {
            for hook in &self.hooks {
                hook.on_request(method, ctx).map_err(|status| {
                    let shed = status.code() == Code::OVERLOADED;
                    (status, shed.then_some(Rejection::Overload))
                })?;
            }
            // Time spent in hooks counts as waiting, like time in the queue.
            now = Instant::now();
        }
        if ctx.deadline().is_some_and(|d| now >= d) {
            return Err((
                Status::deadline_exceeded(
                    "the deadline passed while the request waited to be picked up",
                ),
                Some(Rejection::Expired),
            ));
        }
        let limit = |message| (Status::overloaded(message), Some(Rejection::InFlightLimit));
        let (connection, held) = match connection {
            Some(slots) => {
                let slot = slots
                    .try_take()
                    .ok_or_else(|| limit("too many requests in flight on this connection"))?;
                (Some(slot), slots.used())
            }
            None => (None, 1),
        };
        // The last slots are kept for connections with few calls in flight.
        let server = self
            .in_flight
            .try_take_beside(held)
            .ok_or_else(|| limit("too many requests in flight on this server"))?;
        Ok(((server, connection), now))
    }

    fn on_response(&self, method: &'static MethodDescriptor, ctx: &Context, header: &mut Header) {
        for hook in &self.hooks {
            hook.on_response(method, ctx, header);
        }
    }

    /// Runs a request in process: the same dispatch as a network request. A handler that
    /// waits goes on in its own task, so that a caller who gives up leaves it to see the
    /// cancellation.
    pub(crate) async fn call_local(
        self: &Arc<Router>,
        header: Header,
        body: Bytes,
    ) -> frame::Frame {
        let now = Instant::now();
        let incoming = Incoming {
            header,
            body,
            arrived: now,
            queued: now,
            peer: None,
            trusted: true,
            bytes: None,
            grpc: false,
        };
        let capped = u64::from(incoming.header.deadline_ms)
            > u64::try_from(self.limits.max_deadline.as_millis()).unwrap_or(u64::MAX);
        let mut running = match self.dispatch(incoming, now, None) {
            Dispatch::Answered(reply) => return reply.into_frame(),
            Dispatch::Run(running) => running,
        };
        // As on a connection: a handler that finishes on its first poll (most do) is
        // answered here, on the caller's task, with no task of its own.
        let oneway = !running.send;
        let first = std::future::poll_fn(|cx| Poll::Ready(running.poll_once(cx))).await;
        if let Poll::Ready(reply) = first {
            if oneway {
                return Answer::new(0, false, Ok(Bytes::new())).into_frame();
            }
            return reply.into_frame();
        }
        // The caller waits for the answer: the rest runs on its task too, no hop through the
        // scheduler. Its deadline is the caller's, which drops this future when it passes
        // (unless the server capped it shorter: then the server's timer runs it, below).
        if !oneway && !capped {
            let mut call = Inline(Some(running));
            let reply = std::future::poll_fn(|cx| {
                let Some(running) = call.0.as_mut() else {
                    return Poll::Pending;
                };
                let reply = std::task::ready!(running.poll_once(cx));
                call.0 = None;
                Poll::Ready(reply)
            })
            .await;
            return reply.into_frame();
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Dropping the caller's future cancels the call, as a CANCEL frame would.
        let cancel = running.cancel.clone().drop_guard();
        tokio::spawn(running.finish(move |reply| {
            let _ = tx.send(reply);
        }));
        if oneway {
            cancel.disarm();
            return Answer::new(0, false, Ok(Bytes::new())).into_frame();
        }
        let reply = rx.await;
        cancel.disarm();
        match reply {
            Ok(reply) => reply.into_frame(),
            Err(_) => Answer::new(
                0,
                true,
                Err(Status::internal("the call ended without a result")),
            )
            .into_frame(),
        }
    }
}

/// An in-process call running on its caller's task. If the caller gives up on it (drops
/// it: cancelled, or its deadline passed), the handler is told and goes on in a task of its
/// own for its grace period, as it would after a network client's `CANCEL`.
struct Inline(Option<Running>);

impl Drop for Inline {
    fn drop(&mut self) {
        if let Some(running) = self.0.take() {
            // Past the deadline, `finish` answers DEADLINE_EXCEEDED (and counts it so);
            // before, the caller cancelled.
            if running.deadline.is_none_or(|d| Instant::now() < d) {
                running.cancel.cancel();
            }
            tokio::spawn(running.finish(|_| {}));
        }
    }
}
