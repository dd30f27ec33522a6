//! The configuration file of a service process.
//!
//! ```toml
//! [server]
//! listen = "0.0.0.0:7000"        # where the services of this process are served
//! admin = "127.0.0.1:7001"       # /metrics, /stats.json, /alerts.json, /livez, /readyz, dashboard
//! admin_token_file = "admin.token" # then pages but the probes and /metrics need the token
//! # tls_cert = "server.pem"      # TLS (feature `tls`): certificate chain and key, PEM
//! # tls_key = "server.key"
//! # tls_client_ca = "clients.pem" # ask clients for certificates issued by these (mutual TLS)
//!
//! [limits]                       # see `Limits`; every key is optional
//! max_connections = 10000
//! max_in_flight_per_connection = 1024
//! max_in_flight = 65536
//! max_frame_bytes = 4194304
//! max_buffered_input_bytes = 268435456
//! max_unsent_per_connection_bytes = 4194304
//! write_timeout_ms = 30000
//! read_timeout_ms = 10000
//! idle_timeout_ms = 300000
//! max_connections_per_peer = 1250      # per untrusted address: an eighth of max_connections
//! first_request_timeout_ms = 10000     # an untrusted connection with no call run yet
//! max_deadline_ms = 60000
//! cancel_grace_ms = 200
//! shutdown_grace_ms = 10000
//!
//! [trust]                        # whose priority, user key, dye, no_retry, trace id, deadline count
//! peers = ["loopback", "private"]      # CIDR ranges too; from others: the IDL's defaults
//! # identities = ["orders.internal"]  # and client certificates valid for these names (TLS)
//!
//! [overload]                     # the server's load shedding (DAGOR), see `AdmissionConfig`
//! enabled = true
//! queue_wait_ms = 20             # queue wait that counts as overload (on average; and
//! queue_interval_ms = 100        #   for each request, once it stood this long: CoDel)
//! window_ms = 1000               # a window ends after this long ...
//! window_requests = 2000         # ... or this many requests
//!
//! [client]                       # how this process connects to the services it calls
//! # caller = "im-gateway"        # the name its calls carry
//! connections_per_endpoint = 2
//! connect_timeout_ms = 1000
//! write_timeout_ms = 30000
//! balancer = "p2c"               # or "round_robin", "ring" (consistent hash of the user key)
//! retry = true                   # retry idempotent methods after safe failures ...
//! retry_budget_ratio = 0.2       # ... at most 20% of requests over 10 s ...
//! retry_min_per_second = 10      # ... plus this many a second
//! retry_backoff_ms = 10          # first backoff bound, doubling per retry
//! retry_max_backoff_ms = 500
//! throttle = 2.0                 # adaptive throttling's K; 0 turns it off
//! eject_after = 5                # UNAVAILABLE failures in a row that eject an endpoint
//! # tls_ca = "ca.pem"            # TLS to every endpoint, trusting these certificates
//! # tls_server_name = "svc.internal"   # name to check instead of each endpoint's host
//! # tls_cert = "me.pem"          # a client certificate, for servers that ask (with tls_key)
//! # tls_key = "me.key"
//!
//! [services."im.message.MessageSvr"]   # each service this process calls, by full name
//! endpoints = ["10.0.0.1:7000", "10.0.0.2:7000"]
//! # discovery = "etcd"          # instead of endpoints: the replicas registered in etcd
//! # balancer = "ring"           # instead of [client]'s
//! # weak_timeout_ms = 50        # a weak dependency: failures give skipped results
//! # groups.canary = ["10.0.0.3:7000"]      # gray release: a named endpoint group ...
//! # routes = [{ group = "canary", fraction = 0.05, dye = "gray" }]   # ... and who goes there
//!
//! [discovery]                    # see `DiscoveryConfig` (feature `etcd`)
//! # etcd = ["127.0.0.1:2379"]    # set: this process registers its services there
//! lease_ttl_s = 3                # a dead process drops out this long after it died
//! drain_ms = 500
//! # set = "set-1"                # the SET this process belongs to
//!
//! [monitor]                      # see `MonitorConfig`
//! slow_call_ms = 1000            # calls slower than this are logged at warn
//! # agent = "10.0.0.9:7400"      # report per-minute figures to this ossagent
//! report_interval_ms = 10000
//!
//! [monitor.alarms]               # see `AlarmConfig`; defaults do not fire on noise
//! window_minutes = 30
//! error_rate_rise = 0.05
//! # webhook = "http://alerts.internal:9000/svrkit"
//!
//! [app]                          # the application's own settings: `Config::app`
//! # data = "./im-data"
//! ```
//!
//! Every key has a default that works on one machine, so an empty file is a valid
//! configuration. An unknown key, a value of the wrong type or an unparsable address is an
//! error that names the key (and, for syntax, the line).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::client::{BalancerKind, ChannelOptions, Route};
use crate::discovery::{DiscoveryConfig, DiscoveryKind};
use crate::monitor::MonitorConfig;
use crate::policy::AdmissionConfig;
use crate::server::Limits;

/// What a configuration that asks for etcd gets from a build without it. The feature is off
/// by default because the etcd client's build runs protoc.
#[cfg_attr(feature = "etcd", allow(dead_code))]
const NO_ETCD: &str =
    "this build has no etcd discovery: rebuild with the `etcd` cargo feature (it needs protoc)";

/// A parsed configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[client]`.
    pub client: ClientConfig,
    /// `[services."<full name>"]`.
    pub services: BTreeMap<String, ServiceConfig>,
    /// `[discovery]`.
    pub discovery: DiscoveryConfig,
    /// `[monitor]`.
    pub monitor: MonitorConfig,
    /// `[overload]`.
    pub overload: AdmissionConfig,
    /// `[trust]`.
    pub trust: TrustConfig,
    /// `[app]`: the application's own settings, unchecked here; read them with
    /// [`Config::app`].
    pub app: toml::Table,
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the services are served on (default `127.0.0.1:7000`).
    pub listen: String,
    /// Address of the admin endpoint (metrics, stats, alerts, health and the dashboard);
    /// none when unset.
    pub admin: Option<String>,
    /// File holding a token that every admin page but the probes (`/livez`, `/readyz`,
    /// `/healthz`) and `/metrics` then requires as `Authorization: Bearer <token>`.
    pub admin_token_file: Option<String>,
    /// PEM file of the certificate chain to serve TLS with (with `tls_key`).
    pub tls_cert: Option<String>,
    /// PEM file of the private key of `tls_cert`.
    pub tls_key: Option<String>,
    /// PEM file of the authorities whose client certificates the server accepts: set,
    /// clients are asked for one, and those valid for a name in `[trust] identities` are
    /// trusted.
    pub tls_client_ca: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: "127.0.0.1:7000".to_owned(),
            admin: None,
            admin_token_file: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
        }
    }
}

/// `[trust]`: which peers' header fields the server obeys (see [`Trust`](crate::Trust)).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// Address ranges (CIDR, addresses, `loopback`, `private`, `any`); default loopback and
    /// the private ranges.
    pub peers: Vec<String>,
    /// Names (DNS names or addresses) a client certificate may be valid for to be trusted,
    /// wherever the client connects from (needs `server.tls_client_ca`).
    pub identities: Vec<String>,
}

impl Default for TrustConfig {
    fn default() -> TrustConfig {
        TrustConfig {
            peers: vec!["loopback".to_owned(), "private".to_owned()],
            identities: Vec::new(),
        }
    }
}

/// `[limits]`: see [`Limits`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct LimitsConfig {
    pub max_connections: usize,
    pub max_in_flight_per_connection: usize,
    pub max_in_flight: usize,
    pub max_frame_bytes: usize,
    pub max_buffered_input_bytes: usize,
    pub max_unsent_per_connection_bytes: usize,
    pub write_timeout_ms: u64,
    pub read_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub max_connections_per_peer: usize,
    pub first_request_timeout_ms: u64,
    pub max_deadline_ms: u64,
    pub cancel_grace_ms: u64,
    pub shutdown_grace_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        let l = Limits::default();
        LimitsConfig {
            max_connections: l.max_connections,
            max_in_flight_per_connection: l.max_in_flight_per_connection,
            max_in_flight: l.max_in_flight,
            max_frame_bytes: l.max_frame,
            max_buffered_input_bytes: l.max_buffered_input,
            max_unsent_per_connection_bytes: l.max_unsent_per_connection,
            write_timeout_ms: l.write_timeout.as_millis() as u64,
            read_timeout_ms: l.read_timeout.as_millis() as u64,
            idle_timeout_ms: l.idle_timeout.as_millis() as u64,
            max_connections_per_peer: l.max_connections_per_peer,
            first_request_timeout_ms: l.first_request_timeout.as_millis() as u64,
            max_deadline_ms: l.max_deadline.as_millis() as u64,
            cancel_grace_ms: l.cancel_grace.as_millis() as u64,
            shutdown_grace_ms: l.shutdown_grace.as_millis() as u64,
        }
    }
}

/// `[client]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// The name this process gives as the caller of its calls (servers log and count by
    /// it).
    pub caller: String,
    /// Connections kept to each endpoint.
    pub connections_per_endpoint: usize,
    /// Time allowed to connect.
    pub connect_timeout_ms: u64,
    /// Time a peer may stop reading before its connection is closed.
    pub write_timeout_ms: u64,
    /// PEM file of the certificates to trust: set, every endpoint is spoken to over TLS.
    pub tls_ca: Option<String>,
    /// The name endpoint certificates are checked against (default: each endpoint's host).
    pub tls_server_name: Option<String>,
    /// PEM file of a certificate chain to present to servers that ask for one (with
    /// `tls_key`).
    pub tls_cert: Option<String>,
    /// PEM file of the private key of `tls_cert`.
    pub tls_key: Option<String>,
    /// The balancer of every channel (unless its service says otherwise).
    pub balancer: BalancerKind,
    /// Whether idempotent methods are retried after safe failures.
    pub retry: bool,
    /// Retries allowed as a share of requests over ten seconds.
    pub retry_budget_ratio: f64,
    /// Retries allowed per second besides.
    pub retry_min_per_second: f64,
    /// The first backoff's bound, doubling with each retry.
    pub retry_backoff_ms: u64,
    /// The largest backoff bound.
    pub retry_max_backoff_ms: u64,
    /// Adaptive throttling's K (0: off).
    pub throttle: f64,
    /// `UNAVAILABLE` failures in a row that eject an endpoint for a while.
    pub eject_after: u32,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        let o = ChannelOptions::default();
        ClientConfig {
            caller: o.caller.to_string(),
            connections_per_endpoint: o.connections_per_endpoint,
            connect_timeout_ms: o.connect_timeout.as_millis() as u64,
            write_timeout_ms: o.write_timeout.as_millis() as u64,
            tls_ca: None,
            tls_server_name: None,
            tls_cert: None,
            tls_key: None,
            balancer: o.balancer,
            retry: o.retry.enabled,
            retry_budget_ratio: o.retry.budget_ratio,
            retry_min_per_second: o.retry.min_per_second,
            retry_backoff_ms: o.retry.backoff.as_millis() as u64,
            retry_max_backoff_ms: o.retry.max_backoff.as_millis() as u64,
            throttle: o.throttle.unwrap_or(0.0),
            eject_after: o.eject_after,
        }
    }
}

/// `[services."<name>"]`: where a called service runs, and how it is called.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Replicas, as `host:port` (with static discovery).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Where the replicas are found: `endpoints` (the default) or `"etcd"`.
    #[serde(default)]
    pub discovery: DiscoveryKind,
    /// The balancer, instead of `[client]`'s.
    #[serde(default)]
    pub balancer: Option<BalancerKind>,
    /// Set: the service is a weak dependency, and calls to it that fail or take longer than
    /// this give skipped results (see [`CallOptions::weak`](crate::CallOptions::weak)).
    #[serde(default)]
    pub weak_timeout_ms: Option<u64>,
    /// Named endpoint groups for gray release (`canary = ["host:port"]`).
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// Rules sending calls to the groups (see [`Route`]); the first match wins.
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// A configuration that cannot be used, and why: its message names the file and the key,
/// [`kind`](ConfigError::kind) tells the cases apart, and
/// [`source`](std::error::Error::source) gives the underlying error (reading the file,
/// parsing TOML, reaching etcd) where there is one.
#[derive(Debug)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// What kind of problem a [`ConfigError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file could not be read.
    Read,
    /// Not TOML, or keys and types the configuration does not have.
    Syntax,
    /// A value out of range, settings that do not go together, or a file or service a value
    /// names that does not work.
    Value,
    /// What the configuration starts (monitoring, the admin endpoint) could not start.
    Start,
}

impl ConfigError {
    /// What kind of problem it is.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    fn new(
        kind: ConfigErrorKind,
        message: String,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ConfigError {
        ConfigError {
            kind,
            message,
            source,
        }
    }

    /// The value of `key` cannot be used.
    fn key(key: &str, problem: impl fmt::Display) -> ConfigError {
        ConfigError::new(ConfigErrorKind::Value, format!("{key}: {problem}"), None)
    }

    /// The value of `key` names something that failed with `source`.
    fn key_source(
        key: &str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> ConfigError {
        let message = format!("{key}: {source}");
        ConfigError::new(ConfigErrorKind::Value, message, Some(Box::new(source)))
    }

    /// TOML that does not fit, as `source` says; `prefix` names where it is.
    fn syntax(prefix: &str, source: toml::de::Error) -> ConfigError {
        let message = format!("{prefix}{}", source.message().trim_end());
        ConfigError::new(ConfigErrorKind::Syntax, message, Some(Box::new(source)))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

impl Config {
    /// Reads and checks a configuration file.
    ///
    /// # Errors
    /// When the file cannot be read, is not valid TOML, has unknown keys or wrong values.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            let message = format!("cannot read {}: {e}", path.display());
            ConfigError::new(ConfigErrorKind::Read, message, Some(Box::new(e)))
        })?;
        Config::parse(&text).map_err(|e| ConfigError {
            message: format!("{}: {}", path.display(), e.message),
            ..e
        })
    }

    /// Parses and checks configuration text.
    ///
    /// # Errors
    /// As [`from_file`](Config::from_file).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            // The whole report, with the line and a caret under the key.
            let message = e.to_string().trim_end().to_owned();
            ConfigError::new(ConfigErrorKind::Syntax, message, Some(Box::new(e)))
        })?;
        config.validate()?;
        Ok(config)
    }
}

mod build;
mod validate;

#[cfg(test)]
mod tests;
