//! One client-side connection: requests multiplexed by id, responses matched as they arrive,
//! and a keepalive that notices a peer that stopped answering without closing.
//!
//! A server starts every connection with a PONG listing the methods it hosts
//! (`Header::hosted`). A oneway call gets no answer, so a server that does not host its
//! method could only drop it; the connection refuses such a call with `UNIMPLEMENTED`
//! instead. Before the list arrives, a oneway call on a new connection waits for it (one
//! round trip, once per connection; bounded by the connect timeout). The connection opens
//! with a PING, so that an older server, which sends no list, answers a PONG without one,
//! and oneway calls then go out unchecked, as before.
//!
//! Frames normally go through the writer task, which gathers the callers made ready by one
//! batch of responses into one write. A call alone on a plain TCP connection (no other call
//! waiting for an answer, nothing queued) writes its frame itself: there is nobody to batch
//! with, and the trip through the writer task (a wakeup, and a yield for company that never
//! comes) is pure latency. Callers and the writer task take turns on the socket as
//! `socket.rs` describes, counting frames queued, so frames never interleave.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustc_hash::FxBuildHasher;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot, watch};

use super::endpoint::Health;
use super::{ChannelOptions, Protocol};
use crate::frame::{self, Frame, FrameKind, FrameReader, Header, Read};
use crate::service::MethodDescriptor;
use crate::socket::SharedSocket;
use crate::status::{Code, Status};

/// Calls awaiting their answers, by request id. The ids are this connection's own
/// (sequential), so the map hashes them with Fx: nobody can choose them to collide.
type Pending = Mutex<HashMap<u64, oneshot::Sender<Result<Frame, Status>>, FxBuildHasher>>;

/// The methods the peer said it hosts (`service_id << 16 | method_id`, sorted): `None` until
/// its first PONG, empty when it does not say.
type Hosted = Option<Arc<[u32]>>;

/// A frame for the writer.
// Boxing the header would cost every call an allocation for the sake of the rare rest of a
// frame; the channel's slots are as large as they were before it existed.
#[allow(clippy::large_enum_variant)]
enum Outgoing {
    /// Encoded there, straight into the batch it goes out in.
    Frame { header: Header, body: Bytes },
    /// Encoded already: the rest of a frame a caller began to write itself.
    Encoded(Vec<u8>),
}

impl Outgoing {
    fn control(kind: FrameKind, request_id: u64) -> Outgoing {
        Outgoing::Frame {
            header: Header {
                kind,
                request_id,
                ..Header::default()
            },
            body: Bytes::new(),
        }
    }

    fn encode(&self, batch: &mut Vec<u8>) {
        match self {
            Outgoing::Frame { header, body } => frame::encode(header, body, batch),
            Outgoing::Encoded(bytes) => batch.extend_from_slice(bytes),
        }
    }
}

/// The keepalive intervals a connection keeps (one outside is taken as the nearer bound): a
/// zero one would fire again at once for ever, and one past the clock's range cannot be set.
/// A year means no pings in practice.
pub(super) const KEEPALIVE_RANGE: (Duration, Duration) =
    (Duration::from_millis(1), Duration::from_secs(365 * 86_400));

/// Room for a frame's prefix and header when a caller encodes one itself: a request's header
/// (ids, deadline, caller, trace id) fits, so the buffer is allocated once.
const FRAME_ROOM: usize = 128;

/// The way to the writer task, shared by callers, the reader (its pings) and the writer.
struct Outbound {
    /// Frames handed to the writer task (or about to be) and not yet written.
    queued: AtomicUsize,
    /// The socket, when callers may write it themselves (plain TCP).
    direct: Option<SharedSocket>,
}

impl Outbound {
    /// Counts a frame about to be handed to the writer task: from now until it is written,
    /// no caller writes the socket itself.
    fn count_one(&self) {
        let _turn = self.direct.as_ref().and_then(SharedSocket::turn);
        self.queued.fetch_add(1, Ordering::AcqRel);
    }

    /// Hands a frame to the writer task without waiting; false if it is closed or full.
    fn try_send(&self, tx: &mpsc::Sender<Outgoing>, frame: Outgoing) -> bool {
        self.count_one();
        if tx.try_send(frame).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }
}

/// A connection to one endpoint, in the protocol its channel speaks. Cheap to share; closes
/// when the last handle is dropped.
pub(crate) enum ClientConn {
    /// svrkit frames.
    Frames(FrameConn),
    /// gRPC over HTTP/2 (`client/grpc.rs`).
    #[cfg(feature = "grpc")]
    Grpc(super::grpc::GrpcConn),
}

impl ClientConn {
    pub(crate) async fn connect(
        addr: &str,
        options: &ChannelOptions,
        health: Arc<Health>,
    ) -> std::io::Result<ClientConn> {
        match options.protocol {
            Protocol::Svrkit => FrameConn::connect(addr, options, health)
                .await
                .map(ClientConn::Frames),
            #[cfg(feature = "grpc")]
            Protocol::Grpc => super::grpc::GrpcConn::connect(addr, options, health)
                .await
                .map(ClientConn::Grpc),
            #[cfg(not(feature = "grpc"))]
            Protocol::Grpc => Err(std::io::Error::other(
                "this svrkit-runtime was built without its `grpc` feature",
            )),
        }
    }

    /// Whether new calls may use this connection.
    pub(crate) fn is_usable(&self) -> bool {
        match self {
            ClientConn::Frames(conn) => conn.is_usable(),
            #[cfg(feature = "grpc")]
            ClientConn::Grpc(conn) => conn.is_usable(),
        }
    }

    /// Sends a request and waits for its response (for oneway requests, until it is sent).
    /// Dropping the future cancels the call at the server.
    ///
    /// Header and body are lent: a frame written at once is encoded from them, and only one
    /// queued for the writer task takes copies. (A copy of the header per attempt cost every
    /// call a clone and a drop of all its fields, and one of the body an allocation: the
    /// first copy of a `Bytes` made from a `Vec` allocates its counter.) A svrkit connection
    /// sets the header's request id (a gRPC one has streams instead).
    pub(crate) async fn call(
        &self,
        method: &'static MethodDescriptor,
        header: &mut Header,
        body: &Bytes,
    ) -> Result<Frame, Status> {
        match self {
            ClientConn::Frames(conn) => {
                let _ = method;
                conn.call(header, body).await
            }
            #[cfg(feature = "grpc")]
            ClientConn::Grpc(conn) => conn.call(method, header, body).await,
        }
    }
}

/// A connection speaking svrkit frames.
pub(crate) struct FrameConn {
    tx: mpsc::Sender<Outgoing>,
    outbound: Arc<Outbound>,
    pending: Arc<Pending>,
    next_id: AtomicU64,
    /// Set when the server said GOAWAY or the connection broke or went silent: no new calls.
    closed: Arc<AtomicBool>,
    /// Why the connection ended, once it has: what later calls on it fail with.
    ended: Arc<OnceLock<Status>>,
    hosted: watch::Receiver<Hosted>,
    /// How long a oneway call waits for the peer's list of methods.
    hosted_wait: Duration,
    /// Set when a call waited that long in vain.
    hosted_waited: AtomicBool,
}

impl FrameConn {
    async fn connect(
        addr: &str,
        options: &ChannelOptions,
        health: Arc<Health>,
    ) -> std::io::Result<FrameConn> {
        let stream = tokio::time::timeout(options.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.set_nodelay(true)?;
        #[cfg(feature = "tls")]
        if let Some(tls) = &options.tls {
            let tls = tokio::time::timeout(options.connect_timeout, tls.connect(addr, stream))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            let (reader, writer) = tokio::io::split(tls);
            return Ok(FrameConn::start(
                reader,
                Writer::Boxed(Box::new(writer)),
                options,
                health,
            ));
        }
        let (reader, writer) = stream.into_split();
        Ok(FrameConn::start(
            reader,
            Writer::Tcp(writer),
            options,
            health,
        ))
    }

    /// Starts the writer and reader tasks of a connected stream.
    fn start<R>(
        reader: R,
        writer: Writer,
        options: &ChannelOptions,
        health: Arc<Health>,
    ) -> FrameConn
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::channel::<Outgoing>(4096);
        let (direct, boxed) = match writer {
            Writer::Tcp(socket) => (Some(SharedSocket::new(socket)), None),
            Writer::Boxed(writer) => (None, Some(writer)),
        };
        let outbound = Arc::new(Outbound {
            queued: AtomicUsize::new(0),
            direct,
        });
        // Answered by servers of every version: one that sends no list of methods is known
        // as such by the PONG.
        outbound.try_send(&tx, Outgoing::control(FrameKind::PING, 0));
        let (hosted_tx, hosted) = watch::channel(None);
        let pending: Arc<Pending> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(OnceLock::new());
        // The writer tells the reader when it gives up on a peer that stopped reading, so
        // that the whole connection closes (nothing else would end the reader when no call
        // waits for an answer: oneway traffic).
        let stalled = crate::sync::Cancel::new();
        tokio::spawn(write_loop(
            boxed,
            outbound.clone(),
            rx,
            options.write_timeout,
            stalled.clone(),
        ));
        tokio::spawn(
            Reader {
                pending: pending.clone(),
                closed: closed.clone(),
                ended: ended.clone(),
                tx: tx.downgrade(),
                outbound: Arc::downgrade(&outbound),
                health,
                stalled,
                max_frame: options.max_frame,
                keepalive: options.keepalive_interval,
                hosted: hosted_tx,
            }
            .run(reader),
        );
        FrameConn {
            tx,
            outbound,
            pending,
            next_id: AtomicU64::new(1),
            closed,
            ended,
            hosted,
            hosted_wait: options.connect_timeout,
            hosted_waited: AtomicBool::new(false),
        }
    }

    /// `UNIMPLEMENTED` when the peer said which methods it hosts and this is not one; waits
    /// for its word on a new connection (see the module's docs), once: a peer silent for
    /// that long (a stalled or foreign one) is not waited for again. Once the list is in,
    /// a check is a read lock and a binary search: no clone, no allocation.
    async fn check_hosted(&self, header: &Header) -> Result<(), Status> {
        if let Some(table) = &*self.hosted.borrow() {
            return hosts(table, header);
        }
        if self.hosted_waited.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut hosted = self.hosted.clone();
        match tokio::time::timeout(self.hosted_wait, hosted.wait_for(Option::is_some)).await {
            Ok(Ok(said)) => said.as_deref().map_or(Ok(()), |table| hosts(table, header)),
            // The connection ended: the send says so.
            Ok(Err(_)) => Ok(()),
            Err(_) => {
                self.hosted_waited.store(true, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    fn is_usable(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && !self.tx.is_closed()
    }

    /// Sends a request and waits for its response (for oneway requests, until it is queued).
    /// Dropping the future sends CANCEL.
    async fn call(&self, header: &mut Header, body: &Bytes) -> Result<Frame, Status> {
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        header.request_id = request_id;
        if header.kind == FrameKind::ONEWAY {
            self.check_hosted(header).await?;
            let alone = self.pending.lock().is_ok_and(|m| m.is_empty());
            self.send(header, body, alone).await?;
            return Ok(Frame {
                header: Header::default(),
                body: Bytes::new(),
            });
        }
        let (tx, rx) = oneshot::channel();
        let mut alone = false;
        if let Ok(mut m) = self.pending.lock() {
            // The reader records why it stopped before it fails the waiters (under this
            // lock): a call that comes later must not wait for an answer nobody will read.
            if let Some(why) = self.ended.get() {
                return Err(why.clone());
            }
            alone = m.is_empty();
            m.insert(request_id, tx);
        }
        let mut guard = CancelOnDrop {
            conn: self,
            request_id,
            armed: true,
        };
        self.send(header, body, alone).await?;
        let frame = rx
            .await
            .unwrap_or_else(|_| Err(Status::unavailable("the connection closed")));
        guard.armed = false;
        frame
    }

    /// Writes the frame at once when the call is `alone` and nothing is queued (see the
    /// module's docs); otherwise hands it to the writer task.
    async fn send(&self, header: &Header, body: &Bytes, alone: bool) -> Result<(), Status> {
        let outgoing = if alone && let Some(socket) = &self.outbound.direct {
            let mut frame = Vec::with_capacity(FRAME_ROOM + body.len());
            frame::encode(header, body, &mut frame);
            let Some(turn) = socket.turn() else {
                return Err(self.closing());
            };
            if self.outbound.queued.load(Ordering::Acquire) == 0 {
                if self.tx.is_closed() {
                    return Err(self.closing());
                }
                if socket.write_now(&turn, &mut frame) {
                    return Ok(());
                }
                // The rest waits for the socket, in the writer task. Nothing is queued, so
                // there is room.
                self.outbound.queued.fetch_add(1, Ordering::AcqRel);
                if self.tx.try_send(Outgoing::Encoded(frame)).is_err() {
                    self.outbound.queued.fetch_sub(1, Ordering::AcqRel);
                    return Err(self.closing());
                }
                return Ok(());
            }
            Outgoing::Encoded(frame)
        } else {
            Outgoing::Frame {
                header: header.clone(),
                body: body.clone(),
            }
        };
        self.outbound.count_one();
        self.tx.send(outgoing).await.map_err(|_| {
            self.outbound.queued.fetch_sub(1, Ordering::AcqRel);
            self.closing()
        })
    }

    fn closing(&self) -> Status {
        self.closed.store(true, Ordering::Release);
        Status::unavailable("the connection is closed")
    }
}

/// Whether the peer's list of methods has the one `header` calls; an empty list is a peer
/// that does not say, and every call goes out unchecked.
fn hosts(table: &[u32], header: &Header) -> Result<(), Status> {
    let listed = u16::try_from(header.service_id).is_ok()
        && u16::try_from(header.method_id).is_ok()
        && table
            .binary_search(&(header.service_id << 16 | header.method_id))
            .is_ok();
    if table.is_empty() || listed {
        Ok(())
    } else {
        Err(Status::unimplemented(format!(
            "the server does not host method {} of service {} (a oneway call it could only \
             drop; it may run an older version of the service)",
            header.method_id, header.service_id
        )))
    }
}

/// Sends CANCEL for a call whose future was dropped before its response arrived.
struct CancelOnDrop<'a> {
    conn: &'a FrameConn,
    request_id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Ok(mut m) = self.conn.pending.lock() {
                m.remove(&self.request_id);
            }
            let cancel = Outgoing::control(FrameKind::CANCEL, self.request_id);
            self.conn.outbound.try_send(&self.conn.tx, cancel);
        }
    }
}

/// The writing half of a connection.
enum Writer {
    /// Plain TCP: callers may write it themselves.
    Tcp(OwnedWriteHalf),
    /// TLS: written by the writer task only.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Boxed(Box<dyn AsyncWrite + Send + Unpin>),
}

/// The writer task: writes what callers queued, `writer` if the connection has no socket
/// callers may write themselves.
async fn write_loop(
    mut writer: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    outbound: Arc<Outbound>,
    mut rx: mpsc::Receiver<Outgoing>,
    write_timeout: Duration,
    stalled: crate::sync::Cancel,
) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.clear();
        first.encode(&mut batch);
        let mut frames = 1;
        // The caller that woke this writer is often one of many made ready by the same
        // batch of responses. Letting them run first turns their requests into one write
        // instead of one each, for the client's CPU and the server's.
        let mut yielded = false;
        while batch.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(more) => {
                    more.encode(&mut batch);
                    frames += 1;
                }
                Err(_) if !yielded => {
                    yielded = true;
                    tokio::task::yield_now().await;
                }
                Err(_) => break,
            }
        }
        // A peer that stops reading gets its connection closed (the queue is dropped with
        // it).
        let written = match (&mut writer, &outbound.direct) {
            // TLS may hold back ciphertext until flushed.
            (Some(writer), _) => {
                let write = async {
                    writer.write_all(&batch).await?;
                    writer.flush().await
                };
                matches!(tokio::time::timeout(write_timeout, write).await, Ok(Ok(())))
            }
            // Callers write nothing while these frames are counted in `queued`.
            (None, Some(socket)) => socket.write_all(&batch, write_timeout).await,
            (None, None) => false,
        };
        outbound.queued.fetch_sub(frames, Ordering::AcqRel);
        if !written {
            stalled.cancel();
            return;
        }
        if batch.capacity() > 256 * 1024 {
            batch = Vec::new();
        }
    }
    if let Some(writer) = &mut writer {
        let _ = writer.shutdown().await;
    }
    // A TCP socket's write side shuts down when its last handle goes.
}

/// The reading side: matches responses to waiters, and pings a silent peer while calls wait.
struct Reader {
    pending: Arc<Pending>,
    closed: Arc<AtomicBool>,
    ended: Arc<OnceLock<Status>>,
    /// Weak, so that dropping the last `FrameConn` still closes the writer.
    tx: mpsc::WeakSender<Outgoing>,
    /// Weak too: a TCP socket's write side shuts down when the last strong handle goes.
    outbound: Weak<Outbound>,
    health: Arc<Health>,
    /// Cancelled when the writer gave up on the peer.
    stalled: crate::sync::Cancel,
    max_frame: usize,
    keepalive: Duration,
    /// Set from the first PONG: the methods the peer hosts.
    hosted: watch::Sender<Hosted>,
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(self, mut reader: R) {
        let mut frames = FrameReader::new(self.max_frame);
        let mut buf = BytesMut::new();
        // Both made once, not per read: a wait made afresh for every response registered with
        // and left the signal's wait list, and an interval's tick did more than a sleep's
        // check, between the response's arrival and its caller's wakeup.
        let interval = self.keepalive.clamp(KEEPALIVE_RANGE.0, KEEPALIVE_RANGE.1);
        let keepalive = tokio::time::sleep(interval);
        tokio::pin!(keepalive);
        let stalled = self.stalled.clone();
        let stalled = async move { stalled.cancelled().await };
        tokio::pin!(stalled);
        let mut heard = false;
        let mut pinged = false;
        let why = 'read: loop {
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(8192);
            }
            tokio::select! {
                read = tokio::io::AsyncReadExt::read_buf(&mut reader, &mut buf) => match read {
                    Ok(0) | Err(_) => break 'read Status::unavailable(
                        "the connection closed before the response arrived",
                    ),
                    Ok(_) => heard = true,
                },
                _ = &mut stalled => {
                    self.health.mark_down();
                    break 'read Status::unavailable(
                        "the server stopped reading: the connection was closed at the write timeout",
                    );
                }
                _ = &mut keepalive => {
                    keepalive
                        .as_mut()
                        .reset(tokio::time::Instant::now() + interval);
                    // Anything heard since the last tick proves the peer alive. Silence while
                    // calls wait gets a PING; silence after a PING means the peer is gone (a
                    // half-open connection the kernel would take minutes to notice).
                    if std::mem::take(&mut heard) {
                        pinged = false;
                    } else if self.pending.lock().is_ok_and(|m| !m.is_empty()) {
                        if pinged {
                            self.health.mark_down();
                            break 'read Status::unavailable(format!(
                                "the server did not answer a keepalive ping within {:?}",
                                interval
                            ));
                        }
                        pinged = true;
                        if let (Some(tx), Some(outbound)) = (self.tx.upgrade(), self.outbound.upgrade()) {
                            outbound.try_send(&tx, Outgoing::control(FrameKind::PING, 0));
                        }
                    }
                    continue;
                }
            }
            loop {
                match frames.decode(&mut buf) {
                    Ok(Some(Read::Frame(frame))) => match frame.header.kind {
                        FrameKind::RESPONSE => self.answer(frame.header.request_id, Ok(frame)),
                        FrameKind::GOAWAY if frame.header.status_code != 0 => {
                            // Refused (at the server's connection cap, say): every call here
                            // gets the server's reason.
                            break 'read Status::new(
                                Code(frame.header.status_code),
                                frame.header.status_message.to_string(),
                            );
                        }
                        FrameKind::GOAWAY => self.closed.store(true, Ordering::Release),
                        FrameKind::PONG => {
                            self.hosted.send_if_modified(|hosted| {
                                let first = hosted.is_none();
                                if first {
                                    *hosted = Some(frame.header.hosted.into());
                                }
                                first
                            });
                        }
                        _ => {}
                    },
                    Ok(Some(Read::Oversized { header, len })) => self.answer(
                        header.request_id,
                        Err(Status::too_large(format!(
                            "response of {len} bytes exceeds this client's frame limit of {} bytes",
                            self.max_frame
                        ))),
                    ),
                    Ok(None) => break,
                    Err(e) => {
                        break 'read Status::unavailable(format!("broken response stream: {e}"));
                    }
                }
            }
            if buf.is_empty() && buf.capacity() > 64 * 1024 {
                buf = BytesMut::new();
            }
        };
        self.closed.store(true, Ordering::Release);
        let _ = self.ended.set(why.clone());
        // Everyone still waiting learns why the connection is gone.
        let waiters: Vec<_> = self
            .pending
            .lock()
            .map(|mut m| m.drain().collect())
            .unwrap_or_default();
        for (_, waiter) in waiters {
            let _ = waiter.send(Err(why.clone()));
        }
    }

    fn answer(&self, request_id: u64, result: Result<Frame, Status>) {
        let waiter = self
            .pending
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&request_id));
        if let Some(waiter) = waiter {
            let _ = waiter.send(result);
        }
    }
}
