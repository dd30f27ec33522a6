//! What the agent holds: every instance that reports, and every method side's minutes
//! across instances (closed ones in a day-long ring, open ones as each instance's latest
//! report and their running sum).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Instant;

use svrkit_runtime::monitor::ossagent::Report;
use svrkit_runtime::monitor::rollup::History;

use crate::counts::{Counts, Total};
use crate::{MAX_INSTANCE_LIST, MAX_NAME};

/// A method side: its service, its method, and whether it is the client side.
pub(crate) type SeriesKey = (String, String, bool);

/// An instance: its name and process id (a restarted process is a new instance, and two
/// processes that give the same name stay apart).
pub(crate) type InstanceKey = (String, u32);

/// One minute still open: each instance's latest report of it, and their sum (kept as
/// reports come, so taking one in costs the same however many instances report).
#[derive(Debug, Default)]
pub(crate) struct Open {
    pub(crate) by: HashMap<InstanceKey, Counts>,
    pub(crate) total: Total,
}

/// One method side across every instance.
#[derive(Debug)]
pub(crate) struct Series {
    pub(crate) minutes: History,
    pub(crate) open: BTreeMap<u64, Open>,
}

impl Default for Series {
    fn default() -> Series {
        Series {
            // Grown as minutes come, up to a day.
            minutes: History::with_capacity(0).bounded(svrkit_runtime::monitor::rollup::HISTORY),
            open: BTreeMap::new(),
        }
    }
}

/// An alarm firing in a reporting process, as it reported it.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Reported {
    pub(crate) service: String,
    pub(crate) method: String,
    pub(crate) figure: String,
    /// The figure, the minute it is of, its baseline and the minute it fired: `None` from
    /// processes that report alarms by name only.
    pub(crate) value: Option<f64>,
    pub(crate) value_minute: Option<u64>,
    pub(crate) baseline: Option<f64>,
    pub(crate) since_minute: Option<u64>,
}

impl Reported {
    /// The alarms of `report`: with their figures, or by name from older reporters.
    pub(crate) fn of(report: &Report) -> Vec<Reported> {
        let kept = |a: &&svrkit_runtime::monitor::ossagent::Alarm| {
            [&a.service, &a.method, &a.figure]
                .iter()
                .all(|n| n.len() <= MAX_NAME)
        };
        if !report.alarms.is_empty() {
            return report
                .alarms
                .iter()
                .filter(kept)
                .take(MAX_INSTANCE_LIST)
                .map(|a| Reported {
                    service: a.service.to_string(),
                    method: a.method.to_string(),
                    figure: a.figure.to_string(),
                    value: Some(a.value),
                    value_minute: Some(a.value_minute),
                    baseline: Some(a.baseline),
                    since_minute: Some(a.since_minute),
                })
                .collect();
        }
        report
            .firing
            .iter()
            .filter(|f| f.len() <= MAX_NAME)
            .take(MAX_INSTANCE_LIST)
            .map(|f| {
                // `service.method figure`
                let (what, figure) = f.rsplit_once(' ').unwrap_or((f, ""));
                let (service, method) = what.rsplit_once('.').unwrap_or((what, ""));
                Reported {
                    service: service.into(),
                    method: method.into(),
                    figure: figure.into(),
                    value: None,
                    value_minute: None,
                    baseline: None,
                    since_minute: None,
                }
            })
            .collect()
    }

    /// `service.method figure`.
    pub(crate) fn name(&self) -> String {
        format!("{}.{} {}", self.service, self.method, self.figure)
    }
}

#[derive(Debug)]
pub(crate) struct Instance {
    /// The address it reports from (`None` in process).
    pub(crate) peer: Option<IpAddr>,
    pub(crate) services: Vec<String>,
    pub(crate) alarms: Vec<Reported>,
    pub(crate) last_seen: Instant,
    /// Server-side calls and errors in its newest reported minute.
    pub(crate) calls: u64,
    pub(crate) errors: u64,
    /// Who called its methods, as it last reported (calls since it started), by caller and
    /// service.
    pub(crate) callers: Vec<Edge>,
    /// The same by method (caller, service, method, calls): what the next report's rates
    /// are taken from, method by method.
    pub(crate) by_method: Vec<(String, String, String, u64)>,
    /// Its own metrics, as it last reported them.
    pub(crate) business: Vec<Business>,
}

/// Calls one caller made to one method of an instance.
#[derive(Clone, Debug)]
pub(crate) struct Edge {
    pub(crate) caller: String,
    pub(crate) service: String,
    pub(crate) calls: u64,
    /// Calls a minute between the instance's last two reports (none after its first).
    pub(crate) per_minute: Option<f64>,
}

/// One series of an instance's own metrics.
#[derive(Clone, Debug)]
pub(crate) struct Business {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) label: String,
    pub(crate) value: f64,
    /// A counter's gain, or a histogram's values, a minute between the instance's last two
    /// reports (none after its first, and none for a gauge).
    pub(crate) per_minute: Option<f64>,
}

/// What a count gained a minute, from `before` to `now` over `seconds` (none over less
/// than a second, or for a count that went down).
pub(crate) fn per_minute(now: f64, before: f64, seconds: f64) -> Option<f64> {
    (seconds >= 1.0 && now >= before).then(|| (now - before) * 60.0 / seconds)
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) instances: BTreeMap<InstanceKey, Instance>,
    pub(crate) series: BTreeMap<SeriesKey, Series>,
    /// Reports held in every series' open minutes, and the bytes of their histograms.
    pub(crate) open: usize,
    pub(crate) open_bytes: usize,
    /// The minute open minutes were last swept for ones no report can reach any more.
    pub(crate) swept: u64,
}

/// A name from a report, if it is short enough to keep.
pub(crate) fn name(s: &str) -> Option<String> {
    (s.len() <= MAX_NAME).then(|| s.to_owned())
}

impl State {
    /// Lets go of the open minutes before `first`, which no report is taken for any more:
    /// a series that went silent (a method gone, an instance stopped) would otherwise hold
    /// its last reports against the caps for ever.
    pub(crate) fn sweep(&mut self, first: u64) {
        let (mut reports, mut bytes) = (0, 0);
        for series in self.series.values_mut() {
            while let Some(entry) = series.open.first_entry() {
                if *entry.key() >= first {
                    break;
                }
                let gone = entry.remove();
                reports += gone.by.len();
                bytes += gone.by.values().map(Counts::bytes).sum::<usize>();
            }
        }
        self.open -= reports;
        self.open_bytes -= bytes;
    }
}
