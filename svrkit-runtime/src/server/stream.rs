//! The byte streams a server connection runs over: plain TCP, or TLS over it.
//!
//! The reader wants two things from a stream: to wait until bytes may have arrived, and then
//! to take whatever is there without waiting. TCP gives both without a buffer (readiness,
//! then non-blocking reads), so an idle connection holds no read buffer. TLS can only find
//! out by decrypting, so its wait reads into a small buffer.

use std::io;
#[cfg(feature = "tls")]
use std::{
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

use bytes::BytesMut;
use tokio::io::AsyncWrite;
#[cfg(feature = "tls")]
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

/// An accepted connection, after its TLS handshake if it has one.
pub(super) enum Stream {
    Tcp(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// The writing half, for the outbox.
pub(super) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

impl Stream {
    /// Whether the peer proved an identity the server trusts (a client certificate valid
    /// for one of `trust`'s names; `server/trust.rs`).
    pub(super) fn trusted_identity(&self, trust: &super::Trust) -> bool {
        #[cfg(not(feature = "tls"))]
        let _ = trust;
        match self {
            Stream::Tcp(_) => false,
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|certs| trust.trusts_certificate(certs)),
        }
    }

    pub(super) fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(stream) => {
                let (reader, writer) = stream.into_split();
                (ReadHalf::Tcp(reader), Box::new(writer))
            }
            #[cfg(feature = "tls")]
            Stream::Tls(stream) => {
                let (reader, writer) = tokio::io::split(*stream);
                (ReadHalf::Tls(Box::new(reader)), Box::new(writer))
            }
        }
    }
}

/// The reading half.
pub(super) enum ReadHalf {
    Tcp(OwnedReadHalf),
    #[cfg(feature = "tls")]
    Tls(Box<dyn AsyncRead + Send + Unpin>),
}

/// Room a TLS connection's wait reads into.
#[cfg(feature = "tls")]
const TLS_WAIT_BUFFER: usize = 4 * 1024;

impl ReadHalf {
    /// Waits until bytes may be there. `Some(n)` if it read `n` of them into `buf` already
    /// (0 at the end of the stream); `None` if they are still to be taken with
    /// [`try_read_buf`](ReadHalf::try_read_buf).
    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    pub(super) async fn ready(&mut self, buf: &mut BytesMut) -> io::Result<Option<usize>> {
        match self {
            ReadHalf::Tcp(reader) => reader.readable().await.map(|()| None),
            #[cfg(feature = "tls")]
            ReadHalf::Tls(reader) => {
                // Within the buffer a connection holds without drawing on the input budget.
                if buf.capacity() - buf.len() < TLS_WAIT_BUFFER / 4 {
                    buf.reserve(TLS_WAIT_BUFFER);
                }
                reader.read_buf(buf).await.map(Some)
            }
        }
    }

    /// Reads what has arrived into `buf` without waiting: `WouldBlock` if nothing has.
    pub(super) fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            ReadHalf::Tcp(reader) => reader.try_read_buf(buf),
            #[cfg(feature = "tls")]
            ReadHalf::Tls(reader) => {
                // One poll with a waker that does nothing: the reader's next `ready` polls
                // again with its task's waker, so no wakeup is lost.
                let mut cx = Context::from_waker(Waker::noop());
                match pin!(reader.read_buf(buf)).as_mut().poll(&mut cx) {
                    Poll::Ready(read) => read,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }
}
