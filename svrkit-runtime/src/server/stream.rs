//! The byte streams a server connection runs over: plain TCP, or TLS over it.
//!
//! The reader wants two things from a stream: to wait until bytes may have arrived, and then
//! to take whatever is there without waiting. TCP gives both without a buffer (readiness,
//! then non-blocking reads), so an idle connection holds no read buffer. TLS can only find
//! out by decrypting, so its wait reads into a small buffer.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
#[cfg(feature = "tls")]
use tokio::io::AsyncRead;
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// An accepted connection, after its TLS handshake if it has one.
pub(super) enum Stream {
    Tcp(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// The writing half, for the outbox.
pub(super) enum WriteHalf {
    /// Plain TCP, which can be written without waiting (`try_write`): the outbox writes
    /// replies straight from the task that made them when nothing is queued before them.
    Tcp(OwnedWriteHalf),
    /// Anything else (TLS), written by the outbox's writer task only.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Boxed(Box<dyn AsyncWrite + Send + Unpin>),
}

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

    /// Whether the client speaks HTTP/2: over TCP, whether its first byte is the preface's
    /// (svrkit frames start `S`, the preface `P`), waiting for that byte; over TLS, whether
    /// the handshake chose `h2` by ALPN. An error if the client left before saying anything.
    pub(super) async fn opens_with_http2(&self) -> io::Result<bool> {
        match self {
            Stream::Tcp(stream) => {
                let mut first = [0u8; 1];
                if stream.peek(&mut first).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Ok(first[0] == b'P')
            }
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => Ok(tls.get_ref().1.alpn_protocol() == Some(b"h2")),
        }
    }

    pub(super) fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(stream) => {
                let (reader, writer) = stream.into_split();
                (ReadHalf::Tcp(reader), WriteHalf::Tcp(writer))
            }
            #[cfg(feature = "tls")]
            Stream::Tls(stream) => {
                let (reader, writer) = tokio::io::split(*stream);
                (
                    ReadHalf::Tls(Box::new(reader)),
                    WriteHalf::Boxed(Box::new(writer)),
                )
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
    ///
    /// One poll of a read with a waker that does nothing: the reader's next `ready` polls
    /// again with its task's waker, so no wakeup is lost. For TCP this is a read through
    /// `AsyncRead` rather than `try_read_buf`, because a read that leaves room in the buffer
    /// has drained the socket and tokio then forgets its readiness: the next `ready` waits
    /// for new bytes instead of returning at once for a `recv` that finds none (one syscall
    /// less per request when calls come one at a time).
    pub(super) fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let mut cx = Context::from_waker(Waker::noop());
        let poll = match self {
            ReadHalf::Tcp(reader) => pin!(reader.read_buf(buf)).as_mut().poll(&mut cx),
            #[cfg(feature = "tls")]
            ReadHalf::Tls(reader) => pin!(reader.read_buf(buf)).as_mut().poll(&mut cx),
        };
        match poll {
            Poll::Ready(read) => read,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

// HTTP/2 (`server/grpc/`) reads and writes the stream whole, through tokio's traits.
impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}
