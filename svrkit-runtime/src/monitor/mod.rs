//! Monitoring built into every server and client: per-method counters, per-minute rollups
//! with alarms against their own history, the admin HTTP endpoint with its dashboard, and
//! reports to an ossagent.
//!
//! A service author writes none of it. Building a server registers every method of every
//! service it hosts, and building a generated client registers every method of its
//! service, so every series exists (at zero) from startup. Counting then goes through
//! `&'static` handles resolved at registration: a few relaxed atomic additions per call on
//! cells sharded by thread, with no lock, lookup, allocation or formatting
//! ([`metrics`]). Everything else (exposition, rollups, alarms, reports) reads the cells in
//! the background.
//!
//! The counters are the process's, like Prometheus' default registry: two servers in one
//! process hosting the same service add to the same series. `docs/monitoring.md` lists every
//! series and describes the dashboard, the alarms and the agent.

#[cfg(feature = "admin")]
pub mod admin;
pub mod alarm;
pub mod board;
#[cfg(feature = "admin")]
pub mod dashboard;
pub mod exposition;
pub mod format;
pub mod health;
pub mod histogram;
pub mod metrics;
/// The ossagent's generated stubs (from `idl/svrkit/ossagent.xml`; regenerated, not edited).
#[rustfmt::skip]
#[allow(missing_docs, unreachable_pub)]
pub mod ossagent;
pub mod report;
pub mod rollup;
pub mod trace;
#[cfg(feature = "admin")]
pub mod webhook;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Instant, SystemTime};

pub use board::MonitorConfig;
pub use metrics::{ClientTotals, MethodMetrics, Rejection, ServerTotals, ServiceMetrics};

use crate::service::{MethodDescriptor, ServiceDescriptor};

/// Every service registered in this process, by full name, in registration order.
struct Registry {
    services: Mutex<Vec<&'static ServiceMetrics>>,
    /// Methods by full name, for calls made without a generated client.
    methods: RwLock<HashMap<&'static str, &'static MethodMetrics>>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        process();
        Registry {
            services: Mutex::new(Vec::new()),
            methods: RwLock::new(HashMap::new()),
        }
    })
}

/// The counters of `service`, made on first use. They live as long as the process, as a
/// Prometheus series does: the set of services compiled into a program is fixed, so this
/// holds a bounded amount of memory.
///
/// Two versions of one service's generated code can meet in one program (a test of both, a
/// relay built with an old copy). Generated code indexes counters by its own method list, so
/// each version gets a [`ServiceMetrics`] of its own, whose methods share the counters of
/// the same methods in the earlier version: one series per method, every method exported.
fn register(service: &'static ServiceDescriptor) -> &'static ServiceMetrics {
    let registry = registry();
    let mut services = registry.services.lock().unwrap_or_else(|e| e.into_inner());
    let earlier = services
        .iter()
        .rev()
        .find(|s| s.descriptor.name == service.name)
        .copied();
    if let Some(found) = earlier {
        let same_methods = found.descriptor.methods.len() == service.methods.len()
            && found
                .descriptor
                .methods
                .iter()
                .zip(service.methods)
                .all(|(a, b)| a.id == b.id && a.full_name == b.full_name);
        if same_methods {
            return found;
        }
    }
    let metrics: &'static ServiceMetrics =
        Box::leak(Box::new(ServiceMetrics::new(service, earlier)));
    services.push(metrics);
    let mut methods = registry.methods.write().unwrap_or_else(|e| e.into_inner());
    for m in metrics.methods.iter() {
        methods.entry(m.descriptor.full_name).or_insert(m);
    }
    metrics
}

/// Marks a service (and its earlier versions, which share counters with it) as served or
/// called, so that exposition shows those sides.
fn mark(
    metrics: &'static ServiceMetrics,
    flag: fn(&ServiceMetrics) -> &std::sync::atomic::AtomicBool,
) {
    for m in std::iter::successors(Some(metrics), |m| m.earlier) {
        flag(m).store(true, Relaxed);
    }
}

/// Registers a service a server in this process hosts.
pub fn register_server(service: &'static ServiceDescriptor) -> &'static ServiceMetrics {
    let metrics = register(service);
    mark(metrics, |m| &m.served);
    metrics
}

/// Registers a service a client in this process calls (generated clients do, when made).
pub fn register_client(service: &'static ServiceDescriptor) -> &'static ServiceMetrics {
    let metrics = register(service);
    mark(metrics, |m| &m.called);
    metrics
}

/// The counters of a method whose service was registered (by full name); for calls that do
/// not come through a generated client.
pub fn find_method(method: &MethodDescriptor) -> Option<&'static MethodMetrics> {
    let methods = registry().methods.read().unwrap_or_else(|e| e.into_inner());
    methods.get(method.full_name).copied()
}

/// Every registered service, in registration order.
pub fn services() -> Vec<&'static ServiceMetrics> {
    registry()
        .services
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
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
    /// The overload control of the first monitored server built in the process, for its
    /// gauges.
    pub(crate) admission: OnceLock<std::sync::Weak<crate::policy::admission::Admission>>,
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
        admission: OnceLock::new(),
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

/// Starts the process's background monitoring, once (later calls change nothing): the
/// per-minute rollups and alarms, the alarm webhook, and reports to the ossagent if
/// `config.agent` is set, naming this process `config.instance` or else `listen` (its
/// listen address; an unspecified host such as `0.0.0.0` is replaced by the machine's
/// hostname, so that the hosts of one service stay apart). Needs a Tokio runtime.
///
/// The admin endpoint is started apart, with [`admin::bind`] (or by
/// [`Config::start_monitoring`](crate::Config::start_monitoring), which does both).
///
/// # Errors
/// A webhook URL that is not `http://host:port/path`, an agent that is not `host:port`.
pub fn start(config: &MonitorConfig, listen: &str) -> Result<(), String> {
    static STARTED: OnceLock<()> = OnceLock::new();
    #[cfg(feature = "admin")]
    let webhook = match &config.alarms.webhook {
        Some(url) => {
            Some(webhook::Url::parse(url).map_err(|e| format!("monitor.alarms.webhook: {e}"))?)
        }
        None => None,
    };
    #[cfg(not(feature = "admin"))]
    if config.alarms.webhook.is_some() {
        return Err(
            "monitor.alarms.webhook: the alarm webhook needs the `admin` feature of svrkit-runtime"
                .into(),
        );
    }
    if let Some(agent) = &config.agent
        && !is_host_port(agent)
    {
        return Err(format!("monitor.agent: `{agent}` is not host:port"));
    }
    if STARTED.set(()).is_err() {
        return Ok(());
    }
    board::board().config = config.alarms.clone();
    #[cfg(feature = "admin")]
    let changed: std::sync::Arc<dyn Fn(Vec<board::Event>) + Send + Sync> = match webhook {
        Some(url) => std::sync::Arc::new(webhook::start(url)),
        None => std::sync::Arc::new(|events| log_changes(&events)),
    };
    #[cfg(not(feature = "admin"))]
    let changed = std::sync::Arc::new(|events: Vec<board::Event>| log_changes(&events));
    let readiness = changed.clone();
    tokio::spawn(board::tick_every_minute(move |events| changed(events)));
    tokio::spawn(health::watch(move |events| readiness(events)));
    if let Some(agent) = &config.agent {
        let interval = std::time::Duration::from_millis(config.report_interval_ms.max(100));
        let instance = config
            .instance
            .clone()
            .unwrap_or_else(|| instance_name(listen));
        tokio::spawn(report::run(agent.clone(), instance, interval));
    }
    Ok(())
}

fn log_changes(events: &[board::Event]) {
    for e in events {
        tracing::warn!(
            alarm = %format_args!("{}.{} {}", e.alarm.service, e.alarm.method, e.alarm.figure.name()),
            state = e.state,
            value = e.alarm.value,
            baseline = e.alarm.baseline,
            reason = e.reason.as_deref().unwrap_or(""),
            "alarm"
        );
    }
}

/// Whether `addr` reads as `host:port`.
pub(crate) fn is_host_port(addr: &str) -> bool {
    addr.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && !host.contains(|c: char| c.is_whitespace() || c == '/')
            && port.parse::<u16>().is_ok()
    })
}

/// How a process listening on `listen` names itself in reports: the address, with an
/// unspecified host (`0.0.0.0`, `[::]`) replaced by the machine's hostname.
pub fn instance_name(listen: &str) -> String {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => format!("{}:{}", hostname(), addr.port()),
        _ => listen.to_owned(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
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

    #[test]
    fn instances_are_named_by_host_and_port() {
        assert_eq!(instance_name("10.0.0.5:7000"), "10.0.0.5:7000");
        let named = instance_name("0.0.0.0:7000");
        assert!(
            named.ends_with(":7000") && !named.starts_with("0.0.0.0"),
            "{named}"
        );
        assert!(!instance_name("[::]:7000").starts_with("[::]"));
        assert!(is_host_port("agent.internal:7400"));
        assert!(!is_host_port("not an addr"));
        assert!(!is_host_port(":7400"));
        assert!(!is_host_port("not an addr:80"));
    }
}
