//! Frames: how requests and responses travel over a byte stream.
//!
//! ```text
//! +------+------+---------+----------+---------------+-------------+--------+------+
//! | 0x53 | 0x4b | version | reserved | header length | body length | header | body |
//! |  'S' |  'K' |   u8    |    u8    |    u32 BE     |   u32 BE    |  TLV   |      |
//! +------+------+---------+----------+---------------+-------------+--------+------+
//! ```
//!
//! The 12-byte prefix has a fixed layout in every version, so a reader can reject garbage
//! (wrong magic) or an oversized frame before it allocates anything. The header is a
//! [`Header`] message in svrkit's own TLV encoding, so fields can be added later and peers
//! ignore the ones they do not know; the body is the request or response struct, encoded.
//! The byte-by-byte description, with an example that a test checks, is `docs/protocol.md`.

// Generated and checked in; a test keeps it equal to the generator's output.
#[rustfmt::skip]
mod header;

use bytes::{Buf, Bytes, BytesMut};

use crate::codec::{DecodeError, Message};
pub use header::{FrameKind, Header};

/// `"SK"`: the first two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"SK";
/// The frame format version this build writes. Readers accept any version: the prefix never
/// changes layout, and header fields are added compatibly.
pub const VERSION: u8 = 1;
/// Bytes before the header.
pub const PREFIX_LEN: usize = 12;
/// Default largest frame (header plus body) a peer accepts: 4 MiB, as gRPC's default. With
/// the codec's [`DECODE_FACTOR`](crate::codec::DECODE_FACTOR) it bounds what one request can
/// make a server allocate.
pub const DEFAULT_MAX_FRAME: usize = 4 << 20;

/// A decoded frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// What the frame is and where it goes.
    pub header: Header,
    /// The encoded request or response.
    pub body: Bytes,
}

/// Why a byte stream is not a valid sequence of frames. Any of these ends the connection.
#[derive(Debug)]
pub enum FrameError {
    /// The stream does not start with `"SK"`: not an svrkit peer.
    BadMagic([u8; 2]),
    /// Header and body together exceed the limit.
    TooLarge {
        /// Bytes announced.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The header could not be decoded.
    Header(DecodeError),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // A TLS record (handshake or alert, version 3.x): the likely mistake is TLS on
            // one side only.
            FrameError::BadMagic([0x15 | 0x16, 0x03]) => f.write_str(
                "not an svrkit frame but TLS: the peer speaks TLS and this side does not",
            ),
            // HTTP/1 (`HTTP/1.1 400`, or a request: `GET `, `POST`, ...) or HTTP/2's
            // preface (`PRI `): an admin or web port where an RPC port was meant.
            FrameError::BadMagic([b'H', b'T'] | [b'G', b'E'] | [b'P', b'O'] | [b'P', b'R']) => f
                .write_str(
                    "not an svrkit frame but HTTP: the peer is an HTTP server (an admin or web \
                     port?), not an svrkit service",
                ),
            FrameError::BadMagic(m) => write!(
                f,
                "not an svrkit frame (starts with {m:02x?}, expected \"SK\")"
            ),
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max}")
            }
            FrameError::Header(e) => write!(f, "bad frame header: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// The largest header a reader accepts, whatever its frame limit: a header is ids, a deadline
/// and a little metadata, never bulk data.
pub const MAX_HEADER: usize = 64 << 10;

/// Appends one frame to `buf`.
///
/// The caller checks the size against the peer's limit first ([`check_len`]); a body over
/// `u32::MAX` bytes cannot be framed at all and panics here rather than being truncated.
pub fn encode(header: &Header, body: &[u8], buf: &mut Vec<u8>) {
    let body_len = u32::try_from(body.len()).expect("frame body over 4 GiB");
    let start = buf.len();
    buf.extend_from_slice(&[MAGIC[0], MAGIC[1], VERSION, 0, 0, 0, 0, 0]);
    buf.extend_from_slice(&body_len.to_be_bytes());
    header.encode_raw(buf);
    let header_len = (buf.len() - start - PREFIX_LEN) as u32;
    buf[start + 4..start + 8].copy_from_slice(&header_len.to_be_bytes());
    buf.extend_from_slice(body);
}

/// Appends one frame whose body is `body` encoded, without an intermediate buffer.
///
/// # Panics
/// If the body encodes to more than `u32::MAX` bytes; check [`check_len`] first.
pub fn encode_message<M: Message>(header: &Header, body: &M, buf: &mut Vec<u8>) {
    let start = buf.len();
    buf.extend_from_slice(&[MAGIC[0], MAGIC[1], VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    header.encode_raw(buf);
    let header_len = buf.len() - start - PREFIX_LEN;
    body.encode_raw(buf);
    let body_len =
        u32::try_from(buf.len() - start - PREFIX_LEN - header_len).expect("frame body over 4 GiB");
    buf[start + 4..start + 8].copy_from_slice(&(header_len as u32).to_be_bytes());
    buf[start + 8..start + 12].copy_from_slice(&body_len.to_be_bytes());
}

/// Whether a frame with a `body_len`-byte body (and a header of ordinary size) fits a peer's
/// `max_frame`.
///
/// # Errors
/// [`Code::TOO_LARGE`](crate::Code::TOO_LARGE), naming both sizes: the call fails on its own,
/// before anything is sent, instead of the peer closing a connection that other calls share.
pub fn check_len(body_len: usize, max_frame: usize, what: &str) -> Result<(), crate::Status> {
    // Headers are small; leave them room rather than encoding one to measure it.
    if body_len.saturating_add(HEADER_ALLOWANCE) > max_frame {
        return Err(crate::Status::too_large(format!(
            "{what} of {body_len} bytes, with {HEADER_ALLOWANCE} bytes kept for its header, \
             exceeds the frame limit of {max_frame} bytes"
        )));
    }
    Ok(())
}

/// Room [`check_len`] leaves for the header.
const HEADER_ALLOWANCE: usize = 1024;

/// Reads the prefix: header and body lengths, after checking the magic.
fn prefix(buf: &[u8]) -> Result<Option<(usize, usize)>, FrameError> {
    if buf.len() >= 2 && buf[..2] != MAGIC {
        return Err(FrameError::BadMagic([buf[0], buf[1]]));
    }
    if buf.len() < PREFIX_LEN {
        return Ok(None);
    }
    let header_len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    let body_len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    Ok(Some((header_len, body_len)))
}

/// Splits frames off a read buffer, checking each prefix before waiting for the rest, in the
/// manner of tokio-util's length-delimited codec.
///
/// It never reserves room for a frame from its announced length: the caller's buffer grows
/// with the bytes that actually arrive, so a prefix alone costs nothing.
#[derive(Clone, Copy, Debug)]
pub struct Decoder {
    max_frame: usize,
}

impl Decoder {
    /// A decoder that rejects frames larger than `max_frame` bytes (header plus body).
    pub fn new(max_frame: usize) -> Decoder {
        Decoder { max_frame }
    }

    /// The next complete frame in `buf`, `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    /// When the stream is not svrkit frames; the connection cannot be used any more.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some((header_len, body_len)) = prefix(buf)? else {
            return Ok(None);
        };
        let len = header_len as u64 + body_len as u64;
        if len > self.max_frame as u64 || header_len > MAX_HEADER {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        if buf.len() < PREFIX_LEN + header_len + body_len {
            return Ok(None);
        }
        buf.advance(PREFIX_LEN);
        let header_bytes = buf.split_to(header_len).freeze();
        let body = buf.split_to(body_len).freeze();
        let header = Header::decode_bytes(&header_bytes).map_err(FrameError::Header)?;
        Ok(Some(Frame { header, body }))
    }
}

/// What a [`FrameReader`] found next in the stream.
#[derive(Debug)]
pub enum Read {
    /// A whole frame.
    Frame(Frame),
    /// A frame over the limit: its header, so that its sender can be told; its body is being
    /// skipped as it arrives, never held.
    Oversized {
        /// The frame's header.
        header: Header,
        /// Header plus body, as announced.
        len: u64,
    },
}

/// Frames larger than this are split off the read buffer without copying; smaller ones are
/// copied out of it.
pub const COPY_ABOVE: usize = 16 << 10;

/// A [`Decoder`] for a connection, which survives a frame over the limit.
///
/// A frame whose header is readable but whose body is too large is not an attack on the
/// stream's framing, only a call too big for this peer: the reader reports its header, then
/// drops its body bytes as they arrive, and the connection (with every other call on it)
/// carries on. Broken framing (bad magic, an oversized header, an undecodable header) still
/// ends the connection.
#[derive(Debug)]
pub struct FrameReader {
    max_frame: usize,
    /// Body bytes of an oversized frame still to drop.
    skipping: u64,
}

impl FrameReader {
    /// A reader that reports frames larger than `max_frame` bytes as [`Read::Oversized`].
    pub fn new(max_frame: usize) -> FrameReader {
        FrameReader {
            max_frame,
            skipping: 0,
        }
    }

    /// Bytes of the frame at the head of `buf` that have not arrived yet (0 if a frame is
    /// complete or nothing is known yet), for a reader that sizes its reads.
    pub fn missing(&self, buf: &[u8]) -> usize {
        match prefix(buf) {
            Ok(Some((h, b))) if (h + b) as u64 <= self.max_frame as u64 => {
                (PREFIX_LEN + h + b).saturating_sub(buf.len())
            }
            _ => 0,
        }
    }

    /// Whether the stream is in the middle of a frame: part of one is in `buf`, or the body of
    /// an oversized one is still being skipped. A peer that stalls here is stalling mid-frame,
    /// however empty the buffer is.
    pub fn in_frame(&self, buf: &[u8]) -> bool {
        self.skipping > 0 || !buf.is_empty()
    }

    /// The next frame in `buf`, `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    /// When the stream is not svrkit frames; the connection cannot be used any more.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Read>, FrameError> {
        if self.skipping > 0 {
            let n = (self.skipping as usize).min(buf.len());
            buf.advance(n);
            self.skipping -= n as u64;
            if self.skipping > 0 {
                return Ok(None);
            }
        }
        let Some((header_len, body_len)) = prefix(buf)? else {
            return Ok(None);
        };
        let len = header_len as u64 + body_len as u64;
        if header_len > MAX_HEADER.min(self.max_frame) {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        if len <= self.max_frame as u64 {
            let total = PREFIX_LEN + header_len + body_len;
            if buf.len() < total {
                return Ok(None);
            }
            if total > COPY_ABOVE {
                return Ok(Decoder::new(self.max_frame).decode(buf)?.map(Read::Frame));
            }
            // A small frame is copied out, so the read buffer is reused at once and a request
            // in flight never pins a buffer larger than itself.
            let header = Header::decode(&buf[PREFIX_LEN..PREFIX_LEN + header_len])
                .map_err(FrameError::Header)?;
            let body = Bytes::copy_from_slice(&buf[PREFIX_LEN + header_len..total]);
            buf.advance(total);
            return Ok(Some(Read::Frame(Frame { header, body })));
        }
        if buf.len() < PREFIX_LEN + header_len {
            return Ok(None);
        }
        buf.advance(PREFIX_LEN);
        let header_bytes = buf.split_to(header_len);
        let header = Header::decode(&header_bytes).map_err(FrameError::Header)?;
        self.skipping = body_len as u64;
        let n = body_len.min(buf.len());
        buf.advance(n);
        self.skipping -= n as u64;
        Ok(Some(Read::Oversized { header, len }))
    }
}

/// What is left of `deadline`, as a header's `deadline_ms` (at least 1: 0 would mean "none").
pub fn remaining_ms(deadline: std::time::Instant) -> u32 {
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1)
}
