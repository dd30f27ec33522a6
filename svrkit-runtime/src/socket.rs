//! A TCP connection's write half, shared by the tasks that make frames and the connection's
//! writer task, so that a frame can go out from the task that made it without waking another.
//!
//! The owner (the server's outbox, the client's connection) counts what it has handed to its
//! writer task and not yet seen written. A task writes at once only while that count is zero,
//! deciding under [`SharedSocket::turn`]; raising the count also happens under the turn. The
//! writer task writes only while its bytes are counted. So at any moment one side may write,
//! and a frame written at once can never overtake or split one queued before it. What the
//! socket does not take at once is queued by the task, still under the turn, ahead of
//! anything else.

use std::io;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::tcp::OwnedWriteHalf;

/// See the module's docs.
pub(crate) struct SharedSocket {
    socket: OwnedWriteHalf,
    turn: Mutex<()>,
}

/// Held while deciding between writing at once and queueing.
pub(crate) type Turn<'a> = MutexGuard<'a, ()>;

impl SharedSocket {
    pub(crate) fn new(socket: OwnedWriteHalf) -> SharedSocket {
        SharedSocket {
            socket,
            turn: Mutex::new(()),
        }
    }

    /// Takes the turn; `None` if a holder panicked.
    pub(crate) fn turn(&self) -> Option<Turn<'_>> {
        self.turn.lock().ok()
    }

    /// Writes what the socket takes now of `frames` (the caller holds the turn and saw
    /// nothing queued). True if all of it went; otherwise `frames` keeps the rest, to be
    /// queued before the turn is let go. A broken socket writes nothing here: the writer task
    /// meets the same error and closes the connection, as for any write.
    pub(crate) fn write_now(&self, _turn: &Turn<'_>, frames: &mut Vec<u8>) -> bool {
        match self.socket.try_write(frames) {
            Ok(n) if n == frames.len() => true,
            Ok(n) => {
                frames.drain(..n);
                false
            }
            Err(_) => false,
        }
    }

    /// Writes all of `bytes`, waiting at most `timeout` for each bit of progress; false if
    /// the socket broke or made no progress for that long (a peer that stopped reading). For
    /// the writer task, while `bytes` are counted queued, so no task writes meanwhile.
    pub(crate) async fn write_all(&self, mut bytes: &[u8], timeout: Duration) -> bool {
        while !bytes.is_empty() {
            match self.socket.try_write(bytes) {
                Ok(0) => return false,
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !matches!(
                        tokio::time::timeout(timeout, self.socket.writable()).await,
                        Ok(Ok(()))
                    ) {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    }
}
