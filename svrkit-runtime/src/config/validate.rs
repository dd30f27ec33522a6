//! Checking a configuration before anything is built from it: every value in its range,
//! what goes together set together, and each error naming its key.

use std::net::SocketAddr;

use super::{Config, ConfigError, DiscoveryKind, NO_ETCD};

impl Config {
    /// Checks the whole configuration, section by section.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.validate_addresses()?;
        self.validate_counts()?;
        self.try_trust()?;
        self.validate_monitor()?;
        self.validate_tls()?;
        self.validate_overload()?;
        self.validate_retries()?;
        self.validate_discovery()?;
        self.validate_services()
    }

    /// The addresses the server listens and serves its admin pages on.
    fn validate_addresses(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("server.listen", Some(&self.server.listen)),
            ("server.admin", self.server.admin.as_ref()),
        ] {
            let Some(value) = value else { continue };
            value
                .parse::<SocketAddr>()
                .map_err(|e| ConfigError::key(key, format!("`{value}` is not an address: {e}")))?;
        }
        Ok(())
    }

    /// Limits and pool sizes, none of which may be 0.
    fn validate_counts(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// Where reports and alarms go.
    fn validate_monitor(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// TLS settings: what goes together is set together, and none without the `tls` feature.
    fn validate_tls(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// The overload control's windows and steps.
    fn validate_overload(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// The client's retry budget, throttle and backoff.
    fn validate_retries(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// Registration in etcd.
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

    /// Each called service: where its endpoints come from, its groups and routes.
    fn validate_services(&self) -> Result<(), ConfigError> {
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
