//! The ossagent: takes every process's per-minute reports and shows the whole system (an
//! overview, every service and method across instances, and every instance) on its
//! dashboard.
//!
//! It is an ordinary generated service ([`OssAgent`](super::ossagent::OssAgent)); the
//! `ossagent` binary in `examples/` hosts it. Its memory is fixed by its caps: at most
//! [`MAX_INSTANCES`] instances and [`MAX_SERIES`] method series, 24 hours of minutes for each
//! series, and the histograms of only the last few minutes (to merge instances exactly while
//! their reports of a minute still arrive). Reports beyond the caps are dropped, not stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::StatusCode;

use super::admin::{self, Pages, Reply};
use super::board::this_minute;
use super::dashboard::{InstanceRow, Page, Window};
use super::histogram::{BUCKETS, Histogram};
use super::ossagent::{MethodMinute, OssAgent, Report};
use super::rollup::{Figures, Ring};
use crate::{Context, Status};

/// Instances tracked at most.
pub const MAX_INSTANCES: usize = 1024;
/// Method series (service, method, side) tracked at most.
pub const MAX_SERIES: usize = 4096;
/// Minutes whose per-instance histograms are kept for merging.
const OPEN_MINUTES: u64 = 3;
/// An instance silent for longer is shown as not reporting.
const LIVE: Duration = Duration::from_secs(90);

type SeriesKey = (String, String, bool);

/// One method side across every instance.
#[derive(Debug, Default)]
struct Series {
    minutes: Ring,
    /// Per minute still open, each instance's latest report of it.
    open: BTreeMap<u64, HashMap<String, MethodMinute>>,
}

#[derive(Debug)]
struct Instance {
    pid: u32,
    services: Vec<String>,
    firing: Vec<String>,
    last_seen: Instant,
    /// Server-side calls and errors in its newest reported minute.
    calls: u64,
    errors: u64,
}

#[derive(Debug, Default)]
struct State {
    instances: BTreeMap<String, Instance>,
    series: BTreeMap<SeriesKey, Series>,
}

/// The ossagent service: host a shared one with `OssAgentServer::from_arc(agent.clone())`,
/// and serve its dashboard by passing it to [`admin::bind`] as well.
#[derive(Debug, Default)]
pub struct Agent {
    state: Mutex<State>,
}

impl OssAgent for Agent {
    async fn report(&self, _ctx: Context, request: Report) -> Result<(), Status> {
        self.take(request);
        Ok(())
    }
}

impl Agent {
    /// Takes in a report.
    pub fn take(&self, report: Report) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let instance = report.instance.to_string();
        if !state.instances.contains_key(&instance) && state.instances.len() >= MAX_INSTANCES {
            return;
        }
        let newest = report.minutes.iter().map(|m| m.minute).max().unwrap_or(0);
        let (mut calls, mut errors) = (0, 0);
        for minute in &report.minutes {
            for m in &minute.methods {
                if minute.minute == newest && !m.client {
                    calls += m.calls;
                    errors += m.errors;
                }
                let key = (m.service.to_string(), m.method.to_string(), m.client);
                if !state.series.contains_key(&key) && state.series.len() >= MAX_SERIES {
                    continue;
                }
                let series = state.series.entry(key).or_default();
                series
                    .open
                    .entry(minute.minute)
                    .or_default()
                    .insert(instance.clone(), m.clone());
                let merged = merge(minute.minute, &series.open[&minute.minute]);
                series.minutes.upsert(merged);
                while series.open.len() as u64 > OPEN_MINUTES {
                    series.open.pop_first();
                }
            }
        }
        state.instances.insert(
            instance,
            Instance {
                pid: report.pid,
                services: report.services.iter().map(ToString::to_string).collect(),
                firing: report.firing.iter().map(ToString::to_string).collect(),
                last_seen: Instant::now(),
                calls,
                errors,
            },
        );
    }

    /// Instances that reported, by name.
    pub fn instances(&self) -> Vec<String> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.instances.keys().cloned().collect()
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

    fn page(&self, minutes: usize) -> String {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = this_minute();
        // The overview: every server-side series added up (latency: the worst method's).
        let mut overview: BTreeMap<u64, Figures> = BTreeMap::new();
        for ((_, _, client), s) in &state.series {
            if *client {
                continue;
            }
            for f in s.minutes.iter() {
                let o = overview.entry(f.minute).or_insert(Figures {
                    minute: f.minute,
                    ..Figures::default()
                });
                o.calls += f.calls;
                o.errors += f.errors;
                o.rejected += f.rejected;
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
        for (i, ((service, method, client), s)) in state.series.iter().enumerate() {
            let side = if *client { "client" } else { "server" };
            let w = Window::new(now, minutes, s.minutes.iter());
            let id = format!("s{i}");
            let name = format!("{service}.{method}");
            let row = w.row(id.clone(), name.clone(), side);
            if row.calls > 0 {
                panels.push(w.panel(id, name, side));
            }
            rows.push(row);
        }
        let instances = state
            .instances
            .iter()
            .map(|(name, i)| {
                let age = i.last_seen.elapsed();
                InstanceRow {
                    instance: name.clone(),
                    services: i.services.join(", "),
                    age: super::dashboard::age(age.as_secs()),
                    live: age < LIVE,
                    calls: i.calls,
                    errors: i.errors,
                    firing: if i.firing.is_empty() {
                        "-".into()
                    } else {
                        i.firing.join(", ")
                    },
                }
            })
            .collect::<Vec<_>>();
        let live = instances.iter().filter(|i| i.live).count();
        let alerts = state
            .instances
            .iter()
            .flat_map(|(name, i)| {
                i.firing.iter().map(move |f| {
                    // Reported as `service.method figure`.
                    let (what, figure) = f.rsplit_once(' ').unwrap_or((f, ""));
                    super::dashboard::AlertRow {
                        what: format!("{what} on {name} (pid {})", i.pid),
                        figure: super::alarm::Figure::ALL
                            .into_iter()
                            .find(|x| x.name() == figure)
                            .map_or("", super::alarm::Figure::name),
                        value: "-".into(),
                        baseline: "-".into(),
                        since: "-".into(),
                    }
                })
            })
            .collect();
        let page = Page {
            title: "ossagent: the whole system".into(),
            subtitle: format!(
                "{} instances, {live} reporting · {} series",
                instances.len(),
                state.series.len()
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

/// Every instance's report of a minute, merged: counts added, histograms added, percentiles
/// from the merged histograms.
fn merge(minute: u64, reports: &HashMap<String, MethodMinute>) -> Figures {
    let mut latency = Histogram::default();
    let mut queue = Histogram::default();
    let mut f = Figures {
        minute,
        ..Figures::default()
    };
    for m in reports.values() {
        f.calls += m.calls;
        f.errors += m.errors;
        f.rejected += m.rejected;
        for (i, c) in m.latency.iter().take(BUCKETS).enumerate() {
            latency.counts[i] += c;
        }
        for (i, c) in m.queue_wait.iter().take(BUCKETS).enumerate() {
            queue.counts[i] += c;
        }
    }
    let ms = |h: &Histogram, q| h.quantile(q).map_or(0.0, |s| s * 1e3);
    f.p50_ms = ms(&latency, 0.5);
    f.p99_ms = ms(&latency, 0.99);
    f.queue_p99_ms = ms(&queue, 0.99);
    f
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
                let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let series: Vec<_> = state
                    .series
                    .iter()
                    .map(|((service, method, client), s)| {
                        let skip = s.minutes.len().saturating_sub(minutes);
                        serde_json::json!({
                            "service": service,
                            "method": method,
                            "side": if *client { "client" } else { "server" },
                            "minutes": s.minutes.iter().skip(skip).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                let instances: Vec<_> = state
                    .instances
                    .iter()
                    .map(|(name, i)| {
                        serde_json::json!({
                            "instance": name,
                            "pid": i.pid,
                            "services": i.services,
                            "seconds_since_report": i.last_seen.elapsed().as_secs_f64(),
                            "firing": i.firing,
                        })
                    })
                    .collect();
                Some(admin::json(&serde_json::json!({
                    "instances": instances,
                    "series": series,
                })))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ossagent::Minute;
    use super::*;

    fn report(instance: &str, minute: u64, calls: u64, latency_bucket: usize) -> Report {
        let mut latency = vec![0; BUCKETS];
        latency[latency_bucket] = calls;
        Report {
            instance: instance.to_owned().into(),
            minutes: vec![Minute {
                minute,
                methods: vec![MethodMinute {
                    service: "s.S".into(),
                    method: "M".into(),
                    calls,
                    errors: 1,
                    latency,
                    ..MethodMinute::default()
                }],
                ..Minute::default()
            }],
            ..Report::default()
        }
    }

    #[test]
    fn instances_merge_and_later_reports_replace_earlier() {
        let agent = Agent::default();
        agent.take(report("a", 10, 5, 2));
        agent.take(report("a", 10, 50, 2)); // the same minute, later: replaces
        agent.take(report("b", 10, 50, 8)); // another instance, slower
        agent.take(report("b", 11, 4, 8));
        let s = agent.series("s.S", "M", false);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].minute, s[0].calls, s[0].errors), (10, 100, 2));
        // Half the calls in (10, 20] µs, half in (1, 2] ms: p99 in the slow instance's bucket.
        assert!(s[0].p50_ms <= 0.02 && s[0].p99_ms > 1.0, "{:?}", s[0]);
        assert_eq!(agent.instances(), ["a", "b"]);
        let html = agent.page(30);
        assert!(html.contains(r#"data-instance="b""#));
    }

    #[test]
    fn caps_hold() {
        let agent = Agent::default();
        for i in 0..MAX_INSTANCES + 10 {
            agent.take(report(&format!("i{i}"), 1, 1, 0));
        }
        assert_eq!(agent.instances().len(), MAX_INSTANCES);
        // A histogram longer than the runtime's is read up to its buckets.
        let mut r = report("x", 1, 1, 0);
        r.minutes[0].methods[0].latency = vec![1; 1000];
        agent.take(r);
    }
}
