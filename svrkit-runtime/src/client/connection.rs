//! One client-side connection: requests multiplexed by id, responses matched as they arrive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::frame::{self, Frame, FrameKind};
use crate::status::Status;

type Pending = Mutex<HashMap<u64, oneshot::Sender<Result<Frame, Status>>>>;

/// A connection to one endpoint. Cheap to share; closes when the last handle is dropped.
pub(crate) struct ClientConn {
    tx: mpsc::Sender<Vec<u8>>,
    pending: Arc<Pending>,
    next_id: AtomicU64,
    /// Set when the server said GOAWAY or the connection broke: no new calls.
    closed: Arc<AtomicBool>,
}

impl ClientConn {
    pub(crate) async fn connect(
        addr: &str,
        timeout: Duration,
        max_frame: usize,
    ) -> std::io::Result<ClientConn> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.set_nodelay(true)?;
        let (mut reader, mut writer) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4096);
        let pending: Arc<Pending> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));

        tokio::spawn(async move {
            let mut batch = Vec::new();
            while let Some(first) = rx.recv().await {
                batch.clear();
                batch.extend_from_slice(&first);
                while batch.len() < 64 * 1024 {
                    match rx.try_recv() {
                        Ok(more) => batch.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                if writer.write_all(&batch).await.is_err() {
                    return;
                }
            }
            let _ = writer.shutdown().await;
        });

        let (reader_pending, reader_closed) = (pending.clone(), closed.clone());
        tokio::spawn(async move {
            let decoder = frame::Decoder::new(max_frame);
            let mut buf = BytesMut::new();
            'read: loop {
                buf.reserve(8192);
                match tokio::io::AsyncReadExt::read_buf(&mut reader, &mut buf).await {
                    Ok(0) | Err(_) => break 'read,
                    Ok(_) => {}
                }
                loop {
                    match decoder.decode(&mut buf) {
                        Ok(Some(frame)) => match frame.header.kind {
                            FrameKind::RESPONSE => {
                                let waiter = reader_pending
                                    .lock()
                                    .ok()
                                    .and_then(|mut m| m.remove(&frame.header.request_id));
                                if let Some(waiter) = waiter {
                                    let _ = waiter.send(Ok(frame));
                                }
                            }
                            FrameKind::GOAWAY => reader_closed.store(true, Ordering::Release),
                            _ => {}
                        },
                        Ok(None) => break,
                        Err(_) => break 'read,
                    }
                }
            }
            reader_closed.store(true, Ordering::Release);
            // Everyone still waiting learns the connection is gone.
            let waiters: Vec<_> = reader_pending
                .lock()
                .map(|mut m| m.drain().collect())
                .unwrap_or_default();
            for (_, waiter) in waiters {
                let _ = waiter.send(Err(Status::unavailable(
                    "the connection closed before the response arrived",
                )));
            }
        });

        Ok(ClientConn {
            tx,
            pending,
            next_id: AtomicU64::new(1),
            closed,
        })
    }

    /// Whether new calls may use this connection.
    pub(crate) fn is_usable(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && !self.tx.is_closed()
    }

    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers interest in the response to `request_id`.
    pub(crate) fn expect(&self, request_id: u64) -> oneshot::Receiver<Result<Frame, Status>> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut m) = self.pending.lock() {
            m.insert(request_id, tx);
        }
        rx
    }

    /// Forgets a request (after a timeout or cancellation).
    pub(crate) fn forget(&self, request_id: u64) {
        if let Ok(mut m) = self.pending.lock() {
            m.remove(&request_id);
        }
    }

    /// Queues an encoded frame for writing.
    pub(crate) async fn send(&self, frame: Vec<u8>) -> Result<(), Status> {
        self.tx.send(frame).await.map_err(|_| {
            self.closed.store(true, Ordering::Release);
            Status::unavailable("the connection is closed")
        })
    }

    /// Queues a frame without waiting (for cancel frames sent from `Drop`).
    pub(crate) fn try_send(&self, frame: Vec<u8>) {
        let _ = self.tx.try_send(frame);
    }
}
