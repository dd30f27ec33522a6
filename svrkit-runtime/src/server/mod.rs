//! The server: one listener hosting any number of generated services.
//!
//! Independent services can be deployed together in one process or apart by registering
//! them on one server or on several; nothing else changes (the "logic container"). Requests
//! are dispatched by service id, then method id, and run concurrently: each connection is
//! multiplexed, answered out of order, and its responses are coalesced into as few writes as
//! the load allows.
//!
//! A handler that finishes on its first poll (most do) is run right on the connection's reader
//! and answered in the same write as the other requests of that read: no task, timer or
//! bookkeeping, which keeps server CPU per request close to a bare TCP echo. A handler that
//! waits moves to a task of its own. So a handler that computes for long without awaiting
//! holds up the other requests of its connection (not other connections): move such work
//! to `tokio::task::spawn_blocking`.
//!
//! Every limit answers with a status or closes the offending connection, never more: a broken
//! or malicious client cannot take the server or other clients down.

mod connection;

pub(crate) use connection::run_call;

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::Channel;
use crate::frame::DEFAULT_MAX_FRAME;
use crate::service::Service;

/// Limits that keep one client, or too many, from hurting the server.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Requests in flight on one connection; more are answered `OVERLOADED`.
    pub max_in_flight_per_connection: usize,
    /// Requests in flight on the whole server; more are answered `OVERLOADED`.
    pub max_in_flight: usize,
    /// Largest frame (header plus body) accepted; a larger one closes the connection before
    /// anything is allocated for it.
    pub max_frame: usize,
    /// How long a connection may make no progress writing responses (a client that stopped
    /// reading) before it is closed.
    pub write_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 10_000,
            max_in_flight_per_connection: 1_024,
            max_in_flight: 65_536,
            max_frame: DEFAULT_MAX_FRAME,
            write_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Builds a [`Server`].
#[derive(Default)]
pub struct ServerBuilder {
    services: HashMap<u16, Arc<dyn Service>>,
    limits: Limits,
}

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

    /// Sets the limits.
    pub fn limits(mut self, limits: Limits) -> ServerBuilder {
        self.limits = limits;
        self
    }

    /// Builds the server; call [`Server::serve`] to accept connections.
    pub fn build(self) -> Server {
        Server {
            shared: Arc::new(Shared {
                in_flight: Arc::new(Semaphore::new(self.limits.max_in_flight)),
                connections: Arc::new(Semaphore::new(self.limits.max_connections)),
                services: self.services,
                limits: self.limits,
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) services: HashMap<u16, Arc<dyn Service>>,
    pub(crate) limits: Limits,
    pub(crate) in_flight: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    shutdown: CancellationToken,
    /// Connection tasks, for shutdown to wait on.
    tasks: TaskTracker,
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

    /// Accepts connections on `listener` until [`shutdown`](Server::shutdown).
    ///
    /// # Errors
    /// Only if accepting fails in a way that will not recover; per-connection errors close
    /// that connection only.
    pub async fn serve(&self, listener: TcpListener) -> io::Result<()> {
        let shared = &self.shared;
        loop {
            let accepted = tokio::select! {
                _ = shared.shutdown.cancelled() => return Ok(()),
                accepted = listener.accept() => accepted,
            };
            let (stream, _peer) = match accepted {
                Ok(conn) => conn,
                // Out of file descriptors and the like: back off instead of spinning.
                Err(e) if is_transient(&e) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let shared = self.shared.clone();
            self.shared.tasks.spawn(async move {
                connection::run(shared, stream).await;
                drop(permit);
            });
        }
    }

    /// Stops accepting connections, tells every client to go away, and waits (up to the
    /// grace period) for requests in flight to be answered.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
        let _ =
            tokio::time::timeout(self.shared.limits.shutdown_grace, self.shared.tasks.wait()).await;
    }

    /// A channel to this server's services that does not go through the network: calls are
    /// dispatched in process, through the same client stubs and call path as remote ones.
    pub fn local_channel(&self) -> Channel {
        Channel::local(self.shared.clone())
    }

    pub(crate) fn shutdown_token(shared: &Shared) -> &CancellationToken {
        &shared.shutdown
    }
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
