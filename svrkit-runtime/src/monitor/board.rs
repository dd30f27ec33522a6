//! The process's monitoring board: every registered method's per-minute rollups and alarm
//! detectors, advanced once a minute by a background task, read by the admin endpoint and
//! the reporter.
//!
//! The per-call path never touches it: it reads the counters' cells once a minute (and on
//! each page view or report), under a lock that only those readers take.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::alarm::{Alarm, AlarmConfig, Change, Detector, Figure};
use super::rollup::{Figures, MethodRollup};
use crate::metrics::{REJECTION_NAMES, STATUS_NAMES, ServiceMetrics};

/// `[monitor]` in the configuration file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Calls slower than this are logged at warn with their trace id.
    pub slow_call_ms: u64,
    /// The ossagent (`host:port`) to report per-minute figures to; none when unset.
    pub agent: Option<String>,
    /// How often to report (the minute under way is sent each time, so the agent's view is
    /// at most this old).
    pub report_interval_ms: u64,
    /// How this process names itself in reports (default: its listen address).
    pub instance: Option<String>,
    /// An OpenTelemetry collector (`http://host:4317`) to export every request's span to
    /// over OTLP/gRPC (feature `otel`; `monitor::otlp`); none when unset.
    pub otlp_endpoint: Option<String>,
    /// `[monitor.alarms]`.
    pub alarms: AlarmConfig,
}

impl Default for MonitorConfig {
    fn default() -> MonitorConfig {
        MonitorConfig {
            slow_call_ms: 1000,
            agent: None,
            report_interval_ms: 10_000,
            instance: None,
            otlp_endpoint: None,
            alarms: AlarmConfig::default(),
        }
    }
}

/// The minute `t` falls in, in minutes since the Unix epoch.
pub fn minute_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 60)
}

/// The minute under way.
pub fn this_minute() -> u64 {
    minute_of(SystemTime::now())
}

/// One method on the board.
#[derive(Debug)]
pub struct Tracked {
    /// Its service's counters (whether it is served or called here).
    pub service: &'static ServiceMetrics,
    /// Its rollups.
    pub rollup: MethodRollup,
    /// Alarm detectors of its server side, one per [`Figure`].
    pub detectors: [Detector; 4],
}

/// An alarm change, as `/alerts.json` and the webhook show it.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// `firing` or `cleared`.
    pub state: &'static str,
    /// The alarm.
    pub alarm: Alarm,
    /// Why, when the figure alone does not say (a readiness check's last failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Alarm changes kept for `/alerts.json`.
const EVENTS_KEPT: usize = 200;

/// Rollups and alarms of every method registered in the process.
#[derive(Debug, Default)]
pub struct Board {
    /// Alarm thresholds.
    pub config: AlarmConfig,
    /// Every method, in registration order.
    pub methods: Vec<Tracked>,
    known: HashSet<usize>,
    /// The latest alarm changes, oldest first.
    pub events: VecDeque<Event>,
    /// The last minute ended by [`tick`](Board::tick).
    pub last_tick: Option<u64>,
}

impl Board {
    /// Takes in methods registered since the last look.
    pub fn sync(&mut self) {
        // By method, not by service name: a second version of a service brings methods
        // of its own and shares the rest with the first.
        for service in crate::metrics::services() {
            for &m in service.methods.iter() {
                if self.known.insert(std::ptr::from_ref(m) as usize) {
                    self.methods.push(Tracked {
                        service,
                        rollup: MethodRollup::new(m),
                        detectors: Default::default(),
                    });
                }
            }
        }
    }

    /// Ends `minute` for every method and runs the alarms on it; the alarms that changed.
    pub fn tick(&mut self, minute: u64) -> Vec<Event> {
        self.sync();
        let mut changes = Vec::new();
        for t in &mut self.methods {
            t.rollup.tick(minute);
            if !self.config.enabled || !t.service.is_served() {
                continue;
            }
            let who = (t.service.descriptor.name, t.rollup.metrics.descriptor.name);
            let long_poll = t.rollup.metrics.descriptor.long_poll;
            for (d, figure) in t.detectors.iter_mut().zip(Figure::ALL) {
                // A long poll's latency is its wait, not a symptom.
                if long_poll && figure == Figure::P99Latency {
                    continue;
                }
                match d.step(figure, &t.rollup.server, &self.config, who) {
                    Some(Change::Fired(alarm)) => changes.push(Event {
                        state: "firing",
                        alarm,
                        reason: None,
                    }),
                    Some(Change::Cleared(alarm)) => changes.push(Event {
                        state: "cleared",
                        alarm,
                        reason: None,
                    }),
                    None => {}
                }
            }
        }
        for e in &changes {
            if self.events.len() == EVENTS_KEPT {
                self.events.pop_front();
            }
            self.events.push_back(e.clone());
        }
        self.last_tick = Some(minute);
        changes
    }

    /// Alarms firing now.
    pub fn firing(&self) -> Vec<&Alarm> {
        self.methods
            .iter()
            .flat_map(|t| t.detectors.iter().filter_map(Detector::firing))
            .collect()
    }
}

/// The process's board.
pub fn board() -> MutexGuard<'static, Board> {
    static BOARD: OnceLock<Mutex<Board>> = OnceLock::new();
    let mut board = BOARD
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    board.sync();
    board
}

/// Ends each minute on the board as the wall clock passes it; alarm changes go to
/// `changed`.
pub(crate) async fn tick_every_minute(changed: impl Fn(Vec<Event>)) {
    loop {
        let now = SystemTime::now();
        let into = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let left = Duration::from_secs(60)
            - Duration::from_nanos((into.as_nanos() % 60_000_000_000) as u64);
        tokio::time::sleep(left).await;
        // Ends the minute that just went by, even if the sleep overran into the next one.
        let ended = minute_of(now + left) - 1;
        let events = board().tick(ended);
        if !events.is_empty() {
            changed(events);
        }
    }
}

/// `/stats.json`.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// The process.
    pub process: ProcessStats,
    /// The minute under way.
    pub minute: u64,
    /// Every method registered, each side that is used.
    pub methods: Vec<MethodStats>,
    /// Alarms firing.
    pub firing: Vec<Alarm>,
    /// The service's own metrics (`metrics::business`), every series.
    pub business: Vec<crate::metrics::business::SeriesRead>,
}

/// The process in `/stats.json`.
#[derive(Debug, Serialize)]
pub struct ProcessStats {
    /// Process id.
    pub pid: u32,
    /// The svrkit runtime's version.
    pub version: &'static str,
    /// Seconds since monitoring started.
    pub uptime_seconds: f64,
    /// Connections accepted, closed, open, refused; frames that broke a connection.
    pub connections_accepted: u64,
    #[allow(missing_docs)]
    pub connections_closed: u64,
    #[allow(missing_docs)]
    pub connections_open: u64,
    #[allow(missing_docs)]
    pub connections_refused: u64,
    #[allow(missing_docs)]
    pub frame_errors: u64,
}

/// One side of one method in `/stats.json`.
#[derive(Debug, Serialize)]
pub struct MethodStats {
    /// Service full name.
    pub service: &'static str,
    /// Method name.
    pub method: &'static str,
    /// `server` or `client`.
    pub side: &'static str,
    /// Requests (server) or calls made (client) since startup.
    pub requests: u64,
    /// Responses by status name since startup (every status, zeros included).
    pub responses: serde_json::Map<String, serde_json::Value>,
    /// Responses since startup by whose doing they were (`docs/monitoring.md`): `ok`,
    /// `fault` (the error rate counts these only), `caller`, `cancelled`, and `rejected`
    /// (refused unrun: server, by this server; client, by a local policy before sending),
    /// which are not counted again in the class of their code. They add up to the
    /// responses.
    pub classes: serde_json::Map<String, serde_json::Value>,
    /// Server: refusals by reason since startup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<serde_json::Map<String, serde_json::Value>>,
    /// Server: handlers running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<i64>,
    /// Client: retries, local rejections, weak skips since startup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u64>,
    /// Latency since startup: median and 99th percentile, milliseconds.
    pub p50_ms: f64,
    #[allow(missing_docs)]
    pub p99_ms: f64,
    /// The minute under way so far.
    pub current: Figures,
    /// The last minutes ended, oldest first (as many as asked for).
    pub minutes: Vec<Figures>,
}

fn names(values: &[u64], names: &[&str]) -> serde_json::Map<String, serde_json::Value> {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| ((*n).to_owned(), (*v).into()))
        .collect()
}

/// The class counts of `/stats.json` from figures since startup.
fn by_class(ok: u64, f: &Figures) -> serde_json::Map<String, serde_json::Value> {
    let values = [ok, f.errors, f.caller_errors, f.cancelled, f.rejected];
    let names = ["ok", "fault", "caller", "cancelled", "rejected"];
    self::names(&values, &names)
}

impl Board {
    /// What `/stats.json` shows, with the last `minutes` minutes of history.
    pub fn stats(&self, minutes: usize) -> Stats {
        let p = crate::metrics::process();
        let minute = this_minute();
        let mut methods = Vec::new();
        for t in &self.methods {
            let now = t.rollup.current(minute);
            let service = t.service.descriptor.name;
            let method = t.rollup.metrics.descriptor.name;
            let last = |ring: &super::rollup::History| -> Vec<Figures> {
                let skip = ring.len().saturating_sub(minutes);
                ring.iter().skip(skip).copied().collect()
            };
            let classes = t.rollup.metrics.descriptor.classes;
            if t.service.is_served() {
                let s = t.rollup.metrics.server_totals();
                let all = Figures::server(minute, &s, &Default::default(), &classes);
                methods.push(MethodStats {
                    service,
                    method,
                    side: "server",
                    requests: s.requests,
                    responses: names(&s.responses, &STATUS_NAMES),
                    classes: by_class(s.responses[0], &all),
                    rejected: Some(names(&s.rejected, &REJECTION_NAMES)),
                    in_flight: Some(s.in_flight),
                    retries: None,
                    p50_ms: s.latency.quantile_ms(0.5),
                    p99_ms: s.latency.quantile_ms(0.99),
                    current: now.server,
                    minutes: last(&t.rollup.server),
                });
            }
            if t.service.is_called() {
                let c = t.rollup.metrics.client_totals();
                let all = Figures::client(minute, &c, &Default::default(), &classes);
                methods.push(MethodStats {
                    service,
                    method,
                    side: "client",
                    requests: c.requests,
                    responses: names(&c.responses, &STATUS_NAMES),
                    classes: by_class(c.responses[0], &all),
                    rejected: None,
                    in_flight: None,
                    retries: Some(c.retries),
                    p50_ms: c.latency.quantile_ms(0.5),
                    p99_ms: c.latency.quantile_ms(0.99),
                    current: now.client,
                    minutes: last(&t.rollup.client),
                });
            }
        }
        Stats {
            process: ProcessStats {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION"),
                uptime_seconds: p.started.0.elapsed().as_secs_f64(),
                connections_accepted: p.accepted(),
                connections_closed: p.closed(),
                connections_open: p.accepted().saturating_sub(p.closed()),
                connections_refused: p.refused(),
                frame_errors: p.frame_errors(),
            },
            minute,
            methods,
            firing: self.firing().into_iter().cloned().collect(),
            business: crate::metrics::business::read_all(),
        }
    }
}
