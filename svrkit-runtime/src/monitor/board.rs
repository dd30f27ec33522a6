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
use super::rollup::{Figures, History, MethodRollup};
use crate::metrics::business::{self, Metric};
use crate::metrics::histogram::Histogram;
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

/// What alarms name the service of a business metric's series: the metrics belong to the
/// process, not to one of its services.
pub const BUSINESS: &str = "business";

/// One series of a business metric on the board: its minutes, judged by the same alarms
/// as the methods' figures.
///
/// A minute is kept as [`Figures`], so that the alarms' rules apply unchanged: `calls` is a
/// counter's gain in the minute, a gauge's value at its end (below zero read as zero), or
/// how many values a histogram took; a histogram's `p50_ms` and `p99_ms` are percentiles
/// of its values in the minute, in the values' own units.
#[derive(Debug)]
pub struct TrackedSeries {
    /// `name`, or `name{label="value"}`, as alarms and pages name it (as registered:
    /// `/metrics` adds `_total` to a counter's name).
    pub name: &'static str,
    series: Series,
    /// Its minutes.
    pub minutes: History,
    /// One detector per figure of its kind ([`TrackedSeries::figures`]).
    detectors: [Detector; 2],
}

/// A series' handle and its reading at the last tick.
#[derive(Debug)]
enum Series {
    Counter(&'static business::Counter, u64),
    Gauge(&'static business::Gauge),
    // Boxed: a histogram's buckets are some 2 KiB, a counter's reading 8 bytes.
    Histogram(&'static business::ValueHistogram, Box<Histogram>),
}

impl TrackedSeries {
    fn new(name: &'static str, series: Series) -> TrackedSeries {
        TrackedSeries {
            name,
            series,
            // A day of minutes per series, allocated as they come: a metric registered
            // with many label values should not cost a day of memory each up front.
            minutes: History::with_capacity(0).bounded(super::rollup::HISTORY),
            detectors: Default::default(),
        }
    }

    /// What alarms judge of this kind of series.
    pub fn figures(&self) -> &'static [Figure] {
        match self.series {
            Series::Counter(..) => &[Figure::Count],
            Series::Gauge(_) => &[Figure::Value],
            Series::Histogram(..) => &[Figure::Count, Figure::ValueP99],
        }
    }

    /// Ends `minute`: what the series gained since the last tick (a gauge: its value now).
    fn tick(&mut self, minute: u64) -> Figures {
        let mut f = Figures {
            minute,
            ..Figures::default()
        };
        match &mut self.series {
            Series::Counter(counter, last) => {
                let now = counter.get();
                f.calls = now.saturating_sub(*last);
                *last = now;
            }
            Series::Gauge(gauge) => f.calls = gauge.get().max(0) as u64,
            Series::Histogram(histogram, last) => {
                let now = histogram.read();
                let gained = now.since(last);
                f.calls = gained.count();
                // The histogram's "milliseconds" are thousandths of its values.
                f.p50_ms = gained.quantile_ms(0.5) * 1e3;
                f.p99_ms = gained.quantile_ms(0.99) * 1e3;
                **last = now;
            }
        }
        f
    }
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

impl Event {
    /// The event of an alarm's change.
    fn of(change: Change) -> Event {
        let (state, alarm) = match change {
            Change::Fired(alarm) => ("firing", alarm),
            Change::Cleared(alarm) => ("cleared", alarm),
        };
        Event {
            state,
            alarm,
            reason: None,
        }
    }
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
    /// Every series of every business metric, in registration order.
    pub business: Vec<TrackedSeries>,
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
        for metric in business::all() {
            // A series is named once, when first seen: there are as many as were
            // registered, so the names live as long as the process, as the metrics do.
            let name = |value: &str| -> &'static str {
                match metric.label() {
                    Some(label) => {
                        let name = format!("{}{{{label}=\"{value}\"}}", metric.name());
                        Box::leak(name.into_boxed_str())
                    }
                    None => metric.name(),
                }
            };
            // (The series is made only when new: a histogram's reading is some 2 KiB, and
            // this runs on every look at the board.)
            let mut track = |at: usize, value: &str, series: &dyn Fn() -> Series| {
                if self.known.insert(at) {
                    self.business
                        .push(TrackedSeries::new(name(value), series()));
                }
            };
            match metric {
                Metric::Counter(f) => {
                    for (value, c) in f.series() {
                        track(std::ptr::from_ref(c) as usize, value, &|| {
                            Series::Counter(c, 0)
                        });
                    }
                }
                Metric::Gauge(f) => {
                    for (value, g) in f.series() {
                        track(std::ptr::from_ref(g) as usize, value, &|| Series::Gauge(g));
                    }
                }
                Metric::Histogram(f) => {
                    for (value, h) in f.series() {
                        let series = || Series::Histogram(h, Box::default());
                        track(std::ptr::from_ref(h) as usize, value, &series);
                    }
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
                changes.extend(
                    d.step(figure, &t.rollup.server, &self.config, who)
                        .map(Event::of),
                );
            }
        }
        for t in &mut self.business {
            let figures = t.tick(minute);
            t.minutes.push(figures);
            if !self.config.enabled {
                continue;
            }
            let judged = t.figures();
            for (d, &figure) in t.detectors.iter_mut().zip(judged) {
                let change = d.step(figure, &t.minutes, &self.config, (BUSINESS, t.name));
                changes.extend(change.map(Event::of));
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
        let methods = self.methods.iter().flat_map(|t| t.detectors.iter());
        let business = self.business.iter().flat_map(|t| t.detectors.iter());
        methods
            .chain(business)
            .filter_map(Detector::firing)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Ends `minutes` on a board of its own, with `each` recording what a minute saw before
    /// it ends; the alarm changes of the series whose names start with `metric`: (minute,
    /// series, fired, figure).
    fn run(
        metric: &str,
        minutes: std::ops::Range<u64>,
        mut each: impl FnMut(u64),
    ) -> Vec<(u64, &'static str, bool, Figure)> {
        let mut board = Board::default();
        let mut changes = Vec::new();
        for minute in minutes {
            each(minute);
            for e in board.tick(minute) {
                if e.alarm.method.starts_with(metric) {
                    assert_eq!(e.alarm.service, BUSINESS);
                    changes.push((minute, e.alarm.method, e.state == "firing", e.alarm.figure));
                }
            }
            let firing = board
                .firing()
                .iter()
                .filter(|a| a.method.starts_with(metric))
                .count();
            let fired = changes.iter().filter(|c| c.2).count();
            assert_eq!(
                firing,
                fired - (changes.len() - fired),
                "{minute}: {changes:?}"
            );
        }
        changes
    }

    /// Some ordinary variation, so that the band is not zero wide.
    fn about(n: u64, minute: u64) -> u64 {
        n + n / 10 * (minute % 5) / 4
    }

    #[test]
    fn a_business_counter_that_stops_fires_and_clears_when_it_returns() {
        let sends = business::counter("board_test_sends", "Messages sent.");
        let changes = run("board_test_sends", 0..50, |minute| {
            if !(30..33).contains(&minute) {
                sends.add(about(1000, minute));
            }
        });
        let name = "board_test_sends";
        assert_eq!(
            changes,
            [
                (30, name, true, Figure::Count),
                (34, name, false, Figure::Count)
            ]
        );
    }

    #[test]
    fn a_labelled_series_is_judged_by_itself() {
        let by_kind = business::counter_with(
            "board_test_by_kind",
            "Messages by kind.",
            "kind",
            &["text", "image"],
        );
        let (text, image) = (
            by_kind.with("text").unwrap(),
            by_kind.with("image").unwrap(),
        );
        let changes = run("board_test_by_kind", 0..30, |minute| {
            text.add(about(500, minute));
            image.add(about(500, minute) * if minute == 25 { 10 } else { 1 });
        });
        let image = "board_test_by_kind{kind=\"image\"}";
        assert_eq!(
            changes,
            [
                (25, image, true, Figure::Count),
                (27, image, false, Figure::Count)
            ]
        );
    }

    #[test]
    fn a_business_gauge_that_rises_fires() {
        let parked = business::gauge("board_test_parked", "Long polls parked.");
        let changes = run("board_test_parked", 0..30, |minute| {
            let value = if minute >= 20 {
                5_000
            } else {
                about(200, minute)
            };
            parked.set(value as i64);
        });
        assert_eq!(changes, [(20, "board_test_parked", true, Figure::Value)]);
    }

    #[test]
    fn a_business_histogram_is_judged_by_count_and_by_p99() {
        let fan_out = business::histogram("board_test_fan_out", "Recipients per message.");
        let changes = run("board_test_fan_out", 0..30, |minute| {
            for i in 0..about(200, minute) {
                fan_out.record(if minute == 20 { 400 } else { 10 + i % 20 });
            }
        });
        let name = "board_test_fan_out";
        assert_eq!(
            changes,
            [
                (20, name, true, Figure::ValueP99),
                (22, name, false, Figure::ValueP99)
            ]
        );
    }
}
