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
/// Default largest frame (header plus body) a peer accepts.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

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

/// Appends one frame to `buf`.
pub fn encode(header: &Header, body: &[u8], buf: &mut Vec<u8>) {
    let start = buf.len();
    buf.extend_from_slice(&[MAGIC[0], MAGIC[1], VERSION, 0, 0, 0, 0, 0]);
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    header.encode_raw(buf);
    let header_len = (buf.len() - start - PREFIX_LEN) as u32;
    buf[start + 4..start + 8].copy_from_slice(&header_len.to_be_bytes());
    buf.extend_from_slice(body);
}

/// Appends one frame whose body is `body` encoded, without an intermediate buffer.
pub fn encode_message<M: Message>(header: &Header, body: &M, buf: &mut Vec<u8>) {
    let start = buf.len();
    buf.extend_from_slice(&[MAGIC[0], MAGIC[1], VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    header.encode_raw(buf);
    let header_len = buf.len() - start - PREFIX_LEN;
    body.encode_raw(buf);
    let body_len = buf.len() - start - PREFIX_LEN - header_len;
    buf[start + 4..start + 8].copy_from_slice(&(header_len as u32).to_be_bytes());
    buf[start + 8..start + 12].copy_from_slice(&(body_len as u32).to_be_bytes());
}

/// Splits frames off a read buffer, checking each prefix before waiting for (or allocating
/// room for) the rest, in the manner of tokio-util's length-delimited codec.
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
        if buf.len() < PREFIX_LEN {
            // Even a partial prefix can be rejected early.
            if buf.len() >= 2 && buf[..2] != MAGIC {
                return Err(FrameError::BadMagic([buf[0], buf[1]]));
            }
            return Ok(None);
        }
        if buf[..2] != MAGIC {
            return Err(FrameError::BadMagic([buf[0], buf[1]]));
        }
        let header_len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        let body_len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
        let len = header_len as u64 + body_len as u64;
        if len > self.max_frame as u64 {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        let total = PREFIX_LEN + header_len + body_len;
        if buf.len() < total {
            // Safe to reserve now: bounded by the limit just checked.
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        buf.advance(PREFIX_LEN);
        let header_bytes = buf.split_to(header_len).freeze();
        let body = buf.split_to(body_len).freeze();
        let header = Header::decode_bytes(&header_bytes).map_err(FrameError::Header)?;
        Ok(Some(Frame { header, body }))
    }
}
