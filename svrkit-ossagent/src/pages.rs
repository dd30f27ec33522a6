//! The agent's pages: the system dashboard at `/`, `/system.json` and `/alerts.json`,
//! rendered from a copy of the state taken under the lock.

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::StatusCode;
use svrkit_runtime::monitor::admin::{self, Pages, Reply};
use svrkit_runtime::monitor::board::this_minute;
use svrkit_runtime::monitor::dashboard::{
    BusinessRow, InstanceRow, Page, ServiceMap, Window, significant,
};
use svrkit_runtime::monitor::rollup::Figures;

use crate::state::{Reported, SeriesKey};
use crate::{Agent, LIVE};

impl Agent {
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

    pub(crate) fn page(&self, minutes: usize) -> String {
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
                    let figure = svrkit_runtime::monitor::alarm::Figure::from_name(&a.figure);
                    alerts.push(match (figure, a.value, a.value_minute, a.baseline) {
                        // The row the process's own page shows, from the same figures.
                        (Some(figure), Some(value), Some(minute), Some(baseline)) => {
                            svrkit_runtime::monitor::dashboard::AlertRow::new(
                                what,
                                figure,
                                (value, minute),
                                baseline,
                                a.since_minute.unwrap_or(now),
                                now,
                            )
                        }
                        _ => svrkit_runtime::monitor::dashboard::AlertRow {
                            what,
                            figure: figure.map_or("", svrkit_runtime::monitor::alarm::Figure::name),
                            value: "-".into(),
                            baseline: "-".into(),
                            since: "-".into(),
                        },
                    });
                }
                InstanceRow {
                    instance: format!("{name} (pid {pid})"),
                    services: services.join(", "),
                    age: svrkit_runtime::monitor::dashboard::age(age.as_secs()),
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
            business: self
                .business()
                .into_iter()
                .map(|b| BusinessRow {
                    name: if b.label.is_empty() {
                        b.name
                    } else {
                        let (l, v) = b.label.split_once('=').unwrap_or((&b.label, ""));
                        format!("{}{{{l}=\"{v}\"}}", b.name)
                    },
                    kind: match b.kind.as_str() {
                        "counter" => "counter",
                        "gauge" => "gauge",
                        "histogram" => "histogram (values)",
                        _ => "?",
                    },
                    value: format!("{}", b.value),
                    // Reports carry what each instance counted since it started: the rate
                    // is from the last two reports of each.
                    last_minute: b
                        .per_minute
                        .map_or_else(String::new, |r| format!("{}/min", significant(r))),
                    help: "summed over the instances reporting",
                })
                .collect(),
            map: ServiceMap::new(self.service_map()),
        };
        page.render()
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
                let map = self.service_map();
                let business = self.business();
                Some(admin::json(&serde_json::json!({
                    "instances": instances,
                    "series": series,
                    "dropped": dropped,
                    "service_map": map,
                    "business": business,
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
                let own = svrkit_runtime::monitor::board::board();
                Some(admin::json(&serde_json::json!({
                    "firing": firing,
                    "own": own.firing(),
                    "events": own.events,
                    "unready": svrkit_runtime::monitor::health::failing(),
                })))
            }
            _ => None,
        }
    }
}
