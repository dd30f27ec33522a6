//! Endpoints, the set of them a channel calls (which can change while calls run), and the
//! balancer that picks one per call from the request's key and each endpoint's load and
//! health.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::Call;
use super::ChannelOptions;
use super::connection::ClientConn;
use crate::status::Status;

/// Chooses an endpoint for each call attempt.
///
/// It sees the call (its method, its key: [`Call::key`], by default the user key) and every
/// endpoint's [`load`](Endpoint::load) and [`health`](Endpoint::is_healthy). Round robin is
/// the default; consistent hashing, power-of-two-choices and outlier ejection implement this
/// too.
pub trait Balancer: Send + Sync + 'static {
    /// The index in `endpoints` (never empty) to call, or `None` to fail the attempt with
    /// `UNAVAILABLE`.
    fn pick(&self, call: &Call, endpoints: &[Arc<Endpoint>]) -> Option<usize>;
}

/// Cycles through the healthy endpoints; when none is healthy, through all of them (so that
/// the call fails with the real reason and reconnection is tried on schedule).
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn pick(&self, _call: &Call, endpoints: &[Arc<Endpoint>]) -> Option<usize> {
        let n = endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| endpoints[i].is_healthy())
            .or(Some(start % n))
    }
}

/// Whether an endpoint should get calls: down for a while after a failed connect or a
/// connection that went silent, with the wait doubling while failures go on.
#[derive(Debug)]
pub(crate) struct Health {
    state: Mutex<HealthState>,
    min_backoff: Duration,
    max_backoff: Duration,
}

#[derive(Debug, Default)]
struct HealthState {
    down_until: Option<Instant>,
    backoff: Option<Duration>,
}

impl Health {
    fn new(options: &ChannelOptions) -> Health {
        Health {
            state: Mutex::default(),
            min_backoff: options.min_backoff,
            max_backoff: options.max_backoff,
        }
    }

    /// Takes the endpoint out of rotation for the next backoff period.
    pub(crate) fn mark_down(&self) {
        if let Ok(mut s) = self.state.lock() {
            let backoff = s
                .backoff
                .map_or(self.min_backoff, |b| (b * 2).min(self.max_backoff));
            s.backoff = Some(backoff);
            s.down_until = Instant::now().checked_add(backoff);
        }
    }

    fn mark_up(&self) {
        if let Ok(mut s) = self.state.lock() {
            *s = HealthState::default();
        }
    }

    /// When the endpoint may be tried again, if it is down.
    fn down_until(&self) -> Option<Instant> {
        let until = self.state.lock().ok()?.down_until?;
        (Instant::now() < until).then_some(until)
    }
}

/// One replica of a service: its address, a few multiplexed connections to it (made when
/// first needed), how many calls it has in flight, and whether it is healthy.
pub struct Endpoint {
    addr: String,
    slots: Box<[Slot]>,
    next_slot: AtomicUsize,
    in_flight: AtomicUsize,
    health: Arc<Health>,
}

struct Slot {
    conn: Mutex<Option<Arc<ClientConn>>>,
    /// Held while connecting, so that one caller connects and the others wait for it.
    connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("load", &self.load())
            .field("healthy", &self.is_healthy())
            .finish()
    }
}

impl Endpoint {
    fn new(addr: String, options: &ChannelOptions) -> Endpoint {
        Endpoint {
            addr,
            slots: (0..options.connections_per_endpoint.max(1))
                .map(|_| Slot {
                    conn: Mutex::new(None),
                    connecting: tokio::sync::Mutex::new(()),
                })
                .collect(),
            next_slot: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            health: Arc::new(Health::new(options)),
        }
    }

    /// The address (`host:port`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Calls in flight to this endpoint from this channel.
    pub fn load(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether the endpoint is in rotation: false for a while after a failed connect or a
    /// connection that stopped answering keepalive pings.
    pub fn is_healthy(&self) -> bool {
        self.health.down_until().is_none()
    }

    /// Counts a call in flight until the guard drops (also when the call is abandoned).
    pub(crate) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// A usable connection, made now if needed.
    pub(crate) async fn connection(
        &self,
        options: &ChannelOptions,
    ) -> Result<Arc<ClientConn>, Status> {
        let i = self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let slot = &self.slots[i];
        if let Some(conn) = slot.ready() {
            return Ok(conn);
        }
        let _connecting = slot.connecting.lock().await;
        if let Some(conn) = slot.ready() {
            return Ok(conn);
        }
        if let Some(until) = self.health.down_until() {
            return Err(Status::unavailable(format!(
                "{} is down; next attempt in {:?}",
                self.addr,
                until.saturating_duration_since(Instant::now())
            )));
        }
        match ClientConn::connect(&self.addr, options, self.health.clone()).await {
            Ok(conn) => {
                self.health.mark_up();
                let conn = Arc::new(conn);
                if let Ok(mut c) = slot.conn.lock() {
                    *c = Some(conn.clone());
                }
                Ok(conn)
            }
            Err(e) => {
                self.health.mark_down();
                Err(Status::unavailable(format!(
                    "cannot connect to {}: {e}",
                    self.addr
                )))
            }
        }
    }
}

impl Slot {
    fn ready(&self) -> Option<Arc<ClientConn>> {
        let conn = self.conn.lock().ok()?;
        conn.as_ref().filter(|c| c.is_usable()).cloned()
    }
}

/// A call in flight to an endpoint; dropping it takes the call off the endpoint's load.
pub(crate) struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The endpoints a channel calls. Can be changed while calls run: endpoints that stay keep
/// their connections, removed ones finish the calls they have.
pub struct EndpointSet {
    current: RwLock<Arc<[Arc<Endpoint>]>>,
    options: ChannelOptions,
}

impl std::fmt::Debug for EndpointSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.snapshot().iter()).finish()
    }
}

impl EndpointSet {
    pub(crate) fn new(addrs: Vec<String>, options: ChannelOptions) -> EndpointSet {
        let set = EndpointSet {
            current: RwLock::new(Arc::from(Vec::new())),
            options,
        };
        set.update(addrs);
        set
    }

    /// The endpoints now.
    pub fn snapshot(&self) -> Arc<[Arc<Endpoint>]> {
        self.current
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Replaces the set with `addrs`, keeping the endpoint (and its connections) of every
    /// address that stays. Calls in flight are not disturbed.
    pub fn update(&self, addrs: impl IntoIterator<Item = impl Into<String>>) {
        let old = self.snapshot();
        let new: Vec<Arc<Endpoint>> = addrs
            .into_iter()
            .map(Into::into)
            .map(|addr: String| {
                old.iter()
                    .find(|e| e.addr == addr)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Endpoint::new(addr, &self.options)))
            })
            .collect();
        if let Ok(mut current) = self.current.write() {
            *current = Arc::from(new);
        }
    }
}
