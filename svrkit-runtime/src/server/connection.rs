//! One server-side connection: pure I/O around the router.
//!
//! The reader reads whatever has arrived into a buffer charged against the server's input
//! budget, splits it into frames, stamps them with the time they were read, and hands each to
//! the router; requests that finish on their first poll are answered in the same write,
//! the others move to tasks. The outbox writes the replies. The reader stops reading while
//! the client is not reading its replies, and the connection ends (cancelling everything it
//! had in flight) when the client hangs up, breaks the framing, stalls mid-frame or idles.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::Notify;

use super::Shared;
use super::outbox::Outbox;
use super::router::{Dispatch, Incoming, Origin, Reply, Router};
use super::stream::{ReadHalf, Stream};
use crate::frame::{self, Frame, FrameKind, FrameReader, Header, Read};
use crate::monitor;
use crate::status::Status;
use crate::sync::{self, Cancel, Share, Slots};

/// Smallest step a read buffer grows by.
const READ_STEP: usize = 8 * 1024;
/// What a connection's read buffer may hold without drawing on the server's input budget:
/// enough for small frames, so that ordinary requests never wait for a budget that large
/// frames (or stalled ones) hold.
const FREE_BUFFER: usize = 2 * READ_STEP;
/// The most a batch of replies is sized for up front.
const MAX_BATCH_HINT: usize = 64 * 1024;
/// How long the reader runs handlers inline before it lets other connections' readers run.
const TIME_SLICE: Duration = Duration::from_millis(2);
/// How long a read's handlers may run for their replies to be written at once. Past that
/// they go out once the reader waits for input again: bytes the reader then finds without
/// waiting are dated halfway since its last read, and a client's answer to a reply written
/// early would look that old.
const WRITE_AT_ONCE_WITHIN: Duration = Duration::from_millis(1);

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

pub(super) async fn run(
    shared: Arc<Shared>,
    stream: Stream,
    peer: Option<SocketAddr>,
    trusted: bool,
) {
    let router = shared.router.clone();
    let limits = &router.limits;
    let (mut reader, writer) = stream.split();
    let memory = shared.input.share();
    let (outbox, write_task) = Outbox::start(
        writer,
        limits.max_unsent_per_connection,
        limits.write_timeout,
        memory.clone(),
    );
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
    // The methods hosted here, before anything else: clients wait for this to send oneway
    // calls on a new connection.
    // (Should the outbox be closed already, the read loop sees it at once.)
    let _ = conn.outbox.push(router.hello.to_vec());
    let mut input = Input {
        buf: BytesMut::new(),
        charge: None,
        budget: memory.clone(),
    };
    let mut frames = FrameReader::new(limits.max_frame);
    let mut stamps = Stamps::default();
    let mut last_batch = 0;
    let mut last_read = Instant::now();
    let opened = last_read;
    // Whether a call ran yet: an untrusted peer that gets none admitted (requests to
    // methods not hosted here and refused ones do not count) is closed after
    // `first_request_timeout`, so that holding connections open costs it them.
    let mut called = trusted;
    // One timer for the connection's whole life, reset only when it fires: read and idle
    // timeouts cost nothing per read.
    let mut timer = pin!(tokio::time::sleep_until(
        later(
            last_read,
            limits
                .read_timeout
                .min(limits.idle_timeout)
                .min(if trusted {
                    Duration::MAX
                } else {
                    limits.first_request_timeout
                })
        )
        .into()
    ));
    let end = 'read: loop {
        // A client that does not read its replies gets no more requests read.
        if conn.outbox.unsent() > limits.max_unsent_per_connection {
            tokio::select! {
                _ = shared.shutdown.cancelled() => break 'read End::Shutdown,
                _ = conn.outbox.room() => {}
            }
        }
        // Bytes the wait itself read (TLS reads to find out whether anything came).
        let mut got = 0;
        // Whether the reader had to wait for bytes: if not, they were already there.
        let mut parked = false;
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => break 'read End::Shutdown,
            _ = conn.outbox.closed() => break 'read End::Gone,
            ready = ready_noting_wait(&mut reader, &mut input.buf, &mut parked) => match ready {
                Ok(None) => {}
                Ok(Some(0)) | Err(_) => break 'read End::Gone,
                Ok(Some(n)) => got = n,
            },
            _ = &mut timer => {
                if !called {
                    let expires = later(opened, limits.first_request_timeout);
                    if Instant::now() >= expires {
                        break 'read End::Gone;
                    }
                }
                let timeout = if frames.in_frame(&input.buf) {
                    limits.read_timeout
                } else if conn.busy() {
                    // Waiting on handlers, whose deadlines bound them.
                    limits.idle_timeout.max(limits.max_deadline)
                } else {
                    limits.idle_timeout
                };
                let mut expires = later(last_read, timeout);
                if Instant::now() >= expires {
                    break 'read End::Gone;
                }
                if !called {
                    expires = expires.min(later(opened, limits.first_request_timeout));
                }
                timer.as_mut().reset(expires.into());
                continue;
            }
        }
        // Read everything that has arrived (up to 64 KiB), so that it is stamped with its
        // arrival time instead of waiting unstamped in the kernel while handlers run.
        let Ok(fresh) = read_arrived(&mut input, &mut reader, &frames, limits, true).await else {
            break 'read End::Gone;
        };
        // What came before the client's end of stream is still served.
        let mut hung_up = fresh.ended;
        let read = got + fresh.bytes;
        if read == 0 {
            if hung_up {
                break 'read End::Gone;
            }
            continue;
        }
        let now = Instant::now();
        // When the bytes arrived: now, if the reader waited for them. If they were already
        // there, sometime since the previous read (the reader was running handlers, or
        // waiting for a worker); halfway is the unbiased guess. Without this, a frame that
        // waited unread in the kernel behind a long batch would look fresh.
        let arrived = if parked {
            now
        } else {
            last_read + now.saturating_duration_since(last_read) / 2
        };
        last_read = now;
        stamps.read(read, arrived);
        if frames.in_frame(&input.buf) {
            // A partial frame (or an oversized one being skipped): the read timeout applies
            // from now.
            let expires = later(arrived, limits.read_timeout);
            if timer.deadline() > expires.into() {
                timer.as_mut().reset(expires.into());
            }
        }
        // Answers to requests handled inline go out together: one write per read.
        // Sized like the last batch, so that a steady load does not grow it by doubling.
        let mut out = Vec::with_capacity(last_batch);
        let mut slice = arrived;
        let broken = loop {
            let before = input.buf.len();
            let decoded = frames.decode(&mut input.buf);
            // The read that completed the frame is when it arrived.
            let arrived = stamps.consume(before - input.buf.len(), arrived);
            let read = match decoded {
                Ok(Some(read)) => read,
                Ok(None) => break false,
                // Not svrkit or a broken header: nothing more on this stream can be trusted.
                // Only this connection closes, after answering what came before.
                Err(_) => {
                    monitor::count(&monitor::process().frame_errors);
                    break true;
                }
            };
            let now = Instant::now();
            match read {
                Read::Frame(frame) if frame.header.kind.name().is_none() => {
                    // A kind from no version of the protocol this server speaks: the peer
                    // is broken or speaks something else, and what it sends next cannot be
                    // trusted. (A new kind will be sent only to servers that said they
                    // know it.)
                    let what = format!("a frame of unknown kind {}", frame.header.kind.0);
                    monitor::note_unknown(monitor::Unknown::Frame, peer, &what);
                    break true;
                }
                Read::Frame(frame) => {
                    // Requests hold input budget while they run; control frames never wait.
                    let kind = frame.header.kind;
                    let request = kind == FrameKind::REQUEST || kind == FrameKind::ONEWAY;
                    let charge = if request {
                        input.take(frame.body.len() + frame::PREFIX_LEN)
                    } else {
                        Ok(None)
                    };
                    match charge {
                        Ok(bytes) => {
                            called |=
                                handle(&conn, frame, bytes, arrived, now, peer, &mut out).await;
                        }
                        Err(()) if frame.header.kind == FrameKind::REQUEST => {
                            let status = Status::overloaded(
                                "the server's memory budget for requests is spent",
                            );
                            reply_now(frame.header.request_id, status, &mut out);
                        }
                        Err(()) => {}
                    }
                }
                Read::Oversized { header, len } => {
                    monitor::count(&monitor::process().oversized);
                    if header.kind == FrameKind::REQUEST {
                        let status = Status::too_large(format!(
                            "request of {len} bytes exceeds the server's frame limit of {} bytes",
                            limits.max_frame
                        ));
                        reply_now(header.request_id, status, &mut out);
                    }
                }
            }
            // Handlers that compute without awaiting must not starve other connections.
            if now.duration_since(slice) >= TIME_SLICE {
                if !out.is_empty() && !conn.outbox.push_later(std::mem::take(&mut out)) {
                    break 'read End::Gone;
                }
                tokio::task::yield_now().await;
                slice = Instant::now();
                // Take in what arrived meanwhile (if the budget allows without waiting): left
                // in the kernel, requests would wait with their queue time uncounted and run
                // after their callers gave up.
                // (Not for a client that is not reading its replies.)
                if !hung_up && conn.outbox.unsent() <= limits.max_unsent_per_connection {
                    match read_arrived(&mut input, &mut reader, &frames, limits, false).await {
                        Ok(fresh) => {
                            stamps.read(fresh.bytes, slice);
                            hung_up = fresh.ended;
                        }
                        Err(Gone) => hung_up = true,
                    }
                }
            }
        };
        last_batch = out.len().min(MAX_BATCH_HINT);
        let pushed = if out.is_empty() {
            true
        } else if now.elapsed() < WRITE_AT_ONCE_WITHIN {
            conn.outbox.push(out)
        } else {
            conn.outbox.push_later(out)
        };
        if !pushed {
            break 'read End::Gone;
        }
        if broken || hung_up {
            break 'read End::Gone;
        }
        input.release_if_empty();
    };
    match end {
        End::Shutdown => {
            let mut goaway = Vec::new();
            let header = Header {
                kind: FrameKind::GOAWAY,
                ..Header::default()
            };
            frame::encode(&header, &[], &mut goaway);
            conn.outbox.push(goaway);
            drain(&conn, limits.shutdown_grace).await;
        }
        // Nobody will read the answers: stop the handlers, and the calls they made.
        End::Gone => conn.cancel_all(),
    }
    drop(input);
    drop(conn);
    let _ = write_task.await;
}

/// The stream broke, or the input budget stayed spent past the read timeout.
struct Gone;

/// What [`read_arrived`] read.
struct Fresh {
    bytes: usize,
    /// The client ended its stream after these bytes.
    ended: bool,
}

/// [`ReadHalf::ready`], noting in `parked` whether it had to wait.
async fn ready_noting_wait(
    reader: &mut ReadHalf,
    buf: &mut BytesMut,
    parked: &mut bool,
) -> std::io::Result<Option<usize>> {
    let mut ready = pin!(reader.ready(buf));
    std::future::poll_fn(|cx| {
        let poll = ready.as_mut().poll(cx);
        *parked |= poll.is_pending();
        poll
    })
    .await
}

/// Reads what has arrived, up to 64 KiB, without waiting for more. With `wait` it may wait
/// (up to the read timeout) for input budget to grow the buffer; without, it stops where the
/// budget does.
async fn read_arrived(
    input: &mut Input,
    reader: &mut ReadHalf,
    frames: &FrameReader,
    limits: &super::Limits,
    wait: bool,
) -> Result<Fresh, Gone> {
    let mut read = 0;
    let fresh = |bytes, ended| Ok(Fresh { bytes, ended });
    loop {
        match input
            .make_room(frames.missing(&input.buf), limits, wait)
            .await
        {
            Room::Made => {}
            Room::NoBudget => return fresh(read, false),
            Room::TimedOut => return Err(Gone),
        }
        let spare = input.buf.capacity() - input.buf.len();
        match reader.try_read_buf(&mut input.buf) {
            Ok(0) => return fresh(read, true),
            // A read that did not fill the buffer took all there was: one read per wakeup,
            // so requests gather into batches instead of costing a syscall each.
            Ok(n) if n < spare => return fresh(read + n, false),
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return fresh(read, false),
            Err(_) => return Err(Gone),
        }
        if read >= READ_STEP * 8 {
            return fresh(read, false);
        }
    }
}

/// Reads a connection remembers the times of; later ones merge into the last.
const MAX_STAMPS: usize = 64;

/// When the bytes in the read buffer arrived: one time per read, so that each frame is
/// stamped with the read that completed it.
///
/// At most [`MAX_STAMPS`] reads are remembered: a frame trickling in a byte per read would
/// otherwise cost an entry per byte. Past that, a read's time replaces the last one's, which
/// stamps the frames that ended in both with the later time (a queue wait counted short, never
/// long).
#[derive(Default)]
struct Stamps {
    /// Bytes read in all up to the end of each read not yet consumed, and when.
    reads: VecDeque<(u64, Instant)>,
    read: u64,
    consumed: u64,
}

impl Stamps {
    fn read(&mut self, n: usize, at: Instant) {
        if n > 0 {
            self.read += n as u64;
            let full = self.reads.len() >= MAX_STAMPS;
            match self.reads.back_mut() {
                Some(last) if full => *last = (self.read, at),
                _ => self.reads.push_back((self.read, at)),
            }
        }
    }

    /// When the frame that ended `n` bytes further on arrived (`or` if no read is recorded).
    fn consume(&mut self, n: usize, or: Instant) -> Instant {
        self.consumed += n as u64;
        while self
            .reads
            .front()
            .is_some_and(|&(end, _)| end < self.consumed)
        {
            self.reads.pop_front();
        }
        let at = self.reads.front().map_or(or, |&(_, at)| at);
        if self
            .reads
            .front()
            .is_some_and(|&(end, _)| end == self.consumed)
        {
            self.reads.pop_front();
        }
        at
    }
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

fn reply_now(request_id: u64, status: Status, out: &mut Vec<u8>) {
    let header = Header {
        kind: FrameKind::RESPONSE,
        request_id,
        status_code: status.code().0,
        status_message: status.message().to_owned().into(),
        ..Header::default()
    };
    frame::encode(&header, &[], out);
}

/// Acts on one frame from the peer, answering into `out` what is answered at once. Whether
/// it started a call (admitted, to a method hosted here): what ends an untrusted
/// connection's first-request timeout.
async fn handle(
    conn: &Arc<Conn>,
    frame: Frame,
    bytes: Option<sync::Bytes>,
    arrived: Instant,
    now: Instant,
    peer: Option<SocketAddr>,
    out: &mut Vec<u8>,
) -> bool {
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
        peer,
        trusted: conn.trusted,
        bytes,
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
        send_reply(reply, out);
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

fn send_reply(reply: Reply, out: &mut Vec<u8>) {
    if reply.send {
        reply.encode(out);
    }
}

/// What [`Input::make_room`] managed.
enum Room {
    Made,
    /// The budget is spent and waiting was not allowed.
    NoBudget,
    /// The budget stayed spent for the read timeout.
    TimedOut,
}

/// The read buffer, charged against the server-wide input budget.
struct Input {
    buf: BytesMut,
    /// Budget held for the buffer's memory.
    charge: Option<sync::Bytes>,
    budget: Arc<Share>,
}

impl Input {
    fn charged(&self) -> usize {
        self.charge.as_ref().map_or(0, sync::Bytes::len)
    }

    /// Makes room for the next read, growing the buffer by what has arrived (never by what a
    /// prefix announces) and taking the budget for it first, waiting for it (up to the read
    /// timeout) only if `wait`.
    async fn make_room(&mut self, missing: usize, limits: &super::Limits, wait: bool) -> Room {
        let spare = self.buf.capacity() - self.buf.len();
        let need = if missing == 0 {
            READ_STEP / 2
        } else {
            missing.min(READ_STEP)
        };
        if spare >= need {
            return Room::Made;
        }
        // A large frame's buffer doubles as its bytes arrive, up to what the frame needs:
        // at most about twice what came. Otherwise (whole frames, or no prefix yet) it grows
        // by one step: reads fill the room there is, and room doubled on every read would
        // take in megabytes of frames at once.
        let step = missing.min(self.buf.len().max(READ_STEP)).max(READ_STEP);
        let size = self.buf.len() + step;
        // A large frame leaves with the buffer's allocation and charge when it is split off:
        // its allocation is charged in full, so that its charge is what it holds.
        let want = if self.buf.len() + missing > frame::COPY_ABOVE {
            size
        } else {
            size.saturating_sub(FREE_BUFFER)
        };
        if want > self.charged() {
            let more = want - self.charged();
            let permit = match self.budget.try_take(more) {
                Some(permit) => permit,
                None if !wait => return Room::NoBudget,
                None => {
                    match tokio::time::timeout(limits.read_timeout, self.budget.take(more)).await {
                        Ok(permit) => permit,
                        Err(_) => return Room::TimedOut,
                    }
                }
            };
            match &mut self.charge {
                Some(charge) => charge.merge(permit),
                None => self.charge = Some(permit),
            }
        }
        // Room in the allocation the buffer has (before frames split off it) is reused; past
        // that the buffer moves to an allocation of exactly the size charged. (`reserve`
        // would double the whole allocation, frames already consumed included, which the
        // charge cannot see: a stream of frames refused as they come grew it to megabytes.)
        if !self.buf.try_reclaim(step) {
            let mut fresh = BytesMut::with_capacity(size);
            fresh.extend_from_slice(&self.buf);
            self.buf = fresh;
        }
        Room::Made
    }

    /// The budget a request taken out of the buffer holds until it ends. A large frame was
    /// split off without copying, so it takes the buffer's whole charge with its memory, and
    /// at least its length: the buffer's first [`FREE_BUFFER`] bytes were not charged, and a
    /// request charged less than it holds would be replaced, when it ends, by a reply charged
    /// in full. A small one was copied and is charged for its length. `Err` when the budget
    /// is spent: the request is refused rather than held.
    fn take(&mut self, len: usize) -> Result<Option<sync::Bytes>, ()> {
        if len > frame::COPY_ABOVE {
            let mut held = match self.charge.take() {
                Some(held) => held,
                None => self.budget.charge(0),
            };
            if held.len() < len {
                held.merge(self.budget.charge(len - held.len()));
            }
            return Ok(Some(held));
        }
        self.budget.try_take(len).map(Some).ok_or(())
    }

    /// Gives the buffer's memory (and its budget) back between bursts: idle connections cost
    /// almost nothing.
    fn release_if_empty(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
            self.charge = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A large frame split off the buffer holds a charge of at least its length (the
    /// buffer's uncharged first bytes leave with it), so that the reply replacing it when it
    /// ends does not add to the budget.
    #[tokio::test]
    async fn a_large_frame_is_charged_at_least_its_length() {
        let budget = sync::Budget::new(64 << 20);
        let mut input = Input {
            buf: BytesMut::new(),
            charge: None,
            budget: budget.share(),
        };
        let limits = super::super::Limits::default();
        let len = 100 << 10;
        while input.buf.len() < len {
            let missing = len - input.buf.len();
            assert!(matches!(
                input.make_room(missing, &limits, false).await,
                Room::Made
            ));
            let room = (input.buf.capacity() - input.buf.len()).min(missing);
            input.buf.extend_from_slice(&vec![0; room]);
        }
        let frame = input.buf.split_to(len);
        let held = input.take(frame.len()).unwrap().unwrap();
        assert!(held.len() >= len, "{} charged for {len}", held.len());
    }

    #[test]
    fn a_frame_trickling_in_a_byte_per_read_costs_a_bounded_number_of_stamps() {
        let start = Instant::now();
        let mut stamps = Stamps::default();
        for i in 0..100_000u64 {
            stamps.read(1, start + Duration::from_micros(i));
        }
        assert!(
            stamps.reads.len() <= MAX_STAMPS,
            "{} stamps",
            stamps.reads.len()
        );
        // The frame is stamped with the last read, the one that completed it.
        let last = start + Duration::from_micros(99_999);
        assert_eq!(stamps.consume(100_000, start), last);
        assert!(stamps.reads.is_empty());
    }

    #[test]
    fn each_frame_is_stamped_with_the_read_that_completed_it() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut stamps = Stamps::default();
        // Frames of 10 bytes; reads of 15, 5 and 10 bytes.
        stamps.read(15, at(1));
        stamps.read(5, at(2));
        stamps.read(10, at(3));
        assert_eq!(stamps.consume(10, start), at(1));
        assert_eq!(stamps.consume(10, start), at(2));
        assert_eq!(stamps.consume(10, start), at(3));
        assert_eq!(stamps.consume(0, start), start);
    }
}
