//! What a channel and a call are set up with: timeouts, retries, policies, the balancer, TLS.

use std::time::Duration;

use faststr::FastStr;

use super::{BalancerKind, RetryConfig};
use crate::frame;

/// Per-call settings that override the IDL's.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// Deadline for this call instead of the method's `timeout_ms`.
    pub timeout: Option<Duration>,
    /// The end user the call is for, for overload control and key-based balancing.
    pub user_key: Option<u64>,
    /// Call as a weak dependency with this timeout: a failure, a refusal or no answer in
    /// time gives a *skipped* result instead of an error (see [`Channel::call`]).
    pub weak: Option<Duration>,
    /// Dye tag for gray release (see [`Route`]), instead of the one inherited from the
    /// request being served.
    pub dye: Option<FastStr>,
}

impl CallOptions {
    /// Options with a timeout.
    pub fn timeout(timeout: Duration) -> CallOptions {
        CallOptions {
            timeout: Some(timeout),
            ..CallOptions::default()
        }
    }

    /// Options for a weak call that gives up after `timeout`.
    pub fn weak(timeout: Duration) -> CallOptions {
        CallOptions {
            weak: Some(timeout),
            ..CallOptions::default()
        }
    }
}

/// How a channel connects.
#[derive(Clone, Debug)]
pub struct ChannelOptions {
    /// Connections kept per endpoint (each multiplexes many calls).
    pub connections_per_endpoint: usize,
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// First wait after a failed connect (or a dead connection); doubles up to
    /// `max_backoff`.
    pub min_backoff: Duration,
    /// Longest wait between connect attempts to a failing endpoint.
    pub max_backoff: Duration,
    /// Largest frame sent or accepted. A larger request fails with `TOO_LARGE` before it is
    /// sent; a larger response fails its call only.
    pub max_frame: usize,
    /// While calls wait on a connection that has been silent this long, it is pinged; if it
    /// stays silent as long again it is closed, its calls fail `UNAVAILABLE` and its
    /// endpoint is taken out of rotation. Taken as at least 1 ms and at most a year.
    pub keepalive_interval: Duration,
    /// For a gRPC channel ([`Protocol::Grpc`]): while calls wait on a connection that nothing
    /// has been heard from for this long, it is pinged (an HTTP/2 PING); with no answer
    /// within as long again it is closed, its calls fail `UNAVAILABLE` and its endpoint is
    /// taken out of rotation. Off by default, as in gRPC's own clients: servers built on
    /// grpc-go answer pings more often than every five minutes with `too_many_pings` unless
    /// configured otherwise (gRPC's keepalive guide, gRFC A8, suggests at least 10 s where
    /// servers allow it). Taken as at least 1 ms and at most a year. svrkit's frames use
    /// `keepalive_interval` instead.
    pub grpc_keepalive: Option<Duration>,
    /// Time allowed to write a batch of requests: a peer that stops reading for this long
    /// has its connection closed, so that requests (oneway ones above all, which nobody
    /// waits on) do not queue behind it, and new calls go to a fresh connection.
    pub write_timeout: Duration,
    /// This service's name, sent as the caller.
    pub caller: FastStr,
    /// Whether calls are counted in the process's client metrics (default: yes).
    pub monitoring: bool,
    /// How failed attempts of idempotent methods are retried.
    pub retry: RetryConfig,
    /// Adaptive throttling: while the backend refuses, send about this many times the
    /// requests it accepts and drop the rest here (the SRE book's `K`; default 2). `None`
    /// turns it off.
    pub throttle: Option<f64>,
    /// Failures in a row (`UNAVAILABLE`: unreachable, broken connections, or said by the
    /// server) that eject an endpoint for a backoff period.
    pub eject_after: u32,
    /// Every call of the channel is weak, with this timeout (see [`CallOptions::weak`]).
    pub weak: Option<Duration>,
    /// The balancer of [`Channel::lazy`].
    pub balancer: BalancerKind,
    /// Speak TLS to every endpoint (see [`crate::tls`]); plain TCP when `None`.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::ClientTls>,
    /// The protocol spoken to the endpoints: svrkit frames (the default), or gRPC, to call
    /// a gRPC server of the same schema (`docs/grpc.md`; feature `grpc`).
    pub protocol: Protocol,
}

/// Which protocol a channel speaks to its endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// svrkit's own framing (`docs/protocol.md`).
    #[default]
    Svrkit,
    /// gRPC over HTTP/2 (`docs/grpc.md`): a gRPC server of the same schema, or a svrkit
    /// server through its gRPC side. Plain TCP only (TLS is not offered for it yet).
    Grpc,
}

impl Default for ChannelOptions {
    fn default() -> ChannelOptions {
        ChannelOptions {
            connections_per_endpoint: 2,
            connect_timeout: Duration::from_secs(1),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            max_frame: frame::DEFAULT_MAX_FRAME,
            keepalive_interval: Duration::from_secs(5),
            grpc_keepalive: None,
            write_timeout: Duration::from_secs(30),
            caller: FastStr::empty(),
            monitoring: true,
            retry: RetryConfig::default(),
            throttle: Some(2.0),
            eject_after: 5,
            weak: None,
            balancer: BalancerKind::default(),
            #[cfg(feature = "tls")]
            tls: None,
            protocol: Protocol::Svrkit,
        }
    }
}
