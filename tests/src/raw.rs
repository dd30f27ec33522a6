//! A raw-socket svrkit peer for tests that must speak the protocol by hand: to leave out
//! CANCEL, reuse ids, stall mid-frame or never read.

use std::time::Duration;

use bytes::BytesMut;
use svrkit_runtime::frame::{self, Frame, FrameKind, Header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::svrkit::test::rpc::EchoReq;

/// A connection that sends and reads frames one by one.
pub struct RawConn {
    /// The socket.
    pub stream: TcpStream,
    buf: BytesMut,
}

impl RawConn {
    /// Connects to `addr`.
    pub async fn connect(addr: &str) -> RawConn {
        RawConn {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: BytesMut::new(),
        }
    }

    /// Speaks over a socket connected by the caller (from another local address, say).
    pub fn over(stream: TcpStream) -> RawConn {
        RawConn {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Sends a REQUEST for `EchoSvr` method `method` with `deadline_ms` (0: none).
    pub async fn request(&mut self, id: u64, method: u32, deadline_ms: u32, body: &EchoReq) {
        let header = header(FrameKind::REQUEST, id, method, deadline_ms);
        self.stream
            .write_all(&request_frame(&header, body))
            .await
            .expect("write");
    }

    /// The next frame but PONGs (the server opens every connection with one, listing its
    /// methods), failing the test if none comes within `limit`.
    pub async fn read(&mut self, limit: Duration) -> Frame {
        let decoder = frame::Decoder::new(64 << 20);
        tokio::time::timeout(limit, async {
            loop {
                if let Some(frame) = decoder.decode(&mut self.buf).expect("a valid frame") {
                    if frame.header.kind != FrameKind::PONG {
                        return frame;
                    }
                    continue;
                }
                let n = self.stream.read_buf(&mut self.buf).await.expect("read");
                assert!(n > 0, "the server closed the connection");
            }
        })
        .await
        .expect("no frame in time")
    }
}

/// The header of a frame of `kind` for `EchoSvr` method `method`, with `deadline_ms` (0:
/// none).
pub fn header(kind: FrameKind, id: u64, method: u32, deadline_ms: u32) -> Header {
    Header {
        kind,
        request_id: id,
        service_id: 9100,
        method_id: method,
        deadline_ms,
        ..Header::default()
    }
}

/// A request frame.
pub fn request_frame(header: &Header, body: &EchoReq) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode_message(header, body, &mut out);
    out
}

/// Request frames for `EchoSvr` method `method`, one per id, all with `body` and
/// `deadline_ms`, back to back: what a client that pipelines writes at once.
pub fn request_frames(
    ids: impl IntoIterator<Item = u64>,
    method: u32,
    deadline_ms: u32,
    body: &EchoReq,
) -> Vec<u8> {
    let mut out = Vec::new();
    for id in ids {
        frame::encode_message(
            &header(FrameKind::REQUEST, id, method, deadline_ms),
            body,
            &mut out,
        );
    }
    out
}

/// This process's resident memory, in bytes.
pub fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// Whether the server closed the connection within `limit`.
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut sink = vec![0u8; 64 * 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}
