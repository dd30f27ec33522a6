//! The server's limits: counts where a count is what runs out (connections, calls), bytes
//! wherever memory is at stake, and times for peers that stop making progress.

use std::sync::OnceLock;
use std::time::Duration;

use crate::frame::DEFAULT_MAX_FRAME;

/// Limits that keep one client, or too many, from hurting the server.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections open at once. One more is told so with a `GOAWAY` frame carrying
    /// `OVERLOADED`, then closed. The default stays below the process's file-descriptor
    /// limit (three quarters of it, at most 10,000).
    pub max_connections: usize,
    /// Requests in flight on one connection; more are answered `OVERLOADED`.
    pub max_in_flight_per_connection: usize,
    /// Requests in flight on the whole server; more are answered `OVERLOADED`. The last eighth
    /// is kept for connections with few calls in flight: within it, a connection may have at
    /// most a sixty-fourth of the slots left.
    pub max_in_flight: usize,
    /// Largest frame (header plus body) accepted or sent. A larger request is answered
    /// `TOO_LARGE` (its body is skipped as it arrives, never held); a larger response fails
    /// its call with `TOO_LARGE`. Either way the connection carries on.
    pub max_frame: usize,
    /// Bytes held for calls across all connections: partial frames, the bodies of requests in
    /// flight with what decoding them allocated (their headers' metadata, their lists and
    /// maps), each running call's state (its handler's future plus about 1 KiB of
    /// bookkeeping), and replies not yet written. A connection that would go over waits
    /// before reading more; a request that finds it spent is answered `OVERLOADED`. Replies
    /// are never refused: they are counted, and what comes in next waits for them. The last
    /// eighth is kept for connections that hold little: within it, a connection may hold at
    /// most a sixty-fourth of what is left, so that clients that spend the budget leave others
    /// served.
    pub max_buffered_input: usize,
    /// Bytes of responses a connection may have queued but unsent; past it the server stops
    /// reading that connection's requests until the client reads.
    pub max_unsent_per_connection: usize,
    /// How long a connection may make no progress writing responses (a client that stopped
    /// reading) before it is closed.
    pub write_timeout: Duration,
    /// How long a partly received frame may wait for its next byte before the connection is
    /// closed.
    pub read_timeout: Duration,
    /// How long a connection with nothing in flight may stay silent before it is closed.
    pub idle_timeout: Duration,
    /// Connections one untrusted address ([`Trust`](super::Trust)) may have open at once;
    /// one more is refused as at the server's cap. So that one address cannot take the
    /// connection table. Default: an eighth of [`max_connections`](Limits::max_connections),
    /// at least 16.
    pub max_connections_per_peer: usize,
    /// How long a connection from an untrusted address may stay open before a call of its
    /// is admitted and run (requests for methods not hosted here, and refused ones, do not
    /// count): connections opened only to hold a place are closed long before the idle
    /// timeout.
    pub first_request_timeout: Duration,
    /// The longest deadline the server grants a request, whatever it asks for.
    pub max_deadline: Duration,
    /// How long a cancelled or timed-out handler is polled on (to see the cancellation and
    /// stop) before it is dropped. Its permits are released when it stops.
    pub cancel_grace: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: default_max_connections(),
            max_in_flight_per_connection: 1_024,
            max_in_flight: 65_536,
            max_frame: DEFAULT_MAX_FRAME,
            max_buffered_input: 256 << 20,
            max_unsent_per_connection: 4 << 20,
            write_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_connections_per_peer: (default_max_connections() / 8).max(16),
            first_request_timeout: Duration::from_secs(10),
            max_deadline: Duration::from_secs(60),
            cancel_grace: Duration::from_millis(200),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// How long a new connection may stay silent before its first bytes: the read and idle
    /// timeouts, and for a peer the server does not trust the first-request timeout too.
    pub(crate) fn first_wait(&self, trusted: bool) -> std::time::Duration {
        let wait = self.read_timeout.min(self.idle_timeout);
        if trusted {
            wait
        } else {
            wait.min(self.first_request_timeout)
        }
    }
}

/// Three quarters of the soft file-descriptor limit (the rest is for listeners, clients,
/// files and logs), at most 10,000.
fn default_max_connections() -> usize {
    static CAP: OnceLock<usize> = OnceLock::new();
    *CAP.get_or_init(|| {
        let fds = open_files_limit().unwrap_or(1024);
        (fds / 4 * 3).clamp(16, 10_000)
    })
}

/// The soft `RLIMIT_NOFILE`, read from `/proc/self/limits` (Linux; `None` elsewhere).
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    match soft {
        "unlimited" => Some(usize::MAX),
        n => n.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_connection_cap_is_below_the_descriptor_limit() {
        let cap = Limits::default().max_connections;
        if let Some(fds) = open_files_limit() {
            assert!(cap < fds, "cap {cap} with {fds} descriptors");
        }
        assert!(cap <= 10_000);
    }
}
