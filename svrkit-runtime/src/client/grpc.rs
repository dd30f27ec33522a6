//! A connection that speaks gRPC instead of svrkit frames, for channels whose
//! [`ChannelOptions::protocol`] is [`Protocol::Grpc`](super::Protocol::Grpc): a generated svrkit client can call a
//! plain gRPC server of the same schema (one built from `svrkit proto`'s export), so that
//! services can move between the two in either direction.
//!
//! Everything above the connection is the channel's usual stack (balancing, retries,
//! policies, metrics). A call is one HTTP/2 stream: the request header's fields go as the
//! headers `docs/grpc.md` lists (`grpc-timeout`, W3C `traceparent`, `svrkit-*`, metadata),
//! the answer's `grpc-status` comes back as a svrkit status (its exact code when the server
//! is svrkit and sends `svrkit-status`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use tokio::net::TcpStream;

use super::ChannelOptions;
use super::connection::KEEPALIVE_RANGE;
use super::endpoint::Health;
use crate::frame::{Frame, FrameKind, Header};
use crate::grpc_wire as wire;
use crate::service::MethodDescriptor;
use crate::status::{Code, Status};

/// One HTTP/2 connection to a gRPC server.
pub(crate) struct GrpcConn {
    send: SendRequest<Bytes>,
    /// `host:port`, the requests' authority.
    authority: String,
    state: Arc<State>,
    max_frame: usize,
}

/// What a connection's calls and its keepalive share.
#[derive(Default)]
struct State {
    closed: AtomicBool,
    /// Answers' headers and messages heard so far: what proves the server alive.
    heard: AtomicU64,
    /// Calls waiting for their answers.
    waiting: AtomicUsize,
    /// Why the connection was given up, when it was this side that did.
    gave_up: OnceLock<String>,
}

/// A call waiting on a connection, counted while it lives.
struct Waiting<'a>(&'a State);

impl<'a> Waiting<'a> {
    fn new(state: &'a State) -> Waiting<'a> {
        state.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(state)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Pings the server while calls wait and nothing is heard from it for `interval`; ends when
/// a ping has no answer within `interval` (a peer gone without closing: a half-open
/// connection the kernel would take minutes to notice).
async fn keepalive(state: &State, mut pings: h2::PingPong, interval: Duration) {
    let mut heard = state.heard.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(interval).await;
        let now = state.heard.load(Ordering::Relaxed);
        if now != heard || state.waiting.load(Ordering::Relaxed) == 0 {
            heard = now;
            continue;
        }
        match tokio::time::timeout(interval, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => heard = state.heard.load(Ordering::Relaxed),
            _ => {
                let _ = state.gave_up.set(format!(
                    "the gRPC server did not answer a keepalive ping within {interval:?}"
                ));
                return;
            }
        }
    }
}

impl GrpcConn {
    pub(crate) async fn connect(
        addr: &str,
        options: &ChannelOptions,
        health: Arc<Health>,
    ) -> std::io::Result<GrpcConn> {
        #[cfg(feature = "tls")]
        if options.tls.is_some() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "gRPC channels speak plain TCP only (TLS is not offered for them yet)",
            ));
        }
        let timed_out = |what: &str| std::io::Error::new(std::io::ErrorKind::TimedOut, what);
        let stream = tokio::time::timeout(options.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out("connect timed out"))??;
        stream.set_nodelay(true)?;
        let handshake = h2::client::Builder::new()
            // A server's headers and trailers, at most (the frame header's limit).
            .max_header_list_size(64 * 1024)
            .initial_window_size(256 * 1024)
            .initial_connection_window_size(1024 * 1024)
            .handshake::<_, Bytes>(stream);
        let (send, mut connection) = tokio::time::timeout(options.connect_timeout, handshake)
            .await
            .map_err(|_| timed_out("the HTTP/2 handshake timed out"))?
            .map_err(std::io::Error::other)?;
        let state = Arc::new(State::default());
        let pings = options
            .grpc_keepalive
            .map(|every| every.clamp(KEEPALIVE_RANGE.0, KEEPALIVE_RANGE.1))
            .zip(connection.ping_pong());
        tokio::spawn({
            let state = state.clone();
            async move {
                // The connection runs until the server or the network ends it, or its
                // keepalive gives up on it; a broken one takes its endpoint out of rotation
                // for a while, as on svrkit's framing.
                let gone = || {
                    state.closed.store(true, Ordering::Release);
                    health.mark_down();
                };
                let keepalive = async {
                    match pings {
                        Some((interval, pings)) => keepalive(&state, pings, interval).await,
                        None => std::future::pending().await,
                    }
                    // Before the connection is dropped (which closes the socket and fails its
                    // calls): a call that fails sees its endpoint out of rotation already.
                    gone();
                };
                tokio::select! {
                    ended = connection => {
                        if ended.is_err() {
                            gone();
                        }
                    }
                    () = keepalive => {}
                }
                state.closed.store(true, Ordering::Release);
            }
        });
        Ok(GrpcConn {
            send,
            authority: addr.to_owned(),
            state,
            max_frame: options.max_frame,
        })
    }

    pub(crate) fn is_usable(&self) -> bool {
        !self.state.closed.load(Ordering::Acquire)
    }

    /// The status of a call the connection failed: why this side gave up on it, if it did.
    fn failed(&self, e: h2::Error) -> Status {
        match self.state.gave_up.get() {
            Some(why) => Status::unavailable(why.clone()),
            None => unavailable(e),
        }
    }

    /// Makes the call; the answer as a svrkit response frame. Dropping the future resets the
    /// stream (the server sees the cancel).
    pub(crate) async fn call(
        &self,
        method: &'static MethodDescriptor,
        header: &Header,
        body: &Bytes,
    ) -> Result<Frame, Status> {
        let oneway = header.kind == FrameKind::ONEWAY;
        let deadline_ms = header.deadline_ms;
        let request = self.request(method, header)?;
        let mut send = self.send.clone();
        send = send.ready().await.map_err(|e| self.failed(e))?;
        let (response, mut stream) = send
            .send_request(request, false)
            .map_err(|e| self.failed(e))?;
        stream
            .send_data(wire::framed(body), true)
            .map_err(|e| self.failed(e))?;
        let max = self.max_frame;
        if oneway {
            // gRPC has no oneway calls: the answer (`google.protobuf.Empty`) is read by a
            // task, so that the call returns once sent, as on svrkit's framing; the task gives
            // up (resetting the stream) at the call's deadline.
            let deadline = Duration::from_millis(u64::from(deadline_ms.max(1)));
            let state = self.state.clone();
            tokio::spawn(async move {
                let _waiting = Waiting::new(&state);
                let read = read_response(response, max, &state.heard);
                let _ = tokio::time::timeout(deadline, read).await;
                drop(stream);
            });
            return Ok(Frame {
                header: Header::default(),
                body: Bytes::new(),
            });
        }
        let waiting = Waiting::new(&self.state);
        let answer = read_response(response, max, &self.state.heard).await;
        drop((stream, waiting));
        answer.map_err(|failed| match failed {
            Failed::Connection(e) => self.failed(e),
            Failed::Call(status) => status,
        })
    }

    /// The HTTP/2 request for a call: its path, and its header's fields as headers.
    fn request(
        &self,
        method: &'static MethodDescriptor,
        header: &Header,
    ) -> Result<Request<()>, Status> {
        let service = method.service_name();
        let uri = format!("http://{}/{service}/{}", self.authority, method.name);
        let mut request = Request::post(uri)
            .body(())
            .map_err(|e| Status::internal(format!("cannot build the gRPC request: {e}")))?;
        let headers = request.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        if header.deadline_ms != 0 {
            insert(
                headers,
                "grpc-timeout",
                wire::timeout_value(header.deadline_ms),
            );
        }
        // W3C trace context, which gRPC peers read and svrkit's as well: the caller's span as
        // the parent (a call that serves no request has none of its own: a fresh id stands
        // for it). A trace id of another length than W3C's goes as `svrkit-trace-id`.
        if header.trace_id.len() == 16 {
            let parent = match header.parent_span_id {
                0 => crate::trace::new_span_id(),
                span => span,
            };
            insert(
                headers,
                "traceparent",
                wire::traceparent_of(&header.trace_id, parent),
            );
        } else if !header.trace_id.is_empty() {
            let hex = crate::trace::Hex(&header.trace_id).to_string();
            insert(headers, "svrkit-trace-id", hex);
        }
        if !header.caller.is_empty() {
            insert(headers, "svrkit-caller", header.caller.to_string());
        }
        if !header.dye.is_empty() {
            insert(headers, "svrkit-dye", header.dye.to_string());
        }
        for (name, value) in [
            ("svrkit-priority", u64::from(header.priority)),
            ("svrkit-user-key", header.user_key),
            ("svrkit-attempt", u64::from(header.attempt)),
            ("svrkit-no-retry", u64::from(header.no_retry)),
        ] {
            if value != 0 {
                insert(headers, name, value.to_string());
            }
        }
        for (key, value) in &header.metadata {
            let lower = key.to_ascii_lowercase();
            // Metadata may not stand for HTTP/2's, gRPC's or svrkit's own headers: a key an
            // interceptor copied from a stranger's request must not become a header field the
            // next server trusts.
            if is_reserved(&lower) {
                return Err(Status::invalid_argument(format!(
                    "metadata {key:?} is a reserved header name"
                )));
            }
            // Metadata whose key or value HTTP/2 cannot carry is a caller's mistake.
            let name = HeaderName::from_bytes(lower.as_bytes());
            let value = HeaderValue::from_str(value);
            match (name, value) {
                (Ok(name), Ok(value)) => {
                    headers.insert(name, value);
                }
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "metadata {key:?} cannot be sent as an HTTP/2 header"
                    )));
                }
            }
        }
        Ok(request)
    }
}

/// Header names metadata may not use.
fn is_reserved(name: &str) -> bool {
    name.starts_with(':')
        || name.starts_with("grpc-")
        || name.starts_with("svrkit-")
        || matches!(
            name,
            "content-type" | "te" | "user-agent" | "traceparent" | "tracestate" | "content-length"
        )
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
}

fn unavailable(e: h2::Error) -> Status {
    Status::unavailable(format!("the gRPC connection failed: {e}"))
}

/// Why an answer was not read: the connection broke, or the answer itself fails the call.
enum Failed {
    Connection(h2::Error),
    Call(Status),
}

impl From<Status> for Failed {
    fn from(status: Status) -> Failed {
        Failed::Call(status)
    }
}

/// Reads a gRPC answer: its message (at most `max` bytes) and its status, from the trailers
/// or a trailers-only response. Counts in `heard` each part that arrives.
async fn read_response(
    response: h2::client::ResponseFuture,
    max: usize,
    heard: &AtomicU64,
) -> Result<Frame, Failed> {
    let heard = || heard.fetch_add(1, Ordering::Relaxed);
    let (parts, mut body) = response.await.map_err(Failed::Connection)?.into_parts();
    heard();
    if parts.status != http::StatusCode::OK {
        return Err(Status::new(
            http_code(parts.status),
            format!("the gRPC server answered HTTP {}", parts.status),
        )
        .into());
    }
    let mut header = Header {
        kind: FrameKind::RESPONSE,
        ..Header::default()
    };
    // A trailers-only answer: the status is in the headers, and there is no body (an OK one
    // broke the unary call's one message).
    if parts.headers.contains_key("grpc-status") {
        read_status(&parts.headers, &mut header);
        if header.status_code == 0 {
            return Err(Status::internal("the gRPC server answered OK with no message").into());
        }
        return Ok(Frame {
            header,
            body: Bytes::new(),
        });
    }
    let mut message = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(Failed::Connection)?;
        heard();
        let _ = body.flow_control().release_capacity(chunk.len());
        if message.len() + chunk.len() > max + wire::PREFIX {
            return Err(Status::new(
                Code::TOO_LARGE,
                format!("the response is over the channel's limit of {max} bytes"),
            )
            .into());
        }
        message.extend_from_slice(&chunk);
    }
    let trailers = body
        .trailers()
        .await
        .map_err(Failed::Connection)?
        .unwrap_or_default();
    heard();
    read_status(&trailers, &mut header);
    if header.status_code != 0 {
        return Ok(Frame {
            header,
            body: Bytes::new(),
        });
    }
    let body = wire::unframe(message.freeze()).map_err(|(_, why)| {
        Status::internal(format!("a gRPC response that is not one message: {why}"))
    })?;
    Ok(Frame { header, body })
}

/// The status of an answer: `svrkit-status` (exact, from a svrkit server) or `grpc-status`
/// mapped, `grpc-message` percent-decoded, and `svrkit-admission-level`.
fn read_status(headers: &HeaderMap, header: &mut Header) {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
    };
    let code = match (number("svrkit-status"), number("grpc-status")) {
        (Some(exact), _) => Code(exact),
        (None, Some(grpc)) => wire::svrkit_code(grpc),
        (None, None) => Code::INTERNAL,
    };
    header.status_code = code.0;
    if let Some(message) = headers.get("grpc-message") {
        header.status_message = wire::percent_decode(message.as_bytes()).into();
    } else if code != Code::OK && number("grpc-status").is_none() {
        header.status_message = "the gRPC server sent no status".into();
    }
    header.admission_level = number("svrkit-admission-level").unwrap_or(0);
}

/// gRPC's mapping of an HTTP status that is not 200 (grpc/doc/http-grpc-status-mapping.md).
fn http_code(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::INTERNAL,
        401 => Code::UNAUTHENTICATED,
        403 => Code::PERMISSION_DENIED,
        404 => Code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => Code::UNAVAILABLE,
        _ => Code::INTERNAL,
    }
}
