//! The counters of one method, on the server side and the client side, and what reading them
//! gives.
//!
//! Every counter is split into one cell per shard (a shard per worker thread, rounded up to a
//! power of two): a call adds to its thread's cells, so two cores serving the same method do
//! not pass a cache line back and forth on every request. Reading sums the shards; it is
//! done per scrape or per minute, never per call.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use super::histogram::{Cells, Histogram};
use crate::service::{MethodDescriptor, ServiceDescriptor};
use crate::status::Code;

/// Status codes counted apart; application codes (1000 and up) share one slot, codes this
/// runtime does not know another ([`Code::slot`]).
pub const STATUS_SLOTS: usize = crate::status::SLOTS;

/// The `status` label of each slot.
pub const STATUS_NAMES: [&str; STATUS_SLOTS] = crate::status::SLOT_NAMES;

/// Why the server refused a request without running it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Admission control or the memory budget shed it.
    Overload = 0,
    /// The server's or the connection's in-flight limit was reached.
    InFlightLimit = 1,
    /// Its deadline passed before it was picked up.
    Expired = 2,
}

/// The `reason` label of each [`Rejection`].
pub const REJECTION_NAMES: [&str; 3] = ["overload", "in_flight_limit", "expired"];

/// One shard of a method's server-side counters.
#[derive(Debug, Default)]
#[repr(align(128))]
struct ServerShard {
    requests: AtomicU64,
    /// Of `requests`, those that came as gRPC calls.
    grpc_requests: AtomicU64,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
    responses: [AtomicU64; STATUS_SLOTS],
    rejected: [AtomicU64; 3],
    /// Requests by caller slot (`callers.rs`).
    callers: [AtomicU64; super::callers::SLOTS],
    latency: Cells,
    queue_wait: Cells,
}

/// One shard of a method's client-side counters.
#[derive(Debug, Default)]
#[repr(align(128))]
struct ClientShard {
    requests: AtomicU64,
    responses: [AtomicU64; STATUS_SLOTS],
    latency: Cells,
    retries: AtomicU64,
    local_rejects: AtomicU64,
    weak_skips: AtomicU64,
}

/// Shards per counter: the worker threads a process is likely to run, as a power of two.
pub(crate) fn shards() -> usize {
    static SHARDS: OnceLock<usize> = OnceLock::new();
    *SHARDS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(4, usize::from)
            .next_power_of_two()
            .min(64)
    })
}

/// This thread's shard (threads are numbered as they first count something).
#[inline]
pub(crate) fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Relaxed) & (shards() - 1);
    }
    SHARD.with(|s| *s)
}

/// The counters of one method, both sides. Handles are `&'static`: they are made once per
/// method per process and resolved when a server or client is built, so counting is a few
/// relaxed atomic additions with no lookup.
pub struct MethodMetrics {
    /// The method.
    pub descriptor: &'static MethodDescriptor,
    /// Its service's full name.
    pub service: &'static str,
    server: Box<[ServerShard]>,
    client: Box<[ClientShard]>,
    /// The names of the callers counted in the shards' `callers`.
    callers: super::callers::Callers,
    /// Its per-call warnings, at most one a second of each kind: `INTERNAL` errors, slow
    /// calls (apart, so that a stream of slow calls cannot hide a new error).
    warnings: [WarnGate; 2],
}

/// Lets one warning a second through, counting the ones it holds back: a failing
/// dependency or a flood of bad calls costs a line a second per method, not a line a call.
#[derive(Debug, Default)]
pub(crate) struct WarnGate {
    /// Milliseconds (on the process's clock) before which warnings are held back.
    next_ms: AtomicU64,
    held: AtomicU64,
}

/// Warnings let through per method, at most.
const WARN_EVERY_MS: u64 = 1000;

impl WarnGate {
    /// `Some(n)` when a warning may be logged at `now_ms`, `n` being how many were held back
    /// since the last one; `None` when this one is held back.
    pub(crate) fn pass(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_ms.load(Relaxed);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(next, now_ms + WARN_EVERY_MS, Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.held.swap(0, Relaxed));
        }
        self.held.fetch_add(1, Relaxed);
        None
    }
}

impl std::fmt::Debug for MethodMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("MethodMetrics")
            .field(&self.descriptor.full_name)
            .finish()
    }
}

impl MethodMetrics {
    fn new(service: &'static str, descriptor: &'static MethodDescriptor) -> MethodMetrics {
        let n = shards();
        MethodMetrics {
            descriptor,
            service,
            server: (0..n).map(|_| ServerShard::default()).collect(),
            client: (0..n).map(|_| ClientShard::default()).collect(),
            callers: Default::default(),
            warnings: Default::default(),
        }
    }

    /// Whether a per-call warning may be logged now (see [`WarnGate`]), for an `INTERNAL`
    /// error or else a slow call; `Some` with the number of its kind held back since the
    /// last one.
    pub(crate) fn may_warn(&self, internal: bool) -> Option<u64> {
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        let start = *START.get_or_init(std::time::Instant::now);
        // +1: the first warning of the process passes at 0 ms too.
        let now_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        self.warnings[usize::from(internal)].pass(now_ms)
    }

    #[inline]
    fn server_shard(&self) -> &ServerShard {
        &self.server[shard()]
    }

    #[inline]
    fn client_shard(&self) -> &ClientShard {
        &self.client[shard()]
    }

    /// A request for this method arrived with a body of `bytes`.
    #[inline]
    pub(crate) fn server_request(&self, bytes: usize) {
        let s = self.server_shard();
        s.requests.fetch_add(1, Relaxed);
        s.request_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// The request just counted came from `caller` (a peer the server trusts, or not).
    #[inline]
    pub(crate) fn server_caller(&self, caller: &str, trusted: bool) {
        let slot = self.callers.slot(caller, trusted);
        self.server_shard().callers[slot].fetch_add(1, Relaxed);
    }

    /// The request just counted came as a gRPC call.
    #[inline]
    pub(crate) fn server_grpc_request(&self) {
        self.server_shard().grpc_requests.fetch_add(1, Relaxed);
    }

    /// The request was answered with `code` without running.
    #[inline]
    pub(crate) fn server_refused(&self, code: Code, rejection: Option<Rejection>) {
        let s = self.server_shard();
        s.responses[code.slot()].fetch_add(1, Relaxed);
        if let Some(r) = rejection {
            s.rejected[r as usize].fetch_add(1, Relaxed);
        }
    }

    /// The handler is about to run, `queue_wait` after the request's frame was read.
    #[inline]
    pub(crate) fn server_started(&self, queue_wait: Duration) {
        // Handlers started are the queue-wait observations, those done the latency ones: in
        // flight is their difference, with no counter of its own to add to and take from.
        self.server_shard().queue_wait.observe(queue_wait);
    }

    /// A handler that ran is done: `code`, `latency` since the frame was read, and the
    /// response's body size.
    #[inline]
    pub(crate) fn server_finished(&self, code: Code, latency: Duration, bytes: usize) {
        let s = self.server_shard();
        s.responses[code.slot()].fetch_add(1, Relaxed);
        s.response_bytes.fetch_add(bytes as u64, Relaxed);
        s.latency.observe(latency);
    }

    /// A client call of this method started.
    #[inline]
    pub(crate) fn client_request(&self) {
        self.client_shard().requests.fetch_add(1, Relaxed);
    }

    /// A client call ended with `code` after `latency` (retries included).
    #[inline]
    pub(crate) fn client_finished(&self, code: Code, latency: Duration) {
        let s = self.client_shard();
        s.responses[code.slot()].fetch_add(1, Relaxed);
        s.latency.observe(latency);
    }

    /// A client attempt is being retried.
    #[inline]
    pub fn client_retry(&self) {
        self.client_shard().retries.fetch_add(1, Relaxed);
    }

    /// A client policy refused a call without sending it (client-side overload control).
    #[inline]
    pub fn client_local_reject(&self) {
        self.client_shard().local_rejects.fetch_add(1, Relaxed);
    }

    /// A call to a weak dependency was skipped.
    #[inline]
    pub fn client_weak_skip(&self) {
        self.client_shard().weak_skips.fetch_add(1, Relaxed);
    }

    /// The server side's counters, summed over shards.
    pub fn server_totals(&self) -> ServerTotals {
        let mut t = ServerTotals::default();
        let mut callers = [0u64; super::callers::SLOTS];
        for s in &self.server {
            t.requests += s.requests.load(Relaxed);
            t.grpc_requests += s.grpc_requests.load(Relaxed);
            t.request_bytes += s.request_bytes.load(Relaxed);
            t.response_bytes += s.response_bytes.load(Relaxed);
            add(&mut t.responses, &s.responses);
            add(&mut t.rejected, &s.rejected);
            add(&mut callers, &s.callers);
            s.latency.add_to(&mut t.latency);
            s.queue_wait.add_to(&mut t.queue_wait);
        }
        t.callers = self.callers.read(&callers);
        // Read shard by shard while calls run, the two counts may be a few calls apart.
        t.in_flight = (t.queue_wait.count() as i64 - t.latency.count() as i64).max(0);
        t
    }

    /// The client side's counters, summed over shards.
    pub fn client_totals(&self) -> ClientTotals {
        let mut t = ClientTotals::default();
        for s in &self.client {
            t.requests += s.requests.load(Relaxed);
            add(&mut t.responses, &s.responses);
            s.latency.add_to(&mut t.latency);
            t.retries += s.retries.load(Relaxed);
            t.local_rejects += s.local_rejects.load(Relaxed);
            t.weak_skips += s.weak_skips.load(Relaxed);
        }
        t
    }
}

fn add<const N: usize>(totals: &mut [u64; N], cells: &[AtomicU64; N]) {
    for (t, c) in totals.iter_mut().zip(cells) {
        *t += c.load(Relaxed);
    }
}

/// A method's server-side counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerTotals {
    /// Requests received.
    pub requests: u64,
    /// Of the requests, those that came as gRPC calls (the rest came as svrkit frames or
    /// in process).
    pub grpc_requests: u64,
    /// Responses by status slot ([`STATUS_NAMES`]), refusals included.
    pub responses: [u64; STATUS_SLOTS],
    /// Requests refused without running, by [`Rejection`].
    pub rejected: [u64; 3],
    /// Requests by calling service (`callers.rs`): the names callers gave, then `other`,
    /// `untrusted` and `none` when they counted any.
    pub callers: Vec<(faststr::FastStr, u64)>,
    /// Handlers running.
    pub in_flight: i64,
    /// Bytes of request bodies received.
    pub request_bytes: u64,
    /// Bytes of response bodies produced.
    pub response_bytes: u64,
    /// From the frame read to the response, of requests that ran.
    pub latency: Histogram,
    /// From the frame read to the handler's start.
    pub queue_wait: Histogram,
}

/// A method's client-side counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTotals {
    /// Calls made.
    pub requests: u64,
    /// Calls ended, by status slot ([`STATUS_NAMES`]).
    pub responses: [u64; STATUS_SLOTS],
    /// Whole calls, retries included.
    pub latency: Histogram,
    /// Attempts retried.
    pub retries: u64,
    /// Calls refused by a client policy before they were sent.
    pub local_rejects: u64,
    /// Calls to weak dependencies skipped.
    pub weak_skips: u64,
}

/// The counters of every method of one service.
pub struct ServiceMetrics {
    /// The service.
    pub descriptor: &'static ServiceDescriptor,
    /// Its methods, in the descriptor's order. A method another version of the service
    /// registered first (same id and name) shares that version's counters.
    pub methods: Box<[&'static MethodMetrics]>,
    /// The version of this service registered before this one in the process, if any.
    pub(crate) earlier: Option<&'static ServiceMetrics>,
    /// Whether a server in this process hosts it / a client calls it: only those sides'
    /// series are exported.
    pub(crate) served: std::sync::atomic::AtomicBool,
    pub(crate) called: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for ServiceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ServiceMetrics")
            .field(&self.descriptor.name)
            .finish()
    }
}

impl ServiceMetrics {
    /// Counters for `descriptor`, sharing those of the methods an `earlier` version of the
    /// service (or one before it) already has. They live as long as the process.
    pub(crate) fn new(
        descriptor: &'static ServiceDescriptor,
        earlier: Option<&'static ServiceMetrics>,
    ) -> ServiceMetrics {
        let shared = |m: &MethodDescriptor| {
            std::iter::successors(earlier, |e| e.earlier)
                .flat_map(|e| e.methods.iter().copied())
                .find(|o| o.descriptor.id == m.id && o.descriptor.full_name == m.full_name)
        };
        ServiceMetrics {
            descriptor,
            methods: descriptor
                .methods
                .iter()
                .map(|m| {
                    shared(m).unwrap_or_else(|| {
                        &*Box::leak(Box::new(MethodMetrics::new(descriptor.name, m)))
                    })
                })
                .collect(),
            earlier,
            served: Default::default(),
            called: Default::default(),
        }
    }

    /// The counters of the method with id `id`.
    pub fn method(&self, id: u16) -> Option<&MethodMetrics> {
        self.methods.iter().copied().find(|m| m.descriptor.id == id)
    }

    /// Whether a server in this process hosts the service.
    pub fn is_served(&self) -> bool {
        self.served.load(Relaxed)
    }

    /// Whether a client in this process calls the service.
    pub fn is_called(&self) -> bool {
        self.called.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn warnings_pass_one_a_second_and_count_the_ones_held_back() {
        let gate = super::WarnGate::default();
        assert_eq!(gate.pass(1), Some(0));
        assert_eq!(gate.pass(2), None);
        assert_eq!(gate.pass(999), None);
        assert_eq!(gate.pass(1001), Some(2));
        assert_eq!(gate.pass(1500), None);
        assert_eq!(gate.pass(5000), Some(1));
    }

    use super::*;
    use crate::service::{Priority, Retry};

    const GET: MethodDescriptor = MethodDescriptor {
        name: "Get",
        full_name: "t.S.Get",
        id: 1,
        service_id: 9,
        timeout_ms: 100,
        retry: Retry::None,
        priority: Priority::Normal,
        oneway: false,
        long_poll: false,
        classes: crate::status::Classes::DEFAULT,
    };
    static METHODS: [MethodDescriptor; 1] = [GET];
    static SERVICE: ServiceDescriptor = ServiceDescriptor {
        name: "t.S",
        id: 9,
        methods: &METHODS,
    };

    #[test]
    fn counts_from_many_threads_add_up() {
        let m = ServiceMetrics::new(&SERVICE, None);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let get = &m.methods[0];
                    for i in 0..1000u64 {
                        get.server_request(10);
                        get.server_started(Duration::from_micros(3));
                        let code = if i % 10 == 0 {
                            Code::INTERNAL
                        } else {
                            Code::OK
                        };
                        get.server_finished(code, Duration::from_micros(40), 5);
                    }
                    get.server_request(10);
                    get.server_refused(Code::OVERLOADED, Some(Rejection::Overload));
                });
            }
        });
        let t = m.methods[0].server_totals();
        assert_eq!(t.requests, 4004);
        assert_eq!(t.responses[0], 3600);
        assert_eq!(t.responses[8], 400);
        assert_eq!(t.responses[6], 4);
        assert_eq!(t.rejected, [4, 0, 0]);
        assert_eq!(t.in_flight, 0);
        assert_eq!(t.request_bytes, 40040);
        assert_eq!(t.response_bytes, 20000);
        assert_eq!(t.latency.count(), 4000);
        assert_eq!(t.queue_wait.count(), 4000);
    }

    /// A newer version of `t.S` with one more method: it shares `Get`'s counters with the
    /// older one and has its own for `Put`.
    #[test]
    fn a_second_version_shares_the_counters_of_the_methods_it_keeps() {
        static V2: [MethodDescriptor; 2] = [
            GET,
            MethodDescriptor {
                name: "Put",
                full_name: "t.S.Put",
                id: 2,
                ..GET
            },
        ];
        static SERVICE_V2: ServiceDescriptor = ServiceDescriptor {
            name: "t.S",
            id: 9,
            methods: &V2,
        };
        let v1: &'static ServiceMetrics = Box::leak(Box::new(ServiceMetrics::new(&SERVICE, None)));
        let v2 = ServiceMetrics::new(&SERVICE_V2, Some(v1));
        assert!(std::ptr::eq(v1.methods[0], v2.methods[0]));
        v2.methods[0].server_request(1);
        assert_eq!(v1.methods[0].server_totals().requests, 1);
        assert_eq!(v2.method(2).unwrap().descriptor.name, "Put");
    }

    #[test]
    fn status_slots_cover_every_code() {
        for (i, name) in STATUS_NAMES.iter().enumerate().take(13) {
            assert_eq!(Code(i as u32).name(), Some(*name));
            assert_eq!(Code(i as u32).slot(), i);
        }
        assert_eq!(Code(1000).slot(), 13);
        assert_eq!(Code(77).slot(), 14);
    }
}
