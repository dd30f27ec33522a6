//! The reader's side of a connection: its read buffer, charged against the server's input
//! budget, and when each frame in it arrived.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::super::Limits;
use super::super::stream::ReadHalf;
use crate::frame::{self, FrameReader};
use crate::sync::{self, Share};

/// Smallest step a read buffer grows by.
pub(super) const READ_STEP: usize = 8 * 1024;
/// What a connection's read buffer may hold without drawing on the server's input budget:
/// enough for small frames, so that ordinary requests never wait for a budget that large
/// frames (or stalled ones) hold.
pub(super) const FREE_BUFFER: usize = 2 * READ_STEP;
/// The stream broke, or the input budget stayed spent past the read timeout.
pub(super) struct Gone;

/// What [`read_arrived`] read.
pub(super) struct Fresh {
    pub(super) bytes: usize,
    /// The client ended its stream after these bytes.
    pub(super) ended: bool,
}

/// [`ReadHalf::ready`], noting in `parked` whether it had to wait.
pub(super) async fn ready_noting_wait(
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
pub(super) async fn read_arrived(
    input: &mut Input,
    reader: &mut ReadHalf,
    frames: &FrameReader,
    limits: &Limits,
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
pub(super) const MAX_STAMPS: usize = 64;

/// When the bytes in the read buffer arrived: one time per read, so that each frame is
/// stamped with the read that completed it.
///
/// At most [`MAX_STAMPS`] reads are remembered: a frame trickling in a byte per read would
/// otherwise cost an entry per byte. Past that, a read's time replaces the last one's, which
/// stamps the frames that ended in both with the later time (a queue wait counted short, never
/// long).
#[derive(Default)]
pub(super) struct Stamps {
    /// Bytes read in all up to the end of each read not yet consumed, and when.
    pub(super) reads: VecDeque<(u64, Instant)>,
    read: u64,
    consumed: u64,
}

impl Stamps {
    /// Notes `n` bytes read at `at`.
    pub(super) fn read(&mut self, n: usize, at: Instant) {
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
    pub(super) fn consume(&mut self, n: usize, or: Instant) -> Instant {
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

/// What [`Input::make_room`] managed.
pub(super) enum Room {
    Made,
    /// The budget is spent and waiting was not allowed.
    NoBudget,
    /// The budget stayed spent for the read timeout.
    TimedOut,
}

/// The read buffer, charged against the server-wide input budget.
pub(super) struct Input {
    pub(super) buf: BytesMut,
    /// Budget held for the buffer's memory.
    pub(super) charge: Option<sync::Charge>,
    pub(super) budget: Arc<Share>,
    /// Whether a large request was split off the buffer's allocation, which the buffer then
    /// shares with it (until it moves to an allocation of its own).
    pub(super) split_off: bool,
}

impl Input {
    fn charged(&self) -> usize {
        self.charge.as_ref().map_or(0, sync::Charge::len)
    }

    /// Makes room for the next read, growing the buffer by what has arrived (never by what a
    /// prefix announces) and taking the budget for it first, waiting for it (up to the read
    /// timeout) only if `wait`.
    async fn make_room(&mut self, missing: usize, limits: &Limits, wait: bool) -> Room {
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
        // Either way the allocation is the buffer's alone now (a reclaim succeeds only then).
        self.split_off = false;
        Room::Made
    }

    /// The budget a request taken out of the buffer holds until it ends. A large frame was
    /// split off without copying, so it takes the buffer's whole charge with its memory, and
    /// at least its length: the buffer's first [`FREE_BUFFER`] bytes were not charged, and a
    /// request charged less than it holds would be replaced, when it ends, by a reply charged
    /// in full. A small one was copied and is charged for its length. `Err` when the budget
    /// is spent: the request is refused rather than held.
    pub(super) fn take(&mut self, len: usize) -> Result<Option<sync::Charge>, ()> {
        if len > frame::COPY_ABOVE {
            self.split_off = true;
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

    /// Gives the buffer back now unless it is empty and worth keeping for the next read: an
    /// allocation of its own of at most [`FREE_BUFFER`] that holds none of the budget. One
    /// left behind by a large frame split off it is not: it still points into the frame's
    /// allocation (with no room left, or some), and a non-request's keeps its charge.
    pub(super) fn release_unless_reusable(&mut self) {
        let capacity = self.buf.capacity();
        if capacity == 0 || capacity > FREE_BUFFER || self.charge.is_some() || self.split_off {
            self.release_if_empty();
        }
    }

    /// Gives the buffer's memory (and its budget) back if no bytes wait in it: idle
    /// connections cost almost nothing.
    pub(super) fn release_if_empty(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
            self.charge = None;
            self.split_off = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
            split_off: false,
        };
        let limits = Limits::default();
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
