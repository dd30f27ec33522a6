//! One server-side connection: pure I/O around the router.
//!
//! The reader reads whatever has arrived into a buffer charged against the server's input
//! budget, splits it into frames, stamps them with the time they were read, and hands each to
//! the router; requests that finish on their first poll are answered in the same write,
//! the others move to tasks. The outbox writes the replies. The reader stops reading while
//! the client is not reading its replies, and the connection ends (cancelling everything it
//! had in flight) when the client hangs up, breaks the framing, stalls mid-frame or idles.

mod frames;
mod input;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::Notify;
use tokio::time::Sleep;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::Shared;
use super::outbox::Outbox;
use super::router::Router;
use super::stream::{ReadHalf, Stream};
use crate::frame::{self, FrameKind, FrameReader, Header, Read};
use crate::metrics;
use crate::status::Status;
use crate::sync::{Cancel, Share, Slots};
use frames::{Batch, handle, reply_now};
use input::{Gone, Input, Stamps, read_arrived, ready_noting_wait};

/// The most a batch of replies is sized for up front.
const MAX_BATCH_HINT: usize = 64 * 1024;
/// How long the reader runs handlers inline before it lets other connections' readers run.
const TIME_SLICE: Duration = Duration::from_millis(2);
/// How long a read's handlers may run for their replies to be written at once. Past that
/// they go out once the reader waits for input again: bytes the reader then finds without
/// waiting are dated halfway since its last read, and a client's answer to a reply written
/// early would look that old.
const WRITE_AT_ONCE_WITHIN: Duration = Duration::from_millis(1);
/// How long a connection keeps its empty read buffer after its last read. Given back after
/// every batch, it cost a connection serving one call at a time an 8 KiB allocation and free
/// per call, before the request could be read; kept this long, a busy connection reuses it
/// while an idle one still holds none (the connection's one timer gives it back).
const KEEP_BUFFER: Duration = Duration::from_millis(100);

struct Conn {
    router: Arc<Router>,
    /// Cancellation of each call running in a task.
    in_flight: Mutex<HashMap<Key, Cancel>>,
    /// The key of the last oneway call run in a task.
    oneways: AtomicU64,
    /// How many entries `in_flight` has, read without its lock on every request.
    tasks: AtomicUsize,
    /// Requests in flight on this connection.
    slots: Arc<Slots>,
    /// The connection's share of the server's memory budget.
    memory: Arc<Share>,
    outbox: Arc<Outbox>,
    /// Signalled when the last task-run request ends.
    idle: Notify,
    /// Whether the server takes this peer's header fields at their word (`trust.rs`),
    /// decided once when it connected.
    trusted: bool,
}

impl Conn {
    fn busy(&self) -> bool {
        self.in_flight
            .lock()
            .map(|m| !m.is_empty())
            .unwrap_or(false)
    }

    fn cancel_all(&self) {
        if let Ok(map) = self.in_flight.lock() {
            for token in map.values() {
                token.cancel();
            }
        }
    }
}

/// What a call running in a task is known by on its connection.
///
/// Requests go by their id, which the client chose and a CANCEL names. Oneway calls cannot be
/// cancelled and need no id of the client's: they are numbered by the connection, so that a
/// oneway frame reusing a running request's id (or another oneway's) cannot take its place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Request(u64),
    Oneway(u64),
}

/// Why the reader stopped.
enum End {
    /// The server is shutting down: say GOAWAY, let calls in flight finish.
    Shutdown,
    /// The client hung up, broke the framing, stalled or idled; or writing failed.
    Gone,
}

/// Serves one connection, accepted at `opened`, until the client goes or the server shuts
/// down.
pub(super) async fn run(
    shared: Arc<Shared>,
    stream: Stream,
    peer: Option<SocketAddr>,
    trusted: bool,
    opened: Instant,
) {
    let (mut reader, write_task) = Reader::start(&shared, stream, peer, trusted, opened);
    let end = loop {
        if let Err(end) = reader.serve_what_arrives().await {
            break end;
        }
    };
    reader.finish(end).await;
    let _ = write_task.await;
}

/// The read side of a connection, and what it remembers between reads.
struct Reader {
    conn: Arc<Conn>,
    stream: ReadHalf,
    input: Input,
    frames: FrameReader,
    stamps: Stamps,
    peer: Option<SocketAddr>,
    /// The size of the last batch of replies.
    last_batch: usize,
    last_read: Instant,
    opened: Instant,
    /// Whether a call ran yet: an untrusted peer that gets none admitted (requests to
    /// methods not hosted here and refused ones do not count) is closed after
    /// `first_request_timeout`, so that holding connections open costs it them.
    called: bool,
    /// One timer for the connection's whole life, reset when it fires and otherwise only to
    /// bring it forward (a partial frame's read timeout, an empty buffer's `KEEP_BUFFER`),
    /// never per read: read and idle timeouts cost nothing per read.
    timer: Pin<Box<Sleep>>,
    /// The server's shutdown, waited on beside the socket. Made once for the connection:
    /// waits made afresh for every read registered with and left a wait list each, between
    /// the wakeup and the read of a request.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The outbox's closing (its writer stopped), waited on beside the socket; made once,
    /// as `shutdown` is.
    closed: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// What the reader's wait ended with.
enum Waited {
    /// Bytes are ready (`got` of them read by the wait itself, as TLS does to find out
    /// whether anything came); `parked` if the reader had to wait for them.
    Ready { got: usize, parked: bool },
    /// The timer fired early and was set again: wait again.
    Again,
}

impl Reader {
    /// Sets up the connection and its writer, and says hello.
    fn start(
        shared: &Shared,
        stream: Stream,
        peer: Option<SocketAddr>,
        trusted: bool,
        opened: Instant,
    ) -> (Reader, tokio::task::JoinHandle<()>) {
        let router = shared.router.clone();
        let limits = &router.limits;
        let (reader, writer) = stream.split();
        let memory = shared.input.share();
        let (outbox, write_task) = Outbox::start(
            writer,
            limits.max_unsent_per_connection,
            limits.write_timeout,
            memory.clone(),
        );
        let closed = Box::pin(Outbox::closed(&outbox));
        let conn = Arc::new(Conn {
            in_flight: Mutex::new(HashMap::new()),
            oneways: AtomicU64::new(0),
            tasks: AtomicUsize::new(0),
            slots: Slots::new(limits.max_in_flight_per_connection),
            memory: memory.clone(),
            outbox,
            idle: Notify::new(),
            router: router.clone(),
            trusted,
        });
        // The methods hosted here, before anything else: clients wait for this to send
        // oneway calls on a new connection.
        // (Should the outbox be closed already, the read loop sees it at once.)
        let _ = conn.outbox.push(router.hello.to_vec());
        let now = Instant::now();
        // Counted from the accept: the wait for the first byte, which told the protocol
        // apart, was part of it.
        let first = later(opened, limits.first_wait(trusted));
        let reader = Reader {
            conn,
            stream: reader,
            input: Input {
                buf: BytesMut::new(),
                charge: None,
                budget: memory,
                split_off: false,
            },
            frames: FrameReader::new(limits.max_frame),
            stamps: Stamps::default(),
            peer,
            last_batch: 0,
            last_read: now,
            opened,
            called: trusted,
            timer: Box::pin(tokio::time::sleep_until(first.into())),
            shutdown: Box::pin(shared.shutdown.clone().cancelled_owned()),
            closed,
        };
        (reader, write_task)
    }

    /// Waits for bytes, reads what has arrived, and serves the frames it completes.
    async fn serve_what_arrives(&mut self) -> Result<(), End> {
        let Waited::Ready { got, parked } = self.wait().await? else {
            return Ok(());
        };
        let Some((arrived, hung_up)) = self.take_in(got, parked).await? else {
            return Ok(());
        };
        self.serve(arrived, hung_up).await
    }

    /// Waits until bytes are ready, the client goes, the server shuts down or the timer
    /// fires.
    async fn wait(&mut self) -> Result<Waited, End> {
        let limits = &self.conn.router.limits;
        // A client that does not read its replies gets no more requests read.
        if self.conn.outbox.unsent() > limits.max_unsent_per_connection {
            tokio::select! {
                _ = &mut self.shutdown => return Err(End::Shutdown),
                _ = self.conn.outbox.room() => {}
            }
        }
        let mut got = 0;
        let mut parked = false;
        tokio::select! {
            biased;
            _ = &mut self.shutdown => return Err(End::Shutdown),
            _ = &mut self.closed => return Err(End::Gone),
            ready = ready_noting_wait(&mut self.stream, &mut self.input.buf, &mut parked) => {
                match ready {
                    Ok(None) => {}
                    Ok(Some(0)) | Err(_) => return Err(End::Gone),
                    Ok(Some(n)) => got = n,
                }
            }
            _ = &mut self.timer => {
                self.timer_fired()?;
                return Ok(Waited::Again);
            }
        }
        Ok(Waited::Ready { got, parked })
    }

    /// Ends a connection whose timeout passed: mid-frame (read timeout), idle (idle
    /// timeout, longer while handlers run) or untrusted and never served (first-request
    /// timeout). Else gives back an empty read buffer unused for `KEEP_BUFFER`, and sets the
    /// timer for the next of these.
    fn timer_fired(&mut self) -> Result<(), End> {
        let limits = &self.conn.router.limits;
        if Instant::now() >= later(self.last_read, KEEP_BUFFER) {
            self.input.release_if_empty();
        }
        if !self.called {
            let expires = later(self.opened, limits.first_request_timeout);
            if Instant::now() >= expires {
                return Err(End::Gone);
            }
        }
        let timeout = if self.frames.in_frame(&self.input.buf) {
            limits.read_timeout
        } else if self.conn.busy() {
            // Waiting on handlers, whose deadlines bound them.
            limits.idle_timeout.max(limits.max_deadline)
        } else {
            limits.idle_timeout
        };
        let mut expires = later(self.last_read, timeout);
        if Instant::now() >= expires {
            return Err(End::Gone);
        }
        if !self.called {
            expires = expires.min(later(self.opened, limits.first_request_timeout));
        }
        if self.holds_spare_buffer() {
            expires = expires.min(later(self.last_read, KEEP_BUFFER));
        }
        self.timer.as_mut().reset(expires.into());
        Ok(())
    }

    /// Whether the read buffer is allocated and empty: what [`KEEP_BUFFER`] gives back.
    fn holds_spare_buffer(&self) -> bool {
        self.input.buf.is_empty() && self.input.buf.capacity() > 0
    }

    /// Reads everything that has arrived (up to 64 KiB), so that it is stamped with its
    /// arrival time instead of waiting unstamped in the kernel while handlers run. Gives
    /// when it arrived and whether the client ended its stream after it; `None` when
    /// nothing came.
    async fn take_in(&mut self, got: usize, parked: bool) -> Result<Option<(Instant, bool)>, End> {
        let limits = &self.conn.router.limits;
        let Ok(fresh) = read_arrived(
            &mut self.input,
            &mut self.stream,
            &self.frames,
            limits,
            true,
        )
        .await
        else {
            return Err(End::Gone);
        };
        // What came before the client's end of stream is still served.
        let hung_up = fresh.ended;
        let read = got + fresh.bytes;
        if read == 0 {
            return if hung_up { Err(End::Gone) } else { Ok(None) };
        }
        let now = Instant::now();
        // When the bytes arrived: now, if the reader waited for them. If they were already
        // there, sometime since the previous read (the reader was running handlers, or
        // waiting for a worker); halfway is the unbiased guess. Without this, a frame that
        // waited unread in the kernel behind a long batch would look fresh.
        let arrived = if parked {
            now
        } else {
            self.last_read + now.saturating_duration_since(self.last_read) / 2
        };
        self.last_read = now;
        self.stamps.read(read, arrived);
        if self.frames.in_frame(&self.input.buf) {
            // A partial frame (or an oversized one being skipped): the read timeout applies
            // from now.
            let expires = later(arrived, limits.read_timeout);
            if self.timer.deadline() > expires.into() {
                self.timer.as_mut().reset(expires.into());
            }
        }
        Ok(Some((arrived, hung_up)))
    }

    /// Serves every whole frame in the buffer, answering the requests that finish on their
    /// first poll in one write.
    async fn serve(&mut self, arrived: Instant, mut hung_up: bool) -> Result<(), End> {
        // Borrowed, not cloned: this runs once per read, on every call's path.
        let conn = &self.conn;
        let limits = &conn.router.limits;
        // Answers to requests handled inline go out together: one write per read.
        // Sized like the last batch, so that a steady load does not grow it by doubling.
        let mut batch = Batch {
            out: Vec::with_capacity(self.last_batch),
            spent: None,
        };
        let mut slice = arrived;
        let broken = loop {
            let before = self.input.buf.len();
            let decoded = self.frames.decode(&mut self.input.buf);
            // The read that completed the frame is when it arrived.
            let arrived = self.stamps.consume(before - self.input.buf.len(), arrived);
            let read = match decoded {
                Ok(Some(read)) => read,
                Ok(None) => break false,
                // Not svrkit or a broken header: nothing more on this stream can be trusted.
                // Only this connection closes, after answering what came before.
                Err(_) => {
                    metrics::count(&metrics::process().frame_errors);
                    break true;
                }
            };
            let now = Instant::now();
            let (input, called) = (&mut self.input, &mut self.called);
            if !serve_frame(
                conn, input, called, self.peer, read, arrived, now, &mut batch,
            )
            .await
            {
                break true;
            }
            // Handlers that compute without awaiting must not starve other connections.
            if now.duration_since(slice) >= TIME_SLICE {
                let out = std::mem::take(&mut batch.out);
                if !out.is_empty() && !conn.outbox.push_later(out) {
                    return Err(End::Gone);
                }
                // Its reply is handed over: the last call's permits must not be held through
                // the yield, while other connections run.
                batch.spent = None;
                tokio::task::yield_now().await;
                slice = Instant::now();
                // Take in what arrived meanwhile (if the budget allows without waiting): left
                // in the kernel, requests would wait with their queue time uncounted and run
                // after their callers gave up.
                // (Not for a client that is not reading its replies.)
                if !hung_up && conn.outbox.unsent() <= limits.max_unsent_per_connection {
                    match read_arrived(
                        &mut self.input,
                        &mut self.stream,
                        &self.frames,
                        limits,
                        false,
                    )
                    .await
                    {
                        Ok(fresh) => {
                            self.stamps.read(fresh.bytes, slice);
                            hung_up = fresh.ended;
                        }
                        Err(Gone) => hung_up = true,
                    }
                }
            }
        };
        let Batch { out, spent } = batch;
        self.last_batch = out.len().min(MAX_BATCH_HINT);
        let pushed = if out.is_empty() {
            true
        } else if self.last_read.elapsed() < WRITE_AT_ONCE_WITHIN {
            conn.outbox.push(out)
        } else {
            conn.outbox.push_later(out)
        };
        drop(spent);
        if !pushed || broken || hung_up {
            return Err(End::Gone);
        }
        // An ordinary empty buffer is kept for the next read, and given back once the
        // connection has been quiet for `KEEP_BUFFER`: the timer is brought forward to then
        // if it was set later (once per quiet spell, not per read: while reads keep coming
        // it fires first, and is set again from the last read). Any other is given back at
        // once (see `Input::release_unless_reusable`).
        self.input.release_unless_reusable();
        if self.holds_spare_buffer() {
            let release = later(self.last_read, KEEP_BUFFER).into();
            if self.timer.deadline() > release {
                self.timer.as_mut().reset(release);
            }
        }
        Ok(())
    }

    /// Says GOAWAY and lets the calls in flight finish (shutdown), or cancels them (the
    /// client went: nobody will read the answers).
    async fn finish(self, end: End) {
        match end {
            End::Shutdown => {
                let mut goaway = Vec::new();
                let header = Header {
                    kind: FrameKind::GOAWAY,
                    ..Header::default()
                };
                frame::encode(&header, &[], &mut goaway);
                self.conn.outbox.push(goaway);
                drain(&self.conn, self.conn.router.limits.shutdown_grace).await;
            }
            End::Gone => self.conn.cancel_all(),
        }
    }
}

/// Acts on one frame read; `false` when the connection must close (a frame of a kind no
/// version of the protocol has). A function rather than a `Reader` method, so that `serve`
/// lends it the reader's parts instead of cloning the connection on every read.
#[allow(clippy::too_many_arguments)]
async fn serve_frame(
    conn: &Arc<Conn>,
    input: &mut Input,
    called: &mut bool,
    peer: Option<SocketAddr>,
    read: Read,
    arrived: Instant,
    now: Instant,
    batch: &mut Batch,
) -> bool {
    let out = &mut batch.out;
    match read {
        Read::Frame(frame) if frame.header.kind.name().is_none() => {
            // A kind from no version of the protocol this server speaks: the peer is
            // broken or speaks something else, and what it sends next cannot be trusted.
            // (A new kind will be sent only to servers that said they know it.)
            let what = format!("a frame of unknown kind {}", frame.header.kind.0);
            metrics::note_unknown(metrics::Unknown::Frame, peer, &what);
            return false;
        }
        Read::Frame(frame) => {
            // Requests hold input budget while they run; control frames never wait.
            let kind = frame.header.kind;
            let request = kind == FrameKind::REQUEST || kind == FrameKind::ONEWAY;
            if request {
                // The last call answered inline gives its permits (its slots, and its share
                // of the memory budget) back before this request takes its own, as it would
                // have had it been dropped at once (`Batch::spent`).
                batch.spent = None;
            }
            let charge = if request {
                input.take(frame.body.len() + frame::PREFIX_LEN)
            } else {
                Ok(None)
            };
            match charge {
                Ok(bytes) => {
                    *called |= handle(conn, frame, bytes, arrived, now, peer, batch).await;
                }
                Err(()) if kind == FrameKind::REQUEST => {
                    let status =
                        Status::overloaded("the server's memory budget for requests is spent");
                    reply_now(frame.header.request_id, status, out);
                }
                Err(()) => {}
            }
        }
        Read::Oversized { header, len } => {
            metrics::count(&metrics::process().oversized);
            if header.kind == FrameKind::REQUEST {
                let status = Status::too_large(format!(
                    "request of {len} bytes exceeds the server's frame limit of {} bytes",
                    conn.router.limits.max_frame
                ));
                reply_now(header.request_id, status, out);
            }
        }
    }
    true
}

/// `t + d`, where a `d` too large for the clock (`Duration::MAX` for "never") means a
/// century rather than a panic.
fn later(t: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    t.checked_add(d.min(CENTURY)).unwrap_or(t)
}

/// Waits (up to `grace`) for the requests in flight to be answered.
async fn drain(conn: &Conn, grace: Duration) {
    let _ = tokio::time::timeout(grace, async {
        loop {
            let idle = conn.idle.notified();
            if !conn.busy() {
                return;
            }
            idle.await;
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::Server;

    /// A PING with a body (which the server ignores): a frame of any size that is not a
    /// request, so that its bytes are handed to no call.
    fn ping(body: &[u8]) -> Vec<u8> {
        let header = Header {
            kind: FrameKind::PING,
            ..Header::default()
        };
        let mut out = Vec::new();
        frame::encode(&header, body, &mut out);
        out
    }

    /// A server's reader for one connection, and the client's end of it.
    async fn reader_and_client() -> (Reader, TcpStream, Server) {
        let server = Server::builder().build();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let (reader, _writer) = Reader::start(
            &server.shared,
            Stream::Tcp(accepted),
            None,
            true,
            Instant::now(),
        );
        (reader, client, server)
    }

    /// The read buffer outlives a batch (a connection with one call at a time would
    /// otherwise allocate and free it for every call) and is given back once the
    /// connection has been quiet for `KEEP_BUFFER` (so that idle connections hold none).
    #[tokio::test]
    async fn a_busy_connection_keeps_its_read_buffer_and_a_quiet_one_gives_it_back() {
        let (mut reader, mut client, _server) = reader_and_client().await;
        for _ in 0..2 {
            client.write_all(&ping(&[])).await.unwrap();
            assert!(reader.serve_what_arrives().await.is_ok());
            assert!(reader.input.buf.is_empty(), "the ping was served");
            assert!(
                reader.input.buf.capacity() > 0,
                "the buffer is kept between batches"
            );
        }
        let last_read = reader.last_read;
        tokio::time::timeout(Duration::from_secs(10), async {
            while reader.input.buf.capacity() > 0 {
                assert!(reader.serve_what_arrives().await.is_ok());
            }
        })
        .await
        .expect("the buffer is given back");
        assert!(
            last_read.elapsed() >= KEEP_BUFFER,
            "not before it was quiet that long"
        );
    }

    /// A buffer a large frame was split off is given back (with its charge) at once, not
    /// kept as an ordinary one is: it still points into the frame's allocation. For a
    /// request, whose call takes the charge, as for any other frame.
    #[tokio::test]
    async fn the_buffer_a_large_frame_left_is_given_back_at_once() {
        let body = vec![7; 4 * frame::COPY_ABOVE];
        let request = Header {
            kind: FrameKind::REQUEST,
            request_id: 1,
            service_id: 4242,
            ..Header::default()
        };
        let mut large_request = Vec::new();
        frame::encode(&request, &body, &mut large_request);
        for large in [ping(&body), large_request] {
            served_whole(&large).await;
        }
    }

    async fn served_whole(large: &[u8]) {
        let (mut reader, mut client, _server) = reader_and_client().await;
        client.write_all(large).await.unwrap();
        let opened = reader.last_read;
        // Until the whole frame was read and served.
        loop {
            assert!(reader.serve_what_arrives().await.is_ok());
            if reader.last_read > opened && !reader.frames.in_frame(&reader.input.buf) {
                break;
            }
        }
        assert!(reader.input.charge.is_none(), "its charge went with it");
        assert_eq!(reader.input.buf.capacity(), 0);
    }
}
