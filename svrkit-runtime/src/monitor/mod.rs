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
/// The ossagent's generated stubs (from `idl/svrkit/ossagent.xml`; regenerated, not edited).
#[rustfmt::skip]
#[allow(missing_docs, unreachable_pub)]
pub mod ossagent;
#[cfg(feature = "otel")]
pub mod otlp;
pub mod report;
pub mod rollup;
#[cfg(feature = "admin")]
pub mod webhook;

use std::sync::OnceLock;

pub use board::MonitorConfig;

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
    #[cfg(not(feature = "otel"))]
    if config.otlp_endpoint.is_some() {
        return Err(
            "monitor.otlp_endpoint: exporting spans needs the `otel` feature of svrkit-runtime"
                .into(),
        );
    }
    if STARTED.set(()).is_err() {
        return Ok(());
    }
    #[cfg(feature = "otel")]
    if let Some(endpoint) = &config.otlp_endpoint {
        let name = config
            .instance
            .clone()
            .unwrap_or_else(|| instance_name(listen));
        otlp::start(endpoint, &name).map_err(|e| format!("monitor.otlp_endpoint: {e}"))?;
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
