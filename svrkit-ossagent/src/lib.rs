//! The ossagent: takes every process's per-minute reports and shows the whole system (an
//! overview, every service and method across instances, and every instance) on its
//! dashboard.
//!
//! It is an ordinary generated service ([`OssAgent`], from `idl/svrkit/ossagent.xml`); the
//! `ossagent` binary of this crate hosts it, and any process can host it beside its own
//! services. Reports are checked before anything is kept:
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
//! **Whom it believes.** Only trusted reporters ([`svrkit_runtime::Trust`]: by default
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

mod counts;
mod pages;
mod state;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use svrkit_runtime::monitor::board::this_minute;
pub use svrkit_runtime::monitor::dashboard::MapPair;
use svrkit_runtime::monitor::ossagent::{OssAgent, Report};
use svrkit_runtime::monitor::rollup::Figures;
use svrkit_runtime::{Context, Status};

use counts::{Counts, figures};
use state::{Instance, Reported, State, name};

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

    /// Takes in a report as if it came `at` then, for tests of rates between reports.
    #[cfg(test)]
    pub(crate) fn take_at(&self, report: Report, at: Instant) -> Result<(), Dropped> {
        self.take_checked(None, report, at)
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
        let result = self.take_checked(peer, report, Instant::now());
        if let Err(why) = result {
            self.drop_report(why);
        }
        result
    }

    fn take_checked(
        &self,
        peer: Option<IpAddr>,
        report: Report,
        at: Instant,
    ) -> Result<(), Dropped> {
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
        let list = |l: &[svrkit_runtime::FastStr]| -> Vec<String> {
            l.iter()
                .take(MAX_INSTANCE_LIST)
                .filter_map(|s| name(s))
                .collect()
        };
        let by_method = by_method(&report);
        let mut callers = edges(&by_method);
        let mut business = business(&report);
        // Rates from the instance's last report: what its counts gained since, a minute.
        // (Its series indexed once: a report holds up to `MAX_LIST` of each.)
        if let Some(before) = state.instances.get(&key) {
            let seconds = at.saturating_duration_since(before.last_seen).as_secs_f64();
            // A pair's gain is its methods' gains, each where the method is in both reports
            // and did not go down: a caller that lost its slot in one method's breakdown (or
            // came back to it, from zero) leaves that method out rather than skewing the sum.
            let was: HashMap<(&str, &str, &str), u64> = before
                .by_method
                .iter()
                .map(|(c, s, m, n)| ((c.as_str(), s.as_str(), m.as_str()), *n))
                .collect();
            let mut gained: HashMap<(&str, &str), u64> = HashMap::new();
            for (c, s, m, now) in &by_method {
                if let Some(&was) = was.get(&(c.as_str(), s.as_str(), m.as_str()))
                    && *now >= was
                {
                    *gained.entry((c.as_str(), s.as_str())).or_default() += now - was;
                }
            }
            for e in &mut callers {
                e.per_minute = gained
                    .get(&(e.caller.as_str(), e.service.as_str()))
                    .and_then(|&gain| state::per_minute(gain as f64, 0.0, seconds));
            }
            let values: HashMap<(&str, &str, &str), f64> = before
                .business
                .iter()
                .map(|b| {
                    (
                        (b.name.as_str(), b.label.as_str(), b.kind.as_str()),
                        b.value,
                    )
                })
                .collect();
            for b in business.iter_mut().filter(|b| b.kind != "gauge") {
                b.per_minute = values
                    .get(&(b.name.as_str(), b.label.as_str(), b.kind.as_str()))
                    .and_then(|&was| state::per_minute(b.value, was, seconds));
            }
        }
        state.instances.insert(
            key,
            Instance {
                peer,
                services: list(&report.services),
                alarms: Reported::of(&report),
                last_seen: at,
                calls,
                errors,
                callers,
                by_method,
                business,
            },
        );
        Ok(())
    }

    /// Who calls whom: calls from each caller to each service, summed over the instances
    /// reporting now (each counts its calls since it started), most first, with the calls a
    /// minute between their last two reports (summed over those that reported twice).
    pub fn service_map(&self) -> Vec<MapPair> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut sums: std::collections::BTreeMap<(String, String), (u64, Option<f64>)> =
            Default::default();
        for instance in state
            .instances
            .values()
            .filter(|i| i.last_seen.elapsed() < LIVE)
        {
            for e in &instance.callers {
                let sum = sums
                    .entry((e.caller.clone(), e.service.clone()))
                    .or_default();
                sum.0 = sum.0.saturating_add(e.calls);
                sum.1 = add(sum.1, e.per_minute);
            }
        }
        let mut map: Vec<MapPair> = sums
            .into_iter()
            .map(|((caller, service), (calls, per_minute))| MapPair {
                caller,
                service,
                calls,
                per_minute,
            })
            .collect();
        map.sort_by_key(|edge| std::cmp::Reverse(edge.calls));
        map
    }

    /// The services' own metrics, each series summed over the instances reporting now
    /// (histograms: their numbers of values), with what counters and histograms gained a
    /// minute between the last two reports (summed over the instances that reported twice).
    pub fn business(&self) -> Vec<BusinessSum> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut sums: std::collections::BTreeMap<(String, String), BusinessSum> =
            Default::default();
        for instance in state
            .instances
            .values()
            .filter(|i| i.last_seen.elapsed() < LIVE)
        {
            for b in &instance.business {
                let sum = sums
                    .entry((b.name.clone(), b.label.clone()))
                    .or_insert_with(|| BusinessSum {
                        name: b.name.clone(),
                        label: b.label.clone(),
                        kind: b.kind.clone(),
                        value: 0.0,
                        per_minute: None,
                    });
                sum.value += b.value;
                sum.per_minute = add(sum.per_minute, b.per_minute);
            }
        }
        sums.into_values().collect()
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
}

/// One series of the services' own metrics, summed over the instances reporting now.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BusinessSum {
    #[allow(missing_docs)]
    pub name: String,
    /// `label=value`, or empty.
    pub label: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: String,
    /// A counter's count, a gauge's value, a histogram's number of values.
    pub value: f64,
    /// What a counter or histogram gained a minute between the last two reports.
    pub per_minute: Option<f64>,
}

/// A sum of rates some of which may be unknown: the known ones.
fn add(sum: Option<f64>, rate: Option<f64>) -> Option<f64> {
    match (sum, rate) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

/// A report's calls by caller and service (the map's edges), its methods summed, in the
/// order the pairs first appear.
fn edges(by_method: &[(String, String, String, u64)]) -> Vec<state::Edge> {
    let mut edges: Vec<state::Edge> = Vec::new();
    let mut at: HashMap<(&str, &str), usize> = HashMap::new();
    for (caller, service, _, calls) in by_method {
        let i = *at.entry((caller, service)).or_insert_with(|| {
            edges.push(state::Edge {
                caller: caller.clone(),
                service: service.clone(),
                calls: 0,
                per_minute: None,
            });
            edges.len() - 1
        });
        edges[i].calls = edges[i].calls.saturating_add(*calls);
    }
    edges
}

/// A report's calls by caller, service and method, as far as they can be kept.
fn by_method(report: &Report) -> Vec<(String, String, String, u64)> {
    report
        .callers
        .iter()
        .filter_map(|c| {
            Some((
                name(&c.caller)?,
                name(&c.service)?,
                name(&c.method)?,
                c.calls,
            ))
        })
        .take(MAX_LIST)
        .collect()
}

/// The business metrics of a report, as far as they can be kept (finite values, names
/// within the limits, at most [`MAX_LIST`] series).
fn business(report: &Report) -> Vec<state::Business> {
    report
        .business
        .iter()
        .filter(|b| b.value.is_finite())
        .filter_map(|b| {
            Some(state::Business {
                name: name(&b.name)?,
                kind: name(&b.kind)?,
                label: name(&b.label)?,
                value: b.value,
                per_minute: None,
            })
        })
        .take(MAX_LIST)
        .collect()
}

#[cfg(test)]
mod tests;
