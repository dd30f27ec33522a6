//! One server-side connection: a reader that dispatches frames, answering quick requests
//! inline, tasks for the requests that wait, and a writer that coalesces responses.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Server, Shared};
use crate::context::Context;
use crate::frame::{self, Frame, FrameKind, Header};
use crate::service::{BoxFuture, Priority, Service};
use crate::status::{Code, Status};

/// How long a handler may keep running after its call was cancelled or timed out, to notice
/// (through its context) and clean up, before it is dropped.
const CANCEL_GRACE: Duration = Duration::from_secs(1);
/// Responses gathered into one write at most.
const MAX_BATCH: usize = 64 * 1024;

struct Conn {
    shared: Arc<Shared>,
    /// Cancellation of each request waiting in a task, by request id.
    in_flight: Mutex<HashMap<u64, CancellationToken>>,
    permits: Arc<Semaphore>,
    /// Encoded frames for the writer.
    tx: mpsc::Sender<Vec<u8>>,
    idle: Notify,
}

pub(super) async fn run(shared: Arc<Shared>, stream: TcpStream) {
    let (reader, writer) = stream.into_split();
    let per_conn = shared.limits.max_in_flight_per_connection;
    // Bounded by the in-flight limit (plus room for batches and control frames): a client
    // that stops reading stalls only its own requests.
    let (tx, rx) = mpsc::channel(per_conn + 16);
    let write_task = tokio::spawn(write_loop(writer, rx, shared.limits.write_timeout));
    let conn = Arc::new(Conn {
        in_flight: Mutex::new(HashMap::new()),
        permits: Arc::new(Semaphore::new(per_conn)),
        tx,
        idle: Notify::new(),
        shared,
    });
    let decoder = frame::Decoder::new(conn.shared.limits.max_frame);
    let mut buf = BytesMut::new();
    let shutdown = Server::shutdown_token(&conn.shared).clone();
    'read: loop {
        // Wait for bytes without holding a buffer: idle connections cost almost nothing.
        tokio::select! {
            _ = shutdown.cancelled() => {
                let mut goaway = Vec::new();
                frame::encode(&Header { kind: FrameKind::GOAWAY, ..Default::default() }, &[], &mut goaway);
                let _ = conn.tx.send(goaway).await;
                break 'read;
            }
            _ = conn.tx.closed() => break 'read,
            ready = reader.readable() => if ready.is_err() { break 'read },
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(8192);
        }
        match reader.try_read_buf(&mut buf) {
            Ok(0) => break 'read,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => break 'read,
        }
        // Answers to requests handled inline go out together: one write per read.
        let mut out = Vec::new();
        let mut broken = false;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => handle(&conn, frame, &mut out).await,
                Ok(None) => break,
                // Not svrkit, oversized or a broken header: nothing more on this stream can
                // be trusted. Only this connection closes, after answering what came before.
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        if !out.is_empty() && conn.tx.send(out).await.is_err() {
            break 'read;
        }
        if broken {
            break 'read;
        }
        if buf.is_empty() {
            // Give the memory back between bursts.
            buf = BytesMut::new();
        }
    }
    // Let requests in flight finish and their responses go out (shutdown, or a client that
    // half-closed after sending), then close.
    drain(&conn).await;
    drop(conn);
    let _ = write_task.await;
}

async fn drain(conn: &Conn) {
    let grace = conn.shared.limits.shutdown_grace;
    let _ = tokio::time::timeout(grace, async {
        loop {
            let idle = conn.idle.notified();
            if conn.in_flight.lock().map(|m| m.is_empty()).unwrap_or(true) {
                return;
            }
            idle.await;
        }
    })
    .await;
}

async fn write_loop(
    mut writer: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Vec<u8>>,
    timeout: Duration,
) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        // Everything already queued goes out in the same write; a lone buffer is written as
        // it is, without copying.
        let to_write = match rx.try_recv() {
            Err(_) => first,
            Ok(second) => {
                batch.clear();
                batch.extend_from_slice(&first);
                batch.extend_from_slice(&second);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(more) => batch.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                std::mem::take(&mut batch)
            }
        };
        let written = tokio::time::timeout(timeout, writer.write_all(&to_write)).await;
        if to_write.capacity() <= 4 * MAX_BATCH {
            batch = to_write;
        }
        if !matches!(written, Ok(Ok(()))) {
            // The peer stopped reading or went away: close this connection only.
            return;
        }
    }
    let _ = writer.shutdown().await;
}

fn put_response(request_id: u64, result: &Result<Bytes, Status>, out: &mut Vec<u8>) {
    let mut header = Header {
        kind: FrameKind::RESPONSE,
        request_id,
        ..Default::default()
    };
    let body: &[u8] = match result {
        Ok(body) => body,
        Err(status) => {
            header.status_code = status.code().0;
            header.status_message = status.message().to_owned().into();
            &[]
        }
    };
    frame::encode(&header, body, out);
}

async fn handle(conn: &Arc<Conn>, frame: Frame, out: &mut Vec<u8>) {
    let header = frame.header;
    match header.kind {
        FrameKind::REQUEST | FrameKind::ONEWAY => {}
        FrameKind::CANCEL => {
            if let Some(token) = conn
                .in_flight
                .lock()
                .ok()
                .and_then(|m| m.get(&header.request_id).cloned())
            {
                token.cancel();
            }
            return;
        }
        FrameKind::PING => {
            let pong = Header {
                kind: FrameKind::PONG,
                request_id: header.request_id,
                ..Default::default()
            };
            frame::encode(&pong, &[], out);
            return;
        }
        // Responses, pongs, goaways and kinds from newer peers mean nothing to a server.
        _ => return,
    }
    let wants_response = header.kind == FrameKind::REQUEST;
    let request_id = header.request_id;
    let mut reply = |status: Status| {
        if wants_response {
            put_response(request_id, &Err(status), out);
        }
    };
    let Some(service) = u16::try_from(header.service_id)
        .ok()
        .and_then(|id| conn.shared.services.get(&id))
    else {
        return reply(Status::unimplemented(format!(
            "no service with id {}",
            header.service_id
        )));
    };
    let method_id = u16::try_from(header.method_id).unwrap_or(0);
    if service.descriptor().method(method_id).is_none() {
        let name = service.descriptor().name;
        return reply(Status::unimplemented(format!(
            "{name} has no method with id {}",
            header.method_id
        )));
    }
    if conn.permits.available_permits() == 0 {
        return reply(Status::overloaded(
            "too many requests in flight on this connection",
        ));
    }
    if conn.shared.in_flight.available_permits() == 0 {
        return reply(Status::overloaded(
            "too many requests in flight on this server",
        ));
    }
    let ctx = context_from(&header, Instant::now());
    let mut call = Box::pin(ctx.clone().scope(CatchUnwind(service.call(
        method_id,
        ctx.clone(),
        frame.body,
    ))));
    // Most handlers finish on their first poll: answer those right here, in this read's
    // batch, with no task, timer or cancel bookkeeping. Only handlers that wait get them.
    if let Poll::Ready(result) =
        std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await
    {
        if wants_response {
            put_response(request_id, &result, out);
        }
        return;
    }
    let (Ok(conn_permit), Ok(server_permit)) = (
        conn.permits.clone().try_acquire_owned(),
        conn.shared.in_flight.clone().try_acquire_owned(),
    ) else {
        return reply(Status::overloaded("too many requests in flight"));
    };
    if let Ok(mut map) = conn.in_flight.lock() {
        map.insert(request_id, ctx.cancel_token().clone());
    }
    let conn = conn.clone();
    tokio::spawn(async move {
        let cancelled_by_client = ctx.cancel_token().clone();
        let respond = |result: Result<Bytes, Status>| {
            // A caller that cancelled is gone; it gets no answer.
            if wants_response && !cancelled_by_client.is_cancelled() {
                let mut frame = Vec::new();
                put_response(request_id, &result, &mut frame);
                if let Err(mpsc::error::TrySendError::Full(frame)) = conn.tx.try_send(frame) {
                    let tx = conn.tx.clone();
                    tokio::spawn(async move { tx.send(frame).await });
                }
            }
        };
        finish_call(call, &ctx, respond).await;
        if let Ok(mut map) = conn.in_flight.lock() {
            map.remove(&request_id);
            if map.is_empty() {
                conn.idle.notify_waiters();
            }
        }
        drop((conn_permit, server_permit));
    });
}

/// The context a request runs in, from its header; the deadline counts from arrival.
fn context_from(header: &Header, arrived: Instant) -> Context {
    let mut ctx = Context::default();
    if header.deadline_ms > 0 {
        ctx.set_deadline(Some(
            arrived + Duration::from_millis(u64::from(header.deadline_ms)),
        ));
    }
    ctx.caller = header.caller.clone();
    ctx.trace_id = header.trace_id.clone();
    ctx.dye = header.dye.clone();
    ctx.user_key = header.user_key;
    ctx.priority = Priority::from_u32(header.priority);
    ctx.attempt = header.attempt;
    ctx
}

/// Runs one call: not at all if its deadline already passed, contained if the handler
/// panics, answered on time if it overruns its deadline.
///
/// In-process calls take this path; network requests take the same steps in `handle`, with
/// the first poll inline.
pub(crate) async fn run_call(
    service: &Arc<dyn Service>,
    method_id: u16,
    ctx: Context,
    body: Bytes,
    respond: impl FnOnce(Result<Bytes, Status>),
) {
    if ctx.deadline().is_some_and(|d| Instant::now() >= d) {
        return respond(Err(Status::deadline_exceeded(
            "the deadline passed before the request was picked up",
        )));
    }
    let call = ctx
        .clone()
        .scope(CatchUnwind(service.call(method_id, ctx.clone(), body)));
    finish_call(pin!(call), &ctx, respond).await;
}

/// Drives a started call to its end: the result, the deadline or the caller's cancel,
/// whichever comes first. After a deadline or cancel the handler is polled on for a moment,
/// so that it sees the cancellation through its context and can stop cleanly.
async fn finish_call<P>(
    mut call: Pin<P>,
    ctx: &Context,
    respond: impl FnOnce(Result<Bytes, Status>),
) where
    P: std::ops::DerefMut,
    P::Target: Future<Output = Result<Bytes, Status>>,
{
    let deadline = ctx.deadline();
    let token = ctx.cancel_token().clone();
    let expired = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = call.as_mut() => respond(result),
        _ = expired => {
            token.cancel();
            respond(Err(Status::deadline_exceeded("the handler did not finish before the deadline")));
            let _ = tokio::time::timeout(CANCEL_GRACE, call).await;
        }
        _ = token.cancelled() => {
            respond(Err(Status::cancelled("the caller cancelled the call")));
            let _ = tokio::time::timeout(CANCEL_GRACE, call).await;
        }
    }
}

/// Turns a panic while polling the handler into an `INTERNAL` status for that call only.
struct CatchUnwind(BoxFuture<Result<Bytes, Status>>);

impl Future for CatchUnwind {
    type Output = Result<Bytes, Status>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(_) => Poll::Ready(Err(Status::new(Code::INTERNAL, "the handler panicked"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::service::{MethodDescriptor, Retry, ServiceDescriptor};

    static DESCRIPTOR: ServiceDescriptor = ServiceDescriptor {
        name: "test.Counting",
        id: 1,
        methods: &[MethodDescriptor {
            name: "Run",
            full_name: "test.Counting.Run",
            id: 1,
            service_id: 1,
            timeout_ms: 100,
            retry: Retry::None,
            priority: Priority::Normal,
            oneway: false,
        }],
    };

    /// Counts how often its handler runs.
    struct Counting(Arc<AtomicUsize>);

    impl Service for Counting {
        fn descriptor(&self) -> &'static ServiceDescriptor {
            &DESCRIPTOR
        }
        fn call(
            &self,
            _method: u16,
            _ctx: Context,
            _request: Bytes,
        ) -> BoxFuture<Result<Bytes, Status>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(Bytes::new()) })
        }
    }

    #[tokio::test]
    async fn a_request_past_its_deadline_when_picked_up_is_not_run() {
        let runs = Arc::new(AtomicUsize::new(0));
        let service: Arc<dyn Service> = Arc::new(Counting(runs.clone()));
        let header = Header {
            deadline_ms: 5,
            ..Default::default()
        };
        // It arrived 50 ms ago with 5 ms to live.
        let ctx = context_from(&header, Instant::now() - Duration::from_millis(50));
        let mut answer = None;
        run_call(&service, 1, ctx, Bytes::new(), |r| answer = Some(r)).await;
        assert_eq!(
            answer.take().unwrap().unwrap_err().code(),
            Code::DEADLINE_EXCEEDED
        );
        assert_eq!(runs.load(Ordering::SeqCst), 0, "the handler must not run");
        // In time, it runs.
        let ctx = context_from(&header, Instant::now());
        run_call(&service, 1, ctx, Bytes::new(), |r| answer = Some(r)).await;
        assert!(answer.take().unwrap().is_ok());
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
