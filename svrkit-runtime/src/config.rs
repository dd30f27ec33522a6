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
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::client::{BalancerKind, RetryConfig, Route};
use crate::client::{Channel, ChannelOptions};
use crate::discovery::{DiscoveryConfig, DiscoveryKind};
use crate::monitor::MonitorConfig;
use crate::policy::AdmissionConfig;
use crate::server::{Limits, ServerBuilder, Trust};

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

/// `[trust]`: which peers' header fields the server obeys (see [`Trust`]).
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

/// A configuration that cannot be used, and why.
#[derive(Debug)]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    fn key(key: &str, problem: impl fmt::Display) -> ConfigError {
        ConfigError {
            message: format!("{key}: {problem}"),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and checks a configuration file.
    ///
    /// # Errors
    /// When the file cannot be read, is not valid TOML, has unknown keys or wrong values.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Config::parse(&text).map_err(|e| ConfigError {
            message: format!("{}: {}", path.display(), e.message),
        })
    }

    /// Parses and checks configuration text.
    ///
    /// # Errors
    /// As [`from_file`](Config::from_file).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError {
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("server.listen", Some(&self.server.listen)),
            ("server.admin", self.server.admin.as_ref()),
        ] {
            let Some(value) = value else { continue };
            value
                .parse::<SocketAddr>()
                .map_err(|e| ConfigError::key(key, format!("`{value}` is not an address: {e}")))?;
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.max_connections", l.max_connections),
            (
                "limits.max_in_flight_per_connection",
                l.max_in_flight_per_connection,
            ),
            ("limits.max_in_flight", l.max_in_flight),
            (
                "limits.max_connections_per_peer",
                l.max_connections_per_peer,
            ),
            ("limits.max_frame_bytes", l.max_frame_bytes),
            (
                "limits.max_buffered_input_bytes",
                l.max_buffered_input_bytes,
            ),
            (
                "limits.max_unsent_per_connection_bytes",
                l.max_unsent_per_connection_bytes,
            ),
            (
                "client.connections_per_endpoint",
                self.client.connections_per_endpoint,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::key(key, "must be at least 1"));
            }
        }
        self.try_trust()?;
        if let Some(agent) = &self.monitor.agent
            && !crate::monitor::is_host_port(agent)
        {
            return Err(ConfigError::key(
                "monitor.agent",
                format!("`{agent}` is not host:port"),
            ));
        }
        if let Some(url) = &self.monitor.alarms.webhook {
            #[cfg(feature = "admin")]
            crate::monitor::webhook::Url::parse(url)
                .map_err(|e| ConfigError::key("monitor.alarms.webhook", e))?;
            #[cfg(not(feature = "admin"))]
            return Err(ConfigError::key(
                "monitor.alarms.webhook",
                format!("`{url}` needs the `admin` feature of svrkit-runtime"),
            ));
        }
        for (section, cert, key) in [
            ("server", &self.server.tls_cert, &self.server.tls_key),
            ("client", &self.client.tls_cert, &self.client.tls_key),
        ] {
            if cert.is_some() != key.is_some() {
                let missing = if cert.is_some() {
                    "tls_key"
                } else {
                    "tls_cert"
                };
                return Err(ConfigError::key(
                    &format!("{section}.{missing}"),
                    "missing: tls_cert and tls_key go together",
                ));
            }
        }
        let client_tls = self.client.tls_server_name.is_some() || self.client.tls_cert.is_some();
        if client_tls && self.client.tls_ca.is_none() {
            return Err(ConfigError::key(
                "client.tls_ca",
                "missing: tls_server_name and tls_cert are for TLS, which needs the certificates to trust",
            ));
        }
        if self.server.tls_client_ca.is_some() && self.server.tls_cert.is_none() {
            return Err(ConfigError::key(
                "server.tls_cert",
                "missing: tls_client_ca is for TLS, which needs the server's certificate",
            ));
        }
        if !self.trust.identities.is_empty() && self.server.tls_client_ca.is_none() {
            return Err(ConfigError::key(
                "server.tls_client_ca",
                "missing: trust.identities are client certificates, which the server must ask for",
            ));
        }
        #[cfg(not(feature = "tls"))]
        for (key, set) in [
            ("server.tls_cert", self.server.tls_cert.is_some()),
            ("client.tls_ca", self.client.tls_ca.is_some()),
            ("trust.identities", !self.trust.identities.is_empty()),
        ] {
            if set {
                return Err(ConfigError::key(
                    key,
                    "this build has no TLS (enable the `tls` feature of svrkit-runtime)",
                ));
            }
        }
        let o = &self.overload;
        for (key, zero) in [
            ("overload.queue_wait_ms", o.queue_wait.is_zero()),
            ("overload.window_ms", o.window.is_zero()),
            ("overload.queue_interval_ms", o.queue_interval.is_zero()),
            ("overload.window_requests", o.window_requests == 0),
        ] {
            if zero {
                return Err(ConfigError::key(key, "must be at least 1"));
            }
        }
        for (key, step) in [
            ("overload.shed_step", o.shed_step),
            ("overload.admit_step", o.admit_step),
        ] {
            if !(step > 0.0 && step <= 1.0) {
                return Err(ConfigError::key(key, "must be above 0 and at most 1"));
            }
        }
        let c = &self.client;
        for (key, value) in [
            ("client.retry_budget_ratio", c.retry_budget_ratio),
            ("client.retry_min_per_second", c.retry_min_per_second),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(ConfigError::key(key, "must be a number of at least 0"));
            }
        }
        if c.throttle != 0.0 && !(c.throttle.is_finite() && c.throttle >= 1.0) {
            return Err(ConfigError::key(
                "client.throttle",
                "must be 0 (off) or a number of at least 1",
            ));
        }
        if c.retry_backoff_ms > c.retry_max_backoff_ms {
            return Err(ConfigError::key(
                "client.retry_max_backoff_ms",
                format!(
                    "{} is below retry_backoff_ms ({})",
                    c.retry_max_backoff_ms, c.retry_backoff_ms
                ),
            ));
        }
        self.validate_discovery()?;
        for (name, service) in &self.services {
            let key = format!("services.\"{name}\".endpoints");
            match service.discovery {
                DiscoveryKind::Static if service.endpoints.is_empty() => {
                    return Err(ConfigError::key(&key, "lists no endpoint"));
                }
                DiscoveryKind::Static => {}
                DiscoveryKind::Etcd if !service.endpoints.is_empty() => {
                    return Err(ConfigError::key(
                        &key,
                        "set together with discovery = \"etcd\": choose one",
                    ));
                }
                DiscoveryKind::Etcd if self.discovery.etcd.is_empty() => {
                    return Err(ConfigError::key(
                        "discovery.etcd",
                        format!("missing: services.\"{name}\" is found through etcd"),
                    ));
                }
                DiscoveryKind::Etcd => {}
            }
            check_endpoints(&key, &service.endpoints)?;
            for (group, endpoints) in &service.groups {
                let key = format!("services.\"{name}\".groups.{group}");
                if endpoints.is_empty() {
                    return Err(ConfigError::key(&key, "lists no endpoint"));
                }
                check_endpoints(&key, endpoints)?;
            }
            for route in &service.routes {
                if !service.groups.contains_key(&route.group) {
                    return Err(ConfigError::key(
                        &format!("services.\"{name}\".routes"),
                        format!("group `{}` is not in groups", route.group),
                    ));
                }
                if !(0.0..=1.0).contains(&route.fraction) {
                    return Err(ConfigError::key(
                        &format!("services.\"{name}\".routes"),
                        format!("fraction {} is not between 0 and 1", route.fraction),
                    ));
                }
            }
            if service.weak_timeout_ms == Some(0) {
                return Err(ConfigError::key(
                    &format!("services.\"{name}\".weak_timeout_ms"),
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }

    fn validate_discovery(&self) -> Result<(), ConfigError> {
        let d = &self.discovery;
        if d.etcd.is_empty() {
            return Ok(());
        }
        if cfg!(not(feature = "etcd")) {
            return Err(ConfigError::key("discovery.etcd", NO_ETCD));
        }
        if d.lease_ttl_s == 0 {
            return Err(ConfigError::key(
                "discovery.lease_ttl_s",
                "must be at least 1",
            ));
        }
        if d.weight == 0 {
            return Err(ConfigError::key("discovery.weight", "must be at least 1"));
        }
        if d.advertise_host
            .as_ref()
            .is_some_and(|h| h.is_empty() || h.contains(char::is_whitespace))
        {
            return Err(ConfigError::key(
                "discovery.advertise_host",
                "is not a host",
            ));
        }
        Ok(())
    }

    /// Registers `services` (full names) in etcd as served at `addr` (the address the
    /// server is bound to, with `discovery.advertise_host` as its host if set), when
    /// `[discovery] etcd` is
    /// set; `None` when it is not. Keep the registration while serving, and
    /// [`drain`](crate::discovery::etcd::Registration::drain) it before stopping the server.
    ///
    /// # Errors
    /// When etcd cannot be reached or refuses.
    #[cfg(feature = "etcd")]
    pub async fn register(
        &self,
        services: &[&str],
        addr: SocketAddr,
    ) -> Result<Option<crate::discovery::etcd::Registration>, ConfigError> {
        if self.discovery.etcd.is_empty() {
            return Ok(None);
        }
        let advertised = self
            .discovery
            .advertised(addr)
            .map_err(|message| ConfigError { message })?;
        crate::discovery::etcd::Registration::register(&self.discovery, services, &advertised)
            .await
            .map(Some)
            .map_err(|e| ConfigError::key("discovery.etcd", e))
    }

    /// The server limits.
    pub fn limits(&self) -> Limits {
        let l = &self.limits;
        Limits {
            max_connections: l.max_connections,
            max_in_flight_per_connection: l.max_in_flight_per_connection,
            max_in_flight: l.max_in_flight,
            max_frame: l.max_frame_bytes,
            max_buffered_input: l.max_buffered_input_bytes,
            max_unsent_per_connection: l.max_unsent_per_connection_bytes,
            write_timeout: Duration::from_millis(l.write_timeout_ms),
            read_timeout: Duration::from_millis(l.read_timeout_ms),
            idle_timeout: Duration::from_millis(l.idle_timeout_ms),
            max_connections_per_peer: l.max_connections_per_peer,
            first_request_timeout: Duration::from_millis(l.first_request_timeout_ms),
            max_deadline: Duration::from_millis(l.max_deadline_ms),
            cancel_grace: Duration::from_millis(l.cancel_grace_ms),
            shutdown_grace: Duration::from_millis(l.shutdown_grace_ms),
        }
    }

    /// The peers the server trusts.
    pub fn trust(&self) -> Trust {
        // Checked when the configuration was read.
        self.try_trust().unwrap_or_else(|_| Trust::nobody())
    }

    fn try_trust(&self) -> Result<Trust, ConfigError> {
        let trust =
            Trust::parse(&self.trust.peers).map_err(|e| ConfigError::key("trust.peers", e))?;
        #[cfg(feature = "tls")]
        let trust = trust
            .identities(&self.trust.identities)
            .map_err(|e| ConfigError::key("trust.identities", e))?;
        Ok(trust)
    }

    /// A server builder with the configured limits, trust, overload control and slow-call
    /// threshold.
    pub fn server_builder(&self) -> ServerBuilder {
        crate::Server::builder()
            .limits(self.limits())
            .trust(self.trust())
            .admission(self.overload.clone())
            .slow_call_threshold(Duration::from_millis(self.monitor.slow_call_ms))
    }

    /// Starts monitoring as configured: the per-minute rollups and alarms, reports to
    /// `monitor.agent`, and the admin endpoint on `server.admin` (with the feature `admin`)
    /// whose dashboard is titled `title`. Returns the admin address bound, if any.
    ///
    /// # Errors
    /// When the admin address cannot be bound.
    pub async fn start_monitoring(&self, title: &str) -> Result<Option<SocketAddr>, ConfigError> {
        crate::monitor::start(&self.monitor, &self.server.listen)
            .map_err(|message| ConfigError { message })?;
        #[cfg(feature = "admin")]
        if let Some(admin) = &self.server.admin {
            let token = match &self.server.admin_token_file {
                None => None,
                Some(file) => {
                    let key = "server.admin_token_file";
                    let text = std::fs::read_to_string(file)
                        .map_err(|e| ConfigError::key(key, format!("{file}: {e}")))?;
                    let token = text.trim().to_owned();
                    if token.is_empty() {
                        return Err(ConfigError::key(key, format!("{file} is empty")));
                    }
                    Some(token)
                }
            };
            let options = crate::monitor::admin::AdminOptions {
                title: title.to_owned(),
                pages: None,
                token,
            };
            return crate::monitor::admin::bind_with(admin, options)
                .await
                .map(Some)
                .map_err(|e| ConfigError::key("server.admin", e.to_string()));
        }
        let _ = title;
        Ok(None)
    }

    /// The `[app]` section as the application's settings type (every key optional: an
    /// absent section gives `T::default()`).
    ///
    /// # Errors
    /// An unknown key or a value of the wrong type, named after `app.`.
    pub fn app<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::Value::Table(self.app.clone())
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError {
                message: format!("app: {}", e.message()),
            })
    }

    /// A channel to the service with this full name (`XxxClient::DESCRIPTOR.name`).
    ///
    /// # Errors
    /// When the configuration has no `[services."<name>"]` entry.
    pub fn channel(&self, service: &str) -> Result<Channel, ConfigError> {
        let entry = self.services.get(service).ok_or_else(|| {
            ConfigError::key(
                &format!("services.\"{service}\".endpoints"),
                "missing: where does this service run?",
            )
        })?;
        let c = &self.client;
        let options = ChannelOptions {
            caller: c.caller.clone().into(),
            connections_per_endpoint: c.connections_per_endpoint,
            connect_timeout: Duration::from_millis(c.connect_timeout_ms),
            write_timeout: Duration::from_millis(c.write_timeout_ms),
            balancer: entry.balancer.unwrap_or(c.balancer),
            retry: RetryConfig {
                enabled: c.retry,
                budget_ratio: c.retry_budget_ratio,
                min_per_second: c.retry_min_per_second,
                backoff: Duration::from_millis(c.retry_backoff_ms),
                max_backoff: Duration::from_millis(c.retry_max_backoff_ms),
            },
            throttle: (c.throttle != 0.0).then_some(c.throttle),
            eject_after: c.eject_after,
            weak: entry.weak_timeout_ms.map(Duration::from_millis),
            #[cfg(feature = "tls")]
            tls: self.client_tls()?,
            ..ChannelOptions::default()
        };
        let key = |what: &str| format!("services.\"{service}\".{what}");
        let channel = match entry.discovery {
            DiscoveryKind::Static => Channel::lazy(entry.endpoints.iter().cloned(), options),
            DiscoveryKind::Etcd => self.discovered(service, options, &key("discovery"))?,
        };
        for (group, endpoints) in &entry.groups {
            channel
                .set_group(group, endpoints.iter().cloned())
                .map_err(|e| ConfigError::key(&key("groups"), e))?;
        }
        channel
            .set_routes(entry.routes.clone())
            .map_err(|e| ConfigError::key(&key("routes"), e))?;
        Ok(channel)
    }

    /// A channel whose endpoints a task watching etcd keeps up to date.
    #[cfg(feature = "etcd")]
    fn discovered(
        &self,
        service: &str,
        options: ChannelOptions,
        key: &str,
    ) -> Result<Channel, ConfigError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::key(
                key,
                "etcd discovery needs the channel made inside a tokio runtime",
            ));
        }
        let channel = Channel::unresolved(options);
        crate::discovery::etcd::watch(&channel, service, &self.discovery);
        Ok(channel)
    }

    #[cfg(not(feature = "etcd"))]
    fn discovered(
        &self,
        _service: &str,
        _options: ChannelOptions,
        key: &str,
    ) -> Result<Channel, ConfigError> {
        Err(ConfigError::key(key, NO_ETCD))
    }

    /// The server's TLS configuration, read from `server.tls_cert`, `server.tls_key` and
    /// `server.tls_client_ca` (`None` when they are not set): give it to
    /// [`ServerBuilder::tls`](crate::server::ServerBuilder::tls).
    ///
    /// # Errors
    /// When a file cannot be read or holds no usable certificate or key.
    #[cfg(feature = "tls")]
    pub fn server_tls(
        &self,
    ) -> Result<Option<std::sync::Arc<crate::tls::rustls::ServerConfig>>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.server.tls_cert, &self.server.tls_key) else {
            return Ok(None);
        };
        let (chain, key) = crate::tls::identity_from_pem(
            &read("server.tls_cert", cert)?,
            &read("server.tls_key", key)?,
        )
        .map_err(|e| ConfigError::key("server.tls_cert", e))?;
        match &self.server.tls_client_ca {
            None => crate::tls::server_config(chain, key),
            Some(ca) => {
                let roots = crate::tls::certificates_from_pem(
                    &read("server.tls_client_ca", ca)?,
                    "client authority",
                )
                .map_err(|e| ConfigError::key("server.tls_client_ca", e))?;
                crate::tls::server_config_for_clients(chain, key, roots)
            }
        }
        .map(Some)
        .map_err(|e| ConfigError::key("server.tls_cert", e))
    }

    /// How channels speak TLS, from `client.tls_ca`, `client.tls_server_name` and the
    /// client's own certificate.
    #[cfg(feature = "tls")]
    fn client_tls(&self) -> Result<Option<crate::tls::ClientTls>, ConfigError> {
        let Some(ca) = &self.client.tls_ca else {
            return Ok(None);
        };
        let roots =
            crate::tls::certificates_from_pem(&read("client.tls_ca", ca)?, "trusted certificate")
                .map_err(|e| ConfigError::key("client.tls_ca", e))?;
        let config = match (&self.client.tls_cert, &self.client.tls_key) {
            (Some(cert), Some(key)) => {
                let (chain, key) = crate::tls::identity_from_pem(
                    &read("client.tls_cert", cert)?,
                    &read("client.tls_key", key)?,
                )
                .map_err(|e| ConfigError::key("client.tls_cert", e))?;
                crate::tls::client_config_with_identity(roots, chain, key)
                    .map_err(|e| ConfigError::key("client.tls_cert", e))?
            }
            _ => crate::tls::client_config(roots)
                .map_err(|e| ConfigError::key("client.tls_ca", e))?,
        };
        let tls = crate::tls::ClientTls::new(config);
        match &self.client.tls_server_name {
            Some(name) => tls
                .with_server_name(name)
                .map(Some)
                .map_err(|e| ConfigError::key("client.tls_server_name", e)),
            None => Ok(Some(tls)),
        }
    }
}

/// Checks that every entry of `endpoints` is `host:port`.
fn check_endpoints(key: &str, endpoints: &[String]) -> Result<(), ConfigError> {
    for endpoint in endpoints {
        if endpoint
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .is_none()
        {
            return Err(ConfigError::key(
                key,
                format!("`{endpoint}` is not host:port"),
            ));
        }
    }
    Ok(())
}

/// The contents of the file `key` names.
#[cfg(feature = "tls")]
fn read(key: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::key(key, format!("cannot read {path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_works_on_localhost() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:7000");
        assert_eq!(c.limits().max_frame, crate::frame::DEFAULT_MAX_FRAME);
    }

    #[test]
    fn a_full_file_is_read() {
        let c = Config::parse(
            r#"
            [server]
            listen = "0.0.0.0:9000"
            [limits]
            max_in_flight = 10
            write_timeout_ms = 5
            [client]
            connections_per_endpoint = 4
            [services."im.message.MessageSvr"]
            endpoints = ["10.0.0.1:7000", "svc.local:7000"]
            "#,
        )
        .unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:9000");
        assert_eq!(c.limits().max_in_flight, 10);
        assert_eq!(c.limits().write_timeout, Duration::from_millis(5));
        assert!(c.channel("im.message.MessageSvr").is_ok());
    }

    fn error(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn trust_is_internal_by_default_and_read_from_its_section() {
        let peer = |ip: &str| Some(SocketAddr::new(ip.parse().unwrap(), 1));
        let default = Config::parse("").unwrap().trust();
        assert!(default.trusts(peer("10.0.0.1")) && !default.trusts(peer("8.8.8.8")));
        let c = Config::parse("[trust]\npeers = [\"203.0.113.0/24\"]\n[limits]\nmax_connections_per_peer = 3\nfirst_request_timeout_ms = 50\n").unwrap();
        assert!(c.trust().trusts(peer("203.0.113.9")) && !c.trust().trusts(peer("10.0.0.1")));
        assert_eq!(c.limits().max_connections_per_peer, 3);
        assert_eq!(c.limits().first_request_timeout, Duration::from_millis(50));
        assert_eq!(
            error("[trust]\npeers = [\"intranet\"]\n"),
            "trust.peers: `intranet` is not an address range: expected CIDR like `10.0.0.0/8`, an address, `loopback`, `private` or `any`"
        );
    }

    #[test]
    fn tls_keys_go_together() {
        let e = error("[server]\ntls_cert = \"a.pem\"\n");
        assert!(e.contains("server.tls_key: missing"), "{e}");
        let e = error("[client]\ntls_server_name = \"x\"\n");
        assert!(e.contains("client.tls_ca: missing"), "{e}");
        let e = error("[client]\ntls_cert = \"a.pem\"\n");
        assert!(e.contains("client.tls_key: missing"), "{e}");
        let e = error("[server]\ntls_client_ca = \"ca.pem\"\n");
        assert!(e.contains("server.tls_cert: missing"), "{e}");
        let e = error("[trust]\nidentities = [\"orders.internal\"]\n");
        assert!(e.contains("server.tls_client_ca: missing"), "{e}");
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_keys_need_the_feature() {
        let e = error("[client]\ntls_ca = \"ca.pem\"\n");
        assert!(e.contains("enable the `tls` feature"), "{e}");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn unreadable_tls_files_name_the_key() {
        let c = Config::parse("[server]\ntls_cert = \"/nonexistent/c.pem\"\ntls_key = \"k\"\n")
            .unwrap();
        let e = c.server_tls().unwrap_err().to_string();
        assert!(
            e.starts_with("server.tls_cert: cannot read /nonexistent/c.pem"),
            "{e}"
        );
    }

    #[test]
    fn mistakes_name_the_key() {
        let e = error("[limits]\nmax_conections = 5\n");
        assert!(
            e.contains("unknown field `max_conections`") && e.contains("line 2"),
            "{e}"
        );
        let e = error("[limits]\nmax_in_flight = \"lots\"\n");
        assert!(e.contains("max_in_flight") || e.contains("line 2"), "{e}");
        assert_eq!(
            error("[server]\nlisten = \"localhost\"\n")
                .split(':')
                .next(),
            Some("server.listen")
        );
        assert_eq!(
            error("[limits]\nmax_in_flight = 0\n"),
            "limits.max_in_flight: must be at least 1"
        );
        assert_eq!(
            error("[services.\"a.B\"]\nendpoints = [\"nohost\"]\n"),
            "services.\"a.B\".endpoints: `nohost` is not host:port"
        );
        let missing = Config::parse("")
            .unwrap()
            .channel("a.B")
            .unwrap_err()
            .to_string();
        assert_eq!(
            missing,
            "services.\"a.B\".endpoints: missing: where does this service run?"
        );
    }

    #[test]
    fn policies_are_configured_and_checked() {
        let c = Config::parse(
            r#"
            [overload]
            queue_wait_ms = 50
            window_requests = 500
            [client]
            balancer = "ring"
            retry_budget_ratio = 0.1
            throttle = 0
            [services."a.B"]
            endpoints = ["10.0.0.1:7000"]
            weak_timeout_ms = 30
            groups.canary = ["10.0.0.9:7000"]
            routes = [{ group = "canary", dye = "gray", user_keys = [7] }]
            "#,
        )
        .unwrap();
        assert_eq!(c.overload.queue_wait, Duration::from_millis(50));
        assert_eq!(c.overload.window_requests, 500);
        assert!(c.overload.enabled);
        assert_eq!(c.client.balancer, BalancerKind::Ring);
        let channel = c.channel("a.B").unwrap();
        assert_eq!(channel.group("canary").unwrap().snapshot().len(), 1);
        assert_eq!(
            error("[client]\nbalancer = \"random\"\n")
                .lines()
                .next()
                .map(|l| l.contains("line 2")),
            Some(true)
        );
        assert_eq!(
            error("[overload]\nshed_step = 2.0\n"),
            "overload.shed_step: must be above 0 and at most 1"
        );
        assert_eq!(
            error("[client]\nthrottle = 0.5\n"),
            "client.throttle: must be 0 (off) or a number of at least 1"
        );
        assert_eq!(
            error("[client]\nthrottle = inf\n"),
            "client.throttle: must be 0 (off) or a number of at least 1"
        );
        assert_eq!(
            error("[client]\nretry_min_per_second = -1.0\n"),
            "client.retry_min_per_second: must be a number of at least 0"
        );
        assert_eq!(
            error("[client]\nretry_budget_ratio = inf\n"),
            "client.retry_budget_ratio: must be a number of at least 0"
        );
        assert_eq!(
            error("[client]\nretry_backoff_ms = 1000\nretry_max_backoff_ms = 1\n"),
            "client.retry_max_backoff_ms: 1 is below retry_backoff_ms (1000)"
        );
        assert_eq!(
            error("[overload]\nwindow_ms = 0\n"),
            "overload.window_ms: must be at least 1"
        );
        assert_eq!(
            error("[services.\"a.B\"]\nendpoints = [\"h:1\"]\ngroups.c = []\n"),
            "services.\"a.B\".groups.c: lists no endpoint"
        );
        assert_eq!(
            error("[services.\"a.B\"]\nendpoints = [\"h:1\"]\nroutes = [{ group = \"blue\" }]\n"),
            "services.\"a.B\".routes: group `blue` is not in groups"
        );
        assert_eq!(
            error("[services.\"a.B\"]\nendpoints = [\"h:1\"]\ngroups.c = [\"nohost\"]\n"),
            "services.\"a.B\".groups.c: `nohost` is not host:port"
        );
    }

    #[test]
    fn a_missing_file_says_which() {
        let e = Config::from_file("/no/such/svrkit.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot read /no/such/svrkit.toml: "), "{e}");
    }
}
