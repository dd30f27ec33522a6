//! The decoder's error type.

use std::fmt;

/// Why a message could not be decoded.
///
/// The error names the struct and field where decoding failed, innermost first, so a bad
/// nested value reads as `im.message.SendReq.msg: im.message.Message.content: ...`.
/// It is boxed to keep `Result<T, DecodeError>` one word wide on the hot path.
#[derive(Clone, PartialEq, Eq)]
pub struct DecodeError {
    inner: Box<Inner>,
}

#[derive(Clone, PartialEq, Eq)]
struct Inner {
    kind: DecodeErrorKind,
    /// `(struct, field)` pairs, innermost first.
    path: Vec<(&'static str, &'static str)>,
}

/// What went wrong, without the location.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The input ended inside a key, a value or a length-delimited region.
    Truncated,
    /// A varint ran past ten bytes or overflowed its type.
    InvalidVarint,
    /// A key had field id 0.
    InvalidFieldId,
    /// A key had a wire type protobuf never defined (6 or 7).
    InvalidWireType(u32),
    /// An end-group marker closed no group, or a group other than the open one.
    UnmatchedEndGroup,
    /// A length prefix exceeded the bytes left in the input.
    LengthOutOfBounds {
        /// The announced length.
        len: u64,
        /// Bytes actually left.
        remaining: usize,
    },
    /// A `string` field held bytes that are not UTF-8.
    InvalidUtf8,
    /// A packed list's length is not a multiple of its element width.
    InvalidPackedLength,
    /// Structs were nested deeper than [`MAX_DEPTH`](super::MAX_DEPTH).
    RecursionLimit,
    /// The lists and maps decoded so far would take more memory than
    /// [`DECODE_FACTOR`](super::DECODE_FACTOR) times the input allows.
    AllocationLimit,
}

impl DecodeError {
    /// An error of this kind, not yet located.
    #[cold]
    pub fn new(kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            inner: Box::new(Inner {
                kind,
                path: Vec::new(),
            }),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> &DecodeErrorKind {
        &self.inner.kind
    }

    /// The `(struct, field)` path from the innermost failing field outwards.
    pub fn path(&self) -> &[(&'static str, &'static str)] {
        &self.inner.path
    }

    /// Adds the enclosing struct and field as the error travels outwards.
    #[cold]
    pub fn push(mut self, struct_name: &'static str, field: &'static str) -> DecodeError {
        self.inner.path.push((struct_name, field));
        self
    }
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeErrorKind::Truncated => f.write_str("input ends too early"),
            DecodeErrorKind::InvalidVarint => f.write_str("invalid varint"),
            DecodeErrorKind::InvalidFieldId => f.write_str("invalid field id 0"),
            DecodeErrorKind::InvalidWireType(wt) => write!(f, "invalid wire type {wt}"),
            DecodeErrorKind::UnmatchedEndGroup => {
                f.write_str("an end-group marker that closes no open group")
            }
            DecodeErrorKind::LengthOutOfBounds { len, remaining } => {
                write!(f, "length {len} exceeds the {remaining} bytes left")
            }
            DecodeErrorKind::InvalidUtf8 => f.write_str("string is not valid UTF-8"),
            DecodeErrorKind::InvalidPackedLength => {
                f.write_str("packed list length is not a multiple of its element size")
            }
            DecodeErrorKind::AllocationLimit => write!(
                f,
                "the elements would take more than {} times the input's size in memory",
                super::DECODE_FACTOR
            ),
            DecodeErrorKind::RecursionLimit => write!(
                f,
                "structs nested deeper than the limit of {}",
                super::MAX_DEPTH
            ),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("failed to decode: ")?;
        // Outermost first reads naturally: `A.b: B.c: <what>`.
        for (struct_name, field) in self.inner.path.iter().rev() {
            write!(f, "{struct_name}.{field}: ")?;
        }
        self.inner.kind.fmt(f)
    }
}

impl fmt::Debug for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecodeError")
            .field("kind", &self.inner.kind)
            .field("path", &self.inner.path)
            .finish()
    }
}

impl std::error::Error for DecodeError {}
