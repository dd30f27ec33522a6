//! Endpoints and the changeable set of them a channel calls: each endpoint's connections, its
//! load, its health (down after failed connects, ejected after repeated failures, probed back
//! in) and the admission level its server last reported.
//!
//! Everything a call reads here is an atomic load: no lock on the path of a call that finds
//! its connection made.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};

use super::ChannelOptions;
use super::connection::ClientConn;
use crate::clock;
use crate::status::Status;

/// Whether an endpoint should get calls: down for a while after a failed connect, a connection
/// that went silent, or [`eject_after`](ChannelOptions::eject_after) failures in a row, with
/// the wait doubling while failures go on. When the wait is over the endpoint is tried again
/// (probed): one success puts it back for good, one more failure takes it out for twice as
/// long.
#[derive(Debug)]
pub(crate) struct Health {
    /// Until when the endpoint is out (milliseconds on the policy clock; 0: in rotation).
    down_until: AtomicU64,
    /// The current wait in milliseconds (0: no failure since the last success).
    backoff: AtomicU64,
    min_backoff: u64,
    max_backoff: u64,
}

impl Health {
    fn new(options: &ChannelOptions) -> Health {
        let ms = |d: Duration| d.as_millis().max(1) as u64;
        Health {
            down_until: AtomicU64::new(0),
            backoff: AtomicU64::new(0),
            min_backoff: ms(options.min_backoff),
            max_backoff: ms(options.max_backoff).max(ms(options.min_backoff)),
        }
    }

    /// Takes the endpoint out of rotation for the next backoff period.
    pub(crate) fn mark_down(&self) {
        let backoff = match self.backoff.load(Relaxed) {
            0 => self.min_backoff,
            b => (b * 2).min(self.max_backoff),
        };
        self.backoff.store(backoff, Relaxed);
        self.down_until
            .store(clock::millis(Instant::now()) + backoff, Relaxed);
    }

    fn mark_up(&self) {
        if self.backoff.load(Relaxed) != 0 {
            self.backoff.store(0, Relaxed);
            self.down_until.store(0, Relaxed);
        }
    }

    /// When the endpoint may be tried again (milliseconds on the policy clock), if it is
    /// down.
    fn down_until(&self) -> Option<u64> {
        let until = self.down_until.load(Relaxed);
        (until != 0 && clock::millis(Instant::now()) < until).then_some(until)
    }
}

/// One replica of a service: its address, a few multiplexed connections to it (made when
/// first needed), how many calls it has in flight, whether it is healthy, and how much its
/// server admits.
pub struct Endpoint {
    addr: String,
    /// Its share of calls relative to the others' (100: the default), as discovery says.
    weight: AtomicU32,
    slots: Box<[Slot]>,
    next_slot: AtomicUsize,
    in_flight: AtomicUsize,
    health: Arc<Health>,
    /// Failures in a row (reset by a success).
    failures: AtomicU32,
    eject_after: u32,
    /// The admission level the server last reported (0: none yet), and when.
    level: AtomicU32,
    level_at: AtomicU64,
    /// Why the last connect failed, for the calls refused while the endpoint is down.
    last_connect_error: ArcSwapOption<String>,
}

struct Slot {
    conn: ArcSwapOption<ClientConn>,
    /// Held while connecting, so that one caller connects and the others wait for it.
    connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("weight", &self.weight())
            .field("load", &self.load())
            .field("healthy", &self.is_healthy())
            .field("admission_level", &self.admission_level())
            .finish()
    }
}

/// How long a reported admission level is believed without a fresh response. After that one
/// call it would drop is sent instead, as a probe, and its response says the level again;
/// the others are still dropped until it answers or this passes again. So that a caller
/// forgets an overload within this long of its end, and spends one call per period on
/// learning whether it has ended.
const LEVEL_FRESH_MS: u64 = 50;

/// The weight of an endpoint nobody gave one.
pub const DEFAULT_WEIGHT: u32 = 100;

impl Endpoint {
    pub(crate) fn new(addr: String, options: &ChannelOptions) -> Endpoint {
        Endpoint {
            addr,
            weight: AtomicU32::new(DEFAULT_WEIGHT),
            slots: (0..options.connections_per_endpoint.max(1))
                .map(|_| Slot {
                    conn: ArcSwapOption::empty(),
                    connecting: tokio::sync::Mutex::new(()),
                })
                .collect(),
            next_slot: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            health: Arc::new(Health::new(options)),
            failures: AtomicU32::new(0),
            eject_after: options.eject_after.max(1),
            level: AtomicU32::new(0),
            level_at: AtomicU64::new(0),
            last_connect_error: ArcSwapOption::empty(),
        }
    }

    /// The address (`host:port`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Its weight: balancers give it calls in proportion (see [`EndpointSet::update_weighted`]).
    #[inline]
    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    pub(crate) fn set_weight(&self, weight: u32) {
        self.weight.store(weight.max(1), Relaxed);
    }

    /// Calls in flight to this endpoint from this channel.
    #[inline]
    pub fn load(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    /// Whether the endpoint is in rotation: false for a while after a failed connect, a
    /// connection that stopped answering keepalive pings, or repeated failures.
    #[inline]
    pub fn is_healthy(&self) -> bool {
        self.health.down_until().is_none()
    }

    /// The admission level its server last reported (0: none yet).
    pub fn admission_level(&self) -> u32 {
        self.level.load(Relaxed)
    }

    /// Whether its server, by the level it last reported, would admit a request of `level`
    /// (see [`crate::policy::priority`]). A level not refreshed for a while is not trusted.
    #[inline]
    pub(crate) fn admits(&self, level: u32, now_ms: u64) -> bool {
        let admitted = self.level.load(Relaxed);
        if admitted == 0 || level < admitted {
            return true;
        }
        // Stale: the first call to see it goes as the probe (restarting the period), the
        // rest are dropped as before.
        let at = self.level_at.load(Relaxed);
        now_ms.saturating_sub(at) > LEVEL_FRESH_MS
            && self
                .level_at
                .compare_exchange(at, now_ms, Relaxed, Relaxed)
                .is_ok()
    }

    /// Records the admission level of a response (0: the server does not say).
    #[inline]
    pub(crate) fn note_level(&self, level: u32, now_ms: u64) {
        if level != 0 {
            self.level.store(level, Relaxed);
            self.level_at.store(now_ms, Relaxed);
        }
    }

    /// Records a call that reached the server and got an answer.
    #[inline]
    pub(crate) fn succeeded(&self) {
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
        self.health.mark_up();
    }

    /// Records a call that failed for the endpoint's sake (unreachable, broken connection,
    /// `UNAVAILABLE`): enough in a row eject it.
    pub(crate) fn failed(&self) {
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        if n >= self.eject_after && self.health.down_until().is_none() {
            self.health.mark_down();
        }
    }

    /// Counts a call in flight until the guard drops (also when the call is abandoned).
    pub(crate) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    /// A usable connection, made now if needed.
    pub(crate) async fn connection(
        &self,
        options: &ChannelOptions,
    ) -> Result<Arc<ClientConn>, Status> {
        let i = self.next_slot.fetch_add(1, Relaxed) % self.slots.len();
        let slot = &self.slots[i];
        if let Some(conn) = slot.ready() {
            return Ok(conn);
        }
        let _connecting = slot.connecting.lock().await;
        if let Some(conn) = slot.ready() {
            return Ok(conn);
        }
        if self.health.down_until().is_some() {
            // The cause, not only the effect: a caller whose first attempt was retried
            // sees this message. (When the endpoint is tried again is the channel's
            // business: a one-shot caller would read it as a promise to retry.)
            let why = self
                .last_connect_error
                .load()
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            return Err(Status::unavailable(format!("{} is down{why}", self.addr)));
        }
        match ClientConn::connect(&self.addr, options, self.health.clone()).await {
            Ok(conn) => {
                let conn = Arc::new(conn);
                slot.conn.store(Some(conn.clone()));
                Ok(conn)
            }
            Err(e) => {
                self.health.mark_down();
                let hint = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => " (is the server running?)",
                    std::io::ErrorKind::TimedOut => " (is the address right, and reachable?)",
                    _ => "",
                };
                let message = format!("cannot connect to {}: {e}{hint}", self.addr);
                self.last_connect_error
                    .store(Some(Arc::new(format!("cannot connect: {e}{hint}"))));
                Err(Status::unavailable(message))
            }
        }
    }
}

impl Slot {
    fn ready(&self) -> Option<Arc<ClientConn>> {
        let conn = self.conn.load();
        conn.as_ref().filter(|c| c.is_usable()).cloned()
    }
}

/// A call in flight to an endpoint; dropping it takes the call off the endpoint's load.
pub(crate) struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// The endpoints a channel (or one of its groups) calls. Can be changed while calls run:
/// endpoints that stay keep their connections, removed ones finish the calls they have.
///
/// A set fed by discovery starts *unresolved*: until its first update, calls wait for it
/// (within their deadlines) instead of failing for want of endpoints.
pub struct EndpointSet {
    current: ArcSwap<Vec<Arc<Endpoint>>>,
    /// Tiers of preference (the caller's SET and zone first): calls go to the first tier
    /// with a healthy endpoint, and to all of `current` when none has one.
    preferred: ArcSwap<Vec<Arc<Vec<Arc<Endpoint>>>>>,
    options: ChannelOptions,
    resolved: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for EndpointSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.snapshot().iter()).finish()
    }
}

impl EndpointSet {
    pub(crate) fn new(addrs: Vec<String>, options: ChannelOptions) -> EndpointSet {
        let set = EndpointSet::unresolved(options);
        set.update(addrs);
        set
    }

    /// An empty set that waits for its first update (from discovery).
    pub(crate) fn unresolved(options: ChannelOptions) -> EndpointSet {
        EndpointSet {
            current: ArcSwap::from_pointee(Vec::new()),
            preferred: ArcSwap::from_pointee(Vec::new()),
            options,
            resolved: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Whether the set has been given its endpoints (a static list always has).
    pub fn is_resolved(&self) -> bool {
        *self.resolved.borrow()
    }

    /// Waits until the set has been given its endpoints.
    pub async fn resolved(&self) {
        let mut rx = self.resolved.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we wait.
        let _ = rx.wait_for(|&r| r).await;
    }

    /// The endpoints now.
    #[inline]
    pub fn snapshot(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.current.load_full()
    }

    /// The endpoints a call may choose from now: the first preferred tier with a healthy
    /// endpoint, else all.
    #[inline]
    pub fn choosable(&self) -> Arc<Vec<Arc<Endpoint>>> {
        let tiers = self.preferred.load();
        for tier in tiers.iter() {
            if tier.iter().any(|e| e.is_healthy()) {
                return tier.clone();
            }
        }
        self.snapshot()
    }

    /// Makes calls go to the endpoints of the set at these addresses while any of them is
    /// healthy, and to all of the set otherwise. An empty list, or one naming none of the
    /// set, prefers nothing.
    pub fn prefer(&self, addrs: &[String]) {
        self.prefer_tiers(std::slice::from_ref(&addrs.to_vec()));
    }

    /// Like [`prefer`](EndpointSet::prefer) with tiers: calls go to the first tier that has
    /// a healthy endpoint, and to all of the set when none has (discovery prefers the
    /// caller's SET in its zone, then its SET, then its zone, this way). Tiers naming none
    /// of the set are left out.
    pub fn prefer_tiers(&self, tiers: &[Vec<String>]) {
        let now = self.snapshot();
        let tiers = tiers
            .iter()
            .map(|addrs| {
                now.iter()
                    .filter(|e| addrs.contains(&e.addr))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .filter(|tier| !tier.is_empty())
            .map(Arc::new)
            .collect();
        self.preferred.store(Arc::new(tiers));
    }

    /// Replaces the set with `addrs`, keeping the endpoint (and its connections) of every
    /// address that stays. Calls in flight are not disturbed.
    pub fn update(&self, addrs: impl IntoIterator<Item = impl Into<String>>) {
        self.update_weighted(addrs.into_iter().map(|a| (a.into(), DEFAULT_WEIGHT)));
    }

    /// Like [`update`](EndpointSet::update), with a weight per endpoint (at least 1): the
    /// balancers give an endpoint calls in proportion to its weight (power of two choices
    /// compares load per weight; the ring gives it points in proportion). An address listed
    /// twice counts once, with its first weight. Clears the preference ([`prefer`]).
    ///
    /// [`prefer`]: EndpointSet::prefer
    pub fn update_weighted(&self, endpoints: impl IntoIterator<Item = (String, u32)>) {
        let old = self.snapshot();
        let mut new: Vec<Arc<Endpoint>> = Vec::new();
        for (addr, weight) in endpoints {
            if new.iter().any(|e| e.addr == addr) {
                continue;
            }
            let endpoint = old
                .iter()
                .find(|e| e.addr == addr)
                .cloned()
                .unwrap_or_else(|| Arc::new(Endpoint::new(addr, &self.options)));
            endpoint.set_weight(weight);
            new.push(endpoint);
        }
        self.current.store(Arc::new(new));
        self.preferred.store(Arc::new(Vec::new()));
        self.resolved.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(eject_after: u32) -> Endpoint {
        Endpoint::new(
            "127.0.0.1:1".into(),
            &ChannelOptions {
                eject_after,
                min_backoff: Duration::from_secs(60),
                max_backoff: Duration::from_secs(600),
                ..ChannelOptions::default()
            },
        )
    }

    #[test]
    fn failures_in_a_row_eject_and_a_success_forgives() {
        let e = endpoint(3);
        e.failed();
        e.failed();
        e.succeeded();
        e.failed();
        e.failed();
        assert!(e.is_healthy(), "a success in between resets the count");
        e.failed();
        assert!(!e.is_healthy(), "three in a row eject");
        // The health's own wait doubles on each further ejection.
        assert_eq!(e.health.backoff.load(Relaxed), 60_000);
        e.health.mark_down();
        assert_eq!(e.health.backoff.load(Relaxed), 120_000);
        e.succeeded();
        assert!(e.is_healthy());
        assert_eq!(e.health.backoff.load(Relaxed), 0);
    }

    #[test]
    fn a_reported_level_is_trusted_only_while_fresh() {
        let e = endpoint(5);
        assert!(e.admits(511, 0), "nothing reported: admit");
        e.note_level(100, 1_000);
        assert!(e.admits(99, 1_000));
        assert!(!e.admits(100, 1_000));
        assert!(!e.admits(400, 1_000 + LEVEL_FRESH_MS));
        let stale = 1_001 + LEVEL_FRESH_MS;
        assert!(e.admits(400, stale), "stale: one call goes, to learn again");
        assert!(
            !e.admits(400, stale),
            "the others wait for its answer (or the next period)"
        );
        assert!(!e.admits(400, stale + LEVEL_FRESH_MS));
        assert!(e.admits(400, stale + LEVEL_FRESH_MS + 1), "the next probe");
        // The probe's answer: the overload is over.
        e.note_level(512, stale + LEVEL_FRESH_MS + 2);
        assert!(e.admits(400, stale + LEVEL_FRESH_MS + 2));
        e.note_level(0, 2_000);
        assert_eq!(
            e.admission_level(),
            512,
            "a response without a level changes nothing"
        );
    }

    /// Endpoints `a:1`, `b:1`, `c:1`, each ejected by its first failure for a minute.
    fn three_ejected_at_once() -> EndpointSet {
        let options = ChannelOptions {
            eject_after: 1,
            min_backoff: Duration::from_secs(60),
            ..ChannelOptions::default()
        };
        EndpointSet::new(vec!["a:1".into(), "b:1".into(), "c:1".into()], options)
    }

    fn addrs(v: Arc<Vec<Arc<Endpoint>>>) -> Vec<String> {
        v.iter().map(|e| e.addr.clone()).collect()
    }

    #[test]
    fn calls_stay_with_the_preferred_while_one_is_healthy() {
        let set = three_ejected_at_once();
        assert_eq!(addrs(set.choosable()).len(), 3, "nothing preferred: all");
        set.prefer(&["b:1".into(), "c:1".into(), "z:1".into()]);
        assert_eq!(addrs(set.choosable()), ["b:1", "c:1"]);
        set.snapshot()[1].failed();
        assert_eq!(addrs(set.choosable()), ["b:1", "c:1"], "c is still up");
        set.snapshot()[2].failed();
        assert_eq!(addrs(set.choosable()).len(), 3, "both down: any");
        set.update(["a:1", "b:1"]);
        assert_eq!(
            addrs(set.choosable()).len(),
            2,
            "an update clears the preference"
        );
    }

    #[test]
    fn calls_go_to_the_first_tier_with_a_healthy_endpoint() {
        let set = three_ejected_at_once();
        set.prefer_tiers(&[vec!["z:1".into()], vec!["a:1".into()], vec!["b:1".into()]]);
        assert_eq!(
            addrs(set.choosable()),
            ["a:1"],
            "a tier of strangers is skipped"
        );
        set.snapshot()[0].failed();
        assert_eq!(addrs(set.choosable()), ["b:1"], "the next tier");
        set.snapshot()[1].failed();
        assert_eq!(addrs(set.choosable()).len(), 3, "no tier healthy: any");
    }
}
