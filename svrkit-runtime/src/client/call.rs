//! The call path every generated client method takes: the deadline settled, the header
//! filled (priority, user key, trace inherited from the request being served), the request
//! encoded, the call passed down the stack and raced against the serving request's
//! cancellation, the response decoded, and the call counted.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Call, CallOptions, Channel};
use crate::codec::Message;
use crate::context::Context;
use crate::frame::{self, FrameKind, Header};
use crate::metrics::{self, MethodMetrics};
use crate::service::MethodDescriptor;
use crate::status::{Code, Status};
use crate::trace;

impl Channel {
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
    // For generated clients only: a person calls `call`, which finds the counters itself.
    #[doc(hidden)]
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
    // For generated clients only, as `call_counted`.
    #[doc(hidden)]
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
            metrics::find_method(method)
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
        // Held here, not in `call_inner`, so that it ends with the decode's verdict.
        let mut span = None;
        let result = self
            .call_inner(method, metrics, request, options, now, &mut span)
            .await
            .and_then(|body| decode(method, body));
        counted.code = match &result {
            Ok(_) => Code::OK,
            Err(status) => status.code(),
        };
        if let Some(span) = &mut span {
            span.code = counted.code;
        }
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
        span: &mut Option<ClientSpan>,
    ) -> Result<Bytes, Status> {
        let parent = Context::current();
        let weak = options.weak.or(self.weak);
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
            header.parent_span_id = parent.span_id;
            header.dye = parent.dye.clone();
            // A retry's calls are not retried: only the level above a failure retries.
            header.no_retry = parent.attempt > 0 || parent.no_retry;
        } else {
            // The start of a trace.
            header.trace_id = crate::trace::new_id();
        }
        if let Some(dye) = &options.dye {
            header.dye = dye.clone();
        }
        // Recorded only where spans are exported, for the service's own calls (not the
        // monitoring's); it ends (and is exported) when the caller's future is done or
        // dropped.
        if self.monitored {
            *span = ClientSpan::start(&mut header, method, self.system);
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
        self.send(&mut call, parent.as_ref()).await
    }

    /// Sends `call` down the stack by its deadline (raced against `parent`'s cancel), and
    /// takes its answer apart.
    async fn send(&self, call: &mut Call, parent: Option<&Context>) -> Result<Bytes, Status> {
        let method = call.method;
        let deadline = call.deadline;
        let stack = self.stack.call(call);
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

/// A call's client span while it runs: exported when dropped, with the code set on the way
/// out, or as `CANCELLED` when the caller dropped the call first.
struct ClientSpan {
    method: &'static MethodDescriptor,
    trace_id: [u8; 16],
    span_id: u64,
    parent_span_id: u64,
    start: std::time::SystemTime,
    system: &'static str,
    code: Code,
}

impl ClientSpan {
    /// A span for the call `header` starts, if spans are exported: the header then names it
    /// as the parent of the server's span.
    fn start(
        header: &mut Header,
        method: &'static MethodDescriptor,
        system: &'static str,
    ) -> Option<ClientSpan> {
        if !trace::exporting() {
            return None;
        }
        let trace_id = trace::id_bytes(&header.trace_id);
        // Under the handler's innermost exported `tracing` span, when there is one.
        #[cfg(feature = "otel")]
        let parent_span_id = trace::current_span(&trace_id).unwrap_or(header.parent_span_id);
        #[cfg(not(feature = "otel"))]
        let parent_span_id = header.parent_span_id;
        let span = ClientSpan {
            method,
            trace_id,
            span_id: trace::new_span_id(),
            parent_span_id,
            start: std::time::SystemTime::now(),
            system,
            code: Code::CANCELLED,
        };
        header.parent_span_id = span.span_id;
        Some(span)
    }
}

impl Drop for ClientSpan {
    fn drop(&mut self) {
        let method = self.method;
        trace::finish(trace::FinishedSpan {
            kind: trace::SpanKind::Client,
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            name: method.full_name,
            service: method.service_name(),
            method: method.name,
            start: self.start,
            end: std::time::SystemTime::now(),
            status: self.code.0,
            grpc: self.system == "grpc",
            caller: faststr::FastStr::empty(),
        });
    }
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
