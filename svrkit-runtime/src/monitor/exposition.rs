//! The process's counters in the Prometheus (OpenMetrics) text format, written by
//! prometheus-client from the lock-free cells on each scrape.
//!
//! prometheus-client's own metric types would put a lock or a hash lookup on the per-call
//! path (its `Family` is a map behind a lock); the cells here are plain atomics, so they
//! are exposed through its [`Collector`] interface instead, which reads them only when
//! scraped.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::metrics::histogram::{BUCKETS, Histogram, lower_ns};
use crate::metrics::{ClientTotals, Process, ServerTotals, ServiceMetrics};
use crate::metrics::{REJECTION_NAMES, STATUS_NAMES};
use crate::status::Classes;

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every series of the process, as OpenMetrics text (ending in `# EOF`).
pub fn encode() -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Everything));
    let mut out = String::with_capacity(64 * 1024);
    // Writing to a `String` cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[derive(Debug)]
struct Everything;

/// The totals of one method, read once per scrape.
struct Read {
    service: &'static str,
    method: &'static str,
    classes: Classes,
    server: Option<ServerTotals>,
    client: Option<ClientTotals>,
}

impl Collector for Everything {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let read = read_methods();
        encode_servers(&mut e, &read)?;
        encode_clients(&mut e, &read)?;
        let p = crate::metrics::process();
        encode_process(&mut e, p)?;
        encode_admission(&mut e)?;
        encode_business(&mut e)?;
        encode_about(&mut e, p)
    }
}

/// Every registered method's totals, read once per scrape.
fn read_methods() -> Vec<Read> {
    // A method two versions of a service share is read once, from the earlier version,
    // which is marked with both versions' sides.
    let mut seen = std::collections::HashSet::new();
    crate::metrics::services()
        .into_iter()
        .flat_map(|s: &'static ServiceMetrics| {
            let (served, called) = (s.is_served(), s.is_called());
            s.methods.iter().map(move |&m| (s, served, called, m))
        })
        .filter(|(.., m)| seen.insert(std::ptr::from_ref(*m)))
        .map(|(s, served, called, m)| Read {
            service: s.descriptor.name,
            method: m.descriptor.name,
            classes: m.descriptor.classes,
            server: served.then(|| m.server_totals()),
            client: called.then(|| m.client_totals()),
        })
        .collect()
}

/// The methods served, with their server-side totals.
fn servers(read: &[Read]) -> impl Iterator<Item = (&Read, &ServerTotals)> {
    read.iter().filter_map(|r| Some((r, r.server.as_ref()?)))
}

/// The methods called, with their client-side totals.
fn clients(read: &[Read]) -> impl Iterator<Item = (&Read, &ClientTotals)> {
    read.iter().filter_map(|r| Some((r, r.client.as_ref()?)))
}

fn labels(r: &Read) -> [(&'static str, &'static str); 2] {
    [("service", r.service), ("method", r.method)]
}

/// One metric family: its descriptor, then what `each` writes into it.
fn family(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    each: &mut dyn FnMut(&mut MetricEncoder<'_>) -> std::fmt::Result,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    each(&mut m)
}

/// The series of the methods this process serves.
fn encode_servers(e: &mut DescriptorEncoder<'_>, read: &[Read]) -> std::fmt::Result {
    type ServerCount = fn(&ServerTotals) -> u64;
    let server_counters: [(&str, &str, ServerCount); 3] = [
        (
            "svrkit_server_requests",
            "Requests received, per method.",
            |t| t.requests,
        ),
        (
            "svrkit_server_request_bytes",
            "Bytes of request bodies received, per method.",
            |t| t.request_bytes,
        ),
        (
            "svrkit_server_response_bytes",
            "Bytes of response bodies sent, per method.",
            |t| t.response_bytes,
        ),
    ];
    for (name, help, get) in server_counters {
        family(e, name, help, MetricType::Counter, &mut |m| {
            for (r, t) in servers(read) {
                counter(m, &labels(r), get(t))?;
            }
            Ok(())
        })?;
    }
    family(
        e,
        "svrkit_server_protocol_requests",
        "Requests received, per method and protocol: svrkit frames (and in-process calls) \
         or gRPC.",
        MetricType::Counter,
        &mut |m| {
            for (r, t) in servers(read) {
                let grpc = t.grpc_requests.min(t.requests);
                for (protocol, n) in [("svrkit", t.requests - grpc), ("grpc", grpc)] {
                    let l = [
                        ("service", r.service),
                        ("method", r.method),
                        ("protocol", protocol),
                    ];
                    counter(m, &l, n)?;
                }
            }
            Ok(())
        },
    )?;
    family(
        e,
        "svrkit_server_caller_requests",
        "Requests received, per method and calling service: the 16 busiest callers trusted \
         peers named (reweighed every 10 s; a name's count starts at its slot), then other; \
         strangers' requests as untrusted, unnamed ones as none.",
        MetricType::Counter,
        &mut |m| {
            for (r, t) in servers(read) {
                for (caller, n) in &t.callers {
                    let l = [
                        ("service", r.service),
                        ("method", r.method),
                        ("caller", caller.as_str()),
                    ];
                    counter(m, &l, *n)?;
                }
            }
            Ok(())
        },
    )?;
    family(
        e,
        "svrkit_server_responses",
        "Requests answered (refusals included), per method and status; class says whose \
         doing the status is (fault, caller, cancelled, shed, ok).",
        MetricType::Counter,
        &mut |m| {
            for (r, t) in servers(read) {
                by_status(m, r, &t.responses)?;
            }
            Ok(())
        },
    )?;
    type ServerHistogram = fn(&ServerTotals) -> &Histogram;
    let server_histograms: [(&str, &str, ServerHistogram); 2] = [
        (
            "svrkit_server_latency_seconds",
            "From a request's frame being read to its response, for requests that ran.",
            |t| &t.latency,
        ),
        (
            "svrkit_server_queue_wait_seconds",
            "From a request's frame being read to its handler starting.",
            |t| &t.queue_wait,
        ),
    ];
    for (name, help, get) in server_histograms {
        family(e, name, help, MetricType::Histogram, &mut |m| {
            for (r, t) in servers(read) {
                histogram(m, &labels(r), get(t))?;
            }
            Ok(())
        })?;
    }
    family(
        e,
        "svrkit_server_in_flight",
        "Handlers running, per method.",
        MetricType::Gauge,
        &mut |m| {
            for (r, t) in servers(read) {
                m.encode_family(&labels(r))?.encode_gauge(&t.in_flight)?;
            }
            Ok(())
        },
    )?;
    family(
        e,
        "svrkit_server_rejected",
        "Requests refused without running, per method and reason.",
        MetricType::Counter,
        &mut |m| {
            for (r, t) in servers(read) {
                for (reason, n) in REJECTION_NAMES.iter().zip(t.rejected) {
                    let l = [
                        ("service", r.service),
                        ("method", r.method),
                        ("reason", reason),
                    ];
                    counter(m, &l, n)?;
                }
            }
            Ok(())
        },
    )?;
    Ok(())
}

/// The series of the methods this process calls.
fn encode_clients(e: &mut DescriptorEncoder<'_>, read: &[Read]) -> std::fmt::Result {
    family(
        e,
        "svrkit_client_responses",
        "Calls ended, per method and the status the caller saw (cancelled: dropped); class \
         says whose doing the status is.",
        MetricType::Counter,
        &mut |m| {
            for (r, t) in clients(read) {
                by_status(m, r, &t.responses)?;
            }
            Ok(())
        },
    )?;
    family(
        e,
        "svrkit_client_latency_seconds",
        "Whole calls, retries included.",
        MetricType::Histogram,
        &mut |m| {
            for (r, t) in clients(read) {
                histogram(m, &labels(r), &t.latency)?;
            }
            Ok(())
        },
    )?;
    type ClientCount = fn(&ClientTotals) -> u64;
    let client_counters: [(&str, &str, ClientCount); 4] = [
        ("svrkit_client_requests", "Calls made, per method.", |t| {
            t.requests
        }),
        (
            "svrkit_client_retries",
            "Attempts retried, per method.",
            |t| t.retries,
        ),
        (
            "svrkit_client_local_rejects",
            "Calls refused by client-side overload control before being sent.",
            |t| t.local_rejects,
        ),
        (
            "svrkit_client_weak_skips",
            "Calls to weak dependencies skipped.",
            |t| t.weak_skips,
        ),
    ];
    for (name, help, get) in client_counters {
        family(e, name, help, MetricType::Counter, &mut |m| {
            for (r, t) in clients(read) {
                counter(m, &labels(r), get(t))?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Connections, frames, unknown and untrusted requests, reports.
fn encode_process(e: &mut DescriptorEncoder<'_>, p: &Process) -> std::fmt::Result {
    for (name, help, value) in [
        (
            "svrkit_connections_accepted",
            "Connections accepted.",
            p.accepted(),
        ),
        (
            "svrkit_connections_closed",
            "Connections closed.",
            p.closed(),
        ),
        (
            "svrkit_connections_refused",
            "Connections refused at the connection limit.",
            p.refused(),
        ),
        (
            "svrkit_frame_errors",
            "Connections closed because a frame did not decode.",
            p.frame_errors(),
        ),
        (
            "svrkit_frames_oversized",
            "Frames over the size limit, skipped.",
            p.oversized(),
        ),
        (
            "svrkit_monitor_reports",
            "Reports handed to the connection to the ossagent.",
            p.reports_sent(),
        ),
        (
            "svrkit_monitor_reports_failed",
            "Reports not handed over: the ossagent was unreachable, or its connection had stalled (closed after twice the report interval).",
            p.reports_failed(),
        ),
    ] {
        family(e, name, help, MetricType::Counter, &mut |m| {
            m.encode_counter::<NoLabelSet, _, u64>(&value, None)
        })?;
    }
    family(
        e,
        "svrkit_server_unknown",
        "Requests for a service or method this server does not host, and frames of a kind it does not know (their connections are closed).",
        MetricType::Counter,
        &mut |m| {
            for kind in crate::metrics::Unknown::ALL {
                counter(m, &[("kind", kind.name())], p.unknown(kind))?;
            }
            Ok(())
        },
    )?;
    family(
        e,
        "svrkit_server_untrusted",
        "Requests from peers the server does not trust that set a field it then ignored (priority, user key, dye, no_retry, trace id, a deadline over the method's).",
        MetricType::Counter,
        &mut |m| {
            for field in crate::metrics::Untrusted::ALL {
                counter(m, &[("field", field.name())], p.untrusted(field))?;
            }
            Ok(())
        },
    )?;
    let open = p.accepted().saturating_sub(p.closed());
    family(
        e,
        "svrkit_connections_open",
        "Connections open.",
        MetricType::Gauge,
        &mut |m| m.encode_gauge(&open),
    )?;
    Ok(())
}

/// The overload control's state, for the first monitored server.
fn encode_admission(e: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    if let Some(admission) = crate::policy::admission::first_monitored()
        .get()
        .and_then(std::sync::Weak::upgrade)
    {
        let level = i64::from(admission.level());
        let overloaded = i64::from(admission.is_overloaded());
        let wait = admission
            .last_window()
            .map_or(0.0, |w| w.queue_wait.as_secs_f64());
        family(
            e,
            "svrkit_server_admission_level",
            "Priority levels the server admits (512: all; lower: shedding by priority).",
            MetricType::Gauge,
            &mut |m| m.encode_gauge(&level),
        )?;
        family(
            e,
            "svrkit_server_overloaded",
            "1 when the last overload-control window found the server overloaded.",
            MetricType::Gauge,
            &mut |m| m.encode_gauge(&overloaded),
        )?;
        family(
            e,
            "svrkit_server_admission_queue_wait_seconds",
            "Average queue wait (with scheduling lag) of the last overload-control window.",
            MetricType::Gauge,
            &mut |m| m.encode_gauge(&wait),
        )?;
    }
    Ok(())
}

/// Uptime and the runtime's version.
fn encode_about(e: &mut DescriptorEncoder<'_>, p: &Process) -> std::fmt::Result {
    let uptime = p.started.0.elapsed().as_secs_f64();
    family(
        e,
        "svrkit_uptime_seconds",
        "Seconds since the process started monitoring.",
        MetricType::Gauge,
        &mut |m| m.encode_gauge(&uptime),
    )?;
    family(
        e,
        "svrkit_build",
        "The svrkit runtime this process runs.",
        MetricType::Info,
        &mut |m| m.encode_info(&[("version", env!("CARGO_PKG_VERSION"))]),
    )?;
    Ok(())
}

fn counter(m: &mut MetricEncoder<'_>, labels: &[(&str, &str)], value: u64) -> std::fmt::Result {
    m.encode_family(&labels)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn by_status(
    m: &mut MetricEncoder<'_>,
    r: &Read,
    responses: &[u64; STATUS_NAMES.len()],
) -> std::fmt::Result {
    for (slot, (status, &n)) in STATUS_NAMES.iter().zip(responses).enumerate() {
        let l = [
            ("service", r.service),
            ("method", r.method),
            ("status", status),
            ("class", r.classes.of_slot(slot).name()),
        ];
        counter(m, &l, n)?;
    }
    Ok(())
}

/// The service author's metrics (`metrics::business`), under their own names.
fn encode_business(e: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    use crate::metrics::business::Metric;
    for metric in crate::metrics::business::all() {
        match metric {
            Metric::Counter(f) => family(e, f.name, f.help, MetricType::Counter, &mut |m| {
                for (value, c) in f.series() {
                    business_series(m, f.label, value, |m| {
                        m.encode_counter::<NoLabelSet, _, u64>(&c.get(), None)
                    })?;
                }
                Ok(())
            })?,
            Metric::Gauge(f) => family(e, f.name, f.help, MetricType::Gauge, &mut |m| {
                for (value, g) in f.series() {
                    business_series(m, f.label, value, |m| m.encode_gauge(&g.get()))?;
                }
                Ok(())
            })?,
            Metric::Histogram(f) => family(e, f.name, f.help, MetricType::Histogram, &mut |m| {
                for (value, h) in f.series() {
                    // The histogram's "microseconds" are the values.
                    let h = h.read();
                    business_series(m, f.label, value, |m| values_histogram(m, &h, 1e3))?;
                }
                Ok(())
            })?,
        }
    }
    Ok(())
}

/// One business series: with its label and value, or bare when the metric has no label.
fn business_series(
    m: &mut MetricEncoder<'_>,
    label: Option<(&'static str, &'static [&'static str])>,
    value: &'static str,
    encode: impl FnOnce(&mut MetricEncoder<'_>) -> std::fmt::Result,
) -> std::fmt::Result {
    match label {
        Some((name, _)) => encode(&mut m.encode_family(&[(name, value)])?),
        None => encode(m),
    }
}

/// A latency histogram, in seconds.
fn histogram(
    m: &mut MetricEncoder<'_>,
    labels: &[(&str, &str)],
    h: &Histogram,
) -> std::fmt::Result {
    values_histogram(&mut m.encode_family(&labels)?, h, 1e9)
}

/// A histogram whose recorded nanoseconds are divided by `per_unit` for the exposition.
fn values_histogram(m: &mut MetricEncoder<'_>, h: &Histogram, per_unit: f64) -> std::fmt::Result {
    // Prometheus gets a bucket per power of two (`le` 512 ns, 1.024 µs, ... 137 s, +Inf):
    // as fine as the 1-2-5 buckets it had, exact as cumulative counts, and 30 series per
    // histogram instead of the 233 the percentiles on the pages are read from.
    let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(32);
    let mut open = 0u64;
    for (i, &c) in h.counts.iter().enumerate() {
        open = open.saturating_add(c);
        if i == BUCKETS - 1 {
            buckets.push((f64::MAX, open));
        } else if (i + 1).is_multiple_of(8) {
            buckets.push((lower_ns(i + 1) as f64 / per_unit, open));
            open = 0;
        }
    }
    m.encode_histogram::<NoLabelSet>(h.sum_ns as f64 / per_unit, h.count(), &buckets, None)
}
