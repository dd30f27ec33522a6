//! Counters of the process rather than of a method: connections, frames, requests for what
//! the server does not host, header fields from untrusted peers, reports to the ossagent.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Instant, SystemTime};

/// Servers of this process that have begun to drain or shut down and are not yet dropped
/// (what `/readyz` answers 503 for, `monitor::health::is_stopping`).
static STOPPING: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// One more (`1`) or one fewer (`-1`) server of this process draining or shutting down.
pub(crate) fn server_stopping(change: i64) {
    STOPPING.fetch_add(change, std::sync::atomic::Ordering::AcqRel);
}

/// Servers of this process draining or shutting down, and not yet dropped.
pub fn servers_stopping() -> i64 {
    STOPPING.load(std::sync::atomic::Ordering::Acquire)
}

/// Counters of the process rather than of a method.
#[derive(Debug)]
pub struct Process {
    /// When monitoring started (first use), on the monotonic and the wall clock.
    pub started: (Instant, SystemTime),
    pub(crate) accepted: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) frame_errors: AtomicU64,
    pub(crate) oversized: AtomicU64,
    pub(crate) reports_sent: AtomicU64,
    pub(crate) reports_failed: AtomicU64,
    /// Requests and frames for things the server does not host, by [`Unknown`].
    pub(crate) unknown: [AtomicU64; 3],
    /// When a line about each [`Unknown`] was last logged (ms since `started`, plus one, so
    /// that zero means never), and how many went unlogged since.
    unknown_logged: [(AtomicU64, AtomicU64); 3],
    /// Header fields set by peers the server does not trust, and so ignored, by
    /// [`Untrusted`].
    pub(crate) untrusted: [AtomicU64; Untrusted::ALL.len()],
}

/// The process's counters.
pub fn process() -> &'static Process {
    static PROCESS: OnceLock<Process> = OnceLock::new();
    PROCESS.get_or_init(|| Process {
        started: (Instant::now(), SystemTime::now()),
        accepted: AtomicU64::new(0),
        closed: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        frame_errors: AtomicU64::new(0),
        oversized: AtomicU64::new(0),
        reports_sent: AtomicU64::new(0),
        reports_failed: AtomicU64::new(0),
        unknown: Default::default(),
        unknown_logged: Default::default(),
        untrusted: Default::default(),
    })
}

/// What a peer asked a server for that it does not host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unknown {
    /// A request for a service id the server does not host.
    Service,
    /// A request for a method id its service does not have.
    Method,
    /// A frame of a kind the server does not know (the connection is closed).
    Frame,
}

impl Unknown {
    /// Every kind, in the order of their counters.
    pub const ALL: [Unknown; 3] = [Unknown::Service, Unknown::Method, Unknown::Frame];

    /// The `kind` label of its series.
    pub const fn name(self) -> &'static str {
        match self {
            Unknown::Service => "service",
            Unknown::Method => "method",
            Unknown::Frame => "frame",
        }
    }
}

/// A header field a peer the server does not trust set, and the server ignored
/// (`server/trust.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Untrusted {
    /// A priority other than the method's.
    Priority,
    /// A user key.
    UserKey,
    /// A dye tag.
    Dye,
    /// `no_retry`.
    NoRetry,
    /// A trace id.
    TraceId,
    /// A deadline longer than the method's timeout.
    Deadline,
    /// An attempt number above 0: a retry, which would make the calls the handler makes
    /// not retry (as `no_retry` would).
    Attempt,
}

impl Untrusted {
    /// Every field, in the order of their counters.
    pub const ALL: [Untrusted; 7] = [
        Untrusted::Priority,
        Untrusted::UserKey,
        Untrusted::Dye,
        Untrusted::NoRetry,
        Untrusted::TraceId,
        Untrusted::Deadline,
        Untrusted::Attempt,
    ];

    /// The `field` label of its series.
    pub const fn name(self) -> &'static str {
        match self {
            Untrusted::Priority => "priority",
            Untrusted::UserKey => "user_key",
            Untrusted::Dye => "dye",
            Untrusted::NoRetry => "no_retry",
            Untrusted::TraceId => "trace_id",
            Untrusted::Deadline => "deadline",
            Untrusted::Attempt => "attempt",
        }
    }
}

/// Counts a header field an untrusted peer set and the server ignored.
#[inline]
pub(crate) fn note_untrusted(field: Untrusted) {
    process().untrusted[field as usize].fetch_add(1, Relaxed);
}

/// Counts a request or frame for something this server does not host, and logs it at most
/// once a second per kind, with the peer and how many went unlogged since: during a rolling
/// upgrade this is how an operator learns that callers are ahead of servers, without a flood
/// of lines from a peer that sends nothing else.
pub(crate) fn note_unknown(kind: Unknown, peer: Option<std::net::SocketAddr>, what: &str) {
    let p = process();
    let i = kind as usize;
    p.unknown[i].fetch_add(1, Relaxed);
    let now = p.started.0.elapsed().as_millis() as u64 + 1;
    let (last, unlogged) = &p.unknown_logged[i];
    let seen = last.load(Relaxed);
    if seen != 0 && now < seen + 1000 || last.compare_exchange(seen, now, Relaxed, Relaxed).is_err()
    {
        unlogged.fetch_add(1, Relaxed);
        return;
    }
    let more = unlogged.swap(0, Relaxed);
    let peer = peer.map_or_else(|| "in process".to_owned(), |p| p.to_string());
    tracing::warn!(
        peer,
        unknown = kind.name(),
        also_unlogged = more,
        "a peer asked for what this server does not host: {what}"
    );
}

impl Process {
    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Relaxed)
    }
    /// Connections closed so far.
    pub fn closed(&self) -> u64 {
        self.closed.load(Relaxed)
    }
    /// Connections refused at the connection cap.
    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }
    /// Connections closed because a frame did not decode.
    pub fn frame_errors(&self) -> u64 {
        self.frame_errors.load(Relaxed)
    }
    /// Frames over the size limit, skipped.
    pub fn oversized(&self) -> u64 {
        self.oversized.load(Relaxed)
    }
    /// Reports sent to the ossagent.
    pub fn reports_sent(&self) -> u64 {
        self.reports_sent.load(Relaxed)
    }
    /// Reports the ossagent did not take.
    pub fn reports_failed(&self) -> u64 {
        self.reports_failed.load(Relaxed)
    }
    /// Requests or frames of `kind` for what the server does not host.
    pub fn unknown(&self, kind: Unknown) -> u64 {
        self.unknown[kind as usize].load(Relaxed)
    }
    /// Requests from untrusted peers that set `field`, which was ignored.
    pub fn untrusted(&self, field: Untrusted) -> u64 {
        self.untrusted[field as usize].load(Relaxed)
    }
}

/// Adds one to a process counter.
#[inline]
pub(crate) fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that sends only what the server does not host must not flood the log.
    #[test]
    fn unknowns_are_counted_every_time_and_logged_at_most_once_a_second() {
        let p = process();
        let counted = p.unknown(Unknown::Frame);
        for _ in 0..3 {
            note_unknown(Unknown::Frame, None, "a test");
        }
        assert_eq!(p.unknown(Unknown::Frame), counted + 3);
        // At most the first was logged (which resets the count of unlogged ones).
        let unlogged = p.unknown_logged[Unknown::Frame as usize].1.load(Relaxed);
        assert!(unlogged >= 2, "{unlogged}");
    }
}
