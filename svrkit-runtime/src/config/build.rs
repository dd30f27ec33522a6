//! What a configuration builds: the server (limits, trust, TLS), channels to the services it
//! calls (endpoints, discovery, balancer, policies), monitoring and registration in etcd.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Config, ConfigError, ConfigErrorKind, DiscoveryKind, ServiceConfig};
use crate::client::{Channel, ChannelOptions, RetryConfig};
use crate::server::{Limits, ServerBuilder, Trust};

impl Config {
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
            .map_err(|message| ConfigError::new(ConfigErrorKind::Value, message, None))?;
        crate::discovery::etcd::Registration::register(&self.discovery, services, &advertised)
            .await
            .map(Some)
            .map_err(|e| ConfigError::key_source("discovery.etcd", e))
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

    pub(super) fn try_trust(&self) -> Result<Trust, ConfigError> {
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
            .readiness(|| crate::monitor::health::failing().is_empty())
    }

    /// Starts monitoring as configured: the per-minute rollups and alarms, reports to
    /// `monitor.agent`, and the admin endpoint on `server.admin` (with the feature `admin`)
    /// whose dashboard is titled `title`. Returns the admin address bound, if any.
    ///
    /// # Errors
    /// When the admin address cannot be bound.
    pub async fn start_monitoring(&self, title: &str) -> Result<Option<SocketAddr>, ConfigError> {
        crate::monitor::start(&self.monitor, &self.server.listen)
            .map_err(|message| ConfigError::new(ConfigErrorKind::Start, message, None))?;
        #[cfg(feature = "admin")]
        if let Some(admin) = &self.server.admin {
            let token = match &self.server.admin_token_file {
                None => None,
                Some(file) => {
                    let key = "server.admin_token_file";
                    let text = std::fs::read_to_string(file)
                        .map_err(|e| ConfigError::key_source(&format!("{key}: {file}"), e))?;
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
                .map_err(|e| {
                    let message = format!("server.admin: {e}");
                    ConfigError::new(ConfigErrorKind::Start, message, Some(Box::new(e)))
                });
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
            .map_err(|e: toml::de::Error| ConfigError::syntax("app: ", e))
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
        let options = self.channel_options(Some(entry))?;
        let key = |what: &str| format!("services.\"{service}\".{what}");
        let channel = match entry.discovery {
            DiscoveryKind::Static => Channel::lazy(entry.endpoints.iter().cloned(), options),
            DiscoveryKind::Etcd => self.discovered_in(service, options, &key("discovery"), None)?,
        };
        for (group, endpoints) in &entry.groups {
            channel
                .set_group(group, endpoints.iter().cloned())
                .map_err(|e| ConfigError::key_source(&key("groups"), e))?;
        }
        channel
            .set_routes(entry.routes.clone())
            .map_err(|e| ConfigError::key_source(&key("routes"), e))?;
        Ok(channel)
    }

    /// A channel to the replicas of `service` registered in SET `set`, and no others, found
    /// in etcd: for calls that touch data kept per SET (a user's inbox in the user's SET).
    /// The service's `[services."<name>"]` entry, if any, gives its settings.
    ///
    /// # Errors
    /// Without the `etcd` feature, or outside a tokio runtime.
    pub fn channel_in_set(&self, service: &str, set: &str) -> Result<Channel, ConfigError> {
        let options = self.channel_options(self.services.get(service))?;
        let key = format!("services.\"{service}\".discovery");
        self.discovered_in(service, options, &key, Some(set))
    }

    /// A channel to `service` at exactly `endpoints`, with this configuration's client
    /// settings (and the service's own, when it has a `[services."<name>"]` entry), for
    /// callers that choose the replica themselves: a sharded service's owner of a key, as
    /// the messaging backend's sequence allocators are reached.
    ///
    /// # Errors
    /// When the client's TLS files cannot be read.
    pub fn channel_to(
        &self,
        service: &str,
        endpoints: impl IntoIterator<Item = String>,
    ) -> Result<Channel, ConfigError> {
        let options = self.channel_options(self.services.get(service))?;
        Ok(Channel::lazy(endpoints, options))
    }

    /// The channel options of `[client]`, with a service's overrides.
    fn channel_options(
        &self,
        entry: Option<&ServiceConfig>,
    ) -> Result<ChannelOptions, ConfigError> {
        let c = &self.client;
        Ok(ChannelOptions {
            caller: c.caller.clone().into(),
            connections_per_endpoint: c.connections_per_endpoint,
            connect_timeout: Duration::from_millis(c.connect_timeout_ms),
            write_timeout: Duration::from_millis(c.write_timeout_ms),
            balancer: entry.and_then(|e| e.balancer).unwrap_or(c.balancer),
            retry: RetryConfig {
                enabled: c.retry,
                budget_ratio: c.retry_budget_ratio,
                min_per_second: c.retry_min_per_second,
                backoff: Duration::from_millis(c.retry_backoff_ms),
                max_backoff: Duration::from_millis(c.retry_max_backoff_ms),
            },
            throttle: (c.throttle != 0.0).then_some(c.throttle),
            eject_after: c.eject_after,
            weak: entry
                .and_then(|e| e.weak_timeout_ms)
                .map(Duration::from_millis),
            #[cfg(feature = "tls")]
            tls: self.client_tls()?,
            ..ChannelOptions::default()
        })
    }

    /// A channel whose endpoints a task watching etcd keeps up to date.
    #[cfg(feature = "etcd")]
    fn discovered_in(
        &self,
        service: &str,
        options: ChannelOptions,
        key: &str,
        set: Option<&str>,
    ) -> Result<Channel, ConfigError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::key(
                key,
                "etcd discovery needs the channel made inside a tokio runtime",
            ));
        }
        let channel = Channel::unresolved(options);
        crate::discovery::etcd::watch_in(&channel, service, &self.discovery, set);
        Ok(channel)
    }

    #[cfg(not(feature = "etcd"))]
    fn discovered_in(
        &self,
        _service: &str,
        _options: ChannelOptions,
        key: &str,
        _set: Option<&str>,
    ) -> Result<Channel, ConfigError> {
        Err(ConfigError::key(key, super::NO_ETCD))
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
        .map_err(|e| ConfigError::key_source("server.tls_cert", e))?;
        match &self.server.tls_client_ca {
            None => crate::tls::server_config(chain, key),
            Some(ca) => {
                let roots = crate::tls::certificates_from_pem(
                    &read("server.tls_client_ca", ca)?,
                    "client authority",
                )
                .map_err(|e| ConfigError::key_source("server.tls_client_ca", e))?;
                crate::tls::server_config_for_clients(chain, key, roots)
            }
        }
        .map(Some)
        .map_err(|e| ConfigError::key_source("server.tls_cert", e))
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
                .map_err(|e| ConfigError::key_source("client.tls_ca", e))?;
        let config = match (&self.client.tls_cert, &self.client.tls_key) {
            (Some(cert), Some(key)) => {
                let (chain, key) = crate::tls::identity_from_pem(
                    &read("client.tls_cert", cert)?,
                    &read("client.tls_key", key)?,
                )
                .map_err(|e| ConfigError::key_source("client.tls_cert", e))?;
                crate::tls::client_config_with_identity(roots, chain, key)
                    .map_err(|e| ConfigError::key_source("client.tls_cert", e))?
            }
            _ => crate::tls::client_config(roots)
                .map_err(|e| ConfigError::key_source("client.tls_ca", e))?,
        };
        let tls = crate::tls::ClientTls::new(config);
        match &self.client.tls_server_name {
            Some(name) => tls
                .with_server_name(name)
                .map(Some)
                .map_err(|e| ConfigError::key_source("client.tls_server_name", e)),
            None => Ok(Some(tls)),
        }
    }
}

/// The contents of the file `key` names.
#[cfg(feature = "tls")]
fn read(key: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError::key_source(&format!("{key}: cannot read {path}"), e))
}
