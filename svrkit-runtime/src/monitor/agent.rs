//! The ossagent: takes every process's per-minute reports and shows the whole system (an
//! overview, every service and method across instances, and every instance) on its
//! dashboard.
//!
//! It is an ordinary generated service ([`OssAgent`]); the
//! `ossagent` binary in `examples/` hosts it. Reports are checked before anything is kept:
//! minutes must be within a few minutes of the agent's clock (so one instance with a clock
//! ahead cannot hide everyone else's minutes), names at most [`MAX_NAME`] bytes, at most
//! [`MAX_LIST`] methods per minute and [`MAX_INSTANCE_LIST`] services or alarms per
//! instance, histograms at most the runtime's buckets. Its memory is then bounded by bytes
//! through its caps: [`MAX_INSTANCES`] instances, [`MAX_SERIES`] method series of 24 hours
//! (about 110 KB each once full), [`MAX_OPEN`] instance reports held while their minutes are
//! still arriving, whose histograms (kept as their nonzero buckets) take at most
//! [`MAX_OPEN_BYTES`], and a merged histogram per series and open minute (3.7 KB each). Reports beyond the caps are dropped, not stored. Each open minute keeps
//! the running sum of its reports, so intake costs the same however many instances report;
//! pages are rendered from a copy, outside the lock that intake takes.
//!
//! **Whom it believes.** Only trusted reporters ([`crate::server::Trust`]: by default
//! loopback and the private ranges; with TLS, `[trust] identities` and `peers = []` make it
//! take reports only from processes holding a client certificate for a trusted name). A
//! report must also be plausible: errors and refusals at most the calls, histograms that
//! read whole, at most [`MAX_CALLS_PER_MINUTE`] calls (and observations) a minute per
//! method. (Not "histograms at most the calls": a minute's queue waits count long polls
//! still waiting, so a live reporter's honest report broke that rule.) One
//! address holds at most [`MAX_INSTANCES_PER_PEER`] instances, and at the cap the instance
//! silent longest gives way to a new one once it has been silent [`LIVE`]: a process that
//! restarts always appears. Every report dropped is counted by reason
//! ([`Agent::dropped`], on the dashboard and in `/system.json`) and logged at most once a
//! minute.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use hyper::StatusCode;

use super::admin::{self, Pages, Reply};
use super::board::this_minute;
use super::dashboard::{InstanceRow, Page, Window};
use super::histogram::Histogram;
use super::ossagent::{MethodMinute, OssAgent, Report};
use super::rollup::{Figures, Ring};
use crate::{Context, Status};

/// Instances tracked at most.
pub const MAX_INSTANCES: usize = 1024;
/// Method series (service, method, side) tracked at most.
pub const MAX_SERIES: usize = 2048;
/// Longest instance, service, method or alarm name kept (longer ones are dropped).
pub const MAX_NAME: usize = 256;
/// Most methods per minute in a report kept.
pub const MAX_LIST: usize = 1024;
/// Most services or alarms kept per instance.
pub const MAX_INSTANCE_LIST: usize = 64;
/// Most (series, minute, instance) reports held for merging at once (about 150 bytes each,
/// beside their histograms).
pub const MAX_OPEN: usize = 131_072;
/// Most bytes of histogram buckets those reports hold (a minute of one method in one
/// process touches a few dozen buckets, 16 bytes each; a report that would pass the budget
/// is dropped as the agent being full).
pub const MAX_OPEN_BYTES: usize = 64 << 20;
/// Calls a minute one method of one process may report (17 million a second: far above
/// anything real; a forged 2^64 - 1 is refused).
pub const MAX_CALLS_PER_MINUTE: u64 = 1 << 30;
/// Instances one reporting address may hold.
pub const MAX_INSTANCES_PER_PEER: usize = 64;
/// An instance silent this long is forgotten.
const FORGET: Duration = Duration::from_secs(24 * 3600);
/// Minutes whose per-instance histograms are kept for merging.
const OPEN_MINUTES: u64 = 3;
/// An instance silent for longer is shown as not reporting (and may give its place to a new
/// one when the agent is full).
pub const LIVE: Duration = Duration::from_secs(90);

/// Why a report was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// From a peer the agent does not trust.
    Untrusted,
    /// Its figures cannot be true.
    Implausible,
    /// A new instance, and the agent holds all it can.
    Full,
    /// A new instance from an address that holds all it may.
    PeerFull,
    /// Its name is too long.
    BadName,
}

impl Dropped {
    /// Every reason, in counter order.
    pub const ALL: [Dropped; 5] = [
        Dropped::Untrusted,
        Dropped::Implausible,
        Dropped::Full,
        Dropped::PeerFull,
        Dropped::BadName,
    ];

    /// Its name in `/system.json` and the log.
    pub fn name(self) -> &'static str {
        match self {
            Dropped::Untrusted => "untrusted",
            Dropped::Implausible => "implausible",
            Dropped::Full => "instances_full",
            Dropped::PeerFull => "address_full",
            Dropped::BadName => "bad_name",
        }
    }
}

type SeriesKey = (String, String, bool);

/// An instance: its name and process id (a restarted process is a new instance, and two
/// processes that give the same name stay apart).
type InstanceKey = (String, u32);

/// The counts of one method side in one minute, as a report gives them.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    calls: u64,
    errors: u64,
    caller_errors: u64,
    cancelled: u64,
    rejected: u64,
}

impl Tally {
    /// The tally of a method minute.
    fn of(m: &MethodMinute) -> Tally {
        Tally {
            calls: m.calls,
            errors: m.errors,
            caller_errors: m.caller_errors,
            cancelled: m.cancelled,
            rejected: m.rejected,
        }
    }

    /// Each count `op` the other's.
    fn apply(&mut self, other: &Tally, op: impl Fn(u64, u64) -> u64) {
        self.calls = op(self.calls, other.calls);
        self.errors = op(self.errors, other.errors);
        self.caller_errors = op(self.caller_errors, other.caller_errors);
        self.cancelled = op(self.cancelled, other.cancelled);
        self.rejected = op(self.rejected, other.rejected);
    }
}

/// One instance's report of one method side in one minute; its histograms as the pairs of
/// bucket index and count of their nonzero buckets ([`Histogram::to_pairs`]).
#[derive(Debug, Clone, Default)]
struct Counts {
    tally: Tally,
    latency: Box<[u64]>,
    queue: Box<[u64]>,
}

impl Counts {
    /// A method minute of a report, if it can be true: its counts add up, its histograms
    /// read whole (log-linear pairs, or the 1-2-5 buckets of older reporters) and nothing
    /// passes [`MAX_CALLS_PER_MINUTE`].
    ///
    /// Histograms are bounded by that cap, not by the calls: a minute's queue waits count
    /// the handlers started in it, long polls still waiting included, and a reporter reads
    /// a call's latency and its answer a moment apart.
    fn plausible(m: &MethodMinute) -> Option<Counts> {
        let read = |pairs: &[u64], old: &[u64]| {
            if pairs.is_empty() {
                // At most the old buckets' number, as before.
                (old.len() <= 23).then(|| Histogram::from_old_buckets(old))
            } else {
                Histogram::from_pairs(pairs)
            }
        };
        let latency = read(&m.latency_buckets, &m.latency)?;
        let queue = read(&m.queue_wait_buckets, &m.queue_wait)?;
        let sum = |h: &[u64]| h.iter().try_fold(0u64, |a, &c| a.checked_add(c));
        let most = MAX_CALLS_PER_MINUTE;
        let implausible = m.calls > most
            || latency.count() > most
            || queue.count() > most
            || [m.errors, m.caller_errors, m.cancelled]
                .iter()
                .try_fold(0u64, |a, &c| a.checked_add(c))
                .is_none_or(|n| n > m.calls)
            || m.rejected > m.calls
            || sum(&m.latency).is_none_or(|n| n > most)
            || sum(&m.queue_wait).is_none_or(|n| n > most);
        (!implausible).then(|| Counts {
            tally: Tally::of(m),
            latency: latency.to_pairs().into(),
            queue: queue.to_pairs().into(),
        })
    }

    /// The heap bytes it holds.
    fn bytes(&self) -> usize {
        (self.latency.len() + self.queue.len()) * 8
    }
}

/// The sum of every instance's report of one method side in one minute.
#[derive(Debug, Clone, Default)]
struct Total {
    tally: Tally,
    latency: Histogram,
    queue: Histogram,
}

impl Total {
    /// Adds (`add` true) or takes away `report`, wrapping: a total that had a report added
    /// can have it taken away again exactly, whatever the numbers.
    fn apply(&mut self, report: &Counts, add: bool) {
        let op = |a: u64, b: u64| {
            if add {
                a.wrapping_add(b)
            } else {
                a.wrapping_sub(b)
            }
        };
        self.tally.apply(&report.tally, op);
        for (total, pairs) in [
            (&mut self.latency, &report.latency),
            (&mut self.queue, &report.queue),
        ] {
            // Indices were checked when the report was taken.
            for pair in pairs.chunks_exact(2) {
                if let Some(c) = total.counts.get_mut(pair[0] as usize) {
                    *c = op(*c, pair[1]);
                }
            }
        }
    }
}

/// One minute still open: each instance's latest report of it, and their sum (kept as
/// reports come, so taking one in costs the same however many instances report).
#[derive(Debug, Default)]
struct Open {
    by: HashMap<InstanceKey, Counts>,
    total: Total,
}

/// One method side across every instance.
#[derive(Debug)]
struct Series {
    minutes: Ring,
    open: BTreeMap<u64, Open>,
}

impl Default for Series {
    fn default() -> Series {
        Series {
            // Grown as minutes come, up to a day.
            minutes: Ring::with_capacity(0).bounded(super::rollup::HISTORY),
            open: BTreeMap::new(),
        }
    }
}

/// An alarm firing in a reporting process, as it reported it.
#[derive(Clone, Debug, serde::Serialize)]
struct Reported {
    service: String,
    method: String,
    figure: String,
    /// The figure, the minute it is of, its baseline and the minute it fired: `None` from
    /// processes that report alarms by name only.
    value: Option<f64>,
    value_minute: Option<u64>,
    baseline: Option<f64>,
    since_minute: Option<u64>,
}

impl Reported {
    /// The alarms of `report`: with their figures, or by name from older reporters.
    fn of(report: &Report) -> Vec<Reported> {
        let kept = |a: &&super::ossagent::Alarm| {
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
    fn name(&self) -> String {
        format!("{}.{} {}", self.service, self.method, self.figure)
    }
}

#[derive(Debug)]
struct Instance {
    /// The address it reports from (`None` in process).
    peer: Option<IpAddr>,
    services: Vec<String>,
    alarms: Vec<Reported>,
    last_seen: Instant,
    /// Server-side calls and errors in its newest reported minute.
    calls: u64,
    errors: u64,
}

#[derive(Debug, Default)]
struct State {
    instances: BTreeMap<InstanceKey, Instance>,
    series: BTreeMap<SeriesKey, Series>,
    /// Reports held in every series' open minutes, and the bytes of their histograms.
    open: usize,
    open_bytes: usize,
    /// The minute open minutes were last swept for ones no report can reach any more.
    swept: u64,
}

/// A name from a report, if it is short enough to keep.
fn name(s: &str) -> Option<String> {
    (s.len() <= MAX_NAME).then(|| s.to_owned())
}

impl State {
    /// Lets go of the open minutes before `first`, which no report is taken for any more:
    /// a series that went silent (a method gone, an instance stopped) would otherwise hold
    /// its last reports against the caps for ever.
    fn sweep(&mut self, first: u64) {
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

/// The ossagent service: host a shared one with `OssAgentServer::from_arc(agent.clone())`,
/// and serve its dashboard by passing it to [`admin::bind`] as well.
#[derive(Debug, Default)]
pub struct Agent {
    state: Mutex<State>,
    /// Reports dropped, by [`Dropped`] reason.
    dropped: [AtomicU64; 5],
    /// The counts last logged, and when.
    logged: Mutex<Option<(Instant, [u64; 5])>>,
}

impl OssAgent for Agent {
    async fn report(&self, ctx: Context, request: Report) -> Result<(), Status> {
        if !ctx.trusted {
            self.drop_report(Dropped::Untrusted);
            return Err(Status::permission_denied(
                "reports are taken from trusted peers",
            ));
        }
        self.take_from(ctx.peer.map(|p| p.ip()), request)
            .map_err(|why| Status::invalid_argument(format!("report dropped: {}", why.name())))
    }
}

impl Agent {
    /// Takes in a report from this process (what it holds that cannot be kept is dropped).
    pub fn take(&self, report: Report) {
        let _ = self.take_from(None, report);
    }

    /// Reports dropped so far, by reason.
    pub fn dropped(&self) -> Vec<(Dropped, u64)> {
        Dropped::ALL
            .iter()
            .map(|&d| (d, self.dropped[d as usize].load(Relaxed)))
            .collect()
    }

    /// Counts a dropped report; logs the counts at most once a minute.
    fn drop_report(&self, why: Dropped) {
        self.dropped[why as usize].fetch_add(1, Relaxed);
        let Ok(mut logged) = self.logged.try_lock() else {
            return;
        };
        let now = Instant::now();
        if logged.is_some_and(|(at, _)| now.duration_since(at) < Duration::from_secs(60)) {
            return;
        }
        let counts: [u64; 5] = std::array::from_fn(|i| self.dropped[i].load(Relaxed));
        let before = logged.map_or([0; 5], |(_, c)| c);
        let since: Vec<String> = Dropped::ALL
            .iter()
            .map(|&d| (d, counts[d as usize] - before[d as usize]))
            .filter(|(_, n)| *n > 0)
            .map(|(d, n)| format!("{} {n}", d.name()))
            .collect();
        tracing::warn!(
            "ossagent: reports dropped since the last note: {}",
            since.join(", ")
        );
        *logged = Some((now, counts));
    }

    /// Takes in a report that came from `peer`.
    fn take_from(&self, peer: Option<IpAddr>, report: Report) -> Result<(), Dropped> {
        let result = self.take_checked(peer, report);
        if let Err(why) = result {
            self.drop_report(why);
        }
        result
    }

    fn take_checked(&self, peer: Option<IpAddr>, report: Report) -> Result<(), Dropped> {
        let Some(instance) = name(&report.instance) else {
            return Err(Dropped::BadName);
        };
        // Every method minute read and checked once, before anything is kept: one that
        // cannot be true drops the whole report.
        let mut counts: Vec<Vec<Counts>> = report
            .minutes
            .iter()
            .map(|minute| minute.methods.iter().map(Counts::plausible).collect())
            .collect::<Option<_>>()
            .ok_or(Dropped::Implausible)?;
        let key = (instance, report.pid);
        let now = this_minute();
        // Minutes the agent's clock says are still arriving; a minute ahead for clocks
        // a little ahead.
        let accepted = now.saturating_sub(OPEN_MINUTES)..=now + 1;
        let newest = report
            .minutes
            .iter()
            .map(|m| m.minute)
            .filter(|m| accepted.contains(m))
            .max();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .instances
            .retain(|_, i| i.last_seen.elapsed() < FORGET);
        if state.swept < now {
            state.sweep(*accepted.start());
            state.swept = now;
        }
        if !state.instances.contains_key(&key) {
            if let Some(peer) = peer
                && state
                    .instances
                    .values()
                    .filter(|i| i.peer == Some(peer))
                    .count()
                    >= MAX_INSTANCES_PER_PEER
            {
                return Err(Dropped::PeerFull);
            }
            if state.instances.len() >= MAX_INSTANCES {
                // The one silent longest gives way, once it is not reporting.
                let silent = state
                    .instances
                    .iter()
                    .max_by_key(|(_, i)| i.last_seen.elapsed())
                    .filter(|(_, i)| i.last_seen.elapsed() >= LIVE)
                    .map(|(k, _)| k.clone());
                match silent {
                    Some(k) => {
                        state.instances.remove(&k);
                    }
                    None => return Err(Dropped::Full),
                }
            }
        }
        let (mut calls, mut errors) = (0u64, 0u64);
        for (minute, counts) in report
            .minutes
            .iter()
            .zip(&mut counts)
            .filter(|(m, _)| accepted.contains(&m.minute))
        {
            for (m, counts) in minute.methods.iter().zip(counts.drain(..)).take(MAX_LIST) {
                let (Some(service), Some(method)) = (name(&m.service), name(&m.method)) else {
                    continue;
                };
                if Some(minute.minute) == newest && !m.client {
                    calls = calls.saturating_add(m.calls);
                    errors = errors.saturating_add(m.errors);
                }
                let series_key = (service, method, m.client);
                if !state.series.contains_key(&series_key) && state.series.len() >= MAX_SERIES {
                    continue;
                }
                let (held, held_bytes) = (state.open, state.open_bytes);
                let series = state.series.entry(series_key).or_default();
                let open = series.open.entry(minute.minute).or_default();
                let (added, bytes_added) = match open.by.get_mut(&key) {
                    Some(old) if held_bytes + counts.bytes() <= MAX_OPEN_BYTES + old.bytes() => {
                        open.total.apply(old, false);
                        let more = counts.bytes() as isize - old.bytes() as isize;
                        *old = counts;
                        (0, more)
                    }
                    None if held < MAX_OPEN && held_bytes + counts.bytes() <= MAX_OPEN_BYTES => {
                        let more = counts.bytes() as isize;
                        open.by.insert(key.clone(), counts);
                        (1, more)
                    }
                    _ => continue,
                };
                let latest = &open.by[&key];
                open.total.apply(latest, true);
                series.minutes.upsert(figures(minute.minute, &open.total));
                let (mut removed, mut bytes_removed) = (0, 0);
                while series.open.len() as u64 > OPEN_MINUTES + 2 {
                    if let Some((_, gone)) = series.open.pop_first() {
                        removed += gone.by.len();
                        bytes_removed += gone.by.values().map(Counts::bytes).sum::<usize>();
                    }
                }
                state.open = state.open + added - removed;
                state.open_bytes =
                    (state.open_bytes as isize + bytes_added) as usize - bytes_removed;
            }
        }
        let list = |l: &[crate::FastStr]| -> Vec<String> {
            l.iter()
                .take(MAX_INSTANCE_LIST)
                .filter_map(|s| name(s))
                .collect()
        };
        state.instances.insert(
            key,
            Instance {
                peer,
                services: list(&report.services),
                alarms: Reported::of(&report),
                last_seen: Instant::now(),
                calls,
                errors,
            },
        );
        Ok(())
    }

    /// Instances that reported, by name.
    pub fn instances(&self) -> Vec<String> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .instances
            .keys()
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The figures of one method side across instances, oldest minute first.
    pub fn series(&self, service: &str, method: &str, client: bool) -> Vec<Figures> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let key = (service.to_owned(), method.to_owned(), client);
        state
            .series
            .get(&key)
            .map(|s| s.minutes.iter().copied().collect())
            .unwrap_or_default()
    }

    /// What the pages show, copied out under the lock (rendering happens after, so a big
    /// page never holds up reports).
    fn snapshot(&self, minutes: usize) -> Snapshot {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let first = this_minute().saturating_sub(minutes as u64);
        Snapshot {
            series: state
                .series
                .iter()
                .map(|(key, s)| {
                    let recent = s.minutes.iter().filter(|f| f.minute >= first).copied();
                    (key.clone(), recent.collect())
                })
                .collect(),
            instances: state
                .instances
                .iter()
                .map(|((name, pid), i)| {
                    (
                        name.clone(),
                        *pid,
                        i.services.clone(),
                        i.alarms.clone(),
                        i.last_seen.elapsed(),
                        (i.calls, i.errors),
                    )
                })
                .collect(),
        }
    }

    fn page(&self, minutes: usize) -> String {
        let snapshot = self.snapshot(minutes);
        let now = this_minute();
        // The overview: every server-side series added up (latency: the worst method's).
        let mut overview: BTreeMap<u64, Figures> = BTreeMap::new();
        for ((_, _, client), figures) in &snapshot.series {
            if *client {
                continue;
            }
            for f in figures {
                let o = overview.entry(f.minute).or_insert(Figures {
                    minute: f.minute,
                    ..Figures::default()
                });
                o.calls = o.calls.saturating_add(f.calls);
                o.errors = o.errors.saturating_add(f.errors);
                o.caller_errors = o.caller_errors.saturating_add(f.caller_errors);
                o.cancelled = o.cancelled.saturating_add(f.cancelled);
                o.rejected = o.rejected.saturating_add(f.rejected);
                o.p50_ms = o.p50_ms.max(f.p50_ms);
                o.p99_ms = o.p99_ms.max(f.p99_ms);
                o.queue_p99_ms = o.queue_p99_ms.max(f.queue_p99_ms);
            }
        }
        let w = Window::new(now, minutes, overview.values());
        let mut rows = vec![w.row("overview".into(), "all services".into(), "all")];
        let mut panels = vec![w.panel(
            "overview".into(),
            "all services (latency: worst method)".into(),
            "all",
        )];
        for (i, ((service, method, client), figures)) in snapshot.series.iter().enumerate() {
            let side = if *client { "client" } else { "server" };
            let w = Window::new(now, minutes, figures);
            let id = format!("s{i}");
            let name = format!("{service}.{method}");
            let row = w.row(id.clone(), name.clone(), side);
            if row.calls > 0 {
                panels.push(w.panel(id, name, side));
            }
            rows.push(row);
        }
        let mut alerts = Vec::new();
        let instances: Vec<InstanceRow> = snapshot
            .instances
            .iter()
            .map(|(name, pid, services, alarms, age, (calls, errors))| {
                for a in alarms {
                    let what = format!("{}.{} on {name} (pid {pid})", a.service, a.method);
                    let figure = super::alarm::Figure::from_name(&a.figure);
                    alerts.push(match (figure, a.value, a.value_minute, a.baseline) {
                        // The row the process's own page shows, from the same figures.
                        (Some(figure), Some(value), Some(minute), Some(baseline)) => {
                            super::dashboard::AlertRow::new(
                                what,
                                figure,
                                (value, minute),
                                baseline,
                                a.since_minute.unwrap_or(now),
                                now,
                            )
                        }
                        _ => super::dashboard::AlertRow {
                            what,
                            figure: figure.map_or("", super::alarm::Figure::name),
                            value: "-".into(),
                            baseline: "-".into(),
                            since: "-".into(),
                        },
                    });
                }
                InstanceRow {
                    instance: format!("{name} (pid {pid})"),
                    services: services.join(", "),
                    age: super::dashboard::age(age.as_secs()),
                    live: *age < LIVE,
                    calls: *calls,
                    errors: *errors,
                    firing: if alarms.is_empty() {
                        "-".into()
                    } else {
                        alarms
                            .iter()
                            .map(Reported::name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                }
            })
            .collect();
        let live = instances.iter().filter(|i| i.live).count();
        let page = Page {
            title: "ossagent: the whole system".into(),
            subtitle: format!(
                "{} instances, {live} reporting · {} series · {} reports dropped",
                instances.len(),
                snapshot.series.len(),
                self.dropped().iter().map(|(_, n)| n).sum::<u64>()
            ),
            refresh_secs: 10,
            window: minutes,
            alerts,
            rows,
            panels,
            instances,
            windows: admin::windows(minutes),
        };
        askama::Template::render(&page).unwrap_or_else(|e| format!("cannot render: {e}"))
    }
}

/// A copy of what the agent's pages show.
struct Snapshot {
    series: Vec<(SeriesKey, Vec<Figures>)>,
    /// Name, pid, services, alarms firing, time since the last report, (calls, errors).
    #[allow(clippy::type_complexity)]
    instances: Vec<(
        String,
        u32,
        Vec<String>,
        Vec<Reported>,
        Duration,
        (u64, u64),
    )>,
}

/// The figures of a minute from the sum of every instance's report of it: percentiles from
/// the merged histograms.
fn figures(minute: u64, total: &Total) -> Figures {
    let t = &total.tally;
    Figures {
        minute,
        calls: t.calls,
        errors: t.errors,
        caller_errors: t.caller_errors,
        cancelled: t.cancelled,
        rejected: t.rejected,
        p50_ms: total.latency.quantile_ms(0.5),
        p99_ms: total.latency.quantile_ms(0.99),
        queue_p99_ms: total.queue.quantile_ms(0.99),
    }
}

/// The agent's pages: its system dashboard at `/` and `/system.json`; the agent process's
/// own pages stay at `/metrics`, `/stats.json` and the rest.
impl Pages for Agent {
    fn page(&self, path: &str, minutes: usize) -> Option<Reply> {
        match path {
            "/" => Some((
                StatusCode::OK,
                "text/html; charset=utf-8",
                Agent::page(self, minutes),
            )),
            "/system.json" => {
                let snapshot = self.snapshot(minutes);
                let series: Vec<_> = snapshot
                    .series
                    .iter()
                    .map(|((service, method, client), minutes)| {
                        serde_json::json!({
                            "service": service,
                            "method": method,
                            "side": if *client { "client" } else { "server" },
                            "minutes": minutes,
                        })
                    })
                    .collect();
                let instances: Vec<_> = snapshot
                    .instances
                    .iter()
                    .map(|(name, pid, services, alarms, age, _)| {
                        serde_json::json!({
                            "instance": name,
                            "pid": pid,
                            "services": services,
                            "seconds_since_report": age.as_secs_f64(),
                            "firing": alarms.iter().map(Reported::name).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                let dropped: serde_json::Map<String, serde_json::Value> = self
                    .dropped()
                    .into_iter()
                    .map(|(why, n)| (why.name().to_owned(), n.into()))
                    .collect();
                Some(admin::json(&serde_json::json!({
                    "instances": instances,
                    "series": series,
                    "dropped": dropped,
                })))
            }
            // The system's alarms, as the page's table shows them, with the figures the
            // reporting processes gave; the agent's own beside them.
            "/alerts.json" => {
                let snapshot = self.snapshot(1);
                let firing: Vec<_> = snapshot
                    .instances
                    .iter()
                    .flat_map(|(name, pid, _, alarms, _, _)| {
                        alarms.iter().map(move |a| {
                            let mut v = serde_json::to_value(a).unwrap_or_default();
                            v["instance"] = name.as_str().into();
                            v["pid"] = (*pid).into();
                            v
                        })
                    })
                    .collect();
                let own = super::board::board();
                Some(admin::json(&serde_json::json!({
                    "firing": firing,
                    "own": own.firing(),
                    "events": own.events,
                    "unready": super::health::failing(),
                })))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::histogram::bucket;
    use super::super::ossagent::{MethodMinute, Minute};
    use super::*;

    /// A report of `calls` calls of `s.S.M`, each taking `latency_us`.
    fn report(instance: &str, minute: u64, calls: u64, latency_us: u64) -> Report {
        let latency_buckets = vec![bucket(latency_us * 1000) as u64, calls];
        Report {
            instance: instance.to_owned().into(),
            minutes: vec![Minute {
                minute,
                methods: vec![MethodMinute {
                    service: "s.S".into(),
                    method: "M".into(),
                    calls,
                    errors: 1,
                    latency_buckets,
                    ..MethodMinute::default()
                }],
                ..Minute::default()
            }],
            ..Report::default()
        }
    }

    #[test]
    fn instances_merge_and_later_reports_replace_earlier() {
        let now = this_minute();
        let agent = Agent::default();
        agent.take(report("a", now - 1, 5, 15));
        agent.take(report("a", now - 1, 50, 15)); // the same minute, later: replaces
        agent.take(report("b", now - 1, 50, 1500)); // another instance, slower
        agent.take(report("b", now, 4, 1500));
        let s = agent.series("s.S", "M", false);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].minute, s[0].calls, s[0].errors), (now - 1, 100, 2));
        // Half the calls in (10, 20] µs, half in (1, 2] ms: p99 in the slow instance's bucket.
        assert!(s[0].p50_ms <= 0.02 && s[0].p99_ms > 1.0, "{:?}", s[0]);
        assert_eq!(agent.instances(), ["a", "b"]);
        let html = agent.page(30);
        assert!(html.contains(r#"data-instance="b (pid 0)""#), "{html}");
    }

    /// One source for every figure: an alarm fired from a process's minutes reads the same
    /// on the process's page, on the agent's page and in the agent's `/alerts.json`.
    #[test]
    fn the_agent_shows_and_serves_reported_alarms_with_the_processs_figures() {
        use super::super::alarm::{AlarmConfig, Change, Detector, Figure};
        use super::super::dashboard::{AlertRow, Window};
        use super::super::rollup::Ring;
        let now = this_minute();
        let mut ring = Ring::default();
        let mut detector = Detector::default();
        let mut fired = None;
        for minute in now - 40..now {
            let errors = if minute == now - 1 { 129 } else { 1 };
            ring.push(Figures {
                minute,
                calls: 1000,
                errors,
                ..Figures::default()
            });
            let change = detector.step(
                Figure::ErrorRate,
                &ring,
                &AlarmConfig::default(),
                ("s.S", "M"),
            );
            if let Some(Change::Fired(a)) = change {
                fired = Some(a);
            }
        }
        let alarm = fired.expect("the error rate rose from 0.1% to 12.9%");
        // The process's own page: the alarm row and the chart's label.
        let row = AlertRow::of(&alarm, now);
        let chart = Window::new(now, 30, ring.iter()).panel("p".into(), "s.S.M".into(), "server");
        assert_eq!(chart.charts[1].latest, row.value);
        assert!(row.value.starts_with("12.9% at "), "{}", row.value);

        // A minute back in band does not clear it yet (two are needed), but the alarm's
        // value follows the minute, as the chart does: never "12.9% now" beside a chart at
        // 0.1%.
        let mut later = ring.clone();
        later.push(Figures {
            minute: now,
            calls: 1000,
            errors: 1,
            ..Figures::default()
        });
        let mut still = detector.clone();
        let config = AlarmConfig::default();
        assert_eq!(
            still.step(Figure::ErrorRate, &later, &config, ("s.S", "M")),
            None
        );
        let firing = still.firing().expect("still firing");
        let chart = Window::new(now + 1, 30, later.iter()).panel("p".into(), "s".into(), "server");
        assert_eq!(chart.charts[1].latest, AlertRow::of(firing, now + 1).value);
        assert!(
            chart.charts[1].latest.starts_with("0.1% at "),
            "{}",
            chart.charts[1].latest
        );

        let agent = Agent::default();
        let mut r = report("a", now - 1, 1000, 2);
        r.alarms = vec![super::super::report::alarm(&alarm)];
        r.firing = vec!["s.S.M error_rate".into()];
        agent.take(r);
        let html = agent.page(30);
        assert!(html.contains(&format!("<td>{}</td>", row.value)), "{html}");
        let Some((_, _, json)) = Pages::page(&agent, "/alerts.json", 30) else {
            panic!("no /alerts.json");
        };
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        let firing = &json["firing"][0];
        assert_eq!(firing["value"], alarm.value);
        assert_eq!(firing["value_minute"], alarm.value_minute);
        assert_eq!(firing["figure"], "error_rate");
        assert_eq!(firing["instance"], "a");

        // A process older than the alarm figures names its alarms only: listed, no figures.
        let mut old = report("old", now - 1, 10, 2);
        old.firing = vec!["s.S.M p99_latency".into()];
        agent.take(old);
        let json = Pages::page(&agent, "/alerts.json", 30).unwrap().2;
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        let old = json["firing"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["instance"] == "old")
            .unwrap();
        assert_eq!(
            (&old["method"], &old["value"]),
            (&"M".into(), &serde_json::Value::Null)
        );
    }

    /// A process from before the log-linear buckets reports the 1-2-5 ones: its latencies
    /// merge with a newer process's, as roughly as they were measured.
    #[test]
    fn reports_in_the_old_buckets_merge_with_the_new() {
        let now = this_minute();
        let agent = Agent::default();
        let mut old = report("old", now, 10, 0);
        let m = &mut old.minutes[0].methods[0];
        m.latency_buckets = Vec::new();
        m.latency = vec![0, 0, 0, 0, 0, 10]; // (100, 200] µs
        agent.take(old);
        agent.take(report("new", now, 10, 150));
        let s = agent.series("s.S", "M", false);
        assert_eq!(s[0].calls, 20);
        assert!((s[0].p50_ms / 0.150 - 1.0).abs() < 0.07, "{:?}", s[0]);
        assert!((s[0].p99_ms / 0.150 - 1.0).abs() < 0.07, "{:?}", s[0]);
    }

    /// Held reports of a series that went silent are let go once no report can reach their
    /// minute, so they do not hold the caps for ever; the minutes' figures stay.
    #[test]
    fn reports_of_minutes_no_report_can_reach_are_let_go() {
        let now = this_minute();
        let agent = Agent::default();
        agent.take(report("a", now, 10, 15));
        agent.take(report("b", now, 10, 1500));
        {
            let mut state = agent.state.lock().unwrap();
            assert_eq!(state.open, 2);
            assert_eq!(state.open_bytes, 2 * 2 * 8);
            state.sweep(now); // still open
            assert_eq!(state.open, 2);
            state.sweep(now + 1);
            assert_eq!((state.open, state.open_bytes), (0, 0));
        }
        assert_eq!(agent.series("s.S", "M", false)[0].calls, 20);
    }

    #[test]
    fn processes_that_give_one_name_stay_apart() {
        let now = this_minute();
        let agent = Agent::default();
        for (pid, calls) in [(1, 100), (2, 300), (3, 500)] {
            let mut r = report("0.0.0.0:7000", now, calls, 2);
            r.pid = pid;
            agent.take(r);
        }
        assert_eq!(agent.instances().len(), 3);
        assert_eq!(agent.series("s.S", "M", false)[0].calls, 900);
    }

    #[test]
    fn minutes_far_from_the_agents_clock_are_not_kept() {
        let now = this_minute();
        let agent = Agent::default();
        // A clock ten minutes ahead, or a forged minute, must not hide the others'.
        agent.take(report("ahead", now + 10, 10, 0));
        agent.take(report("ahead", u64::MAX, 10, 0));
        agent.take(report("ok", now, 7, 0));
        let s = agent.series("s.S", "M", false);
        assert_eq!(
            s.iter().map(|f| (f.minute, f.calls)).collect::<Vec<_>>(),
            [(now, 7)]
        );
        agent.take(report("late", now - 60, 7, 0));
        assert_eq!(agent.series("s.S", "M", false).len(), 1);
    }

    #[test]
    fn what_cannot_be_kept_is_dropped_and_nothing_overflows() {
        let now = this_minute();
        let agent = Agent::default();
        for i in 0..MAX_INSTANCES + 10 {
            agent.take(report(&format!("i{i}"), now, 1, 0));
        }
        assert_eq!(agent.instances().len(), MAX_INSTANCES);
        let agent = Agent::default();
        agent.take(report(&"x".repeat(MAX_NAME + 1), now, 1, 0));
        assert!(agent.instances().is_empty());
        let mut r = report("big", now, 10, 0);
        r.minutes[0].methods[0].latency = vec![1; 100_000];
        r.minutes[0].methods[0].method = "y".repeat(MAX_NAME + 1).into();
        agent.take(r.clone());
        assert!(agent.series("s.S", "M", false).is_empty());
        r.minutes[0].methods[0].method = "M".into();
        r.minutes[0].methods[0].latency = vec![1; 10];
        agent.take(r.clone());
        r.instance = "big2".into();
        agent.take(r);
        assert_eq!(agent.series("s.S", "M", false)[0].calls, 20);
        assert!(agent.page(30).contains("data-calls"));
    }

    #[test]
    fn figures_that_cannot_be_true_are_refused_and_counted() {
        let now = this_minute();
        let agent = Agent::default();
        let forged = [
            |m: &mut MethodMinute| m.calls = u64::MAX,
            |m: &mut MethodMinute| m.errors = m.calls + 1, // a 10,000% error rate
            |m: &mut MethodMinute| m.rejected = m.calls + 1,
            |m: &mut MethodMinute| m.latency_buckets = vec![0, MAX_CALLS_PER_MINUTE + 1],
            |m: &mut MethodMinute| m.queue_wait = vec![u64::MAX, 2],
            |m: &mut MethodMinute| m.caller_errors = m.calls, // with the one error: one too many
            |m: &mut MethodMinute| m.queue_wait_buckets = vec![9_999, 1], // no such bucket
            |m: &mut MethodMinute| m.latency_buckets = vec![3], // a pair cut short
        ];
        for (i, forge) in forged.iter().enumerate() {
            let mut r = report(&format!("f{i}"), now, 10, 0);
            forge(&mut r.minutes[0].methods[0]);
            agent.take(r);
        }
        assert!(agent.instances().is_empty());
        assert!(agent.series("s.S", "M", false).is_empty());
        let dropped = agent.dropped();
        assert_eq!(
            dropped[Dropped::Implausible as usize],
            (Dropped::Implausible, 8)
        );
        // A true report still goes in, one with more queue waits than answers too: long
        // polls still waiting were started in the minute (honest reports of a live
        // im-server were refused for it).
        agent.take(report("real", now, 10, 0));
        assert_eq!(agent.series("s.S", "M", false)[0].calls, 10);
        let mut waiting = report("polls", now, 3, 0);
        waiting.minutes[0].methods[0].queue_wait_buckets = vec![bucket(20_000) as u64, 11];
        agent.take(waiting);
        assert_eq!(agent.series("s.S", "M", false)[0].calls, 13);
    }

    #[tokio::test]
    async fn reports_from_untrusted_peers_are_refused_and_counted() {
        let agent = Agent::default();
        let mut ctx = Context::default();
        ctx.trusted = false;
        ctx.peer = Some("203.0.113.9:5000".parse().unwrap());
        let forged = report("forged", this_minute(), 10, 0);
        let e = agent.report(ctx, forged.clone()).await.unwrap_err();
        assert_eq!(e.code(), crate::Code::PERMISSION_DENIED);
        assert!(agent.instances().is_empty());
        assert_eq!(agent.dropped()[0], (Dropped::Untrusted, 1));
        let mut ctx = Context::default();
        ctx.peer = Some("10.0.0.7:5000".parse().unwrap());
        agent.report(ctx, forged).await.unwrap();
        assert_eq!(agent.instances(), ["forged"]);
    }

    #[test]
    fn one_address_cannot_take_every_slot_and_a_restarted_process_appears() {
        let now = this_minute();
        let agent = Agent::default();
        let attacker: IpAddr = "10.0.0.66".parse().unwrap();
        for i in 0..MAX_INSTANCES_PER_PEER + 5 {
            let _ = agent.take_from(Some(attacker), report(&format!("x{i}"), now, 1, 0));
        }
        assert_eq!(agent.instances().len(), MAX_INSTANCES_PER_PEER);
        assert_eq!(agent.dropped()[Dropped::PeerFull as usize].1, 5);
        let real: IpAddr = "10.0.0.1".parse().unwrap();
        agent
            .take_from(Some(real), report("real", now, 1, 0))
            .unwrap();

        // Full: a new instance waits until one has been silent long enough to give way.
        let agent = Agent::default();
        for i in 0..MAX_INSTANCES {
            agent.take(report(&format!("i{i}"), now, 1, 0));
        }
        let mut restarted = report("i0", now, 1, 0);
        restarted.pid = 2;
        assert_eq!(
            agent.take_from(Some(real), restarted.clone()),
            Err(Dropped::Full)
        );
        {
            let mut state = agent.state.lock().unwrap();
            let old = state.instances.get_mut(&("i0".to_owned(), 0)).unwrap();
            old.last_seen = Instant::now() - LIVE;
        }
        agent.take_from(Some(real), restarted).unwrap();
        let instances = agent.instances();
        assert_eq!(instances.len(), MAX_INSTANCES);
        assert_eq!(
            instances.iter().filter(|i| *i == "i0").count(),
            1,
            "the new i0"
        );
    }
}
