//! A connection's outgoing side: a queue of encoded frames counted in bytes, and the writer
//! task that coalesces them into as few writes as the load allows.
//!
//! On plain TCP, frames pushed while nothing is queued are written at once by the pusher
//! (a non-blocking `send`), and only what the socket does not take goes to the writer task.
//! A reply then costs no wakeup of another task: with one call at a time, the writer task
//! is never involved. The reader already gathers the replies of one read into one push, and
//! the queue forms again as soon as the socket is full, so batching under load is kept.
//! Pushes that find bytes queued join the queue behind them, and every push decides under
//! one lock, so frames never interleave: the writer task writes only while bytes are
//! queued, a pusher only while none are.
//!
//! The queue itself never refuses a frame (a finished call must be able to hand over its
//! reply), but every byte in it is charged to the server's memory budget until it is written:
//! the same budget that request bodies and running handlers draw on, so that replies waiting
//! for a client that stopped reading make the server stop taking in requests instead of
//! growing without bound. The reader also stops reading a connection's requests while more
//! than `max_unsent_per_connection` bytes wait here, so a client that stops reading holds at
//! most that many bytes plus the replies of the calls it already had in flight (themselves
//! bounded by the budget that admitted them), and is closed once writes make no progress for
//! `write_timeout`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc};

use super::stream::WriteHalf;
use crate::socket::SharedSocket;
use crate::sync::{self, Share};

/// Replies gathered into one write at most.
const MAX_BATCH: usize = 64 * 1024;

type Queue = mpsc::UnboundedReceiver<(Vec<u8>, sync::Charge)>;

/// Encoded frames waiting to be written, counted in bytes.
///
/// The writer stops (shutting the socket down) once every handle to the outbox is dropped and
/// the queue is written, or when a write fails or times out.
pub(super) struct Outbox {
    tx: mpsc::UnboundedSender<(Vec<u8>, sync::Charge)>,
    state: Arc<State>,
    budget: Arc<Share>,
}

/// What the writer shares with the outbox's holders.
struct State {
    /// Bytes pushed to the writer task and not yet written. Raised only under the socket's
    /// turn (`socket.rs`).
    queued: AtomicUsize,
    /// Signalled when the writer has written something, or stopped.
    drained: Notify,
    max: usize,
    /// The socket, when pushers may write it themselves (plain TCP).
    direct: Option<SharedSocket>,
}

impl Outbox {
    /// An outbox and the writer task that empties it into `writer`.
    pub(super) fn start(
        writer: WriteHalf,
        max: usize,
        timeout: Duration,
        budget: Arc<Share>,
    ) -> (Arc<Outbox>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (direct, boxed) = match writer {
            WriteHalf::Tcp(socket) => (Some(SharedSocket::new(socket)), None),
            WriteHalf::Boxed(writer) => (None, Some(writer)),
        };
        let state = Arc::new(State {
            queued: AtomicUsize::new(0),
            drained: Notify::new(),
            max,
            direct,
        });
        let task = match boxed {
            Some(writer) => tokio::spawn(write_loop(writer, rx, state.clone(), timeout)),
            None => tokio::spawn(write_direct(rx, state.clone(), timeout)),
        };
        let outbox = Arc::new(Outbox { tx, state, budget });
        (outbox, task)
    }

    /// Hands frames to the writer task, which writes them once the pushing task yields;
    /// false if the connection is closed.
    ///
    /// For a reader that ran handlers for long: written at once, its replies could bring the
    /// client's next requests before it looks for input again, and they would look as if
    /// they had waited since its last read (see `connection.rs` on arrival times).
    pub(super) fn push_later(&self, frames: Vec<u8>) -> bool {
        match &self.state.direct {
            Some(socket) => socket.turn().is_some_and(|_turn| self.enqueue(frames)),
            None => self.enqueue(frames),
        }
    }

    /// Writes frames at once if nothing is queued before them (on TCP), else queues them;
    /// false if the connection is closed.
    pub(super) fn push(&self, mut frames: Vec<u8>) -> bool {
        let Some(socket) = &self.state.direct else {
            return self.enqueue(frames);
        };
        let Some(turn) = socket.turn() else {
            return false;
        };
        if self.state.queued.load(Ordering::Acquire) == 0 {
            if self.is_closed() {
                return false;
            }
            if socket.write_now(&turn, &mut frames) {
                return true;
            }
        }
        // The rest waits for the socket, in the writer task.
        self.enqueue(frames)
    }

    /// Hands frames to the writer task (under the socket's turn on TCP).
    fn enqueue(&self, frames: Vec<u8>) -> bool {
        let len = frames.len();
        let charge = self.budget.charge(frames.capacity());
        self.state.queued.fetch_add(len, Ordering::AcqRel);
        if self.tx.send((frames, charge)).is_err() {
            self.state.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Whether the writer has stopped (the peer went away or stopped reading).
    pub(super) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Completes when the writer stops. Holds its own handle, so that a reader can make the
    /// wait once and keep it.
    pub(super) fn closed(outbox: &Arc<Outbox>) -> impl Future<Output = ()> + Send + 'static {
        let outbox = outbox.clone();
        async move { outbox.tx.closed().await }
    }

    /// Waits until the unsent bytes are within the bound (or the writer stopped).
    pub(super) async fn room(&self) {
        loop {
            let drained = self.state.drained.notified();
            if self.unsent() <= self.state.max || self.is_closed() {
                return;
            }
            drained.await;
        }
    }

    /// Bytes queued and not yet written.
    pub(super) fn unsent(&self) -> usize {
        self.state.queued.load(Ordering::Acquire)
    }
}

/// Takes the next frames off the queue: everything already there, up to [`MAX_BATCH`], in
/// one buffer (a lone buffer as it is, without copying), with the budget they hold.
async fn next_batch(rx: &mut Queue, batch: &mut Vec<u8>) -> Option<(Vec<u8>, sync::Charge)> {
    let (first, mut charge) = rx.recv().await?;
    let to_write = match rx.try_recv() {
        Err(_) => first,
        Ok((second, more)) => {
            charge.merge(more);
            batch.clear();
            batch.extend_from_slice(&first);
            batch.extend_from_slice(&second);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok((frames, more)) => {
                        batch.extend_from_slice(&frames);
                        charge.merge(more);
                    }
                    Err(_) => break,
                }
            }
            std::mem::take(batch)
        }
    };
    Some((to_write, charge))
}

/// After a batch is written (or failed): its bytes leave the count, its budget is given
/// back, and its buffer is kept for the next batch unless it grew large.
fn written(outbox: &State, to_write: Vec<u8>, charge: sync::Charge, batch: &mut Vec<u8>) {
    outbox.queued.fetch_sub(to_write.len(), Ordering::AcqRel);
    drop(charge);
    outbox.drained.notify_waiters();
    if to_write.capacity() <= 4 * MAX_BATCH {
        *batch = to_write;
    }
}

/// After the writer stopped: what is still queued will never be written.
fn abandon(mut rx: Queue, outbox: &State) {
    rx.close();
    while let Ok((frames, _charge)) = rx.try_recv() {
        outbox.queued.fetch_sub(frames.len(), Ordering::AcqRel);
    }
    outbox.drained.notify_waiters();
}

/// The writer task of a TCP outbox: writes what pushers queued because bytes were queued
/// before them, or because the socket was full.
async fn write_direct(mut rx: Queue, outbox: Arc<State>, timeout: Duration) {
    let Some(socket) = &outbox.direct else {
        return;
    };
    let mut batch = Vec::new();
    while let Some((to_write, charge)) = next_batch(&mut rx, &mut batch).await {
        // No pusher writes while these bytes are counted in `queued`.
        let ok = socket.write_all(&to_write, timeout).await;
        written(&outbox, to_write, charge, &mut batch);
        if !ok {
            // The peer stopped reading or went away: close this connection only.
            break;
        }
    }
    abandon(rx, &outbox);
    // The socket's write side shuts down when the last handle to it goes.
}

async fn write_loop(
    mut writer: Box<dyn AsyncWrite + Send + Unpin>,
    mut rx: Queue,
    outbox: Arc<State>,
    timeout: Duration,
) {
    let mut batch = Vec::new();
    while let Some((to_write, charge)) = next_batch(&mut rx, &mut batch).await {
        // TLS may hold back ciphertext until flushed.
        let ok = tokio::time::timeout(timeout, async {
            writer.write_all(&to_write).await?;
            writer.flush().await
        })
        .await;
        written(&outbox, to_write, charge, &mut batch);
        if !matches!(ok, Ok(Ok(()))) {
            // The peer stopped reading or went away: close this connection only.
            break;
        }
    }
    abandon(rx, &outbox);
    let _ = writer.shutdown().await;
}
