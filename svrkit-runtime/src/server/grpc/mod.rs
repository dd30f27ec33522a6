//! gRPC on the svrkit port: a connection that opens with the HTTP/2 preface (or negotiates
//! `h2` in TLS) is served as gRPC, through the same router as svrkit frames.
//!
//! Every hosted method answers at `/<package>.<Service>/<Method>` as a unary call whose
//! request and response are the messages `svrkit proto` exports (the codec is protobuf's
//! wire format). A call goes through the router like a native one: the same hooks,
//! admission, limits, trust boundary, deadline handling and per-method metrics. What the
//! headers carry and how statuses map is in `docs/grpc.md`; `wire.rs` holds the mapping.
//!
//! HTTP/2 itself is the `h2` crate, without hyper's layers: a call is a task that reads its
//! body into the connection's share of the input budget, dispatches, and writes the answer.
//! The standard health service (`grpc.health.v1.Health/Check`) answers from the server's
//! readiness (`health.rs`).

mod health;
mod reflection;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Shared;
use super::router::{Answer, Dispatch, Incoming, Origin, Running};
use crate::frame::{FrameKind, Header};
use crate::grpc_wire as wire;
use crate::metrics;
use crate::service::{MethodDescriptor, Service};
use crate::status::{Code, Status};
use crate::sync::{Charge, Share, Slots};

/// Header names whose value is svrkit's own header field: read from a trusted peer like the
/// frame header's fields (`docs/grpc.md`).
const PRIORITY: &str = "svrkit-priority";
const USER_KEY: &str = "svrkit-user-key";
const CALLER: &str = "svrkit-caller";
const DYE: &str = "svrkit-dye";
const ATTEMPT: &str = "svrkit-attempt";
const NO_RETRY: &str = "svrkit-no-retry";
const TRACE_ID: &str = "svrkit-trace-id";

/// The most h2 may hold unwritten per stream.
const SEND_WHOLE: usize = 64 * 1024;
/// The least, however many streams share `max_unsent_per_connection`.
const MIN_SEND_BUFFER: usize = 4 * 1024;
/// Concurrent streams per connection, at most (gRPC clients open more connections beyond;
/// `Limits::max_in_flight_per_connection` lowers it).
const MAX_STREAMS: usize = 256;
/// Reflection streams open at once on one connection. More than one: clients open a stream
/// per question and move on once answered (Python's `grpcio-reflection` does), before the
/// server has seen the stream end; a few: each holds up to `reflection::MAX_REQUEST` bytes
/// and a task, and costs the server nothing it is accounted for otherwise.
const REFLECTION_STREAMS: usize = 8;

/// The most header bytes (HPACK-decoded) a request may carry: its metadata.
const MAX_HEADERS: u32 = 16 * 1024;

/// Each hosted method by its gRPC path, the hosted services' names, and their schemas for
/// reflection.
pub(crate) struct Paths {
    methods: HashMap<Box<str>, &'static MethodDescriptor>,
    services: HashSet<Box<str>>,
    reflection: reflection::Reflection,
}

impl Paths {
    pub(crate) fn new<'a>(hosted: impl Iterator<Item = &'a Arc<dyn Service>>) -> Paths {
        let mut methods = HashMap::new();
        let mut services = HashSet::new();
        let mut sets = Vec::new();
        for service in hosted {
            let descriptor = service.descriptor();
            services.insert(descriptor.name.into());
            for method in descriptor.methods {
                methods.insert(
                    format!("/{}/{}", descriptor.name, method.name).into(),
                    method,
                );
            }
            sets.push(service.proto());
        }
        // Health is described and listed, but is not a hosted service to its own `Check`.
        let health = health::descriptor_set();
        sets.push(&health);
        let names = services
            .iter()
            .map(ToString::to_string)
            .chain([health::SERVICE.to_owned()])
            .collect();
        Paths {
            methods,
            services,
            reflection: reflection::Reflection::new(sets.into_iter(), names),
        }
    }

    fn method(&self, path: &str) -> Option<&'static MethodDescriptor> {
        self.methods.get(path).copied()
    }

    pub(crate) fn hosts_service(&self, name: &str) -> bool {
        self.services.contains(name)
    }
}

/// One gRPC connection's bookkeeping, shared with its calls.
struct Conn {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    trusted: bool,
    /// Calls in flight on it, for the per-connection limit.
    slots: Arc<Slots>,
    /// Its share of the server's input budget: request bodies are read into it.
    memory: Arc<Share>,
    /// Streams not yet answered, for the idle timeout.
    open: AtomicUsize,
    /// Whether a call reached a hosted method: an untrusted peer that makes none is closed
    /// after the first-request timeout, as on svrkit's own framing.
    called: AtomicBool,
    /// Reflection streams open on it, at most [`REFLECTION_STREAMS`].
    reflecting: AtomicUsize,
}

/// Serves one connection whose first bytes are the HTTP/2 preface, until the client goes or
/// the server shuts down.
///
/// A call is read on the connection's task (its headers checked, its body gathered), then
/// dispatched there; a handler that finishes on its first poll (most do) is answered there
/// too, so that the answers to one read's requests go out in one write (h2 writes what is
/// queued each time the connection is polled). A handler that waits goes on in a task.
pub(super) async fn run<S>(
    shared: Arc<Shared>,
    io: S,
    peer: Option<SocketAddr>,
    trusted: bool,
    opened: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = shared.router.limits.clone();
    let streams = limits.max_in_flight_per_connection.clamp(1, MAX_STREAMS);
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(u32::try_from(streams).unwrap_or(u32::MAX))
        .max_header_list_size(MAX_HEADERS)
        // What h2 may hold unwritten per stream: with the streams, the connection's unsent
        // bytes stay within `max_unsent_per_connection`, as on svrkit's framing (answers are
        // handed over only as this room allows: `reply`).
        .max_send_buffer_size(
            (limits.max_unsent_per_connection / streams).clamp(MIN_SEND_BUFFER, SEND_WHOLE),
        )
        // What a connection may have in flight unread by its calls: each call copies its
        // body out (charged to the input budget) and gives the window back as it goes.
        .initial_window_size(256 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .handshake::<_, Bytes>(io);
    let Ok(Ok(mut connection)) = tokio::time::timeout(limits.read_timeout, handshake).await else {
        return;
    };
    let conn = Arc::new(Conn {
        peer,
        trusted,
        slots: Slots::new(limits.max_in_flight_per_connection),
        memory: shared.input.share(),
        open: AtomicUsize::new(0),
        called: AtomicBool::new(trusted),
        reflecting: AtomicUsize::new(0),
        shared: shared.clone(),
    });
    // Counted from the accept, as on svrkit's framing.
    let mut last_stream = opened;
    let mut timer = pin!(tokio::time::sleep_until(
        (opened + limits.first_request_timeout.min(limits.idle_timeout)).into()
    ));
    let mut closing = false;
    // Calls whose requests are being read.
    let mut reading = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled(), if !closing => {
                // GOAWAY; calls in flight finish, the loop ends when the last has.
                connection.graceful_shutdown();
                closing = true;
                timer.as_mut().reset((Instant::now() + limits.shutdown_grace).into());
            }
            Some(read) = reading.next(), if !reading.is_empty() => {
                if let Some(read) = read {
                    serve(&conn, read);
                }
            }
            accepted = connection.accept() => {
                let Some(Ok((request, respond))) = accepted else {
                    // The client went, or broke the protocol (h2 has told it with a GOAWAY).
                    break;
                };
                last_stream = Instant::now();
                reading.push(read(Opened::new(&conn), request, respond));
                // The other streams of the same read, before any is answered.
                let mut ended = false;
                loop {
                    match poll_now(pin!(connection.accept())) {
                        Poll::Ready(Some(Ok((request, respond)))) => {
                            reading.push(read(Opened::new(&conn), request, respond));
                        }
                        Poll::Ready(_) => {
                            ended = true;
                            break;
                        }
                        Poll::Pending => break,
                    }
                }
                // Those whose bodies came along are served now. (A waker that does nothing
                // is fine here: the loop polls `reading` again before it waits.)
                while let Poll::Ready(Some(read)) = poll_now(pin!(reading.next())) {
                    if let Some(read) = read {
                        serve(&conn, read);
                    }
                }
                if ended {
                    break;
                }
            }
            () = &mut timer => {
                if closing {
                    // The shutdown grace is over.
                    break;
                }
                let now = Instant::now();
                let untried = !conn.called.load(Ordering::Acquire)
                    && now >= opened + limits.first_request_timeout;
                let idle = conn.open.load(Ordering::Acquire) == 0
                    && now >= last_stream + limits.idle_timeout;
                if untried || idle {
                    connection.graceful_shutdown();
                    closing = true;
                    timer.as_mut().reset((now + limits.write_timeout).into());
                } else {
                    let next = if conn.called.load(Ordering::Acquire) {
                        last_stream.max(now) + limits.idle_timeout
                    } else {
                        opened + limits.first_request_timeout
                    };
                    timer.as_mut().reset(next.max(now + Duration::from_millis(1)).into());
                }
            }
        }
    }
}

/// Polls `future` once, without a waker to call back.
fn poll_now<F: Future + ?Sized>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
}

/// A stream not yet answered, counted on its connection (for the idle timeout) until dropped.
struct Opened(Arc<Conn>);

impl Opened {
    fn new(conn: &Arc<Conn>) -> Opened {
        conn.open.fetch_add(1, Ordering::AcqRel);
        Opened(conn.clone())
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request read whole, for the router.
struct Read {
    incoming: Incoming,
    respond: SendResponse<Bytes>,
    opened: Opened,
}

/// Reads a call's request: checks what HTTP/2 says of it, finds its method, gathers its body.
/// Requests that cannot go to the router (not gRPC, no such method, a body that is not one
/// message, the health check) are answered here, and give `None`.
async fn read(
    opened: Opened,
    request: Request<RecvStream>,
    respond: SendResponse<Bytes>,
) -> Option<Read> {
    let arrived = Instant::now();
    let conn = &*opened.0;
    let (parts, body) = request.into_parts();
    if parts.method != http::Method::POST {
        plain(respond, StatusCode::METHOD_NOT_ALLOWED);
        return None;
    }
    let grpc_content = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| is_grpc_proto(v.as_bytes()));
    if !grpc_content {
        plain(respond, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        return None;
    }
    let shared = &conn.shared;
    let limits = &shared.router.limits;
    let path = parts.uri.path();
    if path == health::CHECK {
        let answer = read_body_into(body, conn, conn.memory.charge(0), 1024, limits.read_timeout)
            .await
            .and_then(|(body, _charge)| health::check(shared, body));
        reply(respond, answer, 0, opened);
        return None;
    }
    if let Some(method) = path.strip_prefix(health::PREFIX) {
        // Watch (and methods of later versions): the service is here, the method is not.
        let status = Status::unimplemented(format!(
            "grpc.health.v1.Health/{method} is not offered here: poll Check"
        ));
        reply(respond, Err(status), 0, opened);
        return None;
    }
    if reflection::PATHS.contains(&path) {
        // The schema is for the services' own peers: strangers are not told it (nor does
        // it go through the hooks that would authenticate them).
        if !conn.trusted {
            let status = Status::permission_denied("reflection is served to trusted peers only");
            reply(respond, Err(status), 0, opened);
            return None;
        }
        if conn.reflecting.fetch_add(1, Ordering::AcqRel) >= REFLECTION_STREAMS {
            conn.reflecting.fetch_sub(1, Ordering::AcqRel);
            let status = Status::resource_exhausted(format!(
                "at most {REFLECTION_STREAMS} reflection streams at once on a connection"
            ));
            reply(respond, Err(status), 0, opened);
            return None;
        }
        tokio::spawn(reflect(opened, body, respond));
        return None;
    }
    let Some(method) = shared.grpc.method(path) else {
        // `/package.Service/Method`: which of the two this server does not have.
        let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
        let (kind, what) = if shared.grpc.hosts_service(service) {
            (metrics::Unknown::Method, format!("no method at {path}"))
        } else {
            (
                metrics::Unknown::Service,
                format!("no service {service} here (the path was {path})"),
            )
        };
        metrics::note_unknown(kind, conn.peer, &what);
        reply(respond, Err(Status::unimplemented(what)), 0, opened);
        return None;
    };
    let (header, malformed) = request_header(&parts.headers, method);
    // Refused from here on, a call is counted as the router counts its own refusals.
    let count = |status: &Status, rejection| {
        shared
            .router
            .count_refused(method, &header, conn.trusted, status, rejection);
    };
    if let Some(status) = malformed {
        count(&status, None);
        reply(respond, Err(status), 0, opened);
        return None;
    }
    if parts
        .headers
        .get("grpc-encoding")
        .is_some_and(|e| e.as_bytes() != b"identity")
    {
        let status = Status::unimplemented(
            "compressed messages are not accepted; send them uncompressed (grpc-encoding identity)",
        );
        count(&status, None);
        reply(respond, Err(status), 0, opened);
        return None;
    }
    // The headers are held until the call ends, as part of its request: charged like its
    // body (their count and size are bounded by `MAX_HEADERS`).
    let header_bytes: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum();
    let Some(charge) = conn.memory.try_take(header_bytes) else {
        let status = Status::overloaded("the server's memory budget for requests is spent");
        count(&status, Some(metrics::Rejection::Overload));
        reply(respond, Err(status), 0, opened);
        return None;
    };
    drop(parts);
    let max = limits.max_frame + wire::PREFIX;
    let read = read_body_into(body, conn, charge, max, limits.read_timeout)
        .await
        .and_then(|(body, charge)| {
            let body = wire::unframe(body).map_err(|(code, message)| Status::new(code, message))?;
            Ok((body, charge))
        });
    let (body, charge) = match read {
        Ok(read) => read,
        Err(status) => {
            // The body's share of the memory budget spent is the server's overload; the
            // rest (too large, too slow, not one message) is the caller's doing.
            let overload = status.code() == Code::OVERLOADED;
            count(&status, overload.then_some(metrics::Rejection::Overload));
            reply(respond, Err(status), 0, opened);
            return None;
        }
    };
    // Queued once whole, as a svrkit frame is stamped with the read that completed it: the
    // time its body took to come (a large upload, a slow link) is the network's, not a wait
    // in the server's queue, which overload control would hold against it. Its deadline
    // still counts from its headers, as its caller's did.
    let queued = Instant::now();
    let incoming = Incoming {
        header,
        body,
        arrived,
        queued,
        peer: conn.peer,
        trusted: conn.trusted,
        bytes: Some(charge),
        grpc: true,
    };
    Some(Read {
        incoming,
        respond,
        opened,
    })
}

/// Dispatches a request read whole and answers it, or moves it to a task of its own if its
/// handler does not finish on its first poll.
fn serve(conn: &Arc<Conn>, read: Read) {
    let Read {
        incoming,
        respond,
        opened,
    } = read;
    let origin = Origin {
        slots: &conn.slots,
        memory: &conn.memory,
    };
    let mut running = match conn
        .shared
        .router
        .dispatch(incoming, Instant::now(), Some(origin))
    {
        Dispatch::Answered(answer) => return answer_with(respond, answer, opened),
        Dispatch::Run(running) => running,
    };
    conn.called.store(true, Ordering::Release);
    // A first poll that registers a waker that does nothing is followed at once by a poll in
    // the task it moves to (`Running::finish` polls the handler first).
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if let Poll::Ready(answer) = running.poll_once(&mut cx) {
        return answer_with(respond, answer, opened);
    }
    tokio::spawn(finish(running, respond, opened));
}

/// Drives a handler that waits to its end; a client's `RST_STREAM` cancels it, as a svrkit
/// `CANCEL` frame would.
async fn finish(running: Running, mut respond: SendResponse<Bytes>, opened: Opened) {
    let cancel = running.cancel_token().clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut finish = pin!(running.finish(move |answer| {
        let _ = tx.send(answer);
    }));
    let mut rx = pin!(rx);
    let mut finished = false;
    let mut reset = false;
    let answer = loop {
        tokio::select! {
            biased;
            answer = &mut rx => break answer.ok(),
            () = &mut finish, if !finished => finished = true,
            _ = std::future::poll_fn(|cx| respond.poll_reset(cx)), if !reset => {
                reset = true;
                cancel.cancel();
            }
        }
    };
    if let Some(answer) = answer {
        answer_with(respond, answer, opened);
    }
    // After a deadline or cancel, the handler's grace to see it and stop.
    if !finished {
        finish.await;
    }
}

/// Serves a reflection stream: answers each request message as it arrives, waiting for the
/// client to take each answer (its flow-control window) before reading the next. A stream
/// lasts at most `Limits::max_deadline`, and waits at most the read timeout for each request.
async fn reflect(opened: Opened, body: RecvStream, mut respond: SendResponse<Bytes>) {
    struct Reflecting<'a>(&'a AtomicUsize);
    impl Drop for Reflecting<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let one = Reflecting(&opened.0.reflecting);
    let limits = &opened.0.shared.router.limits;
    let Ok(mut stream) = respond.send_response(grpc_response(), false) else {
        return;
    };
    let answered = tokio::time::timeout(
        limits.max_deadline,
        answer_reflection(&opened, body, &mut stream),
    )
    .await;
    let status = match answered {
        Ok(Some(status)) => status,
        // Reset by the client, or too slow to ask.
        Ok(None) => {
            stream.send_reset(h2::Reason::CANCEL);
            return;
        }
        Err(_) => Err(Status::deadline_exceeded(
            "a reflection stream lasts at most the server's longest deadline",
        )),
    };
    let mut trailers = HeaderMap::new();
    match status {
        Ok(()) => {
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
        }
        Err(failed) => {
            trailers.insert("grpc-status", wire::grpc_code(failed.code()).into());
            if let Ok(message) = HeaderValue::from_str(&wire::percent_encode(failed.message())) {
                trailers.insert("grpc-message", message);
            }
        }
    }
    // Counted out before the client can see the end: it may open the next at once.
    drop(one);
    let _ = stream.send_trailers(trailers);
}

/// Answers a reflection stream's requests until it ends: its status, or `None` when the
/// client reset it or did not send within the read timeout.
async fn answer_reflection(
    opened: &Opened,
    mut body: RecvStream,
    stream: &mut SendStream<Bytes>,
) -> Option<Result<(), Status>> {
    let shared = &opened.0.shared;
    let limits = &shared.router.limits;
    let mut pending = BytesMut::new();
    loop {
        let chunk = match tokio::time::timeout(limits.read_timeout, body.data()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(None) if pending.is_empty() => return Some(Ok(())),
            Ok(None) => {
                return Some(Err(Status::invalid_argument(
                    "the stream ended inside a message",
                )));
            }
            Ok(Some(Err(_))) | Err(_) => return None,
        };
        let _ = body.flow_control().release_capacity(chunk.len());
        pending.extend_from_slice(&chunk);
        while pending.len() >= wire::PREFIX {
            let len = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]) as usize;
            if pending[0] != 0 || len > reflection::MAX_REQUEST {
                return Some(Err(Status::invalid_argument(
                    "a reflection request must be uncompressed and at most 64 KiB",
                )));
            }
            if pending.len() < wire::PREFIX + len {
                break;
            }
            let message = pending.split_to(wire::PREFIX + len);
            let answer = shared.grpc.reflection.answer(&message[wire::PREFIX..]);
            let sent = tokio::time::timeout(
                limits.write_timeout,
                send_windowed(stream, wire::framed(&answer)),
            );
            if !matches!(sent.await, Ok(Ok(()))) {
                return None;
            }
        }
    }
}

/// Whether a `content-type` is gRPC with protobuf messages (`application/grpc`, with
/// `+proto` or parameters): not gRPC-Web, nor another message format.
fn is_grpc_proto(value: &[u8]) -> bool {
    let media = value.split(|&b| b == b';').next().unwrap_or_default();
    let media = media.trim_ascii();
    media.eq_ignore_ascii_case(b"application/grpc")
        || media.eq_ignore_ascii_case(b"application/grpc+proto")
}

/// The frame header a gRPC request stands for: the method, the deadline from
/// `grpc-timeout`, the trace id from `traceparent`, svrkit's own fields from `svrkit-*`
/// headers, and every other custom header as metadata. The router decides which of them a
/// peer is trusted with. A `grpc-timeout` that is not one (more than eight digits, no unit,
/// a sign or a fraction) is an error, as grpc-go makes it, rather than the method's timeout
/// in its place: a caller whose deadline is lost would wait longer than it meant to.
fn request_header(
    headers: &HeaderMap,
    method: &'static MethodDescriptor,
) -> (Header, Option<Status>) {
    let mut malformed = None;
    let mut header = Header {
        kind: FrameKind::REQUEST,
        service_id: u32::from(method.service_id),
        method_id: u32::from(method.id),
        ..Header::default()
    };
    for (name, value) in headers {
        let bytes = value.as_bytes();
        let text = || value.to_str().ok();
        let number = || text().and_then(|t| t.parse::<u64>().ok());
        match name.as_str() {
            "grpc-timeout" => match wire::timeout_ms(bytes) {
                Some(ms) => header.deadline_ms = ms,
                None => {
                    malformed = Some(Status::invalid_argument(format!(
                        "grpc-timeout {:?} is not a timeout: at most eight digits, then one of \
                         H, M, S, m, u, n",
                        String::from_utf8_lossy(bytes)
                    )));
                }
            },
            "traceparent" => {
                if let Some((id, parent)) = wire::traceparent(bytes) {
                    if header.trace_id.is_empty() {
                        header.trace_id = id;
                    }
                    header.parent_span_id = parent;
                }
            }
            TRACE_ID => {
                if let Some(id) = text().and_then(hex_id) {
                    header.trace_id = id;
                }
            }
            PRIORITY => header.priority = number().map_or(0, |n| n.min(4) as u32),
            USER_KEY => header.user_key = number().unwrap_or(0),
            ATTEMPT => header.attempt = number().map_or(0, |n| n.min(255) as u32),
            NO_RETRY => header.no_retry = bytes == b"1" || bytes == b"true",
            CALLER => header.caller = text().unwrap_or_default().to_owned().into(),
            DYE => header.dye = text().unwrap_or_default().to_owned().into(),
            // HTTP/2's and gRPC's own.
            "content-type" | "te" | "user-agent" | "tracestate" | "content-length" => {}
            n if n.starts_with("grpc-") => {}
            n => {
                if let Some(v) = text() {
                    header
                        .metadata
                        .insert(n.to_owned().into(), v.to_owned().into());
                }
            }
        }
    }
    (header, malformed)
}

/// A trace id written in hex (as `svrkit-trace-id` carries it), up to 32 bytes.
/// All zeros is no id (W3C's rule for `traceparent`, and OTLP's): the request then starts a
/// trace of its own.
fn hex_id(text: &str) -> Option<Bytes> {
    if text.is_empty() || !text.len().is_multiple_of(2) || text.len() > 64 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect();
    bytes.filter(|b| b.iter().any(|&x| x != 0)).map(Bytes::from)
}

/// Reads a request's body, up to `max` bytes and within `timeout`, into the connection's
/// share of the input budget (adding to `charge`), giving HTTP/2's flow-control window back
/// as it goes.
async fn read_body_into(
    body: RecvStream,
    conn: &Conn,
    charge: Charge,
    max: usize,
    timeout: Duration,
) -> Result<(Bytes, Charge), Status> {
    let mut body = body;
    let mut charge = charge;
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    // No timer for a body that is here already (the usual case): only a wait needs one.
    let mut deadline = None;
    loop {
        let here = body.poll_data(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        let chunk = match here {
            Poll::Ready(chunk) => chunk,
            Poll::Pending => {
                let until = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + timeout);
                let data = std::future::poll_fn(|cx| body.poll_data(cx));
                match tokio::time::timeout_at(until, data).await {
                    Ok(chunk) => chunk,
                    Err(_) => {
                        return Err(Status::deadline_exceeded(
                            "the request's body did not arrive within the read timeout",
                        ));
                    }
                }
            }
        };
        let Some(chunk) = chunk else { break };
        let chunk =
            chunk.map_err(|e| Status::cancelled(format!("the request stream ended: {e}")))?;
        let n = chunk.len();
        let _ = body.flow_control().release_capacity(n);
        let had = first.as_ref().map_or(0, Bytes::len) + rest.len();
        if had + n > max {
            return Err(Status::new(
                Code::TOO_LARGE,
                format!("the request is over the server's limit of {max} bytes"),
            ));
        }
        let more = conn.memory.try_take(n).ok_or_else(|| {
            Status::overloaded("the server's memory budget for requests is spent")
        })?;
        charge.merge(more);
        // One DATA frame (the common case) is kept as it came; more are copied together.
        match first.take() {
            None if rest.is_empty() => first = Some(chunk),
            None => rest.extend_from_slice(&chunk),
            Some(earlier) => {
                rest.reserve(earlier.len() + n);
                rest.extend_from_slice(&earlier);
                rest.extend_from_slice(&chunk);
            }
        }
    }
    let body = first.unwrap_or_else(|| rest.freeze());
    Ok((body, charge))
}

/// Writes the router's answer: nothing to a caller that cancelled.
fn answer_with(mut respond: SendResponse<Bytes>, answer: Answer, opened: Opened) {
    if !answer.send {
        respond.send_reset(h2::Reason::CANCEL);
        return;
    }
    let code = Code(answer.header.status_code);
    let result = if code == Code::OK {
        Ok(answer.body)
    } else {
        Err(Status::new(code, answer.header.status_message.to_string()))
    };
    reply(respond, result, answer.header.admission_level, opened);
}

/// Writes a gRPC response: the message and an OK status, or a status alone (a trailers-only
/// response). `admission_level`, when the server has one, goes along as
/// `svrkit-admission-level` for svrkit callers.
///
/// The message is handed to h2 only as far as the stream has room (its flow-control window,
/// and the connection's send buffer per stream): what h2 holds unwritten stays bounded
/// however the client reads. A message that does not fit at once is sent by a task as room
/// opens, within the write timeout, holding its bytes charged to the connection's share of
/// the memory budget; the stream counts as open until then.
fn reply(
    mut respond: SendResponse<Bytes>,
    result: Result<Bytes, Status>,
    admission_level: u32,
    opened: Opened,
) {
    let mut status = HeaderMap::new();
    if admission_level != 0 {
        status.insert("svrkit-admission-level", admission_level.into());
    }
    let body = match result {
        Ok(body) => body,
        Err(failed) => {
            let code = failed.code();
            status.insert("grpc-status", wire::grpc_code(code).into());
            if let Ok(message) = HeaderValue::from_str(&wire::percent_encode(failed.message())) {
                status.insert("grpc-message", message);
            }
            // The exact code, for svrkit callers (gRPC's are fewer).
            status.insert("svrkit-status", code.0.into());
            let mut response = grpc_response();
            response.headers_mut().extend(status);
            let _ = respond.send_response(response, true);
            return;
        }
    };
    status.insert("grpc-status", HeaderValue::from_static("0"));
    let Ok(mut stream) = respond.send_response(grpc_response(), false) else {
        return;
    };
    let framed = wire::framed(&body);
    drop(body);
    stream.reserve_capacity(framed.len());
    if stream.capacity() >= framed.len() {
        let _ = stream.send_data(framed, false);
        let _ = stream.send_trailers(status);
        return;
    }
    let Some(held) = opened.0.memory.try_take(framed.len()) else {
        // Headers are out: the status goes in the trailers.
        let mut refused = HeaderMap::new();
        refused.insert("grpc-status", wire::grpc_code(Code::OVERLOADED).into());
        refused.insert("svrkit-status", Code::OVERLOADED.0.into());
        refused.insert(
            "grpc-message",
            HeaderValue::from_static("the server's memory budget for answers is spent"),
        );
        let _ = stream.send_trailers(refused);
        return;
    };
    let write_timeout = opened.0.shared.router.limits.write_timeout;
    tokio::spawn(async move {
        let sent = tokio::time::timeout(write_timeout, send_windowed(&mut stream, framed));
        if matches!(sent.await, Ok(Ok(()))) {
            let _ = stream.send_trailers(status);
        } else {
            stream.send_reset(h2::Reason::CANCEL);
        }
        drop((held, opened));
    });
}

/// Sends `data` as the stream has room (the peer's window, h2's send buffer).
async fn send_windowed(stream: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let here = stream.capacity();
        if here > 0 {
            let chunk = data.split_to(here.min(data.len()));
            stream.send_data(chunk, false)?;
            continue;
        }
        let granted = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(granted) => granted?,
            None => return Err(h2::Error::from(h2::Reason::CANCEL)),
        };
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        stream.send_data(chunk, false)?;
    }
    Ok(())
}

fn grpc_response() -> Response<()> {
    let mut response = Response::new(());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// A plain HTTP answer, for requests that are not gRPC.
fn plain(mut respond: SendResponse<Bytes>, code: StatusCode) {
    let mut response = Response::new(());
    *response.status_mut() = code;
    let _ = respond.send_response(response, true);
}
