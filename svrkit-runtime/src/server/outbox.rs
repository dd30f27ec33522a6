//! A connection's outgoing side: a queue of encoded frames counted in bytes, and the writer
//! task that coalesces them into as few writes as the load allows.
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

use crate::sync::{self, Share};

/// Replies gathered into one write at most.
const MAX_BATCH: usize = 64 * 1024;

/// Encoded frames waiting to be written, counted in bytes.
///
/// The writer stops (shutting the socket down) once every handle to the outbox is dropped and
/// the queue is written, or when a write fails or times out.
pub(super) struct Outbox {
    tx: mpsc::UnboundedSender<(Vec<u8>, sync::Bytes)>,
    state: Arc<State>,
    budget: Arc<Share>,
}

/// What the writer shares with the outbox's holders.
struct State {
    queued: AtomicUsize,
    /// Signalled when the writer has written something, or stopped.
    drained: Notify,
    max: usize,
}

impl Outbox {
    /// An outbox and the writer task that empties it into `writer`.
    pub(super) fn start<W>(
        writer: W,
        max: usize,
        timeout: Duration,
        budget: Arc<Share>,
    ) -> (Arc<Outbox>, tokio::task::JoinHandle<()>)
    where
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            queued: AtomicUsize::new(0),
            drained: Notify::new(),
            max,
        });
        let task = tokio::spawn(write_loop(writer, rx, state.clone(), timeout));
        let outbox = Arc::new(Outbox { tx, state, budget });
        (outbox, task)
    }

    /// Queues frames for writing; false if the connection is closed.
    pub(super) fn push(&self, frames: Vec<u8>) -> bool {
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

    /// Completes when the writer stops.
    pub(super) async fn closed(&self) {
        self.tx.closed().await;
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

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::UnboundedReceiver<(Vec<u8>, sync::Bytes)>,
    outbox: Arc<State>,
    timeout: Duration,
) {
    let mut batch = Vec::new();
    while let Some((first, mut charge)) = rx.recv().await {
        // Everything already queued goes out in the same write; a lone buffer is written as
        // it is, without copying. The budget is given back once the bytes are written.
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
                std::mem::take(&mut batch)
            }
        };
        // TLS may hold back ciphertext until flushed (TCP's flush does nothing).
        let written = tokio::time::timeout(timeout, async {
            writer.write_all(&to_write).await?;
            writer.flush().await
        })
        .await;
        outbox.queued.fetch_sub(to_write.len(), Ordering::AcqRel);
        drop(charge);
        outbox.drained.notify_waiters();
        if to_write.capacity() <= 4 * MAX_BATCH {
            batch = to_write;
        }
        if !matches!(written, Ok(Ok(()))) {
            // The peer stopped reading or went away: close this connection only.
            break;
        }
    }
    rx.close();
    // What is still queued will never be written.
    while let Ok((frames, _charge)) = rx.try_recv() {
        outbox.queued.fetch_sub(frames.len(), Ordering::AcqRel);
    }
    outbox.drained.notify_waiters();
    let _ = writer.shutdown().await;
}
