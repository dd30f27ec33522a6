//! An admitted call: its handler driven to its result, its deadline or its cancellation,
//! holding its permits until it is dropped (once its handler stopped: a connection drops a
//! call it answered inline after handing over the reply, before it reads on), and the reply it
//! ends with.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::futures::TaskLocalFuture;

use super::Router;
use crate::context::Context;
use crate::frame::{self, FrameKind, Header};
use crate::metrics::MethodMetrics;
use crate::service::{BoxFuture, MethodDescriptor};
use crate::status::{Code, Status};
use crate::sync::{self, Slot};
use crate::trace;

/// A response, ready to be framed.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) header: Header,
    pub(crate) body: Bytes,
    /// Whether the caller wants it: not for oneway requests, nor cancelled ones.
    pub(crate) send: bool,
}

impl Answer {
    /// A response to `request_id` with `result`.
    pub(super) fn new(request_id: u64, send: bool, result: Result<Bytes, Status>) -> Answer {
        let mut header = Header {
            kind: FrameKind::RESPONSE,
            request_id,
            ..Header::default()
        };
        let body = match result {
            Ok(body) => body,
            Err(status) => {
                header.status_code = status.code().0;
                header.status_message = status.message().to_owned().into();
                Bytes::new()
            }
        };
        Answer { header, body, send }
    }

    /// Appends the framed reply to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        frame::encode(&self.header, &self.body, out);
    }

    /// The reply as a status, for in-process callers.
    pub(crate) fn into_frame(self) -> frame::Frame {
        frame::Frame {
            header: self.header,
            body: self.body,
        }
    }
}

thread_local! {
    /// While the router makes a call's first poll on this thread: the bytes of the memory
    /// budget the call holds, to which its request's decode adds (see [`note_decoded`]).
    /// Lent for the poll, so that the hot path moves a pointer rather than counting a
    /// reference.
    static DECODING: std::cell::RefCell<Option<sync::Charge>> =
        const { std::cell::RefCell::new(None) };
}

/// Takes `bytes` of memory that a generated stub's request decode allocated from the call's
/// share of the memory budget. The stub decodes on its handler's first poll, which the router
/// makes on this thread, before the handler runs: when the budget cannot take them the
/// request is refused (`OVERLOADED`) without running, as one whose body did not fit would
/// be. (Up to the codec's `DECODE_FACTOR` times the body, they are too much to add to the
/// budget unchecked.)
pub(crate) fn note_decoded(bytes: usize) -> Result<(), Status> {
    if bytes == 0 {
        return Ok(());
    }
    DECODING.with(|decoding| {
        // Decoded outside the router (a stub called directly): nothing to charge.
        let Some(held) = &mut *decoding.borrow_mut() else {
            return Ok(());
        };
        let more = held.share().try_take(bytes).ok_or_else(|| {
            Status::overloaded("the server's memory budget for requests is spent")
        })?;
        held.merge(more);
        Ok(())
    })
}

/// Server-wide and per-connection in-flight slots.
pub(super) type Permits = (Slot, Option<Slot>);

/// An admitted call: its handler, its context and the permits it holds until it stops.
pub(crate) struct Running {
    pub(super) call: Pin<Box<TaskLocalFuture<Context, CatchUnwind>>>,
    /// The method's counters (`None` with monitoring off).
    pub(super) metrics: Option<&'static MethodMetrics>,
    /// When the request's frame was read: latency counts from here.
    pub(super) arrived: Instant,
    /// For the warnings about slow and failed calls.
    pub(super) trace_id: Bytes,
    /// The context, for the hooks (kept only when there are hooks).
    pub(super) hooked: Option<Context>,
    pub(super) cancel: sync::Cancel,
    pub(super) deadline: Option<Instant>,
    pub(super) method: &'static MethodDescriptor,
    pub(super) router: Arc<Router>,
    pub(super) request_id: u64,
    pub(super) send: bool,
    pub(super) started: bool,
    /// The call's span, when spans are exported (`trace::export_spans`).
    pub(super) span: Option<Box<SpanStart>>,
    /// Released when the call is dropped, after its handler has stopped (for a call answered
    /// inline, once its reply is handed over: `connection/frames.rs`, `Batch`). (The bytes
    /// are `None` only while lent to the first poll's decode.)
    pub(super) permits: (Permits, Option<sync::Charge>),
}

impl Running {
    /// The call's cancellation: cancelling it ends the call with `CANCELLED` (nothing sent).
    pub(crate) fn cancel_token(&self) -> &sync::Cancel {
        &self.cancel
    }

    /// Polls the handler once; the reply if it finished.
    pub(crate) fn poll_once(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Answer> {
        if self.started {
            return self.call.as_mut().poll(cx).map(|result| self.reply(result));
        }
        self.started = true;
        if let Some(ctx) = &self.hooked {
            let now = Instant::now();
            for hook in &self.router.hooks {
                hook.on_start(self.method, ctx, now);
            }
        }
        // The first poll decodes the request: what its lists and maps take is drawn from the
        // call's share, and held for as long as the handler runs.
        // (The handler's panics are caught inside the call, so the bytes always come back;
        // whatever was lent before, by a poll this one runs within, is lent again after.)
        let outer = DECODING.replace(self.permits.1.take());
        let poll = self.call.as_mut().poll(cx);
        self.permits.1 = DECODING.replace(outer);
        poll.map(|result| self.reply(result))
    }

    fn reply(&self, result: Result<Bytes, Status>) -> Answer {
        let result = match result {
            // Checked here so that a response too big for the frame limit fails this call
            // only, instead of being cut off by the peer together with the connection.
            Ok(body) => frame::check_len(body.len(), self.router.limits.max_frame, "response")
                .map(|()| body),
            err => err,
        };
        let send = self.send && !(self.cancel.is_cancelled() && result.is_err());
        let mut reply = self.router.reply(self.request_id, send, result);
        // A refusal that came from further down was retried there already.
        if Code(reply.header.status_code).is_refusal() && self.cancel.downstream_refused() {
            reply.header.no_retry = true;
        }
        if let Some(m) = self.metrics {
            let latency = self.arrived.elapsed();
            let code = Code(reply.header.status_code);
            m.server_finished(code, latency, reply.body.len());
            // A long poll's latency is its wait.
            let slow = latency >= self.router.slow_call && !self.method.long_poll;
            if (code == Code::INTERNAL || slow)
                && let Some(held) = m.may_warn(code == Code::INTERNAL)
            {
                self.warn(code, latency, &reply.header.status_message, held);
            }
        }
        if let Some(ctx) = &self.hooked {
            self.router.on_response(self.method, ctx, &mut reply.header);
        }
        if let Some(span) = &self.span {
            span.finish(self.method, reply.header.status_code);
        }
        reply
    }

    /// Logs a call that failed `INTERNAL` or took longer than the slow-call threshold, with
    /// its trace id and how many such calls of the method were not logged since the last
    /// (cold: most calls never come here).
    #[cold]
    fn warn(&self, code: Code, latency: Duration, message: &str, held_back: u64) {
        tracing::warn!(
            method = self.method.full_name,
            held_back,
            request_id = self.request_id,
            trace_id = %trace::Hex(&self.trace_id),
            status = code.name().unwrap_or("application"),
            latency_ms = latency.as_secs_f64() * 1e3,
            "{}",
            if code == Code::INTERNAL { message } else { "slow call" },
        );
    }

    /// Drives the call to its end: the handler's result, the deadline (answered
    /// `DEADLINE_EXCEEDED`) or the caller's cancel (answered to nobody), whichever comes first;
    /// `respond` gets the reply at once. After a deadline or cancel the handler is polled on
    /// for a short grace so it can see the cancellation through its context and stop; its
    /// permits are released when it stops or when the grace ends.
    pub(crate) async fn finish(mut self, respond: impl FnOnce(Answer)) {
        let deadline = self.deadline;
        let token = self.cancel.clone();
        let name = self.method.full_name;
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let cut_short = tokio::select! {
            biased;
            reply = std::future::poll_fn(|cx| self.poll_once(cx)) => {
                respond(reply);
                return;
            }
            _ = token.cancelled() => Status::cancelled("the caller cancelled the call"),
            _ = expired => Status::deadline_exceeded(format!(
                "{name} did not finish before its deadline"
            )),
        };
        // Downstream calls the handler made see this at once and cancel their own servers.
        token.cancel();
        let mut reply = self.reply(Err(cut_short));
        reply.send = self.send && reply.header.status_code == Code::DEADLINE_EXCEEDED.0;
        respond(reply);
        let grace = self.router.limits.cancel_grace;
        let _ = tokio::time::timeout(grace, self.call.as_mut()).await;
    }
}

/// What a call's span needs from its start, kept (boxed, off the call's hot fields) only when
/// spans are exported.
#[derive(Debug)]
pub(crate) struct SpanStart {
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: u64,
    pub(crate) parent_span_id: u64,
    pub(crate) start: std::time::SystemTime,
    pub(crate) grpc: bool,
    pub(crate) caller: faststr::FastStr,
}

impl SpanStart {
    /// Exports the span, answered now with `status`.
    pub(crate) fn finish(&self, method: &'static MethodDescriptor, status: u32) {
        let service = method.service_name();
        trace::finish(trace::FinishedSpan {
            kind: trace::SpanKind::Server,
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            name: method.full_name,
            service,
            method: method.name,
            start: self.start,
            end: std::time::SystemTime::now(),
            status,
            grpc: self.grpc,
            caller: self.caller.clone(),
        });
    }
}

/// Turns a panic while polling the handler into an `INTERNAL` status for that call only.
pub(crate) struct CatchUnwind(pub(super) BoxFuture<Result<Bytes, Status>>);

impl Future for CatchUnwind {
    type Output = Result<Bytes, Status>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(_) => Poll::Ready(Err(Status::internal("the handler panicked"))),
        }
    }
}
