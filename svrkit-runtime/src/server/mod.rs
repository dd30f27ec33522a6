//! The server: one listener hosting any number of generated services.
//!
//! Independent services can be deployed together in one process or apart by registering
//! them on one server or on several; nothing else changes (the "logic container").
//!
//! The server is two layers (`docs/runtime.md` draws them):
//! - the **router** (`server/router/`) decides: it dispatches a request to its service and method,
//!   runs the [`Hook`]s (authentication, admission), applies the limits and drives the
//!   handler to its result, deadline or cancellation. In-process calls go through it too.
//! - a **connection** only moves bytes: it reads frames into a byte-bounded buffer, hands
//!   them to the router, and writes the replies through a byte-bounded outbox.
//!
//! A handler that finishes on its first poll (most do) is answered right on the connection's
//! reader, in the same write as the other requests of that read: no task, timer or
//! bookkeeping, which keeps server CPU per request close to a bare TCP echo. Its permits are
//! taken before that first poll. A handler that waits moves to a task of its own. A handler
//! that computes for long without awaiting holds up the other requests of its connection (the
//! reader yields between such handlers, so other connections are still served): move such
//! work to `tokio::task::spawn_blocking`.
//!
//! Every limit answers with a status or closes the offending connection, never more: a broken
//! or malicious client cannot take the server or other clients down, and the server's memory
//! is bounded by bytes ([`Limits`]), whatever its clients and handlers do.

mod connection;
#[cfg(feature = "grpc")]
mod grpc;
mod hook;
mod limits;
mod outbox;
pub(crate) mod router;
mod stream;
mod trust;

pub use hook::Hook;
pub use limits::Limits;
pub(crate) use router::note_decoded;
pub use trust::Trust;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::frame::{self, FrameKind, Header};
use crate::metrics;
use crate::policy::AdmissionConfig;
use crate::policy::admission::Admission;
use crate::service::Service;
use crate::status::Code;
use crate::sync::Budget;
use router::Router;
use stream::Stream;

/// Builds a [`Server`].
#[derive(Default)]
pub struct ServerBuilder {
    services: HashMap<u16, Arc<dyn Service>>,
    hooks: Vec<Arc<dyn Hook>>,
    limits: Limits,
    unmonitored: bool,
    slow_call: Option<Duration>,
    admission: AdmissionConfig,
    trust: Trust,
    /// Where the built router goes, for channels made before it existed.
    router: Arc<OnceLock<Arc<Router>>>,
    readiness: Option<Readiness>,
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Whether the process is ready for traffic, as its readiness checks say.
type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// Calls slower than this are logged at warn unless the server is told otherwise.
pub const DEFAULT_SLOW_CALL: Duration = Duration::from_secs(1);

impl ServerBuilder {
    /// Hosts a service (a generated `XxxServer`).
    ///
    /// # Panics
    /// If a service with the same id is already added: ids must be unique in a deployment,
    /// which the IDL compiler checks for everything compiled together.
    pub fn add_service(mut self, service: impl Service) -> ServerBuilder {
        let id = service.descriptor().id;
        let previous = self.services.insert(id, Arc::new(service));
        assert!(
            previous.is_none(),
            "two services with id {id} added to one server"
        );
        self
    }

    /// Adds a hook that sees every request (see [`Hook`]); hooks run in the order added.
    pub fn hook(mut self, hook: impl Hook) -> ServerBuilder {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Turns the built-in monitoring on (the default) or off. Off, the server counts nothing
    /// and logs no slow calls: for measuring what monitoring costs, not for production.
    pub fn monitoring(mut self, on: bool) -> ServerBuilder {
        self.unmonitored = !on;
        self
    }

    /// Logs calls that take longer than `threshold` (from their frame's arrival to their
    /// response) at warn, with their trace id; default [`DEFAULT_SLOW_CALL`]. Calls that fail
    /// `INTERNAL` are always logged.
    pub fn slow_call_threshold(mut self, threshold: Duration) -> ServerBuilder {
        self.slow_call = Some(threshold);
        self
    }

    /// Sets how the server detects overload and sheds load by priority (DAGOR; on by
    /// default, see [`crate::policy::admission`]). `enabled: false` turns it off: for
    /// measuring what it does, not for production.
    pub fn admission(mut self, config: AdmissionConfig) -> ServerBuilder {
        self.admission = config;
        self
    }

    /// Sets which peers' header fields (priority, user key, dye, `no_retry`, trace id,
    /// deadline) are obeyed; from others they are the method's defaults, and the per-address
    /// limits apply (see [`Trust`]). Default: loopback and the private ranges.
    pub fn trust(mut self, trust: Trust) -> ServerBuilder {
        self.trust = trust;
        self
    }

    /// Sets what says whether the process is ready for traffic, beside the server's own
    /// state (serving, not draining): the gRPC health check answers `NOT_SERVING` while it
    /// says no. [`Config::server_builder`](crate::Config::server_builder) sets the process's
    /// readiness checks (`crate::monitor::health`, what `/readyz` answers from).
    pub fn readiness(mut self, ready: impl Fn() -> bool + Send + Sync + 'static) -> ServerBuilder {
        self.readiness = Some(Arc::new(ready));
        self
    }

    /// Sets the limits.
    pub fn limits(mut self, limits: Limits) -> ServerBuilder {
        self.limits = limits;
        self
    }

    /// Speaks TLS on every accepted connection (see [`crate::tls`]). The handshake must
    /// finish within [`Limits::read_timeout`].
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: Arc<crate::tls::rustls::ServerConfig>) -> ServerBuilder {
        self.tls = Some(tokio_rustls::TlsAcceptor::from(config));
        self
    }

    /// Where the router will be once the server is built, and the frame limit, for
    /// [`local_channel`](ServerBuilder::local_channel) (`crate::local`).
    pub(crate) fn router_to_be(&self) -> (Arc<OnceLock<Arc<Router>>>, usize) {
        (self.router.clone(), self.limits.max_frame)
    }

    /// Builds the server; call [`Server::serve`] to accept connections.
    pub fn build(self) -> Server {
        let limits = self.limits;
        let input = Budget::new(limits.max_buffered_input);
        let admission = self
            .admission
            .enabled
            .then(|| Arc::new(Admission::new(self.admission)));
        if let Some(a) = &admission
            && !self.unmonitored
        {
            let _ = crate::policy::admission::first_monitored().set(Arc::downgrade(a));
        }
        let max_connections = limits.max_connections;
        let router = Arc::new(Router::new(
            self.services,
            self.hooks,
            limits,
            input.clone(),
            (!self.unmonitored).then(|| self.slow_call.unwrap_or(DEFAULT_SLOW_CALL)),
            admission,
            self.trust,
        ));
        let _ = self.router.set(router.clone());
        Server {
            shared: Arc::new(Shared {
                #[cfg(feature = "grpc")]
                grpc: grpc::Paths::new(router.hosted()),
                draining: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                readiness: self.readiness,
                connections: Arc::new(Semaphore::new(max_connections)),
                peers: Arc::new(Mutex::new(HashMap::new())),
                input,
                refusals: Arc::new(Semaphore::new(REFUSALS_AT_ONCE)),
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
                router,
                #[cfg(feature = "tls")]
                tls: self.tls,
            }),
        }
    }
}

/// Connections refused at the cap that are still being told why.
const REFUSALS_AT_ONCE: usize = 64;

pub(crate) struct Shared {
    pub(crate) router: Arc<Router>,
    connections: Arc<Semaphore>,
    /// Connections open per untrusted address.
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Bytes of input buffered across all connections.
    pub(crate) input: Arc<Budget>,
    refusals: Arc<Semaphore>,
    pub(crate) shutdown: CancellationToken,
    /// Connection tasks, for shutdown to wait on.
    tasks: TaskTracker,
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// The gRPC path of each hosted method.
    #[cfg(feature = "grpc")]
    grpc: grpc::Paths,
    /// Set by [`Server::drain`]: still serving, but no longer ready.
    draining: AtomicBool,
    /// Whether this server counts among the process's stopping ones (`/readyz`), from its
    /// drain or shutdown until it is dropped.
    stopping: AtomicBool,
    readiness: Option<Readiness>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Gone, it no longer holds the process's readiness down: another server of the
        // process may be serving still.
        if *self.stopping.get_mut() {
            crate::metrics::process::server_stopping(-1);
        }
    }
}

/// A running set of services. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    /// Starts building a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The limits the server was built with.
    pub fn limits(&self) -> &Limits {
        &self.shared.router.limits
    }

    /// Accepts connections on `listener` until [`shutdown`](Server::shutdown).
    ///
    /// # Errors
    /// Only if accepting fails in a way that will not recover; per-connection errors close
    /// that connection only.
    pub async fn serve(&self, listener: TcpListener) -> io::Result<()> {
        let shared = &self.shared;
        if let Some(admission) = &shared.router.admission {
            admission.start_probe();
        }
        loop {
            let accepted = tokio::select! {
                _ = shared.shutdown.cancelled() => return Ok(()),
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(conn) => conn,
                // Out of file descriptors and the like: back off instead of spinning.
                Err(e) if is_transient(&e) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
                metrics::count(&metrics::process().refused);
                let max = shared.router.limits.max_connections;
                self.refuse(
                    stream,
                    format!("the server is at its limit of {max} connections"),
                );
                continue;
            };
            let trusted = shared.router.trust.trusts(Some(peer));
            let per_peer = if trusted {
                None
            } else {
                match PeerSlot::take(
                    &shared.peers,
                    trust::peer_group(peer.ip()),
                    shared.router.limits.max_connections_per_peer,
                ) {
                    Some(slot) => Some(slot),
                    None => {
                        metrics::count(&metrics::process().refused);
                        let max = shared.router.limits.max_connections_per_peer;
                        self.refuse(
                            stream,
                            format!("your address is at its limit of {max} connections"),
                        );
                        continue;
                    }
                }
            };
            metrics::count(&metrics::process().accepted);
            let _ = stream.set_nodelay(true);
            let shared = self.shared.clone();
            self.shared.tasks.spawn(async move {
                if let Some(stream) = shared.handshake(stream).await {
                    // A client certificate can vouch for a peer its address does not (the
                    // per-address connection cap still counted it as a stranger).
                    let trusted = trusted || stream.trusted_identity(&shared.router.trust);
                    shared.serve_connection(stream, peer, trusted).await;
                }
                metrics::count(&metrics::process().closed);
                drop((permit, per_peer));
            });
        }
    }

    /// Tells a connection over a cap why it is closed: a GOAWAY frame with `OVERLOADED`,
    /// then a short wait for the client to read it (closing at once with its request unread
    /// would reset the connection and lose the frame).
    fn refuse(&self, stream: TcpStream, why: String) {
        // A TLS client could not read a plain-text refusal: it sees the connection close.
        #[cfg(feature = "tls")]
        if self.shared.tls.is_some() {
            return;
        }
        let Ok(permit) = self.shared.refusals.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let header = Header {
                kind: FrameKind::GOAWAY,
                status_code: Code::OVERLOADED.0,
                status_message: why.into(),
                ..Header::default()
            };
            let mut out = Vec::new();
            frame::encode(&header, &[], &mut out);
            let _ = tokio::time::timeout(Duration::from_secs(1), async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut stream = stream;
                stream.write_all(&out).await?;
                stream.shutdown().await?;
                let mut sink = [0u8; 1024];
                while stream.read(&mut sink).await? > 0 {}
                io::Result::Ok(())
            })
            .await;
            drop(permit);
        });
    }

    /// The server's overload control, unless it was turned off.
    pub fn admission(&self) -> Option<&Admission> {
        self.shared.router.admission.as_deref()
    }

    /// Stops being ready at once, keeps serving for `period` (so that load balancers and
    /// health probes see it and send no more), then [`shutdown`](Server::shutdown)s: the
    /// future ends when that does. While it drains, the gRPC health check answers
    /// `NOT_SERVING`, and the process's `/readyz` 503.
    pub fn drain(&self, period: Duration) -> impl Future<Output = ()> + Send + 'static {
        self.shared.draining.store(true, Ordering::Release);
        self.shared.stop();
        let server = self.clone();
        async move {
            tokio::select! {
                _ = server.shared.shutdown.cancelled() => {}
                _ = tokio::time::sleep(period) => {}
            }
            server.shutdown().await;
        }
    }

    /// Whether the server is ready for more traffic: serving, not draining, and its
    /// [`readiness`](ServerBuilder::readiness) saying yes.
    pub fn is_ready(&self) -> bool {
        self.shared.serving()
    }

    /// Stops accepting connections, tells every client to go away, and waits (up to the
    /// grace period) for requests in flight to be answered.
    pub async fn shutdown(&self) {
        self.shared.stop();
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
        let grace = self.shared.router.limits.shutdown_grace;
        let _ = tokio::time::timeout(grace, self.shared.tasks.wait()).await;
    }

    /// The server's router, for [`local_channel`](Server::local_channel) (`crate::local`).
    pub(crate) fn router(&self) -> &Arc<Router> {
        &self.shared.router
    }
}

impl Shared {
    /// Counts this server among the process's stopping ones, once.
    fn stop(&self) {
        if !self.stopping.swap(true, Ordering::AcqRel) {
            crate::metrics::process::server_stopping(1);
        }
    }

    /// Whether the server is ready for more traffic (see [`Server::is_ready`]).
    fn serving(&self) -> bool {
        !self.draining.load(Ordering::Acquire)
            && !self.shutdown.is_cancelled()
            && self.readiness.as_ref().is_none_or(|ready| ready())
    }

    /// Serves a connection in the protocol its client speaks: svrkit frames, or gRPC when it
    /// opens with the HTTP/2 preface (or negotiated `h2` in TLS). A client that says nothing
    /// within the time it would have to send its first frame is closed.
    async fn serve_connection(self: Arc<Shared>, stream: Stream, peer: SocketAddr, trusted: bool) {
        let opened = std::time::Instant::now();
        let first = self.router.limits.first_wait(trusted);
        let sniffed = tokio::select! {
            _ = self.shutdown.cancelled() => return,
            sniffed = tokio::time::timeout(first, stream.opens_with_http2()) => sniffed,
        };
        match sniffed {
            Ok(Ok(false)) => connection::run(self, stream, Some(peer), trusted, opened).await,
            #[cfg(feature = "grpc")]
            Ok(Ok(true)) => grpc::run(self, stream, Some(peer), trusted, opened).await,
            // Without the feature: an HTTP/2 client is told by the framing that this is not
            // gRPC ("not svrkit" closes its connection).
            #[cfg(not(feature = "grpc"))]
            Ok(Ok(true)) => connection::run(self, stream, Some(peer), trusted, opened).await,
            // Gone or silent.
            Ok(Err(_)) | Err(_) => {}
        }
    }

    /// The connection's stream: as accepted, or after its TLS handshake (`None` if that
    /// failed or took longer than the read timeout).
    async fn handshake(&self, stream: TcpStream) -> Option<Stream> {
        #[cfg(feature = "tls")]
        if let Some(acceptor) = &self.tls {
            let timeout = self.router.limits.read_timeout;
            let tls = tokio::time::timeout(timeout, acceptor.accept(stream)).await;
            return match tls {
                Ok(Ok(tls)) => Some(Stream::Tls(Box::new(tls))),
                _ => None,
            };
        }
        Some(Stream::Tcp(stream))
    }
}

/// One of an untrusted address's connections: counted while it is open.
struct PeerSlot {
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PeerSlot {
    /// A slot for one more connection from `ip`, unless it has `max` open.
    fn take(
        peers: &Arc<Mutex<HashMap<IpAddr, usize>>>,
        ip: IpAddr,
        max: usize,
    ) -> Option<PeerSlot> {
        let mut open = peers.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            peers: peers.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Binds a listener on `addr` (`host:port`), with an error that says, in one line, which
/// address and why, and what to do about the common cause: `cannot listen on
/// 127.0.0.1:7000: Address already in use (os error 98): the port is taken (by another
/// process, or another listener of this one); free it or choose another`.
///
/// # Errors
/// When the address cannot be bound; the error keeps the cause's kind.
pub async fn listen(addr: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = match e.kind() {
            io::ErrorKind::AddrInUse => {
                ": the port is taken (by another process, or another listener of this one); \
                 free it or choose another"
            }
            io::ErrorKind::PermissionDenied => ": ports below 1024 need privileges",
            io::ErrorKind::AddrNotAvailable => ": no interface of this machine has that address",
            _ => "",
        };
        io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}{hint}"))
    })
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || e
        .raw_os_error()
        .is_some_and(|code| code == 24 || code == 23) // EMFILE, ENFILE
}

#[cfg(test)]
mod listen_tests {
    #[tokio::test]
    async fn a_taken_port_is_named_with_its_cause_in_one_line() {
        let taken = super::listen("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let e = super::listen(&addr).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        let said = e.to_string();
        assert!(
            said.starts_with(&format!("cannot listen on {addr}: ")),
            "{said}"
        );
        assert!(said.ends_with("free it or choose another"), "{said}");
        assert_eq!(said.lines().count(), 1);
    }
}
