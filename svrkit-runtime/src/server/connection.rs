//! One server-side connection: a reader that dispatches frames, request tasks, and a writer
//! that coalesces their responses.

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
    /// Cancellation of each request in flight, by request id.
    in_flight: Mutex<HashMap<u64, CancellationToken>>,
    permits: Arc<Semaphore>,
    /// Encoded frames for the writer.
    tx: mpsc::Sender<Vec<u8>>,
    idle: Notify,
}

pub(super) async fn run(shared: Arc<Shared>, stream: TcpStream) {
    let (reader, writer) = stream.into_split();
    let per_conn = shared.limits.max_in_flight_per_connection;
    // Bounded by the in-flight limit (plus room for control frames): a client that stops
    // reading stalls only its own requests.
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
                let _ = conn.tx.send(control_frame(FrameKind::GOAWAY, 0)).await;
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
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => handle(&conn, frame).await,
                Ok(None) => break,
                // Not svrkit, oversized or a broken header: nothing more on this stream can
                // be trusted. Only this connection closes.
                Err(_) => break 'read,
            }
        }
        if buf.is_empty() {
            // Give the memory back between bursts.
            buf = BytesMut::new();
        }
    }
    // Let requests in flight finish and their responses go out (shutdown or a client that
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
        batch.clear();
        batch.extend_from_slice(&first);
        // Everything already queued goes out in the same write.
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        match tokio::time::timeout(timeout, writer.write_all(&batch)).await {
            Ok(Ok(())) => {}
            // The peer stopped reading or went away: close this connection only.
            _ => return,
        }
        if batch.capacity() > 4 * MAX_BATCH {
            batch = Vec::new();
        }
    }
    let _ = writer.shutdown().await;
}

fn control_frame(kind: FrameKind, request_id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame::PREFIX_LEN + 8);
    frame::encode(
        &Header {
            kind,
            request_id,
            ..Default::default()
        },
        &[],
        &mut out,
    );
    out
}

fn response_frame(request_id: u64, result: &Result<Bytes, Status>) -> Vec<u8> {
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
    let mut out = Vec::with_capacity(frame::PREFIX_LEN + 16 + body.len());
    frame::encode(&header, body, &mut out);
    out
}

async fn handle(conn: &Arc<Conn>, frame: Frame) {
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
            let _ = conn
                .tx
                .send(control_frame(FrameKind::PONG, header.request_id))
                .await;
            return;
        }
        // Responses, pongs, goaways and kinds from newer peers mean nothing to a server.
        _ => return,
    }
    let wants_response = header.kind == FrameKind::REQUEST;
    let request_id = header.request_id;
    let reply = |status: Status| async move {
        if wants_response {
            let _ = conn.tx.send(response_frame(request_id, &Err(status))).await;
        }
    };
    let Some(service) = u16::try_from(header.service_id)
        .ok()
        .and_then(|id| conn.shared.services.get(&id))
    else {
        return reply(Status::unimplemented(format!(
            "no service with id {}",
            header.service_id
        )))
        .await;
    };
    let method_id = u16::try_from(header.method_id).unwrap_or(0);
    if service.descriptor().method(method_id).is_none() {
        let name = service.descriptor().name;
        return reply(Status::unimplemented(format!(
            "{name} has no method with id {}",
            header.method_id
        )))
        .await;
    }
    let Ok(conn_permit) = conn.permits.clone().try_acquire_owned() else {
        return reply(Status::overloaded(
            "too many requests in flight on this connection",
        ))
        .await;
    };
    let Ok(server_permit) = conn.shared.in_flight.clone().try_acquire_owned() else {
        return reply(Status::overloaded(
            "too many requests in flight on this server",
        ))
        .await;
    };
    let ctx = context_from(&header, Instant::now());
    if let Ok(mut map) = conn.in_flight.lock() {
        map.insert(request_id, ctx.cancel_token().clone());
    }
    let conn = conn.clone();
    let service = service.clone();
    tokio::spawn(async move {
        let cancelled_by_client = ctx.cancel_token().clone();
        let respond = |result: Result<Bytes, Status>| {
            // A caller that cancelled is gone; it gets no answer.
            if wants_response && !cancelled_by_client.is_cancelled() {
                let _ = conn
                    .tx
                    .try_send(response_frame(request_id, &result))
                    .or_else(|e| match e {
                        mpsc::error::TrySendError::Full(frame) => {
                            let tx = conn.tx.clone();
                            tokio::spawn(async move { tx.send(frame).await });
                            Ok(())
                        }
                        closed => Err(closed),
                    });
            }
        };
        run_call(&service, method_id, ctx, frame.body, respond).await;
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
/// panics, answered on time if it overruns its deadline (the handler then sees the
/// cancellation through its context and gets a moment to stop).
///
/// Shared by requests from the network and in-process calls.
pub(crate) async fn run_call(
    service: &Arc<dyn Service>,
    method_id: u16,
    ctx: Context,
    body: Bytes,
    respond: impl FnOnce(Result<Bytes, Status>),
) {
    let deadline = ctx.deadline();
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return respond(Err(Status::deadline_exceeded(
            "the deadline passed before the request was picked up",
        )));
    }
    let token = ctx.cancel_token().clone();
    let call = CatchUnwind(service.call(method_id, ctx.clone(), body));
    let mut call = pin!(ctx.scope(call));
    let expired = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = &mut call => respond(result),
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
