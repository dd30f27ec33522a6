//! Reports to the ossagent: every `report_interval_ms` the process sends the minute under
//! way (so far) and the minute before it, as a oneway call of the generated `OssAgent`
//! stub.
//!
//! The reporter is a task of its own on a channel of its own: a dead agent costs it a failed
//! connect per interval (backed off by the channel), a slow one a queued frame; the services
//! of the process never wait on either. Reports resume by themselves when the agent is back.

use std::time::{Duration, UNIX_EPOCH};

use super::board::{Board, board, this_minute};
use super::ossagent::{
    Alarm, BusinessSeries, CallerCalls, MethodMinute, Minute, OssAgentClient, Report,
};
use super::rollup::Figures;
use crate::client::{CallOptions, Channel, ChannelOptions};
use crate::metrics::histogram::Histogram;

/// Sends a report every `interval` to `agent`, as `instance`, for as long as the task runs.
pub(crate) async fn run(agent: String, instance: String, interval: Duration) {
    // Not counted in the process's own client metrics: monitoring is not the service's
    // traffic.
    let channel = Channel::lazy(
        [agent],
        ChannelOptions {
            connect_timeout: interval.min(Duration::from_secs(2)),
            // An agent that stops reading is dropped soon: reports must not queue behind it.
            write_timeout: (interval * 2).clamp(Duration::from_secs(1), Duration::from_secs(30)),
            caller: "ossagent-reporter".into(),
            monitoring: false,
            ..ChannelOptions::default()
        },
    );
    let method = &OssAgentClient::DESCRIPTOR.methods[0];
    let options =
        CallOptions::timeout(interval.clamp(Duration::from_millis(100), Duration::from_secs(2)));
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let report = report(&board(), &instance);
        let p = crate::metrics::process();
        match channel.call_oneway(method, &report, &options).await {
            Ok(()) => crate::metrics::count(&p.reports_sent),
            Err(_) => crate::metrics::count(&p.reports_failed),
        }
    }
}

/// The report of the minute under way and the one before it.
pub fn report(board: &Board, instance: &str) -> Report {
    let now = this_minute();
    let mut current = Minute {
        minute: now,
        ..Minute::default()
    };
    let mut previous = Minute {
        minute: now - 1,
        ..Minute::default()
    };
    let mut services = Vec::new();
    let mut callers = Vec::new();
    for t in &board.methods {
        let service = t.service.descriptor.name;
        let method = t.rollup.metrics.descriptor.name;
        if t.service.is_served() && services.last() != Some(&service) {
            services.push(service);
        }
        if t.service.is_served() {
            for (caller, calls) in t.rollup.metrics.server_totals().callers {
                callers.push(CallerCalls {
                    caller,
                    service: service.into(),
                    method: method.into(),
                    calls,
                    ..CallerCalls::default()
                });
            }
        }
        let under_way = t.rollup.current(now);
        let [latency, queue, client_latency] = under_way.histograms;
        let sides = [
            (
                t.service.is_served(),
                false,
                under_way.server,
                latency,
                queue,
            ),
            (
                t.service.is_called(),
                true,
                under_way.client,
                client_latency,
                Histogram::default(),
            ),
        ];
        for (used, client, figures, latency, queue) in sides {
            if used && figures.calls > 0 {
                current
                    .methods
                    .push(entry(service, method, client, &figures, &latency, &queue));
            }
        }
        // The minute before, if the board has ended it.
        if board.last_tick == Some(now - 1) {
            let [latency, queue, client_latency] = &t.rollup.ended;
            let sides = [
                (
                    t.service.is_served(),
                    false,
                    t.rollup.server.last(),
                    latency,
                    queue,
                ),
                (
                    t.service.is_called(),
                    true,
                    t.rollup.client.last(),
                    client_latency,
                    &Histogram::default(),
                ),
            ];
            for (used, client, figures, latency, queue) in sides {
                if let Some(f) = figures.filter(|f| used && f.calls > 0) {
                    previous
                        .methods
                        .push(entry(service, method, client, f, latency, queue));
                }
            }
        }
    }
    let p = crate::metrics::process();
    let started_unix = p
        .started
        .1
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let firing = board.firing();
    Report {
        instance: instance.to_owned().into(),
        pid: std::process::id(),
        started_unix,
        minutes: vec![previous, current],
        services: services.into_iter().map(Into::into).collect(),
        firing: firing
            .iter()
            .map(|a| format!("{}.{} {}", a.service, a.method, a.figure.name()).into())
            .collect(),
        alarms: firing.into_iter().map(alarm).collect(),
        callers,
        business: crate::metrics::business::read_all()
            .into_iter()
            .map(|s| BusinessSeries {
                name: s.name.into(),
                kind: s.kind.into(),
                label: s
                    .label
                    .map(|(name, value)| format!("{name}={value}"))
                    .unwrap_or_default()
                    .into(),
                value: s.value,
                p50: s.p50.unwrap_or(0.0),
                p99: s.p99.unwrap_or(0.0),
                ..BusinessSeries::default()
            })
            .collect(),
        ..Report::default()
    }
}

/// An alarm as reports carry it: with the figures the process's own page shows.
pub fn alarm(a: &super::alarm::Alarm) -> Alarm {
    Alarm {
        service: a.service.into(),
        method: a.method.into(),
        figure: a.figure.name().into(),
        value: a.value,
        baseline: a.baseline,
        since_minute: a.since_minute,
        value_minute: a.value_minute,
        ..Alarm::default()
    }
}

fn entry(
    service: &str,
    method: &str,
    client: bool,
    f: &Figures,
    latency: &Histogram,
    queue: &Histogram,
) -> MethodMinute {
    MethodMinute {
        service: service.to_owned().into(),
        method: method.to_owned().into(),
        client,
        calls: f.calls,
        errors: f.errors,
        caller_errors: f.caller_errors,
        cancelled: f.cancelled,
        rejected: f.rejected,
        latency: latency.to_old_buckets(),
        queue_wait: queue.to_old_buckets(),
        latency_buckets: latency.to_pairs(),
        queue_wait_buckets: queue.to_pairs(),
        ..MethodMinute::default()
    }
}
