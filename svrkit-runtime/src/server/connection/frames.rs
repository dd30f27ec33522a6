//! What the connection does with each frame it reads: requests go to the router (answered in
//! the read's batch when their handler finishes on its first poll, else run in a task the
//! connection can cancel), cancels reach the task they name, pings are answered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Instant;

use super::super::router::{Answer, Dispatch, Incoming, Origin, Running};
use super::{Conn, Key};
use crate::frame::{self, Frame, FrameKind, Header};
use crate::status::Status;
use crate::sync;

/// What a read's frames leave for the read's one write.
pub(super) struct Batch {
    /// The encoded replies of the requests answered at once.
    pub(super) out: Vec<u8>,
    /// The last call answered inline, dropped once the batch's replies are handed to the
    /// outbox (written, with one call at a time) rather than before: its teardown (its
    /// handler's future, its context, its permits) then runs after the reply is on its way.
    /// Only the last: the next request read drops it before taking its own share of the
    /// budget, and a reader that yields drops it first, so no request finds a slot or a byte
    /// of the budget still held by a call that has ended.
    pub(super) spent: Option<Running>,
}

/// Answers `request_id` with `status` at once, into `out`.
pub(super) fn reply_now(request_id: u64, status: Status, out: &mut Vec<u8>) {
    let header = Header {
        kind: FrameKind::RESPONSE,
        request_id,
        status_code: status.code().0,
        status_message: status.message().to_owned().into(),
        ..Header::default()
    };
    frame::encode(&header, &[], out);
}

/// Acts on one frame from the peer, answering into the batch what is answered at once. Whether
/// it started a call (admitted, to a method hosted here): what ends an untrusted
/// connection's first-request timeout.
pub(super) async fn handle(
    conn: &Arc<Conn>,
    frame: Frame,
    bytes: Option<sync::Charge>,
    arrived: Instant,
    now: Instant,
    peer: Option<SocketAddr>,
    batch: &mut Batch,
) -> bool {
    let out = &mut batch.out;
    let header = frame.header;
    match header.kind {
        FrameKind::REQUEST | FrameKind::ONEWAY => {}
        FrameKind::CANCEL => {
            if let Some(token) = conn
                .in_flight
                .lock()
                .ok()
                .and_then(|m| m.get(&Key::Request(header.request_id)).cloned())
            {
                token.cancel();
            }
            return false;
        }
        FrameKind::PING => {
            let pong = Header {
                kind: FrameKind::PONG,
                request_id: header.request_id,
                ..Header::default()
            };
            frame::encode(&pong, &[], out);
            return false;
        }
        // Responses, pongs, goaways and kinds from newer peers mean nothing to a server.
        _ => return false,
    }
    let request_id = header.request_id;
    let wants_reply = header.kind == FrameKind::REQUEST;
    // Only requests running in tasks can still be in flight; most connections have none.
    if wants_reply
        && conn.tasks.load(Ordering::Acquire) > 0
        && conn
            .in_flight
            .lock()
            .is_ok_and(|m| m.contains_key(&Key::Request(request_id)))
    {
        let status = Status::invalid_argument(format!(
            "request id {request_id} is already in flight on this connection"
        ));
        reply_now(request_id, status, out);
        return false;
    }
    let incoming = Incoming {
        header,
        body: frame.body,
        arrived,
        queued: arrived,
        peer,
        trusted: conn.trusted,
        bytes,
        grpc: false,
    };
    let mut running = match conn.router.dispatch(
        incoming,
        now,
        Some(Origin {
            slots: &conn.slots,
            memory: &conn.memory,
        }),
    ) {
        Dispatch::Answered(reply) => {
            send_reply(reply, out);
            return false;
        }
        Dispatch::Run(running) => running,
    };
    // Most handlers finish on their first poll: answer those right here, in this read's
    // batch, with no task, timer or cancel bookkeeping. Only handlers that wait get them.
    if let Poll::Ready(reply) = std::future::poll_fn(|cx| Poll::Ready(running.poll_once(cx))).await
    {
        send_reply(reply, &mut batch.out);
        batch.spent = Some(running);
        return true;
    }
    let token = running.cancel_token().clone();
    let key = if wants_reply {
        Key::Request(request_id)
    } else {
        Key::Oneway(conn.oneways.fetch_add(1, Ordering::Relaxed))
    };
    if let Ok(mut map) = conn.in_flight.lock() {
        map.insert(key, token);
        conn.tasks.store(map.len(), Ordering::Release);
    }
    let conn = conn.clone();
    tokio::spawn(async move {
        running
            .finish(|reply| {
                if reply.send {
                    let mut frame = Vec::with_capacity(64 + reply.body.len());
                    reply.encode(&mut frame);
                    conn.outbox.push(frame);
                }
            })
            .await;
        if let Ok(mut map) = conn.in_flight.lock() {
            map.remove(&key);
            conn.tasks.store(map.len(), Ordering::Release);
            if map.is_empty() {
                conn.idle.notify_waiters();
            }
        }
    });
    true
}

fn send_reply(reply: Answer, out: &mut Vec<u8>) {
    if reply.send {
        reply.encode(out);
    }
}
